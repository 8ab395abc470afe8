"""``plugin-trigger-sync``: a workflow app's plugin trigger records follow its graph.

Dify: ``sync_plugin_trigger_when_app_created`` with ``TriggerService.sync_plugin_trigger_relationships``,
on ``app_draft_workflow_was_synced`` (1.12.x and main) and ``app_published_workflow_was_updated``
(main). For workflow apps only: each ``trigger-plugin`` node with a ``subscription_id`` has a
``workflow_plugin_triggers`` row (provider, event and subscription updated when they change);
rows of nodes no longer in the graph are deleted. More than five such nodes is an error.

Differences on purpose: Dify's Redis cache of these rows and its Redis lock are not needed (the
rows are the truth, and one app's events run one at a time in their partition); a graph with too
many plugin triggers is dead-lettered (``MessageRejected``), where Dify fails the request.
"""

from __future__ import annotations

from sqlalchemy import delete, select

from dify_events.consumers import ConsumerGroup, HandlerContext, MessageRejected, register
from dify_events.consumers.domain import DOMAIN, WorkflowPluginTrigger, insert_ignore
from dify_events.consumers.domain.trigger import PLUGIN
from dify_events.schemas.events import AppDraftWorkflowWasSynced, AppPublishedWorkflowWasUpdated

from .trigger_nodes import WorkflowEvent, nodes, of_workflow_app

group = register(ConsumerGroup("plugin-trigger-sync", tables=DOMAIN))
MAX_PLUGIN_TRIGGER_NODES = 5  # Dify's MAX_PLUGIN_TRIGGER_NODES_PER_WORKFLOW
FIELDS = ("provider_id", "event_name", "subscription_id")


class TooManyTriggers(MessageRejected):
    """The graph has more trigger nodes of a kind than Dify allows per workflow."""


@group.handler(AppDraftWorkflowWasSynced)
def sync_on_draft(event: AppDraftWorkflowWasSynced, ctx: HandlerContext) -> None:
    sync_plugin_triggers(event, ctx)


@group.handler(AppPublishedWorkflowWasUpdated)
def sync_on_publish(event: AppPublishedWorkflowWasUpdated, ctx: HandlerContext) -> None:
    sync_plugin_triggers(event, ctx)


def sync_plugin_triggers(event: WorkflowEvent, ctx: HandlerContext) -> None:
    if not of_workflow_app(event):
        return
    session, app_id = ctx.session, event.app_id
    wanted = {node_id: {f: str(data.get(f) or "") for f in FIELDS} for node_id, data in nodes(event, PLUGIN)
              if data.get("subscription_id")}
    if len(wanted) > MAX_PLUGIN_TRIGGER_NODES:
        raise TooManyTriggers(f"Workflow exceeds maximum plugin trigger node limit. Found {len(wanted)} plugin "
                              f"trigger nodes, maximum allowed is {MAX_PLUGIN_TRIGGER_NODES}")
    existing = {r.node_id: r for r in session.scalars(select(WorkflowPluginTrigger).where(
        WorkflowPluginTrigger.app_id == app_id, WorkflowPluginTrigger.tenant_id == event.tenant_id))}
    stale = set(existing) - set(wanted)
    if stale:
        session.execute(delete(WorkflowPluginTrigger).where(WorkflowPluginTrigger.app_id == app_id,
                                                            WorkflowPluginTrigger.node_id.in_(stale)))
    for node_id, values in wanted.items():
        if node_id in existing:
            for name, value in values.items():
                setattr(existing[node_id], name, value)
        else:
            insert_ignore(session, WorkflowPluginTrigger, dict(tenant_id=event.tenant_id, app_id=app_id,
                                                               node_id=node_id, **values),
                          conflict=("app_id", "node_id"))
    ctx.log.info("app %s has %d plugin triggers (%d removed)", app_id, len(wanted), len(stale))
