"""The few Kafka operations recovery needs, over confluent_kafka's AdminClient and Consumer.

Offsets are looked up and set with the admin API, as Apache Kafka's own
``kafka-consumer-groups --reset-offsets`` does: ListOffsets (``OffsetSpec.for_timestamp`` is
Kafka's offsets-for-times lookup: the first offset whose timestamp is at or after the time),
OffsetFetch for the committed offsets, and OffsetCommit through ``alter_consumer_group_offsets``,
which the broker accepts only while the group has no members.

Messages are read by a consumer that is *assigned* partitions (it never joins a group, never
commits), with ``isolation.level=read_committed``, from a start offset to an end offset fixed
before reading, so a range never grows while it is read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from dify_events.schemas.errors import TopicsError
from dify_events.schemas.settings import Settings, get_settings
from dify_events.schemas.topics import admin_client, await_served, list_offsets

from ..config import LIBRDKAFKA_LOG, PRODUCER_ONLY
from .errors import MissingTopic, RecoveryError

TP = tuple[str, int]
TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 30.0  # reading a range fails when nothing arrives for this long


@dataclass(frozen=True)
class Member:
    """An active member of a consumer group, as ``describe_consumer_groups`` reports it."""

    client_id: str
    host: str
    member_id: str
    partitions: tuple[TP, ...] = ()   # assigned to it

    def __str__(self) -> str:
        return f"{self.client_id} on {self.host.lstrip('/')}"


def admin(settings: Settings) -> AdminClient:
    return admin_client(settings)


def _result(future, what: str) -> Any:
    try:
        return future.result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise RecoveryError(f"{what} failed: {exc.args[0].str() if exc.args else exc}") from exc
    except TimeoutError as exc:
        raise RecoveryError(f"{what}: no answer from the cluster within {TIMEOUT_S:.0f}s") from exc


def members(client: AdminClient, group_id: str) -> tuple[str, list[Member]]:
    """The group's state (``EMPTY``, ``STABLE``, ``DEAD`` for a group Kafka does not know, ...) and members."""
    description = _result(client.describe_consumer_groups([group_id])[group_id], f"describing group {group_id}")
    state = getattr(description.state, "name", str(description.state))
    return state, [Member(m.client_id, m.host, m.member_id, _assigned(m)) for m in description.members]


def _assigned(member) -> tuple[TP, ...]:
    return tuple((tp.topic, tp.partition) for tp in member.assignment.topic_partitions) if member.assignment else ()


def partition_counts(client: AdminClient, topics: Iterable[str]) -> dict[str, int]:
    """Partitions of each topic; ``MissingTopic`` names those the cluster does not have."""
    topics = list(dict.fromkeys(topics))
    metadata = client.list_topics(timeout=TIMEOUT_S)
    missing = [t for t in topics if t not in metadata.topics or metadata.topics[t].error is not None]
    if missing:
        raise MissingTopic(f"the cluster has no topic {', '.join(missing)}: create the platform's topics with "
                           "`events topics apply --group <group>` (a group's runner also creates its own on start)")
    return {t: len(metadata.topics[t].partitions) for t in topics}


def exists(client: AdminClient, topic: str) -> bool:
    metadata = client.list_topics(timeout=TIMEOUT_S)
    return topic in metadata.topics and metadata.topics[topic].error is None


def _list_offsets(client: AdminClient, tps: list[TP], spec: OffsetSpec, what: str) -> dict[TP, int]:
    if not tps:
        return {}
    try:
        return list_offsets(client, dict.fromkeys(tps, spec), timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise RecoveryError(f"{what} failed: {exc.args[0].str() if exc.args else exc}") from exc
    except TimeoutError as exc:
        raise RecoveryError(f"{what}: no answer from the cluster within {TIMEOUT_S:.0f}s") from exc


def watermarks(client: AdminClient, tps: list[TP]) -> dict[TP, tuple[int, int]]:
    """(low, high) of each partition: the first offset still held, and the next offset to be written."""
    low = _list_offsets(client, tps, OffsetSpec.earliest(), "the earliest offset")
    high = _list_offsets(client, tps, OffsetSpec.latest(), "the latest offset")
    return {tp: (low[tp], high[tp]) for tp in tps}


def offsets_for_time(client: AdminClient, tps: list[TP], millis: int) -> dict[TP, int | None]:
    """Kafka's offsets-for-times lookup: the first offset of each partition whose timestamp is at or
    after ``millis``; ``None`` where no message is that recent."""
    found = _list_offsets(client, tps, OffsetSpec.for_timestamp(millis), "the offset-for-time lookup")
    return {tp: (offset if offset >= 0 else None) for tp, offset in found.items()}


def committed(client: AdminClient, group_id: str, tps: list[TP],
              settings: Settings | None = None) -> dict[TP, int | None]:
    """The group's committed offset of each partition (``None`` where it has none).

    Read by an OffsetFetch from a consumer of the group's id that never joins it, not by the admin
    API's ``list_consumer_group_offsets``: with confluent-kafka 2.16 that crashes the process
    (SIGSEGV) while a freshly started broker is still loading its group coordinator."""
    if not tps:
        return {}
    consumer = Consumer({**_client_config(settings or get_settings()), "group.id": group_id,
                         "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise RecoveryError(
            f"reading the offsets of {group_id} failed: {exc.args[0].str() if exc.args else exc}") from exc
    finally:
        consumer.close()
    out: dict[TP, int | None] = {}
    for tp in found:
        if tp.error is not None:
            raise RecoveryError(f"reading the offset of {group_id} on {tp.topic}[{tp.partition}] failed: {tp.error}")
        out[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
    return out


def set_offsets(client: AdminClient, group_id: str, offsets: dict[TP, int]) -> None:
    """Commits ``offsets`` for the group (the broker refuses while the group has members)."""
    request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())])
    try:
        result = client.alter_consumer_group_offsets([request], request_timeout=TIMEOUT_S)[group_id].result(TIMEOUT_S)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        hint = ""
        if error is not None and error.code() in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
                                                   KafkaError.ILLEGAL_GENERATION):
            hint = " (a member joined the group meanwhile: stop it and try again, or copy with --copy)"
        raise RecoveryError(f"setting the offsets of {group_id} failed: "
                            f"{error.str() if error is not None else exc}{hint}") from exc
    failed = [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in result.topic_partitions if tp.error is not None]
    if failed:
        raise RecoveryError(f"setting the offsets of {group_id} failed for {', '.join(failed)}")


