"""Batches without a broker (``GroupHarness.send_batch``): one transaction for many idempotent events,
a failing event leaving its batch with its key's later events, the rest committed once."""

from __future__ import annotations

from typing import cast

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import event as sa_event
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError

from dify_events.consumers.errors import MessageRejected
from dify_events.consumers.group import ConsumerGroup, GroupDefinitionError
from dify_events.consumers.idempotency import processed_events
from dify_events.consumers.job import Job
from dify_events.consumers.pipeline.batch import BatchSession, CommitInBatch
from dify_events.consumers.testing import GroupHarness
from dify_events.schemas.events import AppWasCreated
from tests.consumers import sample_handlers
from tests.consumers.sample_handlers import sample_effects
from tests.consumers.support import app_event
from tests.telemetry.support import points, value


def harness_of(database_url: str, **options) -> tuple[GroupHarness, sample_handlers.Behaviour]:
    group, behaviour = sample_handlers.recording_group("batched", tables=sample_handlers.metadata, **options)
    return GroupHarness(group, database_url, create_tables=True), behaviour


def transactions(harness: GroupHarness) -> dict[str, int]:
    """Counts the batch engine's COMMITs, claim INSERTs and SAVEPOINTs from now on."""
    assert harness.batch_runner is not None
    seen = {"commit": 0, "claims": 0, "savepoints": 0}

    def statement(_conn, _cursor, sql, *_):
        seen["claims"] += sql.lstrip().upper().startswith("INSERT INTO PROCESSED_EVENTS")

    def count(name):
        return lambda *_: seen.__setitem__(name, seen[name] + 1)

    sa_event.listen(harness.batch_runner.engine, "before_cursor_execute", statement)
    sa_event.listen(harness.batch_runner.engine, "commit", count("commit"))
    sa_event.listen(harness.batch_runner.engine, "savepoint", count("savepoints"))
    return seen


def effects(harness: GroupHarness) -> list[tuple[str, int, int]]:
    """(app_id, seq, attempt) of each effect, in the order written."""
    with harness.session() as session:
        columns = (sample_effects.c.app_id, sample_effects.c.seq, sample_effects.c.attempt)
        return [tuple(r) for r in session.execute(select(*columns).order_by(sample_effects.c.id))]


def claims(harness: GroupHarness) -> int:
    with harness.session() as session:
        return session.scalar(select(func.count()).select_from(processed_events))


def test_a_batch_of_many_keys_is_handled_in_one_transaction(database_url):
    # Given a batching group, and 20 events over 5 keys
    harness, _ = harness_of(database_url)
    events = [app_event(f"app-{i % 5}", i) for i in range(20)]
    with harness:
        counted = transactions(harness)
        # When they are sent as one batch
        results = harness.send_batch(events)
        # Then each was handled in the batch, with one claim statement and one commit, a savepoint each
        assert [(r.outcome, r.batched, r.attempts) for r in results] == [("handled", True, 1)] * 20
        assert counted == {"commit": 1, "claims": 1, "savepoints": 20}
        assert harness.batch_runner is not None and harness.batch_runner.committed == 1
        # and every effect is there once, in each key's order
        assert sorted(effects(harness)) == sorted((f"app-{i % 5}", i, 1) for i in range(20))
        for k in range(5):
            assert [s for a, s, _ in effects(harness) if a == f"app-{k}"] == list(range(k, 20, 5))
        assert claims(harness) == 20


def test_a_batch_runs_tenant_by_tenant_and_each_key_in_its_order(database_url):
    # Given a batching group, and events of three tenants interleaved, two of them twice of one key
    harness, _ = harness_of(database_url)
    fetched = [("t-b", "app-1", 0), ("t-a", "app-2", 1), ("t-b", "app-1", 2), ("t-a", "app-3", 3), ("t-c", "app-4", 4),
               ("t-a", "app-2", 5)]
    events = [AppWasCreated(tenant_id=tenant, app_id=app, mode="chat", name=f"app-{seq}")
              for tenant, app, seq in fetched]
    with harness:
        # When they are sent as one batch
        results = harness.send_batch(events)
        # Then they ran in one transaction, a tenant's after another's (so that two batches lock tenants' rows
        # in one order and never deadlock), each key's events in the order they were fetched
        assert [(r.outcome, r.batched) for r in results] == [("handled", True)] * 6
        assert [(a, s) for a, s, _ in effects(harness)] == [("app-2", 1), ("app-3", 3), ("app-2", 5), ("app-1", 0),
                                                           ("app-1", 2), ("app-4", 4)]


