"""The per-key dispatcher: concurrency across keys, order and exclusion within a key."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from consumers.dispatcher import KeyedDispatcher
from tests.consumers.support import wait_until


class Recorder:
    def __init__(self, slow: dict[str, threading.Event] | None = None):
        self.lock = threading.Lock()
        self.order: dict[str, list[int]] = defaultdict(list)
        self.running: dict[str, int] = defaultdict(int)
        self.overlap = False
        self.max_parallel = 0
        self.parallel = 0
        self.slow = slow or {}

    def __call__(self, job):
        key, n = job
        with self.lock:
            self.running[key] += 1
            self.parallel += 1
            self.max_parallel = max(self.max_parallel, self.parallel)
            self.overlap |= self.running[key] > 1
        if key in self.slow:
            self.slow[key].wait(30)
        else:
            time.sleep(0.001)
        with self.lock:
            self.order[key].append(n)
            self.running[key] -= 1
            self.parallel -= 1


def test_jobs_of_one_key_run_in_order_and_never_at_once():
    # Given 4 workers and 400 jobs over 8 keys, submitted in batches
    recorder = Recorder()
    dispatcher = KeyedDispatcher(recorder, workers=4)
    dispatcher.start()
    jobs = [(f"k{i % 8}", i) for i in range(400)]
    # When they are submitted
    for start in range(0, 400, 37):
        dispatcher.submit((key, (key, n)) for key, n in jobs[start:start + 37])
    assert dispatcher.wait_idle(30)
    dispatcher.stop()
    # Then each key's jobs ran in submission order, one at a time, and keys ran in parallel
    for k in range(8):
        assert recorder.order[f"k{k}"] == [n for key, n in jobs if key == f"k{k}"]
    assert not recorder.overlap
    assert recorder.max_parallel > 1


def test_a_slow_key_does_not_hold_up_other_keys():
    # Given a key whose job blocks until released
    release = threading.Event()
    recorder = Recorder(slow={"slow": release})
    dispatcher = KeyedDispatcher(recorder, workers=2)
    dispatcher.start()
    # When the slow key's jobs come first, then other keys'
    dispatcher.submit([("slow", ("slow", 0)), ("slow", ("slow", 1))])
    dispatcher.submit((f"k{i}", (f"k{i}", i)) for i in range(20))
    # Then the other keys are all handled while the slow key still blocks
    wait_until(lambda: sum(len(v) for k, v in recorder.order.items() if k != "slow") == 20, 10)
    assert recorder.order["slow"] == []
    assert dispatcher.pending == 2
    # And when it is released, its jobs finish in order
    release.set()
    assert dispatcher.wait_idle(10)
    assert recorder.order["slow"] == [0, 1]
    dispatcher.stop()


def test_a_job_that_raises_does_not_stop_its_worker():
    # Given a process function that fails on one job
    done = []

    def process(job):
        if job == "bad":
            raise RuntimeError("boom")
        done.append(job)

    dispatcher = KeyedDispatcher(process, workers=1)
    dispatcher.start()
    # When a failing job is followed by others of the same key
    dispatcher.submit([("k", "bad"), ("k", "a"), ("k", "b")])
    # Then the rest still run
    assert dispatcher.wait_idle(10)
    assert done == ["a", "b"]
    dispatcher.stop()
