"""What people are shown of a group's dead letters, by ``events dlq`` and by ``events console`` alike:
the selected letters with the redrive ledger, one letter found by its position, its facts, its event
decoded."""

from __future__ import annotations

from dataclasses import dataclass

from dify_events.schemas.codec import AvroCodec
from dify_events.schemas.settings import Settings

from ..group import ConsumerGroup
from . import dead_letters, kafka
from .dead_letters import DeadLetter, Selection
from .errors import DeadLetterNotFound
from .ledger import Entry, Ledger, ledger_topic
from .times import show


@dataclass
class Listing:
    topic: str
    letters: list[DeadLetter]   # every dead letter the topic holds
    chosen: list[DeadLetter]    # those the selection takes
    ledger: Ledger

    def pending(self) -> int:
        """Chosen and not re-driven yet."""
        return sum(1 for letter in self.chosen if not self.ledger.redriven(letter))


def listing(settings: Settings, group: ConsumerGroup, selection: Selection) -> Listing | None:
    """The group's dead letters and those selected; None when it has no dead-letter topic (yet)."""
    topic = group.dlq_topic(settings.topic_prefix)
    client = kafka.admin(settings)
    if not kafka.exists(client, topic):
        return None
    letters = list(dead_letters.read(settings, topic))
    ledger = Ledger(settings, ledger_topic(settings.topic_prefix, group.name)).load(client)
    return Listing(topic, letters, dead_letters.select(letters, selection), ledger)


def find(settings: Settings, group: ConsumerGroup, position: str) -> tuple[DeadLetter, Entry | None]:
    """The dead letter at ``partition:offset`` and its ledger entry (None: not re-driven)."""
    topic = group.dlq_topic(settings.topic_prefix)
    client = kafka.admin(settings)
    count = kafka.partition_counts(client, [topic])[topic]
    where = dead_letters.parse_position(position, count)
    found = list(dead_letters.read(settings, topic, positions=[where]))
    if not found:
        raise DeadLetterNotFound(f"{topic} holds no dead letter at {where[0]}:{where[1]} (gone with retention, or "
                                 f"not written yet); `events dlq list --group {group.name}` lists those it holds")
    ledger = Ledger(settings, ledger_topic(settings.topic_prefix, group.name)).load(client)
    return found[0], ledger.redriven(found[0])


def facts(letter: DeadLetter, entry: Entry | None) -> list[tuple[str, str]]:
    """(name, value) of what a person asks first: when, where from, what, why, re-driven or not."""
    return [("dead-lettered", show(letter.timestamp)), ("origin", letter.origin),
            ("event type", letter.event_type or "?"), ("event id", letter.event_id or "?"),
            ("key", key_text(letter.key)), ("handler", letter.handler or "?"),
            ("error class", letter.error_class), ("error", letter.error_message),
            ("attempts", "?" if letter.attempts is None else str(letter.attempts)),
            ("re-driven", f"{entry.redriven_at} (run {entry.run})" if entry else "no")]


def key_text(key: bytes | None) -> str:
    if key is None:
        return "(none)"
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + key.hex()


def decoded(letter: DeadLetter) -> object:
    """The event as JSON, or why it does not decode (the reason it may have been dead-lettered)."""
    if letter.omitted:
        return {"undecodable": f"the dead letter does not carry the original value: {letter.omitted}"}
    if not letter.value:
        return {"undecodable": "the dead letter has no value (a tombstone)"}
    try:
        event = AvroCodec().decode(letter.value, letter.event_type)
    except Exception as exc:  # noqa: BLE001 - any codec or header problem is shown, not raised
        return {"undecodable": f"{type(exc).__name__}: {exc}", "bytes": len(letter.value),
                "first_bytes_hex": letter.value[:32].hex()}
    return event.model_dump(mode="json")


def header_rows(letter: DeadLetter) -> list[tuple[str, str]]:
    """Every header as text; the stack traces are shown on their own, so only their size here."""
    rows = []
    for name, value in letter.headers:
        if name in (dead_letters.DL.ERROR_STACKTRACE, dead_letters.DL.DLT_EXCEPTION_STACKTRACE):
            rows.append((name, f"({len(value or b'')} bytes, below)"))
        else:
            rows.append((name, dead_letters.header_text(name, value)))
    return rows
