"""What the consumer groups have done, measured from outside them, as an operator would.

- handled: the group's rows in the runtime's ``processed_events`` table (one per event handled);
- lag: over the group's partitions (its domain topics and its retry topic), the high watermark
  (admin API) minus the committed offset (the low watermark where it has committed nothing), read by
  a consumer of the group's id that never joins it (``committed()``: an OffsetFetch). Not the admin
  API's ``list_consumer_group_offsets``: with confluent-kafka 2.16 it crashes the process (SIGSEGV)
  while the broker is still loading the group coordinator, as on a broker started a moment ago;
- dead letters: messages held by ``<prefix>.dlq.<group>`` (high minus low watermark);
- duplicates, readiness and messages in flight: the group's own counters, from its health endpoint
  (``/healthz``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from schemas.settings import Settings
from schemas.topics import list_offsets

from ..config import PRODUCER_ONLY, group_id
from ..group import ConsumerGroup
from ..idempotency import processed_events
from .cluster import LIBRDKAFKA_LOG

log = logging.getLogger("consumers.demo.progress")

TP = tuple[str, int]
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class GroupProgress:
    name: str
    handled: int = 0
    lag: int = 0
    dead_letters: int = 0
    duplicates: int | None = None   # None: the health endpoint did not answer
    joined: bool = False
    exit_code: int | None = None    # set once the process has ended
    in_flight: int | None = None    # messages queued or running in the process (None: no answer)

    @property
    def idle(self) -> bool:
        """Nothing left to read, and nothing running as far as the process says (if it answers)."""
        return self.lag == 0 and not self.in_flight

    @property
    def progress(self) -> tuple[int, int, int]:
        """What moves while the group works: handled, lag, dead letters."""
        return self.handled, self.lag, self.dead_letters


class Probe:
    """Measures every group; ``measure()`` makes a handful of admin requests and one query."""

    def __init__(self, admin: AdminClient, engine: Engine, settings: Settings, groups: list[ConsumerGroup],
                 health_ports: dict[str, int]):
        prefix = settings.topic_prefix
        self.admin, self.engine, self.prefix = admin, engine, prefix
        self.health_ports = health_ports
        metadata = admin.list_topics(timeout=TIMEOUT_S)

        def partitions(topic: str) -> list[TP]:
            return [(topic, p) for p in sorted(metadata.topics[topic].partitions)] if topic in metadata.topics else []

        self.names = [g.name for g in groups]
        self.consumed = {g.name: [tp for t in g.topics(prefix) for tp in partitions(t)] for g in groups}
        self.dead_letter_partitions = {g.name: partitions(g.dlq_topic(prefix)) for g in groups}
        self.offset_readers = {g.name: Consumer({
            **{k: v for k, v in settings.kafka_properties().items() if k not in PRODUCER_ONLY},
            "bootstrap.servers": settings.bootstrap(), "group.id": group_id(prefix, g.name),
            "client.id": "events-demo-lag", "enable.auto.commit": False, "logger": LIBRDKAFKA_LOG,
        }) for g in groups}
        self._last_handled: dict[str, int] = {}
        self._every = sorted({tp for tps in (*self.consumed.values(), *self.dead_letter_partitions.values())
                              for tp in tps})

    def measure(self, exit_codes: dict[str, int] | None = None) -> dict[str, GroupProgress]:
        exit_codes = exit_codes or {}
        low = self._offsets(OffsetSpec.earliest())
        high = self._offsets(OffsetSpec.latest())
        committed = self._committed()
        handled = self._handled()
        out = {}
        for name in self.names:
            own = committed.get(name, {})
            lag = sum(max(0, high[tp] - own.get(tp, low[tp])) for tp in self.consumed[name])
            dead = sum(high[tp] - low[tp] for tp in self.dead_letter_partitions[name])
            status = self._health(name) if name not in exit_codes else None
            out[name] = GroupProgress(name, handled.get(name, 0), lag, dead,
                                      None if status is None else status.get("duplicates"),
                                      bool(status and status.get("joined")), exit_codes.get(name),
                                      None if status is None else status.get("in_flight"))
        return out

    # -- the sources --------------------------------------------------------------------------
    def _offsets(self, spec: OffsetSpec) -> dict[TP, int]:
        return list_offsets(self.admin, dict.fromkeys(self._every, spec), timeout=TIMEOUT_S)

    def _committed(self) -> dict[str, dict[TP, int]]:
        out: dict[str, dict[TP, int]] = {}
        for name, consumer in self.offset_readers.items():
            found = consumer.committed([TopicPartition(t, p) for t, p in self.consumed[name]], timeout=TIMEOUT_S)
            out[name] = {(tp.topic, tp.partition): tp.offset for tp in found if tp.error is None and tp.offset >= 0}
        return out

    def close(self) -> None:
        for consumer in self.offset_readers.values():
            consumer.close()

    def _handled(self) -> dict[str, int]:
        try:
            with self.engine.connect() as conn:
                self._last_handled = dict(conn.execute(select(processed_events.c.group_name, func.count())
                                                       .group_by(processed_events.c.group_name)).all())
        except SQLAlchemyError as exc:  # a busy database: the last count stands until the next tick
            log.debug("counting processed events: %s", exc)
        return self._last_handled

    def _health(self, name: str) -> dict | None:
        port = self.health_ports.get(name)
        if not port:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1.0) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 503: not live (yet); the body still has the counters
            try:
                return json.loads(exc.read())
            except ValueError:
                return None
        except (OSError, ValueError):
            return None


class Monitor:
    """Measures on a thread every ``interval_s``; ``latest`` is the last measurement, ``taken_at``
    the monotonic time its measuring began (so a caller can ask for one begun after an instant)."""

    def __init__(self, probe: Probe, exit_codes: Callable[[], dict[str, int]], *, interval_s: float = 0.5):
        self.probe, self.exit_codes, self.interval_s = probe, exit_codes, interval_s
        self.latest: dict[str, GroupProgress] = {name: GroupProgress(name) for name in probe.names}
        self.taken_at = 0.0
        self.error: str | None = None
        self._stop = threading.Event()
        self._fresh = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="demo-monitor", daemon=True)

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(15)
        self.probe.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                latest = self.probe.measure(self.exit_codes())
                self.error = None
            except Exception as exc:  # noqa: BLE001 - a slow cluster answer; measure again
                self.error = str(exc)
                log.warning("measuring the groups failed: %s", exc)
            else:
                with self._fresh:
                    self.latest, self.taken_at = latest, began
                    self._fresh.notify_all()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    def measurement_after(self, instant: float, timeout_s: float) -> dict[str, GroupProgress] | None:
        """The first measurement begun after ``instant`` (monotonic), or None after ``timeout_s``."""
        with self._fresh:
            if self._fresh.wait_for(lambda: self.taken_at > instant, timeout_s):
                return self.latest
        return None


# -- dead letters -----------------------------------------------------------------------------
def read_dead_letters(settings: Settings, admin: AdminClient, topics: dict[str, str]) -> dict[str, list]:
    """Every dead letter held now by each group's dead-letter topic (``topics``: group -> topic)."""
    from ..recovery.dead_letters import DeadLetter
    from ..recovery.kafka import read_ranges, watermarks

    metadata = admin.list_topics(timeout=TIMEOUT_S)
    tps = [(t, p) for t in topics.values() if t in metadata.topics for p in metadata.topics[t].partitions]
    marks = watermarks(admin, tps)
    consumer = Consumer({
        **{k: v for k, v in settings.kafka_properties().items() if k not in PRODUCER_ONLY},
        "bootstrap.servers": settings.bootstrap(),
        "group.id": f"{settings.topic_prefix}.demo-dead-letter-reader",  # assigned, never joins or commits
        "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest",
        "logger": LIBRDKAFKA_LOG,
    })
    group_of = {topic: group for group, topic in topics.items()}
    letters: dict[str, list] = {group: [] for group in topics}
    for msg in read_ranges(consumer, [(t, p, low, high) for (t, p), (low, high) in sorted(marks.items())]):
        letters[group_of[msg.topic()]].append(DeadLetter.from_message(msg))
    return letters
