"""Bad input at the command line's doors: each answered by one clear error line and a non-zero
exit (never a traceback), with nothing half-written on the topics or in the database."""

from __future__ import annotations

import json
import socket
import time

import pytest
from sqlalchemy import create_engine, inspect

from tests.bad_input.conftest import run_events

APP = {"tenant_id": "t1", "app_id": "a1", "mode": "chat", "name": "Support bot", "created_by": "u1"}
MESSAGE = {"tenant_id": "t1", "app_id": "a1", "conversation_id": "c1", "message_id": "m1", "provider_name": "openai",
           "model_name": "gpt-4o", "message_tokens": 3, "answer_tokens": 4, "total_tokens": 7}
PASSWORD = "Sup3r-s3cret-pw"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_clear_failure(result, *words: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    for word in words:
        assert word in output, (word, output)
    return output


@pytest.mark.parametrize("event_type, args, words", [
    ("app_was_created", ["--json", "{nope"], ["not JSON"]),
    ("app_was_created", ["--json", "[1, 2]"], ["is a JSON object"]),
    ("app_was_renamed", ["--json", json.dumps(APP)], ["unknown event type 'app_was_renamed'"]),
    ("message_was_created", ["--json", json.dumps({**MESSAGE, "message_tokens": -5})],
     ["not a valid message_was_created", "message_tokens", "greater than or equal to 0"]),
    ("message_was_created", ["--json", json.dumps({**MESSAGE, "total_tokens": 2 ** 64})],
     ["not a valid message_was_created", "total_tokens"]),
    ("app_was_created", ["--json", json.dumps({**APP, "mode": "spreadsheet"})], ["mode"]),
    ("app_was_created", ["--json", json.dumps({**APP, "app_id": ""})], ["app_id"]),
    ("app_was_created", ["-", json.dumps({**APP, "name": "x" * 1_200_000})],  # on standard input
     ["nothing was published", "message.max.bytes"]),
    ("app_was_created", ["-", '{"name": ' + "[" * 100_000 + "]" * 100_000 + "}"], ["line 1", "nested too deeply"]),
    ("app_was_created", ["--json", json.dumps(APP), "--idempotency-key", "k" * 256],
     ["--idempotency-key", "1 to 255 characters"]),
], ids=["malformed-json", "not-an-object", "unknown-type", "negative-count", "count-over-64-bits", "unknown-enum",
        "empty-id", "oversize", "deeply-nested", "idempotency-key-too-long"])
def test_publish_refuses_bad_input_clearly_and_publishes_nothing(domain_topics, topic_messages, event_type,
                                                                 args, words):
    # Given the domain topics, empty
    # When `events publish` is given bad input
    result = run_events("publish", event_type, "-", input=args[1]) if args[0] == "-" else \
        run_events("publish", event_type, *args)
    # Then it fails with a clear message, and nothing reached any topic
    assert_clear_failure(result, *words)
    assert topic_messages(domain_topics) == 0


def test_one_bad_line_among_good_ones_publishes_none_of_them(domain_topics, topic_messages):
    lines = "\n".join([json.dumps(MESSAGE), "{\"broken\": ", json.dumps({**MESSAGE, "message_id": "m2"})])
    result = run_events("publish", "message_was_created", "-", input=lines)
    assert_clear_failure(result, "line 2", "not JSON")
    lines = "\n".join([json.dumps(MESSAGE), json.dumps({**MESSAGE, "answer_tokens": -1})])
    result = run_events("publish", "message_was_created", "-", input=lines)
    assert_clear_failure(result, "nothing was published", "line 2")
    # a line that is valid but too large to send, after a good one: encoded and measured before any is sent
    lines = "\n".join([json.dumps(MESSAGE), json.dumps({**MESSAGE, "model_name": "m" * 1_100_000}),
                       json.dumps({**MESSAGE, "message_id": "m3"})])
    result = run_events("publish", "message_was_created", "-", input=lines)
    assert_clear_failure(result, "nothing was published", "line 2", "message.max.bytes")
    assert topic_messages(domain_topics) == 0


def test_publish_to_an_unreachable_broker_says_so_within_its_timeout(kafka_env):
    # Given a bootstrap address where nothing listens
    began = time.monotonic()
    result = run_events("publish", "app_was_created", "--json", json.dumps(APP), "--timeout", "3",
                        env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}"})
    # Then it fails soon, saying the cluster cannot be reached
    assert_clear_failure(result, "cannot reach the Kafka cluster")
    assert time.monotonic() - began < 30


WRONG_URLS = {
    "refused": f"postgresql+psycopg://events:{PASSWORD}@127.0.0.1:{{port}}/nope",
    "unknown-dialect": f"nosuchdb://events:{PASSWORD}@localhost/x",
    "not-a-url": "this is not a database url",
}


@pytest.mark.parametrize("which", list(WRONG_URLS))
def test_the_outbox_relay_with_a_wrong_database_url_fails_clearly(domain_topics, topic_messages, which):
    url = WRONG_URLS[which].format(port=closed_port())
    result = run_events("outbox", "relay", "--once", "--database-url", url)
    output = assert_clear_failure(result, "database")
    assert PASSWORD not in output
    assert topic_messages(domain_topics) == 0


@pytest.mark.parametrize("which", list(WRONG_URLS))
def test_events_run_with_a_wrong_database_url_fails_clearly(kafka_env, admin, which):
    url = WRONG_URLS[which].format(port=closed_port())
    result = run_events("run", "--group", "provider-usage", "--health-port", "0",
                        env={"EVENTS_DATABASE_URL": url, "EVENTS_METRICS_PORT": "0"})
    output = assert_clear_failure(result, "database")
    assert PASSWORD not in output
    # and it made nothing: no retry or dead-letter topic, no consumer group
    assert not [t for t in admin.list_topics(timeout=15).topics if t.startswith(f"{kafka_env}.")]
    assert not [g for g in admin.list_consumer_groups().result(15).valid if g.group_id.startswith(kafka_env)]


def test_the_outbox_relay_with_a_database_without_the_outbox_says_what_to_do(domain_topics, topic_messages,
                                                                             database_url):
    result = run_events("outbox", "relay", "--once", "--database-url", database_url)
    assert_clear_failure(result, "events outbox init")
    engine = create_engine(database_url)
    assert "event_outbox" not in inspect(engine).get_table_names()  # nothing half-made
    engine.dispose()
    assert topic_messages(domain_topics) == 0


@pytest.mark.parametrize("setting, words", [
    ({"EVENTS_KAFKA_NO_SUCH_THING": "1"}, ["no.such.thing"]),
    ({"EVENTS_KAFKA_ENABLE_IDEMPOTENCE": "maybe"}, ["enable.idempotence"]),  # the dead-letter producer's only
], ids=["unknown-property", "wrong-producer-value"])
def test_events_run_refuses_a_wrong_librdkafka_setting_before_it_creates_anything(kafka_env, admin, tmp_path,
                                                                                   setting, words):
    env = {"EVENTS_DATABASE_URL": f"sqlite:///{tmp_path / 'events.db'}", "EVENTS_METRICS_PORT": "0",
           "EVENTS_HEALTH_PORT": "0"}
    assert run_events("db", "init", env=env).returncode == 0
    result = run_events("run", "--group", "provider-usage", env={**env, **setting})
    assert_clear_failure(result, *words)
    # and it made nothing: no retry or dead-letter topic, no consumer group
    assert not [t for t in admin.list_topics(timeout=15).topics if t.startswith(f"{kafka_env}.")]
    assert not [g for g in admin.list_consumer_groups().result(15).valid if g.group_id.startswith(kafka_env)]
