"""Consumer lag per assigned partition, measured by the poll loop every ``LAG_INTERVAL_S``.

Lag is the partition's high watermark minus the group's next offset to commit (every message
below it is done). The high watermark is librdkafka's cached one (``get_watermark_offsets(...,
cached=True)``: updated by every fetch response, no request to the broker), so measuring costs
microseconds per partition, once a second, never per message. A partition with nothing done yet
since its assignment uses the consumer's fetch position; one not fetched yet is left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from confluent_kafka import TopicPartition

if TYPE_CHECKING:
    from confluent_kafka import Consumer

    from ..job import Lane

LAG_INTERVAL_S = 1.0


def measure(consumer: Consumer, lanes: dict[tuple[str, int], Lane]) -> dict[tuple[str, int], int]:
    lag: dict[tuple[str, int], int] = {}
    unpositioned = []
    for key, lane in lanes.items():
        tp = TopicPartition(lane.topic, lane.partition)
        low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high < 0:
            continue  # not fetched yet: librdkafka knows no watermark
        position = lane.offsets.position
        if position is None:
            unpositioned.append((key, tp, low, high))
            continue
        lag[key] = max(0, high - position)
    if unpositioned:
        positions = consumer.position([tp for _, tp, _, _ in unpositioned])
        for (key, _tp, low, high), tp in zip(unpositioned, positions, strict=True):
            if tp.offset >= 0:
                lag[key] = max(0, high - tp.offset)
            elif low == high:
                lag[key] = 0
    return lag
