"""Concurrency with order: messages of one key in order, one at a time; a slow key holds up no other."""

from __future__ import annotations

from collections import defaultdict

from tests.consumers import sample_handlers
from tests.consumers.support import app_event, publish, running, wait_until


def test_per_key_order_holds_with_concurrency_above_one(kafka_env, app_topic, group_topics, producer_factory,
                                                        effects_db):
    # Given 5 keys x 30 events on one partition, interleaved, and handling that takes a little time
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=effects_db)
    group_topics(group.name)
    behaviour.default_delay_s = 0.002
    events = [app_event(f"app-{i % 5}", i) for i in range(150)]
    publish(producer_factory(), topic, events)
    # When 4 workers handle them
    with running(group, concurrency=4) as runner:
        wait_until(lambda: runner.stats()["handled"] == 150)
    # Then each key's events were handled in publication order, never two of one key at once, and several
    # keys were handled side by side
    seen = defaultdict(list)
    for app_id, seq in behaviour.order:
        seen[app_id].append(seq)
    for k in range(5):
        assert seen[f"app-{k}"] == [i for i in range(150) if i % 5 == k]
    assert behaviour.overlaps == []
    committed_rows = defaultdict(list)
    for _, app_id, seq in sample_handlers.effects(effects_db):
        committed_rows[app_id].append(seq)
    assert committed_rows == seen


def test_a_slow_key_does_not_hold_up_the_others(kafka_env, app_topic, group_topics, producer_factory):
    # Given a slow key (0.5 s per event) published first, then 40 events of other keys, all on one partition
    # (handlers without a database transaction: on SQLite a slow transaction would hold the one write lock)
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(handler_options={"idempotent": False})
    group_topics(group.name)
    behaviour.delay_s["app-slow"] = 0.5
    slow = [app_event("app-slow", i) for i in range(6)]
    fast = [app_event(f"app-{i % 8}", 10 + i) for i in range(40)]
    publish(producer_factory(), topic, slow + fast)
    # When 3 workers handle them
    with running(group, concurrency=3) as runner:
        # Then the other keys are all done while the slow key is still working through its events
        wait_until(lambda: len([a for a, _ in behaviour.order if a != "app-slow"]) == 40, 10)
        assert len([a for a, _ in behaviour.order if a == "app-slow"]) < 6
        wait_until(lambda: runner.stats()["handled"] == 46, 20)
    assert [s for a, s in behaviour.order if a == "app-slow"] == list(range(6))
