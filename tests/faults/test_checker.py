"""The history checker finds what it is there to find: a lost event, a doubled effect, one key's events
applied out of the log's order, and an acknowledged event missing from the log. No broker needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dify_events.schemas.events import MessageWasCreated
from tests.faults.checker import History, Position, check

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def message(conversation: str, n: int) -> MessageWasCreated:
    return MessageWasCreated(tenant_id="t", message_id=f"m-{conversation}-{n}", conversation_id=conversation,
                             app_id="a", provider_name="openai", model_name="gpt", message_tokens=1,
                             answer_tokens=1, total_tokens=2)


def history(applied_order: list[int], *, logged: int = 4, doubled: int = 0, dead: set[int] = frozenset()) -> History:
    events = [message("c1", n) for n in range(4)]
    return History(
        acknowledged={e.event_id: e for e in events},
        log={e.event_id: Position("p.message", 0, 10 + n) for n, e in enumerate(events[:logged])},
        handles={"provider-usage": frozenset({"message_was_created"})},
        applied={"provider-usage": [(events[n].event_id, T0 + timedelta(seconds=i))
                                    for i, n in enumerate(applied_order)]},
        dead_lettered={"provider-usage": {events[n].event_id for n in dead}},
        doubled={"provider-usage": doubled})


def test_a_clean_history_passes():
    verdict = check(history([0, 1, 2, 3]))
    assert verdict.ok and (verdict.lost, verdict.doubled, verdict.order_violations) == (0, 0, 0)
    assert "provider-usage" in verdict.table()


def test_a_lost_a_doubled_and_a_missing_event_are_each_found():
    # an event never applied nor dead-lettered; an effect counted twice; an event the log lacks
    verdict = check(history([0, 1, 2], logged=3, doubled=1))
    assert (verdict.lost, verdict.doubled, len(verdict.missing_from_log)) == (1, 1, 1)
    assert not verdict.ok
    assert "lost" in verdict.table() and "not in the log" in verdict.table()


def test_one_keys_events_applied_out_of_log_order_are_a_violation_unless_dead_lettered():
    assert check(history([0, 2, 1, 3])).order_violations == 1
    assert check(history([0, 2, 3], dead={1})).order_violations == 0  # re-driven later, by design
    assert check(history([0, 2, 3], dead={1})).lost == 0