def test_only_a_handler_that_uses_its_session_gets_a_savepoint(database_url):
    # Given a handler that writes through ctx.session for even events and for event 3, which then fails,
    # and leaves its session alone for the other odd ones
    group = ConsumerGroup("lazy-savepoints", tables=sample_handlers.metadata, max_attempts=1)

    @group.handler(AppWasCreated)
    def handle(event: AppWasCreated, ctx) -> None:
        seq = int(event.name.rsplit("-", 1)[-1])
        if seq % 2 == 0 or seq == 3:
            ctx.session.execute(insert(sample_effects).values(event_id=event.event_id, app_id=event.app_id, seq=seq,
                                                              attempt=ctx.message.attempt, group_name=ctx.group))
        if seq == 3:
            raise MessageRejected("rejected after writing")

    nested: list[object] = []

    def opened(_session, transaction) -> None:
        if transaction.nested:
            nested.append(transaction)

    sa_event.listen(BatchSession, "after_transaction_create", opened)
    try:
        with GroupHarness(group, database_url, create_tables=True) as harness:
            counted = transactions(harness)
            # When six events come as one batch
            results = harness.send_batch([app_event(f"app-{i}", i) for i in range(6)])
            # Then only the four that used their session opened a savepoint (a nested transaction of the
            # session); event 3's write was rolled back with it (the event left the batch and was
            # dead-lettered alone); the others' effects committed once
            assert [(r.outcome, r.batched) for r in results] == [("handled", True)] * 3 + [
                ("dead_lettered", False)] + [("handled", True)] * 2
            assert len(nested) == counted["savepoints"] == 4 and counted["claims"] == 1
            assert [(a, s) for a, s, _ in effects(harness)] == [("app-0", 0), ("app-2", 2), ("app-4", 4)]
            assert claims(harness) == 5
    finally:
        sa_event.remove(BatchSession, "after_transaction_create", opened)


def test_duplicates_in_a_batch_are_skipped(database_url):
    # Given an event handled before
    harness, behaviour = harness_of(database_url)
    old, new = app_event("app-1", 1), app_event("app-2", 2)
    with harness:
        assert harness.send(old).handled
        counted = transactions(harness)
        # When a batch brings it again, with a new event twice
        results = harness.send_batch([old, new, new])
        # Then the old one is a duplicate found by the batch's claim, the new one handled once, its twin
        # (left out of the batch) a duplicate on its own after the batch committed
        assert [(r.outcome, r.batched) for r in results] == [("duplicate", True), ("handled", True),
                                                            ("duplicate", False)]
        assert behaviour.calls == {"app-1": 1, "app-2": 1}
        assert counted["savepoints"] == 1 and claims(harness) == 2


def test_a_failing_event_leaves_its_batch_with_its_keys_later_events_and_is_retried_alone(database_url):
    # Given a handler that fails once on the first event of app-1
    harness, behaviour = harness_of(database_url, max_attempts=3)
    behaviour.fail["app-1"] = 1
    events = [app_event("app-1", 1), app_event("app-2", 1), app_event("app-1", 2), app_event("app-2", 2),
              app_event("app-1", 3)]
    with harness:
        counted = transactions(harness)
        # When they are sent as one batch
        results = harness.send_batch(events)
        # Then app-2's events committed in the batch; app-1's first failed there (its savepoint and claim
        # undone), was retried alone as attempt 2 after one backoff, and app-1's later events ran after it
        assert [(r.outcome, r.batched, r.attempts, len(r.backoffs)) for r in results] == [
            ("handled", False, 2, 1), ("handled", True, 1, 0), ("handled", False, 1, 0), ("handled", True, 1, 0),
            ("handled", False, 1, 0)]
        assert [e for e in effects(harness) if e[0] == "app-1"] == [("app-1", 1, 2), ("app-1", 2, 1), ("app-1", 3, 1)]
        assert sorted(e for e in effects(harness) if e[0] == "app-2") == [("app-2", 1, 1), ("app-2", 2, 1)]
        assert counted["claims"] == 1 + 3  # the batch's one, then app-1's three alone
        assert claims(harness) == 5


