"""The trigger groups follow a workflow app's graph as Dify's receivers do: stale rows go, titles
and subscriptions follow, schedules convert as Dify converts them, and what Dify refuses is
dead-lettered."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from dify_events.consumers.domain import (
    App,
    AppTrigger,
    WorkflowPluginTrigger,
    WorkflowSchedulePlan,
    WorkflowWebhookTrigger,
)
from dify_events.consumers.errors import MessageRejected
from dify_events.consumers.handlers.app_triggers import sync_app_triggers
from dify_events.consumers.handlers.plugin_triggers import sync_on_publish as sync_plugins
from dify_events.consumers.handlers.webhooks import sync_on_draft as webhooks_on_draft
from dify_events.consumers.handlers.webhooks import sync_on_publish as webhooks_on_publish
from dify_events.consumers.handlers.workflow_schedule import schedule_config, sync_schedule_plan, visual_to_cron
from dify_events.schemas.events import AppDraftWorkflowWasSynced, AppPublishedWorkflowWasUpdated, TriggerNode

AT = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def node(node_id: str, node_type: str, **data) -> TriggerNode:
    return TriggerNode(node_id=node_id, node_type=f"trigger-{node_type}", data=json.dumps(data))


def published(*nodes: TriggerNode, mode: str = "workflow") -> AppPublishedWorkflowWasUpdated:
    return AppPublishedWorkflowWasUpdated(tenant_id="t1", app_id="a1", workflow_id="w1", app_mode=mode,
                                          trigger_nodes=nodes, occurred_at=AT)


def synced(*nodes: TriggerNode) -> AppDraftWorkflowWasSynced:
    return AppDraftWorkflowWasSynced(tenant_id="t1", app_id="a1", workflow_id="d1", app_mode="workflow",
                                     trigger_nodes=nodes, occurred_at=AT)


def rows(db, model, *columns):
    with db() as s:
        return sorted(tuple(getattr(r, c) for c in columns) for r in s.scalars(select(model)))


def test_app_triggers_follow_the_published_graph(handle, db):
    handle(sync_app_triggers, published(node("h", "webhook", title="Hook"), node("s", "schedule", title="Daily")))
    handle(sync_app_triggers, published(node("h", "webhook", title="Renamed"), node("p", "plugin", title="Issue",
                                                                                     provider_name="github")))
    assert rows(db, AppTrigger, "node_id", "trigger_type", "title", "provider_name") == [
        ("h", "trigger-webhook", "Renamed", ""), ("p", "trigger-plugin", "Issue", "github")]


def test_a_chatflow_gets_no_triggers(handle, db):
    handle(sync_app_triggers, published(node("h", "webhook", title="Hook"), mode="advanced-chat"))
    handle(webhooks_on_draft, synced(node("h", "webhook")).model_copy(update={"app_mode": "advanced-chat"}))
    assert rows(db, AppTrigger, "node_id") == [] and rows(db, WorkflowWebhookTrigger, "node_id") == []


def test_webhooks_keep_their_ids_and_stale_ones_go_only_on_publish(handle, add, db):
    add(App(id="a1", tenant_id="t1", name="Flow", mode="workflow", created_by="acc-1"))
    handle(webhooks_on_draft, synced(node("h1", "webhook"), node("h2", "webhook")))
    first = dict(rows(db, WorkflowWebhookTrigger, "node_id", "webhook_id"))
    handle(webhooks_on_draft, synced(node("h1", "webhook")))  # main: a draft sync removes nothing
    assert dict(rows(db, WorkflowWebhookTrigger, "node_id", "webhook_id")) == first
    handle(webhooks_on_publish, published(node("h1", "webhook")))
    assert rows(db, WorkflowWebhookTrigger, "node_id", "webhook_id", "created_by") == [("h1", first["h1"], "acc-1")]


def test_plugin_triggers_follow_subscriptions_and_more_than_five_are_refused(handle, db):
    def plugin(node_id, subscription):
        return node(node_id, "plugin", provider_id="langgenius/github/github", event_name="issue_opened",
                    subscription_id=subscription)
    handle(sync_plugins, published(plugin("p1", "sub-1"), plugin("p2", "sub-2"), plugin("p3", "")))
    handle(sync_plugins, published(plugin("p1", "sub-9")))
    assert rows(db, WorkflowPluginTrigger, "node_id", "subscription_id") == [("p1", "sub-9")]
    with pytest.raises(MessageRejected, match="maximum plugin trigger node limit"):
        handle(sync_plugins, published(*(plugin(f"p{i}", f"s{i}") for i in range(6))))


def test_the_schedule_plan_follows_the_first_schedule_node_and_goes_with_it(handle, db):
    handle(sync_schedule_plan, published(node("s", "schedule", mode="cron", cron_expression="0 9 * * 1-5",
                                              timezone="UTC")))
    assert rows(db, WorkflowSchedulePlan, "node_id", "cron_expression", "next_run_at") == [
        ("s", "0 9 * * 1-5", datetime(2026, 1, 6, 9, 0, tzinfo=UTC))]  # the 5th is a Monday, 09:30
    handle(sync_schedule_plan, published(node("s2", "schedule", mode="visual", frequency="hourly",
                                              visual_config={"on_minute": 5})))
    assert rows(db, WorkflowSchedulePlan, "node_id", "cron_expression") == [("s2", "5 * * * *")]
    handle(sync_schedule_plan, published())
    assert rows(db, WorkflowSchedulePlan, "node_id") == []


@pytest.mark.parametrize(("frequency", "config", "cron"), [
    ("daily", {"time": "12:00 AM"}, "0 0 * * *"),
    ("weekly", {"time": "2:45 PM", "weekdays": ["fri", "mon"]}, "45 14 * * 1,5"),
    ("monthly", {"time": "8:15 AM", "monthly_days": [15, 1, "last"]}, "15 8 1,15,L * *"),
])
def test_visual_schedules_convert_as_dify_converts_them(frequency, config, cron):
    assert visual_to_cron(frequency, config) == cron


@pytest.mark.parametrize("data", [{"mode": "cron"}, {"mode": "visual", "frequency": "yearly"},
                                  {"mode": "visual", "frequency": "daily", "visual_config": {"time": "25:00 PM"}},
                                  {"mode": "sometimes"}])
def test_an_invalid_schedule_is_rejected(data):
    with pytest.raises(MessageRejected):
        schedule_config(data)
