"""Process-wide logging for ``events run``: text for people, JSON lines for log shippers.

JSON lines carry a record's ``extra`` fields: the runtime's records about one message (a failed
attempt, a retry, a dead letter, a pipeline error) give ``group``, ``event_id``, ``event_type``,
``topic``, ``partition``, ``offset`` and ``trace_id`` (``consumers.telemetry.fields``); a pause gives
``group``, ``reason`` and the partitions. Any record written while a span is current (a handler's
own logging, with tracing on) gets that span's ``trace_id`` and ``span_id``. Records never carry
an event's body or header values other than its ids.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from opentelemetry.trace import get_current_span

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
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
