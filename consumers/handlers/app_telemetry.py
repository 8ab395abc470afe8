"""``app-telemetry``: each app created, updated or deleted is counted.

Dify main: the enterprise telemetry receivers of ``app_was_created``, ``app_was_updated`` and
``app_was_deleted``, which emit the telemetry cases ``APP_CREATED`` (app id and mode),
``APP_UPDATED`` and ``APP_DELETED`` (app id) for the tenant. Here each event is an
``app_telemetry`` row (the counters are their count per tenant and case) and one log record with
the same attributes.

Difference on purpose: Dify's receivers return when no enterprise exporter is configured, here
when the group is not deployed. Naturally idempotent: one row per event.
"""

from __future__ import annotations

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import DOMAIN, AppTelemetry, insert_ignore
from dify_events.schemas.events import AppWasCreated, AppWasDeleted, AppWasUpdated

group = register(ConsumerGroup("app-telemetry", tables=DOMAIN))


def _count(case: str, event: AppWasCreated | AppWasDeleted | AppWasUpdated, ctx: HandlerContext) -> None:
    insert_ignore(ctx.session, AppTelemetry, dict(
        event_id=event.event_id, telemetry_case=case, tenant_id=event.tenant_id, app_id=event.app_id,
        mode=event.mode, occurred_at=event.occurred_at), conflict=("event_id",))
    ctx.log.info("dify.%s app=%s tenant=%s mode=%s", case, event.app_id, event.tenant_id, event.mode)


@group.handler(AppWasCreated)
def count_app_created(event: AppWasCreated, ctx: HandlerContext) -> None:
    _count("app.created", event, ctx)


@group.handler(AppWasUpdated)
def count_app_updated(event: AppWasUpdated, ctx: HandlerContext) -> None:
    _count("app.updated", event, ctx)


@group.handler(AppWasDeleted)
def count_app_deleted(event: AppWasDeleted, ctx: HandlerContext) -> None:
    _count("app.deleted", event, ctx)
