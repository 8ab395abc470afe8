"""Consumer groups' lag as Kafka's ``kafka-consumer-groups --describe`` reports it, measured from outside.

Per partition of a group's topics (its domain topics and its retry topic): the high watermark
(admin API) minus the committed offset, read by a consumer of the group's id that never joins it
(``committed()``: an OffsetFetch). Not the admin API's ``list_consumer_group_offsets``: with
confluent-kafka 2.16 it crashes the process (SIGSEGV) while the broker is still loading the group
coordinator, as on a broker started a moment ago. Where the group has committed nothing, lag counts
from the low watermark (everything held is still to read). Dead letters: what
``<prefix>.dlq.<group>`` holds (high minus low watermark); its high watermark counts every dead
letter ever written, so its growth is the dead-lettering rate.

A shared group (a Kafka share group) commits no offsets: its partitions' lag here is everything
they hold (``shared`` says so). Kafka's own figure for it is the broker's share-partition lag
(``kafka-share-groups --describe``, KIP-1226), which the Python client cannot read; the demo
subtracts what the members acknowledged (``consumers.demo.progress``).

One reader serves the demo's progress, the fault harness and ``events console``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from dify_events.schemas.settings import Settings
from dify_events.schemas.topics import list_offsets

from ..config import LIBRDKAFKA_LOG, PRODUCER_ONLY, group_id
from ..group import SHARED, ConsumerGroup

TP = tuple[str, int]
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    high: int
    committed: int | None   # None: the group has committed nothing here
    lag: int


@dataclass(frozen=True)
class GroupLag:
    name: str
    partitions: tuple[PartitionLag, ...] = ()
    dead_letters: int = 0          # held by the dead-letter topic now
    dead_letters_written: int = 0  # the dead-letter topic's high watermarks: every letter ever written
    shared: bool = False           # a share group's: no committed offsets, ``lag`` is what its topics hold

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


class LagReader:
    """``measure()``: two ListOffsets requests for every partition, one OffsetFetch per group."""

    def __init__(self, admin: AdminClient, settings: Settings, groups: list[ConsumerGroup], *,
                 logger: logging.Logger = LIBRDKAFKA_LOG):
        self.admin, self.prefix, self.groups = admin, settings.topic_prefix, groups
        self.offset_readers = {g.name: None if g.delivery == SHARED else Consumer({
            **{k: v for k, v in settings.kafka_properties().items() if k not in PRODUCER_ONLY},
            "bootstrap.servers": settings.bootstrap(), "group.id": group_id(self.prefix, g.name),
            "client.id": "events-lag", "enable.auto.commit": False, "logger": logger,
        }) for g in groups}
        self.refresh()

    def refresh(self) -> None:
        """Looks up the groups' partitions again (topics created or grown since)."""
        metadata = self.admin.list_topics(timeout=TIMEOUT_S)

        def partitions(topic: str) -> list[TP]:
            return [(topic, p) for p in sorted(metadata.topics[topic].partitions)] if topic in metadata.topics else []

        self.consumed = {g.name: [tp for t in g.topics(self.prefix) for tp in partitions(t)] for g in self.groups}
        self.dead_letter_partitions = {g.name: partitions(g.dlq_topic(self.prefix)) for g in self.groups}
        self._every = sorted({tp for tps in (*self.consumed.values(), *self.dead_letter_partitions.values())
                              for tp in tps})

    def measure(self) -> dict[str, GroupLag]:
        low = self._offsets(OffsetSpec.earliest())
        high = self._offsets(OffsetSpec.latest())
        out = {}
        for name, consumer in self.offset_readers.items():
            own = self._committed(consumer, self.consumed[name]) if consumer is not None else {}
            partitions = tuple(PartitionLag(t, p, high[(t, p)], own.get((t, p)),
                                            max(0, high[(t, p)] - own.get((t, p), low[(t, p)])))
                               for t, p in self.consumed[name])
            dlq = self.dead_letter_partitions[name]
            out[name] = GroupLag(name, partitions, sum(high[tp] - low[tp] for tp in dlq), sum(high[tp] for tp in dlq),
                                 shared=consumer is None)
        return out

    def close(self) -> None:
        for consumer in self.offset_readers.values():
            if consumer is not None:
                consumer.close()

    def _offsets(self, spec: OffsetSpec) -> dict[TP, int]:
        # asked again after a metadata refresh where a broker restart left the client's leaders stale
        return list_offsets(self.admin, dict.fromkeys(self._every, spec), timeout=TIMEOUT_S) if self._every else {}

    @staticmethod
    def _committed(consumer: Consumer, tps: list[TP]) -> dict[TP, int]:
        if not tps:
            return {}
        found = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=TIMEOUT_S)
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.error is None and tp.offset >= 0}
