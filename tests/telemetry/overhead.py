"""What telemetry costs the consumer: throughput of one in-process ``GroupRunner`` (no-op handler,
no idempotency database) with telemetry off, with metrics (Prometheus reader, as ``events run``
has it) and with metrics and traces (every span exported to a batch processor that drops them).

Not a test: run it against a broker and read the figures (median of ``--rounds``; the modes take
turns each round, each on a fresh consumer group over the same pre-published events).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python -m tests.telemetry.overhead [--events 50000]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from dify_events.consumers.group import ConsumerGroup
from dify_events.schemas.settings import Settings
from dify_events.schemas.topics import await_served
from tests.consumers.support import app_event, codec, event_headers, running, wait_until


class DropSpans:
    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=0):
        return True


def providers(mode: str):
    tracer_provider = meter_provider = None
    if mode in ("metrics", "metrics+traces"):
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CollectorRegistry
        meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=CollectorRegistry())])
    if mode == "metrics+traces":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        tracer_provider = TracerProvider()
        # ignore: DropSpans is a duck-typed SpanExporter, so that the SDK is imported only in this mode
        processor = BatchSpanProcessor(DropSpans(), max_queue_size=200_000)  # type: ignore[arg-type]
        tracer_provider.add_span_processor(processor)
    return tracer_provider, meter_provider


def one_run(mode: str, prefix: str, events: int, bootstrap: str) -> tuple[float, float]:
    """(messages per second of wall time, CPU microseconds of this process per message)."""
    group = ConsumerGroup(f"overhead-{uuid.uuid4().hex[:8]}")
    group.handler("app_was_created", idempotent=False)(lambda event, ctx: None)
    tracer_provider, meter_provider = providers(mode)
    settings = Settings(topic_prefix=prefix, bootstrap_servers=bootstrap)
    options = {k: v for k, v in (("tracer_provider", tracer_provider), ("meter_provider", meter_provider)) if v}
    with running(group, settings=settings, concurrency=4, **options) as runner:
        wait_until(lambda: runner.stats()["handled"] > 0, 60, "the first message")
        started, cpu, first = time.perf_counter(), time.process_time(), runner.stats()["handled"]
        wait_until(lambda: runner.stats()["handled"] == events, 600, "every message")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    for provider in (tracer_provider, meter_provider):
        if provider is not None:
            provider.shutdown()
    return (events - first) / elapsed, cpu * 1e6 / (events - first)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="off,metrics,metrics+traces")
    args = parser.parse_args(argv)
    bootstrap = Settings().bootstrap()
    prefix = f"ovh{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.app"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
    await_served(admin, {topic: 4})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(args.events):
        event = app_event(f"app-{i % 1000}", i)
        while True:
            try:
                # ignore: confluent-kafka's stub wants list[tuple[str, str | bytes | None]], and lists are invariant
                producer.produce(topic, codec.encode(event), event.key().encode(),
                                 headers=event_headers(event))  # type: ignore[arg-type]
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    modes = args.modes.split(",")
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    try:
        for _ in range(args.rounds):
            for mode in modes:
                results[mode].append(one_run(mode, prefix, args.events, bootstrap))
                rate, cpu = results[mode][-1]
                print(f"{mode:>15}: {rate:9.0f} msg/s {cpu:6.1f} CPU us/msg", flush=True)
    finally:
        admin.delete_topics([topic] + [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)])
    base = statistics.median(r for r, _ in results[modes[0]])
    base_cpu = statistics.median(c for _, c in results[modes[0]])
    print(f"median of {args.rounds} rounds, {args.events} events, 4 partitions, concurrency 4, no-op handler:")
    for mode in modes:
        rate = statistics.median(r for r, _ in results[mode])
        cpu = statistics.median(c for _, c in results[mode])
        print(f"{mode:>15}: {rate:9.0f} msg/s ({rate / base - 1:+.1%}), {cpu:6.1f} CPU us/msg "
              f"({cpu / base_cpu - 1:+.1%}) vs {modes[0]}")


if __name__ == "__main__":
    main()
