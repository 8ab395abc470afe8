"""Carrying out a replay plan: setting a stopped group's offsets back, or copying a range into the
group's retry topic.

Copies are the group's own event types only (other types on its domain topics would be passed
over anyway), one per idempotency key (a range that covers the retry topic as well as the domain
topics holds some events twice), with the original key, value and headers, and three headers of
ours: where the copy came from, the run it belongs to, and ``events-reprocess: 1`` with
``--reprocess`` (a copy never inherits that flag from an earlier replay).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka.admin import AdminClient

from dify_events.schemas import headers as H
from dify_events.schemas.settings import Settings

from ..group import ConsumerGroup
from . import kafka
from .copier import Copier, Headers
from .errors import NotReplaySafe
from .plan import ReplayPlan

RUN = "events-recovery-run"            # the replay or redrive run that made a copy (in its summary)
REPLAYED_FROM = "events-replayed-from"  # topic:partition:offset of the message a replay copied
OURS = frozenset({RUN, REPLAYED_FROM, H.REPROCESS})


@dataclass
class CopyReport:
    run: str
    read: int = 0
    copied: int = 0
    other_types: int = 0       # not the group's event types (or no event-type header): not copied
    repeated: int = 0          # an idempotency key copied already in this run: not copied again
    by_topic: dict[str, int] = field(default_factory=dict)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def check_replay_safe(plan: ReplayPlan, *, force: bool) -> None:
    if plan.unsafe and not force:
        raise NotReplaySafe(
            f"group {plan.group} has handler(s) declared replay_safe=False: {', '.join(plan.unsafe)}. Replaying "
            "runs them again for events they have seen (with --reprocess even for events already handled), "
            "which is what they are declared unsafe for; add --force if that is what you want")


def rewind(client: AdminClient, plan: ReplayPlan) -> dict[tuple[str, int], int | None]:
    """Sets the group's committed offsets to the starts of the plan's ranges; returns them as read back."""
    offsets = {(r.topic, r.partition): r.start for r in plan.changes}
    if not offsets:
        return {}
    kafka.set_offsets(client, plan.group_id, offsets)
    return kafka.committed(client, plan.group_id, sorted(offsets))


def copy_headers(headers: Headers, *, source: str, run: str, reprocess: bool) -> Headers:
    out = [(k, v) for k, v in headers if k not in OURS]
    out += [(REPLAYED_FROM, source.encode()), (RUN, run.encode())]
    if reprocess:
        out.append((H.REPROCESS, b"1"))
    return out


def copy(settings: Settings, plan: ReplayPlan, group: ConsumerGroup, *,
         advance: Callable[[int], None] = lambda n: None, rate: float | None = None) -> CopyReport:
    """Copies the plan's ranges into the group's retry topic; ``advance(n)`` reports offsets read."""
    report = CopyReport(new_run_id())
    wanted = {t.encode() for t in group.event_types}
    keys: set[bytes] = set()
    assert plan.target is not None  # a copy plan names the group's retry topic
    copier = Copier(settings, plan.target, client_id=f"events-replay-{group.name}", rate=rate)
    consumer = kafka.reader(settings, "replay")
    try:
        for msg in kafka.read_ranges(consumer, [(r.topic, r.partition, r.start, r.end) for r in plan.changes],
                                     on_skip=advance):
            advance(1)
            report.read += 1
            headers = cast(Headers, msg.headers() or [])  # fetched: librdkafka's (name, bytes | None) pairs
            named = dict(headers)
            if named.get(H.EVENT_TYPE) not in wanted:
                report.other_types += 1
                continue
            key = named.get(H.IDEMPOTENCY_KEY) or named.get(H.EVENT_ID)
            if key is not None:
                if key in keys:
                    report.repeated += 1
                    continue
                keys.add(key)
            source = f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
            copier.send(msg.key(), msg.value(), copy_headers(headers, source=source, run=report.run,
                                                             reprocess=plan.reprocess))
            topic = cast(str, msg.topic())  # fetched: it has one
            report.by_topic[topic] = report.by_topic.get(topic, 0) + 1
    except BaseException:
        copier.abort()
        raise
    report.copied = copier.close().sent
    return report
