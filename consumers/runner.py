"""Runs one consumer group: the poll loop, the workers, offsets, pauses, health, shutdown.

The poll loop (the thread that calls ``run()``) is the only thread that touches the Kafka consumer.
It fetches in batches, passes over event types the group does not handle (by header, without
decoding), and hands the rest to a ``KeyedDispatcher``: up to ``concurrency`` messages at once on
worker threads, never two with the same key at once (an ``inline`` group runs them on the loop's own
thread first, ``_run_inline``). Workers report each finished message through
a queue; the loop moves each partition's watermark (``offsets.py``) and *stores* it; librdkafka's
auto-commit commits stored offsets every second, off the hot path. Once a second, a partition with
nothing pending moves to the consumer's position, past transaction markers no handler sees. On
revocation the loop waits for the revoked partitions' running messages (briefly), commits their
watermarks synchronously and drops them; on shutdown it stops fetching, drains within
``drain_timeout_s``, commits, and closes (leaving the group).

Partitions are paused (fetching stops, polling goes on, so the consumer stays in the group) while
the in-flight buffer is full, while the outage breaker is open, and while shutting down.
"""

from __future__ import annotations

import gc
import logging
import re
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, ClassVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from dify_events.producers.config import producer_config
from dify_events.producers.sizes import DEFAULT_MESSAGE_MAX_BYTES, largest_record
from dify_events.schemas import headers as H
from dify_events.schemas.codec import AvroCodec
from dify_events.schemas.errors import TopicsError
from dify_events.schemas.settings import Settings, get_settings
from dify_events.schemas.topics import Admin, cluster_metadata, topic_config

from .breaker import OutageBreaker
from .config import LIBRDKAFKA_LOG, consumer_config, group_id
from .dispatcher import KeyedDispatcher
from .errors import ConsumerError
from .group import ORDERED, SHARED, ConsumerGroup, Delivery
from .health import HealthServer
from .idempotency import make_engine
from .job import ABANDONED, PASSED, Abandoned, HandOff, Job, Lane
from .observers import Observer, Observers, emit
from .offsets import OffsetTracker
from .pipeline import DEFAULT_PIPELINE, Resources, Step, build
from .pipeline.batch import BatchRunner
from .stop_event import StopEvent
from .tables import require_tables
from .telemetry import lag as lag_of
from .telemetry import observers as telemetry_observers
from .telemetry.fields import message_fields

log = logging.getLogger("consumers.runner")

EVENT_TYPE_NAME = re.compile(rb"^[a-z][a-z0-9_]{0,99}$")
LIVENESS_WINDOW_S = 60.0
BUFFER_WAIT_S = 1.0  # how long a full buffer may keep the loop from polling before partitions pause
CLUSTER_PROBE_S = 5.0     # how long one attempt to reach the cluster at start waits for an answer
CLUSTER_WAIT_MIN_S = 1.0  # the pause after the first failed attempt; it doubles up to the max
CLUSTER_WAIT_MAX_S = 30.0
CATCH_UP_INTERVAL_S = 1.0  # how often idle partitions' positions move past transaction markers (auto-commit's pace)
INLINE_BUDGET_S = 1.0  # inline: the loop's time on one fetch's handlers, after which the rest go to the workers
# How long a thread may hold the GIL before CPython asks it to hand over (default 5 ms). The poll
# loop and the workers hand messages to each other; at 5 ms they spend most of their time taking
# the GIL from each other (bench: 10,400 ev/s, ~100 µs CPU/event, no-op handler, 8 workers, 2
# cores); at 50 ms 31,000-39,000 ev/s, ~30 µs, with publish->handler latency unchanged or better.
# Handlers waiting on I/O (the database, HTTP) release the GIL whatever this is.
SWITCH_INTERVAL_S = 0.05
GC_THRESHOLD = (10_000, 10, 10)  # CPython's default is (700, 10, 10)
_frozen = False


def tune_interpreter() -> None:
    """Sets CPython up for the runner's threads, whoever starts it (``events run`` or an application
    that embeds ``GroupRunner``): the switch interval above, and a collector that leaves start-up's
    objects alone. The objects loaded so far (modules, schemas, models) live as long as the process:
    frozen once per process, the collector stops walking them again and again (its full passes were
    the 20-40 ms latency tail). Idempotent."""
    global _frozen
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.set_threshold(*GC_THRESHOLD)
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


