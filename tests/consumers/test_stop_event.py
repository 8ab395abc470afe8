"""``StopEvent``: set by a signal handler on a thread that holds its lock, it does not deadlock (a
``threading.Event`` does: ``events outbox relay`` once hung on SIGTERM so)."""

from __future__ import annotations

import signal
import threading

from dify_events.consumers.stop_event import StopEvent


def test_a_signal_handler_sets_it_while_the_main_thread_holds_its_lock():
    stop = StopEvent()
    previous = signal.signal(signal.SIGUSR1, lambda *_: stop.set())
    try:
        # Given the main thread inside the event's lock, as inside wait() around its check of the flag
        with stop._cond:
            # When a signal arrives there, and its handler (run on this thread) sets the event
            signal.raise_signal(signal.SIGUSR1)
            # Then the handler returned, and the event is set
            assert stop.is_set()
        assert stop.wait(0)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_waiter_wakes_when_another_thread_sets_it():
    stop = StopEvent()
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(stop.wait(60)))
    waiter.start()
    stop.set()
    waiter.join(30)
    assert woke == [True]


def test_a_wait_that_times_out_says_it_is_not_set():
    stop = StopEvent()
    assert stop.wait(0) is False
    assert stop.wait(0.01) is False
    assert not stop.is_set()
