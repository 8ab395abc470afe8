"""`events replay` on the real broker: a restored database brought back up to date by a rewind;
a running group's lost effects re-made by a copy (chosen because it runs) that reaches that group
only, and a rewind of it refused; copies of an explicit range (chosen by --until); handlers not
safe to replay; and our rewind checked against Kafka's own tool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, text

from dify_events.consumers.config import group_id
from dify_events.consumers.recovery.replay import REPLAYED_FROM, RUN
from dify_events.schemas import headers as H
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, peek, publish, running, wait_until
from tests.consumers.test_lifecycle import ROOT, start_events_run, stop
from tests.support.kafka_tools import CONSUMER_GROUPS
from tests.support.kafka_tools import kafka_tool as run_kafka_tool

from .support import committed, end_offsets, wait_committed_to_end


def moment_after() -> datetime:
    """Now, once the clock has left the millisecond of anything published before (no fixed sleep):
    what was published before has an earlier timestamp, what is published after a later or equal one."""
    before = int(time.time() * 1000)
    wait_until(lambda: int(time.time() * 1000) > before, 5, "the clock to tick")
    return datetime.now(UTC)


class Backup:
    """A whole database copied aside and put back: the file on SQLite, a template database on PostgreSQL."""

    def __init__(self, url: str):
        self.url = url
        self.name = url.rsplit("/", 1)[1]
        self.copy_name = f"{self.name}_backup"

    def _server(self):
        return create_engine(self.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")

    def take(self) -> None:
        if self.url.startswith("sqlite"):
            path = Path(self.url.removeprefix("sqlite:///"))
            shutil.copy(path, path.with_suffix(".backup"))
            return
        engine = self._server()
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.copy_name}" TEMPLATE "{self.name}"'))
        engine.dispose()

    def restore(self) -> None:
        if self.url.startswith("sqlite"):
            path = Path(self.url.removeprefix("sqlite:///"))
            for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
                extra.unlink(missing_ok=True)
            shutil.copy(path.with_suffix(".backup"), path)
            return
        engine = self._server()
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{self.name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.copy_name}"'))
        engine.dispose()

    def drop(self) -> None:
        if not self.url.startswith("sqlite"):
            engine = self._server()
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.copy_name}" WITH (FORCE)'))
            engine.dispose()


def test_a_restored_database_is_brought_back_up_to_date_by_a_rewind(
        kafka_env, admin, topics_of, producer_factory, database_url, registered, group_name, cli):
    # Given a group that handled 10 events, a backup of its database, then 10 more events handled
    sample_handlers.create_tables(database_url)
    group, _ = sample_handlers.recording_group(group_name, database_url=database_url)
    registered(group)
    topics_of(group, partitions=2)
    topic, gid = f"{kafka_env}.app", group_id(kafka_env, group_name)
    producer = producer_factory()
    first = [app_event(f"app-{i % 5}", i) for i in range(10)]
    second = [app_event(f"app-{i % 5}", i) for i in range(10, 20)]
    publish(producer, topic, first)
    with running(group) as runner:
        wait_until(lambda: runner.stats()["handled"] == 10, what="the first 10 handled")
    backup = Backup(database_url)
    backup.take()
    backup_time = moment_after()
    try:
        publish(producer, topic, second)
        with running(group) as runner:
            wait_until(lambda: runner.stats()["handled"] == 10, what="the second 10 handled")
        wait_committed_to_end(admin, gid, topic, 2)
        never_lost = sorted(sample_handlers.effects(database_url))
        assert len(never_lost) == 20

        # When the database is restored from the backup (the second ten's effects and keys are gone)
        backup.restore()
        assert len(sample_handlers.effects(database_url)) == 10
        # and the replay is planned (dry run, the default)
        plan = cli("replay", "--group", group_name, "--since", backup_time.isoformat())
        # Then it would rewind the stopped group over the ten events after the backup, and changes nothing
        assert "mode: rewind" in plan.text and "10 message(s) in 2 partition(s) would be re-read" in plan.text
        assert [c or 0 for c in committed(admin, gid, topic, 2)] == end_offsets(admin, topic, 2)

        # When it is carried out and the group starts again
        done = cli("replay", "--group", group_name, "--since", backup_time.isoformat(), "--execute")
        assert "rewound 2 partition(s)" in done.text and "re-reads 10 message(s)" in done.text
        with running(group) as runner:
            wait_until(lambda: runner.stats()["handled"] == 10, what="the replayed 10 handled")
            wait_committed_to_end(admin, gid, topic, 2)
        # Then the database is as if it had never been lost: every effect once, nothing twice
        assert runner.stats()["duplicates"] == 0
        assert sorted(sample_handlers.effects(database_url)) == never_lost
    finally:
        backup.drop()


def test_a_running_groups_lost_effects_are_remade_by_a_copy_that_reaches_only_that_group(
        kafka_env, admin, topics_of, producer_factory, effects_url, registered, group_name, cli):
    # Given two groups on the same topic, both running, both having handled 20 events
    url, bystander_url = effects_url("mine"), effects_url("bystander")
    group, mine = sample_handlers.recording_group(group_name, database_url=url)
    bystander, theirs = sample_handlers.recording_group(f"{group_name}-bystander", database_url=bystander_url)
    registered(group)
    registered(bystander)
    topics_of(group, partitions=2)
    topic, gid = f"{kafka_env}.app", group_id(kafka_env, group_name)
    producer = producer_factory()
    publish(producer, topic, [app_event(f"app-{i % 4}", i) for i in range(10)])
    with running(group) as runner, running(bystander) as other:
        wait_until(lambda: runner.stats()["handled"] == 10 and other.stats()["handled"] == 10, what="10 handled")
        since = moment_after()
        later = [app_event(f"app-{i % 4}", i) for i in range(10, 20)]
        publish(producer, topic, later)
        wait_until(lambda: runner.stats()["handled"] == 20 and other.stats()["handled"] == 20, what="20 handled")
        wait_committed_to_end(admin, gid, topic, 2)
        never_lost = sorted(sample_handlers.effects(url))

        retry = group.retry_topic(kafka_env)
        # When the replay is planned while the group runs (dry run, the default; no --copy)
        plan = cli("replay", "--group", group_name, "--since", since.isoformat())
        # Then the plan copies, says why and names the member, shows the copy table, and changes nothing
        assert f"running, 1 member(s): events-{group_name}-" in plan.text
        assert f"mode: copy into {retry} (the group is running, with 1 member(s):" in plan.text
        assert f"replay {group_name}: copy (dry run: nothing changed)" in plan.text
        assert "Dry run: nothing changed" in plan.text and f"partition(s) would be copied into {retry}" in plan.text
        assert plan.text.split(" message(s) in ")[-2].rsplit(" ", 1)[-1] == "10"
        assert end_offsets(admin, retry, 2) == [0, 0]

        # When a rewind is asked explicitly while the group runs
        refused = cli("replay", "--group", group_name, "--since", since.isoformat(), "--rewind", "--execute",
                      ok=False)
        # Then it is refused, naming the member, and nothing changes
        assert refused.exit_code == 1
        assert "1 active member(s)" in refused.text and f"events-{group_name}-" in refused.text
        assert "drop --rewind" in refused.text
        assert [c or 0 for c in committed(admin, gid, topic, 2)] == end_offsets(admin, topic, 2)
        assert end_offsets(admin, retry, 2) == [0, 0]

        # When the effects of the last ten are lost from the group's table (their keys stay claimed)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(delete(sample_handlers.sample_effects).where(
                sample_handlers.sample_effects.c.event_id.in_([e.event_id for e in later])))
        engine.dispose()
        # and a plain replay is carried out first (a copy: the group runs)
        plain = cli("replay", "--group", group_name, "--since", since.isoformat(), "--execute")
        # Then the copies arrive but are skipped as duplicates: idempotency keys make a replay safe
        assert "mode: copy" in plain.text and "copied 10 of 10 message(s)" in plain.text
        wait_until(lambda: runner.stats()["duplicates"] == 10, what="10 copies skipped as duplicates")
        assert len(sample_handlers.effects(url)) == 10

        # When the replay asks the handlers to run again (its range now also holds the first copies,
        # in the group's retry topic, read and committed by the group)
        wait_committed_to_end(admin, gid, group.retry_topic(kafka_env), 2)
        again = cli("replay", "--group", group_name, "--since", since.isoformat(), "--reprocess", "--execute")
        # Then each event is copied once, and the group runs each once more: its table is as if
        # nothing had been lost
        assert "copied 10 of 20 message(s)" in again.text and "10 repeated idempotency key(s)" in again.text
        assert "events-reprocess: 1" in again.text
        wait_until(lambda: runner.stats()["handled"] == 30, what="10 reprocessed")
        wait_committed_to_end(admin, gid, group.retry_topic(kafka_env), 2)
        assert runner.stats()["handled"] == 30 and end_offsets(admin, group.retry_topic(kafka_env), 2) != [0, 0]
        assert sorted(sample_handlers.effects(url)) == never_lost

        # And the other group saw none of it: an event published after the replays is the next it handles
        sentinel = app_event("app-sentinel", 99)
        publish(producer, topic, [sentinel])
        wait_until(lambda: other.stats()["handled"] == 21 and runner.stats()["handled"] == 31,
                   what="both groups to handle the sentinel")
        assert other.stats()["duplicates"] == 0 and sum(theirs.calls.values()) == 21
        assert len(sample_handlers.effects(bystander_url)) == 21
        assert sum(mine.calls.values()) == 31  # 20 + 10 reprocessed + the sentinel; duplicates never reach it


def test_a_copy_of_an_explicit_range_carries_the_original_bytes_and_where_they_came_from(
        kafka_env, admin, topics_of, producer_factory, effects_url, registered, group_name, cli):
    # Given a stopped group that handled events 0..9 on one partition, published in two batches
    url = effects_url()
    group, _ = sample_handlers.recording_group(group_name, database_url=url)
    registered(group)
    topics_of(group)
    topic, retry = f"{kafka_env}.app", group.retry_topic(kafka_env)
    producer = producer_factory()
    events = [app_event("app-1", i) for i in range(10)]
    publish(producer, topic, events[:7])
    until = moment_after()
    publish(producer, topic, events[7:])
    with running(group) as runner:
        wait_until(lambda: runner.stats()["handled"] == 10, what="10 handled")
    wait_committed_to_end(admin, group_id(kafka_env, group_name), topic)

    # When a rewind of offsets 3.. up to the time between the batches is asked
    rewind = cli("replay", "--group", group_name, "--from-offsets", f"{topic}:0:3", "--until", until.isoformat(),
                 "--rewind", ok=False)
    # Then it is refused: a rewind cannot stop at an end
    assert rewind.exit_code == 1 and "--until cannot end a rewind" in rewind.text

    # When that range is replayed (no --copy: --until chooses a copy of the stopped group)
    out = cli("replay", "--group", group_name, "--from-offsets", f"{topic}:0:3", "--until", until.isoformat(),
              "--execute")
    assert "mode: copy" in out.text and "a rewind cannot stop at an end" in out.text
    # Then the four messages 3..6 are in the group's retry topic: same key and value, the original
    # headers, where each came from, one run id, and no reprocess flag
    assert "copied 4 of 4 message(s)" in out.text
    copies = peek(retry, 0, 0, 4)
    originals = peek(topic, 0, 3, 4)
    assert [c.value() for c in copies] == [o.value() for o in originals]
    assert [c.key() for c in copies] == [b"app-1"] * 4
    headers = [dict(c.headers()) for c in copies]
    assert [h[REPLAYED_FROM] for h in headers] == [f"{topic}:0:{i}".encode() for i in range(3, 7)]
    assert len({h[RUN] for h in headers}) == 1 and not any(H.REPROCESS in h for h in headers)
    assert [h[H.EVENT_ID] for h in headers] == [e.event_id.encode() for e in events[3:7]]
    assert end_offsets(admin, retry) == [4]

    # And when the group starts, the copies are duplicates it skips
    with running(group) as runner:
        wait_until(lambda: runner.stats()["duplicates"] == 4, what="the 4 copies skipped")
    assert runner.stats()["handled"] == 0 and len(sample_handlers.effects(url)) == 10


def test_a_shared_groups_replay_is_a_copy_of_the_range_up_to_the_end_which_its_members_run(
        kafka_env, admin, topics_of, producer_factory, effects_url, registered, group_name, cli):
    # Given a shared group (a Kafka share group: no committed offsets) that has handled 20 events,
    # 10 of them published after `since`
    url = effects_url()
    group, _ = sample_handlers.recording_group(group_name, database_url=url, delivery="shared")
    registered(group)
    topics_of(group, partitions=2)
    topic, retry = f"{kafka_env}.app", group.retry_topic(kafka_env)
    producer = producer_factory()
    earlier, later = [app_event(f"app-{i % 4}", i) for i in range(10)], [app_event(f"app-{i % 4}", i) for i in
                                                                          range(10, 20)]
    publish(producer, topic, earlier)
    with running(group) as runner:
        wait_until(lambda: runner.stats()["handled"] == 10, what="10 handled")
        since = moment_after()
        publish(producer, topic, later)
        wait_until(lambda: runner.stats()["handled"] == 20, what="20 handled")
        # When its replay is planned
        plan = cli("replay", "--group", group_name, "--since", since.isoformat())
        # Then it is a copy into the group's retry topic of the 10 messages since then, and says why
        assert f"(share group {group_id(kafka_env, group_name)}, members not listed)" in plan.text
        assert f"mode: copy into {retry} (a shared group keeps no offsets:" in plan.text
        assert plan.text.split(" message(s) in ")[-2].rsplit(" ", 1)[-1] == "10"
        assert end_offsets(admin, retry, 2) == [0, 0]
        # When a rewind is asked
        refused = cli("replay", "--group", group_name, "--since", since.isoformat(), "--rewind", "--execute",
                      ok=False)
        # Then it is refused in one line, and nothing changes
        assert refused.exit_code != 0 and "keeps no offsets to set back: drop --rewind" in refused.text
        assert end_offsets(admin, retry, 2) == [0, 0]
        # When the replay is carried out with --reprocess
        done = cli("replay", "--group", group_name, "--since", since.isoformat(), "--reprocess", "--execute")
        # Then the 10 are copied, and the group's members run each of them once more, and only them
        assert "copied 10 of 10 message(s)" in done.text
        wait_until(lambda: runner.stats()["handled"] == 30, what="10 reprocessed")
        runs = Counter(effect[0] for effect in sample_handlers.effects(url))
        assert runs == {**{e.event_id: 1 for e in earlier}, **{e.event_id: 2 for e in later}}


def test_a_group_with_a_handler_not_safe_to_replay_needs_force(
        kafka_env, topics_of, effects_url, registered, group_name, cli):
    # Given a group whose handler is declared replay_safe=False (it sends mail, say)
    group, _ = sample_handlers.recording_group(group_name, database_url=effects_url(),
                                               handler_options={"replay_safe": False})
    registered(group)
    topics_of(group)
    # When a replay is planned  # Then the plan warns
    assert "--execute will need --force" in cli("replay", "--group", group_name, "--since", "1h").text
    # When it is executed without --force  # Then it is refused, naming the handler
    refused = cli("replay", "--group", group_name, "--since", "1h", "--execute", ok=False)
    assert refused.exit_code == 1 and "replay_safe=False" in refused.text and "Behaviour.handle" in refused.text
    # When --force is given  # Then it goes ahead (here: nothing was read yet, so nothing to do)
    assert "nothing to replay" in cli("replay", "--group", group_name, "--since", "1h", "--execute", "--force").text


@pytest.fixture
def kafka_tool(kafka_bootstrap):
    """Runs Apache Kafka's own ConsumerGroupCommand (from the local broker's jars)."""
    return lambda *args: run_kafka_tool(CONSUMER_GROUPS, *args, bootstrap=kafka_bootstrap)


def offsets_column(output: str, column: str) -> dict[tuple[str, int], int]:
    """``{(topic, partition): value}`` of one column of the tool's table."""
    rows = [line.split() for line in output.splitlines() if line.strip()]
    header = next(i for i, row in enumerate(rows) if "PARTITION" in row)
    names = rows[header]
    return {(row[names.index("TOPIC")], int(row[names.index("PARTITION")])): int(row[names.index(column)])
            for row in rows[header + 1:] if len(row) == len(names) or len(row) >= names.index(column) + 1}


