"""Fixtures of the bad-input tests: the domain topics under a test's own prefix (the producer
tests' fixtures), and how many messages they hold."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from dify_events.schemas.catalogue import CATALOGUE
from tests.consumers.conftest import app_topic, dlq_reader, sqlite_db  # noqa: F401 - fixtures
from tests.producers.conftest import domain_topics, read_messages  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def topic_messages(admin):
    """``topic_messages(prefix)``: messages on the prefix's domain topics now (sum of high watermarks)."""

    def once(prefix: str) -> int:
        metadata = admin.list_topics(timeout=15)
        tps = [TopicPartition(t, p) for t in CATALOGUE.topics(prefix) if t in metadata.topics
               for p in metadata.topics[t].partitions]
        futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=15)
        return sum(f.result(timeout=15).offset for f in futures.values())

    def count(prefix: str) -> int:
        for _ in range(20):  # a topic made a moment ago may not have its leader yet
            try:
                return once(prefix)
            except KafkaException:
                time.sleep(0.5)
        return once(prefix)

    return count


def run_events(*args: str, env: dict[str, str] | None = None, input: str | None = None,
               timeout_s: float = 60, inherit: bool = True) -> subprocess.CompletedProcess:
    """``python -m dify_events.consumers ARGS`` in a process of its own, as a person runs `events` (with this
    process's environment and ``env`` over it; only ``env`` when not ``inherit``)."""
    return subprocess.run([sys.executable, "-m", "dify_events.consumers", *args],
                          env={**os.environ, **(env or {})} if inherit else dict(env or {}),
                          input=input, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
