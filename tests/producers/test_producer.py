"""EventProducer against the real broker: every event type, the three ways of waiting, and each
way publishing fails, made to fail for real."""

from __future__ import annotations

import asyncio
import os
from base64 import b64encode
from typing import ClassVar

import pytest

from dify_events.producers import (
    Delivery,
    DeliveryFailed,
    EventProducer,
    MessageTooLarge,
    PublishError,
    QueueFull,
    UnpublishableEvent,
)
from dify_events.schemas import headers as names
from dify_events.schemas.catalogue import CATALOGUE
from dify_events.schemas.codec import AvroCodec
from dify_events.schemas.events import AppWasCreated, Event, TenantWasCreated
from dify_events.schemas.samples import APP, TENANT, sample_events

from .conftest import headers_of
from .support import wait_until

codec = AvroCodec()
FAIL_FAST = {"message.timeout.ms": 5000, "topic.metadata.propagation.max.ms": 1000}


def app_created(**overrides) -> AppWasCreated:
    return AppWasCreated(**{"tenant_id": TENANT, "app_id": APP, "mode": "chat", "name": "Bot", "created_by": "u1",
                            **overrides})


# -- the happy paths --------------------------------------------------------------------------
def test_all_ten_event_types_are_published_and_read_back_with_their_headers(domain_topics, read_messages):
    # Given the domain topics and one event of each type
    events = sample_events()
    # When each is published, fire-and-forget, and the producer is flushed
    with EventProducer() as producer:
        for event in events:
            assert producer.publish(event) is None
        assert producer.flush(30) == 0
    # Then each lands on its domain topic, keyed by its aggregate id, decodes to itself, and
    # carries the contract's headers
    messages = read_messages(CATALOGUE.topics(domain_topics), len(events))
    by_id = {event.event_id: event for event in events}
    for msg in messages:
        headers = headers_of(msg)
        event = by_id.pop(headers[names.EVENT_ID].decode())
        spec = CATALOGUE.for_event(event)
        assert codec.decode(msg.value(), headers[names.EVENT_TYPE].decode()) == event
        assert msg.topic() == spec.topic(domain_topics)
        assert msg.key().decode() == spec.key_of(event)
        assert headers[names.IDEMPOTENCY_KEY] == event.event_id.encode()
        assert int(headers[names.OCCURRED_AT]) == round(event.occurred_at.timestamp() * 1000)
        assert headers[names.CONTENT_TYPE] == names.content_type(spec.latest.fingerprint).encode()
        assert names.TRACEPARENT not in headers
    assert by_id == {}


def test_wait_returns_the_partition_and_offset_the_broker_gave(domain_topics, read_messages):
    # Given a producer and three events of one app
    with EventProducer() as producer:
        # When each is published with wait=True
        deliveries = [producer.publish(app_created(name=f"v{i}"), wait=True) for i in range(3)]
    # Then each returns where it was stored: the app topic, one partition (one key), offsets up
    assert all(isinstance(d, Delivery) for d in deliveries)
    assert {d.topic for d in deliveries} == {f"{domain_topics}.app"}
    assert len({d.partition for d in deliveries}) == 1
    assert [d.offset for d in deliveries] == sorted(d.offset for d in deliveries)
    # And the messages are there, at those offsets
    stored = {(m.partition(), m.offset()): headers_of(m)[names.EVENT_ID].decode()
              for m in read_messages([f"{domain_topics}.app"], 3)}
    assert stored == {(d.partition, d.offset): d.event_id for d in deliveries}


def test_a_business_key_and_extra_headers_travel(domain_topics, read_messages):
    # Given an event, a custom key and an idempotency key from the business
    event = app_created()
    with EventProducer() as producer:
        # When it is published with them and an extra header
        producer.publish(event, key="custom-key", idempotency_key="app-create:42", headers={"source": "test"},
                         wait=True)
    # Then the message carries them
    [msg] = read_messages([f"{domain_topics}.app"], 1)
    assert msg.key() == b"custom-key"
    assert headers_of(msg)[names.IDEMPOTENCY_KEY] == b"app-create:42"
    assert headers_of(msg)["source"] == b"test"