def events(*args: str) -> subprocess.CompletedProcess:
    """The `events` command in its own process, as an operator runs it."""
    env = dict(os.environ, EVENTS_HANDLER_MODULES="tests.consumers.sample_handlers", PYTHONPATH=str(ROOT),
               COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "dify_events.consumers", *args], env=env, cwd=ROOT,
                          capture_output=True,
                          text=True, timeout=120)


def test_our_rewind_sets_the_offsets_kafkas_own_tool_computes_and_reports(
        kafka_env, admin, topics_of, producer_factory, effects_url, kafka_tool):
    # Given `events run --group sample-recorder` (a pod) that read 3 partitions to the end, with
    # events published before and after a moment
    url = effects_url()
    topics_of(sample_handlers.group, partitions=3)
    topic, gid = f"{kafka_env}.app", group_id(kafka_env, "sample-recorder")
    producer = producer_factory()
    publish(producer, topic, [app_event(f"app-{i % 9}", i) for i in range(18)])
    since = moment_after()
    publish(producer, topic, [app_event(f"app-{i % 9}", i) for i in range(18, 30)])
    pod = start_events_run(url, delay_s=0.0)
    try:
        wait_until(lambda: sample_handlers.effect_count(url) == 30 or pod.poll() is not None, 60, "30 handled")
        wait_committed_to_end(admin, gid, topic, 3)

        # When a rewind is asked while the pod runs
        refused = events("replay", "--group", "sample-recorder", "--since", since.isoformat(), "--rewind",
                         "--execute")
        # Then it is refused, naming the pod's consumer, and Kafka's tool sees the group unchanged
        assert refused.returncode == 1 and "events-sample-recorder-" in refused.stderr, refused.stderr
        assert [c or 0 for c in committed(admin, gid, topic, 3)] == end_offsets(admin, topic, 3)
    finally:
        output = stop(pod)
    assert pod.returncode == 0, output
    # and the offsets Kafka's own tool would reset the stopped group to for that moment (its dry run)
    stamp = since.strftime("%Y-%m-%dT%H:%M:%S.") + f"{since.microsecond // 1000:03d}Z"
    kafkas = offsets_column(kafka_tool("--reset-offsets", "--group", gid, "--topic", topic, "--to-datetime", stamp,
                                       "--dry-run"), "NEW-OFFSET")

    # When our replay rewinds the stopped group to that moment
    done = events("replay", "--group", "sample-recorder", "--since", since.isoformat(), "--topic", "app", "--execute")
    assert done.returncode == 0, done.stderr
    assert "rewound" in done.stdout and "re-reads 12 message(s)" in " ".join(done.stdout.split())

    # Then Kafka's tool describes the group at exactly the offsets it computed itself
    described = offsets_column(kafka_tool("--describe", "--group", gid, "--offsets"), "CURRENT-OFFSET")
    assert {tp: o for tp, o in described.items() if tp[0] == topic} == kafkas
    assert sum(end_offsets(admin, topic, 3)) - sum(kafkas.values()) == 12
