"""`events broker --brokers 3` on the local cluster: status and logs per node, the topics file applied as
written (3 replicas, min.insync.replicas 2, no unclean leader election), a node stopped and started
again, and the whole cluster's data kept across a stop and a start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from dify_events.consumers.demo.cluster import find_cluster
from dify_events.schemas.settings import Settings
from dify_events.schemas.topics import admin_client, list_topics, load_topics_file
from tests.conftest import unique
from tests.faults.cluster import fully_replicated
from tests.faults.harness import wait_for

EVENTS = [sys.executable, "-m", "dify_events.consumers.cli"]


def events(cluster, *args: str, check: bool = True, prefix: str = "events") -> subprocess.CompletedProcess:
    """``events`` with the cluster's home as EVENTS_HOME (as `events broker start --brokers 3` made it)."""
    env = {**os.environ, "EVENTS_HOME": str(cluster.home.parent), "EVENTS_TOPIC_PREFIX": prefix}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    result = subprocess.run([*EVENTS, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.cluster_quick
def test_status_logs_and_the_topics_file_applied_as_written(three_brokers, cluster_env, monkeypatch):
    # When the operator looks at the cluster
    status = events(three_brokers, "broker", "status").stdout
    # Then every node is listed running, one of them the active controller
    assert status.count("running") == 3 and status.count("active") == 1, status
    assert three_brokers.home.name in status
    assert "INFO" in events(three_brokers, "broker", "logs", "--node", "2", "-n", "5").stdout
    unknown = events(three_brokers, "broker", "logs", "--node", "7", check=False)
    assert unknown.returncode != 0 and "has no node 7 (its nodes: 1, 2, 3)" in unknown.stderr + unknown.stdout

    # And the demo (as every command) finds the running cluster when no other is configured
    monkeypatch.setenv("EVENTS_HOME", str(three_brokers.home.parent))
    found = find_cluster(Settings(bootstrap_servers=None))
    assert (found.bootstrap, found.what) == (three_brokers.bootstrap, "the local three-broker cluster")

    # When the topics are applied, found through the running cluster (no KAFKA_BOOTSTRAP_SERVERS)
    applied = events(three_brokers, "topics", "apply", "--no-groups", prefix=cluster_env)
    # Then nothing is lowered: every topic has 3 replicas, min.insync.replicas 2, no unclean election
    assert "lowered" not in applied.stdout + applied.stderr
    declared = load_topics_file().defaults
    topics = list_topics(admin_client(), cluster_env)
    assert len(topics) == 5
    for topic in topics:
        assert topic.replication_factor == declared.replication_factor == 3
        assert topic.config["min.insync.replicas"] == "2"
        assert topic.config["unclean.leader.election.enable"] == "false"


def test_a_stopped_node_rejoins_and_the_cluster_keeps_its_data_across_a_restart(three_brokers, cluster_env):
    admin = admin_client()
    topic = unique("kept")
    admin.create_topics([NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})])[topic].result(60)
    # When node 3 is stopped
    assert "node 3 stopped" in events(three_brokers, "broker", "stop", "--node", "3").stdout
    status = events(three_brokers, "broker", "status").stdout
    assert status.count("running") == 2 and "stopped" in status
    # Then two in sync replicas still take acks=all writes
    producer = Producer({"bootstrap.servers": three_brokers.bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(60):
        producer.produce(topic, key=str(i).encode(), value=b"v", partition=i % 3)
    assert producer.flush(60) == 0
    # And when it starts again, it catches up: every replica in sync
    events(three_brokers, "broker", "start", "--node", "3")
    wait_for(lambda: fully_replicated(admin, [topic]), 120, "node 3 back in sync")
    group = unique("keeper")
    consumer = Consumer({"bootstrap.servers": three_brokers.bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, p, 10 + p) for p in range(3)], asynchronous=False)
    consumer.close()

    # When the whole cluster is stopped and started again
    assert "the cluster stopped" in events(three_brokers, "broker", "stop").stdout
    assert events(three_brokers, "broker", "status", check=False).returncode == 3
    events(three_brokers, "broker", "start", "--brokers", "3")
    # Then the topic, its messages and the committed offsets are all still there, fully replicated
    wait_for(lambda: fully_replicated(admin, [topic]), 120, "every replica in sync after the restart")
    consumer = Consumer({"bootstrap.servers": three_brokers.bootstrap, "group.id": group})
    highs = [consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1] for p in range(3)]
    committed = [tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in range(3)], 30)]
    consumer.close()
    assert sum(highs) == 60 and committed == [10, 11, 12]
