"""``StopEvent``: a ``threading.Event`` that a signal handler may set.

Python runs a signal handler on the main thread between two bytecodes, possibly while that thread is
inside ``threading.Event.wait()`` and holds the event's lock. A handler calling ``Event.set()`` then
waits for a lock its own thread holds, forever: ``events outbox relay`` once ignored SIGTERM so, its
main thread stuck in ``Condition.__enter__`` under ``Event.wait``. ``StopEvent``'s lock is re-entrant,
so the handler's ``set()`` goes through. A ``set()`` that lands on the waiting thread between its
check of the flag and its wait wakes no one; waits look at the flag again every ``RECHECK_S``.
"""

from __future__ import annotations

import threading
import time

RECHECK_S = 0.5


class StopEvent:
    """``is_set()``, ``set()`` and ``wait(timeout)`` as ``threading.Event``'s, safe in a signal handler."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until set or ``timeout`` seconds passed; returns whether it is set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._flag:
                left = RECHECK_S if deadline is None else min(deadline - time.monotonic(), RECHECK_S)
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._flag
