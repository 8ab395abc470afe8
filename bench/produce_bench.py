"""Events per second through ``EventProducer.publish`` next to a hand-written confluent-kafka +
fastavro loop doing the same work, against a real broker, and the ratio.

Not a test: run it and read the figures (``make bench`` runs the same comparison, with the
pre-encoded ceiling, as part of the whole benchmark; this script adds ``--prebuilt``, the SDK
without its poll thread, and ``--profile``).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python bench/produce_bench.py [--events 50000]
        [--rounds 3] [--profile]

Both sides get the same librdkafka configuration (the platform's defaults: ``acks=all``,
idempotence, lz4, ``linger.ms=5``), the same events (the ten sample types in turn), and the clock
stops only when ``flush()`` says every event was acknowledged. Per event both do the same work:

- **validate**: build the pydantic event from a dict of fields (``--prebuilt`` skips this on
  both sides, to look at the publishing path alone);
- **encode**: Avro single-object encoding (marker, fingerprint, ``schemaless_writer`` of
  ``model_dump()``);
- **headers**: event type, event id, idempotency key, occurred-at, content type;
- **produce** to the domain topic, keyed by the aggregate id, one delivery callback; delivery
  reports served by ``poll(0)`` every 64 events.

The SDK also checks for an active trace, looks the route up per event type, and reports every
failure; it is measured with its background poll thread (the default) and without. Runs take
turns (SDK, loop, SDK, loop, ...) so a busy machine slows both alike; the median counts.
``--profile`` prints where the SDK's time goes (cProfile, by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import confluent_kafka  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from bench.produce import HandLoop, Run, field_dicts, run_hand, run_sdk  # noqa: E402 - shared with `make bench`
from dify_events.producers.config import producer_config  # noqa: E402
from dify_events.producers.producer import EventProducer  # noqa: E402
from dify_events.schemas.catalogue import CATALOGUE  # noqa: E402
from dify_events.schemas.settings import Settings, get_settings  # noqa: E402
from dify_events.schemas.topics import await_served  # noqa: E402


def _client_version() -> str:
    version = confluent_kafka.version()  # a str in 2.16; a (str, int) tuple before
    return version if isinstance(version, str) else version[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per run (the ten types in turn)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side; the median counts")
    parser.add_argument("--prebuilt", action="store_true", help="events built before the clock starts (no validation)")
    parser.add_argument("--profile", action="store_true", help="print where the SDK's time goes")
    args = parser.parse_args(argv)

    settings = get_settings()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    bench_settings = Settings(bootstrap_servers=settings.bootstrap(), topic_prefix=prefix)
    conf = producer_config(settings=bench_settings)
    admin = AdminClient({"bootstrap.servers": str(conf["bootstrap.servers"]), **settings.kafka_properties()})
    topics = CATALOGUE.topics(prefix)
    for future in admin.create_topics([NewTopic(t, 3, 1) for t in topics]).values():
        future.result(30)
    await_served(admin, dict.fromkeys(topics, 3))
    errors: list = []
    failed = errors.append
    try:
        work = field_dicts(args.events)
        if args.prebuilt:
            work = [model(**fields) for model, fields in work]
        hand = HandLoop(conf, prefix)
        sdk = EventProducer(settings=bench_settings, on_error=failed)
        sdk_inline = EventProducer(settings=bench_settings, on_error=failed, poll_thread=False)
        # warm up: connections, metadata, first-call costs
        warm = work[:2000]
        run_hand(hand, warm, args.prebuilt)
        run_sdk(sdk, warm, args.prebuilt)
        run_sdk(sdk_inline, warm, args.prebuilt)

        runs: dict[str, list[Run]] = {"sdk": [], "sdk_inline": [], "hand": []}
        for _ in range(args.rounds):
            runs["sdk"].append(run_sdk(sdk, work, args.prebuilt))
            runs["hand"].append(run_hand(hand, work, args.prebuilt))
            runs["sdk_inline"].append(run_sdk(sdk_inline, work, args.prebuilt))
        assert not errors, errors[:3]
        rates = {name: [run[0] for run in values] for name, values in runs.items()}
        median = {name: statistics.median(values) for name, values in rates.items()}
        cost = {name: statistics.median(run[1] for run in values) for name, values in runs.items()}

        print(f"python {platform.python_version()} ({platform.machine()}), confluent-kafka "
              f"{_client_version()}, librdkafka {confluent_kafka.libversion()[0]}; broker "
              f"{conf['bootstrap.servers']}; acks={conf['acks']}, enable.idempotence={conf['enable.idempotence']}, "
              f"compression={conf['compression.type']}, linger.ms={conf['linger.ms']}")
        print(f"{args.events} events per run "
              f"({'prebuilt events' if args.prebuilt else 'validate + encode + headers + produce'}"
              f", 3 partitions per topic), median of {args.rounds} runs, clock stopped after flush()")
        print(f"{'':44}{'events/s':>12}{'vs loop':>9}{'us/event*':>11}   runs (events/s)")
        rows = [("EventProducer.publish (poll thread, default)", "sdk"),
                ("EventProducer.publish (poll_thread=False)", "sdk_inline"),
                ("hand-written confluent-kafka + fastavro loop", "hand")]
        for label, name in rows:
            print(f"{label:44}{median[name]:>12,.0f}{median[name] / median['hand']:>9.2f}{cost[name]:>11.1f}   "
                  + ", ".join(f"{r:,.0f}" for r in rates[name]))
        print(f"ratio (SDK default / hand-written loop): {median['sdk'] / median['hand']:.2f}; "
              f"by the loop's own time: {cost['hand'] / cost['sdk']:.2f}")
        print("* microseconds per event spent in the publishing loop itself, before flush(): the CPU cost on the "
              "caller's thread, less disturbed by the broker sharing the machine")

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            run_sdk(sdk_inline, work, args.prebuilt)
            profiler.disable()
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(18)
            print("\nwhere the SDK's time goes (poll_thread=False, so everything is on this thread; by own time):")
            print("\n".join(line for line in stream.getvalue().splitlines()[4:] if line.strip()))
        sdk.close()
        sdk_inline.close()
        hand.producer.flush(30)
    finally:
        for future in admin.delete_topics(topics).values():
            try:
                future.result(30)
            except Exception:  # noqa: BLE001 - best effort
                pass


if __name__ == "__main__":
    main()
