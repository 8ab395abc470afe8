"""``EventProducer``'s observers: which hook each way of publishing calls, how they nest, and the
SDK's own tracing and metrics on the paths that need no broker (refused at once, timed out).

No broker is needed: the producer points at a port where none listens and gives up on a message
after half a second. Delivered events are covered against the broker by tests/telemetry/.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, get_current_span

from dify_events.producers import DeliveryFailed, EventProducer, MessageTooLarge, PublishError, UnpublishableEvent
from dify_events.producers.observers import Deliver, ProducerObserver, Publish, nested
from dify_events.schemas import headers as names
from dify_events.schemas.events import AppWasCreated, Event
from dify_events.schemas.settings import Settings
from tests.telemetry.support import points, value

NOWHERE = Settings(bootstrap_servers="127.0.0.1:1", kafka={"message.timeout.ms": "500"})


def app_created(app_id: str = "app-1") -> AppWasCreated:
    return AppWasCreated(tenant_id="tenant-1", app_id=app_id, mode="chat", name="Bot", created_by="u1")


class AppWasRenamed(Event):  # a type the catalogue does not know: refused before anything is sent
    event_type: ClassVar[str] = "app_was_renamed"
    domain: ClassVar[str] = "app"
    key_field: ClassVar[str] = "tenant_id"


class Recording(ProducerObserver):
    """Records each hook call and each delivery report it passes on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.reports: list[tuple[str, str | None]] = []
        self.current_spans: list[int] = []  # the span current while each event was published
        self.lock = threading.Lock()

    def around_publish(self, event: Event, deliver: Deliver, publish: Publish) -> None:
        self.calls.append(("around_publish", event.event_id))
        self.current_spans.append(get_current_span().get_span_context().span_id)
        publish(self._reported(event.event_id, deliver))

    def around_publish_encoded(self, event_type: str, deliver: Deliver, publish: Publish) -> None:
        self.calls.append(("around_publish_encoded", event_type))
        publish(self._reported(event_type, deliver))

    def _reported(self, what: str, deliver: Deliver) -> Deliver:
        def report(err, msg) -> None:
            with self.lock:
                self.reports.append((what, err.name() if err is not None else None))
            deliver(err, msg)
        return report


def test_each_way_of_publishing_calls_its_hook_once_per_event_and_passes_the_report_on():
    # Given a producer with a recording observer, and nowhere to deliver to
    recording = Recording()
    events = [app_created(f"app-{i}") for i in range(5)]
    errors: list[PublishError] = []
    with EventProducer(settings=NOWHERE, observers=[recording], on_error=errors.append) as producer:
        # When one event goes through each of publish, publish(wait=True), publish_async, publish_many
        producer.publish(events[0])
        with pytest.raises(DeliveryFailed):
            producer.publish(events[1], wait=True, timeout=30)

        async def publish_async() -> None:
            with pytest.raises(DeliveryFailed):
                await asyncio.wait_for(producer.publish_async(events[2]), 30)

        asyncio.run(publish_async())
        outcomes = producer.publish_many(events[3:], timeout=30)
        # ... and encoded bytes through publish_encoded
        results: list = []
        producer.publish_encoded("elsewhere", b"\x00", key=b"k", headers=[(names.EVENT_TYPE, b"app_was_created")],
                                 event_id="encoded-1", on_result=lambda delivery, error: results.append(error))
        assert producer.flush(30) == 0
    # Then each event passed the hook of its kind once, in order
    assert recording.calls == [("around_publish", e.event_id) for e in events] + [
        ("around_publish_encoded", "app_was_created")]
    # ... and every delivery report reached the observer, then the caller (future, waiter, on_error, on_result)
    assert sorted(recording.reports) == sorted([(e.event_id, "_MSG_TIMED_OUT") for e in events] +
                                               [("app_was_created", "_MSG_TIMED_OUT")])
    assert all(isinstance(o, DeliveryFailed) for o in outcomes) and len(outcomes) == 2
    assert [e.event_id for e in errors] == [events[0].event_id]
    assert len(results) == 1 and isinstance(results[0], DeliveryFailed)


def test_observers_nest_in_list_order_and_only_overridden_hooks_are_nested():
    # Given three observers: two wrap around_publish, one only around_publish_encoded
    order: list[str] = []

    class Wrap(ProducerObserver):
        def __init__(self, name: str) -> None:
            self.name = name

        def around_publish(self, event, deliver, publish) -> None:
            order.append(f"{self.name} before")
            publish(deliver)
            order.append(f"{self.name} after")

    class EncodedOnly(ProducerObserver):
        def around_publish_encoded(self, event_type, deliver, publish) -> None:
            publish(deliver)

    observers = [Wrap("outer"), EncodedOnly(), Wrap("inner")]
    chain = nested(observers, "around_publish")
    # When the nested hook publishes
    assert chain is not None
    chain("event", print, lambda deliver: order.append("publish"))
    # Then the first is outermost, and the observer that does not wrap publish is not in the chain
    assert order == ["outer before", "inner before", "publish", "inner after", "outer after"]
    assert nested([EncodedOnly()], "around_publish") is None
    assert nested([], "around_publish_encoded") is None


