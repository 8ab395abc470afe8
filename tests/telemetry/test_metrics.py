"""Metric values after a known workload, read with the SDK's in-memory reader."""

from __future__ import annotations

from producers.producer import EventProducer
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
    # ... and the histograms counted one point per handler attempt, and one latency per handled message
    durations = {attrs["outcome"]: p.count for attrs, p in collected["events.handler.duration"]}
    assert durations == {"ok": 4, "error": 4}
    [(attrs, latency)] = collected["events.end_to_end.latency"]
    assert attrs == mine and latency.count == 4 and latency.min >= 0


def _lag_once_all_zero(reader, topic):
    lag = {(a["topic"], a["partition"]): v for a, v in points(reader).get("events.consumer.lag", [])
           if a["group"] == "tel-metrics"}
    return lag if len(lag) == 4 and not any(lag.values()) else None
