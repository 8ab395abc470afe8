"""One trace from application code through Kafka into two groups' handlers and a dead-letter topic."""

from __future__ import annotations

from opentelemetry.trace import SpanKind, StatusCode

from dify_events.producers.producer import EventProducer
from dify_events.schemas import headers as H
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, read_messages, running, wait_until


def _hex(n: int, width: int) -> str:
    return format(n, f"0{width}x")


def test_a_trace_crosses_kafka_into_two_groups_and_the_dead_letter_topic(
        kafka_env, topic_factory, group_topics, consumer_factory, group_factory, sqlite_db, spans):
    provider, exporter = spans
    tracer = provider.get_tracer("app")
    # Given a domain topic, and two groups on it: one handles everything, one fails on app-bad for good
    topic = topic_factory(f"{kafka_env}.app")
    ok_group, _ = sample_handlers.recording_group("tel-ok", database_url=sqlite_db)
    bad_group, _ = sample_handlers.recording_group(
        "tel-bad", sample_handlers.Behaviour(fail={"app-bad": -1}), database_url=sqlite_db,
        max_attempts=2, min_backoff_s=0.01)
    group_topics("tel-ok")
    _, dlq = group_topics("tel-bad")
    good, bad = app_event("app-good", 1), app_event("app-bad", 2)
    # When application code publishes both events inside a span of its own
    with EventProducer(tracer_provider=provider, meter_provider=None) as producer:
        with tracer.start_as_current_span("request") as request:
            producer.publish(good, wait=True)
            producer.publish(bad, wait=True)
    # ... and both groups run until done
    with running(ok_group, tracer_provider=provider) as ok_runner, \
            running(bad_group, tracer_provider=provider) as bad_runner:
        wait_until(lambda: ok_runner.stats()["handled"] == 2, what="tel-ok handled both")
        wait_until(lambda: bad_runner.stats()["handled"] == 1 and bad_runner.stats()["dead_lettered"] == 1,
                   what="tel-bad handled one, dead-lettered one")
    dead = read_messages(consumer_factory(group_factory(), [dlq]), 1)[0]

    # Then every span is in the request's trace
    finished = exporter.get_finished_spans()
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in finished} == {trace_id}
    by_kind = lambda kind, name: [s for s in finished if s.kind == kind and s.name == name]  # noqa: E731

    # ... one PRODUCER span per event, a child of the request, with the messaging attributes
    sends = {s.attributes["messaging.message.id"]: s for s in by_kind(SpanKind.PRODUCER, f"send {topic}")}
    assert set(sends) == {good.event_id, bad.event_id}
    for event in (good, bad):
        send = sends[event.event_id]
        assert send.parent.span_id == request.get_span_context().span_id
        assert send.attributes["messaging.system"] == "kafka"
        assert send.attributes["messaging.destination.name"] == topic
        assert send.attributes["messaging.operation.type"] == "send"
        assert send.attributes["messaging.kafka.message.key"] == event.app_id
        assert send.attributes["messaging.destination.partition.id"] == "0"

    # ... one CONSUMER span per message and group, a child of the event's PRODUCER span
    processes = by_kind(SpanKind.CONSUMER, f"process {topic}")
    assert len(processes) == 4
    consumed = {(s.attributes["messaging.consumer.group.name"], s.attributes["messaging.message.id"]): s
                for s in processes}
    assert set(consumed) == {(g, e.event_id) for g in ("tel-ok", "tel-bad") for e in (good, bad)}
    for (_group, event_id), span in consumed.items():
        assert span.parent.span_id == sends[event_id].context.span_id
        assert span.attributes["messaging.system"] == "kafka"
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.attributes["messaging.destination.name"] == topic
    assert consumed[("tel-bad", bad.event_id)].status.status_code == StatusCode.ERROR
    assert consumed[("tel-ok", bad.event_id)].status.status_code == StatusCode.UNSET

    # ... the handler's span inside each CONSUMER span, one per attempt
    handles = by_kind(SpanKind.INTERNAL, "handle app_was_created")
    parents = sorted(s.parent.span_id for s in handles)
    failing = consumed[("tel-bad", bad.event_id)]
    expected = sorted([s.context.span_id for s in processes] + [failing.context.span_id])
    assert parents == expected  # the failing one ran twice

    # ... the retry recorded on the failing message's span
    retries = [e for e in consumed[("tel-bad", bad.event_id)].events if e.name == "retry"]
    assert [e.attributes["events.attempt"] for e in retries] == [1]
    assert retries[0].attributes["exception.type"] == "RuntimeError"

    # ... and the dead letter's PRODUCER span, a child of that CONSUMER span, named by the dead letter's traceparent
    [dlq_send] = by_kind(SpanKind.PRODUCER, f"send {dlq}")
    assert dlq_send.parent.span_id == consumed[("tel-bad", bad.event_id)].context.span_id
    assert dlq_send.attributes["messaging.destination.name"] == dlq
    assert dlq_send.attributes["messaging.message.id"] == bad.event_id
    traceparents = [v for k, v in dead.headers() if k == H.TRACEPARENT]
    ctx = dlq_send.context
    assert traceparents == [f"00-{_hex(trace_id, 32)}-{_hex(ctx.span_id, 16)}-{_hex(ctx.trace_flags, 2)}".encode()]


def test_a_message_that_does_not_decode_still_gets_its_consumer_span_and_the_trace_reaches_the_dead_letter(
        kafka_env, topic_factory, group_topics, consumer_factory, group_factory, producer_factory, sqlite_db, spans):
    provider, exporter = spans
    # Given garbage labelled app_was_created, published inside a trace (a traceparent header)
    topic = topic_factory(f"{kafka_env}.app")
    group, _ = sample_handlers.recording_group("tel-garbage", database_url=sqlite_db)
    _, dlq = group_topics("tel-garbage")
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    producer = producer_factory()
    producer.produce(topic, value=b"not avro at all", key=b"app-1",
                     headers=[(H.EVENT_TYPE, b"app_was_created"), (H.EVENT_ID, b"evt-garbage"),
                              (H.TRACEPARENT, f"00-{trace_id}-{parent_id}-01".encode())])
    assert producer.flush(30) == 0
    # When the group dead-letters it
    with running(group, tracer_provider=provider) as runner:
        wait_until(lambda: runner.stats()["dead_lettered"] == 1, what="the garbage dead-lettered")
    dead = read_messages(consumer_factory(group_factory(), [dlq]), 1)[0]

    # Then it has a CONSUMER span, a child of the producer's, failed, with the decode error recorded
    finished = exporter.get_finished_spans()
    [process] = [s for s in finished if s.kind == SpanKind.CONSUMER]
    assert _hex(process.context.trace_id, 32) == trace_id and _hex(process.parent.span_id, 16) == parent_id
    assert process.status.status_code == StatusCode.ERROR
    assert process.attributes["messaging.message.id"] == "evt-garbage"
    assert process.attributes["events.event_type"] == "app_was_created"
    assert process.attributes["events.outcome"] == "dead_lettered"
    assert [e.name for e in process.events] == ["exception"]
    # ... and the dead letter's PRODUCER span is its child, named by the dead letter's traceparent
    [send] = [s for s in finished if s.kind == SpanKind.PRODUCER and s.name == f"send {dlq}"]
    assert send.parent.span_id == process.context.span_id
    ctx = send.context
    assert [v for k, v in dead.headers() if k == H.TRACEPARENT] == [
        f"00-{trace_id}-{_hex(ctx.span_id, 16)}-{_hex(ctx.trace_flags, 2)}".encode()]
