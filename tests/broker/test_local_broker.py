"""`events broker`: the local KRaft broker started from Kafka's own jars."""

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import asdict

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from dify_events.consumers.broker import KAFKA_VERSION, BrokerError, BrokerState, LocalBroker
from dify_events.consumers.broker.local import free_port
from dify_events.schemas.settings import cache_dir
from dify_events.schemas.topics import await_served
from tests.support.waiting import wait_until

EVENTS = [sys.executable, "-m", "dify_events.consumers.cli"]


def events(home, *args, check=True):
    env = {**os.environ, "EVENTS_HOME": str(home)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    result = subprocess.run([*EVENTS, "broker", *args], capture_output=True, text=True, env=env, timeout=180)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.kafka
def test_stop_and_start_keep_topics_and_committed_offsets(tmp_path):
    # Given a broker started by the command line, holding a topic and a group's committed offset
    port = free_port()
    started = events(tmp_path, "start", "--port", str(port))
    bootstrap = f"127.0.0.1:{port}"
    assert bootstrap in started.stdout
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("kept", 3, 1)])["kept"].result(30)
    await_served(admin, {"kept": 3})
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(100):
        producer.produce("kept", key=str(i).encode(), value=b"v", partition=i % 3)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "keeper"})
    committed = [TopicPartition("kept", p, 20 + p) for p in range(3)]
    consumer.commit(offsets=committed, asynchronous=False)
    consumer.close()
    status = events(tmp_path, "status")
    assert KAFKA_VERSION in status.stdout and str(tmp_path) in "".join(status.stdout.split())  # a long path folds

    # When it is stopped and started again
    assert "stopped" in events(tmp_path, "stop").stdout
    assert events(tmp_path, "status", check=False).returncode == 3
    events(tmp_path, "start", "--port", str(port))

    # Then the topic, its messages and the committed offsets are all still there
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        assert len(admin.list_topics(timeout=10).topics["kept"].partitions) == 3
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "keeper"})
        assert ([tp.offset for tp in consumer.committed([TopicPartition("kept", p) for p in range(3)], 10)]
                == [20, 21, 22])
        highs = [consumer.get_watermark_offsets(TopicPartition("kept", p), 10)[1] for p in range(3)]
        assert sum(highs) == 100
        consumer.close()
        assert "INFO" in events(tmp_path, "logs", "-n", "20").stdout
    finally:
        events(tmp_path, "stop")


@pytest.mark.kafka
def test_a_taken_port_moves_to_the_next_free_one_with_a_message(tmp_path):
    # Given the wanted port is taken by another program
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", free_port()))
        squatter.listen()
        taken = squatter.getsockname()[1]
        messages = []
        broker = LocalBroker(tmp_path, cache_dir(), port=taken)
        # When the broker starts
        state = broker.start(on_progress=messages.append)
        try:
            # Then it listens on another port and says so
            assert state.port != taken
            assert any(f"port {taken} is taken; using {state.port}" in m for m in messages)
        finally:
            broker.stop()


@pytest.mark.kafka
def test_a_port_taken_between_its_choice_and_the_brokers_bind_is_chosen_again(tmp_path, monkeypatch):
    # Given a controller port that another process binds after it was chosen (free_port's check and
    # the JVM's bind are seconds apart), then a free one
    from dify_events.consumers.broker import local

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", free_port()))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(local, "free_port", lambda: next(ports, None) or free_port())
        messages: list[str] = []
        broker = LocalBroker(tmp_path, cache_dir(), port=free_port())
        # When the broker starts
        state = broker.start(on_progress=messages.append)
        try:
            # Then its first launch died on the taken port, and the next chose another and came up
            assert state.controller_port != taken
            assert any("bound a port chosen for the broker before it did" in m for m in messages), messages
            assert "Address already in use" in (tmp_path / "server.log").read_text()
        finally:
            broker.stop()


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch):
    # Given a PATH without java
    monkeypatch.setenv("PATH", str(tmp_path))
    # When the broker starts, then the error says what to install
    with pytest.raises(BrokerError, match="`java` was not found on PATH. Install a JDK"):
        LocalBroker(tmp_path / "home", cache_dir()).start()


def test_missing_maven_is_a_clear_error_when_jars_are_not_cached(tmp_path, monkeypatch):
    # Given java but no mvn on the PATH, and an empty jar cache
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(subprocess.run(["sh", "-c", "command -v java"], capture_output=True,
                                                 text=True).stdout.strip())
    monkeypatch.setenv("PATH", str(bin_dir))
    # When the broker starts, then the error names Maven
    with pytest.raises(BrokerError, match="`mvn` was not found on PATH. Install Apache Maven"):
        LocalBroker(tmp_path / "home", tmp_path / "empty-cache").start()


@pytest.mark.kafka
def test_a_broker_that_does_not_come_up_in_time_shows_its_log(tmp_path):
    # Given a deadline far too short for a JVM to start
    broker = LocalBroker(tmp_path, cache_dir(), port=free_port())
    # When it starts, then the error gives the time and the end of the log, and nothing is left running
    with pytest.raises(BrokerError, match=r"did not answer within 0 s; the end of .*server.log"):
        broker.start(timeout_s=0.01)
    assert broker.status() is None


def test_status_of_a_stopped_broker_says_how_to_start_it(tmp_path):
    result = events(tmp_path, "status", check=False)
    assert result.returncode == 3
    assert "not running" in result.stdout and "events broker start" in result.stdout


def test_cluster_ids_never_start_with_a_dash(tmp_path):
    # Given many new broker homes (a base64url id starts with "-" once in 64)
    ids = [LocalBroker(tmp_path / str(i), cache_dir())._cluster_id() for i in range(400)]
    # Then none would be read as an option by Kafka's storage tool, and each home keeps its own
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == 400


@pytest.mark.kafka
def test_a_home_formatted_by_an_older_kafka_is_given_share_groups_at_its_next_start(tmp_path):
    # Given a home formatted at Kafka 4.1's feature levels (no share.version), as 4.1.1 left it
    broker = LocalBroker(tmp_path, cache_dir(), port=free_port())
    controller_port = free_port()
    properties = broker._write_properties(broker.requested_port, controller_port)
    formatted = subprocess.run([*broker._jvm(), "kafka.tools.StorageTool", "format", "-t", broker._cluster_id(),
                                "-c", str(properties), "--release-version", "4.1"], capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    old = BrokerState(pid=0, port=broker.requested_port, controller_port=controller_port, version="4.1.1",
                      data_dir=str(broker.data_dir), cluster_id=broker._cluster_id())
    broker.state_file.write_text(json.dumps(asdict(old)))
    # When this Kafka starts it
    progress: list[str] = []
    broker.start(on_progress=progress.append)
    try:
        # Then it upgrades the features: the controller finalizes share.version 2 (share groups and their
        # dead-letter topics)
        assert any("upgrading the cluster's features from Kafka 4.1.1's" in m for m in progress)
        wait_until(lambda: re.search(r"FinalizedFeatures.*share\.version=2", broker.log_file.read_text()), 30,
                   "share.version 2 in the broker's log")
    finally:
        broker.stop()
