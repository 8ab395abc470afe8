"""Declaring groups and handlers: options belong to pipeline steps; subscriptions follow the handlers."""

from __future__ import annotations

import pytest

from dify_events.consumers.errors import GroupDefinitionError
from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.pipeline import DeadLetters, Decode
from dify_events.schemas.events import AppWasCreated, DocumentWasDeleted, MessageWasCreated


def noop(event, ctx):
    pass


def test_a_group_subscribes_to_its_handlers_domain_topics_and_its_retry_topic():
    # Given a group with handlers of two domains
    group = ConsumerGroup("indexer")
    group.handler(AppWasCreated)(noop)
    group.handler(DocumentWasDeleted, max_attempts=2)(noop)
    # Then it subscribes to both domain topics and its retry topic, and dead-letters to its own topic
    assert group.topics("events") == ["events.app", "events.document", "events.retry.indexer"]
    assert group.dlq_topic("events") == "events.dlq.indexer"
    assert group.event_types == {"app_was_created", "document_was_deleted"}


def test_an_option_is_looked_up_on_the_handler_then_the_group_then_the_step():
    # Given a group default and a handler override
    group = ConsumerGroup("g", max_attempts=3)
    group.handler(AppWasCreated, max_retry_time_s=9)(noop)
    group.handler("message_was_created", max_attempts=7)(noop)
    app, message = group.handlers["app_was_created"], group.handlers["message_was_created"]
    # Then each option comes from the nearest place that sets it
    assert app.option("max_attempts") == 3 and message.option("max_attempts") == 7
    assert app.option("max_retry_time_s") == 9 and message.option("max_retry_time_s") == 300.0
    assert app.option("idempotent") is True and app.option("replay_safe") is True
    assert message.model is MessageWasCreated


def test_an_unknown_option_is_refused_with_a_hint():
    group = ConsumerGroup("g")
    # When a handler is declared with a misspelt option
    with pytest.raises(GroupDefinitionError) as error:
        group.handler(AppWasCreated, max_attempt=3)(noop)
    # Then the error names the option, suggests the right one, and says options belong to steps
    assert "'max_attempt'" in str(error.value) and "did you mean 'max_attempts'" in str(error.value)
    assert "forget to add the step" in str(error.value)


def test_an_option_of_a_step_missing_from_the_pipeline_is_refused():
    # Given a group whose pipeline has no Retries step
    # Then a retry option is unknown to it, at the group and at a handler
    with pytest.raises(GroupDefinitionError, match="max_attempts"):
        ConsumerGroup("g", pipeline=[DeadLetters, Decode], max_attempts=3)
    group = ConsumerGroup("g", pipeline=[DeadLetters, Decode])
    with pytest.raises(GroupDefinitionError, match="time_limit_s"):
        group.handler(AppWasCreated, time_limit_s=3)(noop)
    # But the group's own options are there whatever its pipeline (the runner reads them at start)
    assert group.option("outage_threshold") == 3 and group.option("replay_safe") is True


def test_an_outage_option_is_the_groups_and_refused_on_a_handler():
    # Given a group that pauses after 5 failures in a row
    group = ConsumerGroup("g", outage_threshold=5)
    assert group.option("outage_threshold") == 5
    # Then a handler cannot set it (the runner reads the group's alone: it would do nothing)
    with pytest.raises(GroupDefinitionError, match=r"outage_threshold belong\(s\) to the group.*ConsumerGroup\('g'"):
        group.handler(AppWasCreated, outage_threshold=2)(noop)


def test_one_handler_per_event_type_and_valid_group_names():
    group = ConsumerGroup("g")
    group.handler(AppWasCreated)(noop)
    with pytest.raises(GroupDefinitionError, match="already has a handler for app_was_created"):
        group.handler(AppWasCreated)(noop)
    with pytest.raises(GroupDefinitionError, match="not valid"):
        ConsumerGroup("Has Spaces")


def test_a_group_is_ordered_unless_declared_shared_and_a_wrong_delivery_is_refused_in_one_line():
    # Given a group of each delivery
    assert ConsumerGroup("g").delivery == "ordered"
    shared = ConsumerGroup("indexer", delivery="shared")
    # Then the shared one says so
    assert shared.delivery == "shared" and "delivery='shared'" in repr(shared)
    # And a delivery that is neither is refused, saying which ones exist
    with pytest.raises(GroupDefinitionError) as refused:
        ConsumerGroup("g", delivery="share")  # type: ignore[arg-type]
    assert str(refused.value).count("\n") == 0
    assert "delivery='share' is not valid" in str(refused.value) and "'shared'" in str(refused.value)
