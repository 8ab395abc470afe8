"""A group for the time-limit scenario (``EVENTS_HANDLER_MODULES=tests.faults.hanging_handlers``).

``faults-hanger`` records each ``app_was_created`` as a row of ``hang_effects``, in the handler's
transaction, then, for some apps, hangs (a loop of short sleeps: interruptible) past its 1 s limit:
``hang_kind(app_id)`` says whether it hangs never, on the first attempt only, or on every attempt
(then it is dead-lettered once its attempts are spent). An interrupted attempt's row rolls back.
"""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from dify_events.consumers.context import HandlerContext
from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.registry import register
from dify_events.schemas.events import AppWasCreated

NEVER, FIRST, ALWAYS = "never", "first", "always"
TIME_LIMIT_S = 1.0
MAX_ATTEMPTS = 2

metadata = MetaData()
hang_effects = Table(
    "hang_effects", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("app_id", String(255), nullable=False),
    Column("attempt", Integer, nullable=False),
)

group = register(ConsumerGroup("faults-hanger", max_attempts=MAX_ATTEMPTS, min_backoff_s=0.1, max_backoff_s=0.3))


def hang_kind(app_id: str) -> str:
    return (NEVER, FIRST, ALWAYS)[hashlib.sha256(app_id.encode()).digest()[0] % 3]


@group.handler(AppWasCreated, time_limit_s=TIME_LIMIT_S)
def record_then_maybe_hang(event: AppWasCreated, ctx: HandlerContext) -> None:
    attempt = ctx.message.attempt
    ctx.session.execute(insert(hang_effects).values(event_id=event.event_id, app_id=event.app_id, attempt=attempt))
    kind = hang_kind(event.app_id)
    if kind == ALWAYS or (kind == FIRST and attempt == 1):
        while True:  # hangs until the time limit interrupts it
            time.sleep(0.05)
