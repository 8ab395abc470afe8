"""2. Consume and 3. peers: every contender reads the same pre-filled topic from the beginning with
a fresh consumer group, in its own process, and decodes every event; the clock runs from its first
event to its last. Contenders take turns, repetition by repetition, so a busy machine slows them
alike.

- the hand-written loop (``contenders/raw_loop.py``): confluent-kafka ``consume(500)``, fastavro,
  ``store_offsets`` + auto-commit: the baseline;
- the same loop decoding with ``AvroCodec`` into the validated pydantic event and reading the
  headers: what of the runtime's cost is the typed event itself;
- ``events run`` with a no-op handler (``bench/handlers.py``): header check, per-key dispatch to
  the worker threads, the whole pipeline (decode, retries, dead-letter guard), offset
  watermarks, auto-commit; the shipped defaults (8 workers);
- the same with the idempotency step (a claim per event), per event (``EVENTS_BATCH_MAX=1``: a
  transaction each) and batched (the default, ``batch_max`` events a transaction), in SQLite, in
  PostgreSQL with fsync off (the database is not the limit) and with fsync on (durable commits: what a
  production server does);
- the seed's provider-usage handler (``bench/seed.py``) the same ways, on its own topic of
  ``MessageWasCreated`` events, doing its real work (the provider rows it charges exist);
- FastStream (aiokafka and confluent transports) and Quix Streams, in their own virtualenvs.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from dify_events.consumers.group import GROUP_OPTIONS
from dify_events.producers.producer import EventProducer
from dify_events.schemas.settings import Settings

from . import peers, seed
from .common import BENCH, PARTITIONS, ROOT, Row, app_events, postgres, ratio, run_json_child, writer_schemas
from .runtime import RuntimeProcess, run_until

CONTENDERS = BENCH / "contenders"
BATCH_MAX = GROUP_OPTIONS["batch_max"]
# the databases of the idempotent rows: SQLite under the scratch EVENTS_HOME, two throwaway PostgreSQL servers
DATABASES = {"sqlite": "SQLite", "postgres": "PostgreSQL fsync off", "pgsync": "PostgreSQL fsync on"}
# name -> (database, the seed's provider-usage handler?, one transaction per event?)
DATABASE_ROWS = {f"{'usage_' if usage else ''}{db}{'_each' if each else ''}": (db, usage, each)
                 for usage in (False, True) for db in DATABASES for each in (True, False)
                 if not (usage and db == "pgsync")}
USAGE_SHARE = 2  # the provider-usage rows handle db_events / 2 messages a run (one at a time ~1 ms of CPU each)
PEERS = {"faststream": ("fs_aiokafka", "fs_batch", "fs_confluent", "fs_confluent_batch"), "quix": ("quix",)}
NAMES = ("raw", "typed", "runtime", "runtime_nometrics", "runtime_inline", *DATABASE_ROWS, "proto_batch", "proto_all",
         *(name for names in PEERS.values() for name in names))


def fill(bootstrap: str, prefix: str, count: int) -> None:
    """``count`` app events onto ``<prefix>.app``, published by the SDK (its headers, its keys)."""
    events = app_events(count)
    with EventProducer({"linger.ms": 20, "queue.buffering.max.messages": 1_000_000},
                       settings=Settings(bootstrap_servers=bootstrap, topic_prefix=prefix)) as producer:
        for event in events:
            producer.publish(event)
        assert producer.flush(120) == 0


class Consume:
    def __init__(self, bootstrap: str, topics, home: Path, *, events: int, db_events: int, log=print):
        self.bootstrap = bootstrap
        self.prefix = topics.prefix
        self.topic = f"{self.prefix}.app"
        self.home = home
        self.events = events
        self.db_events = db_events
        self.usage_events = max(1, db_events // USAGE_SHARE)
        self.log = log
        self.topics = topics
        self.schemas = writer_schemas()

    def _config(self, expect: int, **options: Any) -> str:
        cfg = {"bootstrap": self.bootstrap, "topic": self.topic, "group": f"{self.prefix}.c-{uuid.uuid4().hex[:8]}",
               "expect": expect, "schemas": self.schemas, "root": str(ROOT), **options}
        path = Path(tempfile.mkstemp(prefix="cfg-", suffix=".json", dir=self.home)[1])
        path.write_text(json.dumps(cfg))
        return str(path)

    def script(self, python: str | Path, script: str, expect: int, timeout_s: float = 180, **options) -> dict:
        result = run_json_child([str(python), str(CONTENDERS / script), self._config(expect, **options)],
                                timeout_s=timeout_s)
        result["rate"] = result["n"] / ((result["last_ns"] - result["first_ns"]) / 1e9)
        result["cpu_us"] = result["cpu_s"] / result["n"] * 1e6
        return result

    def runtime(self, expect: int, **kwargs) -> dict:
        process = RuntimeProcess(bootstrap=self.bootstrap, prefix=self.prefix, home=self.home,
                                 group=f"bench-{uuid.uuid4().hex[:8]}", **kwargs)
        result = run_until(process, expect, timeout_s=240)
        # the batches the runner rolled back (a deadlock, ...) and ran again one event at a time
        result["rolled_back"] = process.log_path.read_text(errors="replace").count("events was rolled back")
        return result

    def idempotent(self, url: str | None, *, usage: bool, each: bool) -> dict:
        """``events run`` with the idempotency step in ``url`` (None: SQLite under the scratch home): the
        no-op handler, or (``usage``) the seed's provider-usage handler on a freshly prepared database."""
        env = {"EVENTS_BATCH_MAX": "1"} if each else {}
        if usage:
            url = url or f"sqlite:///{self.home}/usage-{uuid.uuid4().hex[:8]}.db"
            seed.prepare(url)
            env["BENCH_SEED"] = "provider-usage"
        if url:
            env["EVENTS_DATABASE_URL"] = url
        return self.runtime(self.usage_events if usage else self.db_events, idempotent=True, env=env)


