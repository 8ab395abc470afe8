"""The seed's consumer groups through Kafka: events published with the producer SDK onto the real
broker, the group run as its pod runs it (``GroupRunner``), its effects in the database (SQLite,
then PostgreSQL). Groups whose tests need only their pipeline run without the broker, in
``test_groups_in_harness.py``."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select

from dify_events.consumers.domain import (
    AppDatasetJoin,
    Dataset,
    Document,
    DocumentKeyword,
    DocumentSegment,
    InstalledApp,
    Provider,
    ProviderUsage,
    Site,
    search,
)
from dify_events.consumers.handlers import (
    GROUPS,
    app_dataset_joins,
    dataset_cleaner,
    document_cleaner,
    document_indexer,
    installed_app_provisioner,
    provider_usage,
    site_provisioner,
)
from dify_events.consumers.handlers.document_indexer import index_documents
from dify_events.consumers.registry import discover
from dify_events.consumers.runners import runner_class
from dify_events.consumers.share_runner import ShareGroupRunner
from dify_events.producers import EventProducer
from dify_events.schemas.events import (
    AppModelConfigWasUpdated,
    AppPublishedWorkflowWasUpdated,
    AppWasCreated,
    DatasetWasDeleted,
    DocumentIndexCreated,
    DocumentWasDeleted,
    MessageWasCreated,
)
from dify_events.schemas.settings import get_settings

from .kafka import running, settled, wait_until
from .rows import AVRO_TEXT, KAFKA_TEXT, dataset, document

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Kafka:
    """Publishes events with the SDK onto the test's domain topics, and runs groups over them."""

    def __init__(self, prefix, topic_factory, database_url):
        self.prefix, self.topic_factory, self.database_url = prefix, topic_factory, database_url
        self.topics: set[str] = set()

    def topic(self, name: str, partitions: int = 1) -> None:
        if name not in self.topics:
            self.topic_factory(name, partitions=partitions)
            self.topics.add(name)

    def publish(self, events, *, partitions: int = 2) -> None:
        for event in events:
            self.topic(f"{self.prefix}.{event.domain}", partitions)
        with EventProducer(settings=get_settings()) as producer:
            outcomes = producer.publish_many(events)
        assert all(not isinstance(o, Exception) for o in outcomes), outcomes

    def consume(self, group, count: int) -> dict[str, int]:
        """Runs the group until ``count`` messages are settled, stops it; returns its stats."""
        for topic in (*group.domain_topics(self.prefix), group.retry_topic(self.prefix), group.dlq_topic(self.prefix)):
            self.topic(topic)
        with running(group, self.database_url) as runner:
            wait_until(lambda: settled(runner) >= count, 90, f"{count} events settled by {group.name}")
        return runner.stats()

    def __call__(self, group, events, *, partitions: int = 2) -> dict[str, int]:
        self.publish(events, partitions=partitions)
        return self.consume(group, len(events))


@pytest.fixture
def through_kafka(kafka_env, topic_factory, database_url, engine) -> Kafka:
    """``through_kafka(group, events)``: publishes the events, runs the group until every one is
    settled (handled, duplicate or dead-lettered), stops it, returns its stats. The domain tables
    are created first (``engine``)."""
    return Kafka(kafka_env, topic_factory, database_url)


def test_every_group_is_registered_under_its_name():
    # Given the platform's handler package
    # When the registry discovers groups
    names = {g.name for g in discover()}
    # Then the seed's nine jobs and Dify's other receivers are there, as GROUPS lists them
    assert {g.name for g in GROUPS} == {
        "installed-app-provisioner", "site-provisioner", "app-dataset-joins", "tool-cache-cleaner",
        "dataset-cleaner", "document-cleaner", "document-indexer", "provider-usage", "tenant-provisioner",
        "plugin-trigger-sync", "webhook-sync", "workflow-schedule-sync", "app-trigger-sync", "credential-sync",
        "feedback-telemetry", "app-telemetry"} <= names


