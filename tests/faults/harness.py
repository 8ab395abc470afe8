"""The fault suite's world: the seed's groups as `events run` processes on a real PostgreSQL and
Kafka, a steady stream of the demo's workload played on a thread (rows + outbox, rows then SDK,
poison), and at the end a count of every event's effects against what was published.

Built from the demo's own parts (``consumers.demo``): the workload, ``Application`` (plays it),
``Relay``, ``GroupProcesses`` (one ``python -m dify_events.consumers run --group`` per group), ``Probe`` (lag),
``read_dead_letters``. A scenario injects its faults while ``stream()`` runs, then ``settle()``
waits for the groups to drain and ``figures()`` counts lost and doubled effects, and checks the run's
history (``tests.faults.checker``: acknowledged, applied, per-key order).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Producer
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from dify_events.consumers import registry
from dify_events.consumers.demo.application import Application, Relay
from dify_events.consumers.demo.cluster import (
    LIBRDKAFKA_LOG,
    GroupProcesses,
    apply_topics,
    group_env,
    terminate_with_parent,
)
from dify_events.consumers.demo.progress import Probe, read_dead_letters
from dify_events.consumers.demo.run import prepare_database
from dify_events.consumers.demo.workload import SDK, Change, Size, build
from dify_events.consumers.domain import App, InstalledApp, Message, MessageUsage, ProviderUsage, Site
from dify_events.consumers.domain.invariants import (
    every_app_has_one_installed_app,
    every_app_has_one_site,
    provider_usage_equals_message_tokens,
)
from dify_events.consumers.idempotency import processed_events
from dify_events.producers import EventProducer
from dify_events.producers.config import producer_config
from dify_events.producers.outbox import event_outbox
from dify_events.schemas.catalogue import CATALOGUE
from dify_events.schemas.events import Event
from dify_events.schemas.settings import Settings
from dify_events.schemas.topics import admin_client
from tests.faults.checker import History, Verdict, check, read_log
from tests.support.waiting import wait_until

QUIET = logging.getLogger("tests.faults.librdkafka")  # librdkafka's lines of the test's own clients, not stderr

# The groups whose effects the checks count: messages -> usage, apps -> sites and installed apps.
GROUPS = ["provider-usage", "site-provisioner", "installed-app-provisioner"]
SIZE = Size(tenants=2, apps=6, documents=2, messages=240)
# a SIGKILLed member's partitions move on after 6 s (the broker's minimum), not 45 s
FAST_FAILOVER = {"EVENTS_KAFKA_SESSION_TIMEOUT_MS": "6000", "EVENTS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
                 "EVENTS_LOG_LEVEL": "INFO", "EVENTS_METRICS_PORT": "0"}


def fresh_database(server_url: str, name: str) -> str:
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@dataclass
class Figures:
    scenario: str
    events: int = 0
    faults: int = 0
    lost: int = 0
    duplicated: int = 0
    dead_lettered: int = 0                # distinct messages dead-lettered (by origin topic, partition, offset)
    dead_letter_copies: int = 0           # further letters of the same message: at least once after a SIGKILL
    unexpected_dead_letters: int = 0
    recover_s: float = 0.0
    not_acknowledged: int = 0
    order_violations: int = 0
    verdict: Verdict | None = None
    notes: list[str] = field(default_factory=list)

    def print(self) -> None:
        print(f"\n[faults] {self.scenario}: events={self.events} faults={self.faults} lost={self.lost} "
              f"duplicated={self.duplicated} dead-lettered={self.dead_lettered} "
              f"(unexpected {self.unexpected_dead_letters}, copies {self.dead_letter_copies}) "
              f"not-acknowledged={self.not_acknowledged} order-violations={self.order_violations} "
              f"time-to-recover={self.recover_s:.1f}s" + "".join(f"\n    {n}" for n in self.notes), flush=True)
        if self.verdict is not None:
            print(self.verdict.table(), flush=True)


class RecordingProducer(EventProducer):
    """The SDK's producer, keeping each event it was handed (the history's publish operations)."""

    def __init__(self, *args, **kwargs):
        self.handed: dict[str, Event] = {}
        super().__init__(*args, **kwargs)

    def publish(self, event, **kwargs):
        self.handed[event.event_id] = event
        return super().publish(event, **kwargs)


class World:
    """One scenario's groups, database, producers and stream."""

    def __init__(self, *, bootstrap: str, prefix: str, database_url: str, run_dir: Path,
                 groups: list[str] = GROUPS, size: Size = SIZE, seed: int = 7, concurrency: int = 2,
                 extra_env: dict[str, str] | None = None, in_process_relay: bool = True,
                 producer_overrides: dict[str, str] | None = None):
        """``producer_overrides``: librdkafka properties of the SDK's producer (the application's and
        the in-process relay's), such as a shorter ``delivery.timeout.ms``."""
        self.settings = Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, database_url=database_url)
        self.prefix, self.database_url, self.run_dir = prefix, database_url, run_dir
        self.names = groups
        self.workload = build(size, seed=seed)
        self.engine = prepare_database(database_url)
        self.admin = admin_client(self.settings, logger=LIBRDKAFKA_LOG)
        apply_topics(self.admin, prefix, groups)
        env = group_env(self.settings, bootstrap=bootstrap, prefix=prefix, database_url=database_url)
        env.update(FAST_FAILOVER, **(extra_env or {}))
        self.env = env
        self.processes = GroupProcesses(groups, log_dir=run_dir / "logs", env=env, concurrency=concurrency)
        self.producer = RecordingProducer(producer_overrides, settings=self.settings, topic_prefix=prefix,
                                          on_error=self._on_error)
        self.raw = Producer(producer_config({"client.id": "faults-poison", "logger": QUIET}, self.settings))
        self.application = Application(self.engine, self.producer, self.raw, topic_prefix=prefix)
        self.relay = Relay(self.engine, self.producer) if in_process_relay else None
        self.groups = [registry.get(n) for n in groups]
        self._stream: threading.Thread | None = None
        self.played = 0
        self.stream_error: BaseException | None = None
        self.db_waits = 0
        self.deferred: list = []
        self.extra_members: list[subprocess.Popen] = []
        self._running = threading.Event()
        self._running.set()
        self._hold_at: int | None = None

    def _on_error(self, error) -> None:
        self.application.on_error(error)

    # -- running ------------------------------------------------------------------------------
    def start(self) -> World:
        self.processes.start()
        if self.relay is not None:
            self.relay.start()
        return self

    def stream(self, seconds: float) -> World:
        """Plays the workload on a thread, spread evenly over about ``seconds``."""
        steps = self.workload.steps
        pause = seconds / max(1, len(steps))

        def play():
            try:
                for step in steps:
                    if self.played == self._hold_at:
                        self._running.clear()
                    self._running.wait()
                    self._play(step)
                    self.played += 1
                    time.sleep(pause)
                deadline = time.monotonic() + 120
                while self.deferred and time.monotonic() < deadline:
                    self._flush_deferred()
                    time.sleep(0.5)
                assert not self.deferred, f"{len(self.deferred)} steps could not be written"
            except BaseException as exc:  # noqa: BLE001 - reported by settle()
                self.stream_error = exc

        self._stream = threading.Thread(target=play, name="faults-stream", daemon=True)
        self._stream.start()
        return self

    def hold(self, *, at_step: int) -> None:
        """Holds the stream before the workload's step ``at_step`` (the application waits), until ``go_on``."""
        self._hold_at = at_step

    @property
    def held(self) -> bool:
        return self.streaming and not self._running.is_set()

    def go_on(self) -> None:
        self._running.set()

    def _play(self, step) -> None:
        """One step as the application plays it. While the database is down (the PostgreSQL outage
        scenario) the application goes on: an SDK step's events are published at once and its rows
        written once the database is back; an outbox step (rows and events in one transaction) is
        played whole once it is back. Nothing is published twice, no row is written twice."""
        if self.deferred:
            self._flush_deferred()
        if self.deferred:
            self._defer(step)
            return
        try:
            self.application.play(step)
        except IntegrityError:
            self._committed_unanswered(step)
        except (OperationalError, InterfaceError):
            self._defer(step)

    def _committed_unanswered(self, step) -> None:
        """The rows committed but the answer was lost: publish what the SDK would have."""
        if isinstance(step, Change) and step.via == SDK:
            for event in step.events:
                self.producer.publish(event)

    def _defer(self, step) -> None:
        self.db_waits += 1
        if isinstance(step, Change) and step.via == SDK:
            for event in step.events:
                self.producer.publish(event)
            # ignore: a via that is neither path on purpose: Application.play writes the rows and publishes nothing
            step = dataclasses.replace(step, via="rows-only")  # type: ignore[arg-type]
        self.deferred.append(step)

    def _flush_deferred(self) -> None:
        while self.deferred:
            try:
                self.application.play(self.deferred[0])
            except IntegrityError:
                if self.deferred[0].via != "rows-only":
                    self._committed_unanswered(self.deferred[0])
            except (OperationalError, InterfaceError):
                return
            self.deferred.pop(0)

    def kill(self, names: list[str]) -> int:
        """SIGKILL to the named groups' processes; returns how many were running."""
        killed = 0
        for name in names:
            process = self.processes.groups[name].process
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
                killed += 1
        return killed

    def restart(self, names: list[str]) -> None:
        """Starts the named groups' processes again, as the Deployment would."""
        for name in names:
            self.processes.groups[name].process = self._spawn(name)

    def add_member(self, name: str) -> subprocess.Popen:
        """One more process of the named group (a scale-up: the group rebalances); stopped by ``stop``."""
        process = self._spawn(name)
        self.extra_members.append(process)
        return process

    def _spawn(self, name: str) -> subprocess.Popen:
        with open(self.processes.groups[name].log_file, "ab") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "dify_events.consumers", "run", "--group", name, "--concurrency",
                 str(self.processes.concurrency)], env={**self.env, "EVENTS_HEALTH_PORT": "0"},
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=terminate_with_parent)

    def log_count(self, needle: str) -> int:
        return sum(p.read_text(errors="replace").count(needle) for p in (self.run_dir / "logs").glob("*.log"))

    @property
    def streaming(self) -> bool:
        return self._stream is not None and self._stream.is_alive()

    def wait_played(self, fraction: float, timeout_s: float = 120) -> None:
        wait_for(lambda: self.played >= fraction * len(self.workload.steps) or not self.streaming, timeout_s,
                 f"{fraction:.0%} of the stream")

    def settle(self, timeout_s: float = 150, *, groups: list[str] | None = None) -> float:
        """Waits until the stream ended, everything was acknowledged, the outbox is empty and every
        group's lag (or the named groups') is 0. Returns the seconds it took."""
        began = time.monotonic()
        if self._stream is not None:
            self._stream.join(timeout_s)
        assert self.stream_error is None, f"the stream failed: {self.stream_error!r}"
        self.application.flush(60)
        watched = [g for g in self.groups if g.name in (groups or self.names)]
        probe = Probe(self.admin, self.engine, self.settings, watched, {})
        try:
            def drained():
                if self.application.outbox_pending():
                    return False
                return all(g.lag == 0 for g in probe.measure().values())
            wait_for(drained, timeout_s, "every group to drain", self.processes)
        finally:
            probe.close()
        return time.monotonic() - began

    def stop(self) -> dict[str, int | None]:
        if self.relay is not None:
            self.relay.stop()
        for member in self.extra_members:
            member.terminate()
        codes = self.processes.stop(30)
        for member in self.extra_members:
            member.wait(30)
        self.producer.close()
        self.raw.flush(10)
        return codes

    # -- counting -----------------------------------------------------------------------------
    def figures(self, scenario: str, *, faults: int, recover_s: float,
                expected_dead: dict[str, int] | None = None) -> tuple[Figures, list]:
        """Lost: an acknowledged event a group handles with no claimed idempotency key and no dead
        letter. Duplicated: an effect beyond one per event (usage counts, usage rows, sites, installed
        apps). Order violations: one key's events applied in another order than the log's."""
        fig = Figures(scenario, faults=faults, recover_s=recover_s)
        fig.not_acknowledged = len(self.application.errors)
        letters = read_dead_letters(self.settings, self.admin, {g.name: g.dlq_topic(self.prefix) for g in self.groups})
        dead_ids = {g: {(d.named.get("event-id") or b"").decode() for d in found} for g, found in letters.items()}
        origins = {g: {letter.origin for letter in found} for g, found in letters.items()}
        fig.dead_lettered = sum(len(v) for v in origins.values())
        fig.dead_letter_copies = sum(len(v) for v in letters.values()) - fig.dead_lettered
        if expected_dead is None:
            expected_dead = Counter(e.group for e in self.workload.expected_dead_letters if e.group in self.names)
        expected_dead = Counter(expected_dead)
        fig.unexpected_dead_letters = sum(max(0, len(origins[g]) - expected_dead[g]) for g in origins)
        doubled, checks = self._doubled_effects(fig)
        fig.verdict = check(self.history(dead_ids, doubled))
        fig.events, fig.lost = fig.verdict.acknowledged, fig.verdict.lost
        fig.duplicated, fig.order_violations = fig.verdict.doubled, fig.verdict.order_violations
        return fig, checks

    def acknowledged(self) -> dict[str, Event]:
        """The events acknowledged to the application: handed to the SDK and never reported failed
        (once flushed), and relayed from the outbox (a row is marked sent after the acknowledgement)."""
        failed = {e.event_id for e in self.application.errors if getattr(e, "event_id", None)}
        with self.engine.connect() as conn:
            relayed = set(conn.execute(select(event_outbox.c.event_id).where(event_outbox.c.sent_at.is_not(None)))
                          .scalars())
        events = {e.event_id: e for e in self.workload.events()}
        acknowledged = {i: e for i, e in self.producer.handed.items() if i not in failed}
        acknowledged.update({i: events[i] for i in relayed if i in events})
        return acknowledged

    def history(self, dead_ids: dict[str, set[str]], doubled: dict[str, int]) -> History:
        with self.engine.connect() as conn:
            claims = conn.execute(select(processed_events.c.group_name, processed_events.c.event_id,
                                         processed_events.c.processed_at)
                                  .order_by(processed_events.c.processed_at)).all()
        applied: dict[str, list] = {g.name: [] for g in self.groups}
        for group, event_id, at in claims:
            applied.setdefault(group, []).append((event_id, at))
        log = read_log(self.settings, self.admin, CATALOGUE.topics(self.prefix))
        return History(acknowledged=self.acknowledged(), log=log,
                       handles={g.name: frozenset(g.handlers) for g in self.groups},
                       applied=applied, dead_lettered=dead_ids, doubled=doubled)

    def _doubled_effects(self, fig: Figures) -> tuple[dict[str, int], list]:
        """Per group, the effects in the domain tables beyond one per event; and the invariants."""
        with Session(self.engine) as s:
            messages = s.scalar(select(func.count()).select_from(Message)) or 0
            counted = s.scalar(select(func.coalesce(func.sum(ProviderUsage.message_count), 0))) or 0
            usage_rows = s.scalar(select(func.count()).select_from(MessageUsage)) or 0
            sites = s.scalar(select(func.count()).select_from(Site)) or 0
            installed = s.scalar(select(func.count()).select_from(InstalledApp)) or 0
            apps = s.scalar(select(func.count()).select_from(App)) or 0
            checks = [invariant(s) for group, invariant in (
                ("site-provisioner", every_app_has_one_site),
                ("installed-app-provisioner", every_app_has_one_installed_app),
                ("provider-usage", provider_usage_equals_message_tokens)) if group in self.names]
        fig.notes.append(f"messages {messages}, usage counted {counted}, usage rows {usage_rows}; apps {apps}, "
                         f"sites {sites}, installed apps {installed}")
        fig.notes += [f"{'ok ' if c.ok else 'FAILED '}{c.name}: {c.detail}" for c in checks]
        doubled = {"provider-usage": max(0, counted - messages) + max(0, usage_rows - messages),
                   "site-provisioner": max(0, sites - apps), "installed-app-provisioner": max(0, installed - apps)}
        return {g: n for g, n in doubled.items() if g in self.names}, checks


