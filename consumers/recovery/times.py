"""Times on the command line: ISO 8601, relative (``2h``, ``1h30m``, ``3d``) or epoch milliseconds.

``--since 2h`` means two hours before now. An ISO 8601 time without a zone is local time, as in
Apache Kafka's own ``kafka-consumer-groups --to-datetime``; tables print UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .errors import BadTime

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE = re.compile(r"(?:(\d+(?:\.\d+)?)\s*([smhdw]))")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1h30m``, ``3d``, ``1w`` (units may be combined, largest first or not)."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _RELATIVE.sub("", compact):
        raise BadTime(f"{text!r} is not a duration: use a number with s, m, h, d or w, e.g. 2h or 1h30m")
    seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _RELATIVE.findall(compact))
    return timedelta(seconds=seconds)


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An aware UTC datetime for ``text``: ``now``, a relative time before now (``2h``, ``2h ago``),
    epoch milliseconds (``1740830400000``), or ISO 8601 (``2025-03-01T12:00:00Z``,
    ``2025-03-01 12:00`` in local time, ``2025-03-01`` for local midnight)."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if not value:
        raise BadTime("an empty time: give ISO 8601 (2025-03-01T12:00:00Z), a relative time (2h) or epoch ms")
    if value.lower() == "now":
        return now
    if value.isdigit():
        if len(value) < 12:
            raise BadTime(f"{value!r} looks like a number, but times in numbers are epoch milliseconds "
                          "(13 digits, e.g. 1740830400000); for a relative time add a unit, e.g. 2h")
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    relative = value.lower().removesuffix("ago").strip()
    if relative and relative[0].isdigit() and relative[-1] in _UNIT_S and "-" not in relative and ":" not in relative:
        return now - parse_duration(relative)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadTime(f"{text!r} is not a time: give ISO 8601 (2025-03-01T12:00:00Z, or 2025-03-01 12:00 in "
                      "local time), a relative time before now (30m, 2h, 1d) or epoch milliseconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # local time, as Kafka's own tools read a zoneless time
    return parsed.astimezone(UTC)


def to_millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_millis(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def show(moment: datetime | int | None) -> str:
    """A UTC time for tables: ``2025-03-01 12:00:00.123Z``."""
    if moment is None:
        return "-"
    if isinstance(moment, int):
        if moment < 0:
            return "-"
        moment = from_millis(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