def test_new_apps_get_installed_and_a_site_and_a_duplicate_changes_nothing(through_kafka, db):
    # Given three new apps, the first published twice (the same event: a producer retry)
    events = [AppWasCreated(tenant_id="t1", app_id=f"a{i}", mode="chat", name=f"App {i}", created_by="u")
              for i in range(3)]
    events.append(events[0])
    # When they are published, and the two provisioning groups consume them
    through_kafka.publish(events)
    installed = through_kafka.consume(installed_app_provisioner.group, len(events))
    sited = through_kafka.consume(site_provisioner.group, len(events))
    # Then each app has one installed-app record and one site, and the repeat was a duplicate
    with db() as s:
        assert sorted(s.scalars(select(InstalledApp.app_id))) == ["a0", "a1", "a2"]
        sites = s.scalars(select(Site)).all()
    assert sorted(x.app_id for x in sites) == ["a0", "a1", "a2"] and len({x.code for x in sites}) == 3
    assert (installed["handled"], installed["duplicates"]) == (3, 1)
    assert (sited["handled"], sited["duplicates"]) == (3, 1)


def test_dataset_joins_follow_the_last_update_of_each_app(through_kafka, add, db):
    # Given four datasets, and per app a sequence of updates (keyed by app id, so kept in order)
    add(*(dataset(f"d{i}") for i in range(1, 5)))
    events = [
        AppModelConfigWasUpdated(tenant_id="t1", app_id="chat", app_model_config_id="c1", dataset_ids=("d1", "d2"),
                                 occurred_at=T0),
        AppPublishedWorkflowWasUpdated(tenant_id="t1", app_id="flow", workflow_id="w1", dataset_ids=("d1",),
                                       occurred_at=T0),
        AppModelConfigWasUpdated(tenant_id="t1", app_id="chat", app_model_config_id="c2", dataset_ids=("d2", "d3"),
                                 occurred_at=T0 + timedelta(seconds=1)),
        AppPublishedWorkflowWasUpdated(tenant_id="t1", app_id="flow", workflow_id="w2", dataset_ids=("d3", "d4"),
                                       occurred_at=T0 + timedelta(seconds=1)),
        AppModelConfigWasUpdated(tenant_id="t1", app_id="chat", app_model_config_id="c3", dataset_ids=("d3",),
                                 occurred_at=T0 + timedelta(seconds=2)),
    ]
    # When the app-dataset-joins group consumes them
    stats = through_kafka(app_dataset_joins.group, events)
    # Then each app's joins are exactly its last update's datasets
    with db() as s:
        joins = sorted(tuple(r) for r in s.execute(select(AppDatasetJoin.app_id, AppDatasetJoin.dataset_id)))
    assert joins == [("chat", "d3"), ("flow", "d3"), ("flow", "d4")]
    assert stats["handled"] == 5


def test_deleted_datasets_and_documents_leave_the_index(through_kafka, add, handle, db):
    # Given two indexed datasets joined to an app, then the application deletes ds1 and doc3 of ds2
    add(dataset("ds1"), dataset("ds2"), document("doc1", "ds1", KAFKA_TEXT), document("doc2", "ds2", KAFKA_TEXT),
        document("doc3", "ds2", AVRO_TEXT, position=2), AppDatasetJoin(app_id="a1", dataset_id="ds1"))
    handle(index_documents, DocumentIndexCreated(tenant_id="t1", dataset_id="ds1", document_ids=("doc1",)),
           DocumentIndexCreated(tenant_id="t1", dataset_id="ds2", document_ids=("doc2", "doc3")))
    with db() as s, s.begin():
        s.execute(delete(Dataset).where(Dataset.id == "ds1"))
        s.execute(delete(Document).where(Document.id == "doc3"))
    # When the dataset-cleaner and the document-cleaner consume the deletions
    through_kafka(dataset_cleaner.group, [DatasetWasDeleted(tenant_id="t1", dataset_id="ds1",
                                                            indexing_technique="economy", doc_form="text_model")])
    through_kafka(document_cleaner.group, [DocumentWasDeleted(tenant_id="t1", dataset_id="ds2", document_id="doc3")])
    # Then nothing of ds1 or doc3 is left or found; doc2 still is
    with db() as s:
        assert s.scalar(select(func.count()).select_from(Document).where(Document.dataset_id == "ds1")) == 0
        assert s.scalar(select(func.count()).select_from(AppDatasetJoin)) == 0
        assert set(s.scalars(select(DocumentKeyword.document_id))) == {"doc2"}
        assert search(s, None, "kafka") == ["doc2"]
        assert search(s, None, "avro") == []


