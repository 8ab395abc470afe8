"""Lifecycle: `events run` killed with SIGKILL loses nothing; SIGTERM drains, commits and leaves;
health endpoints; rebalances between members under both group protocols."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupType

from dify_events.consumers.broker.local import free_port
from dify_events.consumers.config import group_id
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, peek, publish, running, wait_until

ROOT = Path(__file__).resolve().parents[2]


def start_events_run(database_url: str, *, delay_s: float, drain_s: float = 20, concurrency: int = 4):
    """`events run --group sample-recorder` in its own process, as a pod runs it."""
    env = dict(os.environ, EVENTS_DATABASE_URL=database_url, EVENTS_HANDLER_MODULES="tests.consumers.sample_handlers",
               EVENTS_HEALTH_PORT="0", EVENTS_CONCURRENCY=str(concurrency), EVENTS_DRAIN_TIMEOUT_S=str(drain_s),
               SAMPLE_HANDLER_DELAY_S=str(delay_s), PYTHONPATH=str(ROOT), EVENTS_LOG_LEVEL="INFO",
               # a killed member's partitions move on after 6 s (the broker's minimum), not 45 s
               EVENTS_KAFKA_SESSION_TIMEOUT_MS="6000", EVENTS_KAFKA_HEARTBEAT_INTERVAL_MS="1000")
    return subprocess.Popen([sys.executable, "-m", "dify_events.consumers", "run", "--group", "sample-recorder"],
                            env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def distinct_handled(url: str) -> int:
    return len({e[0] for e in sample_handlers.effects(url)})


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout_s: float = 60) -> str:
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=timeout_s)
    return output


def test_a_consumer_killed_with_sigkill_mid_stream_loses_nothing(kafka_env, app_topic, group_topics,
                                                                 producer_factory, effects_db, committed_offsets):
    # Given 300 events on 30 keys over 3 partitions
    topic = app_topic(partitions=3)
    group_topics("sample-recorder", partitions=3)
    events = [app_event(f"app-{i % 30}", i) for i in range(300)]
    publish(producer_factory(), topic, events)
    outputs = []
    # When a consumer process is killed with SIGKILL mid-stream, twice, and then started again
    for killed_after in (60, 170):
        proc = start_events_run(effects_db, delay_s=0.01)
        wait_until(lambda proc=proc, killed_after=killed_after:
                   distinct_handled(effects_db) >= killed_after or proc.poll() is not None,
                   120, f"{killed_after} handled")
        assert proc.poll() is None, proc.communicate()[0]
        proc.kill()
        outputs.append(proc.communicate(timeout=30)[0])
        assert distinct_handled(effects_db) < 300, "killed too late to prove anything"
    proc = start_events_run(effects_db, delay_s=0.0)
    try:
        wait_until(lambda: distinct_handled(effects_db) == 300 or proc.poll() is not None, 120, "all 300 handled")
        gid = group_id(kafka_env, "sample-recorder")
        wait_until(lambda: sum(committed_offsets(gid, topic, 3)) == 300, 30, "the commit of all 300")
    finally:
        outputs.append(stop(proc))
    assert proc.returncode == 0, outputs[-1]
    # Then every event was handled, and each had its effect exactly once
    handled = [e[0] for e in sample_handlers.effects(effects_db)]
    twice = sorted({e for e in handled if handled.count(e) > 1})
    missing = sorted({e.event_id for e in events} - set(handled))
    assert not twice and not missing, (twice, missing, [o[-2000:] for o in outputs])
    assert len(handled) == 300


def test_sigterm_drains_commits_and_leaves_the_group(kafka_env, app_topic, group_topics, producer_factory,
                                                     effects_db, committed_offsets, admin):
    # Given a consumer process working through 200 slow events on 2 partitions
    topic = app_topic(partitions=2)
    group_topics("sample-recorder", partitions=2)
    events = [app_event(f"app-{i % 20}", i) for i in range(200)]
    publish(producer_factory(), topic, events)
    proc = start_events_run(effects_db, delay_s=0.05, drain_s=1.5, concurrency=2)
    wait_until(lambda: distinct_handled(effects_db) >= 30 or proc.poll() is not None, 120, "30 handled")
    # When it gets SIGTERM
    output = stop(proc, signal.SIGTERM, 30)
    # Then it exits cleanly, having left the group
    assert proc.returncode == 0, output
    assert "stopped:" in output
    gid = group_id(kafka_env, "sample-recorder")
    [description] = [f.result(30) for f in admin.describe_consumer_groups([gid]).values()]
    assert description.members == [] and description.state == ConsumerGroupState.EMPTY
    # And it committed: every message below each partition's committed offset was handled
    handled = {e[0] for e in sample_handlers.effects(effects_db)}
    offsets = committed_offsets(gid, topic, 2)
    assert max(offsets) > 0, output
    for partition, offset in enumerate(offsets):
        for msg in peek(topic, partition, 0, offset) if offset > 0 else []:
            assert dict(msg.headers())["event-id"].decode() in handled
    # And a new consumer finishes the rest, each effect once
    proc = start_events_run(effects_db, delay_s=0.0)
    try:
        wait_until(lambda: distinct_handled(effects_db) == 200 or proc.poll() is not None, 120, "all 200 handled")
    finally:
        stop(proc)
    assert sorted(e[0] for e in sample_handlers.effects(effects_db)) == sorted(e.event_id for e in events)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def test_health_endpoints_report_liveness_and_readiness(kafka_env, app_topic, group_topics, sqlite_db):
    # Given a running group with health endpoints on a free port
    app_topic()
    group, _ = sample_handlers.recording_group(database_url=sqlite_db)
    group_topics(group.name)
    port = free_port()
    with running(group, health_port=port) as runner:
        # When the probes ask
        live = get(f"http://127.0.0.1:{port}/healthz")
        ready = get(f"http://127.0.0.1:{port}/readyz")
        missing = get(f"http://127.0.0.1:{port}/nope")
        # Then it is alive and ready, and says what it is doing
        assert live[0] == 200 and ready[0] == 200 and missing[0] == 404
        assert ready[1]["group"] == group.name and ready[1]["joined"] is True
        assert runner.is_live()
    # And when it has stopped, nothing answers
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_members_joining_and_leaving_hand_partitions_over_without_repeating_effects(
        kafka_env, app_topic, group_topics, producer_factory, effects_db, committed_offsets, admin, protocol):
    # Given a group of one member working on 4 partitions (the classic or the KIP-848 protocol)
    topic = app_topic(partitions=4)
    group_topics("sample-recorder", partitions=4)
    first_group, first = sample_handlers.recording_group(database_url=effects_db)
    second_group, second = sample_handlers.recording_group(database_url=effects_db)
    first.default_delay_s = second.default_delay_s = 0.01
    overrides = {"group.protocol": protocol}
    events = [app_event(f"app-{i % 16}", i) for i in range(240)]
    producer = producer_factory()
    with running(first_group, consumer_overrides=overrides, concurrency=4) as one:
        publish(producer, topic, events[:120])
        wait_until(lambda: one.stats()["handled"] >= 30)
        # When a second member joins mid-stream, more events arrive, and then the first member leaves
        with running(second_group, consumer_overrides=overrides, concurrency=4) as two:
            wait_until(lambda: len(two._lanes) > 0, 60, "the second member to get partitions")
            gid = group_id(kafka_env, "sample-recorder")
            [description] = [f.result(30) for f in admin.describe_consumer_groups([gid]).values()]
            assert description.type == {"classic": ConsumerGroupType.CLASSIC,
                                        "consumer": ConsumerGroupType.CONSUMER}[protocol]
            assert len(description.members) == 2
            publish(producer, topic, events[120:])
            wait_until(lambda: one.stats()["handled"] + two.stats()["handled"] >= 150)
            one.stop()
            wait_until(lambda: one.finished.is_set(), 60)
            # Then the second member finishes the stream
            wait_until(lambda: distinct_handled(effects_db) == 240, 120, "all 240 handled")
            wait_until(lambda: sum(committed_offsets(group_id(kafka_env, "sample-recorder"), topic, 4)) == 240, 30)
    # And every event had its effect exactly once
    assert sorted(e[0] for e in sample_handlers.effects(effects_db)) == sorted(e.event_id for e in events)
    assert first.overlaps == [] and second.overlaps == []
