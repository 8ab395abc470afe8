"""The relay as operators run it (`events outbox relay`, a process of its own): killed with
SIGKILL in the middle of its work and restarted, and two at once on PostgreSQL."""

from __future__ import annotations

import re
import signal
from collections import Counter

import pytest

from dify_events.schemas import headers as names

from .conftest import headers_of
from .support import counts, expected_order, first_seen_order, outbox_engine, relay_process, seed, wait_until

pytestmark = pytest.mark.faults


def hold_writes(engine):
    """A transaction that lets the relay read, lock and publish rows, but not mark them sent:
    SHARE mode on PostgreSQL (UPDATE needs ROW EXCLUSIVE), a RESERVED lock on SQLite."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn.exec_driver_sql("BEGIN")
        conn.exec_driver_sql("LOCK TABLE event_outbox IN SHARE MODE")
    else:
        conn.connection.driver_connection.isolation_level = None  # let us issue BEGIN ourselves
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    return conn


def test_a_relay_killed_mid_batch_loses_nothing_and_resumes_in_order(domain_topics, database_url, read_messages):
    # Given 4,000 committed outbox rows over 25 apps, and a relay process that has marked some sent
    engine = outbox_engine(database_url)
    events = seed(engine, 4000, 25)
    relay = relay_process(database_url, "--batch-size", "50")
    try:
        wait_until(lambda: counts(engine)[1] >= 200, 60, "the relay marks rows sent")
        # And a batch it has published (acknowledged by the broker) but could not yet mark sent
        blocker = hold_writes(engine)
        marked = blocker.exec_driver_sql("SELECT count(*) FROM event_outbox WHERE sent_at IS NOT NULL").scalar_one()
        read_messages([f"{domain_topics}.app"], marked + 1)
        # When it is killed with SIGKILL right there
        relay.send_signal(signal.SIGKILL)
        relay.wait(30)
        blocker.rollback()
        blocker.close()
    finally:
        if relay.poll() is None:
            relay.kill()
    pending_after_kill, _ = counts(engine)
    assert pending_after_kill > 0, "the relay was killed before it finished"
    # And a relay is started again and runs until the outbox is drained
    again = relay_process(database_url, "--once", "--batch-size", "500")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    # Then every row ends up sent
    assert counts(engine) == (0, len(events))
    # And every event is on the topic at least once; the unmarked batch went out again, with
    # the same event id and idempotency key, for consumers to drop
    messages = read_messages([f"{domain_topics}.app"], len(events), settle_s=1.0)
    copies = Counter(headers_of(m)[names.EVENT_ID].decode() for m in messages)
    assert set(copies) == {e.event_id for e in events}
    assert 0 < sum(copies.values()) - len(events) <= 50, "the killed relay's in-flight batch, and only it, came twice"
    for msg in messages:
        assert headers_of(msg)[names.IDEMPOTENCY_KEY] == headers_of(msg)[names.EVENT_ID]
    # And, keeping each event's first copy, every app's events are in the order they were added
    assert first_seen_order(messages) == expected_order(events)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_relays_on_postgres_share_the_work_without_sending_a_row_twice(domain_topics, database_url,
                                                                            read_messages):
    # Given two relay processes running at once on PostgreSQL, with small batches
    engine = outbox_engine(database_url)
    relays = [relay_process(database_url, "--batch-size", "50", "--poll-interval", "0.05", linger_ms=20)
              for _ in range(2)]
    try:
        for relay in relays:
            assert any("relaying" in line for line in iter(relay.stderr.readline, "")), "the relay started"
        # When 4,000 rows over 40 apps are committed to the outbox
        events = seed(engine, 4000, 40)
        wait_until(lambda: counts(engine) == (0, len(events)), 120, "the two relays drain the outbox")
    finally:
        for relay in relays:
            relay.send_signal(signal.SIGTERM)
        outputs = [relay.communicate(timeout=60) for relay in relays]
    assert [relay.returncode for relay in relays] == [0, 0], outputs
    # Then both did part of the work, and together they sent each row exactly once
    sent = [int(re.search(r"sent (\d+) events", out).group(1)) for out, _ in outputs]
    assert all(n > 0 for n in sent), sent
    assert sum(sent) == len(events)
    messages = read_messages([f"{domain_topics}.app"], len(events), settle_s=1.0)
    copies = Counter(headers_of(m)[names.EVENT_ID].decode() for m in messages)
    assert len(messages) == len(events) and set(copies) == {e.event_id for e in events}
    # And every app's events are on the topic in the order they were added
    assert first_seen_order(messages) == expected_order(events)