class GroupRunner:
    """Runs ``group`` until ``stop()`` (thread- and signal-safe) or a fatal Kafka error.

    ``health_port``: ``None`` takes the settings' port, ``0`` serves no health endpoints.
    ``consumer_overrides``: librdkafka properties over the settings' (tests, benchmarks).
    ``consumer_factory``: makes the Kafka consumer from its librdkafka configuration (a test's or a
    tool's wrapper around ``confluent_kafka.Consumer``, which is the default).
    ``batch_max``: most idempotent events per transaction (1: one each), over the settings' (``EVENTS_BATCH_MAX``),
    over the group's option.
    ``tracer_provider`` / ``meter_provider``: OpenTelemetry's; ``None`` takes the global one when
    one is set, else that telemetry is off (``consumers.telemetry``).
    ``observers``: more of what watches the group's messages and pauses (``consumers.observers``).
    ``inline``: first attempts on the poll loop's thread (``_run_inline``), over the settings' (``EVENTS_INLINE``),
    over the group's option; a group with a pipeline of its own runs on the workers (with a warning).
    Starting a runner tunes the whole process's interpreter (``tune_interpreter``).
    """

    delivery: ClassVar[Delivery] = ORDERED  # the groups it runs

    def __init__(self, group: ConsumerGroup, *, settings: Settings | None = None, concurrency: int | None = None,
                 health_port: int | None = None, consumer_overrides: dict[str, Any] | None = None,
                 batch_size: int = 500, max_buffered: int | None = None, poll_timeout_s: float = 0.1,
                 revoke_timeout_s: float = 10.0, create_topics: bool = True,
                 idempotency_retention: timedelta = timedelta(days=7), purge_interval_s: float = 3600.0,
                 tracer_provider: Any = None, meter_provider: Any = None, batch_max: int | None = None,
                 consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
                 observers: Sequence[Observer] = (), inline: bool | None = None):
        if not group.handlers:
            raise ValueError(f"group {group.name!r} has no handlers")
        if group.delivery != self.delivery:
            raise ValueError(f"group {group.name!r} has delivery={group.delivery!r}, which {type(self).__name__} "
                             "does not run: take the runner consumers.runners.runner_class(group) gives")
        self.group = group
        self.settings = settings or get_settings()
        self.prefix = self.settings.topic_prefix
        self.concurrency = concurrency or self.settings.concurrency
        self.health_port = self.settings.health_port if health_port is None else health_port
        self.consumer_overrides = consumer_overrides or {}
        self.consumer_factory = consumer_factory
        self.batch_size = batch_size
        self.batch_max = batch_max or self.settings.batch_max or group.option("batch_max")
        self.inline = next(on for on in (inline, self.settings.inline, group.option("inline")) if on is not None)
        if self.inline and self.delivery == ORDERED and list(group.pipeline) != DEFAULT_PIPELINE:
            log.warning("group %s has a pipeline of its own, so its handlers run on the workers, not inline (only the "
                        "default pipeline's steps hand a message that must wait over to a worker)", group.name)
            self.inline = False
        self.max_buffered = max_buffered or max(2000, self.concurrency * 200)
        self.max_uncommitted = self.max_buffered * 20
        self.poll_timeout_s = poll_timeout_s
        self.revoke_timeout_s = min(revoke_timeout_s, self.settings.drain_timeout_s)
        self.create_topics = create_topics
        self.idempotency_retention = idempotency_retention
        self.purge_interval_s = purge_interval_s
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.observers = list(observers)
        self.lag: dict[tuple[str, int], int] = {}    # (topic, partition) -> lag, replaced whole each time
        self.group_id = group_id(self.prefix, group.name)

        self.outcomes: Counter[str] = Counter()
        self.pauses = 0
        self.outage_pauses = 0
        self.last_loop = 0.0
        self.joined = False
        self.started = threading.Event()   # set once the consumer has subscribed
        self.finished = threading.Event()  # set when run() returns
        self.health: HealthServer | None = None

        self._stop = StopEvent()  # set by signal handlers (events run's): threading.Event's set() can deadlock there
        self._stopping = False
        self._closing = False
        self._consumer: Consumer | None = None
        self._lanes: dict[tuple[str, int], Lane] = {}
        self._tracker = OffsetTracker()
        self._completions: deque[tuple[Lane, int, str]] = deque()
        self._paused = False
        self._buffer_full = False
        self._repause = False
        self._steps: list[Step] = []
        self._pollers: list[Callable[[], None]] = []  # the steps' that serve Kafka clients (``Step.poll``)
        self._handlers = {t.encode(): h for t, h in group.handlers.items()}
        self._after_message: tuple[Callable[[Job, str], None], ...] = ()  # the observers' (``_make_pipeline``)
        self.resources: Resources | None = None
        self.batch_runner: BatchRunner | None = None  # set in _start when the group's events are batched
        self._inline_types: set[bytes] = set()  # the event types whose first attempts run on the loop (inline)

    # -- control ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Asks the loop to stop: drain, commit, leave the group. Safe from signal handlers."""
        self._stop.set()

    def is_live(self) -> bool:
        return not self.finished.is_set() and time.monotonic() - self.last_loop < LIVENESS_WINDOW_S

    def is_ready(self) -> bool:
        return self.joined and not self._stopping

    def status(self) -> dict[str, Any]:
        return {"group": self.group.name, "joined": self.joined, "paused": self._paused,
                "assigned": len(self._lanes), "in_flight": self.in_flight, **self.stats()}

    @property
    def in_flight(self) -> int:
        return self._dispatcher.pending if hasattr(self, "_dispatcher") else 0

    def stats(self) -> dict[str, int]:
        counters = self.resources.counters if self.resources else None
        return {"handled": self.outcomes["handled"], "duplicates": self.outcomes["duplicate"],
                "dead_lettered": self.outcomes["dead_lettered"], "passed": self.outcomes[PASSED],
                "abandoned": self.outcomes[ABANDONED], "retries": counters.retries if counters else 0,
                "pauses": self.pauses, "outage_pauses": self.outage_pauses}

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            if self._start():
                self._loop()
        finally:
            try:
                self._shutdown()
            finally:
                self.finished.set()

    def _start(self) -> bool:
        """Everything up to the subscription; False when stopped while waiting for the cluster.
        What can be refused (a librdkafka property, the database, a missing table) is refused before
        anything is created on the cluster: the consumer, then the pipeline's steps, each making what
        it alone uses (``Idempotency`` its engine and table, ``DeadLetters`` its producer)."""
        group = self.group
        database_url = self._database()
        # librdkafka refuses a wrong property when a client is made: the consumer (and, in the
        # pipeline, the dead-letter producer) before any topic
        conf = consumer_config(self.settings, group.name, {**self.consumer_overrides, "error_cb": self._on_error})
        self._consumer = self.consumer_factory(conf)
        resources = self._make_pipeline(database_url)
        batch_runner = self.batch_runner = BatchRunner.of(resources, self._steps, self.batch_max)
        if batch_runner is None:
            self._dispatcher = KeyedDispatcher(self._process, workers=self.concurrency, name=f"events-{group.name}")
        else:
            self._dispatcher = KeyedDispatcher(self._process, workers=self.concurrency, name=f"events-{group.name}",
                                               process_batch=self._process_batch, batch_max=self.batch_max,
                                               batchable=batch_runner.batchable)
        self._dispatcher.start()
        self._hand_over = self._run_inline if self.inline else self._dispatcher.submit
        if self.inline:  # not a handler with a time limit (its watchdog would interrupt the loop) nor a batched one
            batched = batch_runner.batched_types if batch_runner is not None else ()
            self._inline_types = {t for t, h in self._handlers.items()
                                  if not h.option("time_limit_s") and h.event_type not in batched}
        admin = self._reach_cluster()
        if admin is None:
            return False
        resources.dead_letter_max_bytes = self._dead_letter_limit(admin)
        topics = group.topics(self.prefix)
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        self.last_loop = time.monotonic()
        log.info("group %s (consumer group %s) subscribed to %s with %d workers%s", group.name, self.group_id,
                 ", ".join(topics), self.concurrency, ", inline" if self.inline else "")
        tune_interpreter()  # last: what start-up made (the cluster's metadata, the topics file) is frozen too
        self.started.set()
        emit(resources.observers.after_start, self)
        return True

    def _loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None  # _start made it
        poll, consume = consumer.poll, consumer.consume
        accept, drain, reconcile = self._accept, self._drain, self._reconcile
        batch = self.batch_size - 1
        timeout = self.poll_timeout_s
        stop = self._stop
        assert self.resources is not None  # _start made them
        measure_lag = self.resources.observers.needs_lag
        next_lag = next_catch_up = 0.0
        pollers = self._pollers
        while not stop.is_set():
            first = poll(timeout)
            if first is not None:
                msgs = consume(batch, 0)
                msgs.insert(0, first)
                accept(msgs)
            self.last_loop = now = time.monotonic()
            drain()  # also stores the positions that passing over moved
            if now >= next_catch_up:
                next_catch_up = now + CATCH_UP_INTERVAL_S
                self._catch_up()  # the next drain stores what it moved
            reconcile()
            for serve in pollers:  # the steps' clients: their log lines and delivery reports, when they happen
                serve()
            if measure_lag and now >= next_lag:
                next_lag = now + lag_of.LAG_INTERVAL_S
                self.lag = lag_of.measure(consumer, self._lanes)

    # -- the hot path -------------------------------------------------------------------------
    def _accept(self, msgs: list) -> None:
        lanes = self._lanes
        handlers = self._handlers
        valid = EVENT_TYPE_NAME.match
        event_type_header = H.EVENT_TYPE
        items = []
        passed = 0
        for m in msgs:
            if m.error() is not None:
                self._on_message_error(m)
                continue
            lane = lanes.get((m.topic(), m.partition()))
            if lane is None:
                continue  # fetched before a revocation: the partition's next owner handles it
            offset = m.offset()
            offsets = lane.offsets
            if not offsets.fetched(offset):
                continue  # delivered again (not expected): it is on its way already
            raw = m.headers()
            event_type = None
            if raw:
                for name, value in raw:
                    if name == event_type_header:
                        event_type = value
            handler = handlers.get(event_type) if event_type is not None else None
            if handler is None and event_type is not None and valid(event_type):
                offsets.finish(offset)  # not this group's event type: passed over, done
                passed += 1
                continue
            lane.outstanding += 1
            key = m.key()
            items.append((lane if key is None else key, Job(m, lane, offset, raw, event_type, handler)))
        if passed:
            self.outcomes[PASSED] += passed
        if items:
            self._hand_over(items)

    def _run_inline(self, items: list[tuple[Any, Job]]) -> None:
        """On the poll loop (inline groups): runs each job here, unless its key has jobs on the workers, its
        handler has a time limit or is batched, or the loop has spent ``INLINE_BUDGET_S`` on this fetch; those
        go to the workers, behind their key's. A job that must wait (a retry, an outage, a dead letter) goes
        there with its first attempt's failure (``HandOff``). The thread hand-offs of the worker path cost
        more than a handler that does not wait (docs/consumers.md)."""
        holds, submit = self._dispatcher.holds, self._dispatcher.submit
        here = self._inline_types
        outcome_of, report = self._outcome, self._report
        deadline = time.monotonic() + INLINE_BUDGET_S
        workers: list[tuple[Any, Job]] = []  # for the workers: submitted together, before the next job runs here
        for item in items:
            key, job = item
            if job.raw_event_type in here and time.monotonic() <= deadline:
                if workers:
                    submit(workers)  # first, so that holds() sees their keys
                    workers = []
                if not holds(key):
                    job.inline = True
                    try:
                        report(job, outcome_of(job))
                    except HandOff as handoff:
                        job.inline = False
                        job.first_failure = handoff.failure
                        submit((item,))
                    continue
            workers.append(item)
        if workers:
            submit(workers)
        self.last_loop = time.monotonic()

    def _process(self, job: Job) -> None:
        """On a worker: the pipeline, then the report to the poll loop. Never raises."""
        self._report(job, self._outcome(job))

    def _outcome(self, job: Job) -> str:
        """The pipeline's outcome for ``job``; raises only inline: ``HandOff``, or what ends the thread."""
        if job.lane.revoked:
            return ABANDONED
        try:
            return self._chain(job)
        except HandOff:
            raise
        except Abandoned:
            return ABANDONED
        except BaseException as exc:  # noqa: BLE001 - a bug in a step: the offset stays uncommitted
            if job.inline and not isinstance(exc, Exception):  # Ctrl-C, exit() on the loop's thread: it ends
                raise
            log.exception("the pipeline failed on %s; the message stays unfinished (its partition's offset "
                          "will not move past it until the group restarts)", job.where(),
                          extra=message_fields(job, self.group.name))
            return ABANDONED

    def _process_batch(self, jobs: list[Job]) -> list[Job]:
        """On a worker: a batch in one transaction (``consumers.pipeline.batch``), then the reports of the
        jobs it finished (after its commit); returns the jobs to put back. Never raises."""
        assert self.batch_runner is not None  # the dispatcher batches only then
        try:
            finished, back = self.batch_runner.run(jobs)
        except BaseException:  # noqa: BLE001 - a bug: every job runs alone instead
            log.exception("a batch of group %s failed; its %d events run alone", self.group.name, len(jobs))
            for job in jobs:
                job.solo = True
            return jobs
        for job, outcome in finished:
            self._report(job, outcome)
        return back

    def _report(self, job: Job, outcome: str) -> None:
        """On a worker (or the loop, inline): the observers are told the outcome, then the poll loop (which moves
        the offset)."""
        if self._after_message:
            emit(self._after_message, job, outcome)
        self._completions.append((job.lane, job.offset, outcome))

    def _drain(self) -> None:
        self._drain_only()
        self._store_offsets()

    def _store_offsets(self) -> None:
        moved = self._tracker.committable()
        if moved:
            assert self._consumer is not None  # the loop and its shutdown run after _start
            try:
                self._consumer.store_offsets(offsets=_topic_partitions(moved))
            except KafkaException as exc:  # a partition revoked a moment ago: its commit was done then
                log.debug("store_offsets(%s): %s", moved, exc)

    def _catch_up(self) -> None:
        """Moves each partition with nothing pending to the consumer's position (local, no request),
        past the transaction markers and aborted messages it skipped, as Kafka's Java consumer
        commits its position. The loop only: there every message polled is accepted."""
        idle = self._tracker.idle()
        if not idle:
            return
        assert self._consumer is not None  # the loop runs after _start
        for tp in self._consumer.position([TopicPartition(topic, partition) for topic, partition in idle]):
            if tp.error is None:
                self._tracker.caught_up((tp.topic, tp.partition), tp.offset)

    def _reconcile(self) -> None:
        """Pauses or resumes every assigned partition, as the buffer, the breaker and shutdown say.

        A full buffer first waits (up to ``BUFFER_WAIT_S``) for the workers to make room: pausing
        throws librdkafka's prefetched messages away and resuming fetches them again, far too
        costly when the workers are merely a little behind. Only a buffer that stays full (slow
        handlers) pauses the partitions, so that the loop can go on polling meanwhile."""
        pending = self._dispatcher.pending
        if not self._paused and pending >= self.max_buffered and not self._stopping:
            if self._dispatcher.wait_below(self.max_buffered // 2, BUFFER_WAIT_S):
                pending = self._dispatcher.pending
            self.last_loop = time.monotonic()
        if self._buffer_full:
            self._buffer_full = pending > self.max_buffered // 2
        else:
            self._buffer_full = pending >= self.max_buffered or self._tracker.in_flight() >= self.max_uncommitted
        assert self.resources is not None and self._consumer is not None  # the loop and its shutdown run after _start
        outage = self.resources.breaker.is_open()
        want = self._stopping or outage or self._buffer_full
        if want == self._paused and not (want and self._repause):
            return
        consumer = self._consumer
        assignment = consumer.assignment()
        try:
            if want:
                consumer.pause(assignment)
                if not self._paused:
                    self.pauses += 1
                    self.outage_pauses += outage
                    reason = "outage" if outage else "stopping" if self._stopping else "buffer_full"
                    emit(self.resources.observers.after_pause, self.group.name, reason)
                    log.log(logging.WARNING if outage else logging.INFO if self._buffer_full else logging.DEBUG,
                            "group %s paused %d partition(s): %s", self.group.name, len(assignment),
                            reason.replace("_", " "),
                            extra={"group": self.group.name, "reason": reason, "partitions": _tps(assignment),
                                   "in_flight": pending,
                                   "cause": self.resources.breaker.last_reason if outage else None})
            else:
                consumer.resume(assignment)
                log.debug("group %s resumed %d partition(s)", self.group.name, len(assignment))
        except KafkaException as exc:
            log.warning("pause/resume of %s failed: %s", self.group.name, exc)
            return
        self._paused = want
        self._repause = False

    # -- rebalances ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            lane = Lane(p.topic, p.partition)
            lane.offsets = self._tracker.open(p.topic, p.partition)
            self._lanes[(p.topic, p.partition)] = lane
        self.joined = True
        self._repause = self._paused
        log.info("group %s assigned %s", self.group.name, _tps(partitions) or "nothing (more members than partitions)")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [lane for p in partitions if (lane := self._lanes.get((p.topic, p.partition))) is not None]
        for lane in revoked:
            lane.revoked = True          # queued messages of these partitions are not started
            lane.stop_waiting.set()      # messages in backoff give up their wait
        deadline = time.monotonic() + (0.0 if self._closing else self.revoke_timeout_s)
        while any(lane.outstanding for lane in revoked) and time.monotonic() < deadline:
            self._drain_only()
            time.sleep(0.005)
        self._drain_only()
        offsets = self._tracker.positions([(lane.topic, lane.partition) for lane in revoked])
        if offsets:
            self._commit(_topic_partitions(offsets), "revocation")
        self._forget(partitions)
        still = sum(lane.outstanding for lane in revoked)
        log.info("group %s revoked %s%s", self.group.name, _tps(partitions),
                 f" ({still} of their message(s) not finished: their next owner will see them again)" if still
                 else "")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            lane = self._lanes.get((p.topic, p.partition))
            if lane is not None:
                lane.revoked = True
                lane.stop_waiting.set()
        self._forget(partitions)
        if not self._lanes:
            self.joined = False  # out of the group (session timed out): not ready until assigned again
        log.warning("group %s lost %s (no commit: another member owns them now)", self.group.name, _tps(partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        for tp in tps:
            self._lanes.pop(tp, None)
        self._tracker.forget(tps)

    def _drain_only(self) -> None:
        """Applies the workers' reports to the watermarks (no store, no commit)."""
        completions = self._completions
        outcomes = self.outcomes
        while completions:
            lane, offset, outcome = completions.popleft()
            lane.outstanding -= 1
            outcomes[outcome] += 1
            if outcome != ABANDONED:
                lane.offsets.finish(offset)  # a lane no longer assigned has a detached state: harmless

    def _commit(self, offsets: list[TopicPartition], why: str) -> None:
        assert self._consumer is not None  # the loop and its shutdown run after _start
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            log.debug("group %s committed %s on %s", self.group.name, offsets, why)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError._NO_OFFSET:
                return
            log.warning("group %s could not commit on %s: %s (the messages after the last commit will be "
                        "delivered again; idempotency keys make that harmless)", self.group.name, why, exc)

    # -- shutdown -----------------------------------------------------------------------------
    def _shutdown(self) -> None:
        self._stopping = True
        consumer = self._consumer
        if consumer is not None and not self.started.is_set():  # refused or stopped before subscribing
            consumer.close()
        elif consumer is not None:
            log.info("group %s stopping: fetching stopped, %d message(s) in flight get up to %.1fs to finish",
                     self.group.name, self._dispatcher.pending, self.settings.drain_timeout_s)
            self._reconcile()  # stop fetching
            for lane in self._lanes.values():
                lane.stop_waiting.set()  # backoffs and outage waits end: those messages go to the next owner
            deadline = time.monotonic() + self.settings.drain_timeout_s
            while self._dispatcher.pending and time.monotonic() < deadline:
                consumer.poll(0.05)  # paused: serves callbacks and heartbeats only
                self._drain()
                self._reconcile()
            for lane in self._lanes.values():
                lane.revoked = True
            self._drain_only()
            if self._dispatcher.pending:
                log.warning("group %s: %d message(s) not finished (queued or running) within the %.1fs drain "
                            "timeout; they will be delivered again", self.group.name, self._dispatcher.pending,
                            self.settings.drain_timeout_s)
            offsets = self._tracker.positions()
            if offsets:
                self._commit(_topic_partitions(offsets), "shutdown")
            self._closing = True
            try:
                consumer.close()  # leaves the group now, rather than after session.timeout.ms
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the consumer: %s", exc)
            log.info("group %s stopped: %s", self.group.name, self.stats())
        if hasattr(self, "_dispatcher"):
            self._dispatcher.stop(timeout_s=1.0)
        self._release()

    def _release(self) -> None:
        """Once the consumer(s) are closed, the rest: the steps (the dead-letter producer, the
        idempotency engine and purge thread), the health endpoint; the observers are told first."""
        if self.resources is not None and self.started.is_set():
            emit(self.resources.observers.before_stop, self)
        for step in self._steps:
            step.close()  # the dead-letter producer flushed and dropped, the idempotency engine disposed of
        if self.health is not None:
            self.health.stop()

    # -- helpers ------------------------------------------------------------------------------
    def _dead_letter_producer(self) -> Producer:
        """A producer on the group's cluster for ``DeadLetters``, which owns it."""
        return Producer(producer_config({"client.id": f"events-dlq-{self.group.name}", "logger": LIBRDKAFKA_LOG},
                                        settings=self.settings))

    def _database(self) -> str:
        """The group's database URL, once the tables its handlers use are there (refused in one line
        when one is missing)."""
        database_url = self.group.database_url or self.settings.database()
        if self.group.tables:
            engine = make_engine(database_url, pool_size=1)
            try:
                require_tables(engine, self.group.tables, group=self.group.name)
            finally:
                engine.dispose()
        return database_url

    def _make_pipeline(self, database_url: str) -> Resources:
        """The group's resources (with its observers: telemetry's, then the caller's) and pipeline."""
        group = self.group
        observers = [*telemetry_observers(group.name, dead_letter_topic=group.dlq_topic(self.prefix),
                                          tracer_provider=self.tracer_provider, meter_provider=self.meter_provider),
                     *self.observers]
        resources = Resources(group=group, prefix=self.prefix, codec=AvroCodec(group.catalogue),
                              breaker=OutageBreaker.of(group, self.concurrency), workers=self.concurrency,
                              database_url=database_url, idempotency_retention=self.idempotency_retention,
                              purge_interval_s=self.purge_interval_s, dead_letter_producer=self._dead_letter_producer,
                              observers=Observers.of(observers))
        self.build_pipeline(resources)
        return resources

    def build_pipeline(self, resources: Resources) -> None:
        """The steps of the group's pipeline made on ``resources`` (each making what it alone uses),
        chained into ``_chain``, those that serve Kafka clients in ``_pollers``; its observers told
        each outcome. (``_start`` calls it; a benchmark may, with resources of its own.)"""
        self.resources = resources
        self._after_message = resources.observers.after_message
        self._chain, self._steps = build(resources, self.group.pipeline)
        self._pollers = [step.poll for step in self._steps if type(step).poll is not Step.poll]

    def _reach_cluster(self) -> Admin | None:
        """Serves the health endpoint (live while it waits for the cluster, ready once it joined),
        waits for the cluster and creates the group's missing topics; the admin client, or None
        when stopped while waiting."""
        self.last_loop = time.monotonic()
        if self.health_port:
            self.health = HealthServer(self.health_port, live=self.is_live, ready=self.is_ready,
                                       status=self.status).start()
        admin = self._admin()
        if not self._await_cluster(admin):
            return None
        if self.create_topics:
            self._ensure_topics(admin)
        return admin

    def _admin(self) -> Admin:
        """An admin client on the group's cluster, with its security settings only (the consumer's
        other properties would be warned about as unknown to it)."""
        return Admin({"bootstrap.servers": self.settings.bootstrap(), "logger": LIBRDKAFKA_LOG,
                      "client.id": f"events-admin-{self.group.name}",
                      **{k: v for k, v in self.settings.kafka_properties().items()
                         if k.startswith(("security.", "sasl.", "ssl."))}})

    def _await_cluster(self, admin: Admin) -> bool:
        """Waits until the cluster answers, as a pod must after a node failure: one line per
        attempt, with growing pauses (up to ``CLUSTER_WAIT_MAX_S``). A refusal (credentials, an
        untrusted certificate) is fatal at once. False when stopped while waiting."""
        delay, attempt = CLUSTER_WAIT_MIN_S, 0
        while True:
            try:
                cluster_metadata(admin, CLUSTER_PROBE_S)
                if attempt:
                    log.info("group %s: the Kafka cluster answers now, after %d attempt(s)", self.group.name,
                             attempt + 1)
                return True
            except TopicsError as exc:
                if admin.refusal is not None:
                    raise
                attempt += 1
                log.warning("group %s is waiting for the Kafka cluster at %s (%s); trying again in %.0fs "
                            "(attempt %d)", self.group.name, self.settings.bootstrap(), exc, delay, attempt,
                            extra={"group": self.group.name})
            resume = time.monotonic() + delay
            while (left := resume - time.monotonic()) > 0:
                if self._stop.wait(min(left, 0.5)):
                    return False
                self.last_loop = time.monotonic()
                for client in (admin, self._consumer):  # their log lines, as they happen
                    if client is not None:
                        client.poll(0)
                for serve in self._pollers:
                    serve()
            delay = min(CLUSTER_WAIT_MAX_S, delay * 2)

    def _ensure_topics(self, admin: Admin) -> None:
        """Creates the group's retry and dead-letter topics when missing, as the topics file
        declares them (``schemas/topics.yaml``: partitions, replication clamped to the brokers,
        retention and the other keys); never alters a topic that exists (``events topics apply``
        does). Warns about missing domain topics, which are ``events topics apply``'s to create."""
        from dify_events.schemas.topics import create_missing, group_topics

        metadata = cluster_metadata(admin, 15.0)
        for topic in self.group.domain_topics(self.prefix):
            if topic not in metadata.topics:
                log.warning("group %s subscribes to %s, which does not exist yet (create it with `events topics "
                            "apply`); the group picks it up when it appears", self.group.name, topic)
        shared = [self.group.name] if self.group.delivery == SHARED else []
        specs = group_topics(self.prefix, [self.group.name], shared_groups=shared)
        if all(spec.name in metadata.topics for spec in specs):
            return
        created = create_missing(admin, specs, timeout=30.0)
        for warning in created.warnings:
            log.warning("group %s: %s", self.group.name, warning)
        for action in created.actions:
            log.info("created %s (%s)", action.topic, action.details())

    def _dead_letter_limit(self, admin: Admin) -> int:
        """The largest dead letter both the dead-letter producer (``message.max.bytes``) and the
        dead-letter topic (``max.message.bytes``, when it can be read) take."""
        producer_max = int(str(producer_config(settings=self.settings).get("message.max.bytes",
                                                                            DEFAULT_MESSAGE_MAX_BYTES)))
        topic = self.group.dlq_topic(self.prefix)
        try:
            topic_max: int | None = int(topic_config(admin, topic, timeout=10.0)["max.message.bytes"])
        except (TopicsError, KeyError, ValueError) as exc:
            log.info("group %s: cannot read max.message.bytes of %s (%s); dead letters are fitted to the producer's "
                     "message.max.bytes (%d) alone", self.group.name, topic, exc, producer_max)
            topic_max = None
        return largest_record(producer_max, topic_max)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("fatal Kafka error in group %s: %s; stopping", self.group.name, err)
            self.stop()
        else:
            LIBRDKAFKA_LOG.warning("Kafka: %s", err)  # held back when repeated (``logs.RepeatedLines``)

    def _on_message_error(self, msg) -> None:
        err = msg.error()
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL or "group id does not exist" in err.str():
            # the broker's answer (classic protocol, KIP-848) when the id is a share group's
            raise ConsumerError(
                f"group {self.group.name} is ordered, but its Kafka group id {self.group_id} belongs to another kind "
                f"of group (a share group, when it ran shared before: {err.str()}): stop its members, delete it with "
                f"`kafka-share-groups --delete --group {self.group_id}`, then start again; or run it shared "
                "(EVENTS_DELIVERY=shared)")
        if err.fatal():
            raise KafkaException(err)
        log.warning("group %s: %s", self.group.name, err)


def _topic_partitions(offsets: list[tuple[str, int, int]]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition, offset) for topic, partition, offset in offsets]


def _tps(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions)
