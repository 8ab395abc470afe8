"""Which runner runs a group, and a shared group on a confluent-kafka without share consumers."""

from __future__ import annotations

import confluent_kafka
import pytest

from dify_events.consumers.errors import GroupDefinitionError
from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.runner import GroupRunner
from dify_events.consumers.runners import runner_class
from dify_events.schemas.events import AppWasCreated


def test_an_ordered_group_runs_on_the_group_runner_and_a_shared_one_on_the_share_runner():
    from dify_events.consumers.share_runner import ShareGroupRunner

    assert runner_class(ConsumerGroup("ordered")) is GroupRunner
    assert runner_class(ConsumerGroup("shared", delivery="shared")) is ShareGroupRunner


def test_each_runner_refuses_a_group_of_the_other_delivery():
    from dify_events.consumers.share_runner import ShareGroupRunner

    # Given an ordered group and a shared one, each with a handler
    ordered, shared = ConsumerGroup("ordered"), ConsumerGroup("shared", delivery="shared")
    for group in (ordered, shared):
        group.handler(AppWasCreated)(lambda event, ctx: None)

    # Then a runner given the other kind refuses it, saying which runner to take
    with pytest.raises(ValueError, match="delivery='shared', which GroupRunner does not run: .*runner_class"):
        GroupRunner(shared, health_port=0)
    with pytest.raises(ValueError, match="delivery='ordered', which ShareGroupRunner does not run"):
        ShareGroupRunner(ordered, health_port=0)
    # and the share runner, whose pollers make their own consumers, refuses a consumer factory
    with pytest.raises(ValueError, match="consumer_factory is for GroupRunner"):
        ShareGroupRunner(shared, health_port=0, consumer_factory=confluent_kafka.Consumer)


def test_a_shared_group_on_a_confluent_kafka_without_share_consumers_is_refused_in_one_line(monkeypatch):
    # Given a confluent-kafka older than 2.15.0, which has no ShareConsumer (the project allows 2.10.0)
    monkeypatch.delattr(confluent_kafka, "ShareConsumer")

    # An ordered group still runs, and a shared one is refused saying what to install
    assert runner_class(ConsumerGroup("ordered")) is GroupRunner
    with pytest.raises(GroupDefinitionError) as refused:
        runner_class(ConsumerGroup("indexer", delivery="shared"))
    message = str(refused.value)
    assert "\n" not in message and "group indexer is shared" in message and "confluent-kafka>=2.15" in message
