"""`events publish` and `events outbox`, as a person runs them."""

from __future__ import annotations

import json
import signal
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from dify_events.consumers.broker.local import free_port
from dify_events.consumers.cli import main
from dify_events.producers.outbox import event_outbox
from dify_events.schemas import headers as names
from dify_events.schemas.codec import AvroCodec

from .conftest import headers_of
from .support import counts, outbox_engine, relay_process, seed, wait_until

codec = AvroCodec()
APP = {"tenant_id": "t1", "app_id": "a1", "mode": "chat", "name": "Support bot", "created_by": "u1"}


def events(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_publish_one_event_from_json_prints_where_it_landed(domain_topics, read_messages):
    # Given the domain topics
    # When one event is published from --json
    result = events("publish", "app_was_created", "--json", json.dumps(APP))
    # Then it exits 0 and the table names the event, its topic, partition and offset
    assert result.exit_code == 0, result.output
    [msg] = read_messages([f"{domain_topics}.app"], 1)
    event_id = headers_of(msg)[names.EVENT_ID].decode()
    assert event_id in result.output and f"{domain_topics}.app" in result.output
    assert codec.decode(msg.value()).name == "Support bot"


def test_publish_json_lines_from_standard_input(domain_topics, read_messages):
    # Given three events as JSON lines (with a blank line) on standard input
    lines = "\n".join(json.dumps({**APP, "app_id": f"a{i}"}) for i in range(3)) + "\n\n"
    # When they are published from '-' with JSON output
    result = events("publish", "app_was_created", "-", "--output", "json", input=lines)
    # Then each line of output gives an event's topic, partition and offset, and all three are there
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["topic"] for r in rows] == [f"{domain_topics}.app"] * 3
    assert all(r["offset"] >= 0 and r["partition"] in (0, 1, 2) for r in rows)
    stored = {headers_of(m)[names.EVENT_ID].decode() for m in read_messages([f"{domain_topics}.app"], 3)}
    assert stored == {r["event_id"] for r in rows}


def test_publish_from_a_file(domain_topics, tmp_path, read_messages):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"tenant_id": "t1", "tenant_name": "Acme"}) + "\n")
    result = events("publish", "tenant_was_created", "--file", str(path), "--output", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["topic"] == f"{domain_topics}.tenant"
    assert len(read_messages([f"{domain_topics}.tenant"], 1)) == 1


def test_one_invalid_line_publishes_nothing_and_says_which(domain_topics, read_messages):
    # Given two valid lines and one without a required field
    lines = "\n".join([json.dumps(APP), json.dumps({**APP, "mode": "spreadsheet"}), json.dumps(APP)])
    # When they are published
    result = events("publish", "app_was_created", "-", input=lines)
    # Then it fails naming the line, the event type and pydantic's message, and sent nothing
    assert result.exit_code == 1
    assert "nothing was published" in result.output
    assert "line 2: not a valid app_was_created" in result.output and "mode" in result.output
    marker = events("publish", "app_was_created", "--json", json.dumps({**APP, "app_id": "marker"}),
                    "--output", "json")
    [msg] = read_messages([f"{domain_topics}.app"], 1)
    assert headers_of(msg)[names.EVENT_ID].decode() == json.loads(marker.output)["event_id"]


def test_an_unknown_event_type_lists_the_known_ones(kafka_env):
    result = events("publish", "app_was_renamed", "--json", json.dumps(APP))
    assert result.exit_code == 1
    assert "unknown event type 'app_was_renamed'" in result.output
    assert "app_was_created" in result.output and "tenant_was_updated" in result.output


def test_a_missing_topic_fails_before_sending(kafka_env):
    result = events("publish", "app_was_created", "--json", json.dumps(APP))
    assert result.exit_code == 1
    assert f"the topic {kafka_env}.app does not exist" in result.output


@pytest.mark.parametrize("args, words", [
    ((), "one way"),
    (("--json", "[1]"), "is a JSON object"),
    (("--json", "{nope"), "not JSON"),
])
def test_bad_input_is_explained(kafka_env, args, words):
    result = events("publish", "app_was_created", *args)
    assert result.exit_code != 0 and words in result.output


def test_outbox_init_status_relay_and_purge(domain_topics, database_url, monkeypatch, read_messages):
    # Given the settings' database, prepared with `events outbox init`, and 5 committed events
    monkeypatch.setenv("EVENTS_DATABASE_URL", database_url)
    assert events("outbox", "init").exit_code == 0
    engine = outbox_engine(database_url)
    seed(engine, 5, 2)
    # When status is asked, Then it shows 5 pending
    status = events("outbox", "status")
    assert status.exit_code == 0 and "pending" in status.output and " 5 " in status.output
    # When the relay runs once, Then all five are sent and on the topic
    relay = events("outbox", "relay", "--once", "--batch-size", "2")
    assert relay.exit_code == 0, relay.output
    assert "sent 5 events" in relay.output
    assert counts(engine) == (0, 5)
    assert len(read_messages([f"{domain_topics}.app"], 5)) == 5
    # When sent rows are aged and purged, Then they are gone
    with engine.begin() as conn:
        conn.execute(update(event_outbox).values(sent_at=datetime.now(UTC) - timedelta(days=8)))
    purge = events("outbox", "purge", "--older-than", "7d")
    assert purge.exit_code == 0 and "deleted 5" in purge.output
    assert counts(engine) == (0, 0)


def test_outbox_status_on_a_database_without_the_table_says_what_to_do(kafka_env, tmp_path):
    result = events("outbox", "status", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.exit_code == 1 and "events outbox init" in result.output


def probe(port: int, path: str) -> tuple[int, dict]:
    """GET ``path`` of the health endpoints on ``port``: the status code and the JSON body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_relay_serves_health_endpoints_while_it_runs(domain_topics, tmp_path):
    # Given an outbox holding three committed events
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = outbox_engine(url)
    seed(engine, 3, 3)
    # When `events outbox relay` runs with --health-port and has sent them
    port = free_port()
    relay = relay_process(url, "--health-port", str(port), "--poll-interval", "0.1")
    try:
        wait_until(lambda: counts(engine) == (0, 3) or relay.poll() is not None, 60, "the relay sends the rows")
        assert relay.poll() is None, relay.stderr.read()
        # Then /healthz (rounds keep ending) and /readyz (a round went through) answer 200, with its work
        live, ready = probe(port, "/healthz"), probe(port, "/readyz")
        assert live[0] == 200 and ready[0] == 200, (live, ready)
        assert ready[1]["ok"] is True and ready[1]["sent"] == 3 and ready[1]["rounds"] >= 1
    finally:
        relay.send_signal(signal.SIGTERM)
        _, err = relay.communicate(timeout=60)
    # And SIGTERM stops it cleanly, its endpoints with it
    assert relay.returncode == 0, err
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_a_taken_health_port_stops_the_relay_saying_what_to_do(kafka_env, tmp_path):
    # Given a port another process listens on
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # When the relay is started with it as --health-port
        relay = relay_process(f"sqlite:///{tmp_path / 'app.db'}", "--health-port", str(port))
        _, err = relay.communicate(timeout=60)
    # Then it exits 1 naming the port and the option to change
    assert relay.returncode == 1, err
    assert f"cannot serve the health endpoints on port {port}" in err and "--health-port" in err
