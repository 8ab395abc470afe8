"""The invariants the demo prints: all hold on a database the handlers brought in step, and each
names what is wrong when the database breaks it."""

import pytest
from sqlalchemy import delete, update

from dify_events.consumers.domain import (
    App,
    AppDatasetJoin,
    AppModelConfig,
    Dataset,
    Document,
    DocumentSegment,
    InstalledApp,
    Message,
    Provider,
    ProviderUsage,
    Site,
    Workflow,
)
from dify_events.consumers.domain.invariants import CHECKS, Check, check_all
from dify_events.consumers.handlers.app_dataset_joins import (
    sync_joins_with_model_config,
    sync_joins_with_published_workflow,
)
from dify_events.consumers.handlers.dataset_cleaner import clean_dataset
from dify_events.consumers.handlers.document_indexer import index_documents
from dify_events.consumers.handlers.installed_app_provisioner import create_installed_app
from dify_events.consumers.handlers.provider_usage import record_provider_usage
from dify_events.consumers.handlers.site_provisioner import create_site_record
from dify_events.schemas.events import (
    AppModelConfigWasUpdated,
    AppPublishedWorkflowWasUpdated,
    AppWasCreated,
    DatasetWasDeleted,
    DocumentIndexCreated,
    MessageWasCreated,
)


@pytest.fixture
def world(add, handle, db):
    """A small workload, written as the application writes it and handled by the groups' handlers:
    a chat app and a workflow app, three datasets (one deleted), documents (one empty), messages."""
    add(Dataset(id="d1", tenant_id="t1", name="d1"), Dataset(id="d2", tenant_id="t1", name="d2"),
        Dataset(id="d3", tenant_id="t1", name="d3"),
        Document(id="doc1", tenant_id="t1", dataset_id="d1", name="a", content="Kafka topics and partitions"),
        Document(id="doc2", tenant_id="t1", dataset_id="d1", name="b", content=""),
        Document(id="doc3", tenant_id="t1", dataset_id="d3", name="c", content="Doomed dataset text"),
        AppModelConfig(id="c1", app_id="chat", dataset_configs={"datasets": {"datasets": [
            {"dataset": {"enabled": True, "id": "d1"}}, {"dataset": {"enabled": True, "id": "d3"}}]}}),
        Workflow(id="w1", tenant_id="t1", app_id="flow", version="2025-03-01", graph={"nodes": [
            {"id": "k", "data": {"type": "knowledge-retrieval", "dataset_ids": ["d2"]}}]}),
        App(id="chat", tenant_id="t1", name="Chat", mode="chat", app_model_config_id="c1"),
        App(id="flow", tenant_id="t1", name="Flow", mode="workflow", workflow_id="w1"),
        Provider(tenant_id="t1", provider_name="openai", provider_type="system", quota_type="trial",
                 quota_limit=1000, quota_used=0),
        *[Message(id=f"m{i}", tenant_id="t1", app_id="chat", conversation_id="cv", model_provider="openai",
                  model_id="gpt-4o", message_tokens=i, answer_tokens=i, total_tokens=2 * i) for i in range(1, 6)])
    for app_id in ("chat", "flow"):
        event = AppWasCreated(tenant_id="t1", app_id=app_id, mode="chat", name=app_id, created_by="u")
        handle(create_installed_app, event)
        handle(create_site_record, event)
    handle(sync_joins_with_model_config, AppModelConfigWasUpdated(
        tenant_id="t1", app_id="chat", app_model_config_id="c1", dataset_ids=("d1", "d3")))
    handle(sync_joins_with_published_workflow, AppPublishedWorkflowWasUpdated(
        tenant_id="t1", app_id="flow", workflow_id="w1", dataset_ids=("d2",)))
    handle(index_documents, DocumentIndexCreated(tenant_id="t1", dataset_id="d1", document_ids=("doc1", "doc2")),
           DocumentIndexCreated(tenant_id="t1", dataset_id="d3", document_ids=("doc3",)))
    with db() as s, s.begin():
        s.execute(delete(Dataset).where(Dataset.id == "d3"))
    handle(clean_dataset, DatasetWasDeleted(tenant_id="t1", dataset_id="d3", indexing_technique="economy",
                                            doc_form="text_model"))
    for i in range(1, 6):
        handle(record_provider_usage, MessageWasCreated(
            tenant_id="t1", message_id=f"m{i}", conversation_id="cv", app_id="chat", provider_name="openai",
            model_name="gpt-4o", message_tokens=i, answer_tokens=i, total_tokens=2 * i, app_mode="chat",
            quota_type="trial", quota_unit="credits"))
    return db


