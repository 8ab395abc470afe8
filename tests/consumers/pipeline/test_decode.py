"""Decode: every kind of bad input is dead-lettered with a reason, and later messages are handled."""

from __future__ import annotations

import io
import random

from fastavro import schemaless_writer

from dify_events.schemas import headers as H
from dify_events.schemas.catalogue import CATALOGUE
from dify_events.schemas.events import TenantWasCreated
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, codec, event_headers, read_messages, running, wait_until


def avro_body_with(event, **changes) -> bytes:
    """A correctly encoded app_was_created body whose values break the model's rules."""
    latest = CATALOGUE.get("app_was_created").latest
    record = {**event.model_dump(), **changes}
    buf = io.BytesIO()
    buf.write(b"\xC3\x01" + latest.fingerprint)
    schemaless_writer(buf, latest.schema, record)
    return buf.getvalue()


def test_every_bad_input_is_dead_lettered_with_its_reason_and_the_stream_goes_on(
        kafka_env, app_topic, group_topics, producer_factory, sqlite_db, dlq_reader):
    # Given one partition with each kind of bad message, then a good one
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=sqlite_db, max_attempts=5)
    group_topics(group.name)
    good = app_event("app-good", 1)
    sample = app_event("app-x", 2)
    noise = bytes(random.Random(7).getrandbits(8) for _ in range(64)).replace(b"\xC3", b"\x00")
    tenant = TenantWasCreated(tenant_id="tenant-1", tenant_name="t")
    cases = {  # key: (value, headers, expected error class, words the reason must contain)
        "random-bytes": (noise, event_headers(sample), "dify_events.schemas.errors.NotSingleObjectEncoded",
                         "single-object"),
        "truncated": (codec.encode(sample)[:-6], event_headers(sample), "dify_events.schemas.errors.CorruptBody",
                      "does not decode"),
        "unknown-fingerprint": (b"\xC3\x01" + b"\x01" * 8 + codec.encode(sample)[10:], event_headers(sample),
                                "dify_events.schemas.errors.UnknownSchema", "0101010101010101"),
        "other-type": (codec.encode(tenant), event_headers(sample), "dify_events.schemas.errors.EventTypeMismatch",
                       "tenant_was_created"),
        "missing-header": (codec.encode(sample), [(H.EVENT_ID, sample.event_id.encode())],
                           "dify_events.consumers.errors.BadHeader", "no 'event-type' header"),
        "malformed-header": (codec.encode(sample), [(H.EVENT_TYPE, b"\xff\xfeApp Was Created")],
                             "dify_events.consumers.errors.BadHeader", "malformed"),
        "malformed-key": (codec.encode(sample), event_headers(sample)[:2] + [(H.IDEMPOTENCY_KEY, b"")],
                          "dify_events.consumers.errors.BadHeader", "idempotency-key"),
        "model-rejects": (avro_body_with(sample, mode="not-a-mode"), event_headers(sample),
                          "dify_events.schemas.errors.InvalidEvent", "mode"),
        "bad-event-id": (avro_body_with(sample, event_id="not-a-uuid"), event_headers(sample),
                         "dify_events.schemas.errors.InvalidEvent", "event_id"),
        "empty-value": (b"", event_headers(sample), "dify_events.consumers.errors.EmptyValue", "no value"),
    }
    producer = producer_factory()
    for key, (value, headers, _, _) in cases.items():
        producer.produce(topic, value=value, key=key.encode(), headers=headers)
    producer.produce(topic, value=codec.encode(good), key=b"app-good", headers=event_headers(good))
    producer.flush(30)
    # When the group runs
    with running(group) as runner:
        wait_until(lambda: runner.stats()["dead_lettered"] == len(cases) and runner.stats()["handled"] == 1)
        # Then none of them was retried, and the good message after them was handled
        assert runner.stats()["retries"] == 0
    assert [e[0] for e in sample_handlers.effects(sqlite_db)] == [good.event_id]
    assert behaviour.calls == {"app-good": 1}
    # And each dead letter names what was wrong, with its bytes unchanged
    dead = {m.key().decode(): m for m in read_messages(dlq_reader(group.name), len(cases))}
    assert set(dead) == set(cases)
    for key, (value, _, error_class, words) in cases.items():
        headers = dict(dead[key].headers())
        assert headers["dlq-error-class"].decode() == error_class, key
        assert words in headers["dlq-error-message"].decode(), (key, headers["dlq-error-message"])
        assert (dead[key].value() or b"") == value, key
        assert headers["dlq-attempts"] == b"1", key
    # (a failure with a cause names it as Spring does: the truncated body's fastavro error)
    assert "kafka_dlt-exception-cause-fqcn" in dict(dead["truncated"].headers())
