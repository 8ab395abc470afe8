"""Re-driving dead letters: copies into the group's retry topic, recorded in the redrive ledger.

Each copy keeps the dead letter's key and value bytes and its headers, less the failure's own
(error, handler, attempts: the next failure writes its own), with ``events-attempt`` set to the
attempts made so far (``dlq-attempts``), so the handler's ``ctx.message.attempt`` and a later dead
letter go on counting. The origin headers (``dlq-origin-*``, ``kafka_dlt-original-*``) are kept: a
re-driven message that fails again is dead-lettered with its first origin.

Order of a run (``--execute`` is the default; ``--dry-run`` stops after planning): start the
transactional producer (which fences any earlier redrive of the group still running), read the
ledger, read the dead letters, keep those selected and not yet re-driven, then copy them in
transactions with their ledger records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dify_events.schemas import headers as H
from dify_events.schemas.settings import Settings

from ..config import group_id
from ..group import ConsumerGroup
from ..pipeline import dead_letters as DL
from . import dead_letters, kafka
from .copier import Copier, Headers
from .dead_letters import DeadLetter, Selection
from .ledger import Entry, Ledger, ledger_topic, record
from .replay import RUN, new_run_id

REDRIVEN_FROM = "events-redriven-from"   # <dlq topic>:<partition>:<offset> a copy was re-driven from
DROPPED = DL.FAILURE_HEADERS | {H.ATTEMPT, REDRIVEN_FROM, RUN}


def redrive_headers(letter: DeadLetter, *, dlq_topic: str, run: str) -> Headers:
    out = [(k, v) for k, v in letter.headers if k not in DROPPED]
    attempts = letter.attempts
    if attempts is None:  # not one of ours (a Spring dead letter): keep its attempt count, if any
        previous = letter.named.get(H.ATTEMPT)
        attempts = int(previous) if previous is not None and previous.isdigit() else None
    if attempts is not None:
        out.append((H.ATTEMPT, str(attempts).encode()))
    out += [(REDRIVEN_FROM, f"{dlq_topic}:{letter.partition}:{letter.offset}".encode()), (RUN, run.encode())]
    return out


@dataclass
class RedrivePlan:
    dlq_topic: str
    target: str
    ledger: str
    dlq_exists: bool = True
    held: int = 0                                  # dead letters in the topic
    pending: list[DeadLetter] = field(default_factory=list)   # selected, not re-driven yet: to send
    already: list[tuple[DeadLetter, Entry]] = field(default_factory=list)  # selected, re-driven before
    over_limit: int = 0                            # selected and pending, left for a later run by --limit
    omitted: list[DeadLetter] = field(default_factory=list)  # selected, without the original value: not sent


@dataclass
class RedriveReport:
    run: str
    sent: int = 0


class Redrive:
    def __init__(self, settings: Settings, group: ConsumerGroup, *, rate: float | None = None):
        prefix = settings.topic_prefix
        self.settings = settings
        self.group = group
        self.rate = rate
        self.dlq_topic = group.dlq_topic(prefix)
        self.target = group.retry_topic(prefix)
        self.ledger = Ledger(settings, ledger_topic(prefix, group.name))
        self.transactional_id = f"{group_id(prefix, group.name)}.events-redrive"
        self.client = kafka.admin(settings)
        self.copier: Copier | None = None

    def prepare(self, selection: Selection, *, limit: int | None = None, execute: bool = True) -> RedrivePlan:
        plan = RedrivePlan(self.dlq_topic, self.target, self.ledger.topic)
        if not kafka.exists(self.client, self.dlq_topic):
            plan.dlq_exists = False
            return plan
        if execute:
            kafka.partition_counts(self.client, [self.target])  # MissingTopic when the retry topic is absent
            self.copier = Copier(self.settings, self.target, client_id=f"events-redrive-{self.group.name}",
                                 transactional_id=self.transactional_id, rate=self.rate)
        self.ledger.load(self.client)
        for letter in dead_letters.read(self.settings, self.dlq_topic, positions=selection.positions):
            plan.held += 1
            if not selection.matches(letter):
                continue
            if letter.omitted:  # re-driven, it would only fail again as an empty message
                plan.omitted.append(letter)
                continue
            entry = self.ledger.redriven(letter)
            if entry is not None:
                plan.already.append((letter, entry))
            elif limit is not None and len(plan.pending) >= limit:
                plan.over_limit += 1
            else:
                plan.pending.append(letter)
        return plan

    def run(self, plan: RedrivePlan, *, advance: Callable[[int], None] = lambda n: None) -> RedriveReport:
        report = RedriveReport(new_run_id())
        if not plan.pending:
            return report
        if self.copier is None:
            raise RuntimeError("run() needs a plan made by prepare(execute=True)")
        self.ledger.ensure(self.client)
        try:
            for letter in plan.pending:
                key, value = record(letter, report.run)
                self.copier.send(letter.key, letter.value,
                                 redrive_headers(letter, dlq_topic=self.dlq_topic, run=report.run),
                                 also=[(self.ledger.topic, key, value)])
                advance(1)
        except BaseException:
            self.copier.abort()
            raise
        report.sent = self.copier.close().sent
        return report
