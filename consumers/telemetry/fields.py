"""The fields every log record about one message carries (``extra=``), for JSON logs.

No event body and no header values but the ids: a dead letter's error message is logged by the
step, redacted (``consumers.redact``) and bounded, and nothing else of the payload is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dify_events.schemas import headers as H

if TYPE_CHECKING:
    from ..job import Job


def trace_id_of(job: Job) -> str | None:
    """The trace id of the message: its consumer span's, else the ``traceparent`` header's."""
    span = job.span
    if span is not None:
        ctx = span.get_span_context()
        if ctx.is_valid:
            return format(ctx.trace_id, "032x")
    for name, value in job.raw_headers or ():
        if name == H.TRACEPARENT and value and len(value) >= 35:
            return value[3:35].decode("latin-1")
    return None


def event_id_of(job: Job) -> str | None:
    """The event id: the decoded event's, else the ``event-id`` header's (a message that did not decode)."""
    if job.event is not None:
        return job.event.event_id
    for name, value in job.raw_headers or ():
        if name == H.EVENT_ID:
            return value.decode("latin-1") if value else None
    return None


def message_fields(job: Job, group: str) -> dict[str, Any]:
    event_type = (job.handler.event_type if job.handler is not None
                  else job.raw_event_type.decode("latin-1") if job.raw_event_type else None)
    return {"group": group, "event_id": event_id_of(job), "event_type": event_type, "topic": job.topic,
            "partition": job.partition, "offset": job.offset, "trace_id": trace_id_of(job)}


def event_type_of(job: Job) -> str:
    """The message's event type for a metric's label: the handler's, else the header's."""
    if job.handler is not None:
        return job.handler.event_type
    raw = job.raw_event_type
    return raw.decode("latin-1")[:100] if raw else "unknown"
