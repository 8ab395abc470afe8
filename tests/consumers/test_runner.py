"""The runner end to end: handling, commits, passing over other event types, shutdown."""

from __future__ import annotations

import gc
import sys

import pytest
from confluent_kafka import Consumer

from dify_events.consumers.config import group_id
from dify_events.consumers.pipeline import DeadLetters, Decode
from dify_events.consumers.runner import GC_THRESHOLD, SWITCH_INTERVAL_S
from dify_events.schemas.events import TenantWasCreated
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, codec, event_headers, publish, running, wait_until
from tests.recovery.support import wait_committed_to_end


def test_every_event_is_handled_once_and_committed(kafka_env, app_topic, group_topics, producer_factory,
                                                   effects_db, committed_offsets):
    # Given 40 events on 10 keys across 2 partitions
    topic = app_topic(partitions=2)
    group, _ = sample_handlers.recording_group(database_url=effects_db)
    group_topics(group.name)
    events = [app_event(f"app-{i % 10}", i) for i in range(40)]
    publish(producer_factory(), topic, events)
    # When the group runs until all are handled and then stops
    with running(group, concurrency=4) as runner:
        wait_until(lambda: runner.stats()["handled"] == 40, what="40 handled")
    # Then each event had its effect once, and the committed offsets are at the end of each partition
    assert sorted(e[0] for e in sample_handlers.effects(effects_db)) == sorted(e.event_id for e in events)
    assert sum(committed_offsets(group_id(kafka_env, group.name), topic, 2)) == 40


def test_other_event_types_are_passed_over_by_header_and_their_offsets_advance(
        kafka_env, topic_factory, group_topics, producer_factory, effects_db, committed_offsets):
    # Given a topic carrying an event type the group does not handle, between two it does
    topic = topic_factory(f"{kafka_env}.app")
    group, _ = sample_handlers.recording_group(database_url=effects_db)
    group_topics(group.name)
    producer = producer_factory()
    mine = [app_event("app-1", 1), app_event("app-1", 2)]
    other = TenantWasCreated(tenant_id="tenant-1", tenant_name="t")
    producer.produce(topic, value=codec.encode(mine[0]), key=b"app-1", headers=event_headers(mine[0]))
    # (a body that would not even decode: passing over must not look at it)
    producer.produce(topic, value=b"not avro at all", key=b"tenant-1", headers=event_headers(other))
    producer.produce(topic, value=codec.encode(mine[1]), key=b"app-1", headers=event_headers(mine[1]))
    producer.flush(30)
    # When the group runs
    with running(group) as runner:
        wait_until(lambda: runner.stats()["handled"] == 2 and runner.stats()["passed"] == 1)
    # Then the other type was passed over without a dead letter, and all three offsets are committed
    assert runner.stats()["dead_lettered"] == 0
    assert [e[0] for e in sample_handlers.effects(effects_db)] == [e.event_id for e in mine]
    assert committed_offsets(group_id(kafka_env, group.name), topic) == [3]


def test_a_stream_of_only_other_event_types_still_moves_the_committed_offset(
        kafka_env, topic_factory, group_topics, producer_factory, sqlite_db, committed_offsets):
    # Given a topic with only events the group does not handle
    topic = topic_factory(f"{kafka_env}.app")
    group, _ = sample_handlers.recording_group(database_url=sqlite_db)
    group_topics(group.name)
    others = [TenantWasCreated(tenant_id=f"tenant-{i}", tenant_name="t") for i in range(5)]
    publish(producer_factory(), topic, others)
    # When the group runs
    with running(group) as runner:
        wait_until(lambda: runner.stats()["passed"] == 5)
        # Then their offsets are committed, though no handler ran
        wait_until(lambda: committed_offsets(group_id(kafka_env, group.name), topic) == [5], 15)
    assert runner.stats()["handled"] == 0


def test_the_committed_offset_reaches_the_end_of_a_partition_written_in_transactions(
        kafka_env, app_topic, group_topics, producer_factory, sqlite_db, admin):
    # Given a committed transaction of three events, then an aborted one of two: besides the three,
    # the partition holds two transaction markers and two aborted messages no handler ever sees
    topic = app_topic()
    group, _ = sample_handlers.recording_group(database_url=sqlite_db)
    group_topics(group.name)
    producer = producer_factory(**{"transactional.id": f"{kafka_env}.tx"})
    producer.init_transactions(30)
    for app_id, count, commit in (("app-1", 3, True), ("app-2", 2, False)):
        producer.begin_transaction()
        publish(producer, topic, [app_event(app_id, i) for i in range(count)])
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    # When the group handles the three
    with running(group) as runner:
        wait_until(lambda: runner.stats()["handled"] == 3, what="3 handled")
        # Then it commits up to the partition's end, as Kafka's Java consumer does: Kafka's LAG is 0
        wait_committed_to_end(admin, group_id(kafka_env, group.name), topic)
    assert runner.stats()["handled"] == 3


def test_a_group_whose_pipeline_has_no_retries_runs_and_handles_events(
        kafka_env, app_topic, group_topics, producer_factory, committed_offsets):
    # Given a group with a pipeline of its own, without Retries (nor Idempotency: no database)
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(pipeline=[DeadLetters, Decode])
    group_topics(group.name)
    events = [app_event("app-1", 1), app_event("app-2", 2)]
    publish(producer_factory(), topic, events)
    # When it runs
    with running(group) as runner:
        # Then it starts and handles the events
        wait_until(lambda: runner.stats()["handled"] == 2, what="2 handled")
    assert sorted(behaviour.order) == [("app-1", 1), ("app-2", 2)]
    assert committed_offsets(group_id(kafka_env, group.name), topic) == [2]


def test_a_consumer_factory_makes_the_runners_consumer_from_its_configuration(
        kafka_env, app_topic, group_topics, producer_factory, committed_offsets):
    # Given a factory that records the configuration it is given and makes the real consumer
    topic = app_topic()
    group, _ = sample_handlers.recording_group(pipeline=[DeadLetters, Decode])
    group_topics(group.name)
    publish(producer_factory(), topic, [app_event("app-1", 1), app_event("app-2", 2)])
    made: list[dict] = []

    def factory(conf: dict) -> Consumer:
        made.append(conf)
        return Consumer(conf)

    # When the group runs with it
    with running(group, consumer_factory=factory) as runner:
        wait_until(lambda: runner.stats()["handled"] == 2, what="2 handled")
    # Then its one consumer came from the factory, with the group's id and the runner's settings
    [conf] = made
    assert conf["group.id"] == group_id(kafka_env, group.name)
    assert conf["enable.auto.offset.store"] is False
    assert committed_offsets(group_id(kafka_env, group.name), topic) == [2]


def test_a_runner_an_application_starts_tunes_the_interpreter_as_events_run_does(app_topic, group_topics):
    # Given CPython's defaults (as in an application that embeds GroupRunner, without `events run`)
    app_topic()
    group, _ = sample_handlers.recording_group(pipeline=[DeadLetters, Decode])
    group_topics(group.name)
    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(0.005)
    gc.set_threshold(700, 10, 10)
    try:
        # When a runner starts
        with running(group):
            # Then the threads hand the GIL over every 50 ms, and start-up's objects are frozen
            assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)  # kept in microseconds
            assert gc.get_threshold() == GC_THRESHOLD
            assert gc.get_freeze_count() > 0
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*threshold)
