"""Helpers of the consumer runtime's tests: events, publishing, running a group, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, Message, Producer

from dify_events.consumers.testing import GroupHarness
from dify_events.schemas import headers as H
from dify_events.schemas.codec import AvroCodec
from dify_events.schemas.events import AppWasCreated
from tests.consumers import sample_handlers
from tests.support.running import running  # noqa: F401 - re-exported to this package's tests
from tests.support.waiting import wait_until  # noqa: F401 - re-exported to this package's tests

codec = AvroCodec()


def app_event(app_id: str, seq: int, **fields) -> AppWasCreated:
    return AppWasCreated(tenant_id="tenant-1", app_id=app_id, mode="chat", name=f"app-{seq}", created_by="u-1",
                         **fields)


def harnessed(database_url: str, *, tracer_provider=None, **options) -> tuple[GroupHarness, sample_handlers.Behaviour]:
    """``sample_handlers.recording_group(**options)`` on the public harness (its table created): the
    pipeline's tests that need no broker."""
    group, behaviour = sample_handlers.recording_group(tables=sample_handlers.metadata, **options)
    return GroupHarness(group, database_url, create_tables=True, tracer_provider=tracer_provider), behaviour


def event_headers(event, **extra: bytes) -> list[tuple[str, bytes]]:
    headers = [(H.EVENT_TYPE, event.event_type.encode()), (H.EVENT_ID, event.event_id.encode()),
               (H.IDEMPOTENCY_KEY, event.event_id.encode()),
               (H.OCCURRED_AT, str(int(event.occurred_at.timestamp() * 1000)).encode())]
    return headers + list(extra.items())


def publish(producer: Producer, topic: str, events, *, headers: Callable | None = None) -> None:
    """Publishes each event with the SDK's headers (or ``headers(event)``), key = its app id; waits."""
    for event in events:
        # ignore: confluent-kafka's stub wants list[tuple[str, str | bytes | None]], and lists are invariant
        producer.produce(topic, value=codec.encode(event), key=event.key().encode(),
                         headers=headers(event) if headers else event_headers(event))  # type: ignore[arg-type]
    assert producer.flush(30) == 0




def read_messages(consumer: Consumer, count: int, timeout_s: float = 60.0) -> list:
    """Exactly ``count`` messages (fails on fewer within the time)."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} messages, got {len(got)} within {timeout_s}s")
        for msg in consumer.consume(count - len(got), 0.2):
            if msg.error() is None:
                got.append(msg)
    return got


def nothing_more(consumer: Consumer, quiet_s: float = 2.0) -> list:
    """Messages that arrive within ``quiet_s`` (a test expecting none asserts it is empty)."""
    got = []
    deadline = time.monotonic() + quiet_s
    while time.monotonic() < deadline:
        got += [m for m in consumer.consume(100, 0.2) if m.error() is None]
    return got


def peek(topic: str, partition: int, offset: int, count: int) -> list:
    """``count`` messages of one partition from ``offset``, read without a consumer group."""
    import uuid

    from confluent_kafka import TopicPartition

    from dify_events.schemas.settings import get_settings

    consumer = Consumer({"bootstrap.servers": get_settings().bootstrap(), "group.id": f"peek-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        return read_messages(consumer, count)
    finally:
        consumer.close()
