"""Retries: transient failures are retried with backoff; spent retries go to the dead-letter topic;
a dependency outage pauses the group instead of flooding the dead-letter topic."""

from __future__ import annotations

import time

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.consumers import sample_handlers
from tests.consumers.support import app_event, harnessed, nothing_more, publish, read_messages, running, wait_until


def db_down_error() -> OperationalError:
    return OperationalError("INSERT INTO sample_effects ...", {}, ConnectionRefusedError("connection refused"))


def test_a_transient_failure_is_retried_and_the_effect_happens_once(database_url):
    # Given a handler that fails twice on app-1, then succeeds
    harness, behaviour = harnessed(database_url, max_attempts=5, min_backoff_s=0.01)
    behaviour.fail["app-1"] = 2
    event = app_event("app-1", 1)
    # When the group takes it
    with harness:
        result = harness.send(event)
        with harness.session() as session:
            rows = session.execute(text("SELECT event_id, attempt FROM sample_effects")).all()
            claims = session.execute(text("SELECT count(*) FROM processed_events")).scalar_one()
    # Then it took three attempts, two of them rolled back, and the effect is there once
    assert result.handled and (result.attempts, result.retries, len(result.backoffs)) == (3, 2, 2)
    assert behaviour.calls["app-1"] == 3
    assert result.dead_letter is None and harness.dead_letters == []
    assert [tuple(r) for r in rows] == [(event.event_id, 3)]
    assert claims == 1


def test_max_retry_time_bounds_the_retrying(kafka_env, app_topic, group_topics, producer_factory, sqlite_db,
                                            dlq_reader):
    # Given a handler that always fails, many attempts allowed but only half a second
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(
        database_url=sqlite_db, handler_options={"max_attempts": 1000, "max_retry_time_s": 0.5, "min_backoff_s": 0.05,
                                                 "max_backoff_s": 0.1})
    group_topics(group.name)
    behaviour.fail["app-1"] = -1
    publish(producer_factory(), topic, [app_event("app-1", 1)])
    # When the group runs
    started = time.monotonic()
    with running(group) as runner:
        wait_until(lambda: runner.stats()["dead_lettered"] == 1)
    # Then it was dead-lettered after about half a second, not a thousand attempts
    assert time.monotonic() - started < 15
    [dead] = read_messages(dlq_reader(group.name), 1)
    attempts = int(dict(dead.headers())["dlq-attempts"])
    assert 2 <= attempts < 20 and attempts == behaviour.calls["app-1"]


def test_a_message_in_backoff_holds_up_neither_the_poll_loop_nor_other_keys(kafka_env, app_topic, group_topics,
                                                                            producer_factory, sqlite_db):
    # Given a key whose first attempt fails and then backs off for 3 seconds
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=sqlite_db,
                                                       handler_options={"min_backoff_s": 3.0, "max_attempts": 2})
    group_topics(group.name)
    behaviour.fail["app-slow"] = 1
    publish(producer_factory(), topic, [app_event("app-slow", 0)] + [app_event(f"app-{i}", i) for i in range(1, 21)])
    # When the group runs
    with running(group, concurrency=2) as runner:
        # Then the other 20 keys are handled while the first one still waits
        wait_until(lambda: runner.stats()["handled"] == 20, 10)
        assert behaviour.calls["app-slow"] == 1
        assert runner.is_live()
        # And the waiting one is handled after its backoff
        wait_until(lambda: runner.stats()["handled"] == 21, 20)


def test_a_dependency_outage_pauses_the_group_instead_of_dead_lettering(kafka_env, app_topic, group_topics,
                                                                        producer_factory, sqlite_db, dlq_reader):
    # Given a handler whose dependency is down for 4 seconds (OperationalError), and retries that would be
    # spent well within that time
    topic = app_topic(partitions=2)
    group, behaviour = sample_handlers.recording_group(
        database_url=sqlite_db, max_attempts=2, min_backoff_s=0.05, outage_threshold=3, outage_min_backoff_s=0.5,
        outage_max_backoff_s=1.0)
    group_topics(group.name, partitions=2)
    behaviour.outage_error = db_down_error()
    behaviour.outage_until = time.monotonic() + 4.0
    events = [app_event(f"app-{i % 6}", i) for i in range(30)]
    publish(producer_factory(), topic, events)
    # When the group runs through the outage
    with running(group, concurrency=4) as runner:
        wait_until(lambda: runner.outage_pauses >= 1, 10, "the group to pause")
        wait_until(lambda: runner.stats()["handled"] == 30, 60, "all 30 handled after the outage")
        # Then nothing was dead-lettered, and every event had its effect once
        assert runner.stats()["dead_lettered"] == 0
    assert sorted(e[0] for e in sample_handlers.effects(sqlite_db)) == sorted(e.event_id for e in events)
    assert nothing_more(dlq_reader(group.name), 1.0) == []


