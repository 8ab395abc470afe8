"""A Jepsen-style check of a fault run: the history of what the producers had acknowledged and of what
each group applied, checked at the end for loss, duplication and per-key order, printed as a table.

The history:

- *acknowledged*: each event the SDK took (``publish``) and never reported as failed once it was
  flushed, and each outbox row the relay marked sent (only after the broker's acknowledgement);
- *the log*: where each event first stands in its domain topic, read back from the cluster at the end
  (an acknowledged event missing there was lost by Kafka itself: a leader elected without it);
- *applied*: each group's idempotency claims (``processed_events``: event id, time), committed in the
  transaction of the handler's effects; and the effects in the domain tables, counted for doubles;
- *dead-lettered*: each group's dead letters, by event id.

The checks, per group: every acknowledged event the group takes was applied or dead-lettered (lost
otherwise); no effect happened twice (doubled); and the events of one key were applied in the order
the log holds them (an order violation: a later offset applied before an earlier one of its key).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from dify_events.consumers.recovery.kafka import read_ranges, reader, watermarks
from dify_events.schemas import headers as H
from dify_events.schemas.catalogue import CATALOGUE
from dify_events.schemas.events import Event
from dify_events.schemas.settings import Settings


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int


def read_log(settings: Settings, admin, topics: Iterable[str]) -> dict[str, Position]:
    """Each event id's first position in ``topics`` (committed records, from the beginning to the end)."""
    metadata = admin.list_topics(timeout=30)
    tps = [(t, p) for t in topics if t in metadata.topics for p in metadata.topics[t].partitions]
    marks = watermarks(admin, tps)
    consumer = reader(settings, "faults-history")
    first: dict[str, Position] = {}
    try:
        for msg in read_ranges(consumer, [(t, p, low, high) for (t, p), (low, high) in sorted(marks.items())]):
            event_id = dict(msg.headers() or []).get(H.EVENT_ID)
            if isinstance(event_id, bytes):
                first.setdefault(event_id.decode(), Position(str(msg.topic()), msg.partition() or 0, msg.offset() or 0))
    finally:
        consumer.close()
    return first


@dataclass
class History:
    acknowledged: dict[str, Event]                       # event id -> the event
    log: dict[str, Position]                             # event id -> first position in its topic
    handles: dict[str, frozenset[str]]                   # group -> the event types it handles
    applied: dict[str, list[tuple[str, datetime]]]       # group -> (event id, claimed at), as claimed
    dead_lettered: dict[str, set[str]]                   # group -> event ids
    doubled: dict[str, int] = field(default_factory=dict)  # group -> effects beyond one per event


@dataclass
class Row:
    group: str
    acknowledged: int = 0
    applied: int = 0
    dead_lettered: int = 0
    lost: int = 0
    doubled: int = 0
    order_violations: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    rows: list[Row]
    acknowledged: int
    missing_from_log: list[str]

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.rows)

    @property
    def doubled(self) -> int:
        return sum(r.doubled for r in self.rows)

    @property
    def order_violations(self) -> int:
        return sum(r.order_violations for r in self.rows)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.order_violations or self.missing_from_log)

    def table(self) -> str:
        head = ("group", "acknowledged", "applied", "dead-lettered", "lost", "doubled", "order violations")
        lines = [head] + [(r.group, r.acknowledged, r.applied, r.dead_lettered, r.lost, r.doubled,
                           r.order_violations) for r in self.rows]
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
        text = ["  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(line, widths,
                                                                                                    strict=True)))
                for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        text.append(f"{self.acknowledged} events acknowledged to the producers; "
                    f"{len(self.missing_from_log)} of them missing from the log")
        text += [f"  {r.group}: {example}" for r in self.rows for example in r.examples]
        text += [f"  not in the log: {event_id}" for event_id in self.missing_from_log[:3]]
        return "\n".join(text)


def check(history: History) -> Verdict:
    missing = sorted(set(history.acknowledged) - set(history.log))
    rows = []
    for group, types in history.handles.items():
        row = Row(group, doubled=history.doubled.get(group, 0))
        taken = {i for i, e in history.acknowledged.items() if e.event_type in types}
        claims = history.applied.get(group, [])
        applied = {i for i, _ in claims}
        dead = history.dead_lettered.get(group, set())
        row.acknowledged, row.applied, row.dead_lettered = len(taken), len(applied & taken), len(dead & taken)
        lost = sorted(taken - applied - dead)
        row.lost = len(lost)
        row.examples += [f"lost {event_id}" for event_id in lost[:3]]
        violations = order_violations(claims, history, dead)
        row.order_violations = len(violations)
        row.examples += violations[:3]
        rows.append(row)
    return Verdict(rows, len(history.acknowledged), missing)


def order_violations(claims: list[tuple[str, datetime]], history: History, dead: set[str]) -> list[str]:
    """Pairs of one key's events applied in another order than the log's. Dead-lettered events are left
    out: a re-driven one comes back through the retry topic after later events of its key, by design."""
    by_key: Mapping[tuple[str, str], list[tuple[datetime, int, str]]] = defaultdict(list)
    events = history.acknowledged
    for event_id, at in claims:
        position = history.log.get(event_id)
        if event_id in dead or position is None or event_id not in events:
            continue
        key = CATALOGUE.for_event(events[event_id]).key_of(events[event_id])
        by_key[(position.topic, key)].append((at, position.offset, event_id))
    found = []
    for (topic, key), applied in by_key.items():
        applied.sort()
        for (_, before, first), (_, after, second) in zip(applied, applied[1:], strict=False):
            if after < before:
                found.append(f"key {key} on {topic}: {second} (offset {after}) applied after {first} "
                             f"(offset {before})")
    return found
