"""Share groups (KIP-932) on the test broker: what the local Kafka 4.4 must give a later share-group
runtime. A confluent-kafka ``ShareConsumer`` receives records, each acknowledged on its own: ACCEPT
is done, RELEASE redelivers (its delivery count goes up), REJECT does not."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import AcknowledgeType, ShareConsumer
from confluent_kafka.admin import ConfigResource, ResourceType

from dify_events.schemas.topics import configure_share_group
from tests.conftest import unique
from tests.support.waiting import wait_until

RECORDS = 12
QUIET = logging.getLogger("tests.share.librdkafka")  # the preview API's notice and retries, not stderr


def share_consumer(kafka_client_config, group: str, topic: str) -> ShareConsumer:
    consumer = ShareConsumer({**kafka_client_config, "group.id": group, "share.acknowledgement.mode": "explicit",
                              "max.poll.records": 4, "logger": QUIET})
    consumer.subscribe([topic])
    return consumer


@pytest.mark.kafka
def test_a_share_consumer_receives_and_acknowledges_records_one_by_one(
        admin, kafka_client_config, topic_factory, producer_factory):
    # Given records published before the share group exists, and the group configured from the
    # topics file (share.auto.offset.reset=earliest: else a new share group starts at the end)
    topic = topic_factory(partitions=1)
    producer = producer_factory(acks="all")
    for i in range(RECORDS):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0
    group = unique("share")
    assert configure_share_group(admin, group) == {"share.auto.offset.reset": "earliest"}
    described = admin.describe_configs([ConfigResource(ResourceType.GROUP, group)])
    config = next(iter(described.values())).result(30)
    assert config["share.auto.offset.reset"].value == "earliest"

    # When a member accepts every record but two: it releases v1 and rejects v2
    consumer = share_consumer(kafka_client_config, group, topic)
    delivered: dict[str, list[int]] = {}
    try:
        def poll_and_acknowledge() -> bool:
            for message in consumer.poll(1.0):
                if message.error():
                    continue
                value = message.value().decode()
                delivered.setdefault(value, []).append(message.delivery_count())
                if value == "v1" and len(delivered[value]) == 1:
                    consumer.acknowledge(message, AcknowledgeType.RELEASE)
                elif value == "v2":
                    consumer.acknowledge(message, AcknowledgeType.REJECT)
                else:
                    consumer.acknowledge(message, AcknowledgeType.ACCEPT)
            consumer.commit_sync(10)
            return len(delivered) == RECORDS and len(delivered["v1"]) == 2

        wait_until(poll_and_acknowledge, 60, "every record, and the released one again", interval_s=0)
        # Then every record came once, the released one twice (its delivery count 2), the rejected
        # one once; and nothing more comes: every record was acknowledged for good
        assert delivered["v1"] == [1, 2]
        assert all(counts == [1] for value, counts in delivered.items() if value != "v1")
        assert not [m for m in consumer.poll(2.0) if not m.error()]
    finally:
        consumer.close()