def test_publish_async_resolves_when_the_broker_acknowledges(domain_topics):
    # Given ten events and an asyncio application
    events = [app_created(app_id=f"app-{i}") for i in range(10)]

    async def main():
        with EventProducer() as producer:
            # When they are published with publish_async and awaited together
            return await asyncio.gather(*(producer.publish_async(event) for event in events))

    deliveries = asyncio.run(main())
    # Then each resolves to its own delivery on the app topic
    assert [d.event_id for d in deliveries] == [e.event_id for e in events]
    assert {d.topic for d in deliveries} == {f"{domain_topics}.app"}
    assert len({(d.partition, d.offset) for d in deliveries}) == 10


def test_without_the_poll_thread_publish_serves_delivery_reports_itself(domain_topics, read_messages):
    # Given a producer with no background thread
    with EventProducer(poll_thread=False) as producer:
        # When 500 events are published and then waited for once
        for i in range(500):
            producer.publish(app_created(app_id=f"app-{i % 7}"))
        last = producer.publish(app_created(), wait=True)
        # Then everything is acknowledged
        assert last.offset >= 0
        assert producer.flush(30) == 0
    assert len(read_messages([f"{domain_topics}.app"], 501)) == 501


# -- failures, for real -----------------------------------------------------------------------
def test_a_missing_topic_fails_with_the_event_id_when_waited_for(kafka_env):
    # Given no topics under the prefix (the broker does not create topics on use)
    event = app_created()
    with EventProducer(FAIL_FAST) as producer:
        # When an event is published with wait=True
        with pytest.raises(DeliveryFailed) as failure:
            producer.publish(event, wait=True)
    # Then the error names the event, the topic and librdkafka's reason
    error = failure.value
    assert error.event_id == event.event_id and event.event_id in str(error)
    assert error.topic == f"{kafka_env}.app" and error.event_type == "app_was_created"
    assert error.code in ("UNKNOWN_TOPIC_OR_PART", "_MSG_TIMED_OUT")
    assert "events topics apply" in str(error) or "timed out" in str(error).lower()


def test_a_missing_topic_fails_the_async_future_with_the_event_id(kafka_env):
    # Given no topics
    event = app_created()

    async def main():
        with EventProducer(FAIL_FAST) as producer:
            # When an event is published with publish_async
            return await producer.publish_async(event)

    # Then awaiting it raises DeliveryFailed for that event
    with pytest.raises(DeliveryFailed) as failure:
        asyncio.run(main())
    assert failure.value.event_id == event.event_id


@pytest.mark.parametrize("poll_thread", [True, False], ids=["poll-thread", "inline-poll"])
def test_a_missing_topic_is_reported_to_on_error_and_the_log_when_not_waited_for(kafka_env, caplog, poll_thread):
    # Given a producer with an on_error callback, and no topics
    errors: list[PublishError] = []
    events = [app_created(), app_created()]
    with EventProducer(FAIL_FAST, on_error=errors.append, poll_thread=poll_thread) as producer:
        # When events are published without waiting
        for event in events:
            try:
                producer.publish(event)
            except DeliveryFailed as exc:  # librdkafka already knows the topic is missing: raised at once
                errors.append(exc)
        # Then, once librdkafka gives up, each one is reported with its event id
        wait_until(lambda: (producer.poll(0.1), len(errors) == 2)[1], 30, "both failures reported")
    assert sorted(e.event_id for e in errors) == sorted(e.event_id for e in events)
    assert all(isinstance(e, DeliveryFailed) for e in errors)
    assert events[0].event_id in caplog.text  # and logged


