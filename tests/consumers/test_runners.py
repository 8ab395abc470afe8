"""Which runner runs a group, and a shared group on a confluent-kafka without share consumers."""

from __future__ import annotations

import confluent_kafka
import pytest

from dify_events.consumers.errors import GroupDefinitionError
from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.runner import GroupRunner
from dify_events.consumers.runners import runner_class


def test_an_ordered_group_runs_on_the_group_runner_and_a_shared_one_on_the_share_runner():
    from dify_events.consumers.share_runner import ShareGroupRunner

    assert runner_class(ConsumerGroup("ordered")) is GroupRunner
    assert runner_class(ConsumerGroup("shared", delivery="shared")) is ShareGroupRunner


def test_a_shared_group_on_a_confluent_kafka_without_share_consumers_is_refused_in_one_line(monkeypatch):
    # Given a confluent-kafka older than 2.15.0, which has no ShareConsumer (the project allows 2.10.0)
    monkeypatch.delattr(confluent_kafka, "ShareConsumer")

    # An ordered group still runs, and a shared one is refused saying what to install
    assert runner_class(ConsumerGroup("ordered")) is GroupRunner
    with pytest.raises(GroupDefinitionError) as refused:
        runner_class(ConsumerGroup("indexer", delivery="shared"))
    message = str(refused.value)
    assert "\n" not in message and "group indexer is shared" in message and "confluent-kafka>=2.15" in message
