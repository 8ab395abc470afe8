"""librdkafka configuration of a group's consumer: our defaults, the user's properties, our musts."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from dify_events.schemas.settings import Settings

from .errors import ConsumerError

LIBRDKAFKA_LOG = logging.getLogger("consumers.librdkafka")  # librdkafka's own lines, through logging

CONSUMER_DEFAULTS: dict[str, Any] = {
    "auto.offset.reset": "earliest",      # a new group reads what was published before it first joined
    "auto.commit.interval.ms": 1000,      # how stale the committed position may be (redelivery after a crash)
    # classic protocol: range splits EACH topic among the members. cooperative-sticky balances partition
    # counts over the domain and retry topics together, so a second member often got only the retry
    # topic's partitions (6+0) and scaling out added nothing (bench/scale.py measured it). With
    # group.protocol=consumer (KIP-848) set group.remote.assignor=range for the same split, incrementally.
    "partition.assignment.strategy": "range",
    "session.timeout.ms": 45000,
    "max.poll.interval.ms": 300000,       # the poll loop never blocks on handlers, so this is never near
    "fetch.wait.max.ms": 100,
    "queued.max.messages.kbytes": 16384,  # librdkafka's own prefetch buffer per partition (16 MiB)
}
# Owned by the broker under KIP-848 (group.protocol=consumer): must not be set on the client.
BROKER_SIDE_WITH_KIP848 = ("partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms")
# The runtime's offset handling depends on these.
REQUIRED: dict[str, Any] = {
    "enable.auto.commit": True,           # commits what we store, in the background, off the hot path
    "enable.auto.offset.store": False,    # we store an offset only when it and all before it are done
}
# What librdkafka's share consumer refuses ("not applicable for share consumer"): a share group has no
# offsets, assignment or session of its own on the client (the broker's group configs decide them).
SHARE_REFUSED = ("auto.offset.reset", "enable.auto.commit", "partition.assignment.strategy", "session.timeout.ms",
                 "heartbeat.interval.ms", "queued.max.messages.kbytes", "isolation.level", "group.protocol",
                 "group.remote.assignor", "enable.auto.offset.store", "auto.commit.interval.ms")
PRODUCER_ONLY = {"acks", "linger.ms", "compression.type", "enable.idempotence", "delivery.timeout.ms",
                 "message.timeout.ms", "batch.size", "batch.num.messages", "retries", "message.send.max.retries",
                 "queue.buffering.max.ms", "queue.buffering.max.messages", "queue.buffering.max.kbytes",
                 "transactional.id", "request.required.acks"}


def group_id(prefix: str, group: str) -> str:
    """The Kafka consumer group id: ``<prefix>.<group>``, so environments sharing a cluster never
    share offsets."""
    return f"{prefix}.{group}"


def consumer_config(settings: Settings, group: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    user = {k: v for k, v in settings.kafka_properties().items() if k not in PRODUCER_ONLY}
    user.update(overrides or {})
    for name, value in REQUIRED.items():
        if name in user and str(user[name]).lower() != str(value).lower():
            raise ConsumerError(f"{name}={user[name]} cannot be used: the consumer runtime needs {name}={value} "
                                "(it stores each offset only when the message and all before it are done)")
    defaults = dict(CONSUMER_DEFAULTS)
    if str(user.get("group.protocol", "classic")).lower() == "consumer":
        for name in BROKER_SIDE_WITH_KIP848:
            defaults.pop(name, None)
            if name in user:
                raise ConsumerError(f"{name} cannot be set with group.protocol=consumer (KIP-848): the broker "
                                    "decides it; remove it from the kafka settings or use group.protocol=classic")
    return {
        "bootstrap.servers": settings.bootstrap(),
        "group.id": group_id(settings.topic_prefix, group),
        "client.id": f"events-{group}-{socket.gethostname()}-{os.getpid()}",
        **defaults,
        **user,
        **REQUIRED,
        "logger": LIBRDKAFKA_LOG,
    }


def share_consumer_config(settings: Settings, group: str, poller: int, *, max_poll_records: int = 1,
                          overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The configuration of one poller's ``ShareConsumer``: explicit acknowledgement (each record
    is acknowledged as its outcome says), ``max_poll_records`` records per poll (a hint: librdkafka
    may return a whole producer batch). The user's properties a share consumer refuses are left
    out, with a warning (the same settings serve ordered groups)."""
    user = {k: v for k, v in settings.kafka_properties().items() if k not in PRODUCER_ONLY}
    user.update(overrides or {})
    dropped = sorted(name for name in SHARE_REFUSED if name in user)
    if dropped:
        logging.getLogger("consumers.config").warning(
            "group %s is shared: %s do(es) not apply to a share consumer and are left out (a share group's "
            "broker-side configs decide them)", group, ", ".join(dropped))
    return {
        "bootstrap.servers": settings.bootstrap(),
        "group.id": group_id(settings.topic_prefix, group),
        "client.id": f"events-{group}-{socket.gethostname()}-{os.getpid()}-p{poller}",
        "fetch.wait.max.ms": 100,
        **{k: v for k, v in user.items() if k not in SHARE_REFUSED},
        "share.acknowledgement.mode": "explicit",
        "max.poll.records": max_poll_records,
        "logger": LIBRDKAFKA_LOG,
    }
