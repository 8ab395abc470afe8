"""DeadLetters: the branch every final failure takes.

Whatever escapes the rest of the pipeline (a decode error, a rejected message, retries spent) is
published to the group's dead-letter topic ``<prefix>.dlq.<group>``: the original key and value
bytes unchanged, the original headers, and headers that say where it came from and why it failed,
under our names and under Spring Kafka's ``kafka_dlt-*`` names (partition as a 4-byte big-endian
int, offset and timestamp as 8-byte big-endian longs, as Spring's ``DeadLetterPublishingRecoverer``
writes them), so existing Kafka tooling reads our dead letters.

The message counts as done only once the broker has acknowledged the dead letter. A dead letter in
flight is waited for even when its partition is revoked meanwhile (abandoning it would make the next
owner publish a second copy of a letter that is, almost always, acknowledged a moment later). A
dead letter the broker refuses is tried again with backoff until it is taken, or until the partition
is revoked or the consumer stops (then the message is left unfinished and redelivered to the next
owner). A member killed between the acknowledgement and its commit leaves the next owner to publish
the letter again: dead letters are at least once, told apart by their origin headers.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from datetime import UTC, datetime

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from schemas import headers as H

from ..errors import DeadLetterFailed
from ..job import DEAD_LETTERED, Job
from ..redact import error_message, error_traceback, fqcn, redact
from ..telemetry.fields import event_type_of, message_fields
from ..telemetry.metrics import key as metric_key
from .step import CallNext, Step
from .tracing import failed_span

log = logging.getLogger("consumers.dead_letters")

STACKTRACE_MAX_BYTES = 8 * 1024
MESSAGE_MAX_BYTES = 2 * 1024
DELIVERY_TIMEOUT_S = 150.0  # above the producer's delivery.timeout.ms (120 s): it always answers first

# our header names
ORIGIN_TOPIC = "dlq-origin-topic"
ORIGIN_PARTITION = "dlq-origin-partition"
ORIGIN_OFFSET = "dlq-origin-offset"
ORIGIN_TIMESTAMP = "dlq-origin-timestamp"
GROUP = "dlq-group"
HANDLER = "dlq-handler"
ERROR_CLASS = "dlq-error-class"
ERROR_MESSAGE = "dlq-error-message"
ERROR_STACKTRACE = "dlq-error-stacktrace"
ATTEMPTS = "dlq-attempts"
FAILED_AT = "dlq-failed-at"
# Spring Kafka's (org.springframework.kafka.support.KafkaHeaders.DLT_*)
DLT_ORIGINAL_TOPIC = "kafka_dlt-original-topic"
DLT_ORIGINAL_PARTITION = "kafka_dlt-original-partition"
DLT_ORIGINAL_OFFSET = "kafka_dlt-original-offset"
DLT_ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"
DLT_ORIGINAL_TIMESTAMP_TYPE = "kafka_dlt-original-timestamp-type"
DLT_ORIGINAL_CONSUMER_GROUP = "kafka_dlt-original-consumer-group"
DLT_EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
DLT_EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
DLT_EXCEPTION_STACKTRACE = "kafka_dlt-exception-stacktrace"
DLT_EXCEPTION_CAUSE_FQCN = "kafka_dlt-exception-cause-fqcn"  # only when the error has a cause

# The origin of a message that was dead-lettered before and re-driven is its first origin: kept
# when present (as Spring keeps them). The failure's own headers are replaced by this failure's.
ORIGIN_HEADERS = frozenset({ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET, ORIGIN_TIMESTAMP,
                            DLT_ORIGINAL_TOPIC, DLT_ORIGINAL_PARTITION, DLT_ORIGINAL_OFFSET,
                            DLT_ORIGINAL_TIMESTAMP, DLT_ORIGINAL_TIMESTAMP_TYPE})
FAILURE_HEADERS = frozenset({GROUP, HANDLER, ERROR_CLASS, ERROR_MESSAGE, ERROR_STACKTRACE, ATTEMPTS, FAILED_AT,
                             DLT_ORIGINAL_CONSUMER_GROUP, DLT_EXCEPTION_FQCN, DLT_EXCEPTION_MESSAGE,
                             DLT_EXCEPTION_STACKTRACE, DLT_EXCEPTION_CAUSE_FQCN})
TIMESTAMP_TYPES = {0: b"NoTimestampType", 1: b"CreateTime", 2: b"LogAppendTime"}  # Java's TimestampType names


def bounded(text: str, limit: int, *, keep: str = "head") -> bytes:
    """UTF-8 bytes of ``text`` cut to ``limit`` bytes, saying how much was cut. Stack traces keep
    their tail (the raising frame and the exception line are at the end)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    marker = f"...[{len(data) - limit} bytes cut]...".encode()
    room = max(0, limit - len(marker))
    if keep == "tail":
        return marker + data[len(data) - room:].decode("utf-8", "ignore").encode()
    return data[:room].decode("utf-8", "ignore").encode() + marker


