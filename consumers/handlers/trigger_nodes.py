"""Reading the trigger nodes a workflow event carries, as Dify's trigger receivers read the graph."""

from __future__ import annotations

import json
from typing import Any

from dify_events.schemas.events import AppDraftWorkflowWasSynced, AppPublishedWorkflowWasUpdated

WORKFLOW = "workflow"
WorkflowEvent = AppDraftWorkflowWasSynced | AppPublishedWorkflowWasUpdated


def of_workflow_app(event: WorkflowEvent) -> bool:
    """Dify's trigger receivers act on workflow apps only ("chatflow is not supported yet"). An
    event without the mode (v1) is one of no trigger node either."""
    return event.app_mode == WORKFLOW


def nodes(event: WorkflowEvent, node_type: str) -> list[tuple[str, dict[str, Any]]]:
    """``(node_id, data)`` of the event's trigger nodes of ``node_type``, in graph order."""
    return [(node.node_id, json.loads(node.data)) for node in event.trigger_nodes if node.node_type == node_type]
