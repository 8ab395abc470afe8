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
    """Per-partition watermarks. Not thread-safe by design: one owner, the poll loop."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, PartitionOffsets] = {}

    def open(self, topic: str, partition: int) -> PartitionOffsets:
        """The state of a newly assigned partition (fresh: an earlier assignment's is dropped)."""
        state = self._partitions[(topic, partition)] = PartitionOffsets()
        return state

    def fetched(self, topic: str, partition: int, offset: int) -> bool:
        """Records a fetched offset; False when it was fetched before (drop the message)."""
        tp = (topic, partition)
        state = self._partitions.get(tp)
        if state is None:
            state = self._partitions[tp] = PartitionOffsets()
        return state.fetched(offset)

    def finish(self, topic: str, partition: int, offset: int) -> None:
        """Marks an offset done; the partition's position moves past every contiguous done offset.
        Offsets of partitions forgotten since (revoked) are ignored."""
        state = self._partitions.get((topic, partition))
        if state is not None:
            state.finish(offset)

    def committable(self) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset) of each partition whose position moved since last asked."""
        moved = []
        for (topic, partition), state in self._partitions.items():
            if state.dirty:
                assert state.position is not None  # dirty: the position moved to an offset
                state.dirty = False
                moved.append((topic, partition, state.position))
        return moved

    def position(self, topic: str, partition: int) -> int | None:
        state = self._partitions.get((topic, partition))
        return None if state is None else state.position

    def positions(self, tps: list[TopicPartitionKey] | None = None) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset) for the given partitions (all by default) that have one."""
        keys = self._partitions.keys() if tps is None else tps
        out = []
        for tp in keys:
            state = self._partitions.get(tp)
            if state is not None and state.position is not None:
                out.append((tp[0], tp[1], state.position))
        return out

    def in_flight(self, topic: str | None = None, partition: int | None = None) -> int:
        """Fetched offsets not yet below a watermark: of one partition, or of all."""
        if topic is not None:
            state = self._partitions.get((topic, partition)) if partition is not None else None
            return 0 if state is None else len(state)
        return sum(len(state) for state in self._partitions.values())

    def forget(self, tps: list[TopicPartitionKey]) -> None:
        """Drops revoked or lost partitions: their late completions are ignored from now on."""
        for tp in tps:
            self._partitions.pop(tp, None)

    def partitions(self) -> list[TopicPartitionKey]:
        return list(self._partitions)
