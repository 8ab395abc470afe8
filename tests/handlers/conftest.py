from collections.abc import Callable, Iterator

import pytest

from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.testing import GroupHarness
from tests.domain.fixtures import add, db, engine, handle  # noqa: F401 - fixtures


@pytest.fixture
def harness(database_url, engine) -> Iterator[Callable[[ConsumerGroup], GroupHarness]]:  # noqa: F811 - the fixture
    """``harness(group)``: the group's real pipeline on the test's database (the domain's tables
    created first, ``engine``), without Kafka (``consumers.testing``)."""
    opened: list[GroupHarness] = []

    def open_harness(group: ConsumerGroup) -> GroupHarness:
        opened.append(GroupHarness(group, database_url))
        return opened[-1]

    yield open_harness
    for harness in opened:
        harness.close()
