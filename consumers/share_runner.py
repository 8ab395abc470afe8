"""Runs one shared group (``ConsumerGroup(..., delivery="shared")``): a Kafka share group (KIP-932).

``concurrency`` pollers, each a thread with its own ``ShareConsumer`` (one member of the share group
each: the client is not thread-safe, and in explicit mode every record of a poll must be
acknowledged before the next poll). A poller runs each record it is given through the group's
pipeline (the chain ``GroupRunner`` runs: decode, idempotency, retries, dead letters, the handler)
on its own thread, and acknowledges it as the outcome says:

    handled, duplicate, passed over     ACCEPT    done
    dead-lettered, or no letter fits    REJECT    done: the broker never offers it again
    abandoned (stopping, lock ending),  RELEASE   offered again at once, to any member, with its
    or a bug in a step                            delivery count one higher

KIP-932 has no delayed RELEASE, so retries with backoff stay in the pipeline, on the poller; a wait
that would outlast the record's acquisition lock (``share.record.lock.duration.ms``) abandons the
record instead, which releases it. A record on its last delivery (its delivery count at the group's
``share.delivery.count.limit``) is never released: the broker would archive it without a trace, so
it is dead-lettered by us (``LastDelivery``) and rejected. Only a process that dies on each of a
record's deliveries leaves the broker to archive it unseen.

A slow record holds only its own poller, and whatever else that poller's poll returned: librdkafka
2.16 treats ``max.poll.records`` as best effort, and brokers acquire whole producer batches (it has no
KIP-1206 ``record_limit`` acquire mode), so a poll may return more records than asked for. The
poller runs them one after another; one whose lock is about to end before its turn is released
unrun. Nothing of the ordered runner's partition bookkeeping applies: a share group has no offsets,
no assignment and no lag the Python client can read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

from confluent_kafka import AcknowledgeType, KafkaError, KafkaException, ShareConsumer
from confluent_kafka.admin import ConfigResource, ResourceType

from dify_events.schemas import headers as H
from dify_events.schemas.topics import Admin, configure_share_group

from .config import share_consumer_config
from .errors import ConsumerError
from .group import SHARED, ConsumerGroup
from .job import ABANDONED, DEAD_LETTERED, DUPLICATE, HANDLED, NOT_DEAD_LETTERED, PASSED, Abandoned, Job, Lane
from .observers import emit
from .pipeline import DeadLetters
from .runner import EVENT_TYPE_NAME, GroupRunner, tune_interpreter
from .telemetry.fields import message_fields

log = logging.getLogger("consumers.share_runner")

ACKS = {HANDLED: AcknowledgeType.ACCEPT, DUPLICATE: AcknowledgeType.ACCEPT, PASSED: AcknowledgeType.ACCEPT,
        DEAD_LETTERED: AcknowledgeType.REJECT, NOT_DEAD_LETTERED: AcknowledgeType.REJECT,
        ABANDONED: AcknowledgeType.RELEASE}
ACK_NAMES = {AcknowledgeType.ACCEPT: "accept", AcknowledgeType.RELEASE: "release", AcknowledgeType.REJECT: "reject"}
# Kafka's defaults, used when the group's configs cannot be read
LOCK_DURATION_MS = 30_000
DELIVERY_COUNT_LIMIT = 5
LOCK_MARGIN_S = 3.0  # a record is given up (released) this long before its lock would end
CLOSE_TIMEOUT_S = 15.0  # a poller's last commit of acknowledgements, then leaving the group


class LastDelivery(Exception):
    """The dead letter's error for a record abandoned on its last delivery."""


class ShareLane(Lane):
    """Where one record of a share group came from, and until when its acquisition lock holds: a
    wait (backoff, an outage, a dead letter's retry) that would outlast it abandons the record."""

    __slots__ = ("deadline",)

    def __init__(self, topic: str, partition: int, stop_waiting: threading.Event, deadline: float):
        # Lane's offsets and committed position have no meaning here: a share group has none
        self.topic = topic
        self.partition = partition
        self.revoked = False
        self.stop_waiting = stop_waiting  # the runner's: set when it stops
        self.outstanding = 0
        self.deadline = deadline

    def sleep(self, seconds: float) -> None:
        if time.monotonic() + seconds > self.deadline:
            raise Abandoned(f"{self.topic}[{self.partition}]: a {seconds:.1f}s wait would outlast its record's lock")
        super().sleep(seconds)


