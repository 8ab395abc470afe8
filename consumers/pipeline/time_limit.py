"""TimeLimit: interrupt a handler that runs longer than ``time_limit_s`` seconds.

As dramatiq's ``TimeLimit`` does: a watchdog thread raises ``TimeLimitExceeded`` in the handler's
thread (``PyThreadState_SetAsyncExc``). Python delivers it at the next bytecode, so a handler blocked
inside a C call (a socket read) is interrupted when that call returns; give such calls their own
timeouts. The exception is retryable like any failure, and the attempt's transaction rolls back.
Handlers without a limit (the default) skip the step entirely. A batch handler's call of n events
(``ConsumerGroup.batch_handler``) has n times the limit.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time

from ..errors import TimeLimitExceeded
from ..job import Job
from .step import CallNext, Step

log = logging.getLogger("consumers.time_limit")


class TimeLimit(Step):
    options = {"time_limit_s": None}

    def __init__(self, resources):
        super().__init__(resources)
        self._lock = threading.Lock()
        self._deadlines: dict[int, tuple[float, str]] = {}  # thread id -> (deadline, what)
        self._wake = threading.Event()
        self._stopped = False
        self._watchdog: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return any(h.option("time_limit_s") for h in self.group.handlers.values())

    def process(self, job: Job, call_next: CallNext) -> str:
        assert job.handler is not None  # Decode let the job through
        limit = job.handler.option("time_limit_s")
        if not limit:
            return call_next(job)
        limit *= len(job.together or (job,))  # a batch handler's call: the limit of each of its events
        self._ensure_watchdog()
        tid = threading.get_ident()
        with self._lock:
            self._deadlines[tid] = (time.monotonic() + limit, f"{job.handler.name} on {job.where()} ({limit}s)")
        self._wake.set()
        try:
            return call_next(job)
        finally:
            with self._lock:
                self._deadlines.pop(tid, None)

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None:
            with self._lock:
                if self._watchdog is None:
                    self._watchdog = threading.Thread(target=self._watch, name="events-time-limit", daemon=True)
                    self._watchdog.start()

    def _watch(self) -> None:
        while not self._stopped:
            now = time.monotonic()
            with self._lock:
                late = [(tid, what) for tid, (deadline, what) in self._deadlines.items() if deadline <= now]
                for tid, what in late:
                    del self._deadlines[tid]
                    log.warning("time limit exceeded: interrupting %s", what)
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(TimeLimitExceeded))
                nearest = min((d for d, _ in self._deadlines.values()), default=now + 1.0)
            self._wake.wait(max(0.01, min(1.0, nearest - now)))
            self._wake.clear()

    def close(self) -> None:
        self._stopped = True
        self._wake.set()
