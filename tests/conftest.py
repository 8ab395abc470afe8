"""Shared fixtures: a real Kafka cluster, a real PostgreSQL, and factories for topics, groups,
producers and consumers. Services are found or started here; in CI a missing service fails."""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import settings
from sqlalchemy import create_engine, text

from dify_events.schemas.topics import await_served
from tests.support.kafka import kafka_cluster
from tests.support.postgres import postgres_server
from tests.support.services import shared_services


def pytest_configure(config: pytest.Config) -> None:
    """In a parallel run, the broker and PostgreSQL start once, before the workers (``make test``)."""
    services = contextlib.ExitStack()
    services.enter_context(shared_services(config))
    config.add_cleanup(services.close)


# Property tests draw the same examples on every run: a counterexample found by chance would fail one
# CI run in many and pass its rerun. HYPOTHESIS_PROFILE=explore draws new ones (then fix what they find).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- Kafka -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with kafka_cluster() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def kafka_client_config(kafka_bootstrap) -> dict[str, str]:
    """What a plain client of the test cluster needs: its address and, for a configured secured
    cluster, the security properties of the platform's settings (``EVENTS_KAFKA_SASL_...``)."""
    from dify_events.schemas.settings import get_settings

    security = {k: v for k, v in get_settings().kafka_properties().items()
                if k.startswith(("security.", "sasl.", "ssl."))}
    return {**security, "bootstrap.servers": kafka_bootstrap}


@pytest.fixture(scope="session")
def admin(kafka_client_config) -> AdminClient:
    return AdminClient(kafka_client_config)


@pytest.fixture
def kafka_env(kafka_bootstrap, monkeypatch, tmp_path) -> Iterator[str]:
    """Points the platform's settings (and any `events` subprocess) at the test cluster, with a
    unique topic prefix so tests never see each other's topics. Returns the prefix."""
    yield from settings_pointed_at(kafka_bootstrap, monkeypatch, tmp_path)


def settings_pointed_at(bootstrap: str, monkeypatch, tmp_path) -> Iterator[str]:
    """The body of ``kafka_env`` for any cluster: yields the unique prefix, then clears the settings."""
    from dify_events.schemas.settings import get_settings

    prefix = unique("t").replace("-", "")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("EVENTS_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("EVENTS_HOME", str(tmp_path / "events-home"))
    get_settings.cache_clear()
    yield prefix
    get_settings.cache_clear()


@pytest.fixture
def topic_factory(admin) -> Iterator[Callable[..., str]]:
    """Creates topics with unique names (or the given name) and deletes them after the test."""
    created: list[str] = []

    def create(name: str | None = None, *, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = name or unique("topic")
        futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=30)
        futures[name].result(timeout=30)
        created.append(name)
        await_served(admin, {name: partitions})  # a write before that can be lost (schemas.topics.await_served)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created, operation_timeout=30).values():
            try:
                future.result(timeout=30)
            except Exception:  # noqa: BLE001 - already gone is fine
                pass


@pytest.fixture
def group_topics(kafka_env, topic_factory) -> Callable[..., tuple[str, str]]:
    """Creates a group's retry and dead-letter topics under the test's prefix (deleted after the test;
    the runner would create them too, but then nobody deletes them)."""

    def create(group: str, partitions: int = 1) -> tuple[str, str]:
        return (topic_factory(f"{kafka_env}.retry.{group}", partitions=partitions),
                topic_factory(f"{kafka_env}.dlq.{group}", partitions=partitions))

    return create


@pytest.fixture
def group_factory() -> Callable[[], str]:
    return lambda: unique("group")


@pytest.fixture
def producer_factory(kafka_client_config) -> Iterator[Callable[..., Producer]]:
    producers: list[Producer] = []

    def create(**config) -> Producer:
        producer = Producer({**kafka_client_config, "enable.idempotence": True, **config})
        producers.append(producer)
        return producer

    yield create
    for producer in producers:
        producer.flush(10)


@pytest.fixture
def consumer_factory(kafka_client_config) -> Iterator[Callable[..., Consumer]]:
    consumers: list[Consumer] = []

    def create(group: str, topics: list[str] | None = None, **config) -> Consumer:
        consumer = Consumer({**kafka_client_config, "group.id": group,
                             "auto.offset.reset": "earliest", "enable.auto.commit": False, **config})
        if topics:
            consumer.subscribe(topics)
        consumers.append(consumer)
        return consumer

    yield create
    for consumer in consumers:
        try:
            consumer.close()
        except RuntimeError:  # closed by the test already
            pass


# -- databases -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> Iterator[str]:
    """A SQLAlchemy URL of an empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}"
        return
    server = request.getfixturevalue("postgres_url")
    name = unique("db").replace("-", "_")
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    url = server.rsplit("/", 1)[0] + f"/{name}"
    yield url
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def pytest_collection_modifyitems(config, items):
    """Tests that use the Kafka fixtures carry the `kafka` marker, whether or not they say so."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
    _longest_first(items)


def _longest_first(items) -> None:
    """Each ``longest`` test first in a worker's first batch, so that under pytest-xdist (``make
    test``: ``--maxschedchunk 1``, each worker's first batch is two tests) they run beside the
    others from the start rather than one after another at the end."""
    longest = [item for item in items if item.get_closest_marker("longest")]
    rest = [item for item in items if not item.get_closest_marker("longest")]
    paired = [item for pair in itertools.zip_longest(longest, rest[:len(longest)]) for item in pair if item]
    items[:] = paired + rest[len(longest):]