def test_without_observers_publish_goes_straight_to_librdkafka():
    # Given a producer with no provider configured and no observer
    with EventProducer(settings=NOWHERE, poll_thread=False) as producer:
        # Then its send paths are the plain ones, chosen once (no test per event)
        assert producer._send == producer._send_now
        assert producer._send_encoded == producer._produce


@pytest.fixture
def telemetry():
    """``(tracer_provider, exporter, meter_provider, reader)`` of the real OpenTelemetry SDK."""
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider, meter_provider = TracerProvider(), MeterProvider(metric_readers=[reader])
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider, exporter, meter_provider, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_an_event_refused_at_once_counts_rejected_and_its_span_ends_with_the_error(telemetry):
    tracer_provider, exporter, meter_provider, reader = telemetry
    stranger = AppWasRenamed(tenant_id="tenant-1")
    with EventProducer(settings=NOWHERE, tracer_provider=tracer_provider, meter_provider=meter_provider) as producer:
        # When an event of a type the catalogue does not know is published
        with pytest.raises(UnpublishableEvent):
            producer.publish(stranger)
    # Then events.published counts it rejected, by its type
    collected = points(reader)
    assert value(collected, "events.published", event_type="app_was_renamed", outcome="rejected") == 1
    assert value(collected, "events.published", outcome="delivered") + value(
        collected, "events.published", outcome="failed") == 0
    # ... and its PRODUCER span ended with ERROR and the exception recorded
    [span] = exporter.get_finished_spans()
    assert (span.name, span.kind) == ("send", SpanKind.PRODUCER)
    assert span.attributes["messaging.message.id"] == stranger.event_id
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "UnpublishableEvent"
    assert [e.name for e in span.events] == ["exception"]


def test_an_event_too_large_for_the_producer_is_refused_in_a_span_named_for_its_topic(telemetry):
    tracer_provider, exporter, meter_provider, reader = telemetry
    with EventProducer({"message.max.bytes": 1000}, settings=NOWHERE, tracer_provider=tracer_provider,
                       meter_provider=meter_provider) as producer:
        # When an event larger than the producer takes is published
        with pytest.raises(MessageTooLarge):
            producer.publish(AppWasCreated(tenant_id="tenant-1", app_id="app-1", mode="chat", name="x" * 5000,
                                           created_by="u1"))
        topic = producer.topic_of("app_was_created")
    # Then it counts rejected, and its span, ended with the error, names the topic it was refused for
    assert value(points(reader), "events.published", event_type="app_was_created", outcome="rejected") == 1
    [span] = exporter.get_finished_spans()
    assert span.name == f"send {topic}" and span.attributes["messaging.destination.name"] == topic
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "MessageTooLarge"


def test_an_event_that_times_out_counts_failed_and_its_span_names_where_it_was_going(telemetry):
    tracer_provider, exporter, meter_provider, reader = telemetry
    event = app_created()
    recording = Recording()
    with EventProducer(settings=NOWHERE, tracer_provider=tracer_provider, meter_provider=meter_provider,
                       observers=[recording]) as producer:
        # When an event is published and no broker answers within message.timeout.ms
        with pytest.raises(DeliveryFailed):
            producer.publish(event, wait=True, timeout=30)
        topic = producer.topic_of("app_was_created")
    # Then events.published counts it failed, and the caller's observer saw the report too
    collected = points(reader)
    assert value(collected, "events.published", event_type="app_was_created", outcome="failed") == 1
    assert value(collected, "events.published", outcome="delivered") == 0
    assert recording.reports == [(event.event_id, "_MSG_TIMED_OUT")]
    # ... and its PRODUCER span names the topic and key, and ended with librdkafka's error
    [span] = exporter.get_finished_spans()
    assert (span.name, span.kind) == (f"send {topic}", SpanKind.PRODUCER)
    assert span.attributes["messaging.destination.name"] == topic
    assert span.attributes["messaging.kafka.message.key"] == event.app_id
    assert span.attributes["error.type"] == "_MSG_TIMED_OUT"
    assert span.status.status_code == StatusCode.ERROR
    # ... and it was current while the SDK built the headers (their traceparent names it: tests/telemetry/)
    assert recording.current_spans == [span.context.span_id]
