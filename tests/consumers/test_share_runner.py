"""A shared group (a Kafka share group, KIP-932) on the real broker: pollers that each take records,
run the group's pipeline and acknowledge each record as its outcome says (ACCEPT, REJECT, RELEASE)."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType
from sqlalchemy import create_engine, select

from dify_events.consumers.broker import LocalBroker
from dify_events.consumers.broker.local import free_port
from dify_events.consumers.config import group_id
from dify_events.consumers.errors import ConsumerError
from dify_events.consumers.idempotency import processed_events
from dify_events.consumers.job import Abandoned
from dify_events.consumers.pipeline import DeadLetters
from dify_events.consumers.runners import runner_class
from dify_events.consumers.share_runner import ShareGroupRunner, ShareLane
from dify_events.schemas.settings import Settings, cache_dir
from dify_events.schemas.topics import admin_client, await_served, list_topics
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, nothing_more, publish, read_messages, running, wait_until
from tests.consumers.test_lifecycle import ROOT, distinct_handled, get, stop


def processed(url: str, group: str) -> list[str]:
    """The event ids of the group's idempotency claims (one row per event handled)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(processed_events.c.event_id).where(processed_events.c.group_name == group)).all()
    engine.dispose()
    return sorted(r[0] for r in rows)


def shared_group(url: str, behaviour: sample_handlers.Behaviour | None = None, **options):
    return sample_handlers.recording_group(database_url=url, behaviour=behaviour, delivery="shared", **options)


def publish_one_by_one(producer, topic: str, events) -> None:
    """Each event in a producer batch of its own, as events published while things happen are: the
    broker hands a share consumer whole batches (``max.poll.records`` is best effort in librdkafka)."""
    for event in events:
        publish(producer, topic, [event])


def test_events_taken_by_two_pollers_are_each_handled_once_and_accepted(app_topic, group_topics, producer_factory,
                                                                        effects_db):
    # Given 30 events on 5 keys across 2 partitions, each taking 50 ms to handle
    topic = app_topic(partitions=2)
    group, _ = shared_group(effects_db, sample_handlers.Behaviour(default_delay_s=0.05))
    group_topics(group.name)
    events = [app_event(f"app-{i % 5}", i) for i in range(30)]
    publish_one_by_one(producer_factory(), topic, events)
    # When the shared group runs with 2 pollers until all are handled (which poller takes what is the
    # broker's choice: while members <= partitions, Kafka gives each partition to one member)
    with running(group, concurrency=2) as runner:
        assert isinstance(runner, ShareGroupRunner)
        wait_until(lambda: runner.stats()["handled"] == 30, 90, "30 handled")
    # Then each event had its effect once and was claimed once, and every record was accepted once
    ids = sorted(e.event_id for e in events)
    assert sorted(e[0] for e in sample_handlers.effects(effects_db)) == ids
    assert processed(effects_db, group.name) == ids
    assert dict(runner.acks) == {"accept": 30} and sum(runner.handled_by) == 30
    assert runner.redelivered == 0


def test_a_failing_event_is_dead_lettered_once_and_rejected_not_redelivered(app_topic, group_topics, producer_factory,
                                                                            sqlite_db, dlq_reader):
    # Given a handler that always fails on one key, tried twice
    topic = app_topic()
    group, behaviour = shared_group(sqlite_db, max_attempts=2, min_backoff_s=0.05)
    behaviour.fail["app-bad"] = -1
    group_topics(group.name)
    events = [app_event("app-ok", 1), app_event("app-bad", 2), app_event("app-ok", 3)]
    publish(producer_factory(), topic, events)
    dead_letters = dlq_reader(group.name)
    # When the shared group runs
    with running(group, concurrency=2) as runner:
        wait_until(lambda: runner.stats()["handled"] == 2 and runner.stats()["dead_lettered"] == 1, 60,
                   "2 handled, 1 dead-lettered")
        # Then the failing event has one dead letter, and its record was rejected, the others accepted
        [letter] = read_messages(dead_letters, 1)
        assert dict(letter.headers())["dlq-origin-offset"] == b"1"
        assert dict(runner.acks) == {"accept": 2, "reject": 1}
        # And the broker never offers it again: no second attempt, no second letter
        assert nothing_more(dead_letters, 3.0) == []
    assert behaviour.calls["app-bad"] == 2
    # Nor to a new member of the group
    with running(group) as again:
        assert nothing_more(dead_letters, 3.0) == []
        assert again.stats()["handled"] == again.stats()["dead_lettered"] == 0
    assert behaviour.calls["app-bad"] == 2


