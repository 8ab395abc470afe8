"""consumers.testing: a group's real pipeline on given events, the real database, no broker."""

from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dify_events.consumers import ConsumerGroup, HandlerContext
from dify_events.consumers.context import NoTransaction
from dify_events.consumers.errors import MessageRejected
from dify_events.consumers.idempotency import processed_events
from dify_events.consumers.pipeline import dead_letters as DL
from dify_events.consumers.testing import GroupHarness
from dify_events.schemas import headers as H
from dify_events.schemas.events import AppWasCreated, TenantWasCreated
from tests.consumers import sample_handlers
from tests.consumers.sample_handlers import sample_effects
from tests.consumers.support import app_event


def harness_of(database_url: str, *, tracer_provider=None, **options) -> tuple[GroupHarness, sample_handlers.Behaviour]:
    group, behaviour = sample_handlers.recording_group("harnessed", tables=sample_handlers.metadata, **options)
    return GroupHarness(group, database_url, create_tables=True, tracer_provider=tracer_provider), behaviour


def effects(harness: GroupHarness) -> list[tuple[str, int]]:
    with harness.session() as session:
        return [tuple(r) for r in session.execute(select(sample_effects.c.event_id, sample_effects.c.attempt))]


def test_an_event_is_handled_and_its_effect_committed(database_url):
    # Given a group whose handler records each event in the database
    harness, behaviour = harness_of(database_url)
    with harness:
        # When an event is sent
        event = app_event("app-1", 1)
        result = harness.send(event)
        # Then it was decoded from its Avro bytes and handled once, its effect and its claim committed
        assert (result.outcome, result.attempts, result.dead_letter) == ("handled", 1, None)
        assert result.handled and result.event == event and result.event is not event
        assert result.message.topic() == "events.app" and result.message.key() == b"app-1"
        assert effects(harness) == [(event.event_id, 1)]
        with harness.session() as session:
            assert session.scalar(select(func.count()).select_from(processed_events)) == 1


def test_a_failing_handler_is_retried_then_handled_without_sleeping(database_url):
    # Given a handler that fails twice on app-1, with backoffs of at least five seconds
    harness, behaviour = harness_of(database_url, max_attempts=5, min_backoff_s=5.0)
    behaviour.fail["app-1"] = 2
    with harness:
        # When the event is sent
        started = time.monotonic()
        result = harness.send(app_event("app-1", 1))
        took = time.monotonic() - started
        # Then the third attempt handled it; the two backoffs were computed but not slept
        assert result.handled and (result.attempts, result.retries) == (3, 2)
        assert len(result.backoffs) == 2 and all(b >= 5.0 for b in result.backoffs)
        assert took < sum(result.backoffs)
        # and only the third attempt's effect is there (the failed ones rolled back)
        assert effects(harness) == [(result.event.event_id, 3)]


def test_spent_retries_end_in_a_dead_letter(database_url):
    # Given a handler that always fails, with three attempts
    harness, behaviour = harness_of(database_url, max_attempts=3)
    behaviour.fail["app-1"] = -1
    with harness:
        result = harness.send(app_event("app-1", 1))
        # Then it was dead-lettered after three attempts, and nothing of it committed
        assert result.dead_lettered and result.attempts == 3
        assert result.dead_letter.header(DL.ATTEMPTS) == "3"
        assert effects(harness) == []


def test_a_rejected_message_is_dead_lettered_at_once_with_its_headers(database_url):
    # Given a handler that rejects app-1's event as hopeless
    harness, behaviour = harness_of(database_url, max_attempts=5)
    behaviour.fail["app-1"] = -1
    behaviour.error = MessageRejected
    with harness:
        event = app_event("app-1", 1)
        result = harness.send(event)
        # Then it is dead-lettered after one attempt, to the group's dead-letter topic
        assert result.dead_lettered and (result.attempts, result.backoffs) == (1, ())
        letter = result.dead_letter
        assert letter is not None and harness.dead_letters == [letter]
        assert letter.topic == "events.dlq.harnessed"
        # with the original key, value and headers, and why and where it failed
        assert (letter.key, letter.value) == (result.message.key(), result.message.value())
        assert letter.header(H.EVENT_ID) == event.event_id
        assert letter.error_class == "dify_events.consumers.errors.MessageRejected"
        assert letter.reason == "dify_events.consumers.errors.MessageRejected: told to fail on app-1 (attempt 1)"
        assert (letter.header(DL.ORIGIN_TOPIC), letter.header(DL.ORIGIN_OFFSET)) == ("events.app", "0")
        assert letter.header(DL.GROUP) == "harnessed"
        assert letter.header(DL.DLT_EXCEPTION_FQCN) == "dify_events.consumers.errors.MessageRejected"


