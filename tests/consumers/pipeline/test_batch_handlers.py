"""Batch handlers (``ConsumerGroup.batch_handler``) without a broker: a contiguous run of a batch's events in
one call and one savepoint; a failing call's events each run alone; alone, a one-element list."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import insert

from dify_events.consumers.context import BatchContext
from dify_events.consumers.group import ConsumerGroup, GroupDefinitionError
from dify_events.consumers.testing import GroupHarness
from dify_events.schemas.events import AppWasCreated, AppWasDeleted
from tests.consumers import sample_handlers
from tests.consumers.pipeline.test_batch import claims, effects, transactions
from tests.consumers.sample_handlers import sample_effects
from tests.consumers.support import app_event


def harness_of(database_url: str, **options) -> tuple[GroupHarness, sample_handlers.Behaviour]:
    group, behaviour = sample_handlers.recording_group("batch-handler", tables=sample_handlers.metadata, batch=True,
                                                       **options)
    return GroupHarness(group, database_url, create_tables=True), behaviour


def test_each_contiguous_run_of_a_batch_handlers_events_is_one_call_in_one_savepoint(database_url, caplog):
    # Given a group with a batch handler of app_was_created, and a handler of app_was_deleted one at a time
    group, behaviour = ConsumerGroup("runs", tables=sample_handlers.metadata), sample_handlers.Behaviour()
    deleted: list[str] = []
    contexts: list[BatchContext] = []

    @group.batch_handler(AppWasCreated)
    def on_created(events: list[AppWasCreated], ctx: BatchContext) -> None:
        contexts.append(ctx)
        ctx.log.info("a call of %d", len(events))
        behaviour.handle_batch(events, ctx)

    @group.handler(AppWasDeleted)
    def on_deleted(event: AppWasDeleted, ctx) -> None:
        ctx.session.execute(insert(sample_effects).values(event_id=event.event_id, app_id=event.app_id, seq=-1,
                                                          attempt=ctx.message.attempt, group_name=ctx.group))
        deleted.append(event.app_id)

    events = [app_event("app-0", 0), app_event("app-1", 1), app_event("app-0", 2),
              AppWasDeleted(tenant_id="tenant-1", app_id="app-2"), app_event("app-3", 3), app_event("app-4", 4)]
    with GroupHarness(group, database_url, create_tables=True) as harness:
        counted = transactions(harness)
        # When they come as one batch
        with caplog.at_level(logging.INFO, logger="consumers.handler"):
            results = harness.send_batch(events)
        # Then the created events before the deleted one are one call, those after it another, in the batch's
        # order; three savepoints (one per call), one claim statement, one commit
        assert [(r.outcome, r.batched, r.attempts) for r in results] == [("handled", True, 1)] * 6
        assert behaviour.batch_calls == [[("app-0", 0), ("app-1", 1), ("app-0", 2)], [("app-3", 3), ("app-4", 4)]]
        assert deleted == ["app-2"]
        assert counted == {"commit": 1, "claims": 1, "savepoints": 3}
        assert [(a, s) for a, s, _ in effects(harness)] == [("app-0", 0), ("app-1", 1), ("app-0", 2), ("app-2", -1),
                                                             ("app-3", 3), ("app-4", 4)]
    # and the context holds each event's own context in order, with its message and event id
    first = contexts[0]
    assert [c.event_id for c in first.contexts] == [e.event_id for e in events[:3]]
    assert [c.message.offset for c in first.contexts] == [0, 1, 2]
    assert (first.group, first.event_type, first.in_transaction) == ("runs", "app_was_created", True)
    # and its log speaks for the call, not for one event
    [record] = [r for r in caplog.records if r.getMessage() == "a call of 3"]
    assert record.events == 3 and not hasattr(record, "event_id")


def test_a_failing_call_rolls_back_and_each_of_its_events_runs_alone_with_its_effects_once(database_url):
    # Given a batch handler that fails once on app-1, after writing app-0's effect in the same call
    harness, behaviour = harness_of(database_url, max_attempts=3)
    behaviour.fail["app-1"] = 1
    events = [app_event("app-0", 0), app_event("app-1", 1), app_event("app-2", 2), app_event("app-0", 3)]
    with harness:
        counted = transactions(harness)
        # When the four come as one batch
        results = harness.send_batch(events)
        # Then the call's savepoint rolled back and every event of it left the batch (the batch's failure
        # counted as attempt 1) and ran alone, in a one-element list, in each key's order
        assert [(r.outcome, r.batched, r.attempts, len(r.backoffs)) for r in results] == [
            ("handled", False, 2, 1)] * 4
        assert behaviour.batch_calls == [[("app-0", 0), ("app-1", 1), ("app-2", 2), ("app-0", 3)],
                                         [("app-0", 0)], [("app-1", 1)], [("app-2", 2)], [("app-0", 3)]]
        # and each effect is there once, written by its event's attempt alone
        assert effects(harness) == [("app-0", 0, 2), ("app-1", 1, 2), ("app-2", 2, 2), ("app-0", 3, 2)]
        assert counted["commit"] == 1 + 4 and claims(harness) == 4


def test_duplicates_are_left_out_of_a_call_before_it_runs(database_url):
    # Given an event handled before
    harness, behaviour = harness_of(database_url)
    old, new = app_event("app-1", 1), app_event("app-2", 2)
    with harness:
        assert harness.send(old).handled
        # When a batch brings it again between two new events, and one of them twice
        results = harness.send_batch([app_event("app-0", 0), old, new, new])
        # Then the old one is a duplicate found by the claim, the others one call; the twin (out of the
        # batch) a duplicate alone
        assert [(r.outcome, r.batched) for r in results] == [("handled", True), ("duplicate", True),
                                                            ("handled", True), ("duplicate", False)]
        assert behaviour.batch_calls == [[("app-1", 1)], [("app-0", 0), ("app-2", 2)]]
        assert claims(harness) == 3


@pytest.mark.parametrize("options", [{}, {"batch_max": 1}])
def test_alone_a_batch_handler_gets_a_one_element_list_with_the_events_own_context(database_url, options):
    # Given a batch handler in a group that batches, or not
    harness, behaviour = harness_of(database_url, max_attempts=2, **options)
    behaviour.fail["app-1"] = 1
    with harness:
        # When events are sent one at a time, one failing once
        results = [harness.send(app_event(f"app-{i}", i)) for i in range(3)]
        written = effects(harness)
    # Then each was one call of one event, retried as ever (a second call on attempt 2)
    assert [(r.outcome, r.attempts) for r in results] == [("handled", 1), ("handled", 2), ("handled", 1)]
    assert behaviour.batch_calls == [[("app-0", 0)], [("app-1", 1)], [("app-1", 1)], [("app-2", 2)]]
    assert written == [("app-0", 0, 1), ("app-1", 1, 2), ("app-2", 2, 1)]


@pytest.mark.parametrize("options", [{"idempotent": False}, {"batched": False}])
def test_a_batch_handler_must_be_idempotent_and_batched(options):
    group = ConsumerGroup("refused-batch-handler")
    with pytest.raises(GroupDefinitionError, match="must be idempotent and batched"):
        group.batch_handler(AppWasCreated, **options)(lambda events, ctx: None)
    assert group.handlers == {}


def test_a_call_of_n_events_has_n_times_the_time_limit(database_url):
    # Given a batch handler that takes 0.15 s an event, with a time limit of 0.4 s
    harness, behaviour = harness_of(database_url, handler_options={"time_limit_s": 0.4}, max_attempts=1)
    behaviour.default_delay_s = 0.15
    with harness:
        # When three events come as one batch (0.45 s in one call)
        results = harness.send_batch([app_event(f"app-{i}", i) for i in range(3)])
    # Then the call was not interrupted: its limit is 3 x 0.4 s
    assert [(r.outcome, r.batched) for r in results] == [("handled", True)] * 3
    assert behaviour.batch_calls == [[("app-0", 0), ("app-1", 1), ("app-2", 2)]]
