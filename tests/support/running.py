"""Running a consumer group's runtime in a thread of the test process, against the real broker."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.runner import GroupRunner
from dify_events.consumers.runners import runner_class
from tests.support.waiting import wait_until


@contextlib.contextmanager
def running(group: ConsumerGroup, **options) -> Iterator[GroupRunner]:
    """Runs the group in a thread (with the runner of its delivery) until the block ends (then stops
    it and checks it stopped)."""
    options.setdefault("health_port", 0)
    runner = runner_class(group)(group, **options)
    errors: list[BaseException] = []

    def target():
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"runner-{group.name}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: runner.joined or errors or runner.finished.is_set(), 60, f"{group.name} to join")
        if errors:
            raise errors[0]
        yield runner
    finally:
        runner.stop()
        thread.join(60)
        assert not thread.is_alive(), "the runner did not stop"
    if errors:
        raise errors[0]