class ShareGroupRunner(GroupRunner):
    """Runs a shared ``group`` until ``stop()`` (thread- and signal-safe) or a fatal Kafka error.

    The options are ``GroupRunner``'s (``consumer_overrides`` go to every poller's
    ``ShareConsumer``); ``concurrency`` is the number of pollers, so of records handled at once.
    Those of an ordered group's fetch loop mean nothing here (``batch_size``, ``max_buffered``,
    ``revoke_timeout_s``, ``batch_max``: a poller runs its records one by one); a ``consumer_factory``
    is refused (each poller makes its own ``ShareConsumer``).
    ``max_poll_records``: records a poller asks for per poll (1 spreads the work most evenly; librdkafka
    takes it as a hint and may return a whole producer batch).
    """

    delivery = SHARED

    def __init__(self, group: ConsumerGroup, *, max_poll_records: int = 1, **options: Any):
        if "consumer_factory" in options:
            raise ValueError("a shared group's pollers make their own ShareConsumers: consumer_factory is for "
                             "GroupRunner")
        super().__init__(group, **options)
        self.max_poll_records = max_poll_records
        self.lock_s = LOCK_DURATION_MS / 1000
        self.delivery_limit = DELIVERY_COUNT_LIMIT
        self.acks: Counter[str] = Counter()
        self.redelivered = 0  # records that came with a delivery count above 1
        self.handled_by: list[int] = [0] * self.concurrency  # records each poller finished (not abandoned)
        self.partitions: Counter[str] = Counter()  # records of each "topic[partition]" run to their end here
        self._counts = threading.Lock()
        self._busy = [False] * self.concurrency  # running a record's pipeline
        self._stop_waiting = threading.Event()
        self._threads: list[threading.Thread] = []  # the pollers'
        self._consumers: list[ShareConsumer] = []
        self._dead_letters: DeadLetters | None = None
        self._fatal: ConsumerError | None = None  # raised by run() once stopped

    @property
    def in_flight(self) -> int:
        return sum(self._busy)

    def status(self) -> dict[str, Any]:
        return {"group": self.group.name, "delivery": SHARED, "joined": self.joined, "pollers": self.concurrency,
                "in_flight": self.in_flight, "redelivered": self.redelivered, "acks": dict(self.acks),
                "partitions": dict(self.partitions), **self.stats()}

    # -- the run ------------------------------------------------------------------------------
    def _start(self) -> bool:
        """As ``GroupRunner._start``: a librdkafka property or the database is refused before anything
        is created on the cluster. Then the group's share configs (``share.auto.offset.reset=earliest``
        must be set before its first member joins) and its lock and delivery limit are read; a
        ``time_limit_s`` that would outlast the lock is refused only then, the topics made."""
        group = self.group
        database_url = self._database()
        overrides = {**self.consumer_overrides, "error_cb": self._on_error}
        self._consumers = [ShareConsumer(share_consumer_config(self.settings, group.name, i,
                                                               max_poll_records=self.max_poll_records,
                                                               overrides=overrides))
                           for i in range(self.concurrency)]
        resources = self._make_pipeline(database_url)
        self._dead_letters = next((s for s in self._steps if isinstance(s, DeadLetters)), None)
        admin = self._reach_cluster()
        if admin is None:
            return False
        if self.create_topics:
            configure_share_group(admin, self.group_id)
        self._read_group_limits(admin)
        self._check_time_limits()
        resources.dead_letter_max_bytes = self._dead_letter_limit(admin)
        topics = group.topics(self.prefix)
        for consumer in self._consumers:
            consumer.subscribe(topics)
        tune_interpreter()  # before the pollers start, after what start-up made
        self._threads = [threading.Thread(target=self._poll_loop, args=(i, consumer), daemon=True,
                                          name=f"events-{group.name}-p{i}")
                         for i, consumer in enumerate(self._consumers)]
        for thread in self._threads:
            thread.start()
        self.last_loop = time.monotonic()
        log.info("group %s (share group %s) subscribed to %s with %d poller(s); records locked for %.0fs, at most "
                 "%d deliveries", group.name, self.group_id, ", ".join(topics), self.concurrency, self.lock_s,
                 self.delivery_limit)
        self.started.set()
        emit(resources.observers.after_start, self)
        return True

    def _read_group_limits(self, admin: Admin) -> None:
        """The group's effective lock duration and delivery-count limit (its own, else the broker's)."""
        try:
            future = admin.describe_configs([ConfigResource(ResourceType.GROUP, self.group_id)], request_timeout=15)
            config = next(iter(future.values())).result(15)
            self.lock_s = int(config["share.record.lock.duration.ms"].value) / 1000
            self.delivery_limit = int(config["share.delivery.count.limit"].value)
        except (KafkaException, KeyError, ValueError, TypeError) as exc:
            log.warning("group %s: cannot read its share configs (%s); taking Kafka's defaults: records locked for "
                        "%.0fs, at most %d deliveries", self.group.name, exc, self.lock_s, self.delivery_limit)

    def _check_time_limits(self) -> None:
        """Refuses a handler's ``time_limit_s`` that the record's lock would not outlast: the broker
        would offer the record to another member while the handler still runs."""
        room = self.lock_s - LOCK_MARGIN_S
        for handler in self.group.handlers.values():
            limit = handler.options.get("time_limit_s", self.group.options.get("time_limit_s"))
            if limit is not None and limit >= room:
                raise ConsumerError(
                    f"handler {handler.name}: time_limit_s={limit:g} does not end before the share group's record "
                    f"lock ({self.lock_s:g}s, less {LOCK_MARGIN_S:g}s to acknowledge): lower it below {room:g}, or "
                    f"raise share.record.lock.duration.ms of the group {self.group_id} (up to the broker's "
                    "group.share.max.record.lock.duration.ms)")

    def _loop(self) -> None:
        """The pollers work; this thread serves the steps' Kafka clients (the dead-letter producer's
        callbacks) until stopped or until every poller has ended (a fatal error). It keeps the runner
        live while pollers are: a poller in a long handler polls again only when the handler ends, as
        a worker of the ordered runner does (whose poll loop stays live meanwhile)."""
        while not self._stop.wait(0.2):
            for serve in self._pollers:
                serve()
            if not any(thread.is_alive() for thread in self._threads):
                log.error("group %s: every poller has ended; stopping", self.group.name)
                break
            self.last_loop = time.monotonic()
        if self._fatal is not None:
            raise self._fatal

    # -- a poller -----------------------------------------------------------------------------
    def _poll_loop(self, index: int, consumer: ShareConsumer) -> None:
        """One poller: poll, run each record, acknowledge it; the only thread that touches ``consumer``."""
        breaker = self.resources.breaker if self.resources else None
        try:
            while not self._stop.is_set():
                if breaker is not None and breaker.is_open():  # not polling: nothing is acquired to wait
                    self._stop.wait(0.2)
                    self.last_loop = time.monotonic()
                    continue
                try:
                    records = consumer.poll(self.poll_timeout_s)
                except KafkaException as exc:
                    self._on_poll_error(exc.args[0] if exc.args else None, exc)
                    continue
                self.joined = True
                self.last_loop = acquired = time.monotonic()  # the records' locks started about now
                for record in records:
                    if record.error() is not None:
                        self._on_poll_error(record.error(), None)
                        continue
                    self._acknowledge(consumer, *self._run_record(index, record, acquired))
                if records:
                    consumer.commit_async()  # else the acknowledgements wait for the next poll
        except BaseException:
            log.exception("group %s: poller %d failed; stopping the group", self.group.name, index)
            self.stop()
            raise
        finally:
            self._close(consumer)

    def _run_record(self, index: int, record: Any, acquired: float) -> tuple[Job, str, int]:
        """The pipeline on one record acquired at ``acquired``: its job, outcome and delivery count (never
        raises). (``Any``: confluent-kafka's stubs allow a ``Message`` no topic, offset or list of headers;
        a record has them.)"""
        delivery = record.delivery_count() or 1
        if delivery > 1:
            with self._counts:
                self.redelivered += 1
        raw = record.headers()
        event_type = next((v for k, v in raw if k == H.EVENT_TYPE), None) if raw else None
        handler = self._handlers.get(event_type) if event_type is not None else None
        lane = ShareLane(record.topic(), record.partition(), self._stop_waiting,
                         acquired + self.lock_s - LOCK_MARGIN_S)
        job = Job(record, lane, record.offset(), raw, event_type, handler)
        if handler is None and event_type is not None and EVENT_TYPE_NAME.match(event_type):
            outcome = PASSED  # another group's event type
        elif self._stop.is_set():
            outcome = ABANDONED
        elif time.monotonic() >= lane.deadline:
            log.warning("%s of group %s is released unrun: its lock ends in less than %.0fs, spent while the records "
                        "before it in its poll ran", job.where(), self.group.name, LOCK_MARGIN_S,
                        extra=message_fields(job, self.group.name))
            outcome = ABANDONED
        else:
            self._busy[index] = True
            try:
                outcome = self._chain(job)
            except Abandoned:
                outcome = ABANDONED
            except BaseException:  # noqa: BLE001 - a bug in a step: released, offered again
                log.exception("the pipeline failed on %s; it is released (offered again)", job.where(),
                              extra=message_fields(job, self.group.name))
                outcome = ABANDONED
            finally:
                self._busy[index] = False
        if outcome == ABANDONED and delivery >= self.delivery_limit:
            outcome = self._last_delivery(job, delivery)
        if outcome != PASSED and self._after_message:
            emit(self._after_message, job, outcome)
        with self._counts:
            self.outcomes[outcome] += 1
            if outcome != ABANDONED:
                self.handled_by[index] += 1
            if outcome not in (ABANDONED, PASSED):
                self.partitions[f"{job.lane.topic}[{job.lane.partition}]"] += 1
        return job, outcome, delivery

    def _last_delivery(self, job: Job, delivery: int) -> str:
        """A record abandoned on its last delivery: dead-lettered by us rather than released to the
        broker's archive. ABANDONED still when the group has no ``DeadLetters`` or the letter cannot
        be sent before the record's lock ends."""
        if self._dead_letters is None:
            log.warning("%s of group %s was abandoned on its last delivery (%d of %d) and the group has no "
                        "DeadLetters step: the broker archives it", job.where(), self.group.name, delivery,
                        self.delivery_limit, extra=message_fields(job, self.group.name))
            return ABANDONED
        reason = LastDelivery(f"abandoned on its last delivery ({delivery} of the share group's "
                              f"share.delivery.count.limit {self.delivery_limit}): the consumer stopped, or the "
                              "record's lock was about to end")
        try:
            return DEAD_LETTERED if self._dead_letters.publish(job, reason) else NOT_DEAD_LETTERED
        except Abandoned:
            return ABANDONED

    def _acknowledge(self, consumer: ShareConsumer, job: Job, outcome: str, delivery: int) -> None:
        record, ack = job.message, ACKS[outcome]
        try:
            consumer.acknowledge(record, ack)
        except KafkaException as exc:  # its lock ended meanwhile: the broker offers it again
            log.warning("group %s: acknowledging %s[%d]@%d (%s) failed: %s", self.group.name, record.topic(),
                        record.partition(), record.offset(), ACK_NAMES[ack], exc)
            ack_name = "failed"
        else:
            ack_name = ACK_NAMES[ack]
        with self._counts:
            self.acks[ack_name] += 1
        assert self.resources is not None  # pollers run after _start
        if self.resources.observers.after_acknowledge:
            emit(self.resources.observers.after_acknowledge, job, ack_name, delivery)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fail_on(err)
        else:
            super()._on_error(err)

    def _fail_on(self, err: KafkaError) -> None:
        """Stops the run on a fatal error, which ``run()`` then raises (a non-zero exit, one line). A broker
        that refuses ShareGroupHeartbeat has no share groups: the line says how to run the group without."""
        reason = err.str()
        log.error("fatal Kafka error in group %s: %s; stopping", self.group.name, reason)
        if self._fatal is None:
            self._fatal = ConsumerError(
                f"the Kafka cluster has no share groups ({reason}): they need Kafka 4.2 or later with the feature "
                f"share.version enabled (`kafka-features.sh upgrade --feature share.version=1`); or run group "
                f"{self.group.name} as a consumer group: EVENTS_DELIVERY=ordered"
                if err.code() == KafkaError.UNSUPPORTED_VERSION and "ShareGroupHeartbeat" in reason
                else f"fatal Kafka error in group {self.group.name}: {reason}")
        self.stop()

    def _on_poll_error(self, err: KafkaError | None, exc: KafkaException | None) -> None:
        if err is not None and err.code() in (KafkaError.GROUP_ID_NOT_FOUND, KafkaError.INCONSISTENT_GROUP_PROTOCOL):
            # the broker's answer when the id is a consumer group's: "the group id does not exist"
            self._fatal = ConsumerError(
                f"group {self.group.name} is shared, but its Kafka group id {self.group_id} belongs to a consumer "
                f"group (it ran ordered before: {err.str()}): stop its members, delete it with `kafka-consumer-groups "
                f"--delete --group {self.group_id}`, then start again (the share group reads the topics from their "
                "start; idempotency claims skip what was handled within the idempotency retention)")
            self.stop()
        elif err is not None and err.fatal():
            self._fail_on(err)
        elif err is None or err.code() != KafkaError._PARTITION_EOF:
            log.warning("group %s: %s", self.group.name, err or exc)
        if exc is not None:
            self._stop.wait(0.5)  # the poll itself failed: not at full speed

    def _close(self, consumer: ShareConsumer) -> None:
        """Sends the acknowledgements still held, then leaves the group."""
        try:
            consumer.commit_sync(CLOSE_TIMEOUT_S - 5)
        except (KafkaException, RuntimeError) as exc:
            log.warning("group %s: committing acknowledgements on close: %s (those records are offered again when "
                        "their locks end)", self.group.name, exc)
        try:
            consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing a share consumer of group %s: %s", self.group.name, exc)

    # -- shutdown -----------------------------------------------------------------------------
    def _idle_alive(self) -> list[bool]:
        """Per poller: its thread still alive while running no record (polling, or closing its consumer)."""
        return [thread.is_alive() and not self._busy[i] for i, thread in enumerate(self._threads)]

    def _shutdown(self) -> None:
        """Stops polling; idle pollers close their consumers (leaving the group); then waits end
        (backoffs, outages: those records are released); running handlers get ``drain_timeout_s``;
        each poller acknowledges, commits and closes its consumer. Releasing only once the idle
        pollers are gone keeps a sibling from acquiring a released record again (a fetch of its last
        poll may still be in flight), which would spend a delivery and, closing, release it once
        more: on the record's last delivery the broker would archive it."""
        self._stopping = True
        self._stop.set()
        # one deadline for all of it: a share consumer whose close() does not return must not make a stop
        # outlast the drain timeout (librdkafka 2.16.0: a member given a partition a moment before close(),
        # of a topic id it has no metadata for yet, waits "for 1 toppar(s) ... before terminating" forever)
        idle_gone = time.monotonic() + self.poll_timeout_s + CLOSE_TIMEOUT_S
        deadline = idle_gone + self.settings.drain_timeout_s
        while time.monotonic() < idle_gone and any(self._idle_alive()):
            time.sleep(0.01)
        self._stop_waiting.set()
        if self._threads:
            log.info("group %s stopping: %d record(s) in flight get up to %.1fs to finish", self.group.name,
                     self.in_flight, self.settings.drain_timeout_s)
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            closing = sum(self._idle_alive())
            running = sum(thread.is_alive() for thread in self._threads) - closing
            if running:
                log.warning("group %s: %d poller(s) still running a handler after the drain timeout; their records "
                            "are offered again when their locks end", self.group.name, running)
            if closing:
                log.warning("group %s: %d share consumer(s) did not finish closing within %.0fs; their "
                            "acknowledgements were committed before, and the broker drops such a member when its "
                            "session times out", self.group.name, closing, CLOSE_TIMEOUT_S)
            log.info("group %s stopped: %s", self.group.name, self.stats())
        else:
            for consumer in self._consumers:  # refused or stopped before subscribing
                consumer.close()
        self._release()
