"""Consumer lag per assigned partition, measured by the poll loop every ``LAG_INTERVAL_S``.

Lag is what Kafka's ``kafka-consumer-groups --describe`` calls LAG: the partition's high watermark
minus the group's next offset to commit. That offset is, for a partition assigned to this member:

- the watermark of the messages done (every message below it is done: what the next commit stores);
- with nothing done since the assignment, the first message fetched since (what the group had
  committed): the messages fetched and waiting for a worker are lag, not progress;
- with nothing fetched yet either, the group's committed offset itself, asked of the broker once per
  assignment (the low watermark when the group has committed nothing: ``auto.offset.reset=earliest``).

The high watermark is librdkafka's cached one (``get_watermark_offsets(..., cached=True)``: updated
by every fetch response, no request to the broker), so measuring costs microseconds per partition,
once a second, never per message. A partition not fetched yet (no watermark known) is left out.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException, TopicPartition

if TYPE_CHECKING:
    from confluent_kafka import Consumer

    from ..job import Lane

log = logging.getLogger("consumers.telemetry.lag")

LAG_INTERVAL_S = 1.0
COMMITTED_TIMEOUT_S = 0.5  # the one OffsetFetch of newly assigned partitions (on the poll loop): tried again next time


def measure(consumer: Consumer, lanes: dict[tuple[str, int], Lane]) -> dict[tuple[str, int], int]:
    lag: dict[tuple[str, int], int] = {}
    unknown: list[tuple[tuple[str, int], Lane, int, int]] = []
    for key, lane in lanes.items():
        low, high = consumer.get_watermark_offsets(TopicPartition(lane.topic, lane.partition), cached=True)
        if high < 0:
            continue  # not fetched yet: librdkafka knows no watermark
        offsets = lane.offsets
        start = offsets.position
        if start is None:
            start = offsets.pending[0] if offsets.pending else lane.committed
        if start is None:
            unknown.append((key, lane, low, high))
            continue
        lag[key] = max(0, high - start)
    if unknown:
        for (key, lane, low, high), committed in zip(unknown, _committed(consumer, [u[1] for u in unknown]),
                                                     strict=True):
            if committed is not None:
                lane.committed = committed if committed >= 0 else low
                lag[key] = max(0, high - lane.committed)
    return lag


def _committed(consumer: Consumer, lanes: list[Lane]) -> list[int | None]:
    """The group's committed offset of each lane's partition (-1 for none), or Nones when the
    coordinator does not answer in time."""
    try:
        found = consumer.committed([TopicPartition(lane.topic, lane.partition) for lane in lanes],
                                   timeout=COMMITTED_TIMEOUT_S)
    except KafkaException as exc:
        log.debug("committed offsets of %s: %s", lanes, exc)
        return [None] * len(lanes)
    return [None if tp.error is not None else max(tp.offset, -1) for tp in found]
