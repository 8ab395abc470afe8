"""Planning a replay: which offsets of which partitions a group reads again, and how.

Two ways to make a group read messages again:

- **rewind** (a stopped group, with no ``--until``): set the group's committed offsets back to the
  start, so it re-reads everything from there when it starts. Only ever backwards: a partition whose
  committed offset is already at or before the start is left alone (moving it forward would skip
  messages), and so is one with no committed offset (the group reads it from the beginning anyway).
- **copy** (a running group, ``--until``, ``--copy`` or ``--reprocess``): copy the range's messages
  into the group's private retry topic, which only that group reads, while live traffic goes on. A
  copy range ends at ``--until`` (else the end of the partition when planned) and never goes past
  the group's committed offset: what lies beyond is still ahead of the group, which reads it anyway.

The mode is chosen unless ``--copy`` or ``--rewind`` names it. Kafka sets a group's offsets only
while it has no members, so a running group is copied into; a rewind cannot stop at an end (the
group reads on from its start), so ``--until`` copies too. ``--reprocess`` needs the
``events-reprocess: 1`` header on each message, and a rewind re-reads the original messages, which
cannot be given headers: so ``--reprocess`` always copies. ``--rewind`` refuses what it cannot do:
a group with members (naming them), ``--until`` and ``--reprocess``.

``plan_range`` and ``choose_mode`` are pure (tested without a broker); ``gather`` asks the cluster
for the facts they work on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka.admin import AdminClient

from ..group import SHARED, ConsumerGroup
from . import kafka
from .errors import BadSelection, GroupActive
from .kafka import Member
from .positions import Position
from .times import show, to_millis

REWIND = "rewind"
COPY = "copy"
SHARE_GROUP = "SHARE GROUP"  # a shared group's state in a plan: the Python client cannot describe a share group


@dataclass(frozen=True)
class Request:
    """Where a replay starts (exactly one of the three) and, optionally, ends."""

    since: datetime | None = None
    positions: tuple[Position, ...] = ()
    from_beginning: bool = False
    until: datetime | None = None

    def __post_init__(self) -> None:
        given = [name for name, on in (("--since", self.since is not None), ("--from-offsets", bool(self.positions)),
                                       ("--from-beginning", self.from_beginning)) if on]
        if len(given) != 1:
            raise BadSelection("give exactly one start: --since TIME, --from-offsets topic:partition:offset,... "
                               f"or --from-beginning{' (not ' + ' and '.join(given) + ')' if given else ''}")
        if self.until is not None and self.since is not None and self.until <= self.since:
            raise BadSelection(f"--until ({show(self.until)}) must be later than --since ({show(self.since)})")

    def describe(self) -> str:
        start = (f"since {show(self.since)}" if self.since is not None else "from the beginning"
                 if self.from_beginning else "from the given offsets")
        return start + (f" until {show(self.until)}" if self.until is not None else "")


@dataclass(frozen=True)
class PartitionFacts:
    """What the cluster says about one partition. ``start``: where the request begins in it
    (``None``: the request does not name it); ``stop``: where ``--until`` ends (``None``: no until)."""

    topic: str
    partition: int
    low: int
    high: int
    committed: int | None
    start: int | None
    stop: int | None = None
    note: str = ""


@dataclass(frozen=True)
class Range:
    """Offsets ``start <= offset < end`` of one partition that the group reads again."""

    topic: str
    partition: int
    start: int
    end: int
    committed: int | None
    note: str = ""

    @property
    def messages(self) -> int:
        """Offsets in the range (messages, less any gaps compaction or transactions left)."""
        return max(0, self.end - self.start)


@dataclass
class ReplayPlan:
    group: str
    group_id: str
    mode: str
    reason: str
    request: Request
    target: str | None                     # copy: the group's retry topic
    reprocess: bool
    state: str
    members: list[Member]
    unsafe: list[str]                      # handlers declared replay_safe=False
    ranges: list[Range] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(r.messages for r in self.ranges)

    @property
    def changes(self) -> list[Range]:
        return [r for r in self.ranges if r.messages]

    @property
    def kind(self) -> str:
        return "share group" if self.state == SHARE_GROUP else "consumer group"

    def state_text(self) -> str:
        """``running, 1 member(s): events-x-1 on 10.0.0.7``, ``stopped (empty)`` or ``members not listed``."""
        if self.state == SHARE_GROUP:
            return "members not listed"
        if self.members:
            return f"running, {len(self.members)} member(s): " + ", ".join(str(m) for m in self.members)
        return f"stopped ({self.state.lower()})"

    def outcome_text(self) -> str:
        """What carrying the plan out would do, in one sentence."""
        if not self.changes:
            return "nothing to replay: no partition has messages in the range that the group has read"
        what = "re-read by the group when it starts" if self.mode == REWIND else f"copied into {self.target}"
        return f"{self.messages} message(s) in {len(self.changes)} partition(s) would be {what}."

    def as_json(self) -> dict:
        return {"group": self.group, "group_id": self.group_id, "mode": self.mode, "reason": self.reason,
                "request": self.request.describe(), "target": self.target, "reprocess": self.reprocess,
                "state": self.state, "members": [str(m) for m in self.members], "unsafe_handlers": self.unsafe,
                "messages": self.messages,
                "ranges": [{"topic": r.topic, "partition": r.partition, "from": r.start, "to": r.end,
                            "messages": r.messages, "committed": r.committed, "note": r.note} for r in self.ranges]}


# -- pure rules ----------------------------------------------------------------------------------
def choose_mode(*, copy: bool | None, reprocess: bool, until: bool, members: Sequence[Member],
                group_id: str) -> tuple[str, str]:
    """(mode, why). ``copy``: ``True`` for ``--copy``, ``False`` for ``--rewind``, ``None`` to choose:
    a running group, ``--until`` and ``--reprocess`` copy, a stopped group is rewound. ``--rewind``
    refuses a group with members (naming them), ``--until`` and ``--reprocess``."""
    running = (f"; the group is running ({len(members)} member(s)) and keeps serving live traffic"
               if members else "")
    if copy is False:
        if reprocess:
            raise BadSelection("--reprocess needs the events-reprocess header, which only copies can carry: "
                               "drop --rewind to copy the range into the group's retry topic")
        if until:
            raise BadSelection("--until cannot end a rewind: a rewound group re-reads everything from its start on. "
                               "Drop --rewind to copy the range up to --until into the group's retry topic")
        if members:
            names = ", ".join(str(m) for m in members)
            raise GroupActive(
                f"consumer group {group_id} has {len(members)} active member(s): {names}. Kafka lets a group's "
                "offsets be rewound only while it is stopped: stop its consumers (scale the Deployment to 0) and "
                "run this again, or drop --rewind to copy the range into the group's retry topic while it runs")
        return REWIND, "--rewind: the group is stopped, its committed offsets are set back"
    if reprocess:
        return COPY, "--reprocess needs the events-reprocess header, which only copies can carry" + running
    if copy:
        return COPY, "--copy" + running
    if members:
        return COPY, (f"the group is running, with {len(members)} member(s): Kafka rewinds only a stopped group's "
                      "offsets, so the range is copied while live traffic goes on")
    if until:
        return COPY, ("--until: a rewind cannot stop at an end (the group would re-read everything from its "
                      "start on), so the range up to --until is copied")
    return REWIND, "the group is stopped: its committed offsets are set back"


def shared_mode(*, copy: bool | None, group: str) -> tuple[str, str]:
    """(mode, why) of a shared group's replay: a copy, since a share group keeps no offsets to set back."""
    if copy is False:
        raise BadSelection(f"group {group} is shared (a Kafka share group), which keeps no offsets to set back: "
                           "drop --rewind to copy the range into its retry topic")
    return COPY, ("a shared group keeps no offsets: the range up to the end now is copied; events in it the "
                  "group has not handled yet are met twice and skipped by their idempotency keys")


