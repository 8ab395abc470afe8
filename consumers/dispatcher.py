"""Runs messages on a pool of worker threads, never two with the same key at the same time.

Each key has its own FIFO queue. A key with queued work and no worker is *ready*; an idle worker
takes the ready key that has waited longest, runs that key's next job, and puts the key back at
the end of the ready line if it has more. Per-key order holds, a slow key occupies one worker and
leaves the others to the remaining keys, and work proceeds roughly in fetch order across keys, so
each partition's committable position keeps up with what is done (taking a key's whole queue at
once would finish one key's backlog before the next key's first message, and hold the commits
back). Submitting a batch takes the lock once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

log = logging.getLogger(__name__)


class KeyedDispatcher:
    """``submit([(key, job), ...])``; ``process(job)`` runs on a worker and must not raise."""

    def __init__(self, process: Callable[[Any], None], *, workers: int, name: str = "events-worker"):
        if workers < 1:
            raise ValueError(f"a dispatcher needs at least one worker, not {workers}")
        self._process = process
        self._workers = workers
        self._name = name
        lock = threading.Lock()
        self._cond = threading.Condition(lock)     # workers wait here for ready keys
        self._drained = threading.Condition(lock)  # wait_idle() / wait_below() wait here
        self._queues: dict[Hashable, deque] = {}  # keys queued or running
        self._ready: deque[Hashable] = deque()     # keys with queued jobs and no worker
        self._pending = 0                          # jobs submitted and not yet finished
        self._running = 0                          # workers inside process()
        self._stopping = False
        self._low_water = 0                        # wait_below() is waiting for pending < this
        self._threads: list[threading.Thread] = []

    # -- owner's side -------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self._workers):
            # daemon: a handler stuck past the drain timeout must not keep the process alive
            thread = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, items: Iterable[tuple[Hashable, Any]]) -> int:
        """Queues jobs behind earlier jobs of the same key; returns how many were queued."""
        added = 0
        woken = 0
        with self._cond:
            queues = self._queues
            for key, job in items:
                queue = queues.get(key)
                if queue is None:
                    queues[key] = deque((job,))
                    self._ready.append(key)
                    woken += 1
                else:
                    queue.append(job)
                added += 1
            self._pending += added
            if woken:
                self._cond.notify(woken)
        return added

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def wait_below(self, count: int, timeout_s: float) -> bool:
        """Waits until fewer than ``count`` jobs are pending; False if the time ran out first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._low_water = count
            try:
                while self._pending >= count:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._drained.wait(min(left, 0.05))
            finally:
                self._low_water = 0
        return True

    def wait_idle(self, timeout_s: float) -> bool:
        """Waits until every submitted job has finished; False if the time ran out first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(min(left, 0.05))
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Lets queued jobs run, then ends the workers (waiting at most ``timeout_s``)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- workers' side ------------------------------------------------------------------------
    def _work(self) -> None:
        cond = self._cond
        process = self._process
        ready = self._ready
        queues = self._queues
        while True:
            with cond:
                while not ready:
                    if self._stopping:
                        return
                    cond.wait()
                key = ready.popleft()
                queue = queues[key]
                job = queue.popleft()
                self._running += 1
            try:
                process(job)
            except BaseException:  # noqa: BLE001 - the pipeline catches; this is the last net
                log.exception("a job escaped the pipeline; its offset will not be committed")
            with cond:
                self._running -= 1
                self._pending -= 1
                if queue:
                    ready.append(key)  # more to do: back of the line, behind keys that waited
                    cond.notify()
                else:
                    del queues[key]
                if not self._pending or self._pending == self._low_water - 1:
                    self._drained.notify_all()
