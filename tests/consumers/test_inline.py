"""Inline groups: first attempts on the poll loop's thread; what must wait goes to a worker, behind its key."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.exc import OperationalError

from dify_events.consumers.config import group_id
from dify_events.consumers.group import ConsumerGroup, GroupDefinitionError
from dify_events.consumers.pipeline import DEFAULT_PIPELINE, Retries
from dify_events.consumers.runner import GroupRunner
from dify_events.schemas.events import AppWasCreated
from dify_events.schemas.settings import Settings
from tests.consumers import sample_handlers
from tests.consumers.support import (
    app_event,
    codec,
    event_headers,
    nothing_more,
    publish,
    read_messages,
    running,
    wait_until,
)
from tests.consumers.test_batches import by_key


def poll_thread(group: ConsumerGroup) -> str:
    return f"runner-{group.name}"  # the thread tests.support.running runs the group's loop on


def test_an_inline_group_handles_every_event_on_the_poll_loops_thread_once(
        kafka_env, app_topic, group_topics, producer_factory, effects_db, committed_offsets):
    # Given 60 events on 6 keys across 2 partitions, for an inline group (one transaction per event)
    topic = app_topic(partitions=2)
    group, behaviour = sample_handlers.recording_group(database_url=effects_db, inline=True, batch_max=1)
    group_topics(group.name)
    events = [app_event(f"app-{i % 6}", i) for i in range(60)]
    publish(producer_factory(), topic, events)
    # When it runs until all are handled
    with running(group, concurrency=4) as runner:
        wait_until(lambda: runner.stats()["handled"] == 60, what="60 handled")
    # Then every handler call ran on the poll loop's thread, each effect is there once in its key's order,
    # and the offsets are committed to the end
    assert runner.inline
    assert {thread for _, _, thread in behaviour.threads} == {poll_thread(group)}
    effects = sample_handlers.effects(effects_db)
    assert sorted(e[0] for e in effects) == sorted(e.event_id for e in events)
    assert by_key(effects) == {f"app-{k}": list(range(k, 60, 6)) for k in range(6)}
    assert sum(committed_offsets(group_id(kafka_env, group.name), topic, 2)) == 60


def test_a_failure_on_the_poll_loop_is_retried_by_a_worker_and_its_key_keeps_its_order(
        kafka_env, app_topic, group_topics, producer_factory, effects_db):
    # Given an inline group whose handler fails once on the first event of app-1, published first, and 10 more
    # events of each of three keys on one partition
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=effects_db, inline=True, batch_max=1,
                                                       max_attempts=3, min_backoff_s=0.05)
    group_topics(group.name)
    behaviour.fail["app-1"] = 1
    events = [app_event("app-1", 0)] + [app_event(f"app-{i % 3}", i) for i in range(1, 31)]
    publish(producer_factory(), topic, events)
    # When it runs
    with running(group, concurrency=2) as runner:
        wait_until(lambda: runner.stats()["handled"] == 31, what="31 handled")
    # Then the failed attempt ran on the poll loop and the retry on a worker, after a backoff
    first = [thread for app, seq, thread in behaviour.threads if (app, seq) == ("app-1", 0)]
    assert first[0] == poll_thread(group) and first[1].startswith(f"events-{group.name}-") and len(first) == 2
    assert runner.stats()["retries"] == 1 and runner.stats()["dead_lettered"] == 0
    # and every effect is there once, each key's in its order (app-1's later events waited for the retry)
    effects = sample_handlers.effects(effects_db)
    assert sorted(e[0] for e in effects) == sorted(e.event_id for e in events)
    assert by_key(effects) == {"app-0": list(range(3, 31, 3)), "app-1": [0, *range(1, 31, 3)],
                               "app-2": list(range(2, 31, 3))}
    assert behaviour.overlaps == []


def test_a_poison_event_and_an_undecodable_one_on_the_poll_loop_are_dead_lettered_once_by_a_worker(
        kafka_env, app_topic, group_topics, producer_factory, sqlite_db, dlq_reader):
    # Given, among 20 good events, one whose handler always fails and one whose body is not Avro
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=sqlite_db, inline=True, batch_max=1,
                                                       max_attempts=2, min_backoff_s=0.05)
    group_topics(group.name)
    behaviour.fail["poison"] = -1
    good = [app_event(f"app-{i % 4}", i) for i in range(20)]
    poison, garbled = app_event("poison", 100), app_event("garbled", 101)
    producer = producer_factory()
    publish(producer, topic, [*good[:10], poison])
    producer.produce(topic, value=b"not avro at all", key=b"garbled", headers=event_headers(garbled))
    publish(producer, topic, good[10:])
    # When it runs
    with running(group, concurrency=2) as runner:
        wait_until(lambda: runner.stats()["handled"] == 20 and runner.stats()["dead_lettered"] == 2,
                   what="20 handled and 2 dead-lettered")
        # Then each of the two is dead-lettered once
        reader = dlq_reader(group.name)
        letters = read_messages(reader, 2)
        assert nothing_more(reader, 1.0) == []
    assert sorted(letter.key() for letter in letters) == [b"garbled", b"poison"]
    # the poison event tried on the poll loop, then on a worker; every good event handled once
    tries = [thread for app, _, thread in behaviour.threads if app == "poison"]
    assert tries[0] == poll_thread(group) and tries[1].startswith(f"events-{group.name}-") and len(tries) == 2
    assert sorted(e[0] for e in sample_handlers.effects(sqlite_db)) == sorted(e.event_id for e in good)


def test_an_outage_met_on_the_poll_loop_waits_on_the_workers_and_loses_nothing(
        kafka_env, app_topic, group_topics, producer_factory, effects_db):
    # Given an inline group whose database "goes away" for the first 1.5 s, and 40 events on 4 keys
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=effects_db, inline=True, batch_max=1,
                                                       max_attempts=2, min_backoff_s=0.05, outage_threshold=2,
                                                       outage_min_backoff_s=0.5)
    group_topics(group.name)
    behaviour.outage_error = OperationalError("SELECT 1", {}, ConnectionError("connection refused"))
    events = [app_event(f"app-{i % 4}", i) for i in range(40)]
    publish(producer_factory(), topic, events)
    behaviour.outage_until = time.monotonic() + 1.5
    # When it runs through the outage
    with running(group, concurrency=2) as runner:
        wait_until(lambda: runner.stats()["handled"] == 40, 60, "40 handled")
    # Then the breaker paused the group, nothing was dead-lettered, and each effect is there once, in order
    assert runner.stats()["outage_pauses"] >= 1 and runner.stats()["dead_lettered"] == 0
    assert runner.resources is not None and runner.resources.breaker.total_openings >= 1
    effects = sample_handlers.effects(effects_db)
    assert sorted(e[0] for e in effects) == sorted(e.event_id for e in events)
    assert by_key(effects) == {f"app-{k}": list(range(k, 40, 4)) for k in range(4)}
    assert behaviour.overlaps == []


def test_a_handler_with_a_time_limit_runs_on_the_workers_of_an_inline_group(
        kafka_env, app_topic, group_topics, producer_factory):
    # Given an inline group whose handler has a time limit (its watchdog interrupts the handler's thread)
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(inline=True, handler_options={"idempotent": False,
                                                                                     "time_limit_s": 10})
    group_topics(group.name)
    publish(producer_factory(), topic, [app_event(f"app-{i % 3}", i) for i in range(9)])
    # When it runs
    with running(group, concurrency=2) as runner:
        wait_until(lambda: runner.stats()["handled"] == 9, what="9 handled")
    # Then no handler call ran on the poll loop
    assert {thread for _, _, thread in behaviour.threads} <= {f"events-{group.name}-0", f"events-{group.name}-1"}


def test_ctrl_c_in_an_inline_handler_ends_the_run_and_commits_only_what_was_done(
        kafka_env, app_topic, group_topics, producer_factory, committed_offsets):
    # Given an inline group whose handler is interrupted (Ctrl-C in an application that runs it) on the 3rd event
    topic = app_topic()
    group = ConsumerGroup("inline-ctrl-c", idempotent=False, inline=True)
    group_topics(group.name)
    done = []

    @group.handler(AppWasCreated)
    def handle(event: AppWasCreated, ctx) -> None:
        if event.name == "app-2":
            raise KeyboardInterrupt
        done.append(event.name)

    publish(producer_factory(), topic, [app_event("app-x", i) for i in range(5)])
    # When it runs, the interrupt ends the run (not taken for a handler's failure)
    with pytest.raises(KeyboardInterrupt), running(group) as runner:
        wait_until(runner.finished.is_set, 60, "the run to end")
    # Then what was done before it is committed, and the interrupted event and those after it are not
    assert done == ["app-0", "app-1"]
    assert committed_offsets(group_id(kafka_env, group.name), topic) == [2]


def test_inline_comes_from_the_runner_then_the_settings_then_the_group(monkeypatch):
    monkeypatch.delenv("EVENTS_INLINE", raising=False)
    plain, _ = sample_handlers.recording_group("plain")
    inline, _ = sample_handlers.recording_group("inline", inline=True)
    settings = Settings()
    assert not GroupRunner(plain, settings=settings).inline
    assert GroupRunner(inline, settings=settings).inline
    assert not GroupRunner(inline, settings=Settings(inline=False)).inline
    assert GroupRunner(plain, settings=Settings(inline=True)).inline
    assert not GroupRunner(plain, settings=Settings(inline=True), inline=False).inline


def test_a_group_with_a_pipeline_of_its_own_runs_on_the_workers_and_inline_is_the_groups(caplog):
    custom, _ = sample_handlers.recording_group("custom", pipeline=[s for s in DEFAULT_PIPELINE if s is not Retries])
    assert not GroupRunner(custom, settings=Settings(inline=True)).inline
    assert "group custom has a pipeline of its own, so its handlers run on the workers, not inline" in caplog.text
    with pytest.raises(GroupDefinitionError, match="inline belong"):
        sample_handlers.recording_group("one-handler", handler_options={"inline": True})


def test_events_of_another_producer_reach_an_inline_group(kafka_env, app_topic, group_topics, producer_factory):
    # (a message without our key: its partition is its key, as on the worker path)
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(inline=True, handler_options={"idempotent": False})
    group_topics(group.name)
    producer = producer_factory()
    for i in range(5):
        event = app_event("app-x", i)
        producer.produce(topic, value=codec.encode(event), headers=event_headers(event))
    producer.flush(30)
    with running(group) as runner:
        wait_until(lambda: runner.stats()["handled"] == 5, what="5 handled")
    assert behaviour.order == [("app-x", i) for i in range(5)]
