"""The consumer's librdkafka configuration, classic and KIP-848."""

from __future__ import annotations

import pytest

from consumers.config import consumer_config
from consumers.errors import ConsumerError
from schemas.settings import Settings


def settings(**kafka) -> Settings:
    return Settings(bootstrap_servers="127.0.0.1:9092", topic_prefix="env1", kafka=kafka)


def test_offsets_are_stored_by_the_runtime_and_committed_in_the_background():
    conf = consumer_config(settings(), "indexer")
    assert conf["group.id"] == "env1.indexer"
    assert conf["enable.auto.commit"] is True and conf["enable.auto.offset.store"] is False
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"


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
