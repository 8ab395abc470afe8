"""Consumer throughput, on its own: the consume section of ``make bench`` (``bench/consume.py``):
the runtime (``events run``, no-op handler) next to a hand-written confluent-kafka loop on the same
topic and events in one run, then with the idempotency step on SQLite and on PostgreSQL, and the
peers (FastStream, Quix Streams) unless ``--no-peers``.

Not a test: run it against a broker and read the figures.

    .venv/bin/python bench/consume_bench.py [--events 50000] [--db-events 10000] [--rounds 3] [--no-db]
        [--no-peers]

(This script used to run the runtime in-process, on a 4-partition topic of one event type; the
whole benchmark now runs every consumer as its own process, as production does, on the app
domain's topic with its four event types; see ``bench/consume.py``.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import main as bench_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--db-events", type=int, default=10_000, help="events for the idempotency runs")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions; the median counts")
    parser.add_argument("--no-db", action="store_true", help="skip the PostgreSQL idempotency runs")
    parser.add_argument("--no-peers", action="store_true", help="skip FastStream and Quix Streams")
    args = parser.parse_args(argv)
    forwarded = ["--only", "consume", "--consume-events", str(args.events), "--db-events", str(args.db_events),
                 "--reps", str(args.rounds)]
    forwarded += ["--no-postgres"] if args.no_db else []
    forwarded += ["--no-peers"] if args.no_peers else []
    return bench_main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