def create_topic(client: AdminClient, name: str, *, partitions: int = 1, config: dict[str, str] | None = None) -> None:
    """Creates ``name`` unless it exists (replication: up to 3, as many as the cluster has brokers), and
    returns once its leaders serve it (``await_served``: a write before that can be lost)."""
    brokers = len(client.list_topics(timeout=TIMEOUT_S).brokers)
    future = client.create_topics([NewTopic(name, partitions, max(1, min(3, brokers)), config=config or {})],
                                  operation_timeout=TIMEOUT_S)[name]
    try:
        future.result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise RecoveryError(f"creating {name} failed: {exc.args[0].str()}") from exc
    except TimeoutError as exc:
        raise RecoveryError(f"creating {name}: no answer from the cluster within {TIMEOUT_S:.0f}s") from exc
    try:
        await_served(client, {name: 1}, TIMEOUT_S)
    except TopicsError as exc:
        raise RecoveryError(f"creating {name}: {exc}") from exc


# -- reading ranges ---------------------------------------------------------------------------
def _client_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {k: v for k, v in settings.kafka_properties().items() if k not in PRODUCER_ONLY}
    conf["bootstrap.servers"] = settings.bootstrap()
    conf.setdefault("logger", LIBRDKAFKA_LOG)  # librdkafka's lines through logging, not raw on stderr
    return conf


def reader(settings: Settings, purpose: str) -> Consumer:
    """A consumer for assigned reads: no group membership, no commits, committed data only."""
    conf = _client_config(settings)
    conf.update({
        # never joins (assign only) and never commits: the id only names the client to the broker
        "group.id": f"{settings.topic_prefix}.events-{purpose}-{uuid.uuid4().hex[:8]}",
        "client.id": f"events-{purpose}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    })
    return Consumer(conf)


def read_ranges(consumer: Consumer, ranges: Iterable[tuple[str, int, int, int]], *,
                on_skip: Callable[[int], None] | None = None, idle_timeout_s: float = IDLE_TIMEOUT_S,
                batch: int = 500) -> Iterator[Message]:
    """Messages of each ``(topic, partition, start, end)`` range, ``start <= offset < end``, in offset
    order within a partition. A partition is done at its end, or at the end of what it holds
    (control records of transactions and compacted-away offsets leave gaps). ``on_skip(n)`` is told
    of offsets that turned out to be gaps, so a progress bar reaches its total."""
    todo = {(t, p): (s, e) for t, p, s, e in ranges if e > s}
    if not todo:
        return
    consumer.incremental_assign([TopicPartition(t, p, s) for (t, p), (s, _) in todo.items()])
    seen = {tp: s for tp, (s, _) in todo.items()}  # next offset expected, per partition
    last_progress = time.monotonic()
    try:
        while todo:
            msgs = consumer.consume(batch, 0.5)
            if not msgs and time.monotonic() - last_progress > idle_timeout_s:
                waiting = ", ".join(f"{t}[{p}] at {seen[(t, p)]} of {e}" for (t, p), (_, e) in todo.items())
                raise RecoveryError(f"reading stalled: nothing arrived for {idle_timeout_s:.0f}s ({waiting})")
            for msg in msgs:
                tp = (msg.topic(), msg.partition())
                if tp not in todo:
                    continue
                _, end = todo[tp]
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise RecoveryError(f"reading {tp[0]}[{tp[1]}] failed: {error.str()}")
                    offset = end  # the partition holds nothing more
                else:
                    offset = cast(int, msg.offset())  # a message (not an error) has one
                last_progress = time.monotonic()
                gap = min(offset, end) - seen[tp]
                if gap > 0 and on_skip is not None:
                    on_skip(gap)
                if error is None and offset < end:
                    seen[tp] = offset + 1
                    yield msg
                    if offset + 1 < end:
                        continue
                else:
                    seen[tp] = end
                del todo[tp]
                consumer.incremental_unassign([TopicPartition(*tp)])
    finally:
        consumer.close()
