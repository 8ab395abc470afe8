"""``make bench`` (``python -m bench``): every benchmark in one run, one table, the same figures as
JSON in ``bench/results/<timestamp>.json``.

Each figure is the median of ``--reps`` repetitions, shown with its spread (min-max); every
ratio compares figures measured in this run, on this machine, at the same time of day.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from .common import BENCH, Broker, Row, Topics, load_average, machine

SECTIONS = ("produce", "consume", "latency", "scale", "queue")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ev/s":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def table(rows: list[Row]) -> str:
    head = ("", "what", "median", "min-max", "ratio", "CPU/ev", "peak RSS", "note")
    lines = []
    for row in rows:
        unit = row.unit
        spread = f"{fmt(row.low, unit)}-{fmt(row.high, unit)}" if row.values else "n/a"
        ratio = f"{row.ratio:.2f} ({row.ratio_to})" if row.ratio is not None else ""
        rss = row.extra.get("peak_rss_mib")
        cpu = row.extra.get("cpu_us")
        lines.append((row.section, row.name, f"{fmt(row.median, unit)} {unit}", spread, ratio,
                      f"{cpu:.0f} us" if cpu else "", f"{rss:.0f} MiB" if rss else "", row.note))
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head))]
    align = ["<", "<", ">", ">", "<", ">", ">", "<"]
    out = []
    for i, line in enumerate([head, *lines]):
        if i == 1 or (i > 1 and line[0] != lines[i - 2][0]):
            out.append("  ".join("-" * w for w in widths[:-1]) + "  " + "-" * 4)
        out.append("  ".join(f"{str(x):{a}{w}}" if j < len(head) - 1 else str(x)
                             for j, (x, a, w) in enumerate(zip(line, align, widths, strict=True))).rstrip())
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections ({', '.join(SECTIONS)})")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every figure (the median counts)")
    parser.add_argument("--produce-events", type=int, default=50_000)
    parser.add_argument("--consume-events", type=int, default=50_000)
    parser.add_argument("--db-events", type=int, default=10_000,
                        help="events per run with the idempotency step (the provider-usage handler: half)")
    parser.add_argument("--scale-events", type=int, default=50_000)
    parser.add_argument("--queue-events", type=int, default=200,
                        help="queue: events per member (a member handles 20/s: 200 take 10 s)")
    parser.add_argument("--rates", default="1000,5000,10000", help="latency: events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0, help="latency: seconds per window")
    parser.add_argument("--contenders", help="consume: run only these, comma-separated (e.g. runtime,quix,sqlite)")
    parser.add_argument("--no-peers", action="store_true", help="skip FastStream and Quix Streams")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL idempotency runs")
    parser.add_argument("--no-prototypes", action="store_true", help="skip the prototypes of bench/prototype.py")
    parser.add_argument("--all-peers", action="store_true", help="also FastStream's confluent transport (slow)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition: a smoke test")
    parser.add_argument("--results", type=Path, default=BENCH / "results", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 1
        args.produce_events = args.consume_events = args.scale_events = 10_000
        args.db_events = 2_000
        args.queue_events = 40
        args.seconds = 1.0
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    only = None
    if args.contenders is not None:
        from .consume import NAMES
        only = {name.strip() for name in args.contenders.split(",") if name.strip()}
        unknown = only - set(NAMES)
        if unknown or not only:
            parser.error(f"unknown contender(s) {', '.join(sorted(unknown)) or '(none given)'}; "
                         f"known: {', '.join(NAMES)}")

    started = time.monotonic()
    stamp = datetime.now(UTC)
    load_before = load_average()
    broker = Broker()
    topics = Topics(broker.bootstrap)
    home = Path(tempfile.mkdtemp(prefix="events-bench-"))
    info = machine(broker.version)
    log(f"bench: {info['cpu']}, {info['cores']} cores, Python {info['python']}, Kafka {info['kafka']} at "
        f"{broker.bootstrap}, librdkafka {info['librdkafka']}; load average {load_before[0]:.2f}; topics "
        f"{topics.prefix}.*")
    rows: list[Row] = []
    failures: dict[str, str] = {}
    try:
        for name in sections:
            log(f"[{name}] ({time.monotonic() - started:.0f}s)")
            try:
                if name == "produce":
                    from . import produce
                    rows += produce.section(broker.bootstrap, topics, events=args.produce_events, reps=args.reps,
                                            log=log)
                elif name == "consume":
                    from . import consume
                    rows += consume.section(broker.bootstrap, topics, home, events=args.consume_events,
                                            db_events=args.db_events, reps=args.reps, with_peers=not args.no_peers,
                                            with_postgres=not args.no_postgres,
                                            with_prototypes=not args.no_prototypes, all_peers=args.all_peers,
                                            only=only, log=log)
                elif name == "latency":
                    from . import latency
                    rows += latency.section(broker.bootstrap, topics, home,
                                            rates=[int(r) for r in args.rates.split(",")],
                                            seconds=args.seconds, reps=args.reps,
                                            with_prototypes=not args.no_prototypes, log=log)
                elif name == "scale":
                    from . import scale
                    rows += scale.section(broker.bootstrap, topics, home, events=args.scale_events, reps=args.reps,
                                          log=log)
                elif name == "queue":
                    from . import work_queue
                    rows += work_queue.section(broker.bootstrap, topics, home, per_member=args.queue_events,
                                               reps=args.reps, log=log)
            except Exception as exc:  # noqa: BLE001 - report what the other sections measured
                failures[name] = f"{type(exc).__name__}: {exc}"
                log(f"[{name}] failed:\n{traceback.format_exc()}")
    finally:
        topics.delete_all()
        broker.close()
        shutil.rmtree(home, ignore_errors=True)
    duration = time.monotonic() - started
    load_after = load_average()
    order = {s: i for i, s in enumerate(("produce", "consume", "prototype", "peers", "latency", "scale", "queue",
                                         "footprint"))}
    rows.sort(key=lambda r: order.get(r.section, 99))

    print(f"dify-events benchmark, {stamp:%Y-%m-%d %H:%M} UTC: {info['cpu']}, {info['cores']} cores; Python "
          f"{info['python']}; Kafka {info['kafka']}; confluent-kafka {info['confluent_kafka']} (librdkafka "
          f"{info['librdkafka']}); fastavro {info['fastavro']}; pydantic {info['pydantic']}")
    print(f"median of {args.reps} repetition(s), spread min-max; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after; {duration:.0f} s")
    print(table(rows))
    for name, error in failures.items():
        print(f"section {name} failed: {error}")

    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{stamp:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({
        "started": stamp.isoformat(), "duration_s": round(duration, 1), "machine": info,
        "load_average": {"before": load_before, "after": load_after}, "bootstrap": broker.bootstrap,
        "settings": {k: v for k, v in vars(args).items() if k != "results"}, "failures": failures,
        "rows": [row.as_json() for row in rows]}, indent=1, default=str))
    print(f"figures: {os.path.relpath(path)}")
    return 1 if failures else 0