def topic_messages(w: World, domains: tuple[str, ...] = ("app", "message", "tenant", "dataset", "document")) -> int:
    """Messages on the run's domain topics now (the sum of their high watermarks)."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    metadata = w.admin.list_topics(timeout=15)
    tps = [TopicPartition(t, p) for t in (f"{w.prefix}.{d}" for d in domains) if t in metadata.topics
           for p in metadata.topics[t].partitions]
    futures = w.admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=15)
    return sum(f.result(timeout=15).offset for f in futures.values())


def wait_for(condition, timeout_s: float, what: str, processes: GroupProcesses | None = None):
    """``wait_until``, asking again when ``condition`` raises (a broker or database on its way back),
    and with the groups' log tails in the failure."""
    def attempt():
        try:
            return condition()
        except Exception:  # noqa: BLE001 - on its way back: ask again
            return None

    try:
        return wait_until(attempt, timeout_s, what, interval_s=0.3)
    except AssertionError as exc:
        if processes is None:
            raise
        tails = "\n".join(f"--- {g.name}:\n{g.log_tail(8)}" for g in processes.groups.values())
        raise AssertionError(f"{exc}\n{tails}") from None


def assert_exactly_once(fig: Figures, checks: list) -> None:
    fig.print()
    assert fig.lost == 0 and fig.duplicated == 0 and fig.order_violations == 0, fig
    assert fig.verdict is None or not fig.verdict.missing_from_log, fig.verdict.table()
    assert fig.unexpected_dead_letters == 0, fig
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


@contextlib.contextmanager
def world(**kwargs):
    w = World(**kwargs)
    try:
        yield w
    finally:
        with contextlib.suppress(Exception):
            w.stop()
        w.engine.dispose()


def random_moments(rng: random.Random, count: int, low_s: float, high_s: float) -> list[float]:
    return [rng.uniform(low_s, high_s) for _ in range(count)]
