"""5. Footprint and scale: one and two ``events run`` processes of one group on a 6-partition topic.

A backlog read by a group that grows from one member to two is mostly read by the first (the
second joins after it started), so each repetition lets the members join first, on an empty
topic, until the partitions are spread (each reports its assignment on ``/readyz``), then
publishes the events at once (pre-encoded, with the SDK's headers) and measures from the first
event handled by any member to the last. Peak RSS (VmHWM) of each member is read before it stops.

A group subscribes to its domain topic *and* its retry topic (3 partitions, as the topics file says). The shipped
``range`` assignor spreads each topic on its own; ``cooperative-sticky`` (the third variant)
balances the number of partitions per member, not per topic, so the second member may get the retry
topic's partitions and none of the domain topic's, and then adds nothing. The note says how the
domain topic's partitions were split; the KIP-848 range variant spreads each topic on its own and
rebalances incrementally.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from dify_events.producers.config import producer_config
from dify_events.producers.producer import EventProducer
from dify_events.schemas.settings import Settings

from .common import PARTITIONS, Row, app_events, vm_hwm_kib, wait_for
from .runtime import RuntimeProcess


def encoded_events(bootstrap: str, prefix: str, count: int) -> list[tuple[str, bytes, str, list]]:
    sdk = EventProducer(settings=Settings(bootstrap_servers=bootstrap, topic_prefix=prefix), poll_thread=False)
    try:
        return [sdk._prepare(event, None, None, None) for event in app_events(count)]
    finally:
        sdk.close(1)


VARIANTS = {
    "as shipped (range)": {},
    "partition.assignment.strategy=cooperative-sticky": {"EVENTS_KAFKA_PARTITION_ASSIGNMENT_STRATEGY":
                                                         "cooperative-sticky"},
    # KIP-848's broker-side range assignor: incremental rebalances, and every topic spread on its own
    "group.protocol=consumer, group.remote.assignor=range": {"EVENTS_KAFKA_GROUP_PROTOCOL": "consumer",
                                                              "EVENTS_KAFKA_GROUP_REMOTE_ASSIGNOR": "range"},
}


def domain_split(topics, group_id: str, topic: str) -> list[int]:
    """How many partitions of ``topic`` each member of the group holds."""
    description = topics.admin.describe_consumer_groups([group_id])[group_id].result(15)
    return sorted((sum(1 for tp in m.assignment.topic_partitions if tp.topic == topic)
                   for m in description.members), reverse=True)


def one_run(bootstrap: str, topics, home: Path, encoded, *, prefix: str, members: int, env: dict,
            events: int) -> dict:
    topic = f"{prefix}.app"
    topics.create([topic], PARTITIONS)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    procs = [RuntimeProcess(bootstrap=bootstrap, prefix=prefix, home=home, group=group, health=True, tag=f"-{i}",
                            env=env) for i in range(members)]
    try:
        for p in procs:
            p.start()

        def settled() -> bool:  # every member joined and assigned; all partitions (domain + retry topic) out
            states = [p.status() for p in procs]
            retry_topic = f"{prefix}.retry.{group}"
            retry = topics.admin.list_topics(retry_topic, timeout=10).topics.get(retry_topic)
            return (retry is not None and retry.error is None and bool(retry.partitions)
                    and all(s and s.get("joined") and s.get("assigned") for s in states)
                    and sum(s["assigned"] for s in states if s) == PARTITIONS + len(retry.partitions))

        wait_for(settled, 120, interval_s=0.2, what=f"{members} member(s) to share the partitions")
        time.sleep(1.0)  # idle means after the join's own allocations settle: no event says when
        idle_rss = [vm_hwm_kib(p.proc.pid, "VmRSS") for p in procs if p.proc is not None]  # all started
        split = domain_split(topics, f"{prefix}.{group}", topic)
        producer = Producer(producer_config({"linger.ms": 20, "queue.buffering.max.messages": 1_000_000},
                                            settings=Settings(bootstrap_servers=bootstrap)))
        for i, (_, value, key, headers) in enumerate(encoded):
            producer.produce(topic, value, key, headers=headers)
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(60)
        wait_for(lambda: sum(p.progress()["n"] for p in procs) >= events, 180, interval_s=0.05,
                 what=f"{events:,} events over {members} member(s)")
        states = [p.progress() for p in procs]
    finally:
        for p in procs:
            p.stop()
    first = min(s["first_ns"] for s in states if s["n"])
    last = max(s["last_ns"] for s in states)
    return {"rate": sum(s["n"] for s in states) / ((last - first) / 1e9), "handled": [s["n"] for s in states],
            "domain_partitions": split, "rss_kib": [p.peak_rss_kib for p in procs], "idle_rss_kib": idle_rss}


def section(bootstrap: str, topics, home: Path, *, events: int, reps: int, log=print) -> list[Row]:
    encoded = encoded_events(bootstrap, topics.prefix, events)
    runs: dict[tuple[str, int], list[dict]] = {}
    plan = [(variant, members) for variant in VARIANTS for members in (1, 2)
            if not (members == 1 and VARIANTS[variant])]  # one member: the assignor does not matter
    for rep in range(reps):
        for i, (variant, members) in enumerate(plan):
            result = one_run(bootstrap, topics, home, encoded, prefix=f"{topics.prefix}s{rep}v{i}", members=members,
                             env=VARIANTS[variant], events=events)
            runs.setdefault((variant, members), []).append(result)
        log(f"  scale rep {rep + 1}/{reps}: " + ", ".join(
            f"x{m} {v.split(' ')[0]} {r[-1]['rate']:,.0f}/s "
            f"(partitions {'+'.join(map(str, r[-1]['domain_partitions']))})"
            for (v, m), r in runs.items()))
    rows = []
    base = None
    for (variant, members), results in runs.items():
        splits = sorted({"+".join(map(str, r["domain_partitions"])) for r in results})
        row = Row("scale", f"events run x{members}" + (f", {variant}" if members > 1 else "") + ", no-op handler",
                  "ev/s", [r["rate"] for r in results],
                  note=f"{PARTITIONS} partitions held {' or '.join(splits)}",
                  extra={"handled_per_member": [r["handled"] for r in results],
                         "domain_partitions_per_member": [r["domain_partitions"] for r in results]})
        if base is None:
            base = row
        assert row.median is not None and base.median is not None  # every run measured a rate
        row.ratio, row.ratio_to = row.median / base.median, "x1"
        rows.append(row)
    single = runs[(next(iter(VARIANTS)), 1)]
    idle = [kib / 1024 for r in single for kib in r["idle_rss_kib"] if kib]
    rss = [kib / 1024 for r in single for kib in r["rss_kib"] if kib]
    rows.append(Row("footprint", "RSS of one events run process, joined, idle", "MiB", idle,
                    note="after start-up and the group's join, before any event"))
    rows.append(Row("footprint", "peak RSS (VmHWM) of one events run process, live traffic", "MiB", rss,
                    note=f"{events:,} events as fast as they come; 8 workers"))
    return rows
