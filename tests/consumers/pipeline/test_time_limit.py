"""TimeLimit: a handler past its time limit is interrupted, and the attempt counts as failed."""

from __future__ import annotations

import time

from tests.consumers import sample_handlers
from tests.consumers.support import app_event, harnessed


def test_a_handler_past_its_time_limit_is_interrupted_and_retried(sqlite_db):
    # Given a handler limited to 0.2 s that takes 5 s on app-slow, with 2 attempts
    harness, behaviour = harnessed(
        sqlite_db, handler_options={"time_limit_s": 0.2, "max_attempts": 2, "min_backoff_s": 0.01})
    behaviour.delay_s["app-slow"] = 5.0
    # When the group takes it, then an event of another key (on this thread: the watchdog interrupts it)
    started = time.monotonic()
    with harness:
        slow, ok = harness.send(app_event("app-slow", 1)), harness.send(app_event("app-ok", 2))
    # Then both attempts were interrupted well before their 5 s, and the dead letter says why
    assert time.monotonic() - started < 5
    assert slow.dead_lettered and slow.attempts == 2 and ok.handled
    assert behaviour.calls["app-slow"] == 2
    assert slow.dead_letter is not None and harness.dead_letters == [slow.dead_letter]
    assert slow.dead_letter.error_class == "dify_events.consumers.errors.TimeLimitExceeded"
    assert [e[1] for e in sample_handlers.effects(sqlite_db)] == ["app-ok"]