def test_a_message_over_the_topics_size_limit_is_message_too_large(kafka_env, topic_factory):
    # Given an app topic that takes batches of at most 1000 bytes, and an event far larger
    topic_factory(f"{kafka_env}.app", config={"max.message.bytes": "1000"})
    event = app_created(description=b64encode(os.urandom(3000)).decode())
    with EventProducer({"compression.type": "none"}) as producer:
        # When it is published with wait=True
        with pytest.raises(MessageTooLarge) as failure:
            producer.publish(event, wait=True)
        # Then the broker's refusal is MessageTooLarge, with the event id
        assert failure.value.event_id == event.event_id
        assert failure.value.code == "MSG_SIZE_TOO_LARGE"
        # And a small event still goes through the same producer
        assert producer.publish(app_created(), wait=True).offset == 0


def test_a_message_over_the_producers_size_limit_raises_at_once(domain_topics):
    # Given a producer whose message.max.bytes is 1000, and an event of about 4 KB
    event = app_created(description=b64encode(os.urandom(3000)).decode())
    with EventProducer({"message.max.bytes": 1000}) as producer:
        # When it is published (without waiting)
        with pytest.raises(MessageTooLarge) as failure:
            producer.publish(event)
        # Then it is refused before anything is queued, with the event id
        assert failure.value.event_id == event.event_id
        assert len(producer) == 0


def test_a_full_local_queue_raises_queue_full_with_the_event_id(domain_topics):
    # Given a producer whose local queue holds two events, which linger there for 30 s
    events = [app_created(app_id=f"app-{i}") for i in range(3)]
    with EventProducer({"queue.buffering.max.messages": 2, "linger.ms": 30_000}, queue_full_wait_s=0.2) as producer:
        producer.publish(events[0])
        producer.publish(events[1])
        # When a third is published
        with pytest.raises(QueueFull) as failure:
            producer.publish(events[2])
        # Then QueueFull names it, and says what to do
        assert failure.value.event_id == events[2].event_id
        assert failure.value.retriable and "queue" in str(failure.value)
        # And the two queued ones are still delivered on flush
        assert producer.flush(30) == 0


def test_what_is_not_a_known_event_raises_before_anything_is_sent(domain_topics):
    # Given something that is not an event, and an event type the catalogue does not know
    class AppWasRenamed(Event):
        event_type: ClassVar[str] = "app_was_renamed"
        domain: ClassVar[str] = "app"
        key_field: ClassVar[str] = "tenant_id"

    stranger = AppWasRenamed(tenant_id=TENANT)
    with EventProducer() as producer:
        # When each is published, Then UnpublishableEvent says why, and nothing was queued
        with pytest.raises(UnpublishableEvent, match="not dict"):
            producer.publish({"tenant_id": TENANT})
        with pytest.raises(UnpublishableEvent, match="unknown event type 'app_was_renamed'") as failure:
            producer.publish(stranger)
        assert failure.value.event_id == stranger.event_id
        assert len(producer) == 0


def test_closing_reports_what_was_never_acknowledged(kafka_env):
    # Given a producer pointed at a port where no broker listens, holding two events
    errors: list[PublishError] = []
    events = [TenantWasCreated(tenant_id=f"t-{i}", tenant_name="Acme") for i in range(2)]
    producer = EventProducer({"bootstrap.servers": "127.0.0.1:9"}, on_error=errors.append)
    for event in events:
        producer.publish(event)
    # When it is closed with a short timeout
    remaining = producer.close(timeout=0.5)
    # Then both events are reported as failed, by id: none is dropped silently
    assert remaining == 2
    assert sorted(e.event_id for e in errors) == sorted(e.event_id for e in events)
    assert all(isinstance(e, DeliveryFailed) for e in errors)
    # And the closed producer refuses more work
    with pytest.raises(PublishError, match="closed"):
        producer.publish(events[0])


def test_the_sdks_own_delivery_properties_cannot_be_overridden(kafka_env):
    # Given a configuration that would take delivery reports away from the SDK
    # When a producer is made with it, Then it is refused, saying what to use instead
    with pytest.raises(ValueError, match="on_error"):
        EventProducer({"delivery.report.only.error": True})
