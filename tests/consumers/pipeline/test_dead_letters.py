"""DeadLetters: what fails for good goes to <prefix>.dlq.<group> with every header, and the stream goes on."""

from __future__ import annotations

import json
import logging
import random
import struct
from datetime import UTC, datetime, timedelta

import pytest

from dify_events.consumers.errors import MessageRejected
from dify_events.consumers.logs import JsonFormatter, TextFormatter
from dify_events.consumers.pipeline.dead_letters import fit_letter
from dify_events.consumers.recovery.dead_letters import Selection
from dify_events.consumers.recovery.redrive import Redrive
from dify_events.producers import EventProducer
from dify_events.producers.sizes import record_size
from dify_events.schemas import headers as H
from dify_events.schemas.settings import Settings, get_settings
from tests.consumers import sample_handlers
from tests.consumers.pipeline.test_decode import avro_body_with
from tests.consumers.support import (
    app_event,
    codec,
    event_headers,
    harnessed,
    peek,
    publish,
    read_messages,
    running,
    wait_until,
)
from tests.support.kafka import set_topic_config


def test_retries_spent_then_dead_letter_with_every_header(sqlite_db):
    # Given a handler that always fails on app-bad, and a later event of the same key and another key
    harness, behaviour = harnessed(sqlite_db, max_attempts=3, min_backoff_s=0.01)
    behaviour.fail["app-bad"] = 3
    bad, after, other = app_event("app-bad", 1), app_event("app-bad", 2), app_event("app-ok", 3)
    before = datetime.now(UTC)
    # When the group takes them, in this order
    with harness:
        results = [harness.send(e, headers={"x-custom": "kept"}) for e in (bad, after, other)]
    # Then the first was dead-lettered after 3 attempts (2 retries), to the group's dead-letter topic
    assert [r.outcome for r in results] == ["dead_lettered", "handled", "handled"]
    failed, original = results[0], results[0].message
    assert (failed.attempts, failed.retries) == (3, 2)
    dead = failed.dead_letter
    assert dead is not None and harness.dead_letters == [dead] and dead.topic == "events.dlq.sample-recorder"
    # And the dead letter carries the original key, value and headers unchanged
    assert dict(original.headers())[H.EVENT_ID] == bad.event_id.encode()
    original_ts = original.timestamp()[1]
    assert dead.key == b"app-bad"
    assert dead.value == original.value()
    headers = dict(dead.headers)
    assert headers["x-custom"] == b"kept"
    for name, value in original.headers():
        assert headers[name] == value
    # And our headers say where it came from and why it failed
    assert headers["dlq-origin-topic"] == b"events.app"
    assert headers["dlq-origin-partition"] == b"0"
    assert headers["dlq-origin-offset"] == b"0"
    assert int(headers["dlq-origin-timestamp"]) == original_ts
    assert headers["dlq-group"] == b"sample-recorder"
    assert headers["dlq-handler"] == b"tests.consumers.sample_handlers.Behaviour.handle"
    assert headers["dlq-error-class"] == b"RuntimeError"
    assert headers["dlq-error-message"] == b"told to fail on app-bad (attempt 3)"
    stack = headers["kafka_dlt-exception-stacktrace"].decode()  # once, under Spring's name
    assert "Traceback" in stack and "RuntimeError: told to fail on app-bad" in stack and len(stack) <= 8192
    assert "dlq-error-stacktrace" not in headers
    assert headers["dlq-attempts"] == b"3"
    failed_at = datetime.fromisoformat(headers["dlq-failed-at"].decode().replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= failed_at <= datetime.now(UTC)
    # And Spring Kafka's headers say the same, with Spring's binary encoding of numbers
    assert headers["kafka_dlt-original-topic"] == b"events.app"
    assert headers["kafka_dlt-original-partition"] == struct.pack(">i", 0)
    assert headers["kafka_dlt-original-offset"] == struct.pack(">q", 0)
    assert headers["kafka_dlt-original-timestamp"] == struct.pack(">q", original_ts)
    assert headers["kafka_dlt-original-timestamp-type"] == b"CreateTime"
    assert headers["kafka_dlt-original-consumer-group"] == b"events.sample-recorder"  # the group id
    assert headers["kafka_dlt-exception-fqcn"] == b"RuntimeError"
    assert headers["kafka_dlt-exception-message"] == headers["dlq-error-message"]
    # And the partition moved on: the next event of the same key and the other key were handled
    assert sorted(e[0] for e in sample_handlers.effects(sqlite_db)) == sorted([after.event_id, other.event_id])


def test_a_rejected_message_is_dead_lettered_at_once(sqlite_db):
    # Given a handler that rejects app-bad (MessageRejected: retrying cannot help)
    harness, behaviour = harnessed(sqlite_db, max_attempts=5, min_backoff_s=0.01)
    behaviour.fail["app-bad"] = -1
    behaviour.error = MessageRejected
    # When the group takes it, then an event of another key
    with harness:
        bad, ok = harness.send(app_event("app-bad", 1)), harness.send(app_event("app-ok", 2))
    # Then it was tried once, not retried, and dead-lettered; the other was handled
    assert bad.dead_lettered and ok.handled
    assert behaviour.calls["app-bad"] == 1 and (bad.attempts, bad.backoffs) == (1, ())
    assert bad.dead_letter is not None and harness.dead_letters == [bad.dead_letter]
    headers = dict(bad.dead_letter.headers)
    assert headers["dlq-attempts"] == b"1"
    assert headers["dlq-error-class"] == b"dify_events.consumers.errors.MessageRejected"


def test_a_redriven_message_keeps_its_first_origin_and_counts_earlier_attempts(sqlite_db):
    # Given a message re-driven into the group's retry topic after 4 attempts, with its first origin
    harness, behaviour = harnessed(sqlite_db, max_attempts=2, min_backoff_s=0.01)
    behaviour.fail["app-bad"] = -1
    retry_topic = harness.group.retry_topic(harness.prefix)
    event = app_event("app-bad", 1)
    origin = [("dlq-origin-topic", b"elsewhere.app"), ("kafka_dlt-original-offset", struct.pack(">q", 41)),
              ("dlq-error-class", b"OldError"), (H.ATTEMPT, b"4")]
    # When it fails again, twice
    with harness:
        result = harness.send_raw(codec.encode(event), headers=event_headers(event) + origin, key=b"app-bad",
                                  topic=retry_topic)
    assert result.dead_lettered and behaviour.calls["app-bad"] == 2
    # Then its dead letter keeps the first origin, replaces the old failure, and counts all 6 attempts
    assert result.dead_letter is not None and harness.dead_letters == [result.dead_letter]
    headers = result.dead_letter.headers
    assert [v for k, v in headers if k == "dlq-origin-topic"] == [b"elsewhere.app"]
    assert [v for k, v in headers if k == "kafka_dlt-original-offset"] == [struct.pack(">q", 41)]
    assert [v for k, v in headers if k == "dlq-error-class"] == [b"RuntimeError"]
    assert dict(headers)["dlq-attempts"] == b"6"
    assert dict(headers)["kafka_dlt-original-topic"] == retry_topic.encode()  # absent before: this origin


class LeakyError(RuntimeError):
    """A handler's error whose text holds a database URL with its password."""

    def __init__(self, message: str):
        super().__init__(f"{message}: could not connect to postgresql://user:s3cret@db/x")


def test_no_credentials_and_no_event_data_in_dead_letters_or_in_logs(sqlite_db, caplog):
    # Given a handler whose error text holds a password (retried once, then dead-lettered), and an
    # event whose body fails the model's validation with a value of the event's own
    harness, behaviour = harnessed(sqlite_db, max_attempts=2, min_backoff_s=0.01)
    behaviour.fail["app-leaky"] = -1
    behaviour.error = LeakyError
    leaky, sample = app_event("app-leaky", 1), app_event("app-invalid", 2)
    body_value = "mode-from-the-body-b0dy"
    caplog.set_level(logging.DEBUG)
    # When the group takes them
    with harness:
        results = [harness.send_raw(codec.encode(leaky), headers=event_headers(leaky), key=b"app-leaky"),
                   harness.send_raw(avro_body_with(sample, mode=body_value), headers=event_headers(sample),
                                    key=b"app-invalid")]
    assert [(r.outcome, r.retries) for r in results] == [("dead_lettered", 1), ("dead_lettered", 0)]
    # Then neither dead letter's headers hold the password or the body's value ...
    dead = {r.message.key().decode(): dict(r.dead_letter.headers) for r in results if r.dead_letter is not None}
    assert len(dead) == 2 and len(harness.dead_letters) == 2
    for key, headers in dead.items():
        for name, value in headers.items():
            assert b"s3cret" not in value and body_value.encode() not in value, (key, name, value)
    # ... while they still say which error it was and why
    leaky_headers, invalid_headers = dead["app-leaky"], dead["app-invalid"]
    assert leaky_headers["dlq-error-class"] == f"{__name__}.LeakyError".encode()
    assert leaky_headers["dlq-error-message"] == (b"told to fail on app-leaky (attempt 2): could not connect to "
                                                  b"postgresql://user:***@db/x")
    assert leaky_headers["kafka_dlt-exception-message"] == leaky_headers["dlq-error-message"]
    stack = leaky_headers["kafka_dlt-exception-stacktrace"].decode()
    assert "Traceback" in stack and "LeakyError: told to fail on app-leaky" in stack and "user:***@db/x" in stack
    assert invalid_headers["dlq-error-class"] == b"dify_events.schemas.errors.InvalidEvent"
    message = invalid_headers["dlq-error-message"].decode()
    assert "app_was_created event" in message and "1 error: mode: Input should be" in message, message
    stack = invalid_headers["kafka_dlt-exception-stacktrace"].decode()
    assert "ValidationError: 1 error: mode: Input should be" in stack and "input_value" not in stack, stack
    assert invalid_headers["kafka_dlt-exception-cause-fqcn"] == b"pydantic_core._pydantic_core.ValidationError"
    # And no log record at INFO or above holds them either, as text or as JSON, yet each names the error
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    for record in loud:
        for line in (record.getMessage(), TextFormatter().format(record), JsonFormatter().format(record)):
            assert "s3cret" not in line and body_value not in line, line
    retry = [r for r in loud if r.name == "consumers.retries"]
    dead_lettered = [r for r in loud if r.name == "consumers.dead_letters"]
    assert len(retry) == 1 and "LeakyError: told to fail on app-leaky (attempt 1)" in retry[0].getMessage()
    assert "user:***@db/x" in retry[0].getMessage()
    assert {r.event_id for r in dead_lettered} == {leaky.event_id, sample.event_id}
    messages = " | ".join(r.getMessage() for r in dead_lettered)
    assert "LeakyError" in messages and "user:***@db/x" in messages
    assert "dify_events.schemas.errors.InvalidEvent" in messages and "mode: Input should be" in messages
    text = TextFormatter().format(dead_lettered[0])
    assert "group=sample-recorder " in text and "event_id=" in text and "offset=" in text
    assert json.loads(JsonFormatter().format(dead_lettered[0]))["group"] == "sample-recorder"


class VerboseError(RuntimeError):
    """A failure that says a lot: a full dead letter of it carries kilobytes of our own headers."""

    def __init__(self, message: str):
        super().__init__(f"{message}: " + "the upstream service answered 503 Service Unavailable; " * 70)


def test_a_dead_letter_too_large_for_its_topic_still_goes_and_holds_up_nothing(
        kafka_env, topic_factory, group_topics, producer_factory, sqlite_db, dlq_reader, committed_offsets):
    # Given a topic that takes messages up to 2 MB, and on it, in this order: an event of ~990 KB the SDK
    # published (lz4), raw poison of 1.5 MB, then a small event of the first one's key and one of another key
    topic = topic_factory(f"{kafka_env}.app", config={"max.message.bytes": "2000000"})
    group, behaviour = sample_handlers.recording_group(database_url=sqlite_db, max_attempts=2, min_backoff_s=0.01)
    group_topics(group.name)  # its dead-letter topic takes the broker's default, ~1 MB
    behaviour.fail["app-big"] = 2
    behaviour.error = VerboseError
    big = app_event("app-big", 1, description="d" * 990_000)
    with EventProducer(settings=Settings(bootstrap_servers=get_settings().bootstrap(), topic_prefix=kafka_env),
                       topic_prefix=kafka_env) as sdk:
        sdk.publish(big, wait=True)
        poison = bytes(random.Random(16).getrandbits(8) for _ in range(1_500_000))
        raw = producer_factory(**{"message.max.bytes": 2_000_000})
        raw.produce(topic, value=poison, key=b"app-poison", headers=[(H.EVENT_TYPE, b"app_was_created")])
        assert raw.flush(30) == 0
        after, other = app_event("app-big", 2), app_event("app-other", 3)
        sdk.publish(after, wait=True)
        sdk.publish(other, wait=True)
    # When the group runs
    with running(group) as runner:
        # Then both are dead-lettered and everything after them is handled, ...
        wait_until(lambda: runner.stats()["dead_lettered"] == 2 and runner.stats()["handled"] == 2, 60,
                   "both dead letters and both later events")
        # ... and the partition's offset moves past them all
        wait_until(lambda: committed_offsets(runner.group_id, topic) == [4], 30, "the commit past the end")
    assert sorted(e[0] for e in sample_handlers.effects(sqlite_db)) == sorted([after.event_id, other.event_id])
    letters = {m.key(): m for m in read_messages(dlq_reader(group.name), 2)}
    # And the SDK's event keeps its bytes: our stack trace (written once) is what was cut to fit
    kept = letters[b"app-big"]
    [original] = peek(topic, 0, 0, 1)
    headers = dict(kept.headers())
    assert kept.value() == original.value() and "dlq-original-omitted" not in headers
    assert "dlq-error-stacktrace" not in headers and b"cut]..." in headers["kafka_dlt-exception-stacktrace"]
    assert headers["kafka_dlt-exception-stacktrace"].rstrip().endswith(b"Service Unavailable;")
    assert record_size(kept.key(), kept.value(), kept.headers()) <= 1_000_000
    # And the poison's letter goes without its value, saying so and where the original still is
    omitted = letters[b"app-poison"]
    headers = dict(omitted.headers())
    assert omitted.value() is None
    assert headers["dlq-original-omitted"] == f"value too large (1500000 bytes); still at {topic}[0]@1".encode()
    assert headers["dlq-origin-offset"] == b"1"
    assert headers["dlq-error-class"] == b"dify_events.schemas.errors.NotSingleObjectEncoded"
    # And a redrive leaves that one out (re-driven, it would only fail as an empty message), and takes the other
    plan = Redrive(get_settings(), group).prepare(Selection(), execute=False)
    assert [letter.key for letter in plan.omitted] == [b"app-poison"]
    assert [letter.key for letter in plan.pending] == [b"app-big"]



def test_a_dead_letter_the_topic_refuses_for_its_size_is_sent_smaller_or_passed_over(
        kafka_env, topic_factory, group_topics, producer_factory, admin, sqlite_db, dlq_reader, committed_offsets):
    # Given a running group whose dead-letter topic's limit is lowered after it started (it knows ~1 MB)
    topic = topic_factory(f"{kafka_env}.app")
    group, _ = sample_handlers.recording_group(database_url=sqlite_db)
    _, dlq = group_topics(group.name)
    raw = producer_factory()
    poison = [random.Random(seed).randbytes(20_000) for seed in (1, 2)]  # incompressible
    with running(group) as runner:
        set_topic_config(admin, dlq, {"max.message.bytes": "3000"})
        # When raw poison of 20 KB comes, with a good event of its key after it
        publish_raw(raw, topic, b"app-poison", poison[0])
        publish(raw, topic, [app_event("app-poison", 1)])
        # Then the broker's refusal makes a smaller letter, without the value, that it takes
        wait_until(lambda: runner.stats()["dead_lettered"] == 1 and runner.stats()["handled"] == 1, 60,
                   "the smaller dead letter and the next event")
        [letter] = read_messages(dlq_reader(group.name), 1)
        assert letter.value() is None
        assert dict(letter.headers())["dlq-original-omitted"].startswith(b"value too large (20000 bytes)")
        # And when not even the smallest letter fits the topic, the message is passed over: the partition moves on
        set_topic_config(admin, dlq, {"max.message.bytes": "100"})
        publish_raw(raw, topic, b"app-poison", poison[1])
        publish(raw, topic, [app_event("app-poison", 2)])
        wait_until(lambda: runner.stats()["handled"] == 2, 60, "the event after the message passed over")
        wait_until(lambda: committed_offsets(runner.group_id, topic) == [4], 30, "the commit past the end")
        assert runner.stats()["dead_lettered"] == 1


def publish_raw(producer, topic: str, key: bytes, value: bytes) -> None:
    producer.produce(topic, value=value, key=key, headers=[(H.EVENT_TYPE, b"app_was_created")])
    assert producer.flush(30) == 0

ORIGIN = "events.app[0]@7"
SDK = [(H.EVENT_TYPE, b"app_was_created"), (H.EVENT_ID, b"e" * 36)]
OURS = [("dlq-origin-topic", b"events.app"), ("dlq-error-class", b"RuntimeError"), ("dlq-error-message", b"m" * 100)]
STACK = ("kafka_dlt-exception-stacktrace", b"Traceback (most recent call last):\n" + b"  frame\n" * 900 + b"Error: x")


@pytest.mark.parametrize("value_size, extra_size, limit, expect", [
    (1_000, 0, 100_000, "whole"),
    (95_000, 0, 100_000, "stack cut"),
    (99_500, 0, 100_000, "no stack"),
    (100_000, 0, 100_000, "no value"),
    (100_000, 150_000, 100_000, "no original headers"),
    (100_000, 0, 150, None),
], ids=["whole", "stack-cut", "no-stack", "no-value", "no-original-headers", "nothing-fits"])
def test_a_letter_is_fitted_to_the_limit_dropping_ours_first_then_the_value_then_the_original_headers(
        value_size, extra_size, limit, expect):
    extra = [("x-app-context", b"c" * extra_size)] if extra_size else []
    letter = fit_letter(b"app-1", b"v" * value_size, SDK + extra + OURS + [STACK], limit, origin=ORIGIN)
    if expect is None:
        assert letter is None
        return
    names = [name for name, _ in letter.headers]
    stack = dict(letter.headers).get(STACK[0])
    assert letter.size <= limit and names.count(STACK[0]) <= 1
    assert (letter.value is not None) == (expect in ("whole", "stack cut", "no stack"))
    assert (stack == STACK[1]) == (expect in ("whole", "no value", "no original headers"))
    assert (stack is None) == (expect == "no stack")
    assert ("x-app-context" in names) == (extra_size > 0 and expect != "no original headers")
    if expect == "stack cut":
        assert stack.endswith(b"Error: x") and b"bytes cut]" in stack
    if expect in ("no value", "no original headers"):
        note = dict(letter.headers)["dlq-original-omitted"].decode()
        assert note.endswith(f"still at {ORIGIN}") and f"({value_size} bytes" in note
        assert {H.EVENT_TYPE, H.EVENT_ID, "dlq-origin-topic"} <= set(names)