def section(bootstrap: str, topics, home: Path, *, events: int, db_events: int, reps: int, with_peers: bool,
            with_postgres: bool, with_prototypes: bool = True, all_peers: bool = False,
            only: set[str] | None = None, log=print) -> list[Row]:
    """``only``: the contenders to run (names of ``NAMES``); all by default."""
    def wanted(*names: str) -> bool:
        return only is None or not only.isdisjoint(names)

    c = Consume(bootstrap, topics, home, events=events, db_events=db_events, log=log)
    usage = [n for n, (db, is_usage, _) in DATABASE_ROWS.items() if is_usage and (with_postgres or db == "sqlite")]
    if wanted(*(n for n in NAMES if n not in usage)):
        topics.create([c.topic], PARTITIONS)
        log(f"  filling {c.topic} ({PARTITIONS} partitions) with {events:,} app events ...")
        fill(bootstrap, topics.prefix, events)
    if wanted(*usage):
        topics.create([f"{topics.prefix}.message"], PARTITIONS)
        log(f"  filling {topics.prefix}.message ({PARTITIONS} partitions) with {c.usage_events:,} messages ...")
        seed.fill(bootstrap, topics.prefix, c.usage_events)

    py = sys.executable
    contenders: dict[str, tuple[str, str, Any]] = {
        "raw": ("consume", "hand-written loop: confluent-kafka consume(500) + fastavro + store_offsets",
                lambda: c.script(py, "raw_loop.py", events)),
        "typed": ("consume", "same loop, AvroCodec -> validated pydantic event + headers",
                  lambda: c.script(py, "raw_loop.py", events, typed=True)),
        "runtime": ("consume", "events run, no-op handler (8 workers, whole pipeline, commits)",
                    lambda: c.runtime(events)),
        "runtime_nometrics": ("consume", "events run, no-op handler, metrics off (EVENTS_METRICS_PORT=0)",
                              lambda: c.runtime(events, env={"EVENTS_METRICS_PORT": "0"})),
        "runtime_inline": ("consume", "events run, no-op handler, inline (EVENTS_INLINE=true)",
                           lambda: c.runtime(events, env={"EVENTS_INLINE": "true"})),
    }
    notes = {"raw": "baseline", "typed": "what the handlers' typed events cost",
             "runtime": "as shipped (Prometheus metrics on)", "runtime_nometrics": "what the metrics cost",
             "runtime_inline": "handlers on the poll loop's thread, metrics on"}
    urls: dict[str, str | None] = {"sqlite": None}  # the PostgreSQL servers' once they run
    servers: dict[str, str] = {"sqlite": "WAL, synchronous=NORMAL, BEGIN IMMEDIATE"}
    for name, (db, is_usage, each) in DATABASE_ROWS.items():
        if db != "sqlite" and not with_postgres:
            continue
        what = "provider-usage handler" if is_usage else "idempotency claim"
        how = "per event (batch_max 1)" if each else f"batched (batch_max {BATCH_MAX})"
        contenders[name] = ("consume", f"events run + {what}, {DATABASES[db]}, {how}",
                            lambda db=db, is_usage=is_usage, each=each: c.idempotent(urls[db], usage=is_usage,
                                                                                     each=each))
    if with_prototypes:  # the changes this benchmark recommends, measured beside what ships (bench/prototype.py)
        contenders["proto_batch"] = ("prototype", "events run + batched hand-off + gc.freeze",
                                     lambda: c.runtime(events, env={"BENCH_PATCH": "batch,gc"}))
        contenders["proto_all"] = ("prototype", "events run + batched hand-off + gc.freeze, metrics off",
                                   lambda: c.runtime(events, env={"BENCH_PATCH": "batch,gc",
                                                                  "EVENTS_METRICS_PORT": "0"}))
        notes["proto_batch"] = "BENCH_PATCH=batch,gc; vs 'as shipped'"
        notes["proto_all"] = "vs 'metrics off': what cheap metrics would leave"
    versions: dict[str, dict[str, str]] = {}
    if with_peers:
        for name in peers.PINS:
            if not wanted(*PEERS[name]):
                continue
            try:
                versions[name] = peers.ensure(name, log=log)
            except Exception as exc:  # noqa: BLE001 - no peers is a note in the table, not a failed run
                log(f"  could not set up the {name} virtualenv: {exc}")
        if "faststream" in versions:
            v = versions["faststream"]
            fpy = peers.python("faststream")
            contenders["fs_aiokafka"] = ("peers", f"FastStream {v['faststream']} subscriber (aiokafka {v['aiokafka']})",
                                         lambda: c.script(fpy, "faststream_app.py", events, transport="aiokafka"))
            contenders["fs_batch"] = ("peers", f"FastStream {v['faststream']} batch subscriber, 500 (aiokafka)",
                                      lambda: c.script(fpy, "faststream_app.py", events, transport="aiokafka",
                                                       batch=True))
            notes["fs_aiokafka"] = "faststream[kafka], per message"
            notes["fs_batch"] = "its best showing"
            if all_peers or only:  # (or named) librdkafka under FastStream: a thread-pool hop per poll, slow
                contenders["fs_confluent"] = ("peers", f"FastStream {v['faststream']} subscriber (confluent "
                                              f"{v['confluent-kafka']})",
                                              lambda: c.script(fpy, "faststream_app.py", events, transport="confluent"))
                contenders["fs_confluent_batch"] = ("peers", f"FastStream {v['faststream']} batch subscriber, 500 "
                                                    f"(confluent {v['confluent-kafka']})",
                                                    lambda: c.script(fpy, "faststream_app.py", events,
                                                                     transport="confluent", batch=True))
        if "quix" in versions:
            v = versions["quix"]
            qpy = peers.python("quix")
            contenders["quix"] = ("peers", f"Quix Streams {v['quixstreams']} app (confluent {v['confluent-kafka']})",
                                  lambda: c.script(qpy, "quix_app.py", events, timeout_s=240))
            notes["quix"] = "StreamingDataFrame.update"
    contenders = {name: run for name, run in contenders.items() if wanted(name)}

    results: dict[str, list[dict]] = {name: [] for name in contenders}
    errors: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for db in ("postgres", "pgsync"):
            rows_of_db = [name for name in contenders if DATABASE_ROWS.get(name, ("",))[0] == db]
            if not rows_of_db:
                continue
            try:
                urls[db], servers[db] = stack.enter_context(postgres(fsync=db == "pgsync"))
            except Exception as exc:  # noqa: BLE001 - PostgreSQL could not start: the others still count
                log(f"  {DATABASES[db]} did not start ({exc}); running without it")
                for name in rows_of_db:
                    del contenders[name], results[name]
        for rep in range(reps):
            for name, (_, _, run) in contenders.items():
                if name in errors:
                    continue
                try:
                    results[name].append(run())
                except Exception as exc:  # noqa: BLE001 - one broken contender must not sink the run
                    errors[name] = str(exc).splitlines()[0][:200]
                    log(f"  {name} failed: {exc}")
            log(f"  consume rep {rep + 1}/{reps}: " + ", ".join(
                f"{name} {r[-1]['rate']:,.0f}/s" for name, r in results.items() if r))
    for name, (db, is_usage, _) in DATABASE_ROWS.items():
        notes[name] = (f"{c.usage_events:,} ev/run; {seed.WHAT}" if is_usage
                       else f"{db_events:,} ev/run; {servers.get(db, '')}")

    rows: dict[str, Row] = {}
    for name, (sect, label, _) in contenders.items():
        runs = results[name]
        row = rows[name] = Row(sect, label, "ev/s", [r["rate"] for r in runs],
                               note=errors.get(name, notes.get(name, "")),
                               extra={"cpu_us_per_event": [r.get("cpu_us") for r in runs]})
        rss = [r["vm_hwm_kib"] for r in runs if r.get("vm_hwm_kib")]
        if rss:
            row.extra["peak_rss_mib"] = sorted(rss)[len(rss) // 2] / 1024
        cpu = sorted(x for x in row.extra["cpu_us_per_event"] if x)
        if cpu:
            row.extra["cpu_us"] = cpu[len(cpu) // 2]
        if sect == "peers":
            row.extra["versions"] = versions.get("faststream" if name.startswith("fs_") else "quix")
        if name in DATABASE_ROWS:
            row.extra["server"] = servers.get(DATABASE_ROWS[name][0])
            row.extra["batches_rolled_back"] = rolled_back = [r["rolled_back"] for r in runs]
            if any(rolled_back) and name not in errors:
                row.note += f"; batches rolled back: {'/'.join(map(str, rolled_back))}"
    against = {"proto_batch": ("runtime", "as shipped"), "proto_all": ("runtime_nometrics", "metrics off"),
               "runtime_inline": ("runtime", "as shipped"),
               **{name: (f"{name}_each", "per event") for name, (_, _, each) in DATABASE_ROWS.items() if not each}}
    for name, row in rows.items():
        if row.section == "peers":  # ours to theirs
            row.ratio, row.ratio_to = ratio(rows.get("runtime"), row), "events run / this"
            inline = row.extra["inline_vs_this"] = ratio(rows.get("runtime_inline"), row)
            if inline is not None:
                row.note += f"; inline / this {inline:.2f}"
        elif name in against:
            row.ratio, row.ratio_to = ratio(row, rows.get(against[name][0])), against[name][1]
            row.extra["vs_hand_loop"] = ratio(row, rows.get("raw"))
        else:
            row.ratio, row.ratio_to = ratio(row, rows.get("raw")), "hand loop"
        if row.ratio is None:
            row.ratio_to = ""
    if "typed" in rows:
        for name in ("runtime", "runtime_nometrics", "runtime_inline", "proto_batch", "proto_all"):
            if name in rows and rows[name].median:
                rows[name].extra["vs_typed_loop"] = ratio(rows[name], rows["typed"])
    return list(rows.values())
