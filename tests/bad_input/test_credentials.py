"""The secure connection, by configuration alone: producer, consumer group and `events` commands
reach a SASL_SSL LocalBroker through EVENTS_CONFIG_FILE only; a wrong password and an untrusted
certificate are refused with a clear error; and the password never appears in any output, log,
error message or dead-letter header, nor does a wrong one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from sqlalchemy import create_engine, func, select

from dify_events.consumers.broker import LocalBroker
from dify_events.consumers.broker.local import free_port
from dify_events.consumers.domain import create_all
from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.idempotency import processed_events
from dify_events.consumers.runner import GroupRunner
from dify_events.schemas import MessageWasCreated
from dify_events.schemas.settings import Settings, cache_dir
from dify_events.schemas.topics import TopicsError
from tests.bad_input.conftest import ROOT, run_events

WRONG = "wrong-Pa55word-" + uuid.uuid4().hex[:6]
UNTRUSTED_CA = "/etc/ssl/certs/ca-certificates.crt"
MESSAGE = {"tenant_id": "t1", "app_id": "a1", "conversation_id": "c1", "message_id": "m1", "provider_name": "openai",
           "model_name": "gpt-4o", "message_tokens": 3, "answer_tokens": 4, "total_tokens": 7}

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    broker = LocalBroker(tmp_path_factory.mktemp("secure-home"), cache_dir(), port=free_port(), secure=True)
    broker.start(timeout_s=120)
    yield broker
    broker.stop()


@pytest.fixture
def secure_env(secure_broker, tmp_path):
    """The environment of a process configured by EVENTS_CONFIG_FILE alone (no bootstrap, no EVENTS_KAFKA_*)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "EVENTS_BOOTSTRAP_SERVERS") and not k.startswith("EVENTS_KAFKA_")}
    env.update(EVENTS_CONFIG_FILE=str(secure_broker.client_config_file),
               EVENTS_TOPIC_PREFIX=f"sec{uuid.uuid4().hex[:8]}",
               EVENTS_HOME=str(tmp_path / "home"), EVENTS_DATABASE_URL=f"sqlite:///{tmp_path / 'events.db'}",
               EVENTS_METRICS_PORT="0", EVENTS_HEALTH_PORT="0", PYTHONUNBUFFERED="1",
               EVENTS_KAFKA_SESSION_TIMEOUT_MS="6000", EVENTS_KAFKA_HEARTBEAT_INTERVAL_MS="1000")
    return env


def events(env: dict, *args: str, timeout_s: float = 60, **extra) -> subprocess.CompletedProcess:
    return run_events(*args, env={**env, **extra}, timeout_s=timeout_s, inherit=False)


def client_conf(broker: LocalBroker) -> dict:
    return {"bootstrap.servers": broker.status().bootstrap, **broker.client_properties()}


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a credential appears in: ...{text[max(0, text.find(secret) - 200):][:400]}"


def test_everything_reaches_it_through_the_config_file_and_never_shows_the_password(secure_broker, secure_env,
                                                                                    tmp_path):
    password = secure_broker.credentials()["password"]
    prefix = secure_env["EVENTS_TOPIC_PREFIX"]
    seen: list[str] = []
    # Given the topics, made by `events topics apply` over SASL_SSL
    result = events(secure_env, "topics", "apply")
    seen.append(result.stdout + result.stderr)
    assert result.returncode == 0, seen[-1]
    # When an event is published by `events publish`, and a poison message straight onto the topic
    result = events(secure_env, "publish", "message_was_created", "--json", json.dumps(MESSAGE))
    seen.append(result.stdout + result.stderr)
    assert result.returncode == 0, seen[-1]
    poison = Producer(client_conf(secure_broker))
    poison.produce(f"{prefix}.message", b"not an event", b"poison", headers=[("event-type", b"message_was_created")])
    assert poison.flush(30) == 0
    # and the provider-usage group runs (`events run`), configured by the file alone, on the domain's tables
    tables = create_engine(secure_env["EVENTS_DATABASE_URL"])
    create_all(tables)
    tables.dispose()
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dify_events.consumers", "run", "--group", "provider-usage"],
                                env={**secure_env, "EVENTS_LOG_LEVEL": "DEBUG"}, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        engine = create_engine(secure_env["EVENTS_DATABASE_URL"])
        letters = []
        reader = Consumer({**client_conf(secure_broker), "group.id": f"dlq-{uuid.uuid4().hex}",
                           "auto.offset.reset": "earliest"})
        reader.subscribe([f"{prefix}.dlq.provider-usage"])
        deadline = time.monotonic() + 90
        handled = 0
        while time.monotonic() < deadline and not (letters and handled):
            msg = reader.poll(0.5)
            if msg is not None and msg.error() is None:
                letters.append(msg)
            try:
                with engine.connect() as conn:
                    handled = conn.execute(select(func.count()).select_from(processed_events)).scalar_one()
            except Exception:  # noqa: BLE001 - the table appears when the group starts
                handled = 0
            assert proc.poll() is None, log.read_text()
        reader.close()
        engine.dispose()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    # Then the event was handled and the poison dead-lettered
    assert handled == 1 and len(letters) == 1, log.read_text()[-3000:]
    headers = dict(letters[0].headers())
    assert headers["dlq-error-class"]
    seen.append(log.read_text())
    seen.append(repr(letters[0].headers()) + repr(letters[0].value()))
    # And `events config show` shows the settings with the password masked
    result = events(secure_env, "config", "show", "--output", "json")
    seen.append(result.stdout + result.stderr)
    shown = json.loads(result.stdout)
    assert shown["kafka"]["sasl.password"] == "*****" and shown["clients"]["producer"]["sasl.password"] == "*****"
    assert shown["kafka"]["security.protocol"] == "SASL_SSL"
    result = events(secure_env, "config", "show")
    seen.append(result.stdout + result.stderr)
    assert result.returncode == 0 and "*****" in result.stdout
    # And nowhere did the password appear
    for text in seen:
        assert_no_secret(text, password)


