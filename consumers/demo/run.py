"""The demo's orchestration: ``Demo(options, console).run()`` -> exit code.

1. the cluster (configured, or the local broker), a fresh topic prefix, a fresh database with the
   domain, outbox and idempotency tables, the topics with every group's dead-letter and retry topics;
2. one process per consumer group;
3. the workload, played as the application plays it (rows + outbox, rows then SDK, poison), with
   the outbox relay on a thread, while a monitor measures every group;
4. waiting until the outbox is drained and every group's lag is 0 (or the timeout, naming the
   groups still behind); with ``twice``, every event published again and drained again;
5. SIGTERM to the groups (they drain, commit, leave), the dead letters read back, the checks, the
   summary. Non-zero when a check fails or a dead letter is unexpected (or expected and missing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from confluent_kafka import Producer
from rich.console import Console
from rich.live import Live
from sqlalchemy import Engine, create_engine, func, select

from dify_events.producers import EventProducer, create_outbox_table
from dify_events.producers.config import producer_config
from dify_events.producers.outbox import event_outbox
from dify_events.schemas.errors import EventsError
from dify_events.schemas.settings import Settings, default_home, get_settings
from dify_events.schemas.topics import admin_client

from .. import idempotency, registry
from ..domain import App, create_all
from ..domain.invariants import Check
from ..group import SHARED
from ..logs import RedactingFilter, RepeatedLines
from . import checks as C
from .application import AGAIN, Application, Relay
from .cluster import LIBRDKAFKA_LOG, Cluster, GroupProcesses, apply_topics, delete_run, find_cluster, group_env
from .postgres import throwaway_postgres
from .progress import GroupProgress, Monitor, Probe, read_dead_letters
from .report import (
    LiveView,
    Status,
    checks_table,
    dead_letters_table,
    groups_table,
    members_table,
    print_tables,
    published_table,
)
from .workload import DEFAULT_SEED, OUTBOX, SDK, Size, Workload, build

log = logging.getLogger("consumers.demo")

PREFIX = re.compile(r"^[a-zA-Z0-9._-]+$")
PLAIN_PROGRESS_EVERY_S = 5.0
SHARED_MEMBERS = 3  # processes of each shared group: several members taking records of the same partitions


class DemoFailed(EventsError):
    """The demo could not run to its end (a group died, the groups did not catch up, ...)."""


@dataclass
class DemoOptions:
    size: Size
    seed: int = DEFAULT_SEED
    prefix: str | None = None          # default: demo<UTC timestamp><4 hex digits>, fresh per run
    database_url: str | None = None    # default: a fresh SQLite database in the run directory
    postgres: bool = False             # a throwaway local PostgreSQL server instead
    twice: bool = False                # publish every event a second time and compare the database
    timeout_s: float = 300.0           # for the groups to catch up, per pass
    concurrency: int = 4               # handler threads per group process
    delete_topics: bool = False        # delete the run's topics and consumer groups at the end
    stop_broker: bool = False          # stop the local broker at the end if this run started it
    report_json: Path | None = None    # also write the summary there, as JSON


class Demo:
    def __init__(self, options: DemoOptions, console: Console):
        self.options = options
        self.console = console
        self.status = Status()
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self._last_line = 0.0
        self._view: LiveView | None = None
        self._final: dict[str, GroupProgress] | None = None

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        options = self.options
        prefix = options.prefix or "demo" + datetime.now(UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)
        if not PREFIX.match(prefix):
            raise DemoFailed(f"{prefix!r} is not a valid topic prefix (letters, digits, '.', '_', '-')")
        run_dir = default_home() / "demo" / prefix
        run_dir.mkdir(parents=True, exist_ok=True)
        _log_to(run_dir / "demo.log")
        with contextlib.ExitStack() as stack:
            cluster = find_cluster(get_settings(), on_progress=lambda m: self.console.print(f"[dim]{m}[/]"))
            if cluster.started and options.stop_broker and cluster.local is not None:
                stack.callback(cluster.local.stop)
            if options.postgres:
                with self.console.status("starting a throwaway PostgreSQL server"):
                    database_url = stack.enter_context(throwaway_postgres(prefix="events-demo-pg-"))
            else:
                database_url = options.database_url or f"sqlite:///{run_dir / 'events.db'}"
            settings = Settings(bootstrap_servers=cluster.bootstrap, topic_prefix=prefix, database_url=database_url)
            code = self._run(settings, cluster, run_dir, stack)
        self._farewell(cluster, settings, run_dir)
        return code

    def _run(self, settings: Settings, cluster: Cluster, run_dir: Path, stack: contextlib.ExitStack) -> int:
        options, console, prefix = self.options, self.console, settings.topic_prefix
        database_url = settings.database()
        engine = prepare_database(database_url)
        stack.callback(engine.dispose)
        reader = create_engine(database_url) if not database_url.startswith("sqlite") else create_engine(
            database_url, connect_args={"timeout": 30})
        stack.callback(reader.dispose)
        groups = registry.discover(builtin=True)  # Dify's receivers, and EVENTS_HANDLER_MODULES' beside them
        names = [g.name for g in groups]
        shared = [g.name for g in groups if g.delivery == SHARED]
        admin = admin_client(settings, logger=LIBRDKAFKA_LOG)
        the_plan = apply_topics(admin, prefix, names, shared)
        if options.delete_topics:
            stack.callback(lambda: delete_run(admin, prefix, [f"{prefix}.{n}" for n in names]))
        workload = build(options.size, seed=options.seed)
        self._introduce(cluster, settings, workload, the_plan, run_dir)

        processes = GroupProcesses(names, log_dir=run_dir / "logs", concurrency=options.concurrency,
                                   env=group_env(settings, bootstrap=cluster.bootstrap, prefix=prefix,
                                                 database_url=database_url),
                                   members=dict.fromkeys(shared, SHARED_MEMBERS))
        processes.start()
        stack.callback(processes.stop)
        application: Application | None = None  # made below, before anything is published
        producer = EventProducer(settings=settings, topic_prefix=prefix,
                                 on_error=lambda e: application.on_error(e) if application else None)
        stack.callback(producer.close)
        raw = Producer(producer_config({"client.id": "events-demo-poison", "logger": LIBRDKAFKA_LOG}, settings))
        application = Application(engine, producer, raw, topic_prefix=prefix, reader=reader)
        relay = Relay(engine, producer).start()
        stack.callback(relay.stop)
        monitor = Monitor(Probe(admin, reader, settings, groups,
                                processes.health_ports),
                          processes.exited_groups).start()
        stack.callback(monitor.stop)
        self.status.groups = monitor.latest
        for e in workload.expected_dead_letters:
            self.status.expected_dead_letters[e.group] += 1
        self.timings["setup"] = time.monotonic() - self.started

        view = self._view = LiveView(lambda: self._refresh(application, relay, monitor), f"events demo · {prefix}")
        live = Live(view, console=console, refresh_per_second=4) if console.is_terminal else contextlib.nullcontext()
        snapshots: list[Snapshot] = []
        with live:
            self._pass(workload, application, relay, monitor, processes, second=False)
            claims = C.every_event_claimed_once(engine, workload, groups)  # before a second pass could mend a loss
            if options.twice:
                snapshots.append(Snapshot(*C.digest(engine), _handled(monitor)))
                for e in workload.expected_dead_letters:
                    self.status.expected_dead_letters[e.group] += 1
                self._pass(workload, application, relay, monitor, processes, second=True)
                snapshots.append(Snapshot(*C.digest(engine), _handled(monitor)))
            self.status.phase = "stopping the groups (SIGTERM: drain, commit, leave)"
            last = dict(monitor.latest)
            monitor.stop()
            relay.stop()
            stopping = time.monotonic()
            exit_codes = processes.stop()
            self.timings["stop"] = time.monotonic() - stopping
            group_codes = processes.by_group(exit_codes)
            final = self._final = {n: replace(g, exit_code=group_codes[n], in_flight=None) for n, g in last.items()}
            self.status.phase = "done"
        letters = read_dead_letters(settings, admin, {g.name: g.dlq_topic(prefix) for g in groups})
        rows, missing = C.match_dead_letters(letters, workload.expected_dead_letters, 2 if options.twice else 1)
        results = [*C.run_checks(engine, workload), claims]
        if snapshots:
            results.append(twice_check(*snapshots))
        return self._summary(workload, application, final, rows, missing, results, exit_codes, processes, prefix)

    def _pass(self, workload: Workload, application: Application, relay: Relay, monitor: Monitor,
              processes: GroupProcesses, *, second: bool) -> None:
        """Publishes the workload (the first pass plays it; the second publishes every event again
        with the SDK, ids unchanged, and the poison again), then waits until it is all handled."""
        began = time.monotonic()
        label = "second pass: " if second else ""
        key = "2nd " if second else ""
        self.status.phase = f"{label}publishing"
        self.status.total = workload.message_count() * (2 if second else 1)
        for step in workload.steps:
            application.play_again(step) if second else application.play(step)
            self._check_alive(processes, relay)
            self._plain_progress()
        missing = application.flush(60)
        if missing or application.errors:
            raise DemoFailed(f"the broker did not take {missing + len(application.errors)} events: "
                             f"{application.errors[0] if application.errors else 'no answer within 60 s'}")
        self.timings[f"{key}publish"] = time.monotonic() - began
        self.status.phase = f"{label}waiting for the groups to catch up"
        drained_at = time.monotonic()
        self._wait_drained(application, relay, monitor, processes)
        self.timings[f"{key}catch-up"] = time.monotonic() - drained_at

    def _wait_drained(self, application: Application, relay: Relay, monitor: Monitor,
                      processes: GroupProcesses) -> None:
        deadline = time.monotonic() + self.options.timeout_s
        while True:
            self._check_alive(processes, relay)
            self._plain_progress()
            # an empty outbox: every event is on the broker now, so a later measurement sees it all
            if application.outbox_pending() == 0 and groups_settled(monitor, time.monotonic()):
                return
            if time.monotonic() > deadline:
                behind = [f"{g.name} (lag {g.lag:,}{', not joined' if not g.joined else ''})"
                          for g in monitor.latest.values() if g.lag]
                pending = application.outbox_pending()
                raise DemoFailed(
                    f"the groups did not catch up within {self.options.timeout_s:.0f}s: "
                    + (", ".join(behind) or "none is behind")
                    + (f"; {pending} events still in the outbox" if pending else "")
                    + (f"; measuring them fails: {monitor.error}" if monitor.error else "")
                    + f". Their logs: {processes.log_dir}")
            time.sleep(0.2)

    def _check_alive(self, processes: GroupProcesses, relay: Relay) -> None:
        exited = processes.exited()
        if exited:
            label, code = next(iter(exited.items()))
            process = processes.groups[label]
            raise DemoFailed(f"the {label} group's process exited with code {code}; the end of its log "
                             f"({process.log_file}):\n{process.log_tail()}")
        if relay.failure is not None:
            raise DemoFailed(f"the outbox relay stopped: {relay.failure}")

    # -- display ------------------------------------------------------------------------------
    def _refresh(self, application: Application, relay: Relay, monitor: Monitor) -> Status:
        s = self.status
        s.elapsed_s = time.monotonic() - self.started
        outboxed = sum(n for (_, via), n in application.published.items() if via == OUTBOX)
        s.via_sdk = sum(n for (_, via), n in application.published.items() if via in (SDK, AGAIN))
        s.via_outbox = min(relay.sent, outboxed)
        s.outbox_pending = max(0, outboxed - relay.sent)
        s.poisoned = application.poisoned
        s.groups = self._final or monitor.latest
        return s

    def _plain_progress(self) -> None:
        if (self._view is None or self.console.is_terminal
                or time.monotonic() - self._last_line < PLAIN_PROGRESS_EVERY_S):
            return
        self._last_line = time.monotonic()
        self.console.print(self._view.line(), highlight=False)

    def _introduce(self, cluster: Cluster, settings: Settings, workload: Workload, the_plan, run_dir: Path) -> None:
        c, size = self.console, workload.size
        where = ("the local broker, started now" if cluster.started else "the local broker") if cluster.local \
            else cluster.what
        created = sum(1 for a in the_plan.actions if a.action == "create")
        c.print(f"[bold]events demo[/] · Kafka at [bold]{cluster.bootstrap}[/] ({where}) · topic prefix "
                f"[bold]{settings.topic_prefix}[/]", highlight=False)
        c.print(f"database [bold]{_safe_url(settings.database())}[/]", highlight=False)
        c.print(f"workload (seed {workload.seed}): {size.tenants} tenants, {size.apps} apps, {size.datasets} datasets, "
                f"{size.documents:,} documents, {size.messages:,} messages -> {workload.event_count():,} events and "
                f"{len(workload.poison())} poison messages", highlight=False)
        replication = (f" (replication {the_plan.actions[0].spec.replication_factor}"
                       f" on this {the_plan.brokers}-broker cluster)" if the_plan.warnings else "")
        c.print(f"[dim]topics: {created} created, {len(the_plan.actions) - created} already there{replication}"
                f"; each consumer group runs as its own process, logs in {run_dir / 'logs'}[/]", highlight=False)

    def _summary(self, workload: Workload, application: Application, groups: dict[str, GroupProgress],
                 rows: list[C.DeadLetterRow], missing, results: list[Check], exit_codes: dict[str, int | None],
                 processes: GroupProcesses, prefix: str) -> int:
        again = sum(n for (_, via), n in application.published.items() if via == AGAIN)
        published = Counter({k: n for k, n in application.published.items() if k[1] != AGAIN})
        expected: Counter[str] = Counter()
        for e in workload.expected_dead_letters:
            expected[e.group] += 2 if self.options.twice else 1
        poisoned = application.poisoned // (2 if self.options.twice else 1)
        print_tables(self.console, published_table(published, poisoned, again), groups_table(groups, expected),
                     members_table(groups, prefix), dead_letters_table(rows, missing), checks_table(results))
        unexpected = sum(r.count for r in rows if r.expected is None)
        bad_exits = {n: c for n, c in exit_codes.items() if c}
        failed = C.failed(results)
        elapsed = time.monotonic() - self.started
        ok = not (failed or unexpected or missing or bad_exits)
        if self.options.report_json is not None:
            self.options.report_json.write_text(json.dumps({
                "ok": ok, "elapsed_s": round(elapsed, 1),
                "timings_s": {k: round(v, 1) for k, v in self.timings.items()},
                "published": {f"{t}/{via}": n for (t, via), n in sorted(application.published.items())},
                "poison": application.poisoned,
                "groups": {n: dict(handled=g.handled, duplicates=g.duplicates, dead_letters=g.dead_letters,
                                   lag=g.lag, exit_code=g.exit_code, **({"members": g.spread} if g.spread else {}))
                           for n, g in groups.items()},
                "dead_letters": [dict(group=r.group, error_class=r.error_class, count=r.count, reason=r.reason,
                                      expected=r.expected) for r in rows],
                "missing_dead_letters": [dict(group=e.group, error_class=e.error_class, what=e.what) for e in missing],
                "checks": [dict(name=c.name, ok=c.ok, detail=c.detail) for c in results],
            }, indent=2))
        timing = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        if not ok:
            problems = [f"{len(failed)} check(s) failed"] if failed else []
            problems += [f"{unexpected} unexpected dead letter(s)"] if unexpected else []
            problems += [f"{len(missing)} expected dead letter(s) missing"] if missing else []
            problems += [f"groups exited with errors: {bad_exits}"] if bad_exits else []
            named = {p.name for p in processes.groups.values() if any(p.name in c.detail for c in failed)}
            suspects = {r.group for r in rows if r.expected is None} | {e.group for e in missing} | named
            for label, group in processes.groups.items():  # what went wrong is most often in the group's own log
                if label in bad_exits or group.name in suspects:
                    self.console.print(f"{label}: its log is {group.log_file}; its last warnings and errors:\n"
                                       f"{group.log_tail(12, problems_only=True) or '(none)'}",
                                       highlight=False, markup=False)
            self.console.print(f"[bold red]✗ {'; '.join(problems)}[/] · {elapsed:.1f}s ({timing})", highlight=False)
            return 1
        dead = sum(r.count for r in rows)
        self.console.print(f"[bold green]✓ all {len(results)} checks hold; {dead} dead letters, all expected "
                           f"(the poison)[/] · {elapsed:.1f}s ({timing})", highlight=False)
        return 0

    def _farewell(self, cluster: Cluster, settings: Settings, run_dir: Path) -> None:
        c, prefix = self.console, settings.topic_prefix
        if cluster.local is not None and cluster.started and self.options.stop_broker:
            c.print("[dim]the local broker this run started was stopped (--stop-broker)[/]")
        elif cluster.local is not None:
            c.print(f"[dim]the local broker keeps running at {cluster.bootstrap} (`events broker stop` stops it)[/]",
                    highlight=False)
        if self.options.postgres:
            c.print("[dim]the throwaway PostgreSQL server was removed[/]")
        if not self.options.delete_topics:
            c.print(f"[dim]look around: EVENTS_TOPIC_PREFIX={prefix} events dlq list provider-usage · "
                    f"run directory {run_dir}[/]", highlight=False)


def prepare_database(url: str) -> Engine:
    """An engine for the application's writes, on a database with the domain, outbox and
    idempotency tables, refused unless it holds no data yet."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = idempotency.make_engine(url, pool_size=4)
    create_all(engine)
    create_outbox_table(engine)
    idempotency.create_table(engine)
    with engine.connect() as conn:
        used = (conn.execute(select(func.count()).select_from(App.__table__)).scalar_one()
                + conn.execute(select(func.count()).select_from(event_outbox)).scalar_one()
                + conn.execute(select(func.count()).select_from(idempotency.processed_events)).scalar_one())
    if used:
        engine.dispose()
        raise DemoFailed(f"the database {_safe_url(url)} already holds data: the demo needs an empty one "
                         "(leave out --database-url for a fresh SQLite database, or use --postgres)")
    return engine


