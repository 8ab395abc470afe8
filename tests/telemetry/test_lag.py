"""``events_consumer_lag`` is Kafka's own LAG, as Apache Kafka's ``kafka-consumer-groups --describe``
(``ConsumerGroupCommand``, from the broker's jars) reports it, per partition: after a restart with a
backlog, while a slow handler has fetched messages it has not finished, and once they are done."""

from __future__ import annotations

import re
import threading

from dify_events.consumers.group import ConsumerGroup
from dify_events.schemas.events import AppWasCreated
from dify_events.schemas.settings import get_settings
from tests.consumers.support import app_event, publish, running, wait_until
from tests.support.kafka_tools import CONSUMER_GROUPS, kafka_tool
from tests.telemetry.support import points

ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(\S+)\s", re.M)


def kafkas_lag(group_id: str, topic: str) -> dict[int, int | None]:
    """LAG per partition of ``topic`` as Kafka's own tool says it (None where it shows '-')."""
    return {int(partition): None if lag == "-" else int(lag)
            for _, t, partition, _current, _end, lag in ROW.findall(kafka_tool(CONSUMER_GROUPS, "--describe", "--group",
                                                                                 group_id)) if t == topic}


def stable_lag(group_id: str, topic: str, reader) -> tuple[dict[int, int | None], dict[int, int]]:
    """Kafka's LAG, from two describes that agree (the group's commits at rest), and our metric's
    read after the second: a describe starts a JVM (seconds), so the metric, measured every
    ``LAG_INTERVAL_S``, was measured again while Kafka's figures held."""
    def attempt():
        before = kafkas_lag(group_id, topic)
        after = kafkas_lag(group_id, topic)
        ours = {int(a["partition"]): v for a, v in points(reader).get("events.consumer.lag", []) if a["topic"] == topic}
        return (before, ours) if before == after and before else None
    return wait_until(attempt, 120, "two describes that agree", interval_s=0.5)


class Gate:
    """A handler that waits for the test to let it go: messages fetched and not finished, at will."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.started = 0

    def handle(self, event: AppWasCreated, ctx) -> None:
        self.started += 1
        if not self.open.wait(120):
            raise TimeoutError("the test never opened the gate")


def test_the_lag_metric_is_kafkas_lag_after_a_restart_with_a_backlog_and_a_slow_handler(
        kafka_env, topic_factory, group_topics, meters):
    provider, reader = meters
    # Given a group that handled 9 events of a 3-partition topic and stopped (its offsets committed)
    topic = topic_factory(f"{kafka_env}.app", partitions=3)
    group_topics("tel-lag", partitions=3)
    gate = Gate()
    group = ConsumerGroup("tel-lag", idempotent=False)
    group.handler(AppWasCreated)(gate.handle)
    gate.open.set()
    publish_events(topic, range(9))
    with running(group) as runner:
        wait_until(lambda: runner.stats()["handled"] == 9, 60, "the first 9 events")
    # ... and 30 more events published while it was stopped
    publish_events(topic, range(9, 39))
    gate.open.clear()
    # When it starts again, with a handler that does not finish until let go
    with running(group, concurrency=2, meter_provider=provider) as runner:
        wait_until(lambda: gate.started >= 2 and runner.in_flight == 30, 60, "the backlog fetched, two started")
        # Then, with everything fetched and nothing done, our lag is Kafka's: the whole backlog
        kafka, ours = stable_lag(runner.group_id, topic, reader)
        assert sum(kafka.values()) == 30
        assert ours == kafka, (ours, kafka)
        # And once the handler is let go and everything is done, both say 0
        gate.open.set()
        wait_until(lambda: runner.stats()["handled"] == 30, 60, "the backlog handled")
        wait_until(lambda: stable_lag(runner.group_id, topic, reader)[0] == dict.fromkeys(range(3), 0), 60,
                   "Kafka's lag to reach 0")
        kafka, ours = stable_lag(runner.group_id, topic, reader)
        assert ours == kafka == dict.fromkeys(range(3), 0)


def publish_events(topic: str, numbers) -> None:
    from confluent_kafka import Producer

    publish(Producer({"bootstrap.servers": get_settings().bootstrap()}), topic,
            [app_event(f"app-{n}", n) for n in numbers])
