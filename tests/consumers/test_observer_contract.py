"""What an observer is told (``consumers.observers``), through the public harness: the runtime's own
pipeline on SQLite, no Kafka."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from dify_events.consumers.observers import Observer
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

    def after_message(self, job, outcome):
        self._record("after_message", job, outcome)


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


def test_a_batch_tells_each_message_after_its_commit(harness):
    results = harness.send_batch([app_event(f"app-b{i}", i) for i in range(3)])
    assert all(r.handled and r.batched for r in results)
    assert [outcome for _, outcome in harness.observer.of("after_message")] == ["handled"] * 3


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
