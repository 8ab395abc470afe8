"""Tracing: the consumer's span continues the producer's W3C trace context."""

from __future__ import annotations

from functools import partial

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from dify_events.consumers.telemetry.tracing import tracing_configured
from dify_events.schemas import headers as H
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, codec, event_headers, harnessed

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def test_a_consumer_span_continues_the_trace_in_the_headers(sqlite_db):
    # Given a tracer provider with an in-memory exporter, and events published inside a trace
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness, behaviour = harnessed(sqlite_db, tracer_provider=provider, max_attempts=2, min_backoff_s=0.01)
    behaviour.fail["app-bad"] = -1
    event, bad = app_event("app-1", 1), app_event("app-bad", 2)
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()
    # When the group takes them
    with harness:
        results = [harness.send_raw(codec.encode(e), headers=event_headers(e, **{H.TRACEPARENT: traceparent}),
                                    key=e.key().encode()) for e in (event, bad)]
    assert [r.outcome for r in results] == ["handled", "dead_lettered"]
    # Then there is one CONSUMER span per message, children of the producer's span, with messaging attributes
    spans = {s.attributes["messaging.message.id"]: s for s in exporter.get_finished_spans()
             if s.kind == SpanKind.CONSUMER}  # (the handler's and the dead letter's spans: tests/telemetry)
    ok, failed = spans[event.event_id], spans[bad.event_id]
    for span in (ok, failed):
        assert span.kind == SpanKind.CONSUMER
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert format(span.parent.span_id, "016x") == PARENT_ID
        assert span.attributes["messaging.system"] == "kafka"
        assert span.attributes["messaging.destination.name"] == "events.app"
        assert span.attributes["messaging.consumer.group.name"] == "sample-recorder"
    assert ok.attributes["events.outcome"] == "handled"
    assert failed.status.status_code == StatusCode.ERROR
    assert any(e.name == "exception" for e in failed.events)


def test_without_a_tracer_provider_the_step_stays_out_of_the_chain(monkeypatch, tmp_path):
    # Given no tracer provider configured (OpenTelemetry's global is then a proxy)
    from confluent_kafka import Producer
    from opentelemetry import trace
    from opentelemetry.trace import ProxyTracerProvider

    from dify_events.consumers.breaker import OutageBreaker
    from dify_events.consumers.pipeline import build
    from dify_events.consumers.pipeline.step import Resources
    from dify_events.schemas.codec import AvroCodec

    monkeypatch.setattr(trace, "get_tracer_provider", lambda: ProxyTracerProvider())
    # Then tracing is not active, and the chain does not include it
    assert not tracing_configured()
    group, _ = sample_handlers.recording_group()
    resources = Resources(group=group, prefix="p", codec=AvroCodec(), breaker=OutageBreaker("g"),
                          database_url=f"sqlite:///{tmp_path / 'events.db'}",
                          dead_letter_producer=lambda: Producer({"bootstrap.servers": "127.0.0.1:1"}))
    chain, steps = build(resources, group.pipeline)
    for step in steps:
        step.close()
    names = []
    fn = chain
    while isinstance(fn, partial):  # partial(call_inside, step.process, call_next)
        process, fn = fn.args
        names.append(type(process.__self__).__name__)
    assert names == ["DeadLetters", "Decode", "Retries", "Idempotency"]


def traced(sqlite_db, provider=None):
    harness, behaviour = harnessed(sqlite_db, tracer_provider=provider, max_attempts=2)
    behaviour.fail["app-bad"] = -1
    return harness


def traced_parent(letter) -> tuple[str, str]:
    """(trace id, span id) of the letter's ``traceparent``."""
    _, trace_id, span_id, _ = letter.header(H.TRACEPARENT).split("-")
    return trace_id, span_id


def test_a_dead_letter_names_its_producer_span_whose_parent_is_the_messages_consumer_span(sqlite_db):
    # Given a traced group, and messages published inside a trace: one that always fails, one that does not decode
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    bad = app_event("app-bad", 1)
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()
    with traced(sqlite_db, provider) as harness:
        spent = harness.send_raw(codec.encode(bad), headers=event_headers(bad, **{H.TRACEPARENT: traceparent}),
                                 key=b"app-bad")
        undecodable = harness.send_raw(b"not avro", key=b"app-x", headers=[(H.EVENT_TYPE, "app_was_created"),
                                                                            (H.TRACEPARENT, traceparent)])
    assert spent.dead_lettered and undecodable.dead_lettered
    finished = exporter.get_finished_spans()
    consumers = [s for s in finished if s.kind == SpanKind.CONSUMER]
    producers = {format(s.context.span_id, "016x"): s for s in finished if s.kind == SpanKind.PRODUCER}
    assert len(consumers) == 2 and len(producers) == 2
    for result, consumer in zip((spent, undecodable), consumers, strict=True):
        # Then each letter's traceparent names a PRODUCER span of the trace, a child of the message's CONSUMER span
        trace_id, span_id = traced_parent(result.dead_letter)
        assert trace_id == TRACE_ID
        producer = producers[span_id]
        assert producer.name == "send events.dlq.sample-recorder"
        assert producer.parent.span_id == consumer.context.span_id
        assert format(consumer.parent.span_id, "016x") == PARENT_ID
        assert producer.attributes["messaging.destination.name"] == "events.dlq.sample-recorder"
        assert result.dead_letter.header(H.TRACEPARENT) != traceparent.decode()
    # ... and the spent one's CONSUMER span has a retry event; the undecodable one's failed before its attempts
    assert [e.name for e in consumers[0].events].count("retry") == 1
    assert consumers[1].attributes["events.attempts"] == 0


def test_without_tracing_a_dead_letter_keeps_the_original_traceparent(sqlite_db, monkeypatch):
    from opentelemetry import trace
    from opentelemetry.trace import ProxyTracerProvider

    monkeypatch.setattr(trace, "get_tracer_provider", lambda: ProxyTracerProvider())
    bad = app_event("app-bad", 1)
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    with traced(sqlite_db) as harness:
        result = harness.send_raw(codec.encode(bad), headers=event_headers(bad, **{H.TRACEPARENT: traceparent}),
                                  key=b"app-bad")
        assert not harness.resources.observers
    assert result.dead_lettered and result.dead_letter.header(H.TRACEPARENT) == traceparent
