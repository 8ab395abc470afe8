"""DeadLetters: the branch every final failure takes.

Whatever escapes the rest of the pipeline (a decode error, a rejected message, retries spent) is
published to the group's dead-letter topic ``<prefix>.dlq.<group>``: the original key and value
bytes unchanged, the original headers, and headers that say where it came from and why it failed,
under our names and under Spring Kafka's ``kafka_dlt-*`` names (partition as a 4-byte big-endian
int, offset and timestamp as 8-byte big-endian longs, as Spring's ``DeadLetterPublishingRecoverer``
writes them), so existing Kafka tooling reads our dead letters.

A dead letter is always writable: it is fitted to the largest record both the dead-letter producer
(``message.max.bytes``) and the dead-letter topic (``max.message.bytes``) take
(``Resources.dead_letter_max_bytes``). Our headers are cut first (the stack trace is written once,
under Spring's name, and shortened); when even then the original value does not fit, the letter goes
without it and says so in ``dlq-original-omitted`` (its size, and where the original still is);
then without the original's headers too. A letter the broker still refuses for its size is fitted
again, smaller; one that cannot be made small enough (a topic limit of a few hundred bytes) is
logged and passed over: a dead letter never holds up its partition for its size.

The message counts as done only once the broker has acknowledged the dead letter. A dead letter in
flight is waited for even when its partition is revoked meanwhile (abandoning it would make the next
owner publish a second copy of a letter that is, almost always, acknowledged a moment later). A
dead letter the broker refuses for another reason (unreachable, not authorised) is tried again with
backoff until it is taken, or until the partition is revoked or the consumer stops (then the message
is left unfinished and redelivered to the next owner). A member killed between the acknowledgement
and its commit leaves the next owner to publish the letter again: dead letters are at least once,
told apart by their origin headers. A failure of a job on the poll loop's thread (``Job.inline``) is
not published there: the job goes to a worker (``HandOff``), whose pipeline decodes it again and does.

The step owns its producer: made with the step (``Resources.dead_letter_producer``), so that
librdkafka refuses a wrong property before the group joins; served by the poll loop (``poll``); and
flushed and dropped by ``close()``, so that no Kafka client outlives the group.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from datetime import UTC, datetime
from functools import partial
from typing import NamedTuple

from confluent_kafka import KafkaError, KafkaException, Producer

from dify_events.producers.headers import trace_headers
from dify_events.producers.sizes import record_size
from dify_events.schemas import headers as H

from ..config import group_id
from ..errors import DeadLetterFailed
from ..job import DEAD_LETTERED, NOT_DEAD_LETTERED, Abandoned, HandOff, Job
from ..observers import emit
from ..redact import error_message, error_traceback, fqcn, redact
from ..telemetry.fields import message_fields
from .step import CallNext, Resources, Step

log = logging.getLogger("consumers.dead_letters")

STACKTRACE_MAX_BYTES = 8 * 1024
MESSAGE_MAX_BYTES = 2 * 1024
STACKTRACE_MIN_BYTES = 256  # a shorter cut of a stack trace says nothing: left out instead
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
ERROR_STACKTRACE = "dlq-error-stacktrace"  # written by earlier versions; the stack trace is Spring's header now
ATTEMPTS = "dlq-attempts"
FAILED_AT = "dlq-failed-at"
ORIGINAL_OMITTED = "dlq-original-omitted"  # the letter lacks the original value (and headers): why, where it is
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
                             ORIGINAL_OMITTED, DLT_ORIGINAL_CONSUMER_GROUP, DLT_EXCEPTION_FQCN, DLT_EXCEPTION_MESSAGE,
                             DLT_EXCEPTION_STACKTRACE, DLT_EXCEPTION_CAUSE_FQCN})
# the original headers a letter without the original's headers still keeps: the SDK's, all small
TRACE_HEADERS = (H.TRACEPARENT, H.TRACESTATE)
SDK_HEADERS = frozenset({H.EVENT_TYPE, H.EVENT_ID, H.IDEMPOTENCY_KEY, H.OCCURRED_AT, H.CONTENT_TYPE, H.TRACEPARENT,
                         H.TRACESTATE, H.ATTEMPT})
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
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


def dead_letter_headers(job: Job, exc: BaseException, *, group: str, group_id: str, attempts: int,
                        now: datetime | None = None) -> list[tuple[str, bytes]]:
    """The original headers (less earlier failure headers), then the origin and failure headers;
    the stack trace last (``fit_letter`` shortens it first). ``group`` is the group's name,
    ``group_id`` its Kafka group id (Spring's ``kafka_dlt-original-consumer-group``). The error's
    message and stack trace are redacted (``consumers.redact``): no credentials, and no event data
    (pydantic's input values, SQL parameters)."""
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
    error_class = fqcn(exc).encode()
    headers += [
        (GROUP, group.encode()),
        (HANDLER, handler.encode()),
        (ERROR_CLASS, error_class),
        (ERROR_MESSAGE, message_bytes),
        (ATTEMPTS, str(attempts).encode()),
        (FAILED_AT, failed_at.encode()),
        (DLT_ORIGINAL_CONSUMER_GROUP, group_id.encode()),
        (DLT_EXCEPTION_FQCN, error_class),
        (DLT_EXCEPTION_MESSAGE, message_bytes),
    ]
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        headers.append((DLT_EXCEPTION_CAUSE_FQCN, fqcn(cause).encode()))
    headers.append((DLT_EXCEPTION_STACKTRACE, bounded(stack, STACKTRACE_MAX_BYTES, keep="tail")))
    return headers


class Letter(NamedTuple):
    """A dead letter as it is sent: its key, its value (None when left out) and its headers."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def size(self) -> int:
        return record_size(self.key, self.value, self.headers)


def fit_letter(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], limit: int, *,
               origin: str) -> Letter | None:
    """The fullest letter of at most ``limit`` bytes (``producers.sizes.record_size``), or None
    when not even the smallest fits. In order: everything; the stack trace cut to the room left
    (left out below ``STACKTRACE_MIN_BYTES``); without the original value, saying so in
    ``dlq-original-omitted`` with ``origin``; without the original's own headers as well (the SDK's
    are kept); without the key."""
    stack = [v for k, v in headers if k == DLT_EXCEPTION_STACKTRACE]
    rest = [(k, v) for k, v in headers if k != DLT_EXCEPTION_STACKTRACE]
    value_size = len(value or b"")
    ours = ORIGIN_HEADERS | FAILURE_HEADERS | SDK_HEADERS
    candidates = [
        Letter(key, value, list(rest)),
        Letter(key, None, rest + [(ORIGINAL_OMITTED, f"value too large ({value_size} bytes); still at {origin}"
                                   .encode())]),
        Letter(key, None, [(k, v) for k, v in rest if k in ours] + [
            (ORIGINAL_OMITTED, f"value and headers too large ({value_size} bytes of value); still at {origin}"
             .encode())]),
        Letter(None, None, [(k, v) for k, v in rest if k in ORIGIN_HEADERS | {ERROR_CLASS, GROUP}] + [
            (ORIGINAL_OMITTED, f"key, value and headers too large; still at {origin}".encode())]),
    ]
    for letter in candidates:
        room = limit - letter.size
        if room < 0:
            continue
        room -= len(DLT_EXCEPTION_STACKTRACE) + 4  # the stack trace header's name and its two varints
        if stack and room >= min(len(stack[0]), STACKTRACE_MIN_BYTES):
            cut = stack[0] if len(stack[0]) <= room else bounded(stack[0].decode("utf-8", "replace"), room,
                                                                 keep="tail")
            letter.headers.append((DLT_EXCEPTION_STACKTRACE, cut))
        return letter
    return None


class DeadLetters(Step):
    """Publishes what fails for good, and waits for the broker's acknowledgement."""

    options = {}
    RETRY_MIN_S = 0.5
    RETRY_MAX_S = 30.0

    def __init__(self, resources: Resources):
        super().__init__(resources)
        self.topic = self.group.dlq_topic(resources.prefix)
        self.group_id = group_id(resources.prefix, self.group.name)
        if resources.dead_letter_producer is None:
            raise ValueError(f"group {self.group.name}: DeadLetters needs a dead_letter_producer")
        self.producer: Producer | None = resources.dead_letter_producer()
        observers = resources.observers
        self.around = observers.around_dead_letter
        self.after_dead_letter, self.after_refused = observers.after_dead_letter, observers.after_dead_letter_refused

    def poll(self) -> None:
        producer = self.producer
        if producer is not None:
            producer.poll(0)

    def close(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.flush(10)  # then dropped: destroyed now (its threads joined), not whenever the step is

    def process(self, job: Job, call_next: CallNext) -> str:
        try:
            return call_next(job)
        except Exception as exc:  # noqa: BLE001 - every failure ends here; Abandoned is a BaseException
            if job.inline:  # on the poll loop, which must not wait for the broker: a worker decodes it again
                raise HandOff() from None
            return DEAD_LETTERED if self.publish(job, exc) else NOT_DEAD_LETTERED

    def publish(self, job: Job, exc: BaseException) -> bool:
        """Sends the dead letter and waits for its acknowledgement: True. False when no letter of
        the message can be made small enough for the dead-letter topic (logged; the message is
        passed over). The observers' ``around_dead_letter`` wraps the sending, ``after_dead_letter``
        is told its result."""
        attempts = job.prior_attempts + max(job.attempts, 1)
        log.error("dead-lettering %s of group %s to %s after %d attempt(s): %s: %s", job.where(), self.group.name,
                  self.topic, attempts, fqcn(exc), error_message(exc)[:500],
                  extra={**message_fields(job, self.group.name), "dead_letter_topic": self.topic,
                         "error_class": fqcn(exc), "attempts": attempts})
        send = partial(self._send_letters, job, exc, attempts)
        for wrap in reversed(self.around):
            send = partial(wrap, job, exc, attempts, send)
        sent = send()
        emit(self.after_dead_letter, job, exc=exc, attempts=attempts, sent=sent)
        return sent

    def _send_letters(self, job: Job, exc: BaseException, attempts: int) -> bool:
        """Fits the letter to the topic and sends it until the broker takes it (``publish``)."""
        headers = dead_letter_headers(job, exc, group=self.group.name, group_id=self.group_id, attempts=attempts)
        current = [(k, v) for k, v in trace_headers() if k in TRACE_HEADERS]
        if current:  # a span is current (tracing's, for this letter): the trace goes on into the dead-letter topic
            headers = [(k, v) for k, v in headers if k not in TRACE_HEADERS] + current
        limit = self.resources.dead_letter_max_bytes
        delay = self.RETRY_MIN_S
        while True:
            letter = fit_letter(job.message.key(), job.message.value(), headers, limit, origin=job.where())
            if letter is None:
                log.error("%s of group %s is passed over without a dead letter: not even its smallest letter "
                          "fits %s (%d bytes at most); it stays in its partition until its retention ends",
                          job.where(), self.group.name, self.topic, limit,
                          extra=message_fields(job, self.group.name))
                return False
            try:
                self._send(letter)
                self.resources.counters.add("dead_letters")
                return True
            except LetterTooLarge as refused:  # the broker's limit is lower than we knew: a smaller letter
                log.warning("the dead letter of %s (%d bytes) was refused as too large (%s); sending a smaller "
                            "one", job.where(), letter.size, refused, extra=message_fields(job, self.group.name))
                limit = min(limit, letter.size) // 2
            except DeadLetterFailed as failed:
                log.error("the dead letter of %s was not acknowledged (%s); trying again in %.1fs",
                          job.where(), redact(str(failed)), delay, extra=message_fields(job, self.group.name))
                emit(self.after_refused, job, error=redact(str(failed)), retry_in_s=delay)
                job.lane.sleep(delay)  # raises Abandoned when the partition goes away meanwhile
                delay = min(self.RETRY_MAX_S, delay * 2)

    def _send(self, letter: Letter) -> None:
        producer = self.producer
        if producer is None:
            raise Abandoned(f"group {self.group.name} stopped")  # closed: the next owner sends it
        acked = threading.Event()
        result: list = []

        def on_delivery(err, _msg):
            result.append(err)
            acked.set()

        try:
            # ignore: confluent-kafka's stub wants list[tuple[str, str | bytes | None]], and lists are invariant
            producer.produce(self.topic, value=letter.value, key=letter.key, headers=letter.headers,  # type: ignore[arg-type]
                             on_delivery=on_delivery)
        except BufferError as exc:
            raise DeadLetterFailed(f"the producer's queue is full: {exc}") from exc
        except KafkaException as exc:  # the message cannot be sent at all
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            raise (LetterTooLarge if error is not None and error.code() in _TOO_LARGE else DeadLetterFailed)(
                str(exc)) from exc
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while not acked.is_set():
            if time.monotonic() > deadline:
                raise DeadLetterFailed(f"no acknowledgement within {DELIVERY_TIMEOUT_S:.0f}s")
            producer.poll(0.05)  # serves delivery reports (any thread's; each sets its own event)
        error = result[0]
        if error is not None:
            raise (LetterTooLarge if error.code() in _TOO_LARGE else DeadLetterFailed)(str(error))


class LetterTooLarge(DeadLetterFailed):
    """The producer or the broker refused the dead letter for its size."""
