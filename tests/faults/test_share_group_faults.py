"""A shared group (a Kafka share group) through a broker restart: its members keep going once the
broker is back, records acquired before the stop come again, and each event has its effect once.
A broker of this test alone (``own_broker``); the SIGKILLed member is in
``tests/consumers/test_share_runner.py``."""

from __future__ import annotations

import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from dify_events.schemas.topics import await_served
from tests.consumers import sample_handlers
from tests.consumers.support import app_event
from tests.consumers.test_share_runner import SharedMembers, processed, publish_one_by_one
from tests.faults.harness import QUIET

DOWN_S = 6.0


def test_a_shared_groups_members_survive_a_broker_restart_losing_and_doubling_nothing(kafka_env, own_broker, tmp_path):
    # Given two members of the registered shared group on a broker of this test's own, and 80 slow events
    bootstrap = own_broker.status().bootstrap
    database_url = f"sqlite:///{tmp_path / 'effects.db'}"
    sample_handlers.create_tables(database_url)
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": QUIET})
    topic = f"{kafka_env}.app"
    next(iter(admin.create_topics([NewTopic(topic, 2, 1)]).values())).result(30)
    await_served(admin, {topic: 2})
    events = [app_event(f"app-{i % 10}", i) for i in range(80)]
    with SharedMembers(database_url, 2, KAFKA_BOOTSTRAP_SERVERS=bootstrap) as members:
        publish_one_by_one(Producer({"bootstrap.servers": bootstrap, "logger": QUIET}), topic, events)
        members.wait_handled(10, 90)
        # When the broker stops mid-stream and starts again a few seconds later
        own_broker.stop()
        assert members.handled() < 80, "the stream ended before the broker stopped"
        time.sleep(DOWN_S)  # the outage itself, not a wait for a condition
        own_broker.start(timeout_s=120)
        # Then the members handle every event
        members.wait_handled(80, 180)
    # And each event had its effect once and was claimed once
    ids = sorted(e.event_id for e in events)
    assert sorted(e[0] for e in sample_handlers.effects(database_url)) == ids
    assert processed(database_url, "sample-shared") == ids
