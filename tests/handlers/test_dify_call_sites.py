"""Dify's own calls, replayed: one case per call site of ``producers.dify_calls`` (Dify 1.12.x and
main), each id naming Dify's file and function. The call goes through the real signal into the
outbox (in the caller's transaction), the event is decoded from the outbox row as the relay would
publish it, and every consumer group that takes it runs on the database (SQLite and PostgreSQL):
the test asserts the event carries what Dify's receivers read, and that the groups' effects are
those of Dify's receivers. A call shape the signals refuse fails here."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from dify_events.consumers.domain import (
    App,
    AppDatasetJoin,
    AppTelemetry,
    AppTrigger,
    Dataset,
    DatasetMetadataBinding,
    DatasetProcessRule,
    Document,
    DocumentSegment,
    FeedbackTelemetry,
    InstalledApp,
    Pipeline,
    Provider,
    SegmentAttachmentBinding,
    Site,
    Tenant,
    ToolParameterCache,
    UploadFile,
    Workflow,
    WorkflowPluginTrigger,
    WorkflowSchedulePlan,
    WorkflowWebhookTrigger,
    WorkspaceSyncTask,
)
from dify_events.consumers.domain.app import RAG_PIPELINE
from dify_events.consumers.handlers import GROUPS
from dify_events.producers import dify_calls as dify
from dify_events.producers.outbox import create_outbox_table, event_outbox
from dify_events.producers.signals import SIGNALS
from dify_events.schemas.catalogue import CATALOGUE
from dify_events.schemas.codec import AvroCodec

T, ACCOUNT, APP, DS, DS2, DOC, FILE, IMAGE, ATTACHMENT = (
    "t1", "acc-1", "app-1", "ds-1", "ds-2", "doc-1", "file-1", "img-1", "att-1")
PIPELINE = "pipe-1"
AT = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def graph() -> str:
    """A workflow graph as Dify stores it: a valid knowledge node, one that fails Dify's node
    validation (no retrieval_mode), a tool node and one trigger node of each kind."""
    return json.dumps({"nodes": [
        {"id": "start", "data": {"type": "start", "title": "Start"}},
        {"id": "kr-1", "data": {"type": "knowledge-retrieval", "title": "Knowledge", "dataset_ids": [DS],
                                "retrieval_mode": "multiple"}},
        {"id": "kr-2", "data": {"type": "knowledge-retrieval", "title": "Broken", "dataset_ids": [DS2]}},
        {"id": "tool-1", "data": {"type": "tool", "title": "Search", "provider_type": "builtin",
                                  "provider_id": "google", "tool_name": "google_search"}},
        {"id": "hook", "data": {"type": "trigger-webhook", "title": "Webhook"}},
        {"id": "cron", "data": {"type": "trigger-schedule", "title": "Every morning", "mode": "visual",
                                "frequency": "daily", "visual_config": {"time": "8:15 AM"},
                                "timezone": "Asia/Shanghai"}},
        {"id": "plug", "data": {"type": "trigger-plugin", "title": "New issue", "provider_name": "github",
                                "provider_id": "langgenius/github/github", "event_name": "issue_opened",
                                "subscription_id": "sub-1"}},
    ]})


def world(site: dify.CallSite) -> dify.World:
    mode = {"app_published_workflow_was_updated": "workflow", "app_draft_workflow_was_synced": "workflow"}.get(
        site.signal, "advanced-chat" if "advanced_chat" in site.where else "chat")
    app = dify.App(APP, T, mode, "Support bot", created_by=ACCOUNT, updated_by="acc-2", icon="🤖",
                   icon_background="#fff", description="not the site's", app_model_config_id="cfg-0")
    config = dify.AppModelConfig("cfg-1", APP, agent_mode=json.dumps({"tools": []}), dataset_configs=json.dumps(
        {"datasets": {"datasets": [{"dataset": {"enabled": True, "id": DS}}]}}))
    return dify.World(
        account=dify.Account(ACCOUNT, interface_language="zh-Hans"), tenant=dify.Tenant(T, "Acme", "sandbox"),
        app=app, app_model_config=config, workflow=dify.Workflow("wf-1", T, APP, graph()),
        dataset=dify.Dataset(DS, T, indexing_technique="high_quality", doc_form="text_model", pipeline_id=PIPELINE),
        document=dify.Document(DOC, DS, data_source_info=json.dumps({"upload_file_id": FILE})),
        message=dify.Message("msg-1", "conv-1", APP, "langgenius/openai/openai", "gpt-4o", 812, 233, 1.83),
        entity=dify.generate_entity(tenant_id=T, app_id=APP, app_mode=mode, provider="langgenius/openai/openai",
                                    model="gpt-4o", quota_type="trial", quota_unit="tokens", quota_limit=5000),
        feedback=dify.MessageFeedback("fb-1", APP, "conv-1", "msg-1", "like", from_end_user_id="eu-1"),
        extra={"source": "oauth_register", "sessions": object()})


def application_rows(add) -> None:
    """What Dify's application wrote before the calls: the rows the receivers read and clean."""
    image = f"![image](https://cloud.dify.ai/files/{IMAGE}/file-preview)"
    add(Tenant(id=T, name="Acme", plan="sandbox"),
        App(id=APP, tenant_id=T, name="Support bot", mode="workflow", created_by=ACCOUNT),
        Dataset(id=DS, tenant_id=T, name="Manual", pipeline_id=PIPELINE), Dataset(id=DS2, tenant_id=T, name="Other"),
        Document(id=DOC, tenant_id=T, dataset_id=DS, name="a.md", data_source_info={"upload_file_id": FILE}),
        DocumentSegment(id="seg-1", tenant_id=T, dataset_id=DS, document_id=DOC, position=1,
                        content=f"See {image}", word_count=1, index_node_id="seg-1"),
        *(UploadFile(id=i, tenant_id=T, key=f"upload_files/{T}/{i}", name=i) for i in (FILE, IMAGE, ATTACHMENT)),
        SegmentAttachmentBinding(tenant_id=T, dataset_id=DS, document_id=DOC, segment_id="seg-1",
                                 attachment_id=ATTACHMENT),
        DatasetMetadataBinding(tenant_id=T, dataset_id=DS, metadata_id="md-1", document_id=DOC),
        DatasetProcessRule(dataset_id=DS), Pipeline(id=PIPELINE, tenant_id=T, name="Pipeline"),
        Workflow(tenant_id=T, app_id=PIPELINE, type=RAG_PIPELINE, version="draft"),
        ToolParameterCache(tenant_id=T, app_id=APP, node_id="tool-1", provider_type="builtin",
                           provider_id="google", tool_name="google_search"),
        Provider(tenant_id=T, provider_name="openai", provider_type="system", quota_type="trial",
                 quota_limit=5000, quota_used=0),
        Provider(tenant_id=T, provider_name="langgenius/openai/openai", provider_type="custom"))


