"""Traces and metrics of the producer SDK (only when OpenTelemetry is configured).

``ProducerTelemetry.create()`` returns ``None`` unless a tracer or meter provider is given or set
globally; the producer then takes its plain path and pays one ``is None`` test per event.

- A PRODUCER span per event, ``send <topic>``, with OpenTelemetry's messaging attributes
  (``messaging.system=kafka``, ``messaging.destination.name``, ``messaging.operation.type=send``,
  ``messaging.kafka.message.key``, ``messaging.message.id`` = the event id). It is current while
  the headers are built, so the event's ``traceparent`` names it; it ends when the broker answers
  (partition and offset set on it) or when publishing fails at once.
- ``events.published`` (Prometheus ``events_published_total``), by ``event_type`` and ``outcome``:
  ``delivered`` (acknowledged), ``failed`` (the broker's answer was an error), ``rejected``
  (refused before sending: invalid event, queue full, too large).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode

from .errors import PublishError

if TYPE_CHECKING:
    from dify_events.schemas.events import Event

    from .producer import EventProducer


def _tracing_configured() -> bool:
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider)


def _metrics_configured() -> bool:
    provider = metrics.get_meter_provider()
    return not isinstance(provider, NoOpMeterProvider) and type(provider).__name__ != "_ProxyMeterProvider"


class ProducerTelemetry:
    def __init__(self, tracer: Any, meter: Any):
        self.tracer = tracer
        self.published = meter.create_counter("events.published", unit="{event}",
                                              description="Events published, by outcome") if meter else None

    @classmethod
    def create(cls, tracer_provider: Any = None, meter_provider: Any = None) -> ProducerTelemetry | None:
        if tracer_provider is None and _tracing_configured():
            tracer_provider = trace.get_tracer_provider()
        if meter_provider is None and _metrics_configured():
            meter_provider = metrics.get_meter_provider()
        if tracer_provider is None and meter_provider is None:
            return None
        return cls(tracer_provider.get_tracer("producers") if tracer_provider is not None else None,
                   meter_provider.get_meter("producers") if meter_provider is not None else None)

    def send(self, producer: EventProducer, event: Event, key, idempotency_key, headers,
             on_delivery: Callable | None, queue_full_wait_s: float) -> None:
        """``_prepare`` + ``_produce`` of one event inside its PRODUCER span."""
        event_type = getattr(event, "event_type", type(event).__name__)
        span = None
        if self.tracer is not None:
            span = self.tracer.start_span("send", kind=SpanKind.PRODUCER, attributes={
                "messaging.system": "kafka", "messaging.operation.type": "send", "messaging.operation.name": "send",
                "messaging.message.id": getattr(event, "event_id", ""), "events.event_type": event_type})
        try:
            if span is not None:
                with trace.use_span(span, end_on_exit=False, record_exception=False,
                                    set_status_on_exception=False):
                    topic, value, key, hdrs = producer._prepare(event, key, idempotency_key, headers)
                span.update_name(f"send {topic}")
                span.set_attribute("messaging.destination.name", topic)
                span.set_attribute("messaging.kafka.message.key", key.decode("utf-8", "replace")
                                   if isinstance(key, bytes) else str(key))
            else:
                topic, value, key, hdrs = producer._prepare(event, key, idempotency_key, headers)
            delivered = _Delivered(self, span, event_type, on_delivery or producer._on_delivery)
            producer._produce(topic, value, key, hdrs, event.event_id, delivered, queue_full_wait_s)
        except PublishError as exc:
            if self.published is not None:
                self.published.add(1, {"event_type": event_type, "outcome": "rejected"})
            if span is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.end()
            raise

    def wrap(self, event_type: str | None, on_delivery: Callable | None, producer: EventProducer) -> Callable:
        """A delivery callback that counts the outcome (the relay's path: no span there)."""
        return _Delivered(self, None, event_type or "unknown", on_delivery or producer._on_delivery)


class _Delivered:
    """Delivery callback: counts the outcome, ends the span, then calls the producer's callback."""

    __slots__ = ("telemetry", "span", "event_type", "then")

    def __init__(self, telemetry: ProducerTelemetry, span: Any, event_type: str, then: Callable):
        self.telemetry = telemetry
        self.span = span
        self.event_type = event_type
        self.then = then

    def __call__(self, err, msg) -> None:
        published = self.telemetry.published
        if published is not None:
            published.add(1, {"event_type": self.event_type, "outcome": "delivered" if err is None else "failed"})
        span = self.span
        if span is not None:
            if err is None:
                span.set_attribute("messaging.destination.partition.id", str(msg.partition()))
                span.set_attribute("messaging.kafka.offset", msg.offset())
            else:
                span.set_status(Status(StatusCode.ERROR, err.str()))
                span.set_attribute("error.type", err.name())
            span.end()
        self.then(err, msg)
