"""Consumer throughput: the runtime with a no-op handler next to a hand-written confluent-kafka
loop, on the same topic and events in one run; then the runtime with the idempotency step on
SQLite and on PostgreSQL.

Not a test: run it against a broker and read the figures.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python bench/consume_bench.py \\
        [--events 100000] [--db-events 10000] [--partitions 4] [--concurrency 8] [--rounds 2]

"raw loop" is what one would write by hand: ``consume(500)`` batches, ``fastavro.schemaless_reader``
on each body (after the 10-byte single-object header), ``store_offsets`` of each batch's last
offsets with auto-commit. "typed raw loop" is the same loop reading the headers and decoding with
``AvroCodec`` into the validated pydantic event, which the runtime must do for its handlers. The runtime does more per message: the event-type header check, the
per-key dispatch to worker threads, the codec (fingerprint look-up and the pydantic model, which
validates every field), the pipeline, the offset watermarks. Each reader is a fresh consumer group
reading the whole topic from the beginning; the clock runs from its first message to its last.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import confluent_kafka  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from fastavro import schemaless_reader  # noqa: E402

PREFIX = f"bench{uuid.uuid4().hex[:8]}"
os.environ["EVENTS_TOPIC_PREFIX"] = PREFIX
os.environ.setdefault("EVENTS_HOME", tempfile.mkdtemp(prefix="events-bench-"))

from consumers.group import ConsumerGroup  # noqa: E402
from consumers.runner import GroupRunner  # noqa: E402
from schemas import headers as H  # noqa: E402
from schemas.catalogue import CATALOGUE  # noqa: E402
from schemas.codec import AvroCodec  # noqa: E402
from schemas.events import AppWasCreated  # noqa: E402
from schemas.settings import get_settings  # noqa: E402

TOPIC = f"{PREFIX}.app"


def produce(bootstrap: str, count: int, keys: int) -> None:
    codec = AvroCodec()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                         "enable.idempotence": True, "queue.buffering.max.messages": 1_000_000})
    for i in range(count):
        event = AppWasCreated(tenant_id="tenant-1", app_id=f"app-{i % keys}", mode="chat", name=f"app {i}",
                              created_by="user-1", description="a benchmark app")
        headers = [(H.EVENT_TYPE, b"app_was_created"), (H.EVENT_ID, event.event_id.encode()),
                   (H.IDEMPOTENCY_KEY, event.event_id.encode()), (H.OCCURRED_AT, b"1700000000000")]
        while True:
            try:
                producer.produce(TOPIC, codec.encode(event), event.app_id.encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(120)


def raw_loop(bootstrap: str, count: int, typed: bool = False) -> float:
    """Events per second of the hand-written loop (``typed``: decoding with AvroCodec into the
    pydantic event, and reading the headers, as the runtime must)."""
    schema = CATALOGUE.get("app_was_created").latest.schema
    codec = AvroCodec()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{PREFIX}.raw-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": True,
                         "enable.auto.offset.store": False, "fetch.wait.max.ms": 100})
    consumer.subscribe([TOPIC])
    seen, first = 0, None
    while seen < count:
        msgs = consumer.consume(500, 1.0)
        if not msgs:
            continue
        if first is None:
            first = time.perf_counter()
        last: dict[int, int] = {}
        for m in msgs:
            if m.error():
                continue
            if typed:
                m.headers()
                codec.decode(m.value(), "app_was_created")
            else:
                fo = BytesIO(m.value())
                fo.seek(10)
                schemaless_reader(fo, schema, None)
            last[m.partition()] = m.offset()
            seen += 1
        consumer.store_offsets(offsets=[TopicPartition(TOPIC, p, o + 1) for p, o in last.items()])
    elapsed = time.perf_counter() - first
    consumer.close()
    return count / elapsed


def runtime(count: int, concurrency: int, database_url: str | None) -> float:
    """Events per second of the runtime (no-op handler; idempotency step when a database is given)."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    group = ConsumerGroup(name, database_url=database_url, idempotent=database_url is not None)
    clock = {"first": None, "last": None, "n": 0}
    lock = threading.Lock()

    @group.handler(AppWasCreated)
    def noop(event, ctx):
        now = time.perf_counter()
        with lock:
            if clock["first"] is None:
                clock["first"] = now
            clock["last"] = now
            clock["n"] += 1

    runner = GroupRunner(group, concurrency=concurrency, health_port=0)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    while runner.stats()["handled"] + runner.stats()["duplicates"] < count:
        time.sleep(0.05)
        if runner.finished.is_set():
            raise RuntimeError("the runner stopped early")
    runner.stop()
    thread.join(60)
    return clock["n"] / (clock["last"] - clock["first"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--db-events", type=int, default=10_000, help="events for the idempotency runs")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="raw/runtime pairs; the best of each is kept")
    parser.add_argument("--no-db", action="store_true", help="skip the idempotency runs")
    args = parser.parse_args(argv)

    bootstrap = get_settings().bootstrap()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, args.partitions, 1)])[TOPIC].result(30)
    try:
        print(f"python {platform.python_version()}, confluent-kafka {confluent_kafka.version()[0]} "
              f"(librdkafka {confluent_kafka.libversion()[0]}), {os.cpu_count()} CPUs; "
              f"{args.events} events, {args.partitions} partitions, {args.keys} keys, concurrency {args.concurrency}")
        produce(bootstrap, args.events, args.keys)
        raw, typed, rt = 0.0, 0.0, 0.0
        for _ in range(args.rounds):  # taking turns, so that a busy machine slows them alike
            raw = max(raw, raw_loop(bootstrap, args.events))
            typed = max(typed, raw_loop(bootstrap, args.events, typed=True))
            rt = max(rt, runtime(args.events, args.concurrency, None))
        print(f"{'raw loop, fastavro dicts':<44}{raw:>12,.0f} events/s")
        print(f"{'raw loop, AvroCodec events + headers':<44}{typed:>12,.0f} events/s   ratio {typed / raw:.2f}")
        print(f"{'runtime, no-op handler':<44}{rt:>12,.0f} events/s   ratio {rt / raw:.2f} "
              f"(to the typed raw loop: {rt / typed:.2f})")
        if not args.no_db:
            n = min(args.db_events, args.events)
            sqlite_url = f"sqlite:///{Path(os.environ['EVENTS_HOME']) / 'bench.db'}"
            rate = runtime(n, args.concurrency, sqlite_url)
            print(f"{'runtime + idempotency on SQLite':<44}{rate:>12,.0f} events/s   ratio {rate / raw:.2f}  "
                  f"({n} events)")
            from tests.support.postgres import postgres_server

            with postgres_server() as url:
                rate = runtime(n, args.concurrency, url)
            print(f"{'runtime + idempotency on PostgreSQL':<44}{rate:>12,.0f} events/s   ratio {rate / raw:.2f}  "
                  f"({n} events)")
    finally:
        topics = [TOPIC] + [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{PREFIX}.")]
        for future in admin.delete_topics(sorted(set(topics))).values():
            try:
                future.result(30)
            except Exception:  # noqa: BLE001
                pass


if __name__ == "__main__":
    main()
