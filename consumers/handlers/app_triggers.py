"""``app-trigger-sync``: a published workflow app's trigger list follows its graph.

Dify: ``update_app_triggers_when_app_published_workflow_updated`` (on
``app_published_workflow_was_updated``). For workflow apps only: every webhook, schedule and
plugin trigger node of the published graph has an ``app_triggers`` row (created ``enabled``, with
the node's title and provider name); rows of nodes no longer in the graph are deleted; a changed
title is updated. Naturally idempotent (set equality, upserts).
"""

from __future__ import annotations

from sqlalchemy import delete, select

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import DOMAIN, AppTrigger, insert_ignore
from dify_events.consumers.domain.trigger import ENABLED, PLUGIN, SCHEDULE, WEBHOOK
from dify_events.schemas.events import AppPublishedWorkflowWasUpdated

from .trigger_nodes import nodes, of_workflow_app

group = register(ConsumerGroup("app-trigger-sync", tables=DOMAIN))


@group.handler(AppPublishedWorkflowWasUpdated)
def sync_app_triggers(event: AppPublishedWorkflowWasUpdated, ctx: HandlerContext) -> None:
    if not of_workflow_app(event):
        return
    session, app_id = ctx.session, event.app_id
    wanted = {node_id: (node_type, data) for node_type in (WEBHOOK, SCHEDULE, PLUGIN)
              for node_id, data in nodes(event, node_type)}
    existing = {t.node_id: t for t in session.scalars(select(AppTrigger).where(
        AppTrigger.tenant_id == event.tenant_id, AppTrigger.app_id == app_id))}
    stale = set(existing) - set(wanted)
    if stale:
        session.execute(delete(AppTrigger).where(AppTrigger.app_id == app_id, AppTrigger.node_id.in_(stale)))
    for node_id, (node_type, data) in wanted.items():
        title = data.get("title")
        if node_id in existing:
            if title and existing[node_id].title != title:
                existing[node_id].title = title
            continue
        insert_ignore(session, AppTrigger, dict(
            tenant_id=event.tenant_id, app_id=app_id, node_id=node_id, trigger_type=node_type, title=title,
            provider_name=data.get("provider_name") or "", status=ENABLED), conflict=("app_id", "node_id"))
    ctx.log.info("app %s has %d triggers (%d removed)", app_id, len(wanted), len(stale))