def dead_letter_headers(job: Job, exc: BaseException, *, group: str, attempts: int,
                        now: datetime | None = None) -> list[tuple[str, bytes]]:
    """The original headers (less earlier failure headers), then the origin and failure headers.
    The error's message and stack trace are redacted (``consumers.redact``): no credentials, and no
    event data (pydantic's input values, SQL parameters)."""
    msg = job.message
    ts_type, ts = msg.timestamp()
    original = list(job.raw_headers or ())
    present = {name for name, _ in original}
    headers = [(k, v) for k, v in original if k not in FAILURE_HEADERS]
    handler = job.handler.name if job.handler is not None else ""
    # redacted (credentials masked, no event data) before being cut to size
    stack = error_traceback(exc)
    message = error_message(exc) or type(exc).__name__
    failed_at = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    origin = [
        (ORIGIN_TOPIC, job.topic.encode()),
        (ORIGIN_PARTITION, str(job.partition).encode()),
        (ORIGIN_OFFSET, str(job.offset).encode()),
        (ORIGIN_TIMESTAMP, str(ts).encode()),
        (DLT_ORIGINAL_TOPIC, job.topic.encode()),
        (DLT_ORIGINAL_PARTITION, struct.pack(">i", job.partition)),
        (DLT_ORIGINAL_OFFSET, struct.pack(">q", job.offset)),
        (DLT_ORIGINAL_TIMESTAMP, struct.pack(">q", ts)),
        (DLT_ORIGINAL_TIMESTAMP_TYPE, TIMESTAMP_TYPES.get(ts_type, b"CreateTime")),
    ]
    headers += [(k, v) for k, v in origin if k not in present]
    message_bytes = bounded(message, MESSAGE_MAX_BYTES)
    error_stack = bounded(stack, STACKTRACE_MAX_BYTES, keep="tail")
    error_class = fqcn(exc).encode()
    headers += [
        (GROUP, group.encode()),
        (HANDLER, handler.encode()),
        (ERROR_CLASS, error_class),
        (ERROR_MESSAGE, message_bytes),
        (ERROR_STACKTRACE, error_stack),
        (ATTEMPTS, str(attempts).encode()),
        (FAILED_AT, failed_at.encode()),
        (DLT_ORIGINAL_CONSUMER_GROUP, group.encode()),
        (DLT_EXCEPTION_FQCN, error_class),
        (DLT_EXCEPTION_MESSAGE, message_bytes),
        (DLT_EXCEPTION_STACKTRACE, error_stack),
    ]
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        headers.append((DLT_EXCEPTION_CAUSE_FQCN, fqcn(cause).encode()))
    return headers


