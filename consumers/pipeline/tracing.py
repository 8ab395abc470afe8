"""Tracing: continue the producer's W3C trace context and open a CONSUMER span per message.

Active only when an OpenTelemetry tracer provider is configured when the group starts (given to
the runner, or set globally by the process); otherwise the step leaves the chain and costs nothing.

The CONSUMER span is the *child* of the context in the message's ``traceparent`` header (the
producer's PRODUCER span), not a root span linked to it: every message is published once and
processed one at a time (no batches), which is the case OpenTelemetry's messaging conventions let
a process span take the creation context as its parent, so one trace reads end to end from the
application's request through Kafka into every group's handler. Each group's span is a sibling
under the same PRODUCER span. Inside it: one INTERNAL span per handler attempt (``handle
<event_type>``, see ``consumers.pipeline.observed_handler``), a ``retry`` event per retry
(``Retries``), and a PRODUCER span for a dead letter (``DeadLetters``), whose headers carry that
span's ``traceparent``, so the trace goes on into the dead-letter topic and a re-drive.
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
        resources.tracer = self.tracer

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
            "messaging.operation.name": "process",
            "messaging.destination.name": job.topic,
            "messaging.destination.partition.id": str(job.partition),
            "messaging.kafka.offset": job.offset,
            "messaging.consumer.group.name": self.group.name,
            "messaging.message.id": job.event.event_id,
            "events.event_type": handler.event_type,
            "events.handler": handler.name,
        }
        key = job.message.key()
        if key is not None:
            attributes["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
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
