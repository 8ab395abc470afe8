"""Test a consumer group's handlers without Kafka: the group's real pipeline, the real database.

``GroupHarness`` runs what a group's pod runs on each message (its own pipeline steps: decode,
tracing, retries, idempotency, time limits, dead letters) on events you give it, encoded and
headed as the producer SDK publishes them, and tells what became of each::

    from dify_events.consumers.testing import GroupHarness

    with GroupHarness(group, "sqlite:///test.db", create_tables=True) as harness:
        assert harness.send(AppWasCreated(tenant_id="t1", app_id="a1", ...)).handled
        with harness.session() as session:
            ...  # the handler's effects, committed
        assert harness.send(same_event).duplicate
        results = harness.send_batch([event_1, event_2, event_3])  # as a worker takes them under a backlog

What is not the runtime's: there is no broker, no poll loop and no worker thread. Messages are
processed one at a time on the caller's thread, in the order sent. Dead letters are recorded
(``Result.dead_letter``, ``GroupHarness.dead_letters``) instead of produced; retry backoffs are
recorded (``Result.backoffs``) instead of slept. A message whose failures the outage breaker takes
for a dependency outage would wait in the runtime for the dependency: here it ends ``abandoned``
(not finished; the runtime would deliver it again), and the group stays paused for the breaker's
backoff, as the runtime's would, so later messages end ``abandoned`` too until it closes.
``send_batch`` runs events as one batch (``consumers.pipeline.batch``), then those that left it one
by one, in order (the runtime may batch those again).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dify_events.producers.headers import Headers, epoch_millis, event_headers, static_headers
from dify_events.schemas import headers as H
from dify_events.schemas.codec import AvroCodec
from dify_events.schemas.events import Event

from .breaker import OutageBreaker
from .group import ConsumerGroup
from .idempotency import make_engine
from .job import ABANDONED, DEAD_LETTERED, DUPLICATE, HANDLED, PASSED, Abandoned, Job, Lane
from .observers import Observer, Observers, emit
from .pipeline import Resources, build
from .pipeline import dead_letters as DL
from .pipeline.batch import BatchRunner
from .runner import EVENT_TYPE_NAME
from .tables import require_tables
from .telemetry import observers as telemetry_observers

__all__ = ["DeadLetter", "GroupHarness", "Message", "Result"]

TIMESTAMP_CREATE_TIME = 1  # confluent_kafka.TIMESTAMP_CREATE_TIME


class Message:
    """A fetched record: the part of ``confluent_kafka.Message`` the runtime reads."""

    __slots__ = ("_topic", "_partition", "_offset", "_key", "_value", "_headers", "_timestamp")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None, timestamp_ms: int):
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers = key, value, headers
        self._timestamp = timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self._timestamp

    def error(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"Message({self._topic}[{self._partition}]@{self._offset})"


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter the group would have published: to ``topic``, with the original key and value
    (``None`` when left out for its size) and the dead-letter headers (``consumers.pipeline.dead_letters``)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        """The header's (last) value as text, or None."""
        values = [v for k, v in self.headers if k == name]
        return values[-1].decode("utf-8", "replace") if values else None

    @property
    def error_class(self) -> str:
        return self.header(DL.ERROR_CLASS) or ""

    @property
    def reason(self) -> str:
        """``<error class>: <error message>``, as the headers say it."""
        return f"{self.error_class}: {self.header(DL.ERROR_MESSAGE) or ''}"


@dataclass(frozen=True)
class Result:
    """What became of one message: ``outcome`` is one of ``consumers.job``'s (``handled``,
    ``duplicate``, ``dead_lettered``, ``passed``, ``abandoned``, ``not_dead_lettered``).
    ``attempts``: the attempts ``Retries`` made, a duplicate's one included (0 when the message
    never reached it: not decoded, passed over). ``backoffs``: the waits between
    attempts the runtime would have slept."""

    outcome: str
    message: Message
    event: Event | None = None
    attempts: int = 0
    backoffs: tuple[float, ...] = ()
    dead_letter: DeadLetter | None = None
    batched: bool = False  # finished in a batch's transaction (``GroupHarness.send_batch``)

    @property
    def handled(self) -> bool:
        return self.outcome == HANDLED

    @property
    def duplicate(self) -> bool:
        return self.outcome == DUPLICATE

    @property
    def dead_lettered(self) -> bool:
        return self.outcome == DEAD_LETTERED

    @property
    def passed(self) -> bool:
        """An event type the group does not handle: passed over without decoding."""
        return self.outcome == PASSED

    @property
    def abandoned(self) -> bool:
        return self.outcome == ABANDONED

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)


