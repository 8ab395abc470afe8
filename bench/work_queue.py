"""6. A work queue: a handler taking 50 ms per event (``time.sleep``: an I/O-bound job such as Dify's
document indexing) on a 3-partition topic, with 1, 3 and 6 ``events run`` members, as a consumer
group (``delivery="ordered"``, the default) and as a shared group (``delivery="shared"``: a Kafka
share group, KIP-932).

Every member runs with ``EVENTS_CONCURRENCY=1``: one handler thread (the ordered runner's one
worker; the share runner's one poller), so a member handles at most 20 events/s. A consumer group
is then capped at its 3 partitions (60/s: a 4th member gets no partition of the domain topic); a
share group can hand records of one partition to several members, and so go past it, but Kafka
(4.4) does so only when the group has more members than partitions, counting the retry topic the
group also subscribes to. Each runner makes its group's retry topic as the topics file says: 3
partitions for the consumer group, 1 for the share group (``shared_retry``), so 6 share-group
members over 4 partitions share the domain topic's.

Each repetition starts the members on an empty topic and waits until they are in: the consumer
group's members hold all partitions (domain and retry topic, from ``/readyz``), the share group's
members have each polled once (the share runner's ``joined``; the runner sets the group's
``share.auto.offset.reset`` to ``earliest`` before it joins). Then ``per_member * members`` events
are published at once, each in a producer batch of its own (``batch.num.messages=1``: events of a
work queue are published one by one as things happen, and a share consumer acquires whole
batches), and the rate counts from the start of the first event handled by any member to the end
of the last. The note says how many domain partitions each member handled events of.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from confluent_kafka import Producer

from dify_events.producers.config import producer_config
from dify_events.schemas.settings import Settings

from .common import Row, wait_for
from .runtime import RuntimeProcess
from .scale import encoded_events

PARTITIONS = 3
HANDLER_MS = 50
MEMBERS = (1, 3, 6)
DELIVERIES = {"ordered": "consumer group", "shared": "share group"}


def publish_one_by_one(bootstrap: str, topic: str, encoded) -> None:
    producer = Producer(producer_config({"batch.num.messages": 1}, settings=Settings(bootstrap_servers=bootstrap)))
    for _, value, key, headers in encoded:
        producer.produce(topic, value, key, headers=headers)
        producer.poll(0)
    producer.flush(60)


def members_in(topics, procs: list[RuntimeProcess], delivery: str, retry_topic: str) -> bool:
    states = [p.status() for p in procs]
    if not all(s and s.get("joined") for s in states):
        return False
    if delivery == "shared":  # a share group has no assignment the Python client can read
        return True
    retry = topics.admin.list_topics(retry_topic, timeout=10).topics.get(retry_topic)
    return (retry is not None and retry.error is None and bool(retry.partitions)
            and sum(s["assigned"] for s in states if s) == PARTITIONS + len(retry.partitions))


def one_run(bootstrap: str, topics, home: Path, encoded, *, prefix: str, delivery: str, members: int) -> dict:
    topic = f"{prefix}.app"
    topics.create([topic], PARTITIONS)
    group = f"bench-q-{uuid.uuid4().hex[:8]}"
    env = {"BENCH_SLEEP_MS": str(HANDLER_MS), "BENCH_DELIVERY": delivery, "EVENTS_CONCURRENCY": "1"}
    procs = [RuntimeProcess(bootstrap=bootstrap, prefix=prefix, home=home, group=group, health=True, tag=f"-{i}",
                            env=env) for i in range(members)]
    events = len(encoded)
    try:
        for p in procs:
            p.start()
        wait_for(lambda: members_in(topics, procs, delivery, f"{prefix}.retry.{group}"), 120, interval_s=0.2,
                 what=f"{members} member(s) of a {DELIVERIES[delivery]} to join")
        publish_one_by_one(bootstrap, topic, encoded)
        best = 1000 / HANDLER_MS * members
        wait_for(lambda: sum(p.progress()["n"] for p in procs) >= events, 60 + 3 * events / best, interval_s=0.1,
                 what=f"{events:,} events over {members} member(s)")
        states = [p.progress() for p in procs]
    finally:
        with ThreadPoolExecutor(len(procs)) as pool:  # SIGTERM to all at once: each drains and leaves
            list(pool.map(lambda p: p.stop(), procs))
    first = min(s["first_ns"] for s in states if s["n"])
    last = max(s["last_ns"] for s in states)
    return {"rate": sum(s["n"] for s in states) / ((last - first) / 1e9), "handled": [s["n"] for s in states],
            "partitions": [sorted(p for t, p in s["partitions"] if t == topic) for s in states]}


def split(result: dict) -> str:
    """How many of the domain topic's partitions each member handled events of, e.g. ``1+1+1+0``."""
    return "+".join(str(len(p)) for p in sorted(result["partitions"], key=len, reverse=True))


def section(bootstrap: str, topics, home: Path, *, per_member: int, reps: int, log=print) -> list[Row]:
    encoded = encoded_events(bootstrap, topics.prefix, per_member * max(MEMBERS))
    runs: dict[tuple[str, int], list[dict]] = {}
    for rep in range(reps):
        for i, (delivery, members) in enumerate((d, m) for d in DELIVERIES for m in MEMBERS):
            result = one_run(bootstrap, topics, home, encoded[:per_member * members],
                             prefix=f"{topics.prefix}q{rep}v{i}", delivery=delivery, members=members)
            runs.setdefault((delivery, members), []).append(result)
        log(f"  queue rep {rep + 1}/{reps}: " + ", ".join(
            f"{d} x{m} {r[-1]['rate']:,.1f}/s ({split(r[-1])})" for (d, m), r in runs.items()))
    rows = []
    base = None
    for (delivery, members), results in runs.items():
        name = f"{DELIVERIES[delivery]} x{members}, {HANDLER_MS} ms handler"
        row = Row("queue", name, "ev/s", [r["rate"] for r in results],
                  note=f"1 thread a member; of the {PARTITIONS} partitions, each member handled "
                       f"{' or '.join(sorted({split(r) for r in results}))}",
                  extra={"handled_per_member": [r["handled"] for r in results],
                         "partitions_per_member": [r["partitions"] for r in results]})
        base = base or row
        row.ratio, row.ratio_to = (row.median or 0) / (base.median or 1), "consumer group x1"
        rows.append(row)
    return rows
