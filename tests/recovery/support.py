"""Helpers of the recovery tests: offsets as the cluster has them, and waiting for commits."""

from __future__ import annotations

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from tests.consumers.support import wait_until


def end_offsets(admin: AdminClient, topic: str, partitions: int = 1) -> list[int]:
    futures = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)})
    ends = {tp.partition: f.result(timeout=30).offset for tp, f in futures.items()}
    return [ends[p] for p in range(partitions)]


def committed(admin: AdminClient, group_id: str, topic: str, partitions: int = 1) -> list[int | None]:
    request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(topic, p) for p in range(partitions)])
    result = admin.list_consumer_group_offsets([request])[group_id].result(timeout=30)
    found = {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in result.topic_partitions}
    return [found[p] for p in range(partitions)]


def wait_committed_to_end(admin: AdminClient, group_id: str, topic: str, partitions: int = 1) -> None:
    """Waits until the group has committed every partition of ``topic`` up to its end (an empty
    partition counts as committed: the group has nothing to commit there)."""
    wait_until(lambda: [c or 0 for c in committed(admin, group_id, topic, partitions)]
               == end_offsets(admin, topic, partitions), 60, f"{group_id} to commit {topic} to its end")
