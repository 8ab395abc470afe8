"""The transactional outbox and its relay, in-process, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, MetaData, String, Table, create_engine, func, insert, select, update
from sqlalchemy.orm import Session

from dify_events.producers import EventProducer, OutboxRelay, OutboxTableMissing, RelayAlreadyRunning
from dify_events.producers.outbox import add_to_outbox, event_outbox, outbox_status, purge_sent
from dify_events.schemas import headers as names
from dify_events.schemas.catalogue import CATALOGUE
from dify_events.schemas.codec import AvroCodec
from dify_events.schemas.samples import TENANT, sample_events

from .conftest import headers_of
from .support import counts, expected_order, first_seen_order, outbox_engine, seed

codec = AvroCodec()
app_metadata = MetaData()
apps = Table("apps", app_metadata, Column("id", String(64), primary_key=True), Column("name", String(64)))


def marker_read(read_messages, topic: str, *, expected: int) -> list:
    """Everything on ``topic`` up to a marker event published last: proves what is NOT there
    without waiting for a silence."""
    marker = seed_marker(topic)
    messages = read_messages([topic], expected + 1)
    ids = [headers_of(m)[names.EVENT_ID].decode() for m in messages]
    assert marker in ids
    return [m for m in messages if headers_of(m)[names.EVENT_ID].decode() != marker]


def seed_marker(topic: str) -> str:
    from dify_events.schemas.events import AppWasCreated

    marker = AppWasCreated(tenant_id=TENANT, app_id="marker", mode="chat", name="marker", created_by="u")
    with EventProducer() as producer:
        producer.publish(marker, wait=True)
    return marker.event_id


def test_a_rolled_back_transaction_publishes_nothing(domain_topics, database_url, read_messages):
    # Given an application table and the outbox in one database
    engine = outbox_engine(database_url)
    app_metadata.create_all(engine)
    event = sample_events()[0]
    # When the application writes its row and adds the event in one transaction, then rolls back
    with Session(engine) as session:
        session.execute(insert(apps).values(id="app-1", name="Bot"))
        add_to_outbox(session, event)
        session.rollback()
    # Then neither the row nor the event is there, and the relay publishes nothing
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(apps)).scalar_one() == 0
    with OutboxRelay(engine) as relay:
        assert relay.run_once() == 0
    assert marker_read(read_messages, f"{domain_topics}.app", expected=0) == []


def test_a_committed_transaction_is_published_after_commit_with_its_headers(domain_topics, database_url,
                                                                           read_messages):
    # Given one event of each type added to the outbox with the application's row, committed
    engine = outbox_engine(database_url)
    app_metadata.create_all(engine)
    events = sample_events()
    with Session(engine) as session, session.begin():
        session.execute(insert(apps).values(id="app-1", name="Bot"))
        for event in events:
            add_to_outbox(session, event,
                          idempotency_key="business-42" if event.event_type == "app_was_created" else None)
    assert counts(engine) == (len(events), 0)
    # When the relay runs one round
    with OutboxRelay(engine) as relay:
        sent = relay.run_once()
        # Then every event was sent and marked, and a second round has nothing to do
        assert sent == len(events)
        assert relay.run_once() == 0
    assert counts(engine) == (0, len(events))
    # And each message is the event, on its topic and key, with the contract's headers
    messages = read_messages(CATALOGUE.topics(domain_topics), len(events))
    by_id = {e.event_id: e for e in events}
    for msg in messages:
        headers = headers_of(msg)
        event = by_id.pop(headers[names.EVENT_ID].decode())
        assert codec.decode(msg.value()) == event
        assert msg.key().decode() == CATALOGUE.for_event(event).key_of(event)
        assert headers[names.EVENT_TYPE] == event.event_type.encode()
        expected_key = b"business-42" if event.event_type == "app_was_created" else event.event_id.encode()
        assert headers[names.IDEMPOTENCY_KEY] == expected_key
    assert by_id == {}


def test_rows_of_one_key_are_published_in_insertion_order(domain_topics, database_url, read_messages):
    # Given 600 events over 7 apps, committed in three transactions
    engine = outbox_engine(database_url)
    events = seed(engine, 200, 7) + seed(engine, 200, 7) + seed(engine, 200, 7)
    # When a relay with batches of 64 drains the outbox
    with OutboxRelay(engine, batch_size=64) as relay:
        while relay.run_once():
            pass
    # Then each app's events are on the topic in the order they were added, each once
    messages = read_messages([f"{domain_topics}.app"], len(events), settle_s=0.5)
    assert len(messages) == len(events)
    assert first_seen_order(messages) == expected_order(events)


def test_a_row_that_cannot_be_published_stays_pending_with_its_error_until_it_can(kafka_env, database_url,
                                                                               topic_factory, read_messages):
    # Given an outbox row for a topic that does not exist yet
    engine = outbox_engine(database_url)
    [event] = seed(engine, 1, 1)
    producer = EventProducer({"message.timeout.ms": 3000, "topic.metadata.propagation.max.ms": 500})
    with OutboxRelay(engine, producer) as relay:
        # When the relay runs a round
        assert relay.run_once() == 0
        # Then the row stays pending, counted as failing, with librdkafka's reason
        state = outbox_status(engine)
        assert (state["pending"], state["failing"], state["sent"]) == (1, 1, 0)
        assert state["first_error"][0] == event.event_id
        assert "does not exist" in state["first_error"][1] or "timed out" in state["first_error"][1].lower()
    producer.close()
    # And once the topic exists, a new relay publishes it and marks it sent
    topic_factory(f"{kafka_env}.app")
    with OutboxRelay(engine) as relay:
        assert relay.run_once() == 1
    assert counts(engine) == (0, 1)
    [msg] = read_messages([f"{kafka_env}.app"], 1)
    assert headers_of(msg)[names.EVENT_ID] == event.event_id.encode()


def test_purge_deletes_only_rows_sent_before_the_retention(domain_topics, database_url):
    # Given three rows: sent 10 days ago, sent just now, and pending
    engine = outbox_engine(database_url)
    old, recent, pending = seed(engine, 3, 3)
    t = event_outbox
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.event_id == old.event_id)
                     .values(sent_at=datetime.now(UTC) - timedelta(days=10)))
        conn.execute(update(t).where(t.c.event_id == recent.event_id).values(sent_at=datetime.now(UTC)))
    # When sent rows older than 7 days are purged
    deleted = purge_sent(engine, timedelta(days=7))
    # Then only the old sent row is gone
    assert deleted == 1
    with engine.connect() as conn:
        left = set(conn.execute(select(t.c.event_id)).scalars())
    assert left == {recent.event_id, pending.event_id}


def test_a_second_relay_on_the_same_sqlite_database_is_refused(kafka_env, tmp_path):
    # Given a relay that has started on a SQLite database
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = outbox_engine(url)
    with OutboxRelay(engine) as first:
        first.run_once()
        # When a second relay starts on the same file
        second = OutboxRelay(create_engine(url))
        # Then it is refused, with a message that says why and what to do
        with pytest.raises(RelayAlreadyRunning, match=r"one relay at a time.*PostgreSQL"):
            second.run_once()
        second.close()
    # And once the first has stopped, a relay can start again
    with OutboxRelay(engine) as third:
        assert third.run_once() == 0


def test_a_database_without_the_outbox_table_is_explained(kafka_env, database_url):
    # Given a database where the application never created the outbox table
    engine = create_engine(database_url)
    # When the relay runs, Then it says what to do
    with OutboxRelay(engine) as relay, pytest.raises(OutboxTableMissing, match="events outbox init"):
        relay.run_once()
