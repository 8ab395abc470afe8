"""Process-wide logging for ``events run``: text for people, JSON lines for log shippers.

JSON lines carry a record's ``extra`` fields: the runtime's records about one message (a failed
attempt, a retry, a dead letter, a pipeline error) give ``group``, ``event_id``, ``event_type``,
``topic``, ``partition``, ``offset`` and ``trace_id`` (``consumers.telemetry.fields``); a pause gives
``group``, ``reason`` and the partitions. Any record written while a span is current (a handler's
own logging, with tracing on) gets that span's ``trace_id`` and ``span_id``. Records never carry
an event's body or header values other than its ids.

Text lines end with the record's message ids, compactly: ``... [group=g event_id=... offset=7
trace_id=...]`` (only those present). Every record goes through ``RedactingFilter`` on the way
out: credentials in its message and in its traceback are masked, and the traceback holds no
pydantic input values or SQL parameters (``consumers.redact``).

Kafka clients repeat themselves while a broker is unreachable (each client, each reconnection:
dozens of lines a second): ``RepeatedLines`` lets one line per cause through every
``REPEAT_INTERVAL_S``, and the next one says how many it stood for.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from datetime import UTC, datetime
from typing import TextIO

from opentelemetry.trace import get_current_span

from .redact import error_traceback, redact

# LogRecord attributes that are not an ``extra`` field
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if "trace_id" not in out:
            ctx = get_current_span().get_span_context()
            if ctx.is_valid:
                out["trace_id"] = format(ctx.trace_id, "032x")
                out["span_id"] = format(ctx.span_id, "016x")
        if record.exc_info:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out, default=str)


# the ``extra`` fields a text line shows, in this order, when the record has them
TEXT_FIELDS = ("group", "event_id", "event_type", "partition", "offset", "trace_id")


class TextFormatter(logging.Formatter):
    """``time level logger: message [group=... event_id=... event_type=... partition=... offset=...
    trace_id=...]``: the fields the record carries (not None), and the current span's trace id
    when it carries none; nothing appended when there are none."""

    def __init__(self, fmt: str = "%(asctime)s %(levelname)-7s %(name)s: %(message)s", **kwargs):
        super().__init__(fmt, **kwargs)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        text = super().formatMessage(record)
        fields = record.__dict__
        parts = [f"{name}={fields[name]}" for name in TEXT_FIELDS if fields.get(name) is not None]
        if fields.get("trace_id") is None:
            ctx = get_current_span().get_span_context()
            if ctx.is_valid:
                parts.append(f"trace_id={ctx.trace_id:032x}")
        return f"{text} [{' '.join(parts)}]" if parts else text


class RedactingFilter(logging.Filter):
    """Masks credentials in every record's message, and renders its traceback redacted
    (``exc_text``, which formatters then use)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: logging reports it when formatting
            return True
        safe = redact(message)
        if safe != message:
            record.msg, record.args = safe, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = error_traceback(record.exc_info[1]).rstrip("\n")
        return True


REPEAT_INTERVAL_S = 10.0
# what differs between two lines of one cause: librdkafka's timings and its own suppression counts
_VOLATILE = re.compile(r"\(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)"
                       r"|\d+ identical error\(s\) suppressed")


class RepeatedLines(logging.Filter):
    """Warnings and errors of Kafka clients (loggers named ``*.librdkafka``): the first of a cause
    passes, the same cause (its text, timings aside) is held back for ``interval_s``, and the first
    one after that passes saying how many were held back. Other records pass untouched."""

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S, clock=time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._causes: dict[tuple[str, int, str], list] = {}  # cause -> [when it last passed, held back since]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.endswith("librdkafka"):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: logging reports it when formatting
            return True
        cause = (record.name, record.levelno, _VOLATILE.sub("", message))
        now = self.clock()
        with self._lock:
            seen = self._causes.get(cause)
            if seen is not None and now - seen[0] < self.interval_s:
                seen[1] += 1
                return False
            if len(self._causes) > 1000:  # causes that stopped long ago
                self._causes = {c: s for c, s in self._causes.items() if now - s[0] < self.interval_s}
            self._causes[cause] = [now, 0]
        if seen is not None and seen[1]:
            record.msg, record.args = (f"{message} (repeated {seen[1]} times in the last {now - seen[0]:.0f} s)",
                                       None)
        return True


def configure_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """One handler on the root logger, writing to ``stream`` (stderr): JSON lines or text, Kafka
    clients' repeated lines held back, redacted."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RepeatedLines())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
