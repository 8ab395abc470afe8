"""`events demo` end to end, as a person runs it: a subprocess against the real broker, every
consumer group in a process of its own, on SQLite and on PostgreSQL, once and twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dify_events.consumers.demo.run import SHARED_MEMBERS
from dify_events.consumers.demo.workload import SIZES, Change, build
from dify_events.consumers.group import SHARED
from dify_events.consumers.handlers import GROUPS
from tests.handlers.kafka import wait_until

SMALL = build(SIZES["small"])
EXPECTED = Counter((e.group, e.error_class) for e in SMALL.expected_dead_letters)
TIMEOUT_S = 300


def demo(tmp_path: Path, kafka_bootstrap: str, *args: str,
         env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Runs `events demo --size small` with a fresh prefix and EVENTS_HOME (and ``env`` added);
    returns the process and its JSON report (None when it did not get that far)."""
    report = tmp_path / "report.json"
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTS_")}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, EVENTS_HOME=str(tmp_path / "home"), COLUMNS="160", **extra)
    done = subprocess.run([sys.executable, "-m", "dify_events.consumers", "demo", "--size", "small", "--delete-topics",
                           "--prefix", f"tdemo{uuid.uuid4().hex[:10]}", "--report-json", str(report), *args],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    return done, json.loads(report.read_text()) if report.exists() else None


def failure(done: subprocess.CompletedProcess, report: dict | None) -> str:
    """The end of a failed run's output, then what its report says went wrong and each group's counts."""
    summary = "" if report is None else json.dumps({
        "failed checks": [c for c in report["checks"] if not c["ok"]], "groups": report["groups"],
        "unexpected dead letters": [d for d in report["dead_letters"] if not d["expected"]],
        "missing dead letters": report["missing_dead_letters"], "timings": report["timings_s"]}, indent=1)
    return f"{done.stdout[-3000:]}{done.stderr[-3000:]}\n{summary}"


def assert_clean_run(done: subprocess.CompletedProcess, report: dict, *, passes: int = 1) -> None:
    assert done.returncode == 0, failure(done, report)
    assert report["ok"]
    # every invariant holds, and the summary says so with a ✓ per check
    assert [c for c in report["checks"] if not c["ok"]] == []
    assert len(report["checks"]) >= 11
    lines = done.stdout.splitlines()
    for check in report["checks"]:
        assert any("✓" in line and check["name"] in line for line in lines), check["name"]
    assert "✗" not in done.stdout
    # the dead letters are exactly the poison, `passes` times each, with their reasons
    found = Counter()
    for letter in report["dead_letters"]:
        assert letter["expected"], letter
        assert letter["reason"]
        found[(letter["group"], letter["error_class"])] += letter["count"]
    assert found == Counter({k: n * passes for k, n in EXPECTED.items()})
    assert report["missing_dead_letters"] == []
    # every event was handled by each group that takes it, and every group stopped cleanly
    groups = report["groups"]
    assert groups["provider-usage"]["handled"] == SIZES["small"].messages
    assert groups["installed-app-provisioner"]["handled"] == groups["site-provisioner"]["handled"] == \
        SIZES["small"].apps
    assert all(g["lag"] == 0 and g["exit_code"] == 0 for g in groups.values()), groups
    # the shared document indexer ran as three members of one share group, which between them ran
    # each of its records once (a duplicate being a redelivered one, skipped)
    indexer = groups["document-indexer"]
    assert len(indexer["members"]) == 3, indexer
    ran = sum(n for member in indexer["members"] for n in member.values())
    assert ran == indexer["handled"] + indexer["duplicates"] + indexer["dead_letters"], indexer
    assert "what each member ran" in done.stdout
    # the workload went both ways: through the SDK and through the outbox
    published = report["published"]
    assert published["message_was_created/sdk"] == SIZES["small"].messages
    assert published["app_was_created/outbox"] == SIZES["small"].apps
    assert "all" in done.stdout and "checks hold" in done.stdout


def test_demo_on_sqlite_exits_0_with_every_invariant_and_the_expected_dead_letters(tmp_path, kafka_bootstrap):
    # Given a fresh EVENTS_HOME (so a fresh SQLite database) and the test cluster
    # When the small demo runs
    done, report = demo(tmp_path, kafka_bootstrap)
    # Then it exits 0, every invariant holds and the only dead letters are the poison
    assert_clean_run(done, report)
    assert "sqlite:///" in done.stdout
    assert all(g["duplicates"] == 0 for g in report["groups"].values())


def test_on_a_machine_with_nothing_configured_the_demo_starts_and_stops_its_own_broker(tmp_path):
    # Given no cluster named anywhere and a fresh EVENTS_HOME: what `make demo` meets on a new machine
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EVENTS_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "EVENTS_CONFIG_FILE")}
    env.update(EVENTS_HOME=str(tmp_path / "home"), COLUMNS="160")
    report = tmp_path / "report.json"
    # When the demo runs (asked to stop the broker it starts, and to clean its topics up)
    done = subprocess.run([sys.executable, "-m", "dify_events.consumers", "demo", "--size", "small", "--stop-broker",
                           "--delete-topics", "--report-json", str(report)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    # Then it started the local broker in that home, ran clean, and stopped it again
    assert report.exists(), failure(done, None)
    assert_clean_run(done, json.loads(report.read_text()))
    flat = " ".join(done.stdout.split())
    assert "the local broker, started now" in flat
    assert "the local broker this run started was stopped" in flat


@pytest.fixture
def fresh_postgres_database(postgres_url) -> Iterator[str]:
    name = f"demo_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_demo_on_postgresql_exits_0_with_every_invariant(tmp_path, kafka_bootstrap, fresh_postgres_database):
    # Given a fresh PostgreSQL database
    # When the small demo runs on it
    done, report = demo(tmp_path, kafka_bootstrap, "--database-url", fresh_postgres_database)
    # Then it exits 0 with every invariant holding, and the data is in PostgreSQL
    assert_clean_run(done, report)
    engine = create_engine(fresh_postgres_database)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM messages")).scalar_one() == SIZES["small"].messages
        assert conn.execute(text("SELECT count(*) FROM sites")).scalar_one() == SIZES["small"].apps
    engine.dispose()


def test_publishing_the_whole_workload_twice_leaves_the_database_as_once(tmp_path, kafka_bootstrap):
    # Given the small demo
    # When every event is published a second time with the same ids (--twice)
    done, report = demo(tmp_path, kafka_bootstrap, "--twice")
    # Then the domain tables' digest is the same after the second pass as after the first, each
    # group skipped exactly the events it had handled, and the poison was dead-lettered again
    assert_clean_run(done, report, passes=2)
    [twice] = [c for c in report["checks"] if "twice" in c["name"]]
    assert twice["ok"] and "identical" in twice["detail"]
    assert all(g["duplicates"] == g["handled"] for g in report["groups"].values()), report["groups"]
    assert sum(n for k, n in report["published"].items() if k.endswith("/again")) == SMALL.event_count()


def test_groups_that_do_not_catch_up_in_time_fail_the_demo_naming_them(tmp_path, kafka_bootstrap):
    # Given a timeout far too short for the groups to start and catch up
    # When the demo runs
    done, report = demo(tmp_path, kafka_bootstrap, "--timeout", "1")
    # Then it exits 1 with one clear line naming the groups still behind and where their logs are
    assert done.returncode == 1
    assert report is None
    assert "did not catch up within 1s" in done.stderr and "provider-usage (lag" in done.stderr
    assert "Traceback" not in done.stderr
    assert "/logs" in done.stderr


def test_a_database_that_holds_data_is_refused(tmp_path, kafka_bootstrap):
    # Given a database whose apps table has a row
    url = f"sqlite:///{tmp_path / 'used.db'}"
    engine = create_engine(url)
    from dify_events.consumers.domain import create_all

    create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO apps (id, tenant_id, name, mode, description, status, enable_site, "
                          "enable_api, created_at, updated_at) VALUES ('a', 't', 'n', 'chat', '', 'normal', 1, 1, "
                          "'2025-01-01 00:00:00', '2025-01-01 00:00:00')"))
    engine.dispose()
    # When the demo is pointed at it
    done, _ = demo(tmp_path, kafka_bootstrap, "--database-url", url)
    # Then it refuses, saying why, before starting anything
    assert done.returncode == 1
    assert "already holds data" in done.stderr and "Traceback" not in done.stderr


def group_processes(prefix: str) -> list[int]:
    """Pids of `consumers run --group` processes of the run with this topic prefix."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"consumers\0run\0--group" in cmdline and f"EVENTS_TOPIC_PREFIX={prefix}".encode() in environ:
            pids.append(int(proc.name))
    return pids


def test_killing_the_demo_leaves_no_group_process_behind(tmp_path, kafka_bootstrap, admin):
    # Given a demo whose group processes (one per registered group, SHARED_MEMBERS per shared one) are running
    prefix = f"tdemo{uuid.uuid4().hex[:10]}"
    processes = sum(SHARED_MEMBERS if g.delivery == SHARED else 1 for g in GROUPS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTS_")}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, EVENTS_HOME=str(tmp_path / "home"))
    demo_process = subprocess.Popen([sys.executable, "-m", "dify_events.consumers", "demo", "--size", "small",
                                     "--prefix", prefix],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(group_processes(prefix)) == processes, 60, f"the {processes} group processes")
    finally:
        # When the demo's process dies without a chance to clean up
        demo_process.kill()
        demo_process.wait(30)
    try:
        # Then its group processes end too (SIGTERM from the kernel: they drain and leave)
        wait_until(lambda: not group_processes(prefix), 60, "the group processes to end")
    finally:
        topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(f"{prefix}.")]
        if topics:
            for future in admin.delete_topics(topics, operation_timeout=30).values():
                future.result(30)


def test_an_event_dead_lettered_unforeseen_in_the_first_pass_is_named_before_the_second_pass(tmp_path,
                                                                                            kafka_bootstrap):
    # The `--twice` difference once seen in CI ("row counts changed in: document_keywords,
    # document_segments") is what an index request dead-lettered in the first pass leaves: no claim,
    # so the second pass indexes it. Reproduced here on purpose, the first pass's checks name it.
    # Given the indexer rejecting once an index request of a document the demo will search for
    # (one whose dataset stays, naming a searched document that stays and that no other request names)
    deleted = {d.id for step in SMALL.steps if isinstance(step, Change) for d in step.deletes}
    requests = [e for e in SMALL.events() if e.event_type == "document_index_created"]
    named = Counter(d for e in requests for d in set(e.document_ids))
    rejected = {e.event_id for e in SMALL.expected_dead_letters}
    request = next(e for e in requests if e.event_id not in rejected and e.dataset_id not in deleted
                   and any(d in SMALL.markers and d not in deleted and named[d] == 1 for d in e.document_ids))
    # When the demo publishes the workload twice
    done, report = demo(tmp_path, kafka_bootstrap, "--twice", env={
        "EVENTS_HANDLER_MODULES": "tests.demo.failing_indexer", "FAIL_INDEX_EVENT_ID": request.event_id,
        "FAIL_INDEX_MARKER": str(tmp_path / "rejected-once")})
    assert report is not None, failure(done, report)
    checks = {c["name"]: c for c in report["checks"]}
    # Then it fails, the claims check naming the event the first pass did not handle
    assert done.returncode != 0
    claimed = checks["each group claimed every event it takes, and only those"]
    assert not claimed["ok"] and "1 never handled" in claimed["detail"], claimed
    assert f"document-indexer: document_index_created {request.event_id}" in claimed["detail"], claimed
    # and its dead letter unexpected, and the second pass indexed it: the difference CI saw
    unexpected = [d for d in report["dead_letters"] if not d["expected"]]
    assert [(d["group"], d["error_class"], d["count"]) for d in unexpected] == \
        [("document-indexer", "MessageRejected", 1)], unexpected
    twice = checks["publishing every event twice changes nothing"]
    assert not twice["ok"], twice
    assert "document_keywords" in twice["detail"] and "document_segments" in twice["detail"], twice
    assert "document-indexer +1" in twice["detail"], twice
