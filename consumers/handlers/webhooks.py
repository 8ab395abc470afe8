"""``webhook-sync``: each webhook node of a workflow app has its public webhook id.

Dify: ``sync_webhook_when_app_created`` with ``WebhookService.sync_webhook_relationships``. For
workflow apps only: on ``app_draft_workflow_was_synced`` every ``trigger-webhook`` node without a
``workflow_webhook_triggers`` row gets one, with a new random 24-character webhook id and the
app's creator; on ``app_published_workflow_was_updated`` (main: ``remove_stale=True``) the rows of
nodes no longer in the graph are deleted too. More than five webhook nodes is an error.

Differences on purpose: no Redis cache or lock (see ``plugin-trigger-sync``); an existing node
keeps its webhook id, so a replay changes nothing; too many nodes is dead-lettered
(``MessageRejected``), where Dify fails the request.
"""

from __future__ import annotations

import secrets

from sqlalchemy import delete, select

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import DOMAIN, App, WorkflowWebhookTrigger, insert_ignore
from dify_events.consumers.domain.trigger import WEBHOOK
from dify_events.schemas.events import AppDraftWorkflowWasSynced, AppPublishedWorkflowWasUpdated

from .plugin_triggers import TooManyTriggers
from .trigger_nodes import WorkflowEvent, nodes, of_workflow_app

group = register(ConsumerGroup("webhook-sync", tables=DOMAIN))
MAX_WEBHOOK_NODES = 5  # Dify's MAX_WEBHOOK_NODES_PER_WORKFLOW


def generate_webhook_id() -> str:
    """Dify's ``generate_webhook_id``: 24 url-safe characters."""
    return secrets.token_urlsafe(18)[:24]


@group.handler(AppDraftWorkflowWasSynced)
def sync_on_draft(event: AppDraftWorkflowWasSynced, ctx: HandlerContext) -> None:
    sync_webhooks(event, ctx, remove_stale=False)


@group.handler(AppPublishedWorkflowWasUpdated)
def sync_on_publish(event: AppPublishedWorkflowWasUpdated, ctx: HandlerContext) -> None:
    sync_webhooks(event, ctx, remove_stale=True)


def sync_webhooks(event: WorkflowEvent, ctx: HandlerContext, *, remove_stale: bool) -> None:
    if not of_workflow_app(event):
        return
    session, app_id = ctx.session, event.app_id
    wanted = [node_id for node_id, _ in nodes(event, WEBHOOK)]
    if len(wanted) > MAX_WEBHOOK_NODES:
        raise TooManyTriggers(f"Workflow exceeds maximum webhook node limit. Found {len(wanted)} webhook nodes, "
                              f"maximum allowed is {MAX_WEBHOOK_NODES}")
    existing = set(session.scalars(select(WorkflowWebhookTrigger.node_id).where(
        WorkflowWebhookTrigger.app_id == app_id, WorkflowWebhookTrigger.tenant_id == event.tenant_id)))
    created_by = session.scalar(select(App.created_by).where(App.id == app_id))
    added = [node_id for node_id in wanted if node_id not in existing]
    for node_id in added:
        insert_ignore(session, WorkflowWebhookTrigger, dict(
            tenant_id=event.tenant_id, app_id=app_id, node_id=node_id, webhook_id=generate_webhook_id(),
            created_by=created_by), conflict=("app_id", "node_id"))
    stale = existing - set(wanted) if remove_stale else set()
    if stale:
        session.execute(delete(WorkflowWebhookTrigger).where(WorkflowWebhookTrigger.app_id == app_id,
                                                             WorkflowWebhookTrigger.node_id.in_(stale)))
    ctx.log.info("app %s: %d webhook nodes, %d added, %d removed", app_id, len(wanted), len(added), len(stale))
