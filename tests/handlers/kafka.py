"""Running one of the seed's groups against the real broker, as its pod would."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.runner import GroupRunner
from dify_events.schemas.settings import Settings
from tests.support.running import running as run_in_thread
from tests.support.waiting import wait_until  # noqa: F401 - re-exported to this package's tests


@contextlib.contextmanager
def running(group: ConsumerGroup, database_url: str, **options) -> Iterator[GroupRunner]:
    """Runs the group (its idempotency table and handler sessions on ``database_url``) in a thread
    until the block ends, then stops it: drain, commit, leave."""
    with run_in_thread(group, settings=Settings(database_url=database_url), **{"concurrency": 4, **options}) as runner:
        yield runner


def settled(runner: GroupRunner) -> int:
    """Messages the runner finished: handled, skipped as duplicates, or dead-lettered."""
    stats = runner.stats()
    return stats["handled"] + stats["duplicates"] + stats["dead_lettered"]
