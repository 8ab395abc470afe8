"""The producer SDK's error types.

Everything that keeps an event from reaching Kafka is a ``PublishError`` carrying the event's id,
so a caller can log it, retry it, or put it aside. Where it surfaces:

- raised by ``publish()`` / ``publish_async()`` before anything is sent: ``UnpublishableEvent``
  (not an event, an unknown event type, a value the schema cannot hold), ``MessageTooLarge``
  (over the producer's ``message.max.bytes``), ``QueueFull`` (librdkafka's local queue stayed full);
- reported after librdkafka gave up: raised by ``publish(..., wait=True)``, set on the future of
  ``publish_async()``, otherwise passed to the producer's ``on_error`` callback and logged.
  ``MessageTooLarge`` (over the topic's ``max.message.bytes``) or ``DeliveryFailed`` (everything
  else: the topic does not exist, the delivery timed out, not authorised, ...).

The outbox's own errors (``OutboxError`` and subclasses) are here too.
"""

from __future__ import annotations

from dify_events.schemas.errors import EventsError


class PublishError(EventsError):
    """An event was not published. ``event_id`` names it; ``reason`` says why in words;
    ``code`` is librdkafka's error name (``UNKNOWN_TOPIC_OR_PART``, ``_MSG_TIMED_OUT``, ...) when
    librdkafka reported it; ``retriable`` says whether publishing it again may succeed."""

    def __init__(self, reason: str, *, event_id: str | None = None, event_type: str | None = None,
                 topic: str | None = None, code: str | None = None, retriable: bool = False):
        self.reason = reason
        self.event_id = event_id
        self.event_type = event_type
        self.topic = topic
        self.code = code
        self.retriable = retriable
        what = f"event {event_id}" if event_id else "the event"
        if event_type:
            what += f" ({event_type})"
        where = f" to {topic}" if topic else ""
        super().__init__(f"{what} was not published{where}: {reason}")

    def __reduce__(self):  # keeps the keyword arguments across pickling (multiprocessing, logging)
        return (_rebuild, (type(self), self.reason, self.event_id, self.event_type, self.topic, self.code,
                           self.retriable))


def _rebuild(cls, reason, event_id, event_type, topic, code, retriable):
    return cls(reason, event_id=event_id, event_type=event_type, topic=topic, code=code, retriable=retriable)


class UnpublishableEvent(PublishError):
    """Raised before anything is sent: not an ``Event``, an event type the catalogue does not know,
    or a value its Avro schema cannot hold. Publishing it again will not help."""


class MessageTooLarge(PublishError):
    """The encoded event is larger than the producer's ``message.max.bytes`` (raised at once) or
    than the topic's ``max.message.bytes`` (reported by the broker)."""


class QueueFull(PublishError):
    """librdkafka's local queue (``queue.buffering.max.messages`` / ``.kbytes``) stayed full: the
    broker is slow or away. Serve delivery reports (``poll``/``flush``) and publish again."""


class DeliveryFailed(PublishError):
    """librdkafka gave up on the event after its own retries: the topic does not exist, the
    delivery timed out (``delivery.timeout.ms``), the client is not authorised, ..."""


class OutboxError(EventsError):
    """The outbox table or its relay cannot do what was asked."""


class OutboxTableMissing(OutboxError):
    """The database has no ``event_outbox`` table yet."""


class RelayAlreadyRunning(OutboxError):
    """A second relay on SQLite, which supports one relay at a time."""
