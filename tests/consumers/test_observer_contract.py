"""What an observer is told (``consumers.observers``), through the public harness: the runtime's own
pipeline on SQLite, no Kafka."""

from __future__ import annotations

import threading
from collections import Counter
from functools import partial

import pytest

from dify_events.consumers.observers import Observer
from dify_events.consumers.pipeline import DeadLetters, Decode, Idempotency, Retries, Tracing, call_handler
from dify_events.consumers.telemetry.tracing import tracing_configured
from dify_events.consumers.testing import GroupHarness
from dify_events.schemas import headers as H
from dify_events.schemas.events import TenantWasCreated
from tests.consumers import sample_handlers
from tests.consumers.support import app_event


class RecordingObserver(Observer):
    """Records every hook it is told, in order, as ``(hook, job or group, details)``."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self._lock = threading.Lock()

    def _record(self, *call) -> None:
        with self._lock:
            self.calls.append(call)

    def of(self, hook: str) -> list[tuple]:
        return [call[1:] for call in self.calls if call[0] == hook]

    def around_message(self, job, call_next):
        self._record("around_message", job)
        return call_next(job)

    def around_attempt(self, job, call_next):
        self._record("around_attempt", job, job.attempts)
        return call_next(job)

    def around_dead_letter(self, job, exc, attempts, send):
        self._record("around_dead_letter", job, attempts)
        return send()

    def after_message(self, job, outcome):
        self._record("after_message", job, outcome)

    def after_retry(self, job, *, attempt, exc, backoff_s):
        self._record("after_retry", job, attempt, type(exc).__name__, backoff_s)

    def after_dead_letter(self, job, *, exc, attempts, sent):
        self._record("after_dead_letter", job, attempts, sent)

    def after_dead_letter_refused(self, job, *, error, retry_in_s):
        self._record("after_dead_letter_refused", job, error, retry_in_s)

    def before_batch_job(self, job, size):
        self._record("before_batch_job", job, size)

    def after_batch_job(self, job, outcome, exc):
        self._record("after_batch_job", job, outcome, exc)

    def after_batch(self, group, *, committed, messages):
        self._record("after_batch", group, committed, messages)


@pytest.fixture
def harness(tmp_path):
    """A group whose handler fails once on ``app-once`` and always on ``app-never`` (three attempts),
    watched by a ``RecordingObserver``."""
    group, behaviour = sample_handlers.recording_group("observed", tables=sample_handlers.metadata, max_attempts=3,
                                                       batch_max=10)
    behaviour.fail.update({"app-once": 1, "app-never": -1})
    observer = RecordingObserver()
    with GroupHarness(group, f"sqlite:///{tmp_path / 'observed.db'}", create_tables=True,
                      observers=[observer]) as harness:
        harness.observer = observer  # type: ignore[attr-defined]
        yield harness


def send_workload(harness: GroupHarness) -> None:
    """3 fine events, one that fails once, one that always fails, a duplicate, undecodable bytes, and
    an event type of another group."""
    fine = [app_event(f"app-{i}", i) for i in range(3)]
    results = [harness.send(event) for event in fine]
    results.append(harness.send(app_event("app-once", 3)))
    results.append(harness.send(app_event("app-never", 4)))
    results.append(harness.send(fine[0]))
    results.append(harness.send_raw(b"not avro", headers=[(H.EVENT_TYPE, "app_was_created")], key=b"app-x"))
    results.append(harness.send(TenantWasCreated(tenant_id="t1", tenant_name="Acme", plan="sandbox")))
    assert [r.outcome for r in results] == ["handled"] * 4 + ["dead_lettered", "duplicate", "dead_lettered", "passed"]


def test_every_message_that_entered_the_pipeline_is_told_once_with_its_outcome(harness):
    send_workload(harness)
    told = harness.observer.of("after_message")
    assert Counter(outcome for _, outcome in told) == {"handled": 4, "duplicate": 1, "dead_lettered": 2}
    # the passed-over event is not told: it never entered the pipeline
    assert all(job.raw_event_type == b"app_was_created" for job, _ in told)
    assert len({id(job) for job, _ in told}) == 7


def test_retries_dead_letters_and_attempts_are_told(harness):
    send_workload(harness)
    observer = harness.observer
    # a retry is told before its backoff: app-once's attempt 1, app-never's attempts 1 and 2
    retries = [(job.event.app_id, attempt, error) for job, attempt, error, backoff in observer.of("after_retry")]
    assert retries == [("app-once", 1, "RuntimeError"), ("app-never", 1, "RuntimeError"),
                       ("app-never", 2, "RuntimeError")]
    assert all(backoff > 0 for *_, backoff in observer.of("after_retry"))
    # each dead letter once, when the broker took it: after 3 attempts, and the undecodable bytes after 1
    letters = observer.of("after_dead_letter")
    assert [(attempts, sent) for _, attempts, sent in letters] == [(3, True), (1, True)]
    assert [attempts for _, attempts in observer.of("around_dead_letter")] == [3, 1]
    assert letters[0][0].event.app_id == "app-never" and letters[1][0].event is None
    assert observer.of("after_dead_letter_refused") == []
    # every handler call: 3 fine, 2 of app-once, 3 of app-never; the duplicate and the bytes never reach it
    assert len(observer.of("around_attempt")) == 8
    # around_message wraps each decoded message's delivery (the bytes fail to decode before it)
    assert len(observer.of("around_message")) == 6
    # the order a message's hooks come in: its attempts, its retries, its dead letter, its outcome
    never = [call[0] for call in observer.calls if call[1] is letters[0][0]]
    assert never == ["around_message", "around_attempt", "after_retry", "around_attempt", "after_retry",
                     "around_attempt", "around_dead_letter", "after_dead_letter", "after_message"]


def test_a_batch_tells_each_job_then_the_batch_then_each_message_after_its_commit(harness):
    results = harness.send_batch([app_event(f"app-b{i}", i) for i in range(3)])
    assert all(r.handled and r.batched for r in results)
    observer = harness.observer
    assert [size for _, size in observer.of("before_batch_job")] == [3, 3, 3]
    assert [(outcome, exc) for _, outcome, exc in observer.of("after_batch_job")] == [("handled", None)] * 3
    assert observer.of("after_batch") == [("observed", True, 3)]
    assert [outcome for _, outcome in observer.of("after_message")] == ["handled"] * 3
    hooks = [call[0] for call in observer.calls]
    assert hooks.index("after_batch") < hooks.index("after_batch_job") < hooks.index("after_message")


def test_without_observers_the_chain_is_the_steps_and_the_handler(tmp_path):
    group, _ = sample_handlers.recording_group("unobserved", tables=sample_handlers.metadata)
    with GroupHarness(group, f"sqlite:///{tmp_path / 'plain.db'}", create_tables=True) as harness:
        walked = []
        chain = harness._chain
        while isinstance(chain, partial):  # partial(call_inside, step.process, call_next)
            process, chain = chain.args
            walked.append(type(process.__self__))
    expected = [DeadLetters, Decode, *([Tracing] if tracing_configured() else []), Retries, Idempotency]
    assert walked == expected and chain is call_handler


def test_a_raising_observer_changes_no_outcome(tmp_path, caplog):
    class Broken(Observer):
        def after_message(self, job, outcome):
            raise RuntimeError("observer bug")

    group, _ = sample_handlers.recording_group("broken-observer", tables=sample_handlers.metadata)
    recording = RecordingObserver()
    with GroupHarness(group, f"sqlite:///{tmp_path / 'broken.db'}", create_tables=True,
                      observers=[Broken(), recording]) as harness:
        assert harness.send(app_event("app-1", 1)).handled
    assert [outcome for _, outcome in recording.of("after_message")] == ["handled"]
    assert "observer hook" in caplog.text and "observer bug" in caplog.text