class DeadLetters(Step):
    """Publishes what fails for good, and waits for the broker's acknowledgement."""

    options = {}
    RETRY_MIN_S = 0.5
    RETRY_MAX_S = 30.0

    def __init__(self, resources):
        super().__init__(resources)
        self.topic = self.group.dlq_topic(resources.prefix)

    def process(self, job: Job, call_next: CallNext) -> str:
        try:
            return call_next(job)
        except Exception as exc:  # noqa: BLE001 - every failure ends here; Abandoned is a BaseException
            self.publish(job, exc)
            return DEAD_LETTERED

    def publish(self, job: Job, exc: BaseException) -> None:
        attempts = job.prior_attempts + max(job.attempts, 1)
        headers = dead_letter_headers(job, exc, group=self.group.name, attempts=attempts)
        log.error("dead-lettering %s of group %s to %s after %d attempt(s): %s: %s", job.where(), self.group.name,
                  self.topic, attempts, fqcn(exc), error_message(exc)[:500],
                  extra={**message_fields(job, self.group.name), "dead_letter_topic": self.topic,
                         "error_class": fqcn(exc), "attempts": attempts})
        span = self._start_span(job, headers, exc, attempts)
        delay = self.RETRY_MIN_S
        try:
            while True:
                try:
                    self._send(job, headers)
                    self.resources.counters.add("dead_letters")
                    metrics = self.resources.metrics
                    if metrics is not None:
                        metrics.count("dead_lettered", metric_key(self.group.name, event_type_of(job)))
                    return
                except DeadLetterFailed as failed:
                    log.error("the dead letter of %s was not acknowledged (%s); trying again in %.1fs",
                              job.where(), redact(str(failed)), delay, extra=message_fields(job, self.group.name))
                    if span is not None:
                        span.add_event("retry", {"exception.message": redact(str(failed))[:300]})
                    job.lane.sleep(delay)  # raises Abandoned when the partition goes away meanwhile
                    delay = min(self.RETRY_MAX_S, delay * 2)
        except BaseException as error:
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            if span is not None:
                span.end()

    def _start_span(self, job: Job, headers: list[tuple[str, bytes]], exc: BaseException, attempts: int):
        """With tracing, a PRODUCER span for the dead letter, a child of the message's CONSUMER span
        (ended by now, but still the parent); its context replaces the original ``traceparent``
        in ``headers``, so the trace goes on into the dead-letter topic."""
        tracer = self.resources.tracer
        if tracer is None:
            return None
        if job.span is None:  # it failed before Tracing (a decode failure): its CONSUMER span, now
            job.span = failed_span(tracer, job, self.group.name, exc)
        attributes = {"messaging.system": "kafka", "messaging.operation.type": "send",
                      "messaging.operation.name": "send", "messaging.destination.name": self.topic,
                      "messaging.consumer.group.name": self.group.name, "events.event_type": event_type_of(job),
                      "events.attempts": attempts, "exception.type": fqcn(exc)}
        if job.event is not None:
            attributes["messaging.message.id"] = job.event.event_id
        key = job.message.key()
        if key is not None:
            attributes["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
        span = tracer.start_span(f"send {self.topic}", context=set_span_in_context(job.span), kind=SpanKind.PRODUCER,
                                 attributes=attributes)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=set_span_in_context(span))
        headers[:] = [(k, v) for k, v in headers if k not in (H.TRACEPARENT, H.TRACESTATE)]
        headers += [(k, v.encode()) for k, v in carrier.items() if k in (H.TRACEPARENT, H.TRACESTATE)]
        return span

    def _send(self, job: Job, headers: list[tuple[str, bytes]]) -> None:
        producer = self.resources.producer()
        acked = threading.Event()
        result: list = []

        def on_delivery(err, _msg):
            result.append(err)
            acked.set()

        msg = job.message
        try:
            producer.produce(self.topic, value=msg.value(), key=msg.key(), headers=headers, on_delivery=on_delivery)
        except BufferError as exc:
            raise DeadLetterFailed(f"the producer's queue is full: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - KafkaException: the message cannot be sent at all
            raise DeadLetterFailed(str(exc)) from exc
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while not acked.is_set():
            if time.monotonic() > deadline:
                raise DeadLetterFailed(f"no acknowledgement within {DELIVERY_TIMEOUT_S:.0f}s")
            producer.poll(0.05)  # serves delivery reports (any thread's; each sets its own event)
        if result[0] is not None:
            raise DeadLetterFailed(str(result[0]))