def test_undecodable_bytes_are_dead_lettered_without_reaching_the_handler(database_url):
    # Given a group, and a message that claims to be an app_was_created but holds no Avro
    harness, behaviour = harness_of(database_url)
    with harness:
        result = harness.send_raw(b"not avro", headers=[(H.EVENT_TYPE, "app_was_created")], key=b"app-1")
        # Then it is dead-lettered with the codec's error, the handler never called
        assert result.dead_lettered and result.attempts == 0 and result.event is None
        assert result.dead_letter.value == b"not avro"
        assert result.dead_letter.error_class == "dify_events.schemas.errors.NotSingleObjectEncoded"
        assert "not Avro single-object encoded" in result.dead_letter.reason
        assert behaviour.calls == {}
        # and a message without an event-type header too, saying what is missing
        headless = harness.send_raw(b"\x00")
        assert headless.dead_lettered
        assert headless.dead_letter.error_class == "dify_events.consumers.errors.BadHeader"
        assert H.EVENT_TYPE in headless.dead_letter.reason
        assert len(harness.dead_letters) == 2


def test_a_duplicate_event_is_handled_once(database_url):
    # Given an event handled once
    harness, behaviour = harness_of(database_url)
    with harness:
        event = app_event("app-1", 1)
        assert harness.send(event).handled
        # When it is sent again (a redelivery)
        again = harness.send(event)
        # Then it is a duplicate: the handler did not run, its effect is there once
        assert again.duplicate
        assert behaviour.calls["app-1"] == 1
        assert effects(harness) == [(event.event_id, 1)]
        # and offsets go on as in a partition
        assert again.message.offset() == 1


def test_an_event_type_the_group_does_not_handle_is_passed_over(database_url):
    harness, behaviour = harness_of(database_url)
    with harness:
        result = harness.send(TenantWasCreated(tenant_id="t1", tenant_name="Acme", plan="sandbox"))
        assert result.passed and behaviour.calls == {}


def test_a_group_with_tables_missing_is_refused_as_events_run_refuses_it(database_url):
    group, _ = sample_handlers.recording_group("harnessed", tables=sample_handlers.metadata)
    with pytest.raises(Exception, match="has no table `sample_effects`"):
        GroupHarness(group, database_url)


def test_a_handler_idempotent_by_itself_runs_outside_a_transaction(database_url):
    # Given a handler declared idempotent=False
    group, behaviour = sample_handlers.recording_group("harnessed", handler_options={"idempotent": False})
    with GroupHarness(group, database_url) as harness:
        event = AppWasCreated(tenant_id="t1", app_id="app-1", mode="chat", name="app-1", created_by="u")
        # Then each delivery runs it (no claim), as at-least-once delivery would
        assert harness.send(event).handled and harness.send(event).handled
        assert behaviour.calls["app-1"] == 2


def test_events_with_one_business_key_are_handled_once(database_url):
    # Given two events (two event ids) published under one business idempotency key
    harness, behaviour = harness_of(database_url)
    with harness:
        first = harness.send(app_event("app-1", 1), idempotency_key="order-7")
        second = harness.send(app_event("app-1", 2), idempotency_key="order-7")
        # Then the second is a duplicate of the first
        assert first.handled and second.duplicate
        assert behaviour.calls["app-1"] == 1


def test_a_dependency_outage_holds_the_message_instead_of_dead_lettering_it(database_url):
    # Given a handler whose database is down (a dependency error, in pause_on), three attempts
    harness, behaviour = harness_of(database_url, max_attempts=3, outage_min_backoff_s=30.0)
    behaviour.fail["app-1"] = -1
    behaviour.error = lambda message: OperationalError("INSERT ...", {}, ConnectionRefusedError(message))
    with harness:
        # When the event is sent
        result = harness.send(app_event("app-1", 1))
        # Then its retries were spent and the breaker opened: the message waits for the database
        # (abandoned here, delivered again by the runtime), no dead letter
        assert result.abandoned and result.attempts == 3 and result.dead_letter is None
        assert harness.resources.breaker.is_open() and harness.dead_letters == []
        # and the group is paused meanwhile: the next message waits too, without an attempt
        assert harness.send(app_event("app-2", 1)).abandoned and behaviour.calls["app-2"] == 0


