"""``consumers.observers``: hooks resolved once, notifications that cannot raise, wraps in list order."""

from __future__ import annotations

import logging

import pytest

from dify_events.consumers.observers import Observer, Observers, emit, wrapped


class Counting(Observer):
    needs_lag = True

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def after_message(self, job, outcome):
        self.seen.append(("after_message", job, outcome))


class Failing(Observer):
    def after_message(self, job, outcome):
        raise RuntimeError("observer bug")


class Wrapping(Observer):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def around_attempt(self, job, call_next):
        self.calls.append(f"{self.name} in")
        try:
            return call_next(job)
        finally:
            self.calls.append(f"{self.name} out")


def test_only_overridden_hooks_are_collected():
    counting, plain = Counting(), Observer()
    hooks = Observers.of([plain, counting])
    assert hooks.after_message == (counting.after_message,)
    assert hooks.around_message == () and hooks.around_attempt == () and hooks.after_retry == ()
    assert hooks.needs_lag
    assert not Observers.of([plain]).needs_lag


def test_no_observers_have_empty_hooks():
    none = Observers.of([])
    assert none is Observers.EMPTY and not none
    assert not none.needs_lag
    assert all(getattr(none, hook) == () for hook in ("around_message", "around_attempt", "around_dead_letter",
                                                       "after_message", "after_retry", "after_dead_letter",
                                                       "after_dead_letter_refused", "after_pause", "before_batch_job",
                                                       "after_batch_job", "after_batch", "after_start", "before_stop"))


def test_a_raising_notification_is_logged_and_the_next_still_runs(caplog):
    counting = Counting()
    hooks = Observers.of([Failing(), counting])
    with caplog.at_level(logging.ERROR, logger="consumers.observers"):
        emit(hooks.after_message, "job", "handled")  # does not raise
    assert counting.seen == [("after_message", "job", "handled")]
    assert "observer hook Failing.after_message failed" in caplog.text
    assert "RuntimeError: observer bug" in caplog.text


def test_wraps_compose_in_list_order_outermost_first():
    calls: list[str] = []
    hooks = Observers.of([Wrapping("a", calls), Wrapping("b", calls)])

    def handler(job):
        calls.append(f"handler {job}")
        return "handled"

    chain = wrapped(hooks.around_attempt, handler)
    assert chain("j") == "handled"
    assert calls == ["a in", "b in", "handler j", "b out", "a out"]
    assert wrapped((), handler) is handler


def test_a_wrap_sees_and_reraises_the_failure():
    calls: list[str] = []
    chain = wrapped(Observers.of([Wrapping("a", calls)]).around_attempt, _fail)
    with pytest.raises(ValueError, match="handler failed"):
        chain("j")
    assert calls == ["a in", "a out"]


def _fail(job):
    raise ValueError("handler failed")
