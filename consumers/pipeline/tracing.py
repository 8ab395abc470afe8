"""Tracing: continue the producer's W3C trace context and open a CONSUMER span per message.

Active only when an OpenTelemetry tracer provider is configured when the group starts (given to
the runner, or set globally by the process); otherwise the step leaves the chain and costs nothing.

The CONSUMER span is the *child* of the context in the message's ``traceparent`` header (the
producer's PRODUCER span), not a root span linked to it: every message is published once and
processed on its own (a message handled in a database batch keeps a CONSUMER span of its own,
``consumers.pipeline.batch``), which is the case OpenTelemetry's messaging conventions let
a process span take the creation context as its parent, so one trace reads end to end from the
application's request through Kafka into every group's handler. Each group's span is a sibling
under the same PRODUCER span. Inside it: one INTERNAL span per handler attempt (``handle
<event_type>``, see ``consumers.pipeline.observed_handler``), a ``retry`` event per retry
(``Retries``), and a PRODUCER span for a dead letter (``DeadLetters``), whose headers carry that
span's ``traceparent``, so the trace goes on into the dead-letter topic and a re-drive. A message
that fails before this step (it does not decode) gets its CONSUMER span from ``DeadLetters``
(``failed_span``), so its trace reaches the dead-letter topic the same way.
"""

from __future__ import annotations

from functools import partial

from opentelemetry import propagate, trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode

from dify_events.schemas import headers as H

from ..job import Job
from ..observers import wrapped
from ..redact import error_message, error_traceback, fqcn
from ..telemetry.fields import event_id_of, event_type_of
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
        self.wraps = resources.observers.around_message

    @property
    def active(self) -> bool:
        return self._active or bool(self.wraps)

    def chain(self, call_next: CallNext) -> CallNext:
        """The observers' ``around_message`` wraps around ``call_next``, inside the span."""
        call_next = wrapped(self.wraps, call_next)
        return partial(self.process, call_next=call_next) if self._active else call_next

    def process(self, job: Job, call_next: CallNext) -> str:
        assert self.tracer is not None  # the step is in the chain only when active
        with self.tracer.start_as_current_span(f"process {job.topic}", context=parent_context(job),
                                               kind=SpanKind.CONSUMER, attributes=span_attributes(job, self.group.name),
                                               record_exception=False, set_status_on_exception=False) as span:
            job.span = span
            try:
                outcome = call_next(job)
            except Exception as exc:
                record_error(span, exc)
                raise
            span.set_attribute("events.outcome", outcome)
            span.set_attribute("events.attempts", job.attempts)
            if outcome != "handled" and outcome != "duplicate":
                span.set_status(Status(StatusCode.ERROR))
            return outcome


def parent_context(job: Job):
    """The context of the message's ``traceparent``/``tracestate`` headers (None without them)."""
    carrier = {}
    for name, value in job.raw_headers or ():
        if name in TRACE_HEADERS and value is not None:
            carrier[name] = value.decode("latin-1")
    return propagate.extract(carrier) if carrier else None


def span_attributes(job: Job, group: str) -> dict:
    """OpenTelemetry's messaging attributes of the message's CONSUMER span (of a message that
    failed to decode too: the ids then come from its headers)."""
    attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": job.topic,
        "messaging.destination.partition.id": str(job.partition),
        "messaging.kafka.offset": job.offset,
        "messaging.consumer.group.name": group,
        "events.event_type": event_type_of(job),
    }
    event_id = event_id_of(job)
    if event_id is not None:
        attributes["messaging.message.id"] = event_id
    if job.handler is not None:
        attributes["events.handler"] = job.handler.name
    key = job.message.key()
    if key is not None:
        attributes["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
    return attributes


def record_error(span, exc: BaseException) -> None:
    """OpenTelemetry's ``exception`` event and an ERROR status, with the message and stack trace
    redacted (``consumers.redact``), where ``record_exception`` would write them as they are."""
    message = error_message(exc)
    span.add_event("exception", {"exception.type": fqcn(exc), "exception.message": message,
                                 "exception.stacktrace": error_traceback(exc)})
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"[:300]))


def start_consumer_span(tracer, job: Job, group: str, attributes: dict):
    """The message's CONSUMER span, started (not current), with ``attributes`` over the messaging ones."""
    return tracer.start_span(f"process {job.topic}", context=parent_context(job), kind=SpanKind.CONSUMER,
                             attributes={**span_attributes(job, group), **attributes})


def failed_span(tracer, job: Job, group: str, exc: BaseException):
    """The CONSUMER span of a message that failed before ``Tracing`` opened one, already ended:
    the exception recorded, status ERROR, outcome ``dead_lettered``."""
    span = start_consumer_span(tracer, job, group, {"events.outcome": "dead_lettered", "events.attempts": 0})
    record_error(span, exc)
    span.end()
    return span