def plan_range(mode: str, facts: PartitionFacts, *, shared: bool = False) -> Range:
    """The range one partition is replayed over (``messages == 0``: nothing to do, ``note`` says why).
    ``shared``: a share group keeps no offsets, so its range runs to the end now (or ``--until``)."""
    committed, start = facts.committed, facts.start
    if start is None:
        return Range(facts.topic, facts.partition, facts.high, facts.high, committed, "not selected")
    limit = facts.high if facts.stop is None or mode == REWIND else facts.stop
    if start >= limit:
        return Range(facts.topic, facts.partition, start, start, committed, facts.note or "no messages in the range")
    if shared:
        return Range(facts.topic, facts.partition, start, limit, None, facts.note)
    if committed is None:
        why = ("no committed offset: the group reads this partition from its beginning anyway" if mode == REWIND
               else "not read by the group yet: it will read these itself")
        return Range(facts.topic, facts.partition, start, start, committed, why)
    if start >= committed:
        return Range(facts.topic, facts.partition, start, start, committed,
                     "the group has not got this far yet: it will read these itself")
    if mode == REWIND:
        return Range(facts.topic, facts.partition, start, committed, committed, facts.note)
    end = min(limit, committed)
    note = facts.note or ("ends at the group's offset: it reads on from there itself" if committed < limit else "")
    return Range(facts.topic, facts.partition, start, end, committed, note)