def count(s, model, *where) -> int:
    return s.scalar(select(func.count()).select_from(model).where(*where))


# -- what each signal's event carries, and what the groups then did --------------------------
def check_app_was_created(site, event, s) -> None:
    if "AppEvent" in site.where:
        assert event.records_initialized and event.app_id == APP and event.tenant_id == T
        assert count(s, InstalledApp) == 0 and count(s, Site) == 0  # the application made them itself
        return
    assert (event.has_account, event.default_language, event.updated_by) == (True, "zh-Hans", "acc-2")
    site_row = s.scalars(select(Site)).one()
    assert (site_row.default_language, site_row.updated_by, site_row.created_by, site_row.title,
            site_row.description) == ("zh-Hans", "acc-2", ACCOUNT, "Support bot", "")
    assert count(s, InstalledApp, InstalledApp.app_id == APP, InstalledApp.tenant_id == T) == 1
    assert s.scalars(select(AppTelemetry.telemetry_case)).one() == "app.created"


def app_counted(event, s, case: str) -> None:
    assert (event.app_id, event.tenant_id, event.mode) == (APP, T, "chat")
    row = s.scalars(select(AppTelemetry)).one()  # counted once, though handled twice
    assert (row.telemetry_case, row.app_id, row.tenant_id, row.mode) == (case, APP, T, "chat")


def check_app_was_updated(site, event, s) -> None:
    app_counted(event, s, "app.updated")


def check_app_was_deleted(site, event, s) -> None:
    app_counted(event, s, "app.deleted")
    assert count(s, App, App.id == APP) == 1  # Dify's own task removes the app's data, not a receiver


def check_app_model_config_was_updated(site, event, s) -> None:
    assert (event.app_model_config_id, event.dataset_ids, event.config_given) == ("cfg-1", (DS,), True)
    assert set(s.scalars(select(AppDatasetJoin.dataset_id))) == {DS}


def check_workflow_triggers(event, s, *, published: bool) -> None:
    assert event.app_mode == "workflow"
    assert [(n.node_id, n.node_type) for n in event.trigger_nodes] == [
        ("hook", "trigger-webhook"), ("cron", "trigger-schedule"), ("plug", "trigger-plugin")]
    plugin = s.scalars(select(WorkflowPluginTrigger)).one()
    assert (plugin.node_id, plugin.provider_id, plugin.event_name, plugin.subscription_id) == (
        "plug", "langgenius/github/github", "issue_opened", "sub-1")
    webhook = s.scalars(select(WorkflowWebhookTrigger)).one()
    assert webhook.node_id == "hook" and len(webhook.webhook_id) == 24 and webhook.created_by == ACCOUNT
    assert count(s, AppTrigger) == (3 if published else 0)
    assert count(s, WorkflowSchedulePlan) == (1 if published else 0)