def test_a_runner_stopped_mid_stream_releases_what_it_holds_and_another_handles_it_once(
        app_topic, group_topics, producer_factory, effects_db):
    # Given 3 events, then one that fails once and then waits 10-20 s before its retry, then 8 more,
    # each part in a producer batch of its own (a poll takes whole batches)
    topic = app_topic()
    group, behaviour = shared_group(effects_db, min_backoff_s=10.0, max_backoff_s=10.0)
    behaviour.fail["app-held"] = 1
    group_topics(group.name)
    events = [*(app_event(f"app-{i}", i) for i in range(3)), app_event("app-held", 3),
              *(app_event(f"app-{i}", i) for i in range(4, 12))]
    producer = producer_factory()
    for part in (events[:3], events[3:4], events[4:]):
        publish(producer, topic, part)
    # When a runner of one poller stops while it holds that event in its backoff, having handled the
    # first 3 and not taken the last 8
    with running(group, concurrency=1) as first:
        wait_until(lambda: first.stats()["retries"] == 1, 60, "the held event in backoff")
    # Then it released the held event, and accepted those it handled
    assert first.stats()["handled"] == 3 and first.stats()["abandoned"] == 1
    assert dict(first.acks) == {"accept": 3, "release": 1}
    # When another runner of the group starts
    with running(group, concurrency=2) as second:
        # Then it handles the rest; the released event comes again (delivery count 2)
        wait_until(lambda: second.stats()["handled"] == 9, 90, "the other 9 handled")
    assert second.redelivered == 1
    # And nothing was lost or done twice
    ids = sorted(e.event_id for e in events)
    assert sorted(e[0] for e in sample_handlers.effects(effects_db)) == ids
    assert processed(effects_db, group.name) == ids
    assert behaviour.calls["app-held"] == 2


def kafka_clients() -> int:
    """The librdkafka clients alive in this process (each has one thread named ``rdk:main``)."""
    tasks = glob.glob("/proc/self/task/*/comm")
    names = []
    for comm in tasks:
        try:
            with open(comm) as f:
                names.append(f.read().strip())
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return names.count("rdk:main")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_a_stopped_runner_leaves_no_kafka_client_and_no_thread_of_its_steps(app_topic, group_topics, producer_factory,
                                                                            sqlite_db):
    # Given a shared group with an idempotent handler, and the Kafka clients this process has already
    topic = app_topic()
    group, _ = shared_group(sqlite_db)
    group_topics(group.name)
    publish(producer_factory(), topic, [app_event("app-1", 1)])
    before = kafka_clients()
    purging = f"events-purge-{group.name}"
    # When a runner of 2 pollers handles an event, purging idempotency keys meanwhile, and stops
    with running(group, concurrency=2, purge_interval_s=0.05) as runner:
        wait_until(lambda: runner.stats()["handled"] == 1, 60, "1 handled")
        [dead_letters] = [step for step in runner._steps if isinstance(step, DeadLetters)]
        assert dead_letters.producer is not None and kafka_clients() >= before + 3  # 2 pollers, the producer
        assert any(t.name == purging for t in threading.enumerate())
    # Then its steps released what they made: the dead-letter producer flushed and dropped, the purge
    # thread ended; and no Kafka client of the runner is left (its consumers, admin, producer)
    assert dead_letters.producer is None
    wait_until(lambda: all(t.name != purging for t in threading.enumerate()), 10, "the purge thread to end")
    assert not any(t.name.startswith(f"events-{group.name}-p") for t in threading.enumerate())
    assert kafka_clients() == before


