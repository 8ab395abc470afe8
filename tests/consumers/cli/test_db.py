"""`events db init` makes the tables `events run` needs, once; `events run` on a database without them
refuses to start, saying what to run, before it creates anything on the cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from sqlalchemy import create_engine, inspect, select

from dify_events.consumers.domain import DOMAIN, Site
from dify_events.consumers.idempotency import processed_events
from dify_events.producers import EventProducer
from dify_events.producers.outbox import event_outbox
from dify_events.schemas.events import AppWasCreated
from dify_events.schemas.settings import get_settings
from tests.bad_input.conftest import run_events
from tests.support.waiting import wait_until

WANTED = {t.name for t in DOMAIN.sorted_tables} | {event_outbox.name, processed_events.name}


def test_db_init_creates_every_table_once_on_sqlite_and_postgresql(database_url):
    # When `events db init` runs on an empty database, twice
    first = run_events("db", "init", "--output", "json", env={"EVENTS_DATABASE_URL": database_url})
    second = run_events("db", "init", "--output", "json", env={"EVENTS_DATABASE_URL": database_url})
    # Then the first creates the domain, the outbox and processed_events, and the second nothing
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert set(json.loads(first.stdout)["created"]) == WANTED
    assert json.loads(second.stdout)["created"] == [] and set(json.loads(second.stdout)["already_there"]) == WANTED
    engine = create_engine(database_url)
    assert WANTED <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_events_run_on_a_fresh_database_says_to_run_db_init_then_runs_after_it(kafka_env, admin, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'events.db'}"
    env = {"EVENTS_DATABASE_URL": database_url, "EVENTS_HEALTH_PORT": "0", "EVENTS_METRICS_PORT": "0"}
    # When a group starts on a fresh database (the README's default SQLite)
    began = time.monotonic()
    result = run_events("run", "--group", "site-provisioner", env=env, timeout_s=60)
    # Then it refuses at once, naming a missing table and what to do, and made nothing on the cluster
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    assert "has no table `" in output and "`events db init`" in output, output
    assert time.monotonic() - began < 30
    assert not [t for t in admin.list_topics(timeout=15).topics if t.startswith(f"{kafka_env}.")]
    # And after `events db init` (and the topics), the group handles an event
    assert run_events("db", "init", env=env).returncode == 0
    assert run_events("topics", "apply", "--group", "site-provisioner").returncode == 0
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dify_events.consumers", "run", "--group", "site-provisioner"],
                                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        event = AppWasCreated(tenant_id="t1", app_id="a1", mode="chat", name="Support bot", created_by="u1")
        with EventProducer(settings=get_settings()) as producer:
            producer.publish(event, wait=True)
        engine = create_engine(database_url)
        wait_until(lambda: _sites(engine) or proc.poll() is not None, 60, "the site of the new app")
        assert proc.poll() is None, log.read_text()
        assert _sites(engine) == ["a1"]
        engine.dispose()
    finally:
        proc.terminate()
        proc.wait(60)


def _sites(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(Site.app_id)).scalars())
