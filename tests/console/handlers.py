"""The console tests' consumer group, for ``events run`` in a subprocess
(``EVENTS_HANDLER_MODULES=tests.console.handlers``): it records each event it handles in
``console_effects`` and rejects (dead-letters at once) apps named ``poison-*``, unless the app is
named in ``CONSOLE_SAMPLE_FIXED`` (comma-separated): the bug fixed, for the redrive."""

from __future__ import annotations

import os

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select

from dify_events.consumers.context import HandlerContext
from dify_events.consumers.errors import MessageRejected
from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.registry import register
from dify_events.schemas.events import AppWasCreated

GROUP = "console-sample"
metadata = MetaData()
console_effects = Table(
    "console_effects", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("app_id", String(255), nullable=False),
)


def create_tables(url: str) -> None:
    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()


def effects(url: str) -> list[tuple[str, str]]:
    """(event_id, app_id) of every event handled, in order."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(console_effects.c.event_id, console_effects.c.app_id)
                            .order_by(console_effects.c.id)).all()
    engine.dispose()
    return [(r[0], r[1]) for r in rows]


group = register(ConsumerGroup(GROUP, max_attempts=1))


@group.handler(AppWasCreated)
def record(event: AppWasCreated, ctx: HandlerContext) -> None:
    fixed = {name.strip() for name in os.environ.get("CONSOLE_SAMPLE_FIXED", "").split(",")}
    if event.app_id.startswith("poison") and event.app_id not in fixed:
        raise MessageRejected(f"cannot provision {event.app_id}: its tenant has no plan")
    ctx.session.execute(insert(console_effects).values(event_id=event.event_id, app_id=event.app_id))
