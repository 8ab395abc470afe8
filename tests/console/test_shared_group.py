"""A shared group (a Kafka share group) in ``events console``: it commits no offsets and the Python
client can neither describe it nor read its lag, so the console says so instead of showing every
record its topics hold as lag, or the group as dead."""

from __future__ import annotations

from confluent_kafka import Producer

from dify_events.consumers.console.app import create_app
from dify_events.consumers.console.sampler import Sampler
from dify_events.consumers.console.state import ConsoleOptions
from dify_events.consumers.group import ConsumerGroup
from dify_events.schemas.events import AppWasCreated
from dify_events.schemas.settings import get_settings
from tests.consumers.support import app_event, publish
from tests.support.waiting import wait_until


def test_a_shared_groups_lag_and_members_are_not_shown_as_a_consumer_groups(kafka_env, topic_factory, group_topics):
    # Given a shared group and an ordered one over a topic holding 4 events, neither running
    topic = topic_factory(f"{kafka_env}.app")
    shared, ordered = ConsumerGroup("console-shared", delivery="shared"), ConsumerGroup("console-ordered")
    for group in (shared, ordered):
        group.handler(AppWasCreated)(lambda event, ctx: None)
        group_topics(group.name)
    publish(Producer({"bootstrap.servers": get_settings().bootstrap()}), topic,
            [app_event(f"app-{n}", n) for n in range(4)])
    # When the console measures them
    sampler = Sampler(get_settings(), [shared, ordered], interval_s=60, window_s=600).start()
    try:
        sample = wait_until(sampler.latest, 60, "the console's first measurement")
        # Then the shared group's figures say what they are: what its topics hold, no consumer group state
        assert sample.lag["console-shared"].shared and sample.lag["console-shared"].lag == 4
        assert sample.members["console-shared"] == ("shared", [])
        assert not sample.lag["console-ordered"].shared and sample.members["console-ordered"][0] == "DEAD"
        assert sampler.lag_series("console-shared") == []
        # And its pages show no lag figure for it, and where Kafka's is
        client = create_app(get_settings(), [shared, ordered], ConsoleOptions(), sampler).test_client()
        page = client.get("/").get_data(as_text=True)
        shared_row = page.split('data-group="console-shared"')[1].split("</tr>")[0]
        assert ">shared</span>" in shared_row and "kafka-share-groups --describe" in shared_row
        one = client.get("/groups/console-shared").get_data(as_text=True)
        assert "share group" in one and f"kafka-share-groups --describe --group {kafka_env}.console-shared" in one
        assert "cannot be listed with the Python client" in one
    finally:
        sampler.stop()
