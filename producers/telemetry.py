"""Traces and metrics of the producer SDK: two observers (``producers.observers``), made only when
OpenTelemetry is configured.

``observers(tracer_provider, meter_provider)`` returns ``[]`` unless a tracer or meter provider is
given or set globally; the producer then publishes without any observer, at no cost per event.

- ``ProducerTracing``: a PRODUCER span per event, ``send <topic>``, with OpenTelemetry's messaging
  attributes (``messaging.system=kafka``, ``messaging.destination.name``,
  ``messaging.operation.type=send``, ``messaging.kafka.message.key``, ``messaging.message.id`` = the
  event id). It is current while the headers are built, so the event's ``traceparent`` names it; it
  ends when the broker answers (topic, key, partition and offset set on it from the delivery
  report), or with ERROR when publishing fails at once (then it keeps the name ``send``: nothing
  was sent anywhere).
- ``ProducerMetrics``: ``events.published`` (Prometheus ``events_published_total``), by
  ``event_type`` and ``outcome``: ``delivered`` (acknowledged), ``failed`` (the broker's answer was
  an error), ``rejected`` (refused before sending: invalid event, queue full, too large; not
  counted on the relay's path, which publishes bytes that were valid when added to the outbox).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode

from .errors import PublishError
from .observers import Deliver, ProducerObserver, Publish

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

    from dify_events.schemas.events import Event


def observers(tracer_provider: Any = None, meter_provider: Any = None) -> list[ProducerObserver]:
    """The SDK's observers for these providers (``None``: the global one when set, else none)."""
    if tracer_provider is None and _tracing_configured():
        tracer_provider = trace.get_tracer_provider()
    if meter_provider is None and _metrics_configured():
        meter_provider = metrics.get_meter_provider()
    found: list[ProducerObserver] = []
    if tracer_provider is not None:
        found.append(ProducerTracing(tracer_provider.get_tracer("producers")))
    if meter_provider is not None:
        found.append(ProducerMetrics(meter_provider.get_meter("producers")))
    return found


def _tracing_configured() -> bool:
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider)


def _metrics_configured() -> bool:
    provider = metrics.get_meter_provider()
    return not isinstance(provider, NoOpMeterProvider) and type(provider).__name__ != "_ProxyMeterProvider"


class ProducerTracing(ProducerObserver):
    """A PRODUCER span per published event (the relay's path has none: its events carry the
    ``traceparent`` of the transaction that added them)."""

    def __init__(self, tracer: Any):
        self.tracer = tracer

    def around_publish(self, event: Event, deliver: Deliver, publish: Publish) -> None:
        span = self.tracer.start_span("send", kind=SpanKind.PRODUCER, attributes={
            "messaging.system": "kafka", "messaging.operation.type": "send", "messaging.operation.name": "send",
            "messaging.message.id": getattr(event, "event_id", ""),
            "events.event_type": getattr(event, "event_type", type(event).__name__)})
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                publish(partial(_end_span, span, deliver))
        except PublishError as exc:
            if exc.topic:  # refused on its way to a topic (too large, queue full), not before it had one
                span.update_name(f"send {exc.topic}")
                span.set_attribute("messaging.destination.name", exc.topic)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
            raise


def _end_span(span: Any, deliver: Deliver, err: KafkaError | None, msg: Message) -> None:
    """The delivery callback of a traced event: where it went, how it ended; then ``deliver``."""
    topic, key = msg.topic(), msg.key()
    span.update_name(f"send {topic}")
    attributes: dict[str, Any] = {
        "messaging.destination.name": topic or "",
        "messaging.kafka.message.key": key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)}
    if err is None:
        attributes["messaging.destination.partition.id"] = str(msg.partition())
        attributes["messaging.kafka.offset"] = msg.offset()
    else:
        attributes["error.type"] = err.name()
        span.set_status(Status(StatusCode.ERROR, err.str()))
    span.set_attributes(attributes)
    span.end()
    deliver(err, msg)


class ProducerMetrics(ProducerObserver):
    """``events.published`` by event type and outcome."""

    def __init__(self, meter: Any):
        self.published = meter.create_counter("events.published", unit="{event}",
                                              description="Events published, by outcome")

    def around_publish(self, event: Event, deliver: Deliver, publish: Publish) -> None:
        event_type = getattr(event, "event_type", type(event).__name__)  # not an Event: refused, counted
        try:
            publish(partial(self._count, event_type, deliver))
        except PublishError:
            self.published.add(1, {"event_type": event_type, "outcome": "rejected"})
            raise

    def around_publish_encoded(self, event_type: str, deliver: Deliver, publish: Publish) -> None:
        publish(partial(self._count, event_type, deliver))

    def _count(self, event_type: str, deliver: Deliver, err: KafkaError | None, msg: Message) -> None:
        self.published.add(1, {"event_type": event_type, "outcome": "delivered" if err is None else "failed"})
        deliver(err, msg)
