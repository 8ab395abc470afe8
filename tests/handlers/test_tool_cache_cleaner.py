"""``tool-cache-cleaner``: a synced draft drops the cached parameters of its tool nodes."""

from sqlalchemy import select

from dify_events.consumers.domain import ToolParameterCache
from dify_events.consumers.handlers.tool_cache_cleaner import clear_tool_parameter_cache
from dify_events.schemas.events import AppDraftWorkflowWasSynced, ToolNode


def cached(app_id, node_id, tool_name="google_search", tenant_id="t1") -> ToolParameterCache:
    return ToolParameterCache(tenant_id=tenant_id, app_id=app_id, node_id=node_id, provider_type="builtin",
                              provider_id="google", tool_name=tool_name, parameters={"api_key": "***"})


def test_the_tool_nodes_entries_go_and_the_others_stay(handle, add, db):
    # Given cached parameters of nodes n1 (two tools: it was swapped) and n2 of app a1, of n3 of a1
    # (not a tool node any more), and of n1 of another app
    add(cached("a1", "n1"), cached("a1", "n1", tool_name="bing_search"), cached("a1", "n2"), cached("a1", "n3"),
        cached("a2", "n1"))
    event = AppDraftWorkflowWasSynced(tenant_id="t1", app_id="a1", workflow_id="w1", tool_nodes=(
        ToolNode(node_id="n1", provider_type="builtin", provider_id="google", tool_name="google_search"),
        ToolNode(node_id="n2", provider_type="builtin", provider_id="google", tool_name="google_search")))
    # When the draft workflow with tool nodes n1 and n2 is synced, and the event handled twice
    handle(clear_tool_parameter_cache, event, event)
    # Then only n3 of a1 and the other app's entry are left
    with db() as s:
        left = sorted((c.app_id, c.node_id) for c in s.scalars(select(ToolParameterCache)))
    assert left == [("a1", "n3"), ("a2", "n1")]


def test_a_draft_without_tool_nodes_changes_nothing(handle, add, db):
    # Given a cached entry
    add(cached("a1", "n1"))
    # When a draft with no tool node is synced
    handle(clear_tool_parameter_cache, AppDraftWorkflowWasSynced(tenant_id="t1", app_id="a1", workflow_id="w1"))
    # Then the entry is still there
    with db() as s:
        assert len(s.scalars(select(ToolParameterCache)).all()) == 1
