"""``installed-app-provisioner``: a new app appears in its owner's workspace.

Seed: ``create_installed_app_when_app_created`` (on ``app_was_created``).
"""

from __future__ import annotations

from consumers.context import HandlerContext
from consumers.domain import DOMAIN, InstalledApp, insert_ignore
from consumers.group import ConsumerGroup
from consumers.registry import register
from schemas.events import AppWasCreated

group = register(ConsumerGroup("installed-app-provisioner", tables=DOMAIN))


@group.handler(AppWasCreated)
def create_installed_app(event: AppWasCreated, ctx: HandlerContext) -> None:
    """Creates the owning tenant's installed-app record, unless it exists (naturally idempotent:
    the unique (tenant_id, app_id) makes a second insert do nothing)."""
    created = insert_ignore(ctx.session, InstalledApp, dict(
        tenant_id=event.tenant_id, app_id=event.app_id, app_owner_tenant_id=event.tenant_id,
        created_at=event.occurred_at), conflict=("tenant_id", "app_id"))
    ctx.log.info("installed app %s in tenant %s%s", event.app_id, event.tenant_id,
                 "" if created else " (already there)")
