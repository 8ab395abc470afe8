"""Decode: headers and Avro bytes -> the handler's typed event.

The poll loop has already read the ``event-type`` header to pass over the types this group does
not handle; what reaches this step is for one of its handlers, or has a missing or malformed
``event-type`` header. Every failure here is final (never retried): the bytes will not change.

Also read here: the idempotency key (the ``idempotency-key`` header, else the event id), the
``events-reprocess`` flag a replay sets, and the attempts made before a re-drive
(``events-attempt``).
"""

from __future__ import annotations

from dify_events.schemas import headers as H

from ..errors import BadHeader, EmptyValue
from ..job import Job
from .step import CallNext, Step


class Decode(Step):
    options = {}

    def __init__(self, resources):
        super().__init__(resources)
        self.decode = resources.codec.decode

    def process(self, job: Job, call_next: CallNext) -> str:
        self.prepare(job)
        return call_next(job)

    def prepare(self, job: Job) -> None:
        """Fills in the job's headers, event, idempotency key, reprocess flag and prior attempts, or raises."""
        handler = job.handler
        if handler is None:
            raw = job.raw_event_type
            if raw is None:
                raise BadHeader(f"the message has no '{H.EVENT_TYPE}' header, so its event type is unknown "
                                "(was it published by the producer SDK?)")
            raise BadHeader(f"the '{H.EVENT_TYPE}' header is malformed: {raw[:100]!r} is not an event type name "
                            "(lowercase letters, digits and '_', e.g. app_was_created)")
        headers = job.headers = dict(job.raw_headers) if job.raw_headers else {}
        value = job.message.value()
        if not value:
            raise EmptyValue(f"the message has no value (a tombstone?), so there is no {handler.event_type} to decode")
        event = job.event = self.decode(value, handler.event_type)
        key = headers.get(H.IDEMPOTENCY_KEY)
        if key is None:
            job.idempotency_key = event.event_id
        else:
            try:
                text = key.decode("utf-8") if key is not None else ""
            except UnicodeDecodeError:
                text = ""
            if not text or len(text) > H.IDEMPOTENCY_KEY_MAX_LENGTH:
                raise BadHeader(f"the '{H.IDEMPOTENCY_KEY}' header is malformed: {key[:100]!r} (expected 1 to "
                                f"{H.IDEMPOTENCY_KEY_MAX_LENGTH} characters of UTF-8 text)")
            job.idempotency_key = text
        job.reprocess = headers.get(H.REPROCESS) == b"1"
        attempt = headers.get(H.ATTEMPT)
        if attempt is not None:
            try:
                job.prior_attempts = max(0, int(attempt))
            except ValueError:
                raise BadHeader(f"the '{H.ATTEMPT}' header is malformed: {attempt[:40]!r} is not a number") from None
