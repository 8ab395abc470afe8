"""The per-key dispatcher: concurrency across keys, order and exclusion within a key."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

from dify_events.consumers.dispatcher import KeyedDispatcher
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


@pytest.mark.parametrize("batch_max", [1, 5])
def test_every_worker_takes_a_key_when_handlers_wait(batch_max):
    # Given 8 workers, and jobs that each wait until 8 jobs are running at once (a handler waiting on I/O)
    barrier = threading.Barrier(8)
    met = threading.Event()

    def wait_for_all(job):
        if job != 9:  # the one job queued behind another of its key
            barrier.wait(10)  # BrokenBarrierError (the job escapes, logged) unless all 8 run at once
            met.set()

    def run_batch(jobs):
        for job in jobs:
            wait_for_all(job)
        return []

    dispatcher = KeyedDispatcher(wait_for_all, workers=8, process_batch=run_batch, batch_max=batch_max)
    dispatcher.start()
    try:
        # When 8 keys' jobs come in one submit (workers are woken one at a time, each waking the next)
        dispatcher.submit((f"k{i}", i) for i in range(8))
        # Then all 8 run at once, and finish
        assert dispatcher.wait_idle(20)
        assert met.is_set() and not barrier.broken
        # And again when a key's next job is queued behind a running one, and 7 more keys come one by one
        barrier.reset()
        met.clear()
        dispatcher.submit([("k0", 8), ("k0", 9)])
        for i in range(1, 8):
            dispatcher.submit([(f"k{i}", 9 + i)])
        assert dispatcher.wait_idle(20)
        assert met.is_set() and not barrier.broken
    finally:
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


# -- batched takes --------------------------------------------------------------------------------

class Item:
    """A job of a batched dispatcher: its key, its number within the key, and whether it may be batched."""

    def __init__(self, key: str, n: int, solo: bool = False):
        self.key, self.n, self.solo = key, n, solo

    def __repr__(self) -> str:
        return f"{self.key}{self.n}{'!' if self.solo else ''}"


def batchable(item: Item) -> bool:
    return not item.solo


class Gate:
    """A solo job on a key of its own that holds the only worker until opened, so a backlog queues up."""

    def __init__(self):
        self.running, self.open = threading.Event(), threading.Event()

    def close_on(self, dispatcher: KeyedDispatcher) -> None:
        dispatcher.submit([("gate", Item("gate", 0, solo=True))])
        assert self.running.wait(10)

    def hold(self, item: Item) -> bool:
        """Called by the test's ``process``: True when ``item`` was the gate."""
        if item.key != "gate":
            return False
        self.running.set()
        self.open.wait(30)
        return True


def test_a_batched_take_keeps_each_keys_order_and_never_runs_a_key_on_two_workers():
    # Given 8 workers taking batches of up to 20, and a batch runner that finishes a random prefix of
    # each key's jobs and gives back the rest (the first of them made solo when nothing of the key finished)
    import random
    rng = random.Random(19)
    lock = threading.Lock()
    order: dict[str, list[int]] = defaultdict(list)
    running: dict[str, int] = defaultdict(int)
    overlap = []

    def enter(keys):
        with lock:
            for key in keys:
                running[key] += 1
                if running[key] > 1:
                    overlap.append(key)

    def leave(keys, done):
        with lock:
            for item in done:
                order[item.key].append(item.n)
            for key in keys:
                running[key] -= 1

    def process(item):
        enter({item.key})
        time.sleep(0.0002)
        leave({item.key}, [item])

    def process_batch(items):
        keys = {item.key for item in items}
        enter(keys)
        done, back = [], []
        for key in sorted(keys):
            mine = [item for item in items if item.key == key]
            cut = rng.randrange(len(mine) + 1) if rng.random() < 0.3 else len(mine)
            done += mine[:cut]
            back += mine[cut:]
            if cut == 0:
                mine[0].solo = True
        time.sleep(0.0005)
        leave(keys, done)
        rng.shuffle(back)  # the dispatcher puts them back in their queue order whatever the order given
        return back

    dispatcher = KeyedDispatcher(process, workers=8, process_batch=process_batch, batch_max=20, batchable=batchable)
    dispatcher.start()
    items = [Item(f"k{i % 30}", i) for i in range(3000)]
    # When they are submitted in chunks
    for start in range(0, len(items), 97):
        dispatcher.submit((item.key, item) for item in items[start:start + 97])
    assert dispatcher.wait_idle(60)
    dispatcher.stop()
    # Then every job ran once, each key's in submission order, no key on two workers at once, and batches formed
    for k in range(30):
        assert order[f"k{k}"] == [item.n for item in items if item.key == f"k{k}"]
    assert overlap == []
    assert dispatcher.pending == 0 and dispatcher.batches > 0


