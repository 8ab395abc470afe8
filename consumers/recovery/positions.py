"""``--from-offsets``: explicit start offsets, ``topic:partition:offset,...`` or a file of them.

A file holds the same items separated by commas or new lines; ``#`` starts a comment. A value
starting with ``@`` is always a file; any other value naming an existing file is read as one too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import BadOffsets


@dataclass(frozen=True, order=True)
class Position:
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


def parse_positions(text: str) -> list[Position]:
    """The positions in ``text`` (a list, ``@file`` or a file path), in the order given."""
    source = "--from-offsets"
    value = text.strip()
    path = Path(value[1:]) if value.startswith("@") else Path(value)
    if value.startswith("@") or _is_file(path):
        try:
            value = path.read_text()
        except OSError as exc:
            raise BadOffsets(f"cannot read the offsets file {path}: {exc}") from exc
        source = str(path)
    return parse_position_list(value, source)


def parse_position_list(value: str, source: str = "--from-offsets") -> list[Position]:
    """The positions listed in ``value`` itself (never a file: what a web form may give)."""
    items = []
    for line in value.splitlines() or [""]:
        items += [item.strip() for item in line.split("#", 1)[0].split(",") if item.strip()]
    if not items:
        raise BadOffsets(f"{source} lists no offsets: give topic:partition:offset items, comma-separated")
    positions: dict[tuple[str, int], Position] = {}
    for item in items:
        topic, _, rest = item.rpartition(":")
        topic, _, partition = topic.rpartition(":")
        try:
            position = Position(topic, int(partition), int(rest))
        except ValueError:
            position = None
        if position is None or not topic or position.partition < 0 or position.offset < 0:
            raise BadOffsets(f"{item!r} in {source} is not topic:partition:offset "
                             "(e.g. events.app:0:1234; partition and offset are whole numbers from 0)")
        earlier = positions.get((topic, position.partition))
        if earlier is not None and earlier != position:
            raise BadOffsets(f"{source} gives {topic}:{position.partition} twice ({earlier.offset} and "
                             f"{position.offset}); give each partition once")
        positions[(topic, position.partition)] = position
    return list(positions.values())


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a long offsets list is no file name
        return False