@pytest.mark.parametrize("error", [RuntimeError, MessageRejected])
def test_a_poison_event_in_a_batch_is_dead_lettered_once_and_the_rest_commit(database_url, error):
    # Given a handler that always fails on app-1 (retried, or rejected at once), with three attempts
    harness, behaviour = harness_of(database_url, max_attempts=3)
    behaviour.fail["app-1"], behaviour.error = -1, error
    events = [app_event(f"app-{i % 4}", i) for i in range(12)]
    with harness:
        # When they are sent as one batch
        results = harness.send_batch(events)
        # Then app-1's first event is dead-lettered once, after its attempts (the batch's the first)
        poison = results[1]
        attempts = 3 if error is RuntimeError else 1
        assert poison.dead_lettered and poison.attempts == attempts and not poison.batched
        assert len(harness.dead_letters) == 3  # app-1's three events: each fails for good, alone
        assert [r.outcome for r in results if r.event.app_id == "app-1"] == ["dead_lettered"] * 3
        # and every other event committed in the batch, once
        assert all(r.handled and r.batched for r in results if r.event.app_id != "app-1")
        assert sorted(effects(harness)) == sorted((f"app-{i % 4}", i, 1) for i in range(12) if i % 4 != 1)
        assert claims(harness) == 9


def test_a_database_error_rolls_back_the_whole_batch_and_every_event_runs_alone(database_url):
    # Given a handler whose database connection fails once, on app-2's event (a dependency error)
    harness, behaviour = harness_of(database_url, max_attempts=3)
    behaviour.fail["app-2"] = 1
    behaviour.error = lambda message: OperationalError("INSERT ...", {}, ConnectionRefusedError(message))
    events = [app_event(f"app-{i}", i) for i in range(5)]
    with harness:
        # When they are sent as one batch
        results = harness.send_batch(events)
        # Then the batch was rolled back whole (app-0 and app-1's effects with it) and each event ran alone, once
        batch_runner = harness.batch_runner
        assert batch_runner is not None and (batch_runner.committed, batch_runner.rolled_back) == (0, 1)
        assert [(r.outcome, r.batched, r.attempts) for r in results] == [("handled", False, 1)] * 5
        assert sorted(effects(harness)) == [(f"app-{i}", i, 1) for i in range(5)]
        assert claims(harness) == 5 and harness.dead_letters == []


@pytest.mark.parametrize("options", [{}, {"max_attempts": 1}, {"retry_on": (ValueError,)}],
                         ids=["retries", "one-attempt", "retry-on-other-errors"])
def test_a_handler_that_commits_inside_a_batch_is_refused_and_its_event_runs_alone(database_url, options):
    # Given a handler that commits its session itself (whose retries, if any, would not cover the refusal)
    group = ConsumerGroup("committing", tables=sample_handlers.metadata)
    refused: list[Exception] = []

    @group.handler(AppWasCreated, **options)
    def commit_early(event, ctx):
        ctx.session.execute(insert(sample_effects).values(event_id=event.event_id, app_id=event.app_id, seq=0,
                                                          attempt=ctx.message.attempt, group_name=ctx.group))
        try:
            ctx.session.commit()
        except CommitInBatch as exc:
            refused.append(exc)
            raise

    with GroupHarness(group, database_url, create_tables=True) as harness:
        # When two events are sent as a batch
        results = harness.send_batch([app_event("app-1", 1), app_event("app-2", 2)])
    # Then each commit was refused with a clear error, and each event ran alone instead, its effect once
    assert len(refused) == 2 and "inside a batch" in str(refused[0])
    assert [(r.outcome, r.batched, r.attempts) for r in results] == [("handled", False, 1)] * 2
    with harness.session() as session:
        assert session.scalar(select(func.count()).select_from(sample_effects)) == 2


def test_groups_that_do_not_batch_run_each_event_alone(database_url):
    # Given a group with batch_max 1, and one whose handler is not batched
    for options in ({"batch_max": 1}, {"handler_options": {"batched": False}}):
        harness, _ = harness_of(database_url, **options)
        with harness:
            # Then it has no batch runner
            assert harness.batch_runner is None
            with pytest.raises(ValueError, match="does not batch"):
                harness.send_batch([app_event("app-1", 1)])
    # And batch_max belongs to the group, not to a handler
    group, behaviour = sample_handlers.recording_group("refused")
    with pytest.raises(GroupDefinitionError, match="batch_max"):
        group.handler("tenant_was_created", batch_max=5)(behaviour.handle)