def test_a_traced_group_gets_its_consumer_span_from_the_producers_context(database_url):
    # Given a group with tracing configured
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness, _ = harness_of(database_url, tracer_provider=provider)
    with harness:
        # When an event published inside a span is sent
        with provider.get_tracer("test").start_as_current_span("request") as request:
            result = harness.send(app_event("app-1", 1))
        # Then the message's CONSUMER span is the request's child, with the handler's span inside it
        assert result.handled
        spans = {s.name: s for s in exporter.get_finished_spans()}
        consumer = spans["process events.app"]
        assert consumer.kind == SpanKind.CONSUMER
        assert consumer.context.trace_id == request.get_span_context().trace_id
        assert consumer.parent.span_id == request.get_span_context().span_id
        assert spans["handle app_was_created"].parent.span_id == consumer.context.span_id
        assert consumer.attributes["events.outcome"] == "handled"


def test_the_handler_context_tells_the_event_the_message_and_the_attempt(database_url):
    # Given a handler that fails its first attempt and records what its context says on each
    seen: list[dict] = []
    group = ConsumerGroup("contexts", max_attempts=2, min_backoff_s=0.01)

    @group.handler(AppWasCreated)
    def look(event: AppWasCreated, ctx: HandlerContext) -> None:
        m = ctx.message
        seen.append({"group": ctx.group, "handler": ctx.handler, "event_id": ctx.event_id,
                     "event_type": ctx.event_type, "reprocess": ctx.reprocess, "in_transaction": ctx.in_transaction,
                     "session": isinstance(ctx.session, Session), "where": (m.topic, m.partition, m.key, m.attempt),
                     "reprocess_header": m.headers.get(H.REPROCESS), "log": ctx.log.extra, "repr": repr(ctx)})
        if len(seen) == 1:
            raise RuntimeError("first attempt")

    with GroupHarness(group, database_url) as harness:
        # When an event is sent as a replay sends it (reprocess)
        event = app_event("app-1", 1)
        assert harness.send(event, headers={H.REPROCESS: "1"}).handled
    # Then each attempt's context held the group, handler, event, message and attempt number
    name = f"{look.__module__}.{look.__qualname__}"
    assert [s["where"] for s in seen] == [("events.app", 0, b"app-1", 1), ("events.app", 0, b"app-1", 2)]
    last = seen[-1]
    assert {k: last[k] for k in ("group", "handler", "event_id", "event_type", "reprocess", "in_transaction",
                                 "session", "reprocess_header")} == {
        "group": "contexts", "handler": name, "event_id": event.event_id, "event_type": "app_was_created",
        "reprocess": True, "in_transaction": True, "session": True, "reprocess_header": b"1"}
    assert last["log"] == {"event_id": event.event_id, "event_type": "app_was_created", "group": "contexts",
                           "handler": name, "topic": "events.app", "partition": 0, "offset": 0, "attempt": 2}
    assert last["repr"] == f"HandlerContext(contexts/{name}: app_was_created {event.event_id} at events.app[0]@0, " \
                           "attempt 2)"


def test_a_handler_outside_the_transaction_has_no_session(database_url):
    # Given a handler declared idempotent=False that records what its context says of the transaction
    seen: list[object] = []
    group = ConsumerGroup("no-transaction")

    @group.handler(AppWasCreated, idempotent=False)
    def look(event: AppWasCreated, ctx: HandlerContext) -> None:
        seen.append(ctx.in_transaction)
        with pytest.raises(NoTransaction, match="idempotent=False"):
            ctx.session  # noqa: B018 - reading it is the test
        seen.append("refused")

    with GroupHarness(group, database_url) as harness:
        assert harness.send(app_event("app-1", 1)).handled
    # Then it ran outside any transaction, and ctx.session said so
    assert seen == [False, "refused"]
