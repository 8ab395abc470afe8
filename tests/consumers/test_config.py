"""The consumer's librdkafka configuration, classic and KIP-848."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Consumer, ShareConsumer

from dify_events.consumers.config import consumer_config, share_consumer_config
from dify_events.consumers.errors import ConsumerError
from dify_events.schemas.settings import Settings


def settings(**kafka) -> Settings:
    return Settings(bootstrap_servers="127.0.0.1:9092", topic_prefix="env1", kafka=kafka)


def test_offsets_are_stored_by_the_runtime_and_committed_in_the_background():
    conf = consumer_config(settings(), "indexer")
    assert conf["group.id"] == "env1.indexer"
    assert conf["enable.auto.commit"] is True and conf["enable.auto.offset.store"] is False
    assert conf["partition.assignment.strategy"] == "range"


def test_two_members_split_the_domain_topic_not_just_the_retry_topic(kafka_bootstrap, topic_factory):
    """A group reads its domain topic and its retry topic; a second member must take half of the
    domain topic's partitions, or scaling out adds nothing."""
    # Given a 6-partition domain topic and a 6-partition retry topic, and two members of one group
    domain, retry = topic_factory(partitions=6), topic_factory(partitions=6)
    conf = consumer_config(Settings(bootstrap_servers=kafka_bootstrap, topic_prefix="split"), f"g-{domain}")
    conf["logger"] = logging.getLogger("tests.quiet")
    first, second = Consumer(conf), Consumer(conf)
    members = [first, second]

    def poll_until(condition):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not condition():
            for member in members:
                member.poll(0.1)

    # When the first member holds everything and then a second one joins
    first.subscribe([domain, retry])
    poll_until(lambda: len(first.assignment()) == 12)
    second.subscribe([domain, retry])
    poll_until(lambda: all(len(m.assignment()) == 6 for m in members))

    # Then each holds three partitions of each topic
    try:
        for member in members:
            held = [tp.topic for tp in member.assignment()]
            assert held.count(domain) == 3 and held.count(retry) == 3, held
    finally:
        for member in members:
            member.close()


def test_the_runtime_refuses_settings_that_break_its_offset_handling():
    with pytest.raises(ConsumerError, match="enable.auto.offset.store"):
        consumer_config(settings(**{"enable.auto.offset.store": "true"}), "g")


def test_kip848_leaves_broker_side_settings_out_and_refuses_them_when_given():
    # Given group.protocol=consumer through the librdkafka passthrough
    conf = consumer_config(settings(**{"group.protocol": "consumer"}), "g")
    # Then the settings the broker owns are not set client-side
    for name in ("partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"):
        assert name not in conf
    # And setting one is refused with the reason
    with pytest.raises(ConsumerError, match="session.timeout.ms cannot be set with group.protocol=consumer"):
        consumer_config(settings(**{"group.protocol": "consumer", "session.timeout.ms": "10000"}), "g")


def test_producer_properties_of_the_shared_settings_are_left_out():
    conf = consumer_config(settings(**{"linger.ms": "20", "sasl.mechanism": "PLAIN"}), "g")
    assert "linger.ms" not in conf and conf["sasl.mechanism"] == "PLAIN"


def test_a_share_consumer_takes_the_settings_it_can_and_leaves_out_with_a_warning_what_it_refuses(caplog):
    # Given settings written for ordered groups (an offset reset, a session timeout, the KIP-848 protocol)
    mixed = settings(**{"auto.offset.reset": "latest", "session.timeout.ms": "30000", "group.protocol": "consumer",
                        "client.rack": "rack-1", "acks": "all"})
    # When a shared group's poller is configured from them
    with caplog.at_level(logging.WARNING, logger="consumers.config"):
        conf = share_consumer_config(mixed, "indexer", 2)
    # Then what a share consumer refuses is left out and named once, the rest (not the producer's) kept
    assert not {"auto.offset.reset", "session.timeout.ms", "group.protocol", "acks"} & set(conf)
    assert conf["client.rack"] == "rack-1" and conf["group.id"] == "env1.indexer"
    assert conf["client.id"].endswith("-p2")
    assert conf["share.acknowledgement.mode"] == "explicit" and conf["max.poll.records"] == 1
    assert [r.getMessage() for r in caplog.records if "left out" in r.getMessage()] == [
        "group indexer is shared: auto.offset.reset, group.protocol, session.timeout.ms do(es) not apply to a share "
        "consumer and are left out (a share group's broker-side configs decide them)"]
    # And librdkafka takes the result (it refuses an inapplicable property when the client is made)
    ShareConsumer({**conf, "logger": logging.getLogger("tests.quiet")}).close()
