"""Tracing: ``TracingObserver`` continues the producer's W3C trace context and opens the spans of
one group's messages, as an observer of the runtime's events (``consumers.observers``).

The CONSUMER span is the *child* of the context in the message's ``traceparent`` header (the
producer's PRODUCER span), not a root span linked to it: every message is published once and
processed on its own (a message handled in a database batch keeps a CONSUMER span of its own,
``consumers.pipeline.batch``), which is the case OpenTelemetry's messaging conventions let
a process span take the creation context as its parent, so one trace reads end to end from the
application's request through Kafka into every group's handler. Each group's span is a sibling
under the same PRODUCER span. Inside it: one INTERNAL span per handler attempt (``handle
<event_type>``), a ``retry`` event per retry, and a PRODUCER span for a dead letter, current while
the letter is made, so its headers carry that span's ``traceparent`` (``DeadLetters`` writes the
current trace context, as the SDK does) and the trace goes on into the dead-letter topic and a
re-drive. A message that fails before its CONSUMER span opens (it does not decode) gets one when it
is dead-lettered (``failed_span``), so its trace reaches the dead-letter topic the same way. A message
an ``inline`` group hands from its poll loop to a worker has two CONSUMER spans under the same parent:
the loop's (``events.outcome=handed_off``, with the failed attempt) and the worker's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
    set_span_in_context,
    use_span,
)

from dify_events.schemas import headers as H

from ..job import DUPLICATE, HANDLED, HandOff, Job
from ..observers import CallNext, Observer
from ..redact import error_message, error_traceback, fqcn
from .fields import event_id_of, event_type_of

TRACE_HEADERS = (H.TRACEPARENT, H.TRACESTATE)


def tracing_configured() -> bool:
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider)


class TracingObserver(Observer):
    """The spans of one group's messages (``group``: its name; ``dead_letter_topic``: where its dead letters go)."""

    def __init__(self, tracer: Any, group: str, dead_letter_topic: str):
        self.tracer = tracer
        self.group = group
        self.dead_letter_topic = dead_letter_topic

    def around_message(self, job: Job, call_next: CallNext) -> str:
        with self.tracer.start_as_current_span(f"process {job.topic}", context=parent_context(job),
                                               kind=SpanKind.CONSUMER, attributes=span_attributes(job, self.group),
                                               record_exception=False, set_status_on_exception=False) as span:
            job.span = span
            try:
                outcome = call_next(job)
            except HandOff:  # from the poll loop to a worker, which goes on under a span of its own
                span.set_attribute("events.outcome", "handed_off")
                raise
            except Exception as exc:
                record_error(span, exc)
                raise
            span.set_attribute("events.outcome", outcome)
            span.set_attribute("events.attempts", job.attempts)
            if outcome != HANDLED and outcome != DUPLICATE:
                span.set_status(Status(StatusCode.ERROR))
            return outcome

    def around_attempt(self, job: Job, call_next: CallNext) -> str:
        handler = job.handler
        assert handler is not None  # Decode let the job through
        if job.span is None:
            return call_next(job)
        with self.tracer.start_as_current_span(f"handle {handler.event_type}", context=set_span_in_context(job.span),
                                               kind=SpanKind.INTERNAL,
                                               attributes={"events.handler": handler.name,
                                                           "events.attempt": job.attempts},
                                               record_exception=False, set_status_on_exception=False) as span:
            try:
                return call_next(job)
            except Exception as exc:
                record_error(span, exc)
                raise

    def after_retry(self, job: Job, *, attempt: int, exc: BaseException, backoff_s: float) -> None:
        if job.span is not None:  # the retry is an event on the message's CONSUMER span
            job.span.add_event("retry", {"events.attempt": attempt, "exception.type": fqcn(exc),
                                         "exception.message": error_message(exc)[:300],
                                         "events.backoff_s": round(backoff_s, 3)})

    def around_dead_letter(self, job: Job, exc: BaseException, attempts: int, send: Callable[[], bool]) -> bool:
        """A PRODUCER span for the dead letter, a child of the message's CONSUMER span (ended by now,
        but still the parent), current while the letter is made and sent."""
        if job.span is None:  # it failed before its CONSUMER span opened (a decode failure): that span, now
            job.span = failed_span(self.tracer, job, self.group, exc)
        attributes = {"messaging.system": "kafka", "messaging.operation.type": "send",
                      "messaging.operation.name": "send", "messaging.destination.name": self.dead_letter_topic,
                      "messaging.consumer.group.name": self.group, "events.event_type": event_type_of(job),
                      "events.attempts": attempts, "exception.type": fqcn(exc)}
        if job.event is not None:
            attributes["messaging.message.id"] = job.event.event_id
        key = job.message.key()
        if key is not None:
            attributes["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
        span = self.tracer.start_span(f"send {self.dead_letter_topic}", context=set_span_in_context(job.span),
                                      kind=SpanKind.PRODUCER, attributes=attributes)
        try:
            with use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                sent = send()
            if not sent:
                span.set_status(Status(StatusCode.ERROR, "no dead letter fits the topic"))
            return sent
        except BaseException as error:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            span.end()

    def after_dead_letter_refused(self, job: Job, *, error: str, retry_in_s: float) -> None:
        span = trace.get_current_span()  # the dead letter's PRODUCER span (``around_dead_letter``)
        if span.get_span_context().is_valid:
            span.add_event("retry", {"exception.message": error[:300]})

    def before_batch_job(self, job: Job, size: int) -> None:
        """The job's CONSUMER span, as ``around_message`` opens it (not current), with the batch's size."""
        job.span = start_consumer_span(self.tracer, job, self.group, {"events.batch.size": size})

    def after_batch_job(self, job: Job, outcome: str, exc: BaseException | None) -> None:
        span, job.span = job.span, None
        if span is None:
            return
        if exc is not None:
            record_error(span, exc)
        span.set_attribute("events.outcome", outcome)
        span.set_attribute("events.attempts", job.attempts)
        if outcome != HANDLED and outcome != DUPLICATE and exc is None:
            span.set_status(Status(StatusCode.ERROR))
        span.end()


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
    """The CONSUMER span of a message that failed before ``around_message`` opened one, already ended:
    the exception recorded, status ERROR, outcome ``dead_lettered``."""
    span = start_consumer_span(tracer, job, group, {"events.outcome": "dead_lettered", "events.attempts": 0})
    record_error(span, exc)
    span.end()
    return span
