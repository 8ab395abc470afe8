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
- the same with the idempotency step: a claim per event in SQLite, then in PostgreSQL;
- FastStream (aiokafka and confluent transports) and Quix Streams, in their own virtualenvs.
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from dify_events.producers.producer import EventProducer
from dify_events.schemas.settings import Settings

from . import peers
from .common import BENCH, PARTITIONS, ROOT, Row, app_events, ratio, run_json_child, writer_schemas
from .runtime import RuntimeProcess, run_until

CONTENDERS = BENCH / "contenders"


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
        group = f"bench-{uuid.uuid4().hex[:8]}"
        return run_until(RuntimeProcess(bootstrap=self.bootstrap, prefix=self.prefix, home=self.home, group=group,
                                        **kwargs), expect, timeout_s=240)


def section(bootstrap: str, topics, home: Path, *, events: int, db_events: int, reps: int, with_peers: bool,
            with_postgres: bool, with_prototypes: bool = True, all_peers: bool = False, log=print) -> list[Row]:
    c = Consume(bootstrap, topics, home, events=events, db_events=db_events, log=log)
    topics.create([c.topic], PARTITIONS)
    log(f"  filling {c.topic} ({PARTITIONS} partitions) with {events:,} app events ...")
    fill(bootstrap, topics.prefix, events)

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
        "sqlite": ("consume", "events run + idempotency claim per event, SQLite",
                   lambda: c.runtime(db_events, idempotent=True)),
    }
    notes = {"raw": "baseline", "typed": "what the handlers' typed events cost",
             "runtime": "as shipped (Prometheus metrics on)", "runtime_nometrics": "what the metrics cost",
             "sqlite": f"{db_events:,} events/run; WAL, BEGIN IMMEDIATE"}
    if with_prototypes:  # the changes this benchmark recommends, measured beside what ships (bench/prototype.py)
        contenders["proto_batch"] = ("prototype", "events run + batched hand-off + gc.freeze",
                                     lambda: c.runtime(events, env={"BENCH_PATCH": "batch,gc"}))
        contenders["proto_all"] = ("prototype", "events run + batched hand-off + gc.freeze, metrics off",
                                   lambda: c.runtime(events, env={"BENCH_PATCH": "batch,gc",
                                                                  "EVENTS_METRICS_PORT": "0"}))
        contenders["proto_inline"] = ("prototype", "events run, concurrency 1 inline + gc.freeze, metrics off",
                                      lambda: c.runtime(events, env={"BENCH_PATCH": "inline,gc",
                                                                     "EVENTS_CONCURRENCY": "1",
                                                                     "EVENTS_METRICS_PORT": "0"}))
        notes["proto_batch"] = "BENCH_PATCH=batch,gc; vs 'as shipped'"
        notes["proto_all"] = "vs 'metrics off': what cheap metrics would leave"
        notes["proto_inline"] = "BENCH_PATCH=inline,gc"
    versions: dict[str, dict[str, str]] = {}
    if with_peers:
        for name in peers.PINS:
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
            if all_peers:  # librdkafka under FastStream: a thread-pool hop per poll, slow per message
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

    results: dict[str, list[dict]] = {name: [] for name in contenders}
    errors: dict[str, str] = {}

    def run_all() -> None:
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

    if with_postgres:
        try:
            from tests.support.postgres import postgres_server
        except ImportError:
            from dify_events.consumers.demo.postgres import throwaway_postgres as postgres_server
        contenders["postgres"] = ("consume", "events run + idempotency claim per event, PostgreSQL", None)
        notes["postgres"] = f"{db_events:,} events/run; throwaway server, fsync=off"
        results["postgres"] = []
        try:
            with postgres_server() as url:
                contenders["postgres"] = (*contenders["postgres"][:2],
                                          lambda: c.runtime(db_events, idempotent=True,
                                                            env={"EVENTS_DATABASE_URL": url}))
                run_all()
        except Exception as exc:  # noqa: BLE001 - PostgreSQL could not start: the others still count
            if not any(results.values()):
                log(f"  PostgreSQL did not start ({exc}); running without it")
                del contenders["postgres"], results["postgres"]
                run_all()
            else:
                raise
    else:
        run_all()

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
    against = {"proto_batch": ("runtime", "as shipped"), "proto_all": ("runtime_nometrics", "metrics off"),
               "proto_inline": ("runtime_nometrics", "metrics off")}
    for name, row in rows.items():
        if row.section == "peers":  # ours to theirs
            row.ratio, row.ratio_to = ratio(rows["runtime"], row), "events run / this"
        elif name in against and against[name][0] in rows:
            row.ratio, row.ratio_to = ratio(row, rows[against[name][0]]), against[name][1]
            row.extra["vs_hand_loop"] = ratio(row, rows["raw"])
        else:
            row.ratio, row.ratio_to = ratio(row, rows["raw"]), "hand loop"
    if "typed" in rows:
        for name in ("runtime", "runtime_nometrics", "proto_batch", "proto_inline", "proto_all"):
            if name in rows and rows[name].median:
                rows[name].extra["vs_typed_loop"] = ratio(rows[name], rows["typed"])
    return list(rows.values())
