"""``installed-app-provisioner``: a new app appears in its owner's workspace.

Dify: ``create_installed_app_when_app_created`` (on ``app_was_created``). Dify main's receiver
writes in the caller's session and skips when the caller says ``created_records_initialized=True``
(its transaction made the records); here the event carries that flag and the handler skips too.
"""

from __future__ import annotations

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import DOMAIN, InstalledApp, insert_ignore
from dify_events.schemas.events import AppWasCreated

group = register(ConsumerGroup("installed-app-provisioner", tables=DOMAIN))


@group.handler(AppWasCreated)
def create_installed_app(event: AppWasCreated, ctx: HandlerContext) -> None:
    """Creates the owning tenant's installed-app record, unless it exists (naturally idempotent:
    the unique (tenant_id, app_id) makes a second insert do nothing, as Dify main skips an existing one)."""
    if event.records_initialized:
        ctx.log.info("app %s: the application created its installed-app record itself", event.app_id)
        return
    created = insert_ignore(ctx.session, InstalledApp, dict(
        tenant_id=event.tenant_id, app_id=event.app_id, app_owner_tenant_id=event.tenant_id,
        created_at=event.occurred_at), conflict=("tenant_id", "app_id"))
    ctx.log.info("installed app %s in tenant %s%s", event.app_id, event.tenant_id,
                 "" if created else " (already there)")
