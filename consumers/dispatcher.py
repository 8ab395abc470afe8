"""Runs messages on a pool of worker threads, never two with the same key at the same time.

Each key has its own FIFO queue. A key with queued work and no worker is *ready*; an idle worker
takes the ready key that has waited longest, runs that key's next job, and puts the key back at
the end of the ready line if it has more. Per-key order holds, a slow key occupies one worker and
leaves the others to the remaining keys, and work proceeds roughly in fetch order across keys, so
each partition's committable position keeps up with what is done (taking a key's whole queue at
once would finish one key's backlog before the next key's first message, and hold the commits
back). Submitting a batch takes the lock once.

Batched takes (``process_batch`` given and ``batch_max`` above 1): a worker takes the head of the
ready line, and the keys behind it up to its share of the line (``ceil(ready / workers)`` keys), and
from each a contiguous run of batchable jobs (``batchable(job)``), ``batch_max`` jobs at most in all.
It stops at a key whose next job is not batchable; when the first key's is not, or the take holds
one job, the job runs alone through ``process`` as above. Nothing waits for a batch to fill: a batch
is what is queued now, so batches grow only with the backlog. The worker holds every key of its batch
until ``process_batch(jobs)`` returns the jobs it did not finish; those go back to the head of their
key's queue in their order, ahead of anything queued meanwhile. ``process_batch`` must finish some
jobs or return the others made unbatchable, or they would be taken again as they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from math import ceil
from typing import Any

log = logging.getLogger("consumers.dispatcher")


class KeyedDispatcher:
    """``submit([(key, job), ...])``; ``process(job)`` and ``process_batch(jobs) -> jobs to put back``
    run on a worker and must not raise."""

    def __init__(self, process: Callable[[Any], None], *, workers: int, name: str = "events-worker",
                 process_batch: Callable[[list[Any]], list[Any]] | None = None, batch_max: int = 1,
                 batchable: Callable[[Any], bool] = lambda job: True):
        if workers < 1:
            raise ValueError(f"a dispatcher needs at least one worker, not {workers}")
        if batch_max < 1:
            raise ValueError(f"batch_max must be at least 1, not {batch_max}")
        self._process = process
        self._process_batch = process_batch
        self._batch_max = batch_max if process_batch is not None else 1
        self._batchable = batchable
        self._workers = workers
        self._name = name
        lock = threading.Lock()
        self._cond = threading.Condition(lock)     # workers wait here for ready keys
        self._drained = threading.Condition(lock)  # wait_idle() / wait_below() wait here
        self._queues: dict[Hashable, deque] = {}  # keys queued or running
        self._ready: deque[Hashable] = deque()     # keys with queued jobs and no worker
        self._pending = 0                          # jobs submitted and not yet finished
        self._running = 0                          # workers inside process()
        self._idle = 0                             # workers waiting for a ready key
        self._stopping = False
        self._low_water = 0                        # wait_below() is waiting for pending < this (0: nothing waits)
        self._threads: list[threading.Thread] = []
        self.batches = 0                           # batches run through process_batch (for tests and stats)

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

    def holds(self, key: Hashable) -> bool:
        """Has ``key`` jobs queued or running? Only the submitting thread adds keys: a False it reads stays
        so until it submits a job of that key."""
        return key in self._queues

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def wait_below(self, count: int, timeout_s: float) -> bool:
        """Waits until fewer than ``count`` jobs are pending; False if the time ran out first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            try:
                while self._pending >= count:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._low_water = count  # the job that finishes below it wakes this wait, and clears it
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
        batchable = self._batchable if self._batch_max > 1 else None
        done: tuple[Hashable, deque] | None = None  # the single job just run: finished with the next take
        while True:
            with cond:
                if done is not None:
                    self._finish(*done)
                    done = None
                while not ready:
                    if self._stopping:
                        return
                    self._idle += 1
                    cond.wait()
                    self._idle -= 1
                key = ready.popleft()
                queue = queues[key]
                if batchable is not None and batchable(queue[0]):
                    taken = self._take(key, queue)
                else:
                    taken = None
                    job = queue.popleft()
                self._running += 1
            if taken is not None:
                self._run_batch(taken)
                continue
            # one job: the common path, kept free of the batch's bookkeeping; one lock round trip a job
            try:
                process(job)
            except BaseException:  # noqa: BLE001 - the pipeline catches; this is the last net
                log.exception("a job escaped the pipeline; its offset will not be committed")
            done = (key, queue)

    def _finish(self, key: Hashable, queue: deque) -> None:
        """Under the lock: one job of ``key`` finished; the key goes back to the ready line if it has more.
        The worker takes the head of the line next, so another is woken only when more keys are ready."""
        self._running -= 1
        self._pending -= 1
        if queue:
            self._ready.append(key)  # more to do: back of the line, behind keys that waited
            if len(self._ready) > 1 and self._idle:  # (a Condition's notify() costs ~0.3 us even with no one to wake)
                self._cond.notify()
        else:
            del self._queues[key]
        if not self._pending or self._pending < self._low_water:
            self._low_water = 0  # woken once: the jobs that finish before the waiter runs again wake no one
            self._drained.notify_all()

    def _run_batch(self, taken: list[tuple[Hashable, list[Any]]]) -> None:
        batch = [job for _, jobs in taken for job in jobs]
        put_back: list[Any] = []
        try:
            if len(batch) == 1:
                self._process(batch[0])
            else:
                assert self._process_batch is not None  # only batched takes hold several jobs
                put_back = self._process_batch(batch)
        except BaseException:  # noqa: BLE001 - the pipeline catches; this is the last net
            log.exception("a job escaped the pipeline; its offset will not be committed")
        with self._cond:
            self._running -= 1
            self.batches += len(batch) > 1
            self._release(taken, put_back)

    def _take(self, key: Hashable, queue: deque) -> list[tuple[Hashable, list[Any]]]:
        """Under the lock, ``key`` just taken off the ready line and its next job batchable: the batch,
        ``[(key, [jobs in queue order]), ...]``, each of its keys taken off the ready line."""
        ready, queues, batchable = self._ready, self._queues, self._batchable
        room = self._batch_max
        keys_left = ceil((len(ready) + 1) / self._workers)
        taken: list[tuple[Hashable, list[Any]]] = []
        while True:
            jobs = []
            while queue and room and batchable(queue[0]):
                jobs.append(queue.popleft())
                room -= 1
            taken.append((key, jobs))
            keys_left -= 1
            if not (room and keys_left and ready and batchable(queues[ready[0]][0])):
                return taken
            key = ready.popleft()
            queue = queues[key]

    def _release(self, taken: list[tuple[Hashable, list[Any]]], put_back: list[Any]) -> None:
        """Under the lock: puts ``put_back`` at the head of their keys' queues in order, counts the
        rest as finished, and hands the keys back (to the back of the ready line if they have more)."""
        back = {id(job) for job in put_back}
        finished = 0
        for key, jobs in taken:
            queue = self._queues[key]
            again = [job for job in jobs if id(job) in back]
            queue.extendleft(reversed(again))
            finished += len(jobs) - len(again)
            if queue:
                self._ready.append(key)  # more to do: back of the line, behind keys that waited
                if self._idle:
                    self._cond.notify()
            else:
                del self._queues[key]
        self._pending -= finished
        if not self._pending or self._pending < self._low_water:
            self._low_water = 0  # woken once: the jobs that finish before the waiter runs again wake no one
            self._drained.notify_all()
