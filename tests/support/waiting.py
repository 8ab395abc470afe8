"""Waiting on a condition with a deadline, never for a fixed time."""

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout_s: float = 60.0, what: str = "the condition") -> object:
    """Polls ``condition`` every 50 ms until it is true and returns its value; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)
    return value