def select_topics(group: ConsumerGroup, prefix: str, topic: str | None) -> list[str]:
    """The group's topics (its domain topics and its retry topic), or the one ``--topic`` names
    (in full, or by its domain: ``app`` for ``<prefix>.app``)."""
    topics = group.topics(prefix)
    if topic is None:
        return topics
    for name in (topic, f"{prefix}.{topic}"):
        if name in topics:
            return [name]
    raise BadSelection(f"group {group.name} does not read {topic!r}; its topics are {', '.join(topics)}")


# -- asking the cluster ----------------------------------------------------------------------------
def gather(client: AdminClient, group_id: str | None, topics: list[str], request: Request) -> list[PartitionFacts]:
    """The facts of every partition of ``topics``; ``group_id`` None: a share group's (no committed offsets)."""
    counts = kafka.partition_counts(client, topics)
    tps = [(t, p) for t in topics for p in range(counts[t])]
    marks = kafka.watermarks(client, tps)
    committed = kafka.committed(client, group_id, tps) if group_id is not None else dict.fromkeys(tps)
    notes: dict[tuple[str, int], str] = {}
    if request.since is not None:
        found = kafka.offsets_for_time(client, tps, to_millis(request.since))
        starts = {tp: marks[tp][1] if offset is None else offset for tp, offset in found.items()}
    elif request.from_beginning:
        starts = {tp: marks[tp][0] for tp in tps}
    else:
        starts = {}
        for position in request.positions:
            tp = (position.topic, position.partition)
            if position.topic not in counts:
                raise BadSelection(f"--from-offsets names {position.topic}, which is not among the topics replayed "
                                   f"({', '.join(topics)})")
            if tp not in marks:
                raise BadSelection(f"{position.topic} has {counts[position.topic]} partition(s); "
                                   f"there is no partition {position.partition}")
            low, high = marks[tp]
            starts[tp] = min(max(position.offset, low), high)
            if position.offset < low:
                notes[tp] = f"offsets before {low} are gone (retention): starts at {low}"
            elif position.offset > high:
                notes[tp] = f"the partition ends at {high}"
    stops: dict[tuple[str, int], int | None] = {}
    if request.until is not None:
        found = kafka.offsets_for_time(client, tps, to_millis(request.until))
        stops = {tp: marks[tp][1] if offset is None else offset for tp, offset in found.items()}
    return [PartitionFacts(t, p, marks[(t, p)][0], marks[(t, p)][1], committed[(t, p)], starts.get((t, p)),
                           stops.get((t, p)), notes.get((t, p), "")) for t, p in tps]


def build(client: AdminClient, group: ConsumerGroup, *, prefix: str, group_id: str, request: Request,
          topic: str | None = None, copy: bool | None = None, reprocess: bool = False) -> ReplayPlan:
    """The plan of a replay. ``copy``: ``True`` (``--copy``), ``False`` (``--rewind``) or ``None``
    (chosen: see ``choose_mode``; a shared group's range is always copied)."""
    topics = select_topics(group, prefix, topic)
    shared = group.delivery == SHARED
    if shared:
        state, active = SHARE_GROUP, list[Member]()
        mode, why = shared_mode(copy=copy, group=group.name)
    else:
        state, active = kafka.members(client, group_id)
        mode, why = choose_mode(copy=copy, reprocess=reprocess, until=request.until is not None, members=active,
                                group_id=group_id)
    unsafe = sorted(h.name for h in group.handlers.values() if not h.option("replay_safe"))
    plan = ReplayPlan(group.name, group_id, mode, why, request, group.retry_topic(prefix) if mode == COPY else None,
                      reprocess, state, active, unsafe)
    plan.ranges = [plan_range(mode, facts, shared=shared)
                   for facts in gather(client, None if shared else group_id, topics, request)
                   if facts.start is not None]
    return plan