def check_app_published_workflow_was_updated(site, event, s) -> None:
    assert event.dataset_ids == (DS,)  # kr-2 fails Dify's node validation: skipped
    assert set(s.scalars(select(AppDatasetJoin.dataset_id))) == {DS}
    check_workflow_triggers(event, s, published=True)
    plan = s.scalars(select(WorkflowSchedulePlan)).one()
    assert (plan.node_id, plan.cron_expression, plan.timezone) == ("cron", "15 8 * * *", "Asia/Shanghai")
    assert plan.next_run_at > event.occurred_at and plan.next_run_at - event.occurred_at <= timedelta(days=1)
    assert (plan.next_run_at.hour, plan.next_run_at.minute) == (0, 15)  # 08:15 in Shanghai is 00:15 UTC
    titles = dict(s.execute(select(AppTrigger.node_id, AppTrigger.title)).all())
    assert titles == {"hook": "Webhook", "cron": "Every morning", "plug": "New issue"}


def check_app_draft_workflow_was_synced(site, event, s) -> None:
    assert [n.node_id for n in event.tool_nodes] == ["tool-1"]
    assert count(s, ToolParameterCache) == 0
    check_workflow_triggers(event, s, published=False)


def check_dataset_was_deleted(site, event, s) -> None:
    assert (event.dataset_id, event.tenant_id, event.pipeline_id, event.doc_form) == (DS, T, PIPELINE, "text_model")
    for model in (Document, DocumentSegment, SegmentAttachmentBinding, DatasetMetadataBinding, DatasetProcessRule):
        assert count(s, model, model.dataset_id == DS) == 0, model.__tablename__
    assert count(s, UploadFile) == 0 and count(s, Pipeline) == 0 and count(s, Workflow) == 0
    assert s.get(Dataset, DS) is not None  # the application deletes the row itself, after the call


def check_document_was_deleted(site, event, s) -> None:
    assert (event.document_id, event.dataset_id, event.doc_form, event.file_id) == (DOC, DS, "text_model", FILE)
    assert event.tenant_id == ""  # Dify does not pass it: the handler read the dataset row's
    assert count(s, DocumentSegment) == 0 and count(s, SegmentAttachmentBinding) == 0
    assert count(s, DatasetMetadataBinding) == 0 and count(s, UploadFile) == 0


def check_message_was_created(site, event, s) -> None:
    providers = {p.provider_name: p for p in s.scalars(select(Provider))}
    if "advanced_chat" in site.where:  # Dify charges advanced-chat messages elsewhere
        assert event.app_mode == "advanced-chat"
        assert providers["openai"].quota_used == 0 and providers["openai"].last_used is None
        return
    assert (event.app_mode, event.quota_type, event.quota_unit, event.total_tokens) == ("chat", "trial", "tokens", 1045)
    assert providers["openai"].quota_used == 1045  # charged on the short name's hosted row
    assert providers["langgenius/openai/openai"].last_used == event.occurred_at
    assert providers["langgenius/openai/openai"].quota_used == 0 and count(s, Provider) == 2  # no row created


def check_tenant_was_created(site, event, s) -> None:
    task = s.scalars(select(WorkspaceSyncTask)).one()
    assert task.workspace_id == T and task.source == event.source
    assert event.source == ("oauth_register" if "source" in site.code else "tenant_created")


def check_feedback_was_created(site, event, s) -> None:
    assert (event.feedback_id, event.message_id, event.rating, event.tenant_id) == ("fb-1", "msg-1", "like", T)
    row = s.scalars(select(FeedbackTelemetry)).one()  # counted once, though handled twice
    assert (row.tenant_id, row.app_id, row.rating, row.message_id) == (T, APP, "like", "msg-1")


CHECKS = {name.removeprefix("check_"): fn for name, fn in globals().items() if name.startswith("check_")}


@pytest.fixture
def outbox(engine):
    create_outbox_table(engine)
    return engine


@pytest.mark.parametrize("site", dify.CALL_SITES, ids=lambda s: s.id)
def test_dify_call_site(site, outbox, add, db, handle):
    # Given the rows Dify's application wrote, and the objects of Dify's call
    application_rows(add)
    w = world(site)
    # When Dify's call runs in the application's transaction (its own session= where it passes one)
    with db() as session, session.begin():
        w.session = session
        sender, kwargs = site.call(w)
        kwargs.setdefault("session", session)
        sent = SIGNALS[site.signal].send(sender, occurred_at=AT, **kwargs)
    # Then the committed outbox row holds that event, as the relay will publish it
    with db() as s:
        payload = s.execute(select(event_outbox.c.payload).where(event_outbox.c.event_id == sent.event_id)).scalar_one()
    event = AvroCodec(CATALOGUE).decode(payload, site.signal)
    assert event == sent
    # When every consumer group that takes it handles it (twice: a redelivery changes nothing)
    handlers = [g.handlers[site.signal] for g in GROUPS if site.signal in g.handlers]
    assert handlers, f"no consumer group takes {site.signal}"
    for handler in handlers:
        handle(handler, event, event)
    # Then the database is as Dify's receivers leave it
    with db() as s:
        CHECKS[site.signal](site, event, s)


def test_every_signal_with_a_call_site_has_its_check():
    assert {site.signal for site in dify.CALL_SITES} <= set(CHECKS)
