"""Fixtures of the producer SDK's tests: the domain topics under a test's own prefix, and a
reader that collects what landed on them."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from dify_events.schemas.catalogue import CATALOGUE


@pytest.fixture
def domain_topics(kafka_env, topic_factory) -> str:
    """Creates the five domain topics (3 partitions each) under the test's prefix; returns it."""
    for topic in CATALOGUE.topics(kafka_env):
        topic_factory(topic, partitions=3)
    return kafka_env


@pytest.fixture
def read_messages(consumer_factory, group_factory) -> Callable[..., list]:
    """``read_messages(topics, count, timeout_s=30, settle_s=0)``: every message of ``topics`` from
    the start, until ``count`` arrived (then ``settle_s`` more, to catch any extra) or the deadline."""

    def read(topics: list[str], count: int, *, timeout_s: float = 30.0, settle_s: float = 0.0) -> list:
        consumer = consumer_factory(group_factory(), topics)
        messages: list = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < count and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                assert msg.error() is None, msg.error()
                messages.append(msg)
        assert len(messages) >= count, f"read {len(messages)} of {count} messages within {timeout_s}s"
        quiet_until = time.monotonic() + settle_s
        while time.monotonic() < quiet_until:
            for msg in consumer.consume(500, 0.2):
                assert msg.error() is None, msg.error()
                messages.append(msg)
        return messages

    return read


def headers_of(msg) -> dict[str, bytes]:
    return dict(msg.headers() or [])
