"""Running one of the seed's groups against the real broker, as its pod would."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from consumers.group import ConsumerGroup
from consumers.runner import GroupRunner
from schemas.settings import Settings
from tests.support.waiting import wait_until  # noqa: F401 - re-exported to this package's tests




@contextlib.contextmanager
def running(group: ConsumerGroup, database_url: str, **options) -> Iterator[GroupRunner]:
    """Runs the group (its idempotency table and handler sessions on ``database_url``) in a thread
    until the block ends, then stops it: drain, commit, leave."""
    runner = GroupRunner(group, settings=Settings(database_url=database_url), health_port=0,
                         **{"concurrency": 4, **options})
    failures: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            failures.append(exc)

    thread = threading.Thread(target=run, name=f"runner-{group.name}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: runner.joined or failures or runner.finished.is_set(), 60, f"{group.name} to join")
        yield runner
    finally:
        runner.stop()
        thread.join(60)
    assert not thread.is_alive(), f"{group.name} did not stop"
    if failures:
        raise failures[0]


def settled(runner: GroupRunner) -> int:
    """Messages the runner finished: handled, skipped as duplicates, or dead-lettered."""
    stats = runner.stats()
    return stats["handled"] + stats["duplicates"] + stats["dead_lettered"]
