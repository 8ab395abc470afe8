"""Errors of the consumer runtime. Each says what went wrong and what to do about it."""

from __future__ import annotations

from dify_events.schemas.errors import EventsError


class ConsumerError(EventsError):
    """Base of the consumer runtime's own errors."""


class GroupDefinitionError(ConsumerError):
    """A consumer group or handler is declared wrongly (unknown option, duplicate handler, ...)."""


class UnknownGroup(ConsumerError):
    """``events run --group NAME`` names no registered group."""


class DuplicateGroup(ConsumerError):
    """Two different group objects were registered under one name."""


# -- failures of one message: raised inside the pipeline, never out of it -----------------------
class MessageRejected(Exception):
    """Raise from a handler for a failure that retrying cannot fix: the message is dead-lettered
    at once (other exceptions are retried first). Also the base of the pipeline's own rejections."""


class BadHeader(MessageRejected):
    """A header the runtime needs is missing or malformed (event type, idempotency key, attempt)."""


class EmptyValue(MessageRejected):
    """The message has no value (a tombstone): there is no event to decode."""


class DeadLetterFailed(Exception):
    """The dead letter could not be published (the broker did not acknowledge it); the message
    stays unfinished and is tried again."""


class TimeLimitExceeded(Exception):
    """A handler ran past its ``time_limit_s`` and was interrupted (retryable like any failure)."""

    def __init__(self, *args):
        super().__init__(*(args or ("the handler ran past its time_limit_s and was interrupted",)))
