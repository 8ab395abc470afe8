"""What the consumer groups have done, measured from outside them, as an operator would.

- handled: the group's rows in the runtime's ``processed_events`` table (one per event handled);
- lag and dead letters: Kafka's LAG over the group's partitions and what its dead-letter topic
  holds, from ``consumers.recovery.lag`` (as ``events console`` measures them);
- duplicates, readiness and messages in flight: the group's own counters, from its health endpoint
  (``/healthz``), added up over its processes.

A shared group (a Kafka share group) has no committed offsets: its lag here is the records on its
topics less those its members acknowledged as done (accepted or rejected), from their ``/healthz``;
each member's records per partition show how they shared the partitions.
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
from typing import cast

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dify_events.schemas.settings import Settings

from ..config import PRODUCER_ONLY
from ..group import SHARED, ConsumerGroup
from ..idempotency import handled_by_group
from ..recovery.lag import LagReader
from .cluster import LIBRDKAFKA_LOG

log = logging.getLogger("consumers.demo.progress")

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
    spread: tuple[dict[str, int], ...] = ()  # a shared group's: records each member ran, by "topic[partition]"

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
                 health_ports: dict[str, list[int]]):
        self.engine = engine
        self.health_ports = health_ports
        self.names = [g.name for g in groups]
        self.shared = {g.name for g in groups if g.delivery == SHARED}
        self.lag = LagReader(admin, settings, groups, logger=LIBRDKAFKA_LOG)
        self._last_handled: dict[str, int] = {}

    def measure(self, exit_codes: dict[str, int] | None = None) -> dict[str, GroupProgress]:
        exit_codes = exit_codes or {}
        statuses = {name: self._health(name) if name not in exit_codes else None for name in self.names}
        lag = self.lag.measure()  # after the members' acknowledgements: a shared group's lag is not too low
        handled = self._handled()
        out = {}
        for name, members in statuses.items():  # each member's counters; None: not all answered
            counters, shared = members or [], name in self.shared
            done = sum(m["acks"].get(ack, 0) for m in counters for ack in ("accept", "reject")) if shared else 0
            out[name] = GroupProgress(
                name, handled.get(name, 0), max(0, lag[name].lag - done), lag[name].dead_letters,
                duplicates=None if members is None else sum(m.get("duplicates", 0) for m in counters),
                joined=members is not None and all(m.get("joined") for m in counters), exit_code=exit_codes.get(name),
                in_flight=None if members is None else sum(m.get("in_flight", 0) for m in counters),
                spread=tuple(m["partitions"] for m in counters) if shared else ())
        return out

    def close(self) -> None:
        self.lag.close()

    def _handled(self) -> dict[str, int]:
        try:
            self._last_handled = handled_by_group(self.engine)
        except SQLAlchemyError as exc:  # a busy database: the last count stands until the next tick
            log.debug("counting processed events: %s", exc)
        return self._last_handled

    def _health(self, name: str) -> list[dict] | None:
        """Each member's ``/healthz`` counters; None without ports, or when one does not answer."""
        statuses = [self._status(port) for port in self.health_ports.get(name, ())]
        return [s for s in statuses if s is not None] if statuses and None not in statuses else None

    @staticmethod
    def _status(port: int) -> dict | None:
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
        letters[group_of[cast(str, msg.topic())]].append(DeadLetter.from_message(msg))  # fetched: it has a topic
    return letters
