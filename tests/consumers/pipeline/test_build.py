"""Composing a group's pipeline: each step makes what it uses, and nothing is left open when one cannot be made."""

from __future__ import annotations

import pytest

from dify_events.consumers.breaker import OutageBreaker
from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.pipeline import build
from dify_events.consumers.pipeline.step import Resources, Step
from dify_events.schemas.codec import AvroCodec
from dify_events.schemas.events import AppWasCreated

closed: list[str] = []


class Holds(Step):
    """A step that holds something until it is closed."""

    def close(self) -> None:
        closed.append(type(self).__name__)


class HoldsToo(Holds):
    pass


class CannotBeMade(Step):
    def __init__(self, resources: Resources):
        super().__init__(resources)
        raise ConnectionError("the database refused the connection")


def test_a_step_that_cannot_be_made_closes_the_steps_made_before_it():
    # Given a pipeline whose third step cannot be made (its database refuses it)
    closed.clear()
    group = ConsumerGroup("g", pipeline=[Holds, HoldsToo, CannotBeMade])
    group.handler(AppWasCreated)(lambda event, ctx: None)
    resources = Resources(group=group, prefix="p", codec=AvroCodec(), breaker=OutageBreaker(group.name))
    # When the pipeline is built, Then the error is the step's
    with pytest.raises(ConnectionError, match="refused"):
        build(resources, group.pipeline)
    # And the steps made before it are closed, the last made first
    assert closed == ["HoldsToo", "Holds"]
