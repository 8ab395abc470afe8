"""Events per second through ``EventProducer.publish`` next to a hand-written confluent-kafka +
fastavro loop doing the same work, against a real broker, and the ratio.

Not a test: run it and read the figures.

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
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import confluent_kafka  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from fastavro import schemaless_writer  # noqa: E402

from producers.config import producer_config  # noqa: E402
from producers.producer import EventProducer  # noqa: E402
from schemas import headers as names  # noqa: E402
from schemas.catalogue import CATALOGUE  # noqa: E402
from schemas.samples import sample_events  # noqa: E402
from schemas.settings import Settings, get_settings  # noqa: E402

POLL_EVERY = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def field_dicts(count: int) -> list[tuple[type, dict]]:
    """(model, fields) of ``count`` events, the ten sample types in turn, each with its own id."""
    samples = sample_events()
    out = []
    for i in range(count):
        sample = samples[i % len(samples)]
        fields = sample.model_dump(exclude={"event_id", "occurred_at"})
        out.append((type(sample), fields))
    return out


class HandLoop:
    """What a careful engineer writes without the SDK: per-type values computed once."""

    def __init__(self, conf: dict, prefix: str):
        self.errors = 0
        self.producer = Producer({**conf, "on_delivery": self._on_delivery})
        self.routes = {}
        for spec in CATALOGUE:
            fp = spec.latest.fingerprint
            self.routes[spec.model] = (spec.topic(prefix), spec.latest.schema, b"\xc3\x01" + fp, spec.key_field,
                                       (names.EVENT_TYPE, spec.event_type.encode()),
                                       (names.CONTENT_TYPE, names.content_type(fp).encode()))

    def _on_delivery(self, err, msg):
        if err is not None:
            self.errors += 1

    def publish(self, event) -> None:
        topic, schema, prefix, key_field, type_header, content_type = self.routes[type(event)]
        buf = io.BytesIO()
        buf.write(prefix)
        schemaless_writer(buf, schema, event.model_dump())
        event_id = event.event_id.encode()
        headers = [type_header, (names.EVENT_ID, event_id), (names.IDEMPOTENCY_KEY, event_id),
                   (names.OCCURRED_AT, b"%d" % ((event.occurred_at - _EPOCH) // _MS)), content_type]
        self.producer.produce(topic, buf.getvalue(), getattr(event, key_field), headers=headers)


Run = tuple[float, float]  # (events/s until flush() returned, microseconds per event in the loop alone)


def run_hand(loop: HandLoop, work, prebuilt: bool) -> Run:
    producer, publish = loop.producer, loop.publish
    start = time.perf_counter()
    for i, item in enumerate(work):
        publish(item if prebuilt else item[0](**item[1]))
        if i % POLL_EVERY == 0:
            producer.poll(0)
    handed = time.perf_counter()
    assert producer.flush(120) == 0 and loop.errors == 0, "the hand-written loop did not deliver everything"
    return len(work) / (time.perf_counter() - start), (handed - start) / len(work) * 1e6


def run_sdk(producer: EventProducer, work, prebuilt: bool) -> Run:
    publish = producer.publish
    start = time.perf_counter()
    if prebuilt:
        for event in work:
            publish(event)
    else:
        for model, fields in work:
            publish(model(**fields))
    handed = time.perf_counter()
    assert producer.flush(120) == 0, "the SDK did not deliver everything"
    return len(work) / (time.perf_counter() - start), (handed - start) / len(work) * 1e6


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
    admin = AdminClient({"bootstrap.servers": conf["bootstrap.servers"], **settings.kafka_properties()})
    topics = CATALOGUE.topics(prefix)
    for future in admin.create_topics([NewTopic(t, 3, 1) for t in topics]).values():
        future.result(30)
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
        rates = {name: [rate for rate, _ in values] for name, values in runs.items()}
        median = {name: statistics.median(values) for name, values in rates.items()}
        cost = {name: statistics.median(us for _, us in values) for name, values in runs.items()}

        print(f"python {platform.python_version()} ({platform.machine()}), confluent-kafka "
              f"{confluent_kafka.version()[0]}, librdkafka {confluent_kafka.libversion()[0]}; broker "
              f"{conf['bootstrap.servers']}; acks={conf['acks']}, enable.idempotence={conf['enable.idempotence']}, "
              f"compression={conf['compression.type']}, linger.ms={conf['linger.ms']}")
        print(f"{args.events} events per run ({'prebuilt events' if args.prebuilt else 'validate + encode + headers + produce'}"
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
