"""Fixtures of the consumer runtime's tests: a group's topics under the test's unique prefix."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.consumers import sample_handlers


@pytest.fixture
def app_topic(kafka_env, topic_factory):
    """Creates ``<prefix>.app`` (the topic of AppWasCreated) with the given partitions."""

    def create(partitions: int = 1) -> str:
        return topic_factory(f"{kafka_env}.app", partitions=partitions)

    return create


@pytest.fixture
def effects_db(database_url):
    """The test database with the sample handler's table."""
    sample_handlers.create_tables(database_url)
    return database_url


@pytest.fixture
def committed_offsets(kafka_bootstrap):
    """``committed(group_id, topic, partitions)``: the group's committed offsets (-1001 when none)."""

    def read(group_id: str, topic: str, partitions: int = 1) -> list[int]:
        probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id, "enable.auto.commit": False})
        try:
            return [tp.offset for tp in probe.committed([TopicPartition(topic, p) for p in range(partitions)],
                                                       timeout=15)]
        finally:
            probe.close()

    return read


@pytest.fixture
def sqlite_db(tmp_path):
    """A SQLite database with the sample handler's table (tests where the database is not the point)."""
    url = f"sqlite:///{tmp_path / 'effects.db'}"
    sample_handlers.create_tables(url)
    return url


@pytest.fixture
def dlq_reader(kafka_env, consumer_factory, group_factory):
    """A consumer of a group's dead-letter topic, from the beginning."""

    def create(group_name: str):
        return consumer_factory(group_factory(), [f"{kafka_env}.dlq.{group_name}"])

    return create