def failing(db) -> dict[str, str]:
    with db() as s:
        return {c.name: c.detail for c in check_all(s) if not c.ok}


def test_every_invariant_holds_after_the_handlers_ran(world):
    # Given the workload handled by the groups' handlers
    # When every check runs
    with world() as s:
        checks = check_all(s)
    # Then each returns (name, ok, detail), and all hold
    assert len(checks) == len(CHECKS) and all(isinstance(c, Check) and len(c) == 3 for c in checks)
    assert [c for c in checks if not c.ok] == []


@pytest.mark.parametrize("breakage, check_name, detail", [
    (delete(Site).where(Site.app_id == "chat"), "every app has exactly one site", "chat has 0"),
    (delete(InstalledApp).where(InstalledApp.app_id == "flow"), "every app is installed once", "flow has 0"),
    (delete(AppDatasetJoin).where(AppDatasetJoin.app_id == "chat"), "app dataset joins",
     "chat: joined 0 extra, 1 missing"),
    (update(App).where(App.id == "flow").values(workflow_id=None), "app dataset joins", "flow: joined 1 extra"),
    (delete(Document).where(Document.id == "doc1"), "only to live, completed documents", "1 segments"),
    (update(Document).where(Document.id == "doc2").values(indexing_status="waiting"), "every document",
     "1 still waiting"),
    (update(Document).where(Document.id == "doc2").values(error=None), "every document", "without a reason"),
    (update(ProviderUsage).values(total_tokens=1), "usage equals", "usage 1 != messages 30"),
    (update(Provider).where(Provider.provider_name == "openai").values(quota_used=0), "quota is deducted",
     "used 0, charges 5"),
])
def test_each_invariant_names_what_breaks_it(world, breakage, check_name, detail):
    # Given the consistent workload
    # When the database is broken in one way
    with world() as s, s.begin():
        s.execute(breakage)
    # Then exactly that check fails, and its detail says what is wrong
    failed = failing(world)
    assert len(failed) == 1, failed
    (name, text), = failed.items()
    assert check_name in name and detail in text


def test_a_message_not_counted_breaks_usage_and_quota(world, add):
    # Given a message the application wrote whose event was never handled
    add(Message(id="m99", tenant_id="t1", app_id="chat", conversation_id="cv", model_provider="openai",
                model_id="gpt-4o", message_tokens=1, answer_tokens=1, total_tokens=2))
    # When the checks run
    # Then usage and quota both report the difference
    failed = failing(world)
    assert set(failed) == {"each provider's usage equals the sum of its messages' tokens",
                           "each hosted provider's quota is deducted as Dify charges it"}
    assert "usage 30 != messages 32" in failed["each provider's usage equals the sum of its messages' tokens"]


def test_deleted_dataset_leftovers_are_counted_by_kind(world, add):
    # Given a segment of a dataset that no longer exists
    add(DocumentSegment(id="stray", tenant_id="t1", dataset_id="gone", document_id="doc1", position=9,
                        content="x", word_count=1, index_node_id="stray"))
    # Then the check counts it as a segment of a deleted dataset
    assert failing(world)["no document, segment, index entry or join of a deleted dataset remains"] == "1 segments"