@pytest.mark.parametrize("override, words", [
    ({"EVENTS_KAFKA_SASL_PASSWORD": WRONG}, "refused our credentials"),
    ({"EVENTS_KAFKA_SSL_CA_LOCATION": UNTRUSTED_CA}, "TLS"),
], ids=["wrong-password", "untrusted-certificate"])
def test_a_wrong_password_or_an_untrusted_certificate_is_refused_clearly_without_showing_secrets(
        secure_broker, secure_env, tmp_path, override, words):
    password = secure_broker.credentials()["password"]
    # Given the file's settings but for one
    # When `events publish` and `events topics apply` try the broker
    for args in (("publish", "message_was_created", "--json", json.dumps(MESSAGE), "--timeout", "5"),
                 ("topics", "apply")):
        result = events(secure_env, *args, **override)
        output = result.stdout + result.stderr
        # Then each fails with a clear error, no traceback, and no password, right or wrong
        assert result.returncode != 0, output
        assert "Traceback" not in output and words in output, output[-2000:]
        assert_no_secret(output, password, WRONG)
    # And a consumer group refused by the broker stops at once (waiting would not help), saying why,
    # without the password
    assert events(secure_env, "db", "init", **override).returncode == 0
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dify_events.consumers", "run", "--group", "provider-usage"],
                                env={**secure_env, **override, "EVENTS_LOG_LEVEL": "DEBUG"}, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)
    expected = (("Authentication failed", "SASL") if "PASSWORD" in str(override)
                else ("certificate verify failed", "SSL"))
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        raise AssertionError(f"the refused group did not stop: {log.read_text()[-2000:]}") from None
    text = log.read_text()
    assert_no_secret(text, password, WRONG)
    assert code == 1 and any(w in text for w in expected), text[-2000:]
    assert words in text.splitlines()[-1] and "Traceback" not in text, text[-2000:]


def native_threads() -> int:
    """The process's threads as the kernel counts them: librdkafka's are not Python threads."""
    return len(os.listdir("/proc/self/task"))


def test_a_refused_group_leaves_no_kafka_client_behind(secure_broker, secure_env, monkeypatch):
    # A client alive when the process exits races OpenSSL's exit handlers from its threads: `events
    # run` refused by the cluster printed its error, then died of SIGSEGV about once in a hundred runs
    for name, value in {**secure_env, "EVENTS_KAFKA_SSL_CA_LOCATION": UNTRUSTED_CA}.items():
        monkeypatch.setenv(name, value)
    group = ConsumerGroup("refused", idempotent=False)
    group.handler(MessageWasCreated)(lambda event: None)
    runner = GroupRunner(group, settings=Settings(), health_port=0)
    before = native_threads()
    # When the cluster refuses the group's certificate check
    with pytest.raises(TopicsError) as refused:
        runner.run()
    assert "certificate verify failed" in str(refused.value)
    del refused  # its traceback holds the frames that made the clients
    # Then, the runner still held, none of its clients is left with threads running
    assert native_threads() <= before, f"{native_threads() - before} thread(s) of a Kafka client still run"
