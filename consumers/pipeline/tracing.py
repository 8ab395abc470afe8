"""Tracing: continue the producer's W3C trace context and open a CONSUMER span per message.

Active only when an OpenTelemetry tracer provider is configured when the group starts (given to
the runner, or set globally by the process); otherwise the step leaves the chain and costs nothing. The span is the
child of the context in the message's ``traceparent`` header (the observability issue decides
between parent and link), with OpenTelemetry's messaging attributes; a failure is recorded on it.
"""

from __future__ import annotations

from opentelemetry import propagate, trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode

from schemas import headers as H

from ..job import Job
from .step import CallNext, Step

TRACE_HEADERS = (H.TRACEPARENT, H.TRACESTATE)


def tracing_configured() -> bool:
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider)


class Tracing(Step):
    options = {}

    def __init__(self, resources):
        super().__init__(resources)
        provider = resources.tracer_provider
        self._active = provider is not None or tracing_configured()
        self.tracer = (provider or trace.get_tracer_provider()).get_tracer("consumers") if self._active else None

    @property
    def active(self) -> bool:
        return self._active

    def process(self, job: Job, call_next: CallNext) -> str:
        carrier = {}
        for name in TRACE_HEADERS:
            value = job.headers.get(name)
            if value is not None:
                carrier[name] = value.decode("latin-1")
        parent = propagate.extract(carrier) if carrier else None
        handler = job.handler
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": job.topic,
            "messaging.destination.partition.id": str(job.partition),
            "messaging.kafka.offset": job.offset,
            "messaging.consumer.group.name": self.group.name,
            "messaging.message.id": job.event.event_id,
            "events.event_type": handler.event_type,
            "events.handler": handler.name,
        }
        with self.tracer.start_as_current_span(f"process {job.topic}", context=parent, kind=SpanKind.CONSUMER,
                                               attributes=attributes, record_exception=True,
                                               set_status_on_exception=True) as span:
            job.span = span
            outcome = call_next(job)
            span.set_attribute("events.outcome", outcome)
            span.set_attribute("events.attempts", job.attempts)
            if outcome != "handled" and outcome != "duplicate":
                span.set_status(Status(StatusCode.ERROR))
            return outcome
