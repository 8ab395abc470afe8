"""Seed groups on their real pipeline without Kafka (``consumers.testing.GroupHarness``): events
encoded and headed as the producer SDK publishes them, decoded, retried, claimed and dead-lettered
as the group's pod does, the effects in the database (SQLite, then PostgreSQL). What needs the
broker (ordering by key, concurrency, commits) stays in ``test_groups_on_kafka.py``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from dify_events.consumers.domain import Document, Provider, TenantSetting, ToolParameterCache, search
from dify_events.consumers.domain.provider import PLAN_QUOTAS
from dify_events.consumers.handlers import document_indexer, tenant_provisioner, tool_cache_cleaner
from dify_events.consumers.pipeline import dead_letters as DL
from dify_events.schemas.events import (
    AppDraftWorkflowWasSynced,
    DocumentIndexCreated,
    TenantWasCreated,
    TenantWasUpdated,
    ToolNode,
)

from .rows import AVRO_TEXT, KAFKA_TEXT, dataset, document

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_a_synced_draft_drops_its_tool_nodes_cache(harness, add, db):
    # Given cached parameters of two nodes of an app
    add(*(ToolParameterCache(tenant_id="t1", app_id="a1", node_id=n, provider_type="builtin", provider_id="google",
                             tool_name="google_search") for n in ("n1", "n2")))
    event = AppDraftWorkflowWasSynced(tenant_id="t1", app_id="a1", workflow_id="w1", tool_nodes=(
        ToolNode(node_id="n1", provider_type="builtin", provider_id="google", tool_name="google_search"),))
    # When the tool-cache-cleaner handles the draft sync naming n1 as a tool node, twice (a redelivery)
    cleaner = harness(tool_cache_cleaner.group)
    assert cleaner.send(event).handled and cleaner.send(event).duplicate
    # Then only n2's entry is left
    with db() as s:
        assert s.scalars(select(ToolParameterCache.node_id)).all() == ["n2"]


def test_documents_are_indexed_and_a_request_for_nothing_is_dead_lettered(harness, add, db):
    # Given waiting documents in two datasets, and an index request naming only documents that do not exist
    add(dataset("ds1"), dataset("ds2"), document("doc1", "ds1", KAFKA_TEXT),
        document("doc2", "ds1", AVRO_TEXT, position=2), document("doc3", "ds2", AVRO_TEXT))
    indexer = harness(document_indexer.group)
    # When the document-indexer handles them
    first = indexer.send(DocumentIndexCreated(tenant_id="t1", dataset_id="ds1", document_ids=("doc1", "doc2")))
    poison = indexer.send(DocumentIndexCreated(tenant_id="t1", dataset_id="ds2", document_ids=("ghost",)))
    last = indexer.send(DocumentIndexCreated(tenant_id="t1", dataset_id="ds2", document_ids=("doc3",)))
    # Then the real documents are completed and found by their words
    assert first.handled and last.handled
    with db() as s:
        assert set(s.scalars(select(Document.indexing_status))) == {"completed"}
        assert search(s, None, "schema") == ["doc2", "doc3"]
        assert search(s, "ds1", "consumer group") == ["doc1"]
    # and the request for nothing was dead-lettered at once (never retried), saying why
    assert poison.dead_lettered and poison.attempts == 1
    letter = poison.dead_letter
    assert letter.topic == "events.dlq.document-indexer" and indexer.dead_letters == [letter]
    assert letter.error_class.endswith("DocumentNotFound") and "ghost" in letter.header(DL.ERROR_MESSAGE)


def test_a_tenant_is_provisioned_then_its_plan_changes(harness, db):
    # Given a tenant created on the sandbox plan, then moved to the team plan with a custom config
    provisioner = harness(tenant_provisioner.group)
    # When the tenant-provisioner handles both
    assert provisioner.send(TenantWasCreated(tenant_id="t1", tenant_name="Acme", plan="sandbox",
                                             occurred_at=T0)).handled
    assert provisioner.send(TenantWasUpdated(tenant_id="t1", plan="team", custom_config={"remove_webapp_brand": "true"},
                                             occurred_at=T0 + timedelta(minutes=1))).handled
    # Then the settings are the latest, and the hosted providers carry the team quota
    with db() as s:
        settings = s.get(TenantSetting, "t1")
        limits = set(s.scalars(select(Provider.quota_limit).where(Provider.tenant_id == "t1")))
    assert (settings.name, settings.plan, settings.custom_config) == ("Acme", "team", {"remove_webapp_brand": "true"})
    assert limits == {PLAN_QUOTAS["team"]}
