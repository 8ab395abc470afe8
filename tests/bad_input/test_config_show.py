"""`events config show`: the effective settings and librdkafka properties, secrets masked."""

from __future__ import annotations

import json

from tests.bad_input.conftest import run_events

SECRETS = {"EVENTS_KAFKA_SASL_PASSWORD": "pw-Zq81x", "EVENTS_KAFKA_SSL_KEY_PASSWORD": "kp-Yw22",
           "EVENTS_KAFKA_SSL_KEY_PEM": "-----BEGIN PRIVATE KEY-----MIIEv", "EVENTS_KAFKA_SASL_USERNAME": "svc-events",
           "EVENTS_DATABASE_URL": "postgresql+psycopg://events:db-Pw77@db.internal:5432/dify",
           "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9093", "EVENTS_TOPIC_PREFIX": "prod"}


def test_config_show_prints_the_effective_settings_with_every_secret_masked(tmp_path):
    config = tmp_path / "events.yaml"
    config.write_text("kafka:\n  security.protocol: SASL_SSL\n  sasl.mechanism: SCRAM-SHA-512\n"
                      "  sasl.oauthbearer.client.secret: oauth-Sx9\n")
    env = {**SECRETS, "EVENTS_CONFIG_FILE": str(config)}
    # When the configuration is shown, as JSON and as tables
    as_json = run_events("config", "show", "--output", "json", env=env)
    as_table = run_events("config", "show", env=env)
    # Then it is the effective one: the environment over the file, the file's librdkafka properties passed on
    assert as_json.returncode == 0 and as_table.returncode == 0, as_json.stderr + as_table.stderr
    shown = json.loads(as_json.stdout)
    assert shown["settings"]["bootstrap_servers"] == "kafka-1:9093" and shown["settings"]["topic_prefix"] == "prod"
    assert shown["settings"]["database_url"] == "postgresql+psycopg://events:***@db.internal:5432/dify"
    for conf in (shown["kafka"], shown["clients"]["producer"], shown["clients"]["consumer"]):
        assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.username"] == "svc-events"
        assert conf["sasl.password"] == conf["ssl.key.password"] == conf["ssl.key.pem"] == "*****"
    assert shown["clients"]["consumer"]["group.id"] == "prod.example-group"
    # And no secret appears in either
    for secret in ("pw-Zq81x", "kp-Yw22", "MIIEv", "db-Pw77", "oauth-Sx9"):
        assert secret not in as_json.stdout + as_json.stderr + as_table.stdout + as_table.stderr, secret
