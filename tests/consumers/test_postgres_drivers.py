"""Either PostgreSQL driver, the URL deciding: the outbox, its relay (advisory locks, ``FOR UPDATE``)
and a group's idempotency claims on psycopg 3 (``postgresql+psycopg://``), on psycopg2
(``postgresql+psycopg2://``), and on SQLAlchemy's default for a plain ``postgresql://``: psycopg2
up to SQLAlchemy 2.0 (Dify's), psycopg 3 from 2.1."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.orm import Session

from dify_events.producers import OutboxRelay
from dify_events.producers.outbox import add_to_outbox, create_outbox_table, outbox_status
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, publish, running, wait_until

pytestmark = pytest.mark.postgres
DEFAULT_DRIVER = "psycopg2" if sqlalchemy.__version__.startswith("2.0.") else "psycopg"


@pytest.fixture
def database_through(postgres_url) -> Iterator[Callable[[str], str]]:
    """``database_through(scheme)``: the URL of a fresh database on the test server, with that scheme."""
    server = make_url(postgres_url)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def create(scheme: str) -> str:
        name = f"drivers_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return server.set(drivername=scheme, database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as conn:
        for name in created:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.parametrize("scheme, driver", [("postgresql+psycopg", "psycopg"), ("postgresql+psycopg2", "psycopg2"),
                                            ("postgresql", DEFAULT_DRIVER)])
def test_outbox_relay_and_idempotency_claims_run_on_the_driver_the_url_names(
        scheme, driver, database_through, kafka_env, app_topic, group_topics, producer_factory):
    # Given a database reached through the URL's driver, holding the outbox and the sample handler's table
    url = database_through(scheme)
    engine = create_engine(url)
    assert engine.dialect.driver == driver
    create_outbox_table(engine)
    sample_handlers.create_tables(url)
    topic = app_topic()
    events = [app_event(f"app-{i % 3}", i) for i in range(9)]

    # When the events are added to the outbox in a transaction and the relay publishes them
    with Session(engine) as session, session.begin():
        for event in events:
            add_to_outbox(session, event)
    with OutboxRelay(engine) as relay:
        assert relay.run_once() == len(events)
    assert outbox_status(engine)["pending"] == 0
    # And each is published once more, as by a relay that died before marking its rows sent
    publish(producer_factory(), topic, events)
    # And a group handles them with its claims in the same database
    group, behaviour = sample_handlers.recording_group(database_url=url)
    group_topics(group.name)
    with running(group, concurrency=3) as runner:
        wait_until(lambda: runner.stats()["handled"] + runner.stats()["duplicates"] == 2 * len(events), 60)

    # Then each event had its effect once, the copies skipped by their claims
    assert runner.stats()["handled"] == len(events) and runner.stats()["duplicates"] == len(events)
    assert sorted(effect[0] for effect in sample_handlers.effects(url)) == sorted(e.event_id for e in events)
    engine.dispose()
