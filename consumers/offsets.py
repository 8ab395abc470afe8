"""Which offsets of each partition may be committed: at-least-once bookkeeping.

An offset is committable only when its message and every earlier fetched message of its
partition are done (handled, skipped as a duplicate, passed over, or dead-lettered and
acknowledged). The tracker belongs to the poll loop's thread: workers report finished offsets
through a queue the loop drains, so nothing here takes a lock.
"""

from __future__ import annotations

from collections import deque

TopicPartitionKey = tuple[str, int]


class PartitionOffsets:
    """Offsets of one partition in fetch order; ``position`` is the next offset to commit."""

    __slots__ = ("pending", "done", "position", "last_fetched", "dirty")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()  # fetched and not yet below the watermark, ascending
        self.done: set[int] = set()         # finished offsets still waiting on an earlier one
        self.position: int | None = None    # last contiguous done offset + 1 (what a commit stores)
        self.last_fetched = -1
        self.dirty = False                  # position moved since the last committable() call

    def fetched(self, offset: int) -> bool:
        if offset <= self.last_fetched:  # delivered again (never expected): handled once already
            return False
        self.last_fetched = offset
        self.pending.append(offset)
        return True

    def finish(self, offset: int) -> None:
        pending = self.pending
        if not pending or offset < pending[0]:
            return  # already below the watermark, or unknown: nothing to do
        if offset != pending[0]:
            self.done.add(offset)
            return
        pending.popleft()
        last = offset
        done = self.done
        while pending and pending[0] in done:
            last = pending.popleft()
            done.discard(last)
        self.position = last + 1
        self.dirty = True

    def caught_up(self, consumed: int) -> None:
        """With nothing pending, moves the position to the consumer's (``consumed``: the offset after
        the last record it read), past records no handler sees: a transaction's commit or abort
        marker, aborted messages. Otherwise the committed offset would stay one below the end of a
        partition written by transactions, and Kafka would show a lag of 1 there for good."""
        if not self.pending and consumed > (-1 if self.position is None else self.position):
            self.position = consumed
            self.dirty = True

    def __len__(self) -> int:
        return len(self.pending)


class OffsetTracker:
    """The assigned partitions' watermarks: the poll loop opens a partition's state on assignment,
    records each fetched offset in it (``PartitionOffsets.fetched``, on the hot path), applies the
    workers' reports to it (``finish``), and asks the tracker what to store or commit. Not
    thread-safe by design: one owner, the poll loop."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, PartitionOffsets] = {}

    def open(self, topic: str, partition: int) -> PartitionOffsets:
        """The state of a newly assigned partition (fresh: an earlier assignment's is dropped)."""
        state = self._partitions[(topic, partition)] = PartitionOffsets()
        return state

    def committable(self) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset) of each partition whose position moved since last asked."""
        moved = []
        for (topic, partition), state in self._partitions.items():
            if state.dirty:
                assert state.position is not None  # dirty: the position moved to an offset
                state.dirty = False
                moved.append((topic, partition, state.position))
        return moved

    def positions(self, tps: list[TopicPartitionKey] | None = None) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset) for the given partitions (all by default) that have one."""
        keys = self._partitions.keys() if tps is None else tps
        out = []
        for tp in keys:
            state = self._partitions.get(tp)
            if state is not None and state.position is not None:
                out.append((tp[0], tp[1], state.position))
        return out

    def in_flight(self) -> int:
        """Fetched offsets of every partition not yet below its watermark (what a commit would
        leave to be delivered again)."""
        return sum(len(state) for state in self._partitions.values())

    def idle(self) -> list[TopicPartitionKey]:
        """The partitions with nothing pending: their positions may catch up with the consumer's."""
        return [tp for tp, state in self._partitions.items() if not state.pending]

    def caught_up(self, tp: TopicPartitionKey, consumed: int) -> None:
        """``PartitionOffsets.caught_up`` of an assigned partition (one forgotten since is ignored)."""
        state = self._partitions.get(tp)
        if state is not None:
            state.caught_up(consumed)

    def forget(self, tps: list[TopicPartitionKey]) -> None:
        """Drops revoked or lost partitions: their late completions (to their detached state) no
        longer move anything that is stored or committed."""
        for tp in tps:
            self._partitions.pop(tp, None)