class _RecordingProducer:
    """Stands in for the dead-letter producer: records what ``DeadLetters`` produces and acknowledges it."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self._unacknowledged: list[Callable[[Any, Any], None]] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                headers: list[tuple[str, bytes]] | None = None,
                on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        self.letters.append(DeadLetter(topic, key, value, list(headers or ())))
        if on_delivery is not None:
            self._unacknowledged.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        acknowledged, self._unacknowledged = self._unacknowledged, []
        for on_delivery in acknowledged:
            on_delivery(None, None)
        return len(acknowledged)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


class _InstantLane(Lane):
    """A partition whose waits take no time: a backoff is recorded; a wait for an open outage
    breaker abandons the message (the runtime would hold it until the dependency is back)."""

    __slots__ = ("breaker", "backoffs")

    def __init__(self, topic: str, partition: int, breaker: OutageBreaker):
        super().__init__(topic, partition)
        self.breaker = breaker
        self.backoffs: list[float] = []

    def sleep(self, seconds: float) -> None:
        if self.breaker.is_open():
            raise Abandoned(f"{self.topic}[{self.partition}]: the group pauses for a dependency outage "
                            f"({self.breaker.last_reason})")
        self.backoffs.append(seconds)


class GroupHarness:
    """Runs ``group``'s pipeline on messages given to it, with the database at ``database_url``
    (the group's own ``database_url`` is not used).

    ``create_tables``: create the group's ``tables`` when missing (else they must exist, as
    ``events run`` requires). ``prefix``: the topic prefix (the group's topics' names).
    ``tracer_provider``: OpenTelemetry's, to test tracing (``None``: the global one, if set).
    ``meter_provider``: OpenTelemetry's, to test the group's metrics (``None``: none, not the global one).
    ``observers``: more of what watches the messages (``consumers.observers``), told as the runtime tells them.
    Use it as a context manager, or call ``close()``.
    """

    def __init__(self, group: ConsumerGroup, database_url: str, *, create_tables: bool = False,
                 prefix: str = "events", tracer_provider: Any = None, meter_provider: Any = None,
                 observers: Sequence[Observer] = ()):
        if not group.handlers:
            raise ValueError(f"group {group.name!r} has no handlers")
        self.group = group
        self.prefix = prefix
        self._producer = _RecordingProducer()
        self.dead_letters: list[DeadLetter] = self._producer.letters  # every dead letter, in order
        self._codec = AvroCodec(group.catalogue)
        self._handlers = {t.encode(): h for t, h in group.handlers.items()}
        self._offsets: dict[tuple[str, int], itertools.count] = {}
        # as ``GroupRunner._start`` makes them, for one worker and without purging
        self.engine: Engine = make_engine(database_url, pool_size=2)  # the tables', and ``session()``'s
        observing = [*telemetry_observers(group.name, dead_letter_topic=group.dlq_topic(prefix),
                                          tracer_provider=tracer_provider, meter_provider=meter_provider,
                                          global_meter=False), *observers]
        self.resources = Resources(group=group, prefix=prefix, codec=self._codec, breaker=OutageBreaker.of(group, 1),
                                   database_url=database_url, dead_letter_producer=lambda: cast(Any, self._producer),
                                   observers=Observers.of(observing))
        try:
            if create_tables and group.tables:
                group.tables[0].metadata.create_all(self.engine, tables=list(group.tables), checkfirst=True)
            require_tables(self.engine, group.tables, group=group.name)
            self._chain, self._steps = build(self.resources, group.pipeline)
            self.batch_runner = BatchRunner.of(self.resources, self._steps, group.option("batch_max"))
        except BaseException:
            self.engine.dispose()
            raise

    # -- sending ------------------------------------------------------------------------------
    def send(self, event: Event, *, key: str | None = None, idempotency_key: str | None = None,
             headers: Mapping[str, str | bytes] | None = None, partition: int = 0) -> Result:
        """Processes ``event`` as published by the producer SDK (its Avro bytes, its headers, its
        topic and key; ``key``, ``idempotency_key`` and extra ``headers`` as ``publish`` takes them)."""
        return self._process(*self._message_of(event, key, idempotency_key, headers, partition))

    def send_raw(self, value: bytes | None, *, headers: Iterable[tuple[str, str | bytes]] = (),
                 key: bytes | None = None, topic: str | None = None, partition: int = 0) -> Result:
        """Processes a message of your own making: any bytes, any headers (poison, a tombstone, a
        message from another producer). ``topic`` defaults to the group's first domain topic."""
        raw: Headers = [(name, v.encode() if isinstance(v, str) else bytes(v)) for name, v in headers]
        return self._process(topic or self.group.domain_topics(self.prefix)[0], partition, key, value, raw,
                             int(time.time() * 1000))

    def send_batch(self, events: Iterable[Event]) -> list[Result]:
        """Processes ``events`` (each as ``send`` would) as one batch: in one transaction, each in a
        savepoint; then those that left the batch, one by one in order. Results in the events' order."""
        if self.batch_runner is None:
            raise ValueError(f"group {self.group.name!r} does not batch (batch_max 1, no idempotent batched handler, "
                             "or a pipeline of its own): use send()")
        made = [self._job(*self._message_of(event)) for event in events]
        jobs = [job for job in made if isinstance(job, Job)]
        finished, _ = self.batch_runner.run(jobs)
        in_batch = {id(job): outcome for job, outcome in finished}
        for done, outcome in finished:  # as the runner reports them, after the commit
            emit(self.resources.observers.after_message, done, outcome)
        results = []
        for job in made:
            if isinstance(job, Result):  # passed over
                results.append(job)
            elif id(job) in in_batch:
                results.append(Result(in_batch[id(job)], cast(Message, job.message), job.event, job.attempts,
                                      batched=True))
            else:  # left the batch: alone, as the per-event path runs it
                results.append(self._run(job))
        return results

    def _message_of(self, event: Event, key: str | None = None, idempotency_key: str | None = None,
                    headers: Mapping[str, str | bytes] | None = None,
                    partition: int = 0) -> tuple[str, int, bytes | None, bytes, Headers, int]:
        spec = self.group.catalogue.for_event(event)
        value = self._codec.encode(event)
        message_headers = event_headers(static_headers(spec), event, idempotency_key, headers)
        key = getattr(event, spec.key_field) if key is None else key
        return (spec.topic(self.prefix), partition, key.encode() if key is not None else None, value,
                message_headers, epoch_millis(event.occurred_at))

    def _process(self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Headers,
                 timestamp_ms: int) -> Result:
        job = self._job(topic, partition, key, value, headers, timestamp_ms)
        return job if isinstance(job, Result) else self._run(job)

    def _job(self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Headers,
             timestamp_ms: int) -> Job | Result:
        offset = next(self._offsets.setdefault((topic, partition), itertools.count()))
        message = Message(topic, partition, offset, key, value, headers or None, timestamp_ms)
        # the poll loop's part (``GroupRunner._accept``): pass over other event types by their header
        event_type = next((v for name, v in reversed(headers) if name == H.EVENT_TYPE), None)
        handler = self._handlers.get(event_type) if event_type is not None else None
        if handler is None and event_type is not None and EVENT_TYPE_NAME.match(event_type):
            return Result(PASSED, message)
        lane = _InstantLane(topic, partition, self.resources.breaker)
        # ignore the type: ours has every method of confluent_kafka.Message the pipeline reads
        return Job(cast(Any, message), lane, offset, message.headers(), event_type, handler)

    def _run(self, job: Job) -> Result:
        message, lane = cast(Message, job.message), cast(_InstantLane, job.lane)
        before = len(self.dead_letters)
        try:
            outcome = self._chain(job)
        except Abandoned:
            outcome = ABANDONED
        emit(self.resources.observers.after_message, job, outcome)
        letter = self.dead_letters[-1] if len(self.dead_letters) > before else None
        return Result(outcome, message, job.event, job.attempts, tuple(lane.backoffs), letter)

    # -- reading the database -----------------------------------------------------------------
    def session(self) -> Session:
        """A new session on the group's database, to look at what the handlers wrote."""
        return Session(self.engine, expire_on_commit=False)

    # -- closing ------------------------------------------------------------------------------
    def close(self) -> None:
        for step in self._steps:
            step.close()
        self.engine.dispose()

    def __enter__(self) -> GroupHarness:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
