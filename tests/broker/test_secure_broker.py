"""`events broker start --secure`: TLS from a local CA and SASL/SCRAM users, reached by configuration alone."""

import logging

import pytest
import yaml
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from dify_events.consumers.broker import LocalBroker
from dify_events.consumers.broker.local import free_port
from dify_events.schemas.settings import Settings, cache_dir

QUIET = logging.getLogger("tests.librdkafka")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    broker = LocalBroker(tmp_path_factory.mktemp("secure-home"), cache_dir(), port=free_port(), secure=True)
    broker.start(timeout_s=90)
    yield broker
    broker.stop()


@pytest.mark.kafka
def test_clients_reach_it_through_the_config_file_alone(secure_broker, monkeypatch):
    # Given the settings read only from the config file the broker wrote
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("EVENTS_CONFIG_FILE", str(secure_broker.client_config_file))
    settings = Settings()
    conf = {"bootstrap.servers": settings.bootstrap(), **settings.kafka_properties()}
    assert conf["security.protocol"] == "SASL_SSL"

    # When a topic is made, written and read over SASL_SSL
    admin = AdminClient(conf)
    admin.create_topics([NewTopic("secure", 1, 1)])["secure"].result(30)
    producer = Producer(conf)
    producer.produce("secure", b"over tls")
    assert producer.flush(30) == 0
    consumer = Consumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"})
    consumer.subscribe(["secure"])
    msg = consumer.poll(30)
    consumer.close()

    # Then it arrives
    assert msg is not None and msg.value() == b"over tls"


@pytest.mark.kafka
@pytest.mark.parametrize("override", [{"sasl.password": "not-the-password"},
                                      {"ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt"}],
                         ids=["wrong-password", "untrusted-certificate"])
def test_a_wrong_password_or_an_untrusted_certificate_is_refused(secure_broker, override):
    # Given the right configuration but for one setting
    conf = {"bootstrap.servers": f"127.0.0.1:{secure_broker.status().port}", **secure_broker.client_properties(),
            **override, "logger": QUIET}
    errors = []
    admin = AdminClient({**conf, "error_cb": errors.append})
    # When a client asks for metadata, then it is refused
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    admin.poll(1)
    # and the reason librdkafka gives says which
    reasons = " ".join(str(e) for e in errors)
    assert ("Authentication failed" in reasons) or ("certificate verify failed" in reasons)


@pytest.mark.kafka
def test_the_credentials_file_is_private(secure_broker):
    for name in ("credentials.json", "client.yaml", "server.properties"):
        assert (secure_broker.home / name).stat().st_mode & 0o077 == 0, name
    assert yaml.safe_load(secure_broker.client_config_file.read_text())["kafka"]["sasl.username"] == "events"