def test_a_batch_open_batch_max_s_takes_no_more_events(database_url):
    # Given a group whose batches take no more events once open 0 seconds (after their first)
    harness, _ = harness_of(database_url, batch_max_s=0.0)
    with harness:
        counted = transactions(harness)
        # When three events are sent as a batch
        results = harness.send_batch([app_event(f"app-{i}", i) for i in range(3)])
        # Then the first committed in the batch, the others went back unclaimed and ran alone, each once
        assert [(r.outcome, r.batched) for r in results] == [("handled", True), ("handled", False), ("handled", False)]
        assert counted["commit"] == 3 and claims(harness) == 3
        assert sorted(effects(harness)) == [(f"app-{i}", i, 1) for i in range(3)]


def test_a_batchs_completions_are_reported_only_after_its_commit(database_url):
    # Given a runner's batch path over a harness's batch runner, and the completions seen at COMMIT
    from dify_events.consumers.runner import GroupRunner

    harness, _ = harness_of(database_url)
    runner = GroupRunner(harness.group, health_port=0)
    runner.batch_runner = harness.batch_runner
    seen_at_commit: list[int] = []
    assert harness.batch_runner is not None
    sa_event.listen(harness.batch_runner.engine, "commit",
                    lambda _conn: seen_at_commit.append(len(runner._completions)))
    with harness:
        jobs = [cast(Job, harness._job(*harness._message_of(app_event(f"app-{i}", i)))) for i in range(5)]
        # When the runner runs them as a batch
        back = runner._process_batch(jobs)
    # Then nothing was reported when COMMIT ran, and all five were reported after it
    assert back == [] and seen_at_commit == [0]
    assert [outcome for _, _, outcome in runner._completions] == ["handled"] * 5


def test_each_event_of_a_batch_keeps_its_consumer_span_ended_after_the_commit(database_url):
    # Given a traced, batching group whose handler fails once on app-1
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    group, behaviour = sample_handlers.recording_group("traced", tables=sample_handlers.metadata)
    behaviour.fail["app-1"] = 1
    with GroupHarness(group, database_url, create_tables=True, tracer_provider=provider) as harness:
        # When three events, published inside a request's span, are sent as one batch
        with provider.get_tracer("test").start_as_current_span("request") as request:
            results = harness.send_batch([app_event(f"app-{i}", i) for i in range(3)])
    assert [(r.outcome, r.batched) for r in results] == [("handled", True), ("handled", False), ("handled", True)]
    # Then app-0 and app-2 have one CONSUMER span each, children of the request, outcome handled, with the
    # batch's size; app-1 has one that left the batch (with its error), and one of its run alone
    consumer = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert all(s.parent.span_id == request.get_span_context().span_id for s in consumer)
    by_offset = sorted(((s.attributes["messaging.kafka.offset"], s.attributes["events.outcome"],
                         s.attributes.get("events.batch.size"), s.status.status_code) for s in consumer),
                       key=lambda row: (row[0], row[2] is None))
    assert by_offset == [(0, "handled", 3, StatusCode.UNSET), (1, "left_batch", 3, StatusCode.ERROR),
                         (1, "handled", None, StatusCode.UNSET), (2, "handled", 3, StatusCode.UNSET)]
    # and each handler call has its span inside its event's CONSUMER span
    handle = [s for s in exporter.get_finished_spans() if s.name == "handle app_was_created"]
    assert len(handle) == 4 and {s.parent.span_id for s in handle} <= {s.context.span_id for s in consumer}


