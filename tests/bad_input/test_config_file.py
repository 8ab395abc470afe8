"""A wrong config file or setting: one clear error line that names the file or the setting, never its
value (it may be a password), never a traceback; YAML's numbers and booleans are librdkafka values."""

from __future__ import annotations

import json

import pytest

from tests.bad_input.conftest import run_events
from tests.bad_input.test_cli import assert_clear_failure

PASSWORD = "Hunter2-s3cret-pw"


@pytest.mark.parametrize("text, words", [
    (f'kafka:\n  sasl.password: "{PASSWORD}\n  linger.ms: 5\n', ["not valid YAML", "line 2, column 18"]),
    (f"kafka:\n  sasl.password: {PASSWORD}\n  - oops\n", ["not valid YAML", "line 3, column 3"]),
    (f'kafka: "sasl.password={PASSWORD}"\n', ["not valid", "kafka: Input should be a valid dictionary"]),
    (f"concurrency: {PASSWORD}\n", ["not valid", "concurrency: Input should be a valid integer"]),
    (f"kafka:\n  sasl.password: {{nested: {PASSWORD}}}\n", ["not valid", "kafka.sasl.password"]),
], ids=["unterminated-quote", "bad-indent", "kafka-not-a-mapping", "wrong-type", "nested-value"])
def test_a_config_file_error_names_the_file_and_the_place_but_never_the_password(tmp_path, text, words):
    # Given a config file with a mistake on or near the password
    path = tmp_path / "events.yaml"
    path.write_text(text)
    # When any command reads it
    result = run_events("config", "show", env={"EVENTS_CONFIG_FILE": str(path)})
    # Then it fails clearly, naming the file and the mistake, and the password appears nowhere
    output = assert_clear_failure(result, str(path), *words)
    assert PASSWORD not in output and "s3cret" not in output, output
    assert len(output.strip().splitlines()) == 1, output


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "events.yaml"
    path.write_bytes(b"kafka:\n  sasl.password: \xff\xfe" + PASSWORD.encode("utf-16-le") + b"\n")
    result = run_events("config", "show", env={"EVENTS_CONFIG_FILE": str(path)})
    output = assert_clear_failure(result, str(path), "not UTF-8")
    assert "codec can't decode" not in output and PASSWORD not in output


def test_yaml_numbers_and_booleans_are_librdkafka_values(tmp_path):
    # Given librdkafka properties written as YAML users write them
    path = tmp_path / "events.yaml"
    path.write_text("kafka:\n  linger.ms: 10\n  enable.idempotence: true\n  batch.num.messages: 1000\n"
                    "  socket.nagle.disable: yes\n  queue.buffering.max.ms: 0.5\n")
    # When the configuration is shown
    result = run_events("config", "show", "--output", "json", env={"EVENTS_CONFIG_FILE": str(path),
                                                                   "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    # Then they are accepted, as librdkafka's text
    assert result.returncode == 0, result.stderr
    producer = json.loads(result.stdout)["clients"]["producer"]
    assert producer["linger.ms"] == "10" and producer["enable.idempotence"] == "true"
    assert producer["batch.num.messages"] == "1000" and producer["socket.nagle.disable"] == "true"
    assert producer["queue.buffering.max.ms"] == "0.5"


@pytest.mark.parametrize("env, args, words", [
    ({"EVENTS_IDEMPOTENCY_RETENTION_DAYS": "1e12"}, [], ["idempotency_retention_days", "36500"]),
    ({"EVENTS_IDEMPOTENCY_RETENTION_DAYS": "nan"}, [], ["idempotency_retention_days", "finite"]),
    ({}, ["--idempotency-retention-days", "1e12"], ["--idempotency-retention-days", "36500"]),
    ({}, ["--idempotency-retention-days", "nan"], ["--idempotency-retention-days", "not a number of days"]),
    ({"EVENTS_DRAIN_TIMEOUT_S": "inf"}, [], ["drain_timeout_s", "finite"]),
    ({"EVENTS_DRAIN_TIMEOUT_S": "1e300"}, [], ["drain_timeout_s", "86400"]),
], ids=["retention-env-huge", "retention-env-nan", "retention-option-huge", "retention-option-nan", "drain-inf",
        "drain-huge"])
def test_out_of_range_durations_are_refused_before_anything_runs(tmp_path, env, args, words):
    result = run_events("run", "--group", "provider-usage", "--health-port", "0", "--metrics-port", "0", *args,
                        env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "EVENTS_HOME": str(tmp_path), **env})
    assert_clear_failure(result, *words)
