"""Waiting on a condition with a deadline, never for a fixed time."""

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout_s: float = 60.0, what: str = "the condition", *,
               interval_s: float = 0.05) -> object:
    """Polls ``condition`` every ``interval_s`` until it is true and returns its value; fails after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)
    return value