def test_the_shared_document_indexer_indexes_each_document_once_with_two_members(through_kafka, add, db):
    # Given twelve documents of two datasets, an index request for each (keyed by dataset, on three
    # partitions), the first request published twice (a producer's retry: the same event)
    add(dataset("ds1"), dataset("ds2"),
        *(document(f"doc{i}", f"ds{1 + i % 2}", KAFKA_TEXT if i % 3 else AVRO_TEXT, position=i) for i in range(12)))
    events = [DocumentIndexCreated(tenant_id="t1", dataset_id=f"ds{1 + i % 2}", document_ids=(f"doc{i}",))
              for i in range(12)]
    events.append(events[0])
    group = document_indexer.group
    assert group.delivery == "shared" and runner_class(group) is ShareGroupRunner
    through_kafka.publish(events, partitions=3)
    for topic in (*group.domain_topics(through_kafka.prefix), group.retry_topic(through_kafka.prefix),
                  group.dlq_topic(through_kafka.prefix)):
        through_kafka.topic(topic)
    # When two members of the share group (two runners, as two pods) take them
    with running(group, through_kafka.database_url) as one, running(group, through_kafka.database_url) as two:
        wait_until(lambda: settled(one) + settled(two) >= len(events), 90, "every request settled by the two members")
    stats = Counter(one.stats()) + Counter(two.stats())
    # Then every document is indexed once: completed, each segment and keyword written once, and the
    # repeated request skipped as a duplicate
    with db() as s:
        assert set(s.scalars(select(Document.indexing_status))) == {"completed"}
        segments = s.execute(select(DocumentSegment.document_id, DocumentSegment.position)).all()
        assert len(segments) == len(set(segments)) and {d for d, _ in segments} == {f"doc{i}" for i in range(12)}
        assert sorted(search(s, None, "avro")) == sorted(f"doc{i}" for i in range(0, 12, 3))
    assert (stats["handled"], stats["duplicates"], stats["dead_lettered"]) == (12, 1, 0), stats


def test_provider_usage_is_the_sum_of_message_tokens(through_kafka, add, db):
    # Given two hosted providers' trial rows, and 40 chat messages of 4 conversations on them (named the
    # way Dify 1.x names them), the first five published twice
    add(*(Provider(tenant_id="t1", provider_name=p, provider_type="system", quota_type="trial", quota_limit=10**6,
                   quota_used=0) for p in ("openai", "anthropic")))
    events = [MessageWasCreated(tenant_id="t1", message_id=f"m{i}", conversation_id=f"c{i % 4}", app_id="a1",
                                provider_name="langgenius/openai/openai" if i % 3 else "anthropic", model_name="m",
                                message_tokens=i, answer_tokens=2 * i, total_tokens=3 * i, app_mode="chat",
                                quota_type="trial", quota_unit="tokens") for i in range(40)]
    events += events[:5]
    # When the provider-usage group consumes them
    stats = through_kafka(provider_usage.group, events, partitions=3)
    # Then each provider's usage and hosted quota used are the sum of its messages' tokens, each counted once
    want = {p: sum(3 * i for i in range(40) if (p == "openai") == bool(i % 3)) for p in ("openai", "anthropic")}
    with db() as s:
        usage = dict(s.execute(select(ProviderUsage.provider_name, ProviderUsage.total_tokens)).all())
        used = dict(s.execute(select(Provider.provider_name, Provider.quota_used)).all())
    assert used == want
    assert usage == {"langgenius/openai/openai": want["openai"], "anthropic": want["anthropic"]}
    assert (stats["handled"], stats["duplicates"]) == (40, 5)
