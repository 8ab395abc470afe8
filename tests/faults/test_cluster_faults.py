"""Faults of a three-broker cluster under a steady stream of the demo's workload (through the SDK and
the outbox), each with its figures and the history check: every acknowledged event has its effects
exactly once, in its key's order. The topics are as the topics file declares them: 3 replicas,
min.insync.replicas 2, no unclean leader election; producers use acks=all with idempotence.

`make test` runs the one marked ``cluster_quick`` (two brokers down: it loses leaders, the controller
quorum and in-sync replicas at once); `-m cluster` (`make faults-cluster`) runs them all.
Every wait is for a condition (leaders elected, replicas in sync, the group stable, the stream on)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic
from sqlalchemy import create_engine, func, insert, select

from dify_events.consumers.config import group_id
from dify_events.consumers.demo.cluster import terminate_with_parent
from dify_events.consumers.demo.progress import read_dead_letters
from dify_events.consumers.demo.workload import SDK, Change
from dify_events.consumers.recovery.kafka import read_ranges, reader, watermarks
from dify_events.consumers.recovery.redrive import REDRIVEN_FROM
from dify_events.producers.outbox import event_outbox
from dify_events.schemas.events import MessageWasCreated
from tests.faults import flaky_handlers as F
from tests.faults.cluster import (
    Clock,
    busiest_leader,
    fully_replicated,
    group_coordinator,
    group_state,
    kill,
    led_elsewhere,
    new_controller,
    pause,
    resume,
    run_topics,
    transaction_coordinator,
)
from tests.faults.harness import assert_exactly_once, wait_for, world
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
NODES = (1, 2, 3)


def bursts(w) -> list[int]:
    """The stream's steps that publish a burst of messages through the SDK: the busiest topic's traffic.
    A scenario lets the first be acknowledged before its fault, holds the stream before the last until
    the fault is over, and so has messages published before, during and after it."""
    return [i for i, s in enumerate(w.workload.steps) if isinstance(s, Change) and s.via == SDK and len(s.events) > 10]


def stream_around_a_fault(w, seconds: float = 14) -> None:
    """Starts the stream, held before its last burst, and returns once its first burst was acknowledged."""
    steps = bursts(w)
    w.hold(at_step=steps[-1])
    w.start().stream(seconds=seconds)
    w.wait_played((steps[0] + 1) / len(w.workload.steps))
    w.application.flush(60)


def rejoin(cluster, w, node: int, clock: Clock, notes: list[str]) -> float:
    """Starts ``node`` again and waits until every replica of the run's topics is in sync; returns when
    it was started (seconds on ``clock``)."""
    cluster.start_node(node)
    back = clock()
    wait_for(lambda: fully_replicated(w.admin, run_topics(w.admin, w.prefix)), 180, "every replica back in sync")
    notes.append(f"node {node} started again at {back:.1f}s; every replica in sync again at {clock():.1f}s")
    return back


def test_the_leader_of_busy_partitions_killed_then_restarted_loses_no_acknowledged_event(
        three_brokers, cluster_world_args):
    notes: list[str] = []
    with world(**cluster_world_args) as w:
        stream_around_a_fault(w)
        # When the node leading most of the busiest topic's partitions is SIGKILLed
        victim = busiest_leader(w.admin, [f"{w.prefix}.message"])
        topics = run_topics(w.admin, w.prefix)
        clock = Clock()
        kill(three_brokers, victim)
        wait_for(lambda: led_elsewhere(w.admin, topics, victim), 60, f"new leaders of node {victim}'s partitions")
        notes.append(f"new leaders of node {victim}'s partitions {clock():.1f}s after the kill")
        wait_for(lambda: w.held, 60, "the stream's bursts with two nodes")
        # And started again (the last burst after it)
        rejoin(three_brokers, w, victim, clock, notes)
        w.go_on()
        w.settle(timeout_s=180)
        fig, checks = w.figures(f"node {victim}, leader of the busiest partitions, SIGKILLed then restarted",
                                faults=1, recover_s=clock())
    fig.notes += notes
    # Then every acknowledged event had its effects once, and the SDK got no error (2 of 3 in sync suffice)
    assert_exactly_once(fig, checks)
    assert fig.not_acknowledged == 0


def test_the_active_controller_killed_is_replaced_and_metadata_changes_go_on(three_brokers, cluster_world_args):
    notes: list[str] = []
    with world(**cluster_world_args) as w:
        stream_around_a_fault(w)
        # When the active controller (a broker too: every node is both) is SIGKILLed
        old = three_brokers.active_controller()
        topics = run_topics(w.admin, w.prefix)
        clock = Clock()
        kill(three_brokers, old)
        new = new_controller(three_brokers, old)
        notes.append(f"node {new} became the active controller {clock():.1f}s after node {old} was killed")
        wait_for(lambda: led_elsewhere(w.admin, topics, old), 60, f"new leaders of node {old}'s partitions")
        notes.append(f"new leaders of node {old}'s partitions {clock():.1f}s after the kill")
        # Then metadata changes go on under the new controller: a topic is created, replicated on the two left
        extra = f"{w.prefix}.after-failover"
        w.admin.create_topics([NewTopic(extra, 3, 2)])[extra].result(60)
        wait_for(lambda: w.held, 60, "the stream's bursts with two nodes")
        rejoin(three_brokers, w, old, clock, notes)
        w.go_on()
        w.settle(timeout_s=180)
        fig, checks = w.figures(f"the active controller (node {old}) SIGKILLed", faults=1, recover_s=clock())
    fig.notes += notes
    assert_exactly_once(fig, checks)
    assert fig.not_acknowledged == 0


def test_the_group_coordinator_killed_during_a_rebalance_loses_and_doubles_nothing(
        three_brokers, cluster_world_args):
    notes: list[str] = []
    with world(**cluster_world_args) as w:
        gid = group_id(w.prefix, "provider-usage")
        stream_around_a_fault(w)
        _, _, coordinator = wait_for(lambda: (s := group_state(w.settings.bootstrap(), gid))[:2] == ("STABLE", 1)
                                     and s, 60, "provider-usage stable")
        assert group_coordinator(w.admin, gid) == coordinator  # the placement of internal keys, as Kafka does it
        # When a second member joins provider-usage, and while the group rebalances, its coordinator is killed
        w.add_member("provider-usage")
        state = wait_until(lambda: _rebalancing(w.settings.bootstrap(), gid), 60, "provider-usage to rebalance",
                           interval_s=0.02)
        clock = Clock()
        kill(three_brokers, coordinator)
        notes.append(f"node {coordinator} (coordinator of {gid}) SIGKILLed while the group was {state}")
        # Then another node coordinates it, and the group is stable again with its two members
        moved = wait_for(lambda: (c := group_coordinator(w.admin, gid)) not in (-1, coordinator) and c, 120,
                         "another coordinator")
        wait_for(lambda: group_state(w.settings.bootstrap(), gid)[:2] == ("STABLE", 2), 120,
                 "the group stable with two members")
        notes.append(f"node {moved} coordinates the group, stable again with two members {clock():.1f}s after "
                     "the kill")
        wait_for(lambda: w.held, 60, "the stream's bursts with two nodes")
        rejoin(three_brokers, w, coordinator, clock, notes)
        w.go_on()
        w.settle(timeout_s=180)
        fig, checks = w.figures(f"the group coordinator (node {coordinator}) SIGKILLed during a rebalance",
                                faults=1, recover_s=clock())
    fig.notes += notes
    assert_exactly_once(fig, checks)


def _rebalancing(bootstrap: str, gid: str) -> str | None:
    try:
        state, _, _ = group_state(bootstrap, gid)
    except Exception:  # noqa: BLE001 - a member joining: ask again
        return None
    return state if state in ("PREPARING_REBALANCING", "COMPLETING_REBALANCING") else None


def test_the_transaction_coordinator_killed_mid_redrive_sends_no_dead_letter_twice(
        three_brokers, cluster_world_args):
    notes: list[str] = []
    engine = create_engine(cluster_world_args["database_url"])
    F.metadata.create_all(engine)
    env = {"EVENTS_HANDLER_MODULES": "dify_events.consumers.handlers,tests.faults.flaky_handlers",
           "PYTHONPATH": str(ROOT)}
    with world(**cluster_world_args, groups=["faults-flaky", "provider-usage"], extra_env=env) as w:
        flaky = w.groups[0]
        dlq, retry = flaky.dlq_topic(w.prefix), flaky.retry_topic(w.prefix)
        w.start().stream(seconds=16)
        # Given a group whose bug dead-lettered a share of the stream's messages, then fixed
        wait_for(lambda: _held(w, dlq) >= 12, 120, "a dozen dead letters")
        with engine.begin() as conn:
            conn.execute(insert(F.flaky_fix).values(id=1))
        # When `events dlq redrive` re-drives them, and mid-way its transaction coordinator is SIGKILLed
        redrive = _redrive(w, rate=2)
        wait_for(lambda: _held(w, retry) > 0, 120, "the redrive's first transaction")
        tid = f"{group_id(w.prefix, flaky.name)}.events-redrive"
        coordinator = transaction_coordinator(w.admin, tid)
        clock = Clock()
        assert redrive.poll() is None, "the redrive ended before its coordinator could be killed"
        kill(three_brokers, coordinator)
        notes.append(f"node {coordinator} (transaction coordinator of {tid}) SIGKILLed mid-redrive")
        runs = [redrive.wait(180)]
        if runs[-1] != 0:  # as its error says: run it again; the ledger keeps what was committed
            runs.append(_redrive(w, rate=2).wait(180))
        notes.append(f"redrive exit codes {runs}, done {clock():.1f}s after the kill")
        assert runs[-1] == 0
        rejoin(three_brokers, w, coordinator, clock, notes)
        # (faults-flaky's lag stays 1 on each retry partition a transaction wrote: the commit marker ends
        # the partition and the runtime commits past data records only; so it is judged by its effects)
        w.settle(timeout_s=180, groups=["provider-usage"])
        wanted = {i for i, e in w.acknowledged().items() if isinstance(e, MessageWasCreated)}
        wait_for(lambda: set(_effects(engine)) >= wanted, 120, "faults-flaky's effect of every message")
        copies = _redriven_copies(w, retry)
        letters = read_dead_letters(w.settings, w.admin, {flaky.name: dlq})[flaky.name]
        fig, checks = w.figures("the transaction coordinator SIGKILLed mid-redrive", faults=1, recover_s=clock(),
                                expected_dead={flaky.name: len({d.origin for d in letters}), "provider-usage": 3})
        effects = _effects(engine)
    engine.dispose()
    # Then each dead letter went to the retry topic once (committed copies), its event was handled once
    twice = {origin: n for origin, n in copies.items() if n > 1}
    fig.duplicated += sum(n - 1 for n in effects.values() if n > 1) + sum(n - 1 for n in twice.values())
    events = {e.event_id: e for e in w.workload.events() if isinstance(e, MessageWasCreated)}
    dead_events = {(d.named.get("event-id") or b"").decode() for d in letters} & set(events)
    fig.notes += notes + [f"{len(dead_events)} messages dead-lettered by the bug; {len(copies)} dead letters "
                          f"re-driven, {len(twice)} of them twice"]
    assert_exactly_once(fig, checks)
    assert not twice and copies, copies
    assert all(F.rejected(events[i].message_id) for i in dead_events)
    assert set(effects) == {i for i in events if i in w.acknowledged()}


def _effects(engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(conn.execute(select(F.flaky_effects.c.event_id)).scalars())


def _held(w, topic: str) -> int:
    """Records in ``topic`` now (committed or not: the high watermarks)."""
    metadata = w.admin.list_topics(topic, timeout=10)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        return 0
    tps = [(topic, p) for p in metadata.topics[topic].partitions]
    return sum(high for _, high in watermarks(w.admin, tps).values())


def _redrive(w, *, rate: float) -> subprocess.Popen:
    log = open(w.run_dir / "redrive.log", "ab")  # noqa: SIM115 - the child keeps it; closed with the run dir
    return subprocess.Popen([sys.executable, "-m", "dify_events.consumers", "dlq", "redrive", "--group", "faults-flaky",
                             "--rate", str(rate)], env=w.env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, preexec_fn=terminate_with_parent)


def _redriven_copies(w, retry: str) -> Counter[str]:
    """Committed copies in the retry topic, counted by the dead letter each was re-driven from."""
    metadata = w.admin.list_topics(retry, timeout=10)
    marks = watermarks(w.admin, [(retry, p) for p in metadata.topics[retry].partitions])
    consumer = reader(w.settings, "faults-redriven")
    try:
        return Counter(dict(m.headers() or []).get(REDRIVEN_FROM, b"").decode()
                       for m in read_ranges(consumer, [(t, p, lo, hi) for (t, p), (lo, hi) in marks.items()]))
    finally:
        consumer.close()


@pytest.mark.cluster_quick
def test_two_brokers_down_make_producers_fail_not_lose_and_they_catch_up_when_one_returns(
        three_brokers, cluster_world_args):
    notes: list[str] = []
    # Given producers that give up on an event after 6 s (the SDK's on_error; the outbox keeps its row),
    # and a stream whose messages come in bursts: one before the fault, two during, the last after
    with world(**cluster_world_args, producer_overrides={"delivery.timeout.ms": "6000"}) as w:
        stream_around_a_fault(w)
        # When two of the three nodes are SIGKILLed (two brokers, and the controller quorum's majority)
        survivor = three_brokers.active_controller()
        first, second = [n for n in NODES if n != survivor]
        clock = Clock()
        kill(three_brokers, first)
        kill(three_brokers, second)
        # Then producers get errors, not silent loss: the SDK reports events it could not deliver, and
        # the relay keeps outbox rows pending with the error it met
        wait_for(lambda: w.held and w.application.errors and _failing_rows(w), 90,
                 "the SDK's errors and failing outbox rows")
        notes.append(f"nodes {first} and {second} down: {len(w.application.errors)} SDK events reported to "
                     f"on_error and {_failing_rows(w)} outbox rows pending with an error {clock():.1f}s after")
        # And when one returns, they catch up with the other still down: the outbox drains, the SDK delivers
        rejoined = _start(three_brokers, first, clock, notes)
        before, failed = set(w.producer.handed), len(w.application.errors)
        w.go_on()
        w.wait_played(1.0)
        w.application.flush(60)
        wait_for(lambda: w.application.outbox_pending() == 0, 120, "the outbox to drain")
        since = set(w.producer.handed) - before
        delivered = len(since) - (len(w.application.errors) - failed)
        notes.append(f"with node {second} still down: the outbox drained and the SDK delivered {delivered} of the "
                     f"{len(since)} events published since node {first} returned "
                     f"({clock() - rejoined:.1f}s)")
        rejoin(three_brokers, w, second, clock, notes)
        w.settle(timeout_s=180)
        fig, checks = w.figures("two of three nodes SIGKILLed, then restarted one by one", faults=2,
                                recover_s=clock() - rejoined)
    fig.notes += notes
    # Then every acknowledged event had its effects once; what was not acknowledged went to on_error.
    # (The usage invariant counts the application's message rows: those whose event the SDK reported
    # failed have no usage, as the application was told; it is left out here.)
    assert_exactly_once(fig, [c for c in checks if "usage equals" not in c.name])
    assert fig.not_acknowledged == len(w.application.errors) > 0
    assert delivered == len(since) >= len(w.workload.steps[bursts(w)[-1]].events)
    assert {e.event_id for e in w.workload.steps[bursts(w)[-1]].events} <= since


def _start(cluster, node: int, clock: Clock, notes: list[str]) -> float:
    cluster.start_node(node)
    notes.append(f"node {node} started again at {clock():.1f}s")
    return clock()


def _failing_rows(w) -> int:
    with w.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(event_outbox).where(
            event_outbox.c.sent_at.is_(None), event_outbox.c.last_error.is_not(None))).scalar_one()


def test_a_broker_cut_off_from_the_others_then_healed_loses_nothing(three_brokers, cluster_world_args):
    notes: list[str] = []
    with world(**cluster_world_args) as w:
        stream_around_a_fault(w)
        # When the busiest leader stops answering anyone (SIGSTOP: as cut off by a network partition)
        victim = busiest_leader(w.admin, [f"{w.prefix}.message"])
        topics = run_topics(w.admin, w.prefix)
        clock = Clock()
        pid = pause(three_brokers, victim)
        try:
            wait_for(lambda: led_elsewhere(w.admin, topics, victim), 90,
                     f"node {victim} fenced, its partitions led elsewhere")
            notes.append(f"node {victim}'s partitions led elsewhere {clock():.1f}s after it was cut off")
            wait_for(lambda: w.held, 60, "the stream's bursts with the node cut off")
        finally:
            # And the partition heals (SIGCONT): it finds itself fenced, follows the new leaders and catches up
            resume(pid)
        healed = clock()
        wait_for(lambda: fully_replicated(w.admin, topics), 180, "every replica back in sync")
        notes.append(f"healed at {healed:.1f}s; every replica in sync again at {clock():.1f}s")
        w.go_on()
        w.settle(timeout_s=180)
        fig, checks = w.figures(f"node {victim} cut off (SIGSTOP) and healed (SIGCONT)", faults=1,
                                recover_s=clock() - healed)
    fig.notes += notes
    assert_exactly_once(fig, checks)
    assert fig.not_acknowledged == 0