def set_group_config(admin, group: str, name: str, value: str) -> None:
    """Sets one config of a (share) group and waits until the broker reads it back."""
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
    next(iter(admin.incremental_alter_configs([resource]).values())).result(30)

    def read_back() -> bool:
        described = next(iter(admin.describe_configs([ConfigResource(ResourceType.GROUP, group)]).values()))
        return described.result(30)[name].value == value

    wait_until(read_back, 30, f"{name}={value} on {group}")


def test_a_record_abandoned_on_its_last_delivery_is_dead_lettered_not_released(
        kafka_env, admin, app_topic, group_topics, producer_factory, sqlite_db, dlq_reader):
    # Given a share group that delivers a record at most twice, and an event whose handler fails twice,
    # each time followed by a 10-20 s backoff
    topic = app_topic()
    group, behaviour = shared_group(sqlite_db, min_backoff_s=10.0, max_backoff_s=10.0)
    behaviour.fail["app-1"] = 2
    group_topics(group.name)
    set_group_config(admin, group_id(kafka_env, group.name), "share.delivery.count.limit", "2")
    publish(producer_factory(), topic, [app_event("app-1", 1)])
    dead_letters = dlq_reader(group.name)
    # When a runner stops while the event waits in its backoff (first delivery: released)
    with running(group) as first:
        assert first.delivery_limit == 2
        wait_until(lambda: first.stats()["retries"] == 1, 60, "the first retry's backoff")
    assert dict(first.acks) == {"release": 1}
    # And a second runner stops while the event waits again (its last delivery)
    with running(group) as second:
        wait_until(lambda: second.stats()["retries"] == 1, 60, "the second delivery's backoff")
    # Then the second dead-lettered it (saying why) and rejected it, rather than leave it to the broker's archive
    assert second.redelivered == 1 and second.stats()["dead_lettered"] == 1
    assert dict(second.acks) == {"reject": 1}
    [letter] = read_messages(dead_letters, 1)
    headers = dict(letter.headers())
    assert headers["dlq-error-class"] == b"dify_events.consumers.share_runner.LastDelivery"
    assert b"last delivery (2 of" in headers["dlq-error-message"]
    # And it is not offered again
    with running(group) as third:
        assert nothing_more(dead_letters, 3.0) == []
        assert third.stats()["handled"] == third.stats()["abandoned"] == 0
    assert behaviour.calls["app-1"] == 2