def test_two_workers_are_enough_to_see_an_outage(kafka_env, app_topic, group_topics, producer_factory, sqlite_db):
    # Given a handler whose dependency is down for 3 seconds, retries that last far longer than that, the
    # default threshold of 3 messages failing in a row, and only 2 workers (2 messages can fail at once)
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(
        database_url=sqlite_db, max_attempts=100, min_backoff_s=0.05, max_backoff_s=0.2, outage_threshold=3,
        outage_min_backoff_s=0.5, outage_max_backoff_s=1.0)
    group_topics(group.name)
    behaviour.outage_error = db_down_error()
    behaviour.outage_until = time.monotonic() + 3.0
    events = [app_event(f"app-{i}", i) for i in range(10)]
    publish(producer_factory(), topic, events)
    with running(group, concurrency=2) as runner:
        # Then the breaker opens on the streak of the two (not only when a message spends its retries)
        wait_until(lambda: runner.outage_pauses >= 1, 10, "the group to pause")
        assert "in a row" in runner.resources.breaker.last_reason
        wait_until(lambda: runner.stats()["handled"] == 10, 30, "all 10 handled after the outage")
        assert runner.stats()["dead_lettered"] == 0


def break_database(url: str):
    """Makes the database fail for real; returns the function that repairs it.
    PostgreSQL: the database refuses connections and its sessions are ended. SQLite: the table the
    handler writes disappears (renamed)."""
    if url.startswith("sqlite"):
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE sample_effects RENAME TO sample_effects_away"))

        def repair():
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE sample_effects_away RENAME TO sample_effects"))
            engine.dispose()

        return repair
    server, name = url.rsplit("/", 1)
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                     {"name": name})

    def repair():
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()

    return repair


def test_a_real_database_outage_pauses_instead_of_flooding_the_dead_letter_topic(
        kafka_env, app_topic, group_topics, producer_factory, effects_db, dlq_reader):
    # Given a running group that has handled 5 events
    topic = app_topic()
    group, _ = sample_handlers.recording_group(
        database_url=effects_db, max_attempts=2, min_backoff_s=0.05, outage_threshold=3, outage_min_backoff_s=0.5,
        outage_max_backoff_s=1.0)
    group_topics(group.name)
    producer = producer_factory()
    first = [app_event(f"app-{i}", i) for i in range(5)]
    later = [app_event(f"app-{i % 5}", i) for i in range(5, 25)]
    with running(group, concurrency=4) as runner:
        publish(producer, topic, first)
        wait_until(lambda: runner.stats()["handled"] == 5)
        # When the database fails for real while 20 more arrive
        repair = break_database(effects_db)
        try:
            publish(producer, topic, later)
            wait_until(lambda: runner.outage_pauses >= 1, 30, "the group to pause")
            wait_until(lambda: runner.resources.breaker.total_openings >= 2, 30, "the outage to last a while")
            assert runner.stats()["dead_lettered"] == 0
        finally:
            repair()
        # Then once it is back, everything is handled, nothing was dead-lettered
        wait_until(lambda: runner.stats()["handled"] == 25, 60, "all 25 handled after the repair")
        assert runner.stats()["dead_lettered"] == 0
    assert sorted(e[0] for e in sample_handlers.effects(effects_db)) == sorted(e.event_id for e in first + later)
    assert nothing_more(dlq_reader(group.name), 1.0) == []


def test_a_poison_message_with_a_dependency_error_is_still_dead_lettered_while_others_succeed(
        kafka_env, app_topic, group_topics, producer_factory, sqlite_db, dlq_reader):
    # Given one message that always fails with OperationalError
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=sqlite_db, max_attempts=3, min_backoff_s=0.2,
                                                       outage_threshold=3)
    group_topics(group.name)
    behaviour.fail["app-poison"] = -1
    behaviour.error = lambda message: db_down_error()
    producer = producer_factory()
    publish(producer, topic, [app_event("app-poison", 0)])
    with running(group, concurrency=4) as runner:
        wait_until(lambda: behaviour.calls["app-poison"] >= 1, 30, "the first failure")
        # When other messages of the same handler succeed meanwhile
        publish(producer, topic, [app_event(f"app-{i}", i) for i in range(1, 11)])
        # Then they prove the dependency is up, so the poison message is dead-lettered, not held
        wait_until(lambda: runner.stats()["dead_lettered"] == 1 and runner.stats()["handled"] == 10, 30)
    [dead] = read_messages(dlq_reader(group.name), 1)
    assert dead.key() == b"app-poison"
    assert dict(dead.headers())["dlq-error-class"] == b"sqlalchemy.exc.OperationalError"


def test_a_failing_message_with_no_evidence_of_health_is_held_not_dead_lettered(
        kafka_env, app_topic, group_topics, producer_factory, sqlite_db, dlq_reader):
    # Given one message that fails with OperationalError, and no other traffic for its handler
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=sqlite_db, max_attempts=2, min_backoff_s=0.05,
                                                       outage_min_backoff_s=0.2, outage_max_backoff_s=0.4)
    group_topics(group.name)
    behaviour.fail["app-1"] = 8
    behaviour.error = lambda message: db_down_error()
    publish(producer_factory(), topic, [app_event("app-1", 1)])
    # When its retries are spent again and again
    with running(group) as runner:
        wait_until(lambda: behaviour.calls["app-1"] >= 6, 30, "retries past max_attempts")
        # Then it is held as an outage (the group pauses) rather than dead-lettered, and handled once it works
        assert runner.stats()["dead_lettered"] == 0 and runner.outage_pauses >= 1
        wait_until(lambda: runner.stats()["handled"] == 1, 30)
    assert runner.stats()["dead_lettered"] == 0
    assert [e[1] for e in sample_handlers.effects(sqlite_db)] == ["app-1"]
