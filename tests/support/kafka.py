"""Finds or starts the Apache Kafka cluster the tests run against.

In this order: the cluster named by ``KAFKA_BOOTSTRAP_SERVERS``; the broker a parallel run's
controller started for its workers (``EVENTS_TEST_KAFKA_BOOTSTRAP``); a testcontainers Kafka (KRaft)
container where a Docker engine answers; otherwise the project's local broker, started in a
throwaway home directory (the jars are cached per user) and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from dify_events.consumers.broker import BrokerError, LocalBroker
from dify_events.consumers.broker.cluster import LocalCluster
from dify_events.consumers.broker.local import free_port
from dify_events.schemas.settings import cache_dir
from dify_events.schemas.topics import topic_config
from tests.support.waiting import wait_until

DOCKER_IMAGE = "confluentinc/cp-kafka:8.4.1"


def docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False


@contextlib.contextmanager
def kafka_cluster() -> Iterator[str]:
    """Yields a bootstrap address of a running cluster."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("EVENTS_TEST_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    if docker_engine_answers():
        from testcontainers.community.kafka import KafkaContainer

        # Confluent Platform 8.4 is Apache Kafka 4.4; testcontainers' KafkaContainer drives the
        # cp-kafka image's start script (KRaft from CP 7.0), which the apache/kafka image lacks
        with KafkaContainer(DOCKER_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    with tempfile.TemporaryDirectory(prefix="events-test-broker-") as home:
        broker = LocalBroker(Path(home), cache_dir(), port=free_port())  # never a port another run may take
        state = broker.start(timeout_s=90)
        try:
            yield state.bootstrap
        finally:
            broker.stop()


@contextlib.contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    """A local cluster of three nodes in a throwaway home, started, and stopped at the end. Made again
    once, on other ports, if a port it chose was taken before its node bound it (on a shared machine,
    other processes pick ports too)."""
    for attempt in (1, 2):
        with tempfile.TemporaryDirectory(prefix="events-test-cluster-") as home:
            cluster = LocalCluster(Path(home) / "cluster", cache_dir(), port=free_port())
            try:
                cluster.start(timeout_s=180)
            except BrokerError as exc:
                cluster.stop()
                if attempt == 2 or "Address already in use" not in str(exc):
                    raise
                continue
            try:
                yield cluster
            finally:
                cluster.stop()
            return


def set_topic_config(admin: AdminClient, topic: str, config: dict[str, str]) -> None:
    """Sets ``config`` on ``topic`` as someone would by hand (the other keys left alone), and waits
    until the broker reads every value back."""
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()])
    admin.incremental_alter_configs([resource])[resource].result(30)
    wait_until(lambda: all(topic_config(admin, topic).get(k) == v for k, v in config.items()), 30,
               f"{topic} to read {config}")
