"""Helpers of the outbox tests: seed an outbox, run `events outbox relay` as a process, read rows."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from dify_events.producers.outbox import add_to_outbox, create_outbox_table, event_outbox
from dify_events.schemas import headers as names
from dify_events.schemas.events import AppWasCreated
from tests.support.waiting import wait_until  # noqa: F401 - re-exported to this package's tests


def outbox_engine(url: str) -> Engine:
    engine = create_engine(url)
    create_outbox_table(engine)
    return engine


def seed(engine: Engine, count: int, keys: int, *, tenant: str = "tenant-1") -> list[AppWasCreated]:
    """Commits ``count`` AppWasCreated events to the outbox, the app ids cycling over ``keys`` keys."""
    events = [AppWasCreated(tenant_id=tenant, app_id=f"app-{i % keys}", mode="chat", name=f"v{i}", created_by="u")
              for i in range(count)]
    with Session(engine) as session, session.begin():
        for event in events:
            add_to_outbox(session, event)
    return events


def counts(engine: Engine) -> tuple[int, int]:
    """(pending, sent) rows."""
    t = event_outbox
    with engine.connect() as conn:
        pending = conn.execute(select(func.count()).where(t.c.sent_at.is_(None))).scalar_one()
        sent = conn.execute(select(func.count()).where(t.c.sent_at.is_not(None))).scalar_one()
    return pending, sent




def relay_process(database_url: str, *args: str, linger_ms: int = 5) -> subprocess.Popen:
    """`events outbox relay` in its own process, on this test's broker, prefix and database."""
    env = {**os.environ, "EVENTS_DATABASE_URL": database_url, "EVENTS_KAFKA_LINGER_MS": str(linger_ms),
           "EVENTS_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "dify_events.consumers.cli", "outbox", "relay", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def first_seen_order(messages) -> dict[bytes, list[str]]:
    """Per key, the event ids in the order they first appear in their partition."""
    by_key: dict[bytes, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for msg in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        event_id = dict(msg.headers())[names.EVENT_ID].decode()
        if event_id not in seen:
            seen.add(event_id)
            by_key[msg.key()].append(event_id)
    return by_key


def expected_order(events) -> dict[bytes, list[str]]:
    by_key: dict[bytes, list[str]] = defaultdict(list)
    for event in events:
        by_key[event.app_id.encode()].append(event.event_id)
    return by_key
