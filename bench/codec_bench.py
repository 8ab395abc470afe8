"""Encode and decode throughput of AvroCodec next to plain fastavro, on the same events.

Not a test: run it and read the figures.

    .venv/bin/python bench/codec_bench.py [--events 20000] [--rounds 5]

"plain fastavro" is ``schemaless_writer``/``schemaless_reader`` with the parsed schema and
ready-made dicts: the floor. AvroCodec adds the 10-byte header, the fingerprint look-up, and the
pydantic model on both sides (``model_dump`` to encode; validation to decode), which is where
nearly all of its extra time goes; the last lines measure those parts alone.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fastavro  # noqa: E402
from fastavro import schemaless_reader, schemaless_writer  # noqa: E402

from dify_events.schemas.catalogue import CATALOGUE  # noqa: E402
from dify_events.schemas.codec import AvroCodec  # noqa: E402
from dify_events.schemas.samples import sample_events  # noqa: E402


def best_rates(rounds: int, *cases) -> list[float]:
    """Items per second of the fastest of ``rounds`` passes of each (fn, items) case. The cases
    take turns, pass by pass, so that a busy machine slows them alike and the ratio holds."""
    best = [float("inf")] * len(cases)
    for _ in range(rounds):
        for i, (fn, items) in enumerate(cases):
            start = time.perf_counter()
            for item in items:
                fn(item)
            best[i] = min(best[i], time.perf_counter() - start)
    return [len(items) / t for (_, items), t in zip(cases, best, strict=True)]


def best_rate(fn, items, rounds: int) -> float:
    return best_rates(rounds, (fn, items))[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per pass (the ten types in turn)")
    parser.add_argument("--rounds", type=int, default=5, help="passes; the fastest counts")
    args = parser.parse_args(argv)

    codec = AvroCodec()
    samples = sample_events()
    events = [samples[i % len(samples)].model_copy(update={}) for i in range(args.events)]
    schemas = [CATALOGUE.for_event(e).latest.schema for e in events]
    records = [e.model_dump() for e in events]
    pairs = list(zip(schemas, records, strict=True))
    encoded = [codec.encode(e) for e in events]
    bodies = [(s, data[10:]) for s, data in zip(schemas, encoded, strict=True)]
    typed = [(data, e.event_type) for data, e in zip(encoded, events, strict=True)]

    def plain_encode(pair):
        buf = BytesIO()
        schemaless_writer(buf, pair[0], pair[1])
        return buf.getvalue()

    def plain_decode(pair):
        return schemaless_reader(BytesIO(pair[1]), pair[0])

    results = {
        "encode": best_rates(args.rounds, (codec.encode, events), (plain_encode, pairs)),
        "decode": best_rates(args.rounds, (lambda t: codec.decode(t[0], t[1]), typed), (plain_decode, bodies)),
    }

    # the old writer resolved to the new reader (message_was_created v1 -> v2), both ways measured
    spec = CATALOGUE.get("message_was_created")
    v1, v2 = spec.version(1), spec.version(2)
    message = next(e for e in samples if e.event_type == "message_was_created")
    v1_record = message.model_dump(exclude={"latency_ms", "invoke_from"})
    buf = BytesIO(b"\xc3\x01" + v1.fingerprint)
    buf.seek(10)
    schemaless_writer(buf, v1.schema, v1_record)
    v1_data = [buf.getvalue()] * args.events
    resolved = best_rates(args.rounds, (codec.decode, v1_data),
                          (lambda d: schemaless_reader(BytesIO(d[10:]), v1.schema, v2.schema), v1_data))

    parts = {
        "model_dump": best_rate(lambda e: e.model_dump(), events, args.rounds),
        "model_validate": best_rate(lambda p: type(p[0]).model_validate(p[1]),
                                    list(zip(events, [plain_decode(b) for b in bodies], strict=True)), args.rounds),
    }

    print(f"python {platform.python_version()} ({platform.machine()}), fastavro {fastavro.__version__}, "
          f"{args.events} events per pass (the ten event types in turn), best of {args.rounds}")
    print(f"{'':28}{'AvroCodec':>14}{'plain fastavro':>17}{'ratio':>9}")
    for name, (ours, plain) in results.items():
        print(f"{name + ' (events/s)':28}{ours:>14,.0f}{plain:>17,.0f}{ours / plain:>9.2f}")
    ours, plain = resolved
    print(f"{'decode v1 -> v2 (events/s)':28}{ours:>14,.0f}{plain:>17,.0f}{ours / plain:>9.2f}")
    print("parts of the codec's cost, alone (calls/s): "
          + ", ".join(f"{name} {rate:,.0f}" for name, rate in parts.items()))
    size = sum(map(len, encoded)) / len(encoded)
    print(f"mean encoded size {size:.0f} bytes (of which 10 bytes header)")


if __name__ == "__main__":
    main()
