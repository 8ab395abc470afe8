"""The first end-to-end check of the harness: 10,000 keyed messages through a real broker."""

import time
from collections import defaultdict

N_MESSAGES = 10_000
N_KEYS = 200


def consume_until(consumers, seen, done, deadline_s=120):
    """Polls every consumer in turn until ``done()`` or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while not done() and time.monotonic() < deadline:
        for name, consumer in consumers.items():
            for msg in consumer.consume(num_messages=500, timeout=0.05):
                assert not msg.error(), msg.error()
                seen[name].append((msg.partition(), msg.offset(), msg.key(), int(msg.value())))
                consumer.store_offsets(msg)
    assert done(), "timed out"


def test_10k_keyed_messages_through_a_3_member_group(topic_factory, group_factory, producer_factory,
                                                     consumer_factory):
    # Given a 6-partition topic holding 10,000 keyed messages, each key's values counting up
    topic = topic_factory(partitions=6)
    producer = producer_factory(acks="all", **{"linger.ms": 5})
    for i in range(N_MESSAGES):
        producer.produce(topic, key=f"key-{i % N_KEYS}".encode(), value=str(i).encode())
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0

    # When a 3-member group consumes them, and one member that holds partitions leaves half-way
    group = group_factory()
    conf = {"enable.auto.offset.store": False, "enable.auto.commit": True, "auto.commit.interval.ms": 200,
            "partition.assignment.strategy": "cooperative-sticky"}
    consumers = {name: consumer_factory(group, [topic], **conf) for name in ("a", "b", "c")}
    seen: dict[str, list] = defaultdict(list)
    count = lambda: sum(len(v) for v in seen.values())  # noqa: E731
    consume_until(consumers, seen, lambda: all(c.assignment() for c in consumers.values()), 60)
    consume_until(consumers, seen, lambda: count() >= N_MESSAGES // 2)
    leaver = consumers.pop("c")
    handed_over = {tp.partition for tp in leaver.assignment()}
    assert handed_over
    leaver.close()  # commits its stored offsets and leaves the group
    consume_until(consumers, seen, lambda: count() >= N_MESSAGES)

    # Then every message arrived exactly once (the leaver's committed work is not redelivered
    # beyond what it had not committed), each member got each partition's messages in order, and
    # each key's order was kept
    everything = [m for msgs in seen.values() for m in msgs]
    values = [v for *_, v in everything]
    assert set(values) == set(range(N_MESSAGES))
    assert len(values) == N_MESSAGES, f"{len(values) - N_MESSAGES} duplicates"
    for msgs in seen.values():
        by_partition = defaultdict(list)
        for partition, offset, _, _ in msgs:
            by_partition[partition].append(offset)
        assert all(offsets == sorted(offsets) for offsets in by_partition.values())
    by_key = defaultdict(list)
    for _, _, key, value in sorted(everything, key=lambda m: (m[0], m[1])):
        by_key[key].append(value)
    assert all(vals == sorted(vals) for vals in by_key.values())
    # and the leaver's partitions were handed to the two members left (the rebalance may end after
    # the last message arrived: they poll on until it did)
    held = lambda: {tp.partition for c in consumers.values() for tp in c.assignment()}  # noqa: E731
    consume_until(consumers, seen, lambda: handed_over <= held() == set(range(6)), 60)