def groups_settled(monitor: Monitor, since: float) -> bool:
    """Two measurements in a row, both begun after ``since``, find every group idle and no count
    moved between them: nothing left to read, nothing running, nothing finished in between."""
    first = monitor.measurement_after(since, timeout_s=5.0)
    if first is None or not all(g.idle for g in first.values()):
        return False
    second = monitor.measurement_after(time.monotonic(), timeout_s=5.0)
    return second is not None and all(g.idle and g.progress == first[n].progress for n, g in second.items())


class Snapshot(NamedTuple):
    """The domain tables (digest, row counts) and each group's handled count, after a pass."""
    sha: str
    rows: dict[str, int]
    handled: dict[str, int]


def _handled(monitor: Monitor) -> dict[str, int]:
    return {name: g.handled for name, g in monitor.latest.items()}


def twice_check(before: Snapshot, after: Snapshot) -> Check:
    name = "publishing every event twice changes nothing"
    if before.sha == after.sha:
        return Check(name, True, f"domain tables identical after the second pass: {len(after.rows)} tables, "
                                 f"{sum(after.rows.values()):,} rows, sha256 {after.sha[:12]}")
    changed = [f"{t} {before.rows.get(t, 0):,} -> {n:,}" for t, n in after.rows.items() if before.rows.get(t) != n]
    handled = [f"{g} +{n - before.handled.get(g, 0)}" for g, n in after.handled.items()
               if n != before.handled.get(g, 0)]
    return Check(name, False, f"the domain tables differ after the second pass (rows: "
                              f"{', '.join(changed) or 'same counts, values changed'}; events handled anew in "
                              f"it: {', '.join(handled) or 'none'})")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _log_to(path: Path) -> None:
    """The demo's own logs (and librdkafka's) go to a file: the console is for the tables."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RepeatedLines())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
