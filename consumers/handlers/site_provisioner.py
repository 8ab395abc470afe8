"""``site-provisioner``: a new app gets its web app (site) with a unique code.

Seed: ``create_site_record_when_app_created`` (on ``app_was_created``).
"""

from __future__ import annotations

import secrets
import string

from sqlalchemy import select

from consumers.context import HandlerContext
from consumers.domain import DOMAIN, Site, insert_ignore
from consumers.group import ConsumerGroup
from consumers.registry import register
from schemas.events import AppWasCreated

group = register(ConsumerGroup("site-provisioner", tables=DOMAIN))

CODE_ALPHABET = string.ascii_letters + string.digits
CODE_LENGTH = 16  # as Dify's Site.generate_code(16): 62**16 codes, a clash is astronomically rare
CODE_TRIES = 5


def generate_code(length: int = CODE_LENGTH) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


@group.handler(AppWasCreated)
def create_site_record(event: AppWasCreated, ctx: HandlerContext) -> None:
    """Creates the app's site unless it has one (naturally idempotent: one site per app). The
    insert ignores a clash on either unique key; a clash on the code draws a new one."""
    session = ctx.session
    for _ in range(CODE_TRIES):
        if session.scalar(select(Site.code).where(Site.app_id == event.app_id)) is not None:
            ctx.log.info("app %s has a site already", event.app_id)
            return
        code = generate_code()
        if insert_ignore(session, Site, dict(
                app_id=event.app_id, code=code, title=event.name, description=event.description,
                icon_type=event.icon_type, icon=event.icon, icon_background=event.icon_background,
                created_by=event.created_by, created_at=event.occurred_at, updated_at=event.occurred_at)):
            ctx.log.info("created site %s for app %s", code, event.app_id)
            return
    raise RuntimeError(f"no free site code for app {event.app_id} after {CODE_TRIES} draws")  # retried
