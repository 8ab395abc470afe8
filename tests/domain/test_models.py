"""The domain's tables on SQLite and PostgreSQL: creation, portable types, insert_ignore."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import StatementError

from dify_events.consumers.domain import (
    App,
    AppModelConfig,
    Base,
    InstalledApp,
    Provider,
    Site,
    Tenant,
    Workflow,
    create_all,
    insert_ignore,
)

SLICE = {
    "tenants", "tenant_settings", "tenant_default_models", "apps", "sites", "installed_apps", "app_model_configs",
    "workflows", "app_dataset_joins", "app_dataset_join_versions", "tool_parameter_cache", "datasets", "documents",
    "document_segments", "document_keywords", "providers", "provider_usage", "message_usage", "messages",
    "upload_files", "segment_attachment_bindings", "dataset_process_rules", "dataset_queries", "dataset_metadatas",
    "dataset_metadata_bindings", "pipelines", "app_triggers", "workflow_schedule_plans", "workflow_plugin_triggers",
    "workflow_webhook_triggers", "workspace_sync_tasks", "feedback_telemetry", "tenant_credit_pools", "app_telemetry",
}


def test_create_all_makes_the_slice_and_can_run_again(engine):
    # Given the engine fixture ran create_all once
    # When it runs a second time
    create_all(engine)
    # Then every table of the slice exists, with the keyword index's lookup index
    inspector = inspect(engine)
    assert SLICE <= set(inspector.get_table_names())
    assert set(Base.metadata.tables) == SLICE
    indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("document_keywords")}
    assert ("keyword", "dataset_id") in indexes


def test_times_read_back_as_aware_utc(add, db):
    # Given a tenant created at 12:00 in UTC+02:00
    created = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=timezone(timedelta(hours=2)))
    add(Tenant(id="t1", name="Acme", created_at=created))
    # When it is read back
    with db() as s:
        tenant = s.get(Tenant, "t1")
    # Then it is the same instant, in UTC
    assert tenant.created_at == created
    assert tenant.created_at.tzinfo == UTC
    assert tenant.created_at.hour == 10


def test_a_naive_time_is_refused(add):
    # Given a time without a zone
    # When a row with it is written
    # Then the write fails with a message saying what to do
    with pytest.raises(StatementError, match="naive datetime"):
        add(Tenant(id="t1", name="Acme", created_at=datetime(2025, 3, 1, 12, 0)))


def test_unique_keys_of_sites_and_installed_apps(add):
    # Given an app with a site and an installed-app record
    add(Site(app_id="a1", code="code1", title="A"), InstalledApp(tenant_id="t1", app_id="a1", app_owner_tenant_id="t1"))
    # When a second site for the app, a site with a taken code, or a second record are added
    # Then each is refused by the database
    for row in (Site(app_id="a1", code="code2", title="A"), Site(app_id="a2", code="code1", title="B"),
                InstalledApp(tenant_id="t1", app_id="a1", app_owner_tenant_id="t1")):
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            add(row)


def test_insert_ignore_inserts_once_and_fills_defaults(db):
    with db() as s, s.begin():
        # Given no provider record
        # When one is inserted twice, the second time among others
        first = insert_ignore(s, Provider, dict(tenant_id="t1", provider_name="openai"),
                              conflict=("tenant_id", "provider_name"))
        second = insert_ignore(s, Provider, [dict(tenant_id="t1", provider_name="openai"),
                                             dict(tenant_id="t1", provider_name="anthropic", quota_limit=5)],
                               conflict=("tenant_id", "provider_name"))
    # Then the first inserted it, the second only the new one, and the defaults are filled in
    assert (first, second) == (1, 1)
    with db() as s:
        rows = {p.provider_name: p for p in s.scalars(select(Provider))}
    assert set(rows) == {"openai", "anthropic"}
    assert rows["openai"].quota_used == 0 and rows["openai"].provider_type == "custom"
    assert rows["anthropic"].quota_limit == 5 and rows["anthropic"].id != rows["openai"].id


def test_configs_and_workflows_name_their_datasets(add, db):
    # Given a model config in Dify's dataset_configs shape (one dataset disabled) and a published
    # workflow with two knowledge-retrieval nodes and an LLM node
    add(App(id="a1", tenant_id="t1", name="A", mode="chat"),
        AppModelConfig(id="c1", app_id="a1", dataset_configs={"retrieval_model": "multiple", "datasets": {"datasets": [
            {"dataset": {"enabled": True, "id": "d1"}}, {"dataset": {"enabled": False, "id": "d2"}},
            {"dataset": {"enabled": True, "id": "d3"}}]}}),
        Workflow(id="w1", tenant_id="t1", app_id="a1", version="2025-03-01 10:00:00", graph={"nodes": [
            {"id": "n1", "data": {"type": "knowledge-retrieval", "dataset_ids": ["d4", "d5"]}},
            {"id": "n2", "data": {"type": "llm"}},
            {"id": "n3", "data": {"type": "knowledge-retrieval", "dataset_ids": ["d5", "d6"]}}]}))
    # When their datasets are asked for
    with db() as s:
        config, workflow = s.get(AppModelConfig, "c1"), s.get(Workflow, "w1")
        # Then the enabled datasets of the config, and every dataset of the nodes, once each
        assert config.dataset_ids() == ["d1", "d3"]
        assert workflow.knowledge_dataset_ids() == ["d4", "d5", "d6"]