def test_jobs_given_back_go_to_the_head_of_their_key_in_order():
    # Given one worker held by a gate while k1..k3 queue up
    calls: list[tuple[str, list[Item], int]] = []
    gate = Gate()
    dispatcher: KeyedDispatcher

    def process(item):
        if gate.hold(item):
            return
        calls.append(("one", [item], dispatcher.pending))

    def process_batch(items):
        calls.append(("batch", list(items), dispatcher.pending))
        if len(calls) == 1:
            # k4 and k5 arrive while the batch runs; k2 and k3 leave it, k2 made solo
            dispatcher.submit([("k", Item("k", 4)), ("k", Item("k", 5))])
            items[1].solo = True
            return [items[2], items[1]]
        return []

    dispatcher = KeyedDispatcher(process, workers=1, process_batch=process_batch, batch_max=50, batchable=batchable)
    dispatcher.start()
    gate.close_on(dispatcher)
    dispatcher.submit([("k", Item("k", n)) for n in (1, 2, 3)])
    # When the gate opens
    gate.open.set()
    assert dispatcher.wait_idle(10)
    dispatcher.stop()
    # Then k1..k3 ran as a batch, k2 then ran alone, and k3, k4, k5 after it, as a batch, in order
    assert [(kind, [i.n for i in items], pending) for kind, items, pending in calls] == [
        ("batch", [1, 2, 3], 3), ("one", [2], 4), ("batch", [3, 4, 5], 3)]


def test_a_take_stops_at_a_job_that_cannot_be_batched_and_a_lone_job_runs_alone():
    # Given one worker held by a gate while key k queues 1, 2, a solo 3 and 4, and key m queues 1
    calls: list[tuple[str, list[str]]] = []
    gate = Gate()

    def process(item):
        if gate.hold(item):
            return
        calls.append(("one", [repr(item)]))

    def process_batch(items):
        calls.append(("batch", [repr(item) for item in items]))
        return []

    dispatcher = KeyedDispatcher(process, workers=1, process_batch=process_batch, batch_max=50, batchable=batchable)
    dispatcher.start()
    gate.close_on(dispatcher)
    dispatcher.submit([("k", Item("k", 1)), ("k", Item("k", 2)), ("k", Item("k", 3, solo=True)), ("k", Item("k", 4)),
                       ("m", Item("m", 1))])
    # When the gate opens
    gate.open.set()
    assert dispatcher.wait_idle(10)
    dispatcher.stop()
    # Then the first take is k's run up to its solo job, with m's; the solo job runs alone, and so does
    # k4, the only job ready then (nothing waits for a batch to fill)
    assert calls == [("batch", ["k1", "k2", "m1"]), ("one", ["k3!"]), ("one", ["k4"])]


@pytest.mark.parametrize(("batch_max", "expected"), [
    (3, [("batch", [1, 2, 3]), ("batch", [4, 5, 6]), ("one", [7])]),
    (1, [("one", [n]) for n in range(1, 8)]),
])
def test_batch_max_bounds_a_take_and_batch_max_1_never_batches(batch_max, expected):
    # Given one worker held by a gate while 7 jobs of one key queue up
    calls: list[tuple[str, list[int]]] = []
    gate = Gate()

    def process(item):
        if gate.hold(item):
            return
        calls.append(("one", [item.n]))

    def process_batch(items):
        calls.append(("batch", [item.n for item in items]))
        return []

    dispatcher = KeyedDispatcher(process, workers=1, process_batch=process_batch, batch_max=batch_max,
                                 batchable=batchable)
    dispatcher.start()
    gate.close_on(dispatcher)
    dispatcher.submit([("k", Item("k", n)) for n in range(1, 8)])
    # When the gate opens
    gate.open.set()
    assert dispatcher.wait_idle(10)
    dispatcher.stop()
    # Then batches hold batch_max jobs at most, and with batch_max 1 every job runs alone
    assert calls == expected


def test_wait_below_returns_once_enough_jobs_finished_each_time_it_is_asked():
    # Given one worker whose jobs each wait for a permit, and ten jobs submitted
    permits = threading.Semaphore(0)
    dispatcher = KeyedDispatcher(lambda job: permits.acquire(timeout=30), workers=1)
    dispatcher.start()
    try:
        dispatcher.submit((n, n) for n in range(10))
        # Then waiting for fewer than 5 pending times out while none finishes
        assert not dispatcher.wait_below(5, 0.2)
        # When 6 may finish, the wait returns with fewer than 5 pending
        for _ in range(6):
            permits.release()
        assert dispatcher.wait_below(5, 10) and dispatcher.pending < 5
        # And a later wait, for a lower count, is woken as well, and so is waiting for idle
        for _ in range(2):
            permits.release()
        assert dispatcher.wait_below(3, 10) and dispatcher.pending < 3
        for _ in range(2):
            permits.release()
        assert dispatcher.wait_idle(10) and dispatcher.pending == 0
    finally:
        for _ in range(10):
            permits.release()
        dispatcher.stop()
