"""Metric values after a known workload, read with the SDK's in-memory reader."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

from dify_events.consumers.telemetry.metrics import (
    SECONDS_BUCKETS,
    ConsumerMetrics,
    HistogramCollector,
    MetricsObserver,
    metric_key,
)
from dify_events.consumers.telemetry.setup import prometheus_reader
from dify_events.producers.producer import EventProducer
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, running, wait_until
from tests.telemetry.support import points, value


def test_metric_values_after_a_known_workload(kafka_env, topic_factory, group_topics, sqlite_db, meters):
    provider, reader = meters
    # Given 2 partitions and a group whose handler fails once on app-flaky and always on app-broken
    topic = topic_factory(f"{kafka_env}.app", partitions=2)
    retry_topic, _ = group_topics("tel-metrics", partitions=2)
    behaviour = sample_handlers.Behaviour(fail={"app-flaky": 1, "app-broken": -1})
    group, _ = sample_handlers.recording_group("tel-metrics", behaviour, database_url=sqlite_db,
                                               max_attempts=3, min_backoff_s=0.01)
    fine = [app_event(f"app-{i}", i) for i in range(3)]
    workload = [*fine, app_event("app-flaky", 3), app_event("app-broken", 4), fine[0]]  # fine[0] twice: a duplicate
    # When they are published with the SDK and the group runs until every message is done
    with EventProducer(meter_provider=provider) as producer:
        for event in workload:
            producer.publish(event)
        assert producer.flush(30) == 0
    with running(group, meter_provider=provider) as runner:
        wait_until(lambda: sum(runner.stats()[k] for k in ("handled", "duplicates", "dead_lettered")) == 6,
                   what="six messages done")
        # Then the lag of every assigned partition comes back to zero
        lag = wait_until(lambda: _lag_once_all_zero(reader, topic), 30, "the lag to come back to zero")
        assert lag == {(topic, "0"): 0, (topic, "1"): 0, (retry_topic, "0"): 0, (retry_topic, "1"): 0}
        # ... and nothing is in flight
        collected = points(reader)
        assert value(collected, "events.messages.in_flight", group="tel-metrics") == 0
        # ... of a capacity of its handler threads
        assert value(collected, "events.consumer.capacity", group="tel-metrics") == runner.concurrency
    # ... and the counters say exactly what happened
    mine = {"group": "tel-metrics", "event_type": "app_was_created"}
    assert value(collected, "events.published", event_type="app_was_created", outcome="delivered") == 6
    assert value(collected, "events.published", outcome="failed") == 0
    assert value(collected, "events.messages.handled", **mine) == 4
    assert value(collected, "events.messages.duplicates", **mine) == 1
    assert value(collected, "events.messages.retried", **mine) == 3      # flaky once, broken twice
    assert value(collected, "events.messages.failed", **mine) == 4       # flaky 1 + broken 3 attempts
    assert value(collected, "events.messages.dead_lettered", **mine) == 1
    assert value(collected, "events.messages.abandoned", **mine) == 0
    # ... and the histograms (Prometheus only) counted one point per handler attempt, and one latency
    # per handled message
    assert "events.handler.duration" not in collected and "events.end_to_end.latency" not in collected
    registry = CollectorRegistry()
    registry.register(HistogramCollector(provider))
    durations = {o: registry.get_sample_value("events_handler_duration_seconds_count", {**mine, **SCOPE, "outcome": o})
                 for o in ("ok", "error")}
    assert durations == {"ok": 4, "error": 4}
    latency = {s.name: s.value for family in registry.collect() for s in family.samples
               if s.name.startswith("events_end_to_end_latency_seconds_")
               and {k: v for k, v in s.labels.items() if k in ("group", "event_type")} == mine}
    assert latency["events_end_to_end_latency_seconds_count"] == 4
    assert latency["events_end_to_end_latency_seconds_sum"] >= 0


SCOPE = {"otel_scope_name": "consumers", "otel_scope_version": "", "otel_scope_schema_url": ""}


def test_histograms_bucket_like_prometheus_and_export_with_the_exporters_names():
    # Given a meter provider whose Prometheus reader's registry has the histogram collector
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[prometheus_reader(registry)])
    registry.register(HistogramCollector(provider))
    try:
        assert list(HistogramCollector(provider).collect()) == []  # nothing until a runner makes them
        metrics = ConsumerMetrics.of(provider)
        # When values land on a bound, between bounds and past the last one
        point = metric_key("g", "t", outcome="ok")
        for seconds in (0.001, 0.0011, 0.0, 5.0, 7200.0):
            metrics.observe("handler_duration", point, seconds)
        metrics.observe("latency", metric_key("g", "t"), 0.3)
        # Then the buckets are cumulative with inclusive upper bounds, written as the OTel exporter writes them
        labels = {"group": "g", "event_type": "t", "outcome": "ok", **SCOPE}

        def bucket(le):
            return registry.get_sample_value("events_handler_duration_seconds_bucket", {**labels, "le": le})

        assert [bucket(le) for le in ("0.001", "0.0025", "2.5", "5.0", "3600.0", "+Inf")] == [2, 3, 3, 4, 4, 5]
        assert len([1 for b in SECONDS_BUCKETS if bucket(f"{b}") is not None]) == len(SECONDS_BUCKETS)
        assert registry.get_sample_value("events_handler_duration_seconds_count", labels) == 5
        assert registry.get_sample_value("events_handler_duration_seconds_sum", labels) == pytest.approx(7205.0021)
        latency = {"group": "g", "event_type": "t", **SCOPE}
        assert registry.get_sample_value("events_end_to_end_latency_seconds_bucket", {**latency, "le": "0.25"}) == 0
        assert registry.get_sample_value("events_end_to_end_latency_seconds_bucket", {**latency, "le": "0.5"}) == 1
        assert registry.get_sample_value("events_end_to_end_latency_seconds_count", latency) == 1
    finally:
        provider.shutdown()


def test_the_figures_of_every_worker_thread_add_up_and_outlive_it():
    # Given one group's observer, and a meter provider read in memory and by Prometheus
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    registry.register(HistogramCollector(provider))
    observer = MetricsObserver(ConsumerMetrics.of(provider), "g")
    event = SimpleNamespace(occurred_at=datetime.now(UTC) - timedelta(seconds=1.5))  # 1 s to spare before 2.5
    job = SimpleNamespace(handler=SimpleNamespace(event_type="t"), event=event)

    def work(handled: int, duplicates: int) -> None:
        for _ in range(handled):
            observer.around_attempt(job, lambda _job: "handled")  # type: ignore[arg-type]
            observer.after_message(job, "handled")  # type: ignore[arg-type]
        for _ in range(duplicates):
            observer.after_message(job, "duplicate")  # type: ignore[arg-type]
        observer.after_message(job, "passed")  # type: ignore[arg-type] # not an outcome the metrics count

    try:
        # When three threads handle 1, 2 and 3 messages and skip 0, 1 and 2 duplicates, and end
        threads = [threading.Thread(target=work, args=(n, n - 1)) for n in (1, 2, 3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Then the counters and histograms hold the sums
        collected = points(reader)
        assert value(collected, "events.messages.handled", group="g", event_type="t") == 6
        assert value(collected, "events.messages.duplicates", group="g", event_type="t") == 3
        assert "events.messages.abandoned" not in collected  # a series appears with its first count
        labels = {"group": "g", "event_type": "t", **SCOPE}
        assert registry.get_sample_value("events_handler_duration_seconds_count", {**labels, "outcome": "ok"}) == 6
        assert registry.get_sample_value("events_handler_duration_seconds_count", {**labels, "outcome": "error"}) \
            is None
        assert registry.get_sample_value("events_end_to_end_latency_seconds_bucket", {**labels, "le": "1.0"}) == 0
        assert registry.get_sample_value("events_end_to_end_latency_seconds_bucket", {**labels, "le": "2.5"}) == 6
        assert 6 * 1.5 <= (registry.get_sample_value("events_end_to_end_latency_seconds_sum", labels) or 0) < 6 * 2.5
    finally:
        provider.shutdown()


def _lag_once_all_zero(reader, topic):
    lag = {(a["topic"], a["partition"]): v for a, v in points(reader).get("events.consumer.lag", [])
           if a["group"] == "tel-metrics"}
    return lag if len(lag) == 4 and not any(lag.values()) else None
