"""librdkafka configuration for every producer of the platform (the SDK, the outbox relay, the
consumers' dead-letter and retry producers): production defaults, then the user's properties."""

from __future__ import annotations

from dify_events.schemas.settings import Settings, get_settings

PRODUCER_DEFAULTS: dict[str, object] = {
    "enable.idempotence": True,   # no duplicates or reordering from librdkafka's own retries
    "acks": "all",
    # one request in flight per broker: with more, librdkafka can lose a batch that failed (NOT_LEADER)
    # when the next one succeeds on a partition holding no state of this producer, as a new partition
    # or a young producer meets during a leader change ("implicitly acked by subsequent batch success",
    # confluentinc/confluent-kafka-go#921); docs/failures.md has the measurements
    "max.in.flight.requests.per.connection": 1,
    "compression.type": "lz4",
    "linger.ms": 5,               # bounded batching delay
    "delivery.timeout.ms": 120_000,
    "message.max.bytes": 1_000_000,
}


def producer_config(overrides: dict[str, object] | None = None, settings: Settings | None = None) -> dict[str, object]:
    """Defaults < the settings' librdkafka properties (file, ``EVENTS_KAFKA_*``) < ``overrides``."""
    settings = settings or get_settings()
    return {"bootstrap.servers": settings.bootstrap(), **PRODUCER_DEFAULTS, **settings.kafka_properties(),
            **(overrides or {})}
