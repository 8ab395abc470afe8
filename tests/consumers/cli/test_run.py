"""`events run`: choosing groups, listing them, and saying clearly what is wrong."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dify_events.consumers.cli import main
from tests.consumers import sample_handlers
from tests.support.waiting import wait_until


def test_list_shows_registered_groups_with_their_topics(monkeypatch):
    # Given the sample handler module, and a topic prefix
    monkeypatch.setenv("EVENTS_HANDLER_MODULES", "tests.consumers.sample_handlers")
    monkeypatch.setenv("EVENTS_TOPIC_PREFIX", "env1")
    from dify_events.schemas.settings import get_settings
    get_settings.cache_clear()
    # When the groups are listed
    result = CliRunner().invoke(main, ["run", "--list"], env={"COLUMNS": "250"})
    get_settings.cache_clear()
    # Then the sample group is there with its subscriptions and dead-letter topic
    assert result.exit_code == 0, result.output
    assert "sample-recorder" in result.output
    assert "env1.app" in result.output and "env1.retry.sample-recorder" in result.output
    assert "env1.dlq.sample-recorder" in result.output


def test_an_unknown_group_is_one_red_line_naming_the_known_ones(monkeypatch):
    monkeypatch.setenv("EVENTS_HANDLER_MODULES", "tests.consumers.sample_handlers")
    result = CliRunner().invoke(main, ["run", "--group", "no-such-group"])
    assert result.exit_code == 1
    assert "no consumer group is named 'no-such-group'" in result.output
    assert "sample-recorder" in result.output
    assert "Traceback" not in result.output


def test_group_and_all_are_exclusive():
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 2 and "exactly one of --group NAME or --all" in result.output


def test_all_runs_every_group_in_a_child_and_stops_them_on_sigterm(kafka_env, topic_factory, group_topics, tmp_path):
    # Given the sample group's topics, and a database with its table and every seed group's (`events db init`)
    db = sample_database(tmp_path)
    topic_factory(f"{kafka_env}.app")
    group_topics("sample-recorder")
    env = {**os.environ, "EVENTS_HANDLER_MODULES": "tests.consumers.sample_handlers", "EVENTS_DATABASE_URL": db,
           "EVENTS_HEALTH_PORT": "0", "EVENTS_METRICS_PORT": "0"}
    # When `events run --all` starts, and its group joins (every group, the sample's module replacing the
    # platform's, starts its own child first); then SIGTERM reaches every child, which drains and leaves
    text = run_until_then_stop(["--all"], env, tmp_path / "run-all.log", "group sample-recorder assigned")
    # Then the parent exits 0, and the group's child started and stopped
    assert "started sample-recorder" in text
    assert "group sample-recorder stopped" in text


def sample_database(tmp_path) -> str:
    """A SQLite database with the sample group's table and every seed group's (`events db init`)."""
    db = f"sqlite:///{tmp_path / 'effects.db'}"
    sample_handlers.create_tables(db)
    assert CliRunner().invoke(main, ["db", "init", "--database-url", db]).exit_code == 0
    return db


def run_until_then_stop(args: list[str], env: dict[str, str], log: Path, started: str) -> str:
    """`events run ARGS` until its log says ``started``, then SIGTERM: it must exit 0. Returns its log."""
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dify_events.consumers", "run", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: started in log.read_text() or proc.poll() is not None, 180, repr(started))
            assert proc.poll() is None, log.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    return log.read_text()


def test_a_batch_max_below_1_is_refused_in_one_line():
    result = CliRunner().invoke(main, ["run", "--group", "sample-recorder", "--batch-max", "0"])
    assert result.exit_code == 2 and "--batch-max" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("module", "group", "delivery", "joined"), [
    ("tests.consumers.shared_handlers", "sample-shared", "ordered", "group sample-shared assigned"),
    ("tests.consumers.sample_handlers", "sample-recorder", "shared", "(share group"),
])
def test_events_delivery_runs_a_group_other_than_its_code_declares(kafka_env, topic_factory, group_topics, tmp_path,
                                                                   module, group, delivery, joined):
    # Given a group declared one way (a shared group, for a cluster without share groups; or an ordered one)
    db = sample_database(tmp_path)
    topic_factory(f"{kafka_env}.app")
    group_topics(group)
    env = {**os.environ, "EVENTS_HANDLER_MODULES": module, "EVENTS_DATABASE_URL": db, "EVENTS_DELIVERY": delivery,
           "EVENTS_HEALTH_PORT": "0", "EVENTS_METRICS_PORT": "0"}
    # When `events run --group` runs it with EVENTS_DELIVERY set the other way, until it has joined, then SIGTERM
    text = run_until_then_stop(["--group", group], env, tmp_path / "run.log", joined)
    # Then it said so, and ran as a Kafka consumer group (or share group), and stopped cleanly
    assert f"group {group} runs {delivery} here" in text
