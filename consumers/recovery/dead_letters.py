"""Reading a group's dead-letter topic: each record as a ``DeadLetter``, filters, statistics.

The runtime writes the facts of a failure twice (``consumers.pipeline.dead_letters``): under our
``dlq-*`` names and under Spring Kafka's ``kafka_dlt-*`` names. Ours are read first; Spring's are
the fallback, so dead letters written by Spring applications read as well.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from confluent_kafka import Message

from dify_events.schemas import headers as H
from dify_events.schemas.settings import Settings

from ..pipeline import dead_letters as DL
from . import kafka
from .errors import BadSelection
from .times import from_millis, to_millis


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _int(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _spring_int(value: bytes | None) -> int | None:
    """Spring writes partitions as 4-byte and offsets/timestamps as 8-byte big-endian numbers."""
    if value is None:
        return None
    if len(value) == 4:
        return struct.unpack(">i", value)[0]
    if len(value) == 8:
        return struct.unpack(">q", value)[0]
    return _int(value)


# headers whose values are Spring's binary numbers, for display
BINARY_NUMBERS = frozenset({DL.DLT_ORIGINAL_PARTITION, DL.DLT_ORIGINAL_OFFSET, DL.DLT_ORIGINAL_TIMESTAMP})


def header_text(name: str, value: bytes | None) -> str:
    """A header's value for people: Spring's binary numbers as numbers, text as text, else hex."""
    if value is None:
        return "(null)"
    if name in BINARY_NUMBERS and len(value) in (4, 8):
        return str(_spring_int(value))
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value.hex()


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp: int                 # ms: when it was dead-lettered (the record's timestamp)
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    named: dict[str, bytes | None] = field(repr=False, compare=False, hash=False)

    @classmethod
    def from_message(cls, msg: Message) -> DeadLetter:
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None  # a fetched message has both
        headers = tuple(cast("list[tuple[str, bytes | None]]", msg.headers() or ()))  # librdkafka's pairs
        return cls(partition, offset, msg.timestamp()[1], msg.key(), msg.value(), headers, dict(headers))

    # -- the facts, ours first, then Spring's ------------------------------------------------
    def _get(self, ours: str, spring: str | None = None) -> bytes | None:
        value = self.named.get(ours)
        if value is None and spring is not None:
            value = self.named.get(spring)
        return value

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def at(self) -> datetime:
        return from_millis(self.timestamp)

    @property
    def event_type(self) -> str | None:
        return _text(self.named.get(H.EVENT_TYPE))

    @property
    def event_id(self) -> str | None:
        return _text(self.named.get(H.EVENT_ID))

    @property
    def error_class(self) -> str:
        return _text(self._get(DL.ERROR_CLASS, DL.DLT_EXCEPTION_FQCN)) or "?"

    @property
    def error_message(self) -> str:
        return _text(self._get(DL.ERROR_MESSAGE, DL.DLT_EXCEPTION_MESSAGE)) or ""

    @property
    def stacktrace(self) -> str:
        return _text(self._get(DL.ERROR_STACKTRACE, DL.DLT_EXCEPTION_STACKTRACE)) or ""

    @property
    def omitted(self) -> str | None:
        """Why the letter lacks the original value (too large for the dead-letter topic), and where
        the original still is; None for a letter that carries it."""
        return _text(self.named.get(DL.ORIGINAL_OMITTED))

    @property
    def attempts(self) -> int | None:
        return _int(self.named.get(DL.ATTEMPTS))

    @property
    def handler(self) -> str | None:
        return _text(self.named.get(DL.HANDLER))

    @property
    def origin(self) -> str:
        """``topic[partition]@offset`` of the message that failed (its first origin, if re-driven before)."""
        topic = _text(self._get(DL.ORIGIN_TOPIC, DL.DLT_ORIGINAL_TOPIC))
        partition = _int(self.named.get(DL.ORIGIN_PARTITION))
        if partition is None:
            partition = _spring_int(self.named.get(DL.DLT_ORIGINAL_PARTITION))
        offset = _int(self.named.get(DL.ORIGIN_OFFSET))
        if offset is None:
            offset = _spring_int(self.named.get(DL.DLT_ORIGINAL_OFFSET))
        return f"{topic or '?'}[{'?' if partition is None else partition}]@{'?' if offset is None else offset}"

    def error_class_matches(self, wanted: str) -> bool:
        """``RuntimeError`` or ``BugError`` (the class name) or the full ``module.BugError``."""
        name = self.error_class
        return name == wanted or name.rsplit(".", 1)[-1] == wanted or name.endswith("." + wanted)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command works on; empty means every one."""

    error_classes: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    positions: tuple[tuple[int, int], ...] = ()   # (partition, offset)

    def matches(self, letter: DeadLetter) -> bool:
        if self.error_classes and not any(letter.error_class_matches(c) for c in self.error_classes):
            return False
        if self.event_types and letter.event_type not in self.event_types:
            return False
        if self.since is not None and letter.timestamp < to_millis(self.since):
            return False
        if self.until is not None and letter.timestamp >= to_millis(self.until):
            return False
        return not self.positions or (letter.partition, letter.offset) in self.positions


def parse_position(text: str, partitions: int) -> tuple[int, int]:
    """``partition:offset``, or ``offset`` alone for a one-partition dead-letter topic."""
    part, _, offset = text.strip().rpartition(":")
    try:
        position = (int(part) if part else 0, int(offset))
    except ValueError:
        raise BadSelection(f"{text!r} is not a dead letter's position: give partition:offset (e.g. 0:17), "
                           "as `events dlq list` shows it") from None
    if not part and partitions > 1:
        raise BadSelection(f"the dead-letter topic has {partitions} partitions: give partition:offset, not {text!r}")
    if not 0 <= position[0] < partitions:
        raise BadSelection(f"the dead-letter topic has no partition {position[0]} (it has {partitions})")
    return position


def read(settings: Settings, topic: str, *, positions: Sequence[tuple[int, int]] = ()) -> Iterator[DeadLetter]:
    """Every dead letter of ``topic`` held now (or only those at ``positions``), in offset order per partition."""
    client = kafka.admin(settings)
    count = kafka.partition_counts(client, [topic])[topic]
    marks = kafka.watermarks(client, [(topic, p) for p in range(count)])
    if positions:
        ranges = [(topic, p, o, o + 1) for p, o in sorted(set(positions))
                  if marks[(topic, p)][0] <= o < marks[(topic, p)][1]]
    else:
        ranges = [(topic, p, low, high) for (_, p), (low, high) in sorted(marks.items())]
    for msg in kafka.read_ranges(kafka.reader(settings, "dlq"), ranges):
        yield DeadLetter.from_message(msg)


def select(letters: Iterable[DeadLetter], selection: Selection) -> list[DeadLetter]:
    return [letter for letter in letters if selection.matches(letter)]
