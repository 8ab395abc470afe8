"""Idempotency: an event delivered twice has its effects once; claim and effects share a transaction."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from dify_events.consumers.config import group_id
from dify_events.consumers.idempotency import CLAIMS_PER_STATEMENT, IdempotencyStore, make_engine, processed_events
from dify_events.schemas import headers as H
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, harnessed, publish, running, wait_until


def test_the_same_event_twice_has_its_effect_once(database_url):
    # Given one event delivered twice (a producer retry, an outbox relay run twice)
    harness, behaviour = harnessed(database_url)
    event = app_event("app-1", 1)
    # When the group takes both
    with harness:
        first, second = harness.send(event), harness.send(event)
    # Then the handler ran once and the second delivery was skipped
    assert first.handled and second.duplicate and second.message.offset() == 1
    assert behaviour.calls["app-1"] == 1
    assert sample_handlers.effects(database_url) == [(event.event_id, "app-1", 1)]


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


def test_a_replay_with_reprocess_runs_the_handler_again_and_stamps_the_claim(database_url):
    # Given an event handled once
    harness, behaviour = harnessed(database_url)
    event = app_event("app-1", 1)
    with harness:
        assert harness.send(event).handled
        store = IdempotencyStore(harness.engine, harness.group.name)
        with harness.session() as session:
            stamp = session.execute(select(processed_events.c.processed_at)).scalar_one()
        # When it is replayed twice: once plainly, once with events-reprocess: 1
        plain = harness.send(event)
        again = harness.send(event, headers={H.REPROCESS: "1"})
        # Then the plain replay was skipped, the reprocess ran the handler again, and the claim was stamped anew
        assert plain.duplicate and again.handled
        assert behaviour.calls["app-1"] == 2
        with harness.session() as session:
            rows = session.execute(select(processed_events.c.idempotency_key, processed_events.c.processed_at)).all()
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
    from dify_events.consumers.breaker import OutageBreaker
    from dify_events.consumers.pipeline import Idempotency
    from dify_events.consumers.pipeline.step import Resources
    from dify_events.schemas.codec import AvroCodec

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
    # And closing the step ended its purging before releasing the engine
    assert all(t.name != purging for t in threading.enumerate())


def _statements(engine) -> list[str]:
    """The SQL statements ``engine`` runs from now on (to count round trips)."""
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: seen.append(statement))
    return seen


def test_claim_many_claims_new_keys_in_one_statement_and_reports_the_duplicates(database_url):
    # Given a store where key-2 was claimed before
    engine = make_engine(database_url)
    store = IdempotencyStore(engine, "g")
    store.create()
    with Session(engine) as session, session.begin():
        store.claim(session.connection(), "key-2", "e-old")
    statements = _statements(engine)
    # When four keys (key-2 among them, and key-3 given twice) are claimed at once
    with Session(engine) as session, session.begin():
        claimed = store.claim_many(session.connection(),
                                   [("key-4", "e-4"), ("key-2", "e-2"), ("key-3", "e-3"), ("key-1", "e-1"),
                                    ("key-3", "e-3b")])
    # Then the three new keys are claimed by one INSERT, in key order, and key-2 is left as it was
    assert claimed == {"key-1", "key-3", "key-4"}
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1
    with engine.connect() as conn:
        rows = dict(conn.execute(select(processed_events.c.idempotency_key, processed_events.c.event_id)).all())
    assert rows == {"key-1": "e-1", "key-2": "e-old", "key-3": "e-3", "key-4": "e-4"}
    engine.dispose()


def test_claim_many_splits_a_large_batch_into_statements_and_unclaim_frees_a_key(database_url):
    # Given more keys than one statement takes
    engine = make_engine(database_url)
    store = IdempotencyStore(engine, "g")
    store.create()
    count = CLAIMS_PER_STATEMENT + 7
    rows = [(f"key-{i:04d}", f"e-{i}") for i in range(count)]
    statements = _statements(engine)
    # When they are claimed, and one of them unclaimed, in one transaction
    with Session(engine) as session, session.begin():
        claimed = store.claim_many(session.connection(), rows)
        store.unclaim(session.connection(), ["key-0003"])
    # Then two INSERTs claimed them all, and the unclaimed key is free again
    assert claimed == {key for key, _ in rows}
    assert len([s for s in statements if s.lstrip().upper().startswith("INSERT")]) == 2
    assert not store.is_processed("key-0003") and store.is_processed("key-0004")
    with Session(engine) as session, session.begin():
        assert store.claim_many(session.connection(), rows) == {"key-0003"}
    engine.dispose()


def test_claim_many_waits_for_a_concurrent_claim_and_sees_it(database_url):
    # Given a first transaction that claims key-2 and stays open for a moment
    engine = make_engine(database_url)
    store = IdempotencyStore(engine, "g")
    store.create()
    claimed_first = threading.Event()

    def first():
        with Session(engine) as session, session.begin():
            store.claim(session.connection(), "key-2", "e-2")
            claimed_first.set()
            time.sleep(0.5)  # a hold, as in the single-claim test above

    thread = threading.Thread(target=first)
    thread.start()
    claimed_first.wait(10)
    # When a batch claims key-1..key-3 meanwhile
    with Session(engine) as session, session.begin():
        claimed = store.claim_many(session.connection(), [("key-1", "e-1"), ("key-2", "e-2"), ("key-3", "e-3")])
    thread.join()
    engine.dispose()
    # Then it got the two others and saw key-2 as a duplicate
    assert claimed == {"key-1", "key-3"}


def test_a_new_sqlite_database_another_process_holds_is_put_in_wal_mode_once_it_is_free(tmp_path):
    # Given a new SQLite database (rollback journal, as another tool made it) whose write lock another
    # connection holds for a moment, as a pod starting beside ours would
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x INTEGER)")
    other.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.5, other.execute, ["COMMIT"])
    released.start()
    try:
        # When the runtime's engine connects (switching to WAL needs the lock, and SQLite waits for none)
        engine = make_engine(f"sqlite:///{path}")
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        engine.dispose()
    finally:
        released.join()
        other.close()
    # Then it waited for the lock instead of failing with "database is locked", and the database is in WAL mode
    assert mode == "wal"