def test_batch_max_comes_from_the_runner_then_the_settings_then_the_group(monkeypatch):
    from dify_events.consumers.runner import GroupRunner
    from dify_events.schemas.settings import Settings

    # Given a group whose batch_max is 20
    group, _ = sample_handlers.recording_group("sized", batch_max=20)
    # Then a runner takes the group's, unless the settings (EVENTS_BATCH_MAX) or the runner's own say otherwise
    assert GroupRunner(group, settings=Settings()).batch_max == 20
    monkeypatch.setenv("EVENTS_BATCH_MAX", "1")
    assert GroupRunner(group, settings=Settings()).batch_max == 1
    assert GroupRunner(group, settings=Settings(), batch_max=7).batch_max == 7


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite's one write lock cannot deadlock
def test_two_members_whose_batches_deadlock_end_with_every_effect_once(database_url, caplog):
    # Given two members of a group whose handlers lock two rows, in opposite orders for two of the events,
    # each waiting for the other to hold its first row (so PostgreSQL must break a deadlock)
    import threading

    from sqlalchemy import update

    both_hold_one = threading.Barrier(2)
    calls: dict[str, int] = {}
    lock = threading.Lock()
    group = ConsumerGroup("deadlocking", tables=sample_handlers.metadata)

    @group.handler(AppWasCreated)
    def lock_rows(event, ctx):
        with lock:
            calls[event.event_id] = calls.get(event.event_id, 0) + 1
            first_call = calls[event.event_id] == 1
        order = {"app-b": (1001, 1002), "app-d": (1002, 1001)}.get(event.app_id)  # one row then the other
        if order is not None:
            first, second = order
            ctx.session.execute(update(sample_effects).where(sample_effects.c.id == first).values(attempt=0))
            if first_call:
                both_hold_one.wait(10)
            ctx.session.execute(update(sample_effects).where(sample_effects.c.id == second).values(attempt=0))
        ctx.session.execute(insert(sample_effects).values(event_id=event.event_id, app_id=event.app_id, seq=1,
                                                          attempt=ctx.message.attempt, group_name=ctx.group))

    members = [GroupHarness(group, database_url, create_tables=True) for _ in range(2)]
    with members[0].session() as session, session.begin():
        session.execute(insert(sample_effects), [{"id": i, "event_id": f"row-{i}", "app_id": "-", "seq": 0,
                                                  "attempt": 0, "group_name": "-"} for i in (1001, 1002)])
    batches = [[app_event("app-a", 1), app_event("app-b", 2)],
               [app_event("app-c", 3), app_event("app-d", 4)]]
    results: dict[int, list] = {}
    # When each member runs its batch at the same time
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, members[i].send_batch(batches[i])))
               for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        # Then one batch committed, the deadlock's victim was rolled back and its events ran alone; every
        # event was handled, its effect there once, nothing dead-lettered, and no outage was taken for it
        assert sorted(m.batch_runner.rolled_back for m in members) == [0, 1]  # type: ignore[union-attr]
        assert "DeadlockDetected" in caplog.text
        assert all(r.handled for i in range(2) for r in results[i])
        with members[0].session() as session:
            written = session.scalars(select(sample_effects.c.event_id).where(sample_effects.c.seq == 1)).all()
        assert sorted(written) == sorted(e.event_id for batch in batches for e in batch)
        assert all(m.dead_letters == [] and not m.resources.breaker.is_open() for m in members)
    finally:
        for member in members:
            member.close()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # the limit is PostgreSQL's
def test_a_batch_max_past_postgresqls_savepoint_cache_is_warned_about(database_url, caplog):
    # Given a group whose batches would take 65 savepoints on PostgreSQL
    harness, _ = harness_of(database_url, batch_max=65)
    with harness:
        # Then starting it says so, and what to use instead
        assert "batch_max 65 is above 64" in caplog.text and "use 64 or less" in caplog.text


def test_a_redelivered_batch_is_all_duplicates_without_running_a_handler(database_url):
    # Given a batch handled and committed (then, say, the process died before its offsets were stored)
    harness, behaviour = harness_of(database_url)
    events = [app_event(f"app-{i % 3}", i) for i in range(9)]
    with harness:
        assert all(r.handled for r in harness.send_batch(events))
        counted = transactions(harness)
        # When the same events are delivered again as a batch
        results = harness.send_batch(events)
        # Then the one claim statement finds them all: duplicates, no handler run, no savepoint
        assert [(r.outcome, r.batched) for r in results] == [("duplicate", True)] * 9
        assert sum(behaviour.calls.values()) == 9
        assert counted == {"commit": 1, "claims": 1, "savepoints": 0}


def test_batches_are_counted_by_result_with_the_messages_they_held(database_url):
    # Given a batching group whose pipeline keeps metrics, and whose database fails once on app-9's event
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    group, behaviour = sample_handlers.recording_group("batched", tables=sample_handlers.metadata, max_attempts=3)
    behaviour.fail["app-9"] = 1
    behaviour.error = lambda message: OperationalError("INSERT ...", {}, ConnectionRefusedError(message))
    events = [app_event(f"app-{i}", i) for i in range(5)]
    with GroupHarness(group, database_url, create_tables=True, meter_provider=provider) as harness:
        # When five events run in a batch, then the same five again (duplicates, skipped in a batch),
        # then two whose batch the database error rolls back whole
        harness.send_batch(events)
        harness.send_batch(events)
        harness.send_batch([app_event("app-8", 8), app_event("app-9", 9)])
    # Then two batches committed, holding ten messages, and one rolled back
    collected = points(reader)
    assert value(collected, "events.consumer.batches", group="batched", result="committed") == 2
    assert value(collected, "events.messages.batched", group="batched") == 10
    assert value(collected, "events.consumer.batches", group="batched", result="rolled_back") == 1
    provider.shutdown()
