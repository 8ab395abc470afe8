"""Prototypes of hot-path changes to the consumer runtime, measured without touching it.

``BENCH_PATCH=name[,name...]`` in the environment of an ``events run`` child (the bench's handler
module imports this module then) swaps in the changed code before the runner starts, so the same
benchmark measures the runtime as it is and as it would be. Each patch is a copy of the runtime's
own code with one change, named below; ``python -m bench.hotpath --patch NAME`` compares them on
one thread, without Kafka.

- ``batch``: ``KeyedDispatcher`` workers take up to ``ceil(ready keys / workers)`` (at most 32)
  jobs of distinct keys per lock acquisition, and give them back in one: two lock round trips per
  batch instead of per message (per-key order and exclusivity unchanged: a taken key is running
  until its batch is done).
- ``freeze``: when the group has started, ``gc.collect(); gc.freeze()``: the ~150,000 objects of
  start-up (modules, Avro schemas, pydantic and SQLAlchemy models) move to the permanent
  generation, so the collector's full passes (one every ~70,000 allocations, a few thousand
  events) stop traversing them;
- ``gc``: ``freeze`` and ``gc.set_threshold(10_000, 10, 10)`` (CPython's default first threshold
  is 700): young collections 14 times rarer; the per-message objects die young by refcount anyway.
"""

from __future__ import annotations

import gc
import logging
import os

from dify_events.consumers.dispatcher import KeyedDispatcher
from dify_events.consumers.runner import GC_THRESHOLD, GroupRunner

log = logging.getLogger("consumers.dispatcher")


class BatchedDispatcher(KeyedDispatcher):
    """``KeyedDispatcher`` whose workers take and return jobs in batches."""

    MAX_BATCH = 32

    def _work(self) -> None:
        cond = self._cond
        process = self._process
        ready = self._ready
        queues = self._queues
        workers = self._workers
        limit = self.MAX_BATCH
        taken: list = []  # (key, queue) of the batch just run: returned with the next take
        while True:
            with cond:
                if taken:
                    before = self._pending
                    for key, queue in taken:
                        if queue:
                            ready.append(key)  # more to do: back of the line
                        else:
                            del queues[key]
                    self._running -= 1
                    self._pending = pending = before - len(taken)
                    taken = []
                    low = self._low_water
                    if not pending or (low and before >= low > pending):
                        self._drained.notify_all()
                while not ready:
                    if self._stopping:
                        return
                    cond.wait()
                count = min(limit, max(1, -(-len(ready) // workers)))
                jobs = []
                for _ in range(count):
                    key = ready.popleft()
                    queue = queues[key]
                    jobs.append(queue.popleft())
                    taken.append((key, queue))
                self._running += 1
                if ready and self._running < workers:
                    cond.notify()  # more ready keys than this batch: wake an idle worker
            for job in jobs:
                try:
                    process(job)
                except BaseException:  # noqa: BLE001 - the pipeline catches; this is the last net
                    log.exception("a job escaped the pipeline; its offset will not be committed")


_original_start = GroupRunner._start


def _gc_after_start(start, threshold: tuple[int, int, int] | None):
    def _start(self) -> bool:
        started = start(self)  # False: stopped while waiting for the cluster
        gc.collect()
        gc.freeze()  # start-up's objects (modules, schemas, models) are never traversed again
        if threshold:
            gc.set_threshold(*threshold)
        return started
    return _start


def apply(names: list[str]) -> None:
    import dify_events.consumers.runner as runner

    # the ignores: replacing the runtime's class and method in place is the point of a prototype
    runner.KeyedDispatcher = KeyedDispatcher  # type: ignore[misc]
    runner.GroupRunner._start = _original_start  # type: ignore[method-assign]
    for name in names:
        if name == "batch":
            runner.KeyedDispatcher = BatchedDispatcher  # type: ignore[misc]
        elif name in ("freeze", "gc"):
            runner.GroupRunner._start = _gc_after_start(  # type: ignore[method-assign]
                _original_start, GC_THRESHOLD if name == "gc" else None)
        elif name:
            raise ValueError(f"unknown BENCH_PATCH {name!r}")


if os.environ.get("BENCH_PATCH"):
    apply(os.environ["BENCH_PATCH"].split(","))
