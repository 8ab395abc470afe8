"""When a started broker is ready for what clients do: metadata, and every group coordinator.

A broker answers metadata requests seconds before its group coordinators are loaded: until then
commits fail with ``NOT_COORDINATOR`` and offset fetches with ``COORDINATOR_LOAD_IN_PROGRESS``
(retriable errors, which many callers, tests included, do not retry). A group's coordinator is the
leader of one partition of ``__consumer_offsets`` (Kafka picks it by the Java hash of the group
id), so the broker counts as ready once one offset fetch has gone through for a group on each of
those partitions: then no group, whatever its id, meets a coordinator still loading.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

PROBE_TOPIC = "__events_readiness_probe"  # never created: an offset fetch does not need the topic


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode()`` (UTF-16 code units), as Kafka hashes a group id."""
    value = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        value = (31 * value + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def offsets_partition(group_id: str, partitions: int) -> int:
    """The ``__consumer_offsets`` partition whose leader coordinates ``group_id``."""
    return (java_string_hash(group_id) & 0x7FFFFFFF) % partitions


def probe_groups(partitions: int) -> list[str]:
    """One group id per partition of ``__consumer_offsets``."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        group = f"__events-readiness-{n}"
        found.setdefault(offsets_partition(group, partitions), group)
        n += 1
    return [found[p] for p in range(partitions)]


def wait_for_group_coordinators(client: dict[str, Any], partitions: int, deadline: float) -> bool:
    """Waits (until the monotonic ``deadline``) until every group coordinator answers an offset
    fetch; True when they all did. ``client``: librdkafka properties of a plain client."""
    quiet = logging.getLogger("consumers.broker.probe")
    for group in probe_groups(partitions):
        while True:
            consumer = Consumer({**client, "group.id": group, "enable.auto.commit": False, "logger": quiet})
            try:
                found = consumer.committed([TopicPartition(PROBE_TOPIC, 0)], timeout=1.0)
                if all(tp.error is None for tp in found):
                    break
            except KafkaException:
                pass  # loading, or not elected yet: ask again
            finally:
                consumer.close()
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
    return True
