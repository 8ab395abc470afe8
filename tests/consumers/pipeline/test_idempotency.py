"""Idempotency: an event delivered twice has its effects once; claim and effects share a transaction."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from sqlalchemy import select
from sqlalchemy.orm import Session

from consumers.config import group_id
from consumers.idempotency import IdempotencyStore, make_engine, processed_events
from schemas import headers as H
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, event_headers, publish, running, wait_until


def test_the_same_event_twice_has_its_effect_once(kafka_env, app_topic, group_topics, producer_factory, effects_db):
    # Given one event published twice (a producer retry, an outbox relay run twice)
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=effects_db)
    group_topics(group.name)
    event = app_event("app-1", 1)
    publish(producer_factory(), topic, [event, event])
    # When the group runs
    with running(group) as runner:
        wait_until(lambda: runner.stats()["handled"] + runner.stats()["duplicates"] == 2)
    # Then the handler ran once and the second delivery was skipped
    assert runner.stats()["handled"] == 1 and runner.stats()["duplicates"] == 1
    assert behaviour.calls["app-1"] == 1
    assert sample_handlers.effects(effects_db) == [(event.event_id, "app-1", 1)]


def test_a_consumer_restarted_before_its_commit_does_not_repeat_effects(
        kafka_env, app_topic, group_topics, producer_factory, effects_db, admin):
    # Given 20 events handled by a group
    topic = app_topic()
    group, _ = sample_handlers.recording_group(database_url=effects_db)
    group_topics(group.name)
    events = [app_event(f"app-{i % 4}", i) for i in range(20)]
    publish(producer_factory(), topic, events)
    with running(group, concurrency=4) as runner:
        wait_until(lambda: runner.stats()["handled"] == 20)
    # And its commit lost (the offsets rewound to where they were before it ran)
    future = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group_id(kafka_env, group.name), [TopicPartition(topic, 0, 0)])])
    for f in future.values():
        f.result(30)
    # When the group is started again and gets every event a second time
    again, behaviour = sample_handlers.recording_group(database_url=effects_db)
    with running(again, concurrency=4) as runner:
        wait_until(lambda: runner.stats()["duplicates"] == 20)
    # Then no handler ran again and every effect exists once
    assert runner.stats()["handled"] == 0 and sum(behaviour.calls.values()) == 0
    assert sorted(e[0] for e in sample_handlers.effects(effects_db)) == sorted(e.event_id for e in events)


def test_a_replay_with_reprocess_runs_the_handler_again_and_stamps_the_claim(
        kafka_env, app_topic, group_topics, producer_factory, effects_db):
    # Given an event handled once
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=effects_db)
    group_topics(group.name)
    event = app_event("app-1", 1)
    producer = producer_factory()
    publish(producer, topic, [event])
    with running(group) as runner:
        wait_until(lambda: runner.stats()["handled"] == 1)
        engine = make_engine(effects_db)
        store = IdempotencyStore(engine, group.name)
        with engine.connect() as conn:
            stamp = conn.execute(select(processed_events.c.processed_at)).scalar_one()
        # When it is replayed twice: once plainly, once with events-reprocess: 1
        publish(producer, topic, [event])
        publish(producer, topic, [event], headers=lambda e: event_headers(e, **{H.REPROCESS: b"1"}))
        wait_until(lambda: runner.stats()["handled"] == 2 and runner.stats()["duplicates"] == 1)
    # Then the plain replay was skipped, the reprocess ran the handler again, and the claim was stamped anew
    assert behaviour.calls["app-1"] == 2
    with engine.connect() as conn:
        rows = conn.execute(select(processed_events.c.idempotency_key, processed_events.c.processed_at)).all()
    engine.dispose()
    assert len(rows) == 1 and rows[0][0] == event.event_id and _aware(rows[0][1]) > _aware(stamp)
    assert store.is_processed(event.event_id)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_two_concurrent_claims_of_one_key_let_exactly_one_through(database_url):
    # Given a store, and a first transaction that claims a key and stays open for a moment
    engine = make_engine(database_url)
    store = IdempotencyStore(engine, "g")
    store.create()
    results: dict[str, bool] = {}
    claimed_first = threading.Event()

    def first():
        with Session(engine) as session, session.begin():
            results["first"] = store.claim(session.connection(), "key-1", "e-1")
            claimed_first.set()
            # a hold, not a wait: nothing signals that the second claim is blocked inside the
            # database; any length passes, 0.5 s lets the second reach the first's row most times
            time.sleep(0.5)

    thread = threading.Thread(target=first)
    thread.start()
    claimed_first.wait(10)
    # When a second transaction (a zombie consumer, a rebalance) claims the same key meanwhile
    with Session(engine) as session, session.begin():
        results["second"] = store.claim(session.connection(), "key-1", "e-1")
    thread.join()
    engine.dispose()
    # Then it waited for the first to commit and saw the claim
    assert results == {"first": True, "second": False}


def test_a_rolled_back_claim_leaves_the_key_free(database_url):
    # Given a claim whose transaction fails afterwards
    engine = make_engine(database_url)
    store = IdempotencyStore(engine, "g")
    store.create()
    try:
        with Session(engine) as session, session.begin():
            assert store.claim(session.connection(), "key-1", "e-1")
            raise RuntimeError("the handler failed")
    except RuntimeError:
        pass
    # Then the key can be claimed again
    with Session(engine) as session, session.begin():
        assert store.claim(session.connection(), "key-1", "e-1")
    engine.dispose()


def test_purge_expires_only_old_keys_of_its_own_group(database_url):
    # Given keys of two groups, some processed 8 days ago
    engine = make_engine(database_url)
    store, other = IdempotencyStore(engine, "g"), IdempotencyStore(engine, "other")
    store.create()
    old = datetime.now(UTC) - timedelta(days=8)
    with engine.begin() as conn:
        conn.execute(processed_events.insert(), [
            {"group_name": "g", "idempotency_key": "old", "event_id": "e1", "processed_at": old},
            {"group_name": "g", "idempotency_key": "new", "event_id": "e2", "processed_at": datetime.now(UTC)},
            {"group_name": "other", "idempotency_key": "old", "event_id": "e3", "processed_at": old},
        ])
    # When keys older than 7 days are purged for group g
    purged = store.purge(timedelta(days=7))
    # Then only g's old key is gone
    assert purged == 1
    assert not store.is_processed("old") and store.is_processed("new") and other.is_processed("old")
    engine.dispose()


def test_the_step_purges_old_keys_until_it_is_closed(database_url):
    # Given a group's key processed 8 days ago, and one processed now
    from consumers.breaker import OutageBreaker
    from consumers.pipeline import Idempotency
    from consumers.pipeline.step import Resources
    from schemas.codec import AvroCodec

    group, _ = sample_handlers.recording_group(database_url=database_url)
    engine = make_engine(database_url)
    store = IdempotencyStore(engine, group.name)
    store.create()
    with engine.begin() as conn:
        conn.execute(processed_events.insert(), [
            {"group_name": group.name, "idempotency_key": "old", "event_id": "e1",
             "processed_at": datetime.now(UTC) - timedelta(days=8)},
            {"group_name": group.name, "idempotency_key": "new", "event_id": "e2", "processed_at": datetime.now(UTC)},
        ])
    # When the group's Idempotency step is made to purge keys older than 7 days every 50 ms
    step = Idempotency(Resources(group=group, prefix="p", codec=AvroCodec(), breaker=OutageBreaker(group.name),
                                 database_url=database_url, idempotency_retention=timedelta(days=7),
                                 purge_interval_s=0.05))
    purging = f"events-purge-{group.name}"
    try:
        # Then the old key goes, the new one stays
        wait_until(lambda: not store.is_processed("old"), 30, "the old key to be purged")
        assert store.is_processed("new")
        assert any(t.name == purging for t in threading.enumerate())
    finally:
        step.close()
        engine.dispose()
    # And closing the step ends its purging
    wait_until(lambda: all(t.name != purging for t in threading.enumerate()), 10, "the purge thread to end")
