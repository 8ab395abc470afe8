"""``MetricsObserver``: test_metrics.py's workload through the public harness (no Kafka), the same
counter and histogram values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dify_events.consumers.telemetry.metrics import HistogramCollector
from dify_events.consumers.testing import GroupHarness
from dify_events.schemas import headers as H
from tests.consumers import sample_handlers
from tests.consumers.support import app_event
from tests.telemetry.support import points, value

MINE = {"group": "tel-observed", "event_type": "app_was_created"}
SCOPE = {"otel_scope_name": "consumers", "otel_scope_version": "", "otel_scope_schema_url": ""}


def harness_with(meter_provider, tmp_path, **options) -> tuple[GroupHarness, sample_handlers.Behaviour]:
    behaviour = sample_handlers.Behaviour(fail={"app-flaky": 1, "app-broken": -1})
    group, _ = sample_handlers.recording_group("tel-observed", behaviour, tables=sample_handlers.metadata,
                                               max_attempts=3, **options)
    return GroupHarness(group, f"sqlite:///{tmp_path / 'metrics.db'}", create_tables=True,
                        meter_provider=meter_provider), behaviour


def test_the_workload_of_test_metrics_counts_the_same_without_kafka(meters, tmp_path):
    provider, reader = meters
    # Given a group whose handler fails once on app-flaky and always on app-broken (three attempts)
    harness, _ = harness_with(provider, tmp_path)
    fine = [app_event(f"app-{i}", i) for i in range(3)]
    with harness:
        # When 3 fine events, the flaky one, the broken one and a duplicate are sent
        outcomes = [harness.send(event).outcome
                    for event in [*fine, app_event("app-flaky", 3), app_event("app-broken", 4), fine[0]]]
    assert outcomes == ["handled"] * 4 + ["dead_lettered", "duplicate"]
    # Then the counters say exactly what happened, under the runtime's names and labels
    collected = points(reader)
    assert value(collected, "events.messages.handled", **MINE) == 4
    assert value(collected, "events.messages.duplicates", **MINE) == 1
    assert value(collected, "events.messages.retried", **MINE) == 3      # flaky once, broken twice
    assert value(collected, "events.messages.failed", **MINE) == 4       # flaky 1 + broken 3 attempts
    assert value(collected, "events.messages.failed", **MINE, error_class="RuntimeError") == 4
    assert value(collected, "events.messages.dead_lettered", **MINE) == 1
    assert value(collected, "events.messages.abandoned", **MINE) == 0
    # ... and the histograms one point per handler attempt, and one latency per handled message
    registry = CollectorRegistry()
    registry.register(HistogramCollector(provider))
    durations = {o: registry.get_sample_value("events_handler_duration_seconds_count", {**MINE, **SCOPE, "outcome": o})
                 for o in ("ok", "error")}
    assert durations == {"ok": 4, "error": 4}
    assert registry.get_sample_value("events_end_to_end_latency_seconds_count", {**MINE, **SCOPE}) == 4


def test_a_dead_letter_of_undecodable_bytes_is_counted_under_its_header_type(meters, tmp_path):
    provider, reader = meters
    harness, _ = harness_with(provider, tmp_path)
    with harness:
        assert harness.send_raw(b"not avro", headers=[(H.EVENT_TYPE, "app_was_created")]).dead_lettered
    collected = points(reader)
    assert value(collected, "events.messages.dead_lettered", **MINE) == 1
    assert value(collected, "events.messages.failed", **MINE) == 0  # no handler attempt


def test_a_committed_batch_is_counted_with_its_messages(meters, tmp_path):
    provider, reader = meters
    harness, _ = harness_with(provider, tmp_path, batch_max=10)
    with harness:
        assert all(r.handled and r.batched for r in harness.send_batch([app_event(f"app-b{i}", i) for i in range(3)]))
    collected = points(reader)
    assert value(collected, "events.consumer.batches", group="tel-observed", result="committed") == 1
    assert value(collected, "events.consumer.batches", group="tel-observed", result="rolled_back") == 0
    assert value(collected, "events.messages.batched", group="tel-observed") == 3
    assert value(collected, "events.messages.handled", **MINE) == 3


def test_without_a_meter_provider_the_harness_has_no_observer(tmp_path):
    harness, _ = harness_with(None, tmp_path)
    with harness:
        assert not harness.resources.observers