def start_shared_run(database_url: str, health_port: int, delay_s: float, **env: str) -> subprocess.Popen:
    """`events run --group sample-shared` in its own process, as a pod runs it (``env``: more variables)."""
    env = dict(os.environ, EVENTS_DATABASE_URL=database_url, EVENTS_HANDLER_MODULES="tests.consumers.shared_handlers",
               EVENTS_HEALTH_PORT=str(health_port), EVENTS_METRICS_PORT="0", EVENTS_CONCURRENCY="2",
               EVENTS_DRAIN_TIMEOUT_S="5", SAMPLE_HANDLER_DELAY_S=str(delay_s), PYTHONPATH=str(ROOT),
               EVENTS_LOG_LEVEL="INFO", **env)
    return subprocess.Popen([sys.executable, "-m", "dify_events.consumers", "run", "--group", "sample-shared"], env=env,
                            cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class SharedMembers:
    """``count`` members of the registered shared group as `events run` processes, 100 ms an event
    (``env``: more variables), each ready (polling) once made, so that SIGTERM ends it cleanly. Leaving
    the block stops each with SIGTERM; each must exit 0, no traceback."""

    def __init__(self, database_url: str, count: int, **env: str):
        self.database_url, self.env = database_url, env
        launched = [self._launch() for _ in range(count)]  # they start up side by side
        self.procs = [self._ready(*member) for member in launched]

    def start(self) -> subprocess.Popen:
        """One more member, once it is ready."""
        return self._ready(*self._launch())

    def _launch(self) -> tuple[subprocess.Popen, int]:
        port = free_port()
        return start_shared_run(self.database_url, port, delay_s=0.1, **self.env), port

    @staticmethod
    def _ready(proc: subprocess.Popen, port: int) -> subprocess.Popen:
        wait_until(lambda: ready(port) or proc.poll() is not None, 90, "a member to be ready")
        return proc

    def handled(self) -> int:
        return distinct_handled(self.database_url)

    def wait_handled(self, count: int, timeout_s: float) -> None:
        """Until ``count`` events had their effect (or a member exited: the test then fails on leaving)."""
        wait_until(lambda: self.handled() >= count or any(p.poll() is not None for p in self.procs), timeout_s,
                   f"{count} handled")

    def __enter__(self) -> SharedMembers:
        return self

    def __exit__(self, *exc_info) -> None:
        outputs = [stop(p) if p.poll() is None else p.communicate()[0] for p in self.procs]
        if exc_info[0] is None:
            assert all(p.returncode == 0 for p in self.procs), outputs
            assert not any("Traceback" in output for output in outputs), outputs


def ready(port: int) -> bool:
    try:
        return get(f"http://127.0.0.1:{port}/readyz")[0] == 200
    except urllib.error.URLError:  # not serving yet
        return False


def test_events_run_runs_a_shared_group_ready_when_polling_and_sigterm_leaves_nothing_undone(
        kafka_env, app_topic, group_topics, producer_factory, sqlite_db):
    # Given 60 slow events for the registered shared group
    topic = app_topic(partitions=2)
    group_topics("sample-shared")
    events = [app_event(f"app-{i % 10}", i) for i in range(60)]
    publish_one_by_one(producer_factory(), topic, events)
    # When `events run --group sample-shared` runs
    port = free_port()
    proc = start_shared_run(sqlite_db, port, delay_s=0.1)
    try:
        # Then it is alive, and ready once its pollers poll, saying it is shared
        wait_until(lambda: ready(port) or proc.poll() is not None, 60, "readiness")
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and body["delivery"] == "shared" and body["pollers"] == 2
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        wait_until(lambda: distinct_handled(sqlite_db) >= 10 or proc.poll() is not None, 60, "10 handled")
    finally:
        # When it gets SIGTERM mid-stream
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    # Then it exits cleanly, having acknowledged what it handled
    assert proc.returncode == 0, output
    assert "stopped:" in output and "Traceback" not in output
    # And a new process handles the rest: each event's effect once
    proc = start_shared_run(sqlite_db, 0, delay_s=0.0)
    try:
        wait_until(lambda: distinct_handled(sqlite_db) == 60 or proc.poll() is not None, 90, "all 60 handled")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert sorted(e[0] for e in sample_handlers.effects(sqlite_db)) == sorted(e.event_id for e in events)


def test_a_member_killed_mid_stream_loses_nothing_and_does_nothing_twice(
        kafka_env, admin, app_topic, group_topics, producer_factory, sqlite_db):
    # Given two members of the registered shared group as `events run` processes, whose records' locks
    # last 15 s (the broker's least), and 60 slow events published once they poll
    topic = app_topic(partitions=2)
    group_topics("sample-shared")
    set_group_config(admin, group_id(kafka_env, "sample-shared"), "share.record.lock.duration.ms", "15000")
    events = [app_event(f"app-{i % 10}", i) for i in range(60)]
    with SharedMembers(sqlite_db, 2) as members:
        publish_one_by_one(producer_factory(), topic, events)
        members.wait_handled(10, 90)
        # When one member is SIGKILLed mid-stream (the records it holds stay locked until their lock ends),
        # and started again
        members.procs[0].kill()
        members.procs[0].communicate(timeout=30)
        assert members.handled() < 60, "the stream ended before the kill"
        members.procs[0] = members.start()
        # Then every event is handled: what the dead member held comes again once its lock ends
        members.wait_handled(60, 120)
    # And each event had its effect once and was claimed once: a record handled by the killed member but
    # not acknowledged came again and was skipped by its claim
    ids = sorted(e.event_id for e in events)
    assert sorted(e[0] for e in sample_handlers.effects(sqlite_db)) == ids
    assert processed(sqlite_db, "sample-shared") == ids


def test_a_runner_whose_pollers_are_all_in_a_long_handler_stays_live(monkeypatch, app_topic, group_topics,
                                                                     producer_factory, sqlite_db):
    # Given a liveness window of 1 s, and an event whose handling takes 3 s
    monkeypatch.setattr("dify_events.consumers.runner.LIVENESS_WINDOW_S", 1.0)
    topic = app_topic()
    group, behaviour = shared_group(sqlite_db, sample_handlers.Behaviour(delay_s={"app-slow": 3.0}))
    group_topics(group.name)
    publish(producer_factory(), topic, [app_event("app-slow", 1)])
    # When its only poller runs it
    with running(group, concurrency=1) as runner:
        wait_until(lambda: runner.in_flight == 1, 60, "the slow event running")
        # Then the runner stays live throughout (a pod is not restarted for a long job)
        while runner.in_flight:
            assert runner.is_live()
            time.sleep(0.1)
        assert runner.stats()["handled"] == 1


def test_a_shared_group_whose_id_an_ordered_group_used_says_how_to_migrate(kafka_env, app_topic, group_topics,
                                                                           producer_factory, sqlite_db):
    # Given a group that ran ordered (a Kafka consumer group with a committed offset)
    topic = app_topic()
    ordered, _ = sample_handlers.recording_group(database_url=sqlite_db)
    group_topics(ordered.name)
    publish(producer_factory(), topic, [app_event("app-1", 1)])
    with running(ordered) as runner:
        wait_until(lambda: runner.stats()["handled"] == 1, 60, "1 handled")
    # When it is declared shared and started again
    shared, _ = shared_group(sqlite_db)
    # Then the runner stops with one line that says what to do
    with pytest.raises(ConsumerError) as refused, running(shared):
        pass
    message = str(refused.value)
    assert "\n" not in message and "belongs to a consumer group" in message
    assert f"kafka-consumer-groups --delete --group {group_id(kafka_env, shared.name)}" in message


def test_a_time_limit_the_record_lock_would_not_outlast_is_refused_in_one_line(app_topic, group_topics, sqlite_db):
    # Given a shared group whose handler may run 60 s, and the default record lock of 30 s
    app_topic()
    group, _ = shared_group(sqlite_db, handler_options={"time_limit_s": 60})
    group_topics(group.name)
    # When it starts, then it is refused, saying what to change
    with pytest.raises(ConsumerError) as refused, running(group):
        pass
    message = str(refused.value)
    assert "\n" not in message and "time_limit_s=60 does not end before the share group's record lock (30s" in message
    assert "lower it below 27" in message


def test_a_wait_that_would_outlast_the_records_lock_abandons_it_at_once():
    # Given a record whose lock ends (less the margin) in 2 s
    lane = ShareLane("t.app", 0, threading.Event(), time.monotonic() + 2.0)
    # Then a short wait waits, and one past the lock abandons the record at once (it is released)
    lane.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(Abandoned, match="would outlast its record's lock"):
        lane.sleep(5.0)
    assert time.monotonic() - started < 1.0
    # And a stopping runner ends a wait as for an ordered group
    lane.stop_waiting.set()
    with pytest.raises(Abandoned):
        lane.sleep(0.5)


def test_a_shared_groups_runner_creates_its_retry_topic_with_1_partition_an_ordered_ones_with_3(kafka_env, admin):
    # Given an ordered and a shared group whose topics do not exist
    ordered, _ = sample_handlers.recording_group(f"{kafka_env}-ordered")
    shared, _ = shared_group("sqlite://")
    groups = (ordered, shared)
    try:
        # When each one's runner ensures its topics
        for group in groups:
            runner = runner_class(group)(group, health_port=0)
            runner._ensure_topics(runner._admin())
        # Then the ordered group's retry topic has the retry template's 3 partitions, the shared group's 1 (a share
        # group shares a partition only past one member per partition: retry partitions cost members)
        states = {s.name: s for s in list_topics(admin, kafka_env)}
        assert states[ordered.retry_topic(kafka_env)].partitions == 3
        assert states[shared.retry_topic(kafka_env)].partitions == 1
        # And both dead-letter topics are alike, from the dead_letter template
        assert states[ordered.dlq_topic(kafka_env)].partitions == states[shared.dlq_topic(kafka_env)].partitions == 1
    finally:
        made = [t for g in groups for t in (g.retry_topic(kafka_env), g.dlq_topic(kafka_env))]
        for future in admin.delete_topics(made, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # one a failed start never made
                future.result(timeout=30)


def test_an_ordered_group_whose_id_a_shared_group_used_says_how_to_migrate(kafka_env, app_topic, group_topics,
                                                                           producer_factory, sqlite_db):
    # Given a group that ran shared (a Kafka share group that took a record)
    topic = app_topic()
    shared, _ = shared_group(sqlite_db)
    group_topics(shared.name)
    publish(producer_factory(), topic, [app_event("app-1", 1)])
    with running(shared) as runner:
        wait_until(lambda: runner.stats()["handled"] == 1, 60, "1 handled")
    # When it is run ordered (EVENTS_DELIVERY=ordered) with the same name
    ordered, _ = sample_handlers.recording_group(shared.name, database_url=sqlite_db)
    # Then the runner stops with one line that says what to do
    with pytest.raises(ConsumerError) as refused, running(ordered):
        pass
    message = str(refused.value)
    assert "\n" not in message and "belongs to another kind of group" in message
    assert f"kafka-share-groups --delete --group {group_id(kafka_env, shared.name)}" in message


@pytest.mark.kafka
def test_on_a_cluster_without_share_groups_a_shared_group_stops_with_one_line_naming_the_way_out(tmp_path, sqlite_db):
    # Given a broker of its own whose share groups are turned off (share.version 0: a cluster before Kafka 4.2 is
    # the same to a share consumer), and a topic on it
    broker = LocalBroker(tmp_path / "home", cache_dir(), port=free_port())
    state = broker.start()
    try:
        off = subprocess.run([*broker._jvm(), "org.apache.kafka.tools.FeatureCommand", "--bootstrap-controller",
                              f"127.0.0.1:{state.controller_port}", "downgrade", "--feature", "share.version=0"],
                             capture_output=True, text=True, timeout=120)
        assert off.returncode == 0, off.stdout + off.stderr
        settings = Settings(bootstrap_servers=state.bootstrap, topic_prefix="noshare", database_url=sqlite_db)
        admin = admin_client(settings)
        admin.create_topics([NewTopic("noshare.app", 1, 1)])["noshare.app"].result(30)
        await_served(admin, {"noshare.app": 1}, timeout=30)
        group, _ = shared_group(sqlite_db)
        # When the shared group runs there
        with pytest.raises(ConsumerError) as refused, running(group, settings=settings):
            pass
        # Then it stops with one line that says what share groups need, and how to run the group without them
        message = str(refused.value)
        assert "\n" not in message and "has no share groups" in message
        assert "share.version" in message and "EVENTS_DELIVERY=ordered" in message
    finally:
        broker.stop()
