"""Ordering updates by when they happened, so an older update delivered late changes nothing.

Kafka keeps one key's events in order within a partition, and a group handles them in that order;
but a replay, a re-driven dead letter or a retry-topic message can bring an older update after a
newer one. Updates that carry a complete state (a config's datasets, a tenant's plan) are applied
only if they are not older than the one applied last. An event's version is its
``(occurred_at, event_id)``: the time of the change, and the UUIDv7 id to order two changes of the
same millisecond.
"""

from __future__ import annotations

from dify_events.schemas.events import Event


def version_of(event: Event) -> str:
    """The event's version as text that sorts by time: ``2025-01-31T12:00:00.123000Z/<event_id>``."""
    return f"{event.occurred_at.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z/{event.event_id}"


def is_stale(event: Event, applied: str | None) -> bool:
    """True if an update with a later version than ``event``'s was applied already (re-applying
    the same event is not stale: that is a harmless repeat)."""
    return applied is not None and version_of(event) < applied
