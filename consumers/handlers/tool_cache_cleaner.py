"""``tool-cache-cleaner``: a synced draft workflow drops its tool nodes' cached parameters.

Seed: ``delete_tool_parameters_cache_when_sync_draft_workflow`` (on
``app_draft_workflow_was_synced``). The cache is keyed by the node (Dify's identity
``WORKFLOW.<app_id>.<node_id>``); every entry of each tool node is dropped, whichever tool it was
cached for, so a node whose tool was swapped loses the old tool's entry too.
"""

from __future__ import annotations

from sqlalchemy import delete

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import DOMAIN, ToolParameterCache, rowcount
from dify_events.schemas.events import AppDraftWorkflowWasSynced

group = register(ConsumerGroup("tool-cache-cleaner", tables=DOMAIN))


@group.handler(AppDraftWorkflowWasSynced)
def clear_tool_parameter_cache(event: AppDraftWorkflowWasSynced, ctx: HandlerContext) -> None:
    """Deletes the cache entries of the workflow's tool nodes (naturally idempotent)."""
    node_ids = sorted({node.node_id for node in event.tool_nodes})
    if not node_ids:
        ctx.log.info("draft workflow %s of app %s has no tool nodes", event.workflow_id, event.app_id)
        return
    deleted = rowcount(ctx.session.execute(delete(ToolParameterCache).where(
        ToolParameterCache.tenant_id == event.tenant_id, ToolParameterCache.app_id == event.app_id,
        ToolParameterCache.node_id.in_(node_ids))))
    ctx.log.info("dropped %d cached tool parameter sets of %d tool nodes of app %s", deleted, len(node_ids),
                 event.app_id)
