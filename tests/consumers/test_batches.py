"""Batched transactions on the real broker: a backlog handled in batches, once, in each key's order; a
poison event dead-lettered once while its batch commits; a database lost mid-batch loses nothing."""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import OperationalError

from dify_events.consumers.group import ConsumerGroup
from dify_events.schemas.events import AppWasCreated
from tests.consumers import sample_handlers
from tests.consumers.sample_handlers import sample_effects
from tests.consumers.support import app_event, nothing_more, publish, read_messages, running, wait_until


def publish_backlog(producer_factory, topic: str, count: int, keys: int) -> list[AppWasCreated]:
    """``count`` events over ``keys`` apps, published before the group runs: a backlog."""
    events = [app_event(f"app-{i % keys}", i) for i in range(count)]
    publish(producer_factory(), topic, events)
    return events


def by_key(effects: list[tuple[str, str, int]]) -> dict[str, list[int]]:
    """Each app's sequence numbers in the order their effects were committed."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for _, app_id, seq in effects:
        seqs[app_id].append(seq)
    return dict(seqs)


@pytest.mark.parametrize("batch", [False, True], ids=["handler", "batch-handler"])
def test_a_backlog_over_many_keys_is_handled_once_in_batches_and_in_each_keys_order(
        kafka_env, app_topic, group_topics, producer_factory, effects_db, batch):
    # Given a backlog of 600 events over 40 keys on 3 partitions (a handler of one event, or of a list)
    topic = app_topic(partitions=3)
    group, behaviour = sample_handlers.recording_group(database_url=effects_db, batch_max=50, batch=batch)
    group_topics(group.name)
    events = publish_backlog(producer_factory, topic, 600, 40)
    # When a group with 4 workers works through it
    with running(group, concurrency=4) as runner:
        wait_until(lambda: runner.stats()["handled"] == 600, 120, "600 events handled")
        assert runner.batch_runner is not None
        batches = runner.batch_runner.committed
    # Then batches formed (fewer transactions than events), every effect is there once, each key's in order
    assert 0 < batches < 600
    assert runner.stats()["duplicates"] == 0 and runner.stats()["dead_lettered"] == 0
    effects = sample_handlers.effects(effects_db)
    assert sorted(e[0] for e in effects) == sorted(e.event_id for e in events)
    assert by_key(effects) == {f"app-{k}": list(range(k, 600, 40)) for k in range(40)}
    assert behaviour.overlaps == []
    # and a batch handler took runs of several events in one call
    assert not batch or max(map(len, behaviour.batch_calls)) > 1


@pytest.mark.parametrize("batch", [False, True], ids=["handler", "batch-handler"])
def test_a_poison_event_in_a_batch_is_dead_lettered_once_and_the_rest_commit_once(
        kafka_env, app_topic, group_topics, producer_factory, effects_db, dlq_reader, batch):
    # Given a backlog of 300 events over 10 keys with, in its middle, one event that always fails (for a batch
    # handler, the events of its call leave the batch with it, and run alone)
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=effects_db, max_attempts=3, min_backoff_s=0.05,
                                                       batch=batch)
    group_topics(group.name)
    behaviour.fail["poison"] = -1
    events = [app_event(f"app-{i % 10}", i) for i in range(300)]
    poison = app_event("poison", 1000)
    events.insert(150, poison)
    publish(producer_factory(), topic, events)
    # When the group works through it
    with running(group, concurrency=4) as runner:
        wait_until(lambda: runner.stats()["handled"] == 300 and runner.stats()["dead_lettered"] == 1, 120,
                   "300 events handled and 1 dead-lettered")
        assert runner.batch_runner is not None and runner.batch_runner.committed > 0
        # Then the poison event was tried three times (the first in its batch) and dead-lettered once
        reader = dlq_reader(group.name)
        [letter] = read_messages(reader, 1)
        assert nothing_more(reader, 1.0) == []
    assert letter.key() == b"poison" and behaviour.calls["poison"] == 3
    # and every other event's effect committed once, in its key's order
    effects = sample_handlers.effects(effects_db)
    assert sorted(e[0] for e in effects) == sorted(e.event_id for e in events if e is not poison)
    assert by_key(effects) == {f"app-{k}": list(range(k, 300, 10)) for k in range(10)}


def test_a_database_lost_mid_batch_loses_nothing_and_does_nothing_twice(
        kafka_env, app_topic, group_topics, producer_factory, effects_db):
    # Given a handler whose database connection goes away once, at the 120th event, while a batch is open:
    # on PostgreSQL its server process is terminated; on SQLite the driver fails with an I/O error
    topic = app_topic()
    group = ConsumerGroup("lost-db", database_url=effects_db, tables=sample_handlers.metadata, max_attempts=3,
                          min_backoff_s=0.05)
    lost = threading.Event()
    calls: dict[int, int] = defaultdict(int)

    @group.handler(AppWasCreated)
    def record(event: AppWasCreated, ctx) -> None:
        seq = int(event.name.rsplit("-", 1)[-1])
        calls[seq] += 1
        ctx.session.execute(insert(sample_effects).values(event_id=event.event_id, app_id=event.app_id, seq=seq,
                                                          attempt=ctx.message.attempt, group_name=ctx.group))
        if seq == 120 and not lost.is_set():
            lost.set()
            if effects_db.startswith("postgresql"):
                ctx.session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            raise OperationalError("INSERT ...", {}, sqlite3.OperationalError("disk I/O error"))

    group_topics(group.name)
    events = publish_backlog(producer_factory, topic, 300, 8)
    # When the group works through the backlog
    with running(group, concurrency=4) as runner:
        wait_until(lambda: runner.stats()["handled"] == 300, 120, "300 events handled")
        assert runner.batch_runner is not None
        # Then the batch holding the 120th was rolled back whole, and its events ran again, alone
        assert lost.is_set() and runner.batch_runner.rolled_back >= 1 and runner.batch_runner.committed > 0
        assert calls[120] == 2
    # and every event's effect is there exactly once, each key's in order, nothing dead-lettered
    assert runner.stats()["dead_lettered"] == 0 and runner.stats()["duplicates"] == 0
    effects = sample_handlers.effects(effects_db)
    assert sorted(e[0] for e in effects) == sorted(e.event_id for e in events)
    assert by_key(effects) == {f"app-{k}": list(range(k, 300, 8)) for k in range(8)}


def test_a_backlog_delivered_again_after_its_commit_was_lost_is_all_duplicates(
        kafka_env, app_topic, group_topics, producer_factory, effects_db, admin):
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    from dify_events.consumers.config import group_id

    # Given a backlog of 300 events handled in batches
    topic = app_topic()
    group, _ = sample_handlers.recording_group(database_url=effects_db)
    group_topics(group.name)
    events = publish_backlog(producer_factory, topic, 300, 12)
    with running(group, concurrency=4) as runner:
        wait_until(lambda: runner.stats()["handled"] == 300, 120, "300 events handled")
    # And the group's offsets lost (rewound to the start), as when a process dies between COMMIT and offset store
    for future in admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group_id(kafka_env, group.name), [TopicPartition(topic, 0, 0)])]).values():
        future.result(30)
    # When the group runs again and gets every event a second time
    again, behaviour = sample_handlers.recording_group(database_url=effects_db)
    with running(again, concurrency=4) as runner:
        wait_until(lambda: runner.stats()["duplicates"] == 300, 120, "300 duplicates")
        assert runner.batch_runner is not None and runner.batch_runner.committed > 0
    # Then batches found them all claimed: no handler ran, every effect is there once
    assert runner.stats()["handled"] == 0 and sum(behaviour.calls.values()) == 0
    assert sorted(e[0] for e in sample_handlers.effects(effects_db)) == sorted(e.event_id for e in events)
