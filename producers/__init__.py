"""The producer SDK: publish typed events to Kafka (``EventProducer``), or add them to a
transactional outbox in the application's own database transaction (``add_to_outbox``) and let
the relay (``OutboxRelay``, ``events outbox relay``) publish them after commit.

Names are re-exported lazily (``from producers import EventProducer``), so importing
``producers.config`` alone stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EventProducer": "producer", "Delivery": "producer",
    "PublishError": "errors", "UnpublishableEvent": "errors", "MessageTooLarge": "errors", "QueueFull": "errors",
    "DeliveryFailed": "errors", "OutboxError": "errors", "OutboxTableMissing": "errors",
    "RelayAlreadyRunning": "errors",
    "build_headers": "headers",
    "add_to_outbox": "outbox", "create_outbox_table": "outbox", "event_outbox": "outbox",
    "OutboxRelay": "relay",
    "producer_config": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'producers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
