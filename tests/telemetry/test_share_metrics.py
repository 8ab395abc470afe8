"""A shared group's own figures: its acknowledgements by type and its records given again, counted
on the real broker (``events.share.acknowledgements``, ``events.share.redelivered``)."""

from __future__ import annotations

from tests.consumers import sample_handlers
from tests.consumers.support import app_event, publish, running, wait_until
from tests.telemetry.support import points, value


def test_a_shared_groups_acknowledgements_and_redeliveries_are_counted(
        kafka_env, topic_factory, group_topics, producer_factory, sqlite_db, meters):
    meter_provider, reader = meters
    # Given a shared group with one poller, a fine event, then one whose handler always fails (two attempts,
    # 10 s apart: then dead-lettered and rejected), then another fine one
    topic = topic_factory(f"{kafka_env}.app")
    group, behaviour = sample_handlers.recording_group(database_url=sqlite_db, delivery="shared", max_attempts=2,
                                                       min_backoff_s=10.0, max_backoff_s=10.0)
    behaviour.fail["app-bad"] = 99
    group_topics(group.name)
    producer = producer_factory()
    for key in ("app-0", "app-bad", "app-2"):
        publish(producer, topic, [app_event(key, 0)])  # each in a batch of its own
    # When a runner stops while the failing event waits for its second attempt (released), and another takes over
    with running(group, concurrency=1, meter_provider=meter_provider) as first:
        wait_until(lambda: first.stats()["retries"] == 1, 60, "the failing event waiting for its retry")
    with running(group, concurrency=1, meter_provider=meter_provider) as second:
        wait_until(lambda: first.stats()["handled"] + second.stats()["handled"] == 2
                   and second.stats()["dead_lettered"] == 1, 90, "both fine events handled, the other dead-lettered")
        # (its capacity, what the chart's KEDA trigger divides in-flight records by, is its one poller)
        assert value(points(reader), "events.consumer.capacity", group=group.name) == 1
    # Then the acknowledgements are counted by type as the runners made them: the fine events accepted, the
    # failing one released (with any record the first runner held unstarted) and then rejected; and each
    # released record counted as given again
    acks = first.acks + second.acks
    assert (acks["accept"], acks["reject"]) == (2, 1) and acks["release"] >= 1 and set(acks) == {"accept", "reject",
                                                                                                  "release"}
    collected = points(reader)
    for ack, n in acks.items():
        assert value(collected, "events.share.acknowledgements", group=group.name, type=ack) == n
    assert value(collected, "events.share.redelivered", group=group.name) == second.redelivered == acks["release"]
