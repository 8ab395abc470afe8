"""What the console measures every few seconds, kept for the last minutes: Kafka's LAG per partition
and the dead-letter topics' watermarks (``consumers.recovery.lag``), each group's state and members,
handled events (the ``processed_events`` claims, when the console has the groups' database) and the
counters only the processes know (``scrape``, from the Prometheus endpoints it was given)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from sqlalchemy import Engine

from dify_events.schemas.settings import Settings

from ..config import group_id
from ..group import SHARED, ConsumerGroup
from ..idempotency import handled_by_group
from ..recovery import kafka
from ..recovery.kafka import Member
from ..recovery.lag import GroupLag, LagReader
from ..redact import redact
from .scrape import scrape

log = logging.getLogger("consumers.console")

RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class Sample:
    at: float                                   # unix time
    lag: dict[str, GroupLag]
    members: dict[str, tuple[str, list[Member]]]  # group -> (state, members)
    handled: dict[str, int] | None              # None: no database to count claims in
    scraped: dict[str, dict[str, float]]        # group -> the processes' counters


@dataclass(frozen=True)
class Rates:
    """Per second over the last minute; None where nothing measures it."""

    handled: float | None = None
    retried: float | None = None
    dead_lettered: float | None = None


class Sampler:
    def __init__(self, settings: Settings, groups: list[ConsumerGroup], *, interval_s: float, window_s: float,
                 metrics_urls: tuple[str, ...] = (), engine: Engine | None = None):
        self.settings, self.groups = settings, groups
        self.interval_s, self.window_s = interval_s, window_s
        self.metrics_urls, self.engine = list(metrics_urls), engine
        self.history: deque[Sample] = deque(maxlen=int(window_s / interval_s) + 2)
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader: LagReader | None = None
        self._thread = threading.Thread(target=self._run, name="console-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self._reader is not None:
            self._reader.close()

    def measure(self) -> Sample:
        admin = kafka.admin(self.settings)
        if self._reader is None:
            self._reader = LagReader(admin, self.settings, self.groups)
        else:
            self._reader.refresh()
        prefix = self.settings.topic_prefix
        # a share group cannot be described with the Python client (no DescribeShareGroups)
        members = {g.name: (SHARED, []) if g.delivery == SHARED else kafka.members(admin, group_id(prefix, g.name))
                   for g in self.groups}
        handled = handled_by_group(self.engine) if self.engine is not None else None
        return Sample(time.time(), self._reader.measure(), members, handled, scrape(self.metrics_urls))

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                sample = self.measure()
            except Exception as exc:  # noqa: BLE001 - the cluster or the database did not answer: try again
                self.error = redact(str(exc))
                log.warning("measuring the groups failed: %s", self.error)
            else:
                with self._lock:
                    self.history.append(sample)
                self.error = None
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    # -- reading what was measured --------------------------------------------------------------
    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self.history)

    def latest(self) -> Sample | None:
        with self._lock:
            return self.history[-1] if self.history else None

    def lag_series(self, group: str, tp: tuple[str, int] | None = None) -> list[tuple[float, float]]:
        """(time, lag) of the group (or of one of its partitions) over the window."""
        out = []
        for sample in self.samples():
            lag = sample.lag.get(group)
            if lag is None or lag.shared:  # a share group's lag is not measured here
                continue
            value = lag.lag if tp is None else next((p.lag for p in lag.partitions if (p.topic, p.partition) == tp), 0)
            out.append((sample.at, float(value)))
        return out

    def rates(self, group: str) -> Rates:
        samples = [s for s in self.samples() if s.at >= time.time() - RATE_WINDOW_S - self.interval_s]
        if len(samples) < 2:
            return Rates()
        first, last = samples[0], samples[-1]
        span = last.at - first.at

        def rate(before: float | None, after: float | None) -> float | None:
            return None if before is None or after is None else max(0.0, after - before) / span

        handled = (rate(first.handled.get(group, 0), last.handled.get(group, 0))
                   if first.handled is not None and last.handled is not None else None)
        def scraped(sample: Sample) -> float | None:  # a process that answered and never retried: 0
            return sample.scraped[group].get("retried", 0.0) if group in sample.scraped else None

        retried = rate(scraped(first), scraped(last))
        dead = rate(first.lag[group].dead_letters_written, last.lag[group].dead_letters_written)
        return Rates(handled, retried, dead)
