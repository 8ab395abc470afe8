"""A group for the redrive scenario (``EVENTS_HANDLER_MODULES=tests.faults.flaky_handlers``).

``faults-flaky`` records each ``message_was_created`` as a row of ``flaky_effects``, in the handler's
transaction. Until its bug is fixed (a row in ``flaky_fix``) it rejects one message in four (chosen by
``rejected(message_id)``): those are dead-lettered at once, to be re-driven after the fix.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from dify_events.consumers.context import HandlerContext
from dify_events.consumers.errors import MessageRejected
from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.registry import register
from dify_events.schemas.events import MessageWasCreated

metadata = MetaData()
flaky_effects = Table(
    "flaky_effects", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("message_id", String(255), nullable=False),
)
flaky_fix = Table("flaky_fix", metadata, Column("id", Integer, primary_key=True))

group = register(ConsumerGroup("faults-flaky"))


def rejected(message_id: str) -> bool:
    return hashlib.sha256(message_id.encode()).digest()[0] % 4 == 0


@group.handler(MessageWasCreated)
def record_unless_buggy(event: MessageWasCreated, ctx: HandlerContext) -> None:
    fixed = ctx.session.execute(select(func.count()).select_from(flaky_fix)).scalar_one()
    if rejected(event.message_id) and not fixed:
        raise MessageRejected(f"the bug rejects message {event.message_id}")
    ctx.session.execute(insert(flaky_effects).values(event_id=event.event_id, message_id=event.message_id))
