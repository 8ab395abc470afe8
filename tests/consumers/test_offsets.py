"""The offset tracker the runner keeps: a partition's position moves only past offsets that are all done."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dify_events.consumers.offsets import OffsetTracker


def test_position_waits_for_the_earliest_unfinished_offset():
    # Given offsets 0..4 fetched
    tracker = OffsetTracker()
    state = tracker.open("t", 0)
    for offset in range(5):
        state.fetched(offset)
    # When 1, 2 and 4 finish
    for offset in (1, 2, 4):
        state.finish(offset)
    # Then nothing is committable (0 is not done)
    assert state.position is None
    assert tracker.committable() == [] and tracker.positions() == []
    # When 0 finishes, the position jumps past 2 (3 is not done)
    state.finish(0)
    assert tracker.committable() == [("t", 0, 3)]
    # When 3 finishes, past 4
    state.finish(3)
    assert tracker.committable() == [("t", 0, 5)]
    assert tracker.in_flight() == 0


def test_gaps_in_offsets_do_not_block_the_position():
    # Given a compacted or transactional partition: offsets 10, 13, 20
    state = OffsetTracker().open("t", 0)
    for offset in (10, 13, 20):
        state.fetched(offset)
    # When all finish
    for offset in (20, 10, 13):
        state.finish(offset)
    # Then the position is after the last
    assert state.position == 21


def test_partitions_are_independent_and_committable_reports_only_moves():
    # Given two partitions
    tracker = OffsetTracker()
    first, second = tracker.open("t", 0), tracker.open("t", 1)
    first.fetched(0)
    second.fetched(7)
    # When only partition 1 finishes
    second.finish(7)
    # Then only partition 1 moved, and it is reported once
    assert tracker.committable() == [("t", 1, 8)]
    assert tracker.committable() == []
    # And its position is still there to commit (on revocation, on shutdown), the other has none
    assert tracker.positions([("t", 0), ("t", 1)]) == tracker.positions() == [("t", 1, 8)]
    assert tracker.in_flight() == len(first) == 1


def test_a_refetched_offset_is_refused_and_forgotten_partitions_ignore_late_reports():
    # Given offset 0 fetched
    tracker = OffsetTracker()
    state = tracker.open("t", 0)
    assert state.fetched(0) is True
    # Then fetching it again is refused (the message is already on its way)
    assert state.fetched(0) is False
    # When the partition is revoked, a late report moves nothing the tracker stores or commits
    tracker.forget([("t", 0)])
    state.finish(0)
    assert tracker.committable() == [] and tracker.positions([("t", 0)]) == [] and tracker.in_flight() == 0
    # And a new assignment starts fresh
    state = tracker.open("t", 0)
    assert state.fetched(0) and state.position is None


@given(st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=60), st.randoms())
def test_position_is_always_one_past_the_longest_finished_prefix(gaps, rnd):
    # Given fetched offsets with random gaps, finished in a random order
    tracker = OffsetTracker()
    state = tracker.open("t", 0)
    offsets, offset = [], 0
    for gap in gaps:
        offset += gap + 1
        offsets.append(offset)
        state.fetched(offset)
    order = offsets[:]
    rnd.shuffle(order)
    finished: set[int] = set()
    for o in order:
        # When one more finishes
        state.finish(o)
        finished.add(o)
        # Then the position is one past the last offset of the finished prefix (or none)
        prefix = 0
        while prefix < len(offsets) and offsets[prefix] in finished:
            prefix += 1
        expected = offsets[prefix - 1] + 1 if prefix else None
        assert state.position == expected
        assert tracker.in_flight() == len(offsets) - prefix
    assert tracker.in_flight() == 0


def test_an_idle_partition_catches_up_with_the_consumer_past_records_no_handler_sees():
    # Given a transaction's two messages fetched (its commit marker at offset 2, never delivered)
    tracker = OffsetTracker()
    state = tracker.open("t", 0)
    for offset in (0, 1):
        state.fetched(offset)
    # When one is done while the consumer has read past the marker
    state.finish(0)
    assert tracker.idle() == []
    tracker.caught_up(("t", 0), 3)
    # Then the position waits for the other
    assert state.position == 1
    # When both are done, the position moves to the consumer's, past the marker
    state.finish(1)
    assert tracker.idle() == [("t", 0)]
    tracker.caught_up(("t", 0), 3)
    assert state.position == 3 and tracker.committable() == [("t", 0, 3)]
    # And a position behind it, or none (librdkafka's -1001: nothing read yet), changes nothing
    tracker.caught_up(("t", 0), 2)
    tracker.caught_up(("t", 0), -1001)
    assert state.position == 3
    # And a partition forgotten meanwhile is left alone
    tracker.forget([("t", 0)])
    tracker.caught_up(("t", 0), 9)
    assert state.position == 3
