"""``site-provisioner``: a new app gets its web app (site) with a unique code.

Dify: ``create_site_record_when_app_created`` (on ``app_was_created``). As it does, a site is
created only when the signal was sent with an account, with ``default_language`` the account's
``interface_language``, ``created_by`` / ``updated_by`` the app's, no description, and skipped when
the caller says ``created_records_initialized=True`` (Dify main). One difference on purpose: an
app that has a site already keeps it (Dify 1.x would add a second row; main checks too).
"""

from __future__ import annotations

import secrets
import string

from sqlalchemy import select

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import DOMAIN, Site, insert_ignore
from dify_events.schemas.events import AppWasCreated

group = register(ConsumerGroup("site-provisioner", tables=DOMAIN))

CODE_ALPHABET = string.ascii_letters + string.digits
CODE_LENGTH = 16  # as Dify's Site.generate_code(16): 62**16 codes, a clash is astronomically rare
CODE_TRIES = 5
DEFAULT_LANGUAGE = "en-US"
"""The site's language when the account has none (Dify's column has no default: it would fail)."""


def generate_code(length: int = CODE_LENGTH) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


@group.handler(AppWasCreated)
def create_site_record(event: AppWasCreated, ctx: HandlerContext) -> None:
    """Creates the app's site unless it has one (naturally idempotent: one site per app). The
    insert ignores a clash on either unique key; a clash on the code draws a new one."""
    if event.records_initialized or not event.has_account:
        ctx.log.info("app %s: no site record (%s)", event.app_id, "the application created it itself"
                     if event.records_initialized else "the signal was sent without an account, as Dify skips it")
        return
    session = ctx.session
    for _ in range(CODE_TRIES):
        if session.scalar(select(Site.code).where(Site.app_id == event.app_id)) is not None:
            ctx.log.info("app %s has a site already", event.app_id)
            return
        code = generate_code()
        if insert_ignore(session, Site, dict(
                app_id=event.app_id, code=code, title=event.name, icon_type=event.icon_type, icon=event.icon,
                icon_background=event.icon_background, default_language=event.default_language or DEFAULT_LANGUAGE,
                customize_token_strategy="not_allow", created_by=event.created_by or None,
                updated_by=event.updated_by, created_at=event.occurred_at, updated_at=event.occurred_at)):
            ctx.log.info("created site %s for app %s", code, event.app_id)
            return
    raise RuntimeError(f"no free site code for app {event.app_id} after {CODE_TRIES} draws")  # retried
