"""Observers of ``EventProducer``: the SDK's tracing and metrics are two (``producers.telemetry``),
and an application may add its own (``EventProducer(observers=[...])``).

An observer wraps publishing. ``around_publish(event, deliver, publish)`` gets ``publish(deliver)``,
which prepares the event (topic, value, headers: a span current then names itself in
``traceparent``) and hands it to librdkafka, raising ``PublishError`` for what is known at once;
``deliver(err, msg)`` is the event's delivery callback. An observer must call ``publish`` exactly
once and let what it raises through; it may pass a callback of its own, which must call
``deliver`` exactly once. ``around_publish_encoded(event_type, deliver, publish)`` is the same for
bytes that are already an encoded event (the outbox relay's path; ``event_type`` from the
``event-type`` header, ``"unknown"`` without one).

The wraps run on the publishing thread, the delivery callbacks on whichever thread serves delivery
reports: keep both short and thread-safe. The producer nests the hooks it was given once, at
``__init__``, the first observer outermost (the SDK's tracing, then its metrics, then the caller's);
only overridden hooks are nested, and without any it takes its plain path (no test per event).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

    from dify_events.schemas.events import Event

Deliver = Callable[["KafkaError | None", "Message"], None]
Publish = Callable[[Deliver], None]
Around = Callable[[Any, Deliver, Publish], None]  # (event or event type, deliver, publish)


class ProducerObserver:
    """Hooks that only publish; override those you need (see the module's docstring)."""

    def around_publish(self, event: Event, deliver: Deliver, publish: Publish) -> None:
        """One event of ``publish``, ``publish_async`` or ``publish_many``."""
        publish(deliver)

    def around_publish_encoded(self, event_type: str, deliver: Deliver, publish: Publish) -> None:
        """One encoded event of ``publish_encoded`` (the outbox relay)."""
        publish(deliver)


def nested(observers: Sequence[ProducerObserver], hook: str) -> Around | None:
    """The ``hook`` of those ``observers`` that override it, nested into one callable (the first
    outermost); ``None`` when none does."""
    default = getattr(ProducerObserver, hook)
    wraps = [getattr(o, hook) for o in observers if getattr(type(o), hook) is not default]
    if not wraps:
        return None
    chain = wraps[-1]
    for outer in reversed(wraps[:-1]):
        chain = _nest(outer, chain)
    return chain


def _nest(outer: Around, inner: Around) -> Around:
    def around(subject: Any, deliver: Deliver, publish: Publish) -> None:
        outer(subject, deliver, lambda then: inner(subject, then, publish))
    return around
