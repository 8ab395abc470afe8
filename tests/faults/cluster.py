"""Faults of the local three-broker cluster, and what the scenarios wait for: which node leads what
(partitions, a group's coordination, a transactional id's coordination, the controller quorum), a
node killed (SIGKILL), paused (SIGSTOP: cut off from the others, as by a network partition) and
resumed, and the conditions of a recovery: leaders elected away from a node, every replica in sync.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Iterable

from confluent_kafka.admin import AdminClient

from dify_events.consumers.broker.cluster import LocalCluster
from dify_events.consumers.broker.local import wait_for_exit
from tests.faults.harness import wait_for

INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")
QUIET = logging.getLogger("tests.faults.cluster.librdkafka")


def pid_of(cluster: LocalCluster, node_id: int) -> int:
    state = cluster.node(node_id).status()
    assert state is not None, f"node {node_id} is not running"
    return state.pid


def kill(cluster: LocalCluster, node_id: int) -> None:
    """SIGKILL: the node dies at once, without a controlled shutdown."""
    pid = pid_of(cluster, node_id)
    os.kill(pid, signal.SIGKILL)
    wait_for_exit(pid, time.monotonic() + 10)


def pause(cluster: LocalCluster, node_id: int) -> int:
    """SIGSTOP: the node stops answering anyone, its peers and controllers included, as if cut off."""
    pid = pid_of(cluster, node_id)
    os.kill(pid, signal.SIGSTOP)
    return pid


def resume(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def leaders(admin: AdminClient, topics: Iterable[str]) -> Counter[int]:
    """How many of ``topics``' partitions each node leads (-1: partitions without a leader)."""
    metadata = admin.list_topics(timeout=10)
    return Counter(p.leader for t in topics for p in metadata.topics[t].partitions.values())


def busiest_leader(admin: AdminClient, topics: Iterable[str]) -> int:
    return leaders(admin, topics).most_common(1)[0][0]


def led_elsewhere(admin: AdminClient, topics: Iterable[str], node_id: int) -> bool:
    """Every partition of ``topics`` has a leader, and none is ``node_id``."""
    counts = leaders(admin, topics)
    return counts[node_id] == 0 and counts[-1] == 0


def fully_replicated(admin: AdminClient, topics: Iterable[str]) -> bool:
    """Every partition of ``topics`` (and of the internal topics that exist) has a leader and all its
    replicas in sync (three, for the topics of the topics file)."""
    metadata = admin.list_topics(timeout=10)
    names = [*topics, *(t for t in INTERNAL_TOPICS if t in metadata.topics)]
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            return False
        for partition in topic.partitions.values():
            if partition.leader < 0 or len(partition.isrs) < len(partition.replicas):
                return False
    return True


def group_coordinator(admin: AdminClient, group_id: str) -> int:
    """The node coordinating ``group_id``: the leader of its ``__consumer_offsets`` partition (Kafka's
    ``abs(hashCode) % partitions``). Read from the metadata: librdkafka 2.16's DescribeConsumerGroups
    aborts the process (an assertion in its request bookkeeping) when asked while the coordinator dies."""
    return _leader_for(admin, "__consumer_offsets", group_id)


def group_state(bootstrap: str, group_id: str) -> tuple[str, int, int]:
    """The group's state (``STABLE``, ``PREPARING_REBALANCING``, ...), member count and coordinator,
    asked by a client of its own (see ``group_coordinator``: ask only while the coordinator is alive)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": QUIET})  # type: ignore[dict-item]  # a logger, as librdkafka takes
    description = admin.describe_consumer_groups([group_id], request_timeout=10)[group_id].result(timeout=15)
    return description.state.name, len(description.members), description.coordinator.id


def java_hash(text: str) -> int:
    """Java's ``String.hashCode`` (Kafka places a transactional id by it)."""
    data, h = text.encode("utf-16-be"), 0
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def transaction_coordinator(admin: AdminClient, transactional_id: str) -> int:
    """The node coordinating ``transactional_id``: the leader of its ``__transaction_state`` partition
    (placed as a group id is: ``group_coordinator`` is checked against Kafka's own answer)."""
    return _leader_for(admin, "__transaction_state", transactional_id)


def _leader_for(admin: AdminClient, topic: str, key: str) -> int:
    """The leader of ``key``'s partition of an internal topic: Kafka's ``Utils.abs(key.hashCode()) % n``."""
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    h = java_hash(key)
    return partitions[(0 if h == -(1 << 31) else abs(h)) % len(partitions)].leader


def new_controller(cluster: LocalCluster, old: int, timeout_s: float = 60) -> int:
    """Waits until the quorum has elected an active controller other than ``old``."""
    return wait_for(lambda: (c := cluster.active_controller()) not in (None, old) and c, timeout_s,
                    f"a controller other than node {old}")


class Clock:
    """Seconds since it was made, for the figures (time to elect, to recover)."""

    def __init__(self):
        self.start = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.start


def run_topics(admin: AdminClient, prefix: str) -> list[str]:
    """A run's topics: its domain topics and its groups' dead-letter and retry topics."""
    return sorted(t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{prefix}."))
