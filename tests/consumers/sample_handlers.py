"""A consumer group for the runtime's tests: its handler records each event it handles as a row of
``sample_effects`` (in the handler's transaction), and can be told to fail or to be slow.

In-process tests build their own groups with ``recording_group()``. Subprocess tests
(``events run --group sample-recorder`` with ``EVENTS_HANDLER_MODULES=tests.consumers.sample_handlers``)
use the registered ``sample-recorder`` group; ``SAMPLE_HANDLER_DELAY_S`` slows each handling down.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, insert, select

from dify_events.consumers.context import BatchContext, HandlerContext
from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.registry import register
from dify_events.schemas.events import AppWasCreated

metadata = MetaData()
sample_effects = Table(
    "sample_effects", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("app_id", String(255), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("group_name", String(200), nullable=False),
)


def create_tables(url: str) -> None:
    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()


def effects(url: str) -> list[tuple[str, str, int]]:
    """(event_id, app_id, seq) of every recorded effect, in insertion order."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(sample_effects.c.event_id, sample_effects.c.app_id, sample_effects.c.seq)
                            .order_by(sample_effects.c.id)).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def effect_count(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(sample_effects)).scalar_one()
    engine.dispose()
    return n


@dataclass
class Behaviour:
    """What the recording handler does, set by a test while the group runs."""

    fail: dict[str, int] = field(default_factory=dict)       # app_id -> failures left (-1: always)
    error: type[Exception] = RuntimeError
    delay_s: dict[str, float] = field(default_factory=dict)  # app_id -> seconds per handling
    default_delay_s: float = 0.0
    outage_until: float = 0.0                                 # time.monotonic() before which every call fails
    outage_error: Exception | None = None
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # app_id -> attempts seen
    running: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    overlaps: list[str] = field(default_factory=list)         # app_ids seen running twice at once
    order: list[tuple[str, int]] = field(default_factory=list)
    batch_calls: list[list[tuple[str, int]]] = field(default_factory=list)  # (app_id, seq) of each batch call
    threads: list[tuple[str, int, str]] = field(default_factory=list)  # (app_id, seq, thread name) of each attempt
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, event: AppWasCreated, ctx: HandlerContext) -> None:
        app_id = event.app_id
        with self.lock:
            self.threads.append((app_id, int(event.name.rsplit("-", 1)[-1]), threading.current_thread().name))
            self.calls[app_id] += 1
            self.running[app_id] += 1
            if self.running[app_id] > 1:
                self.overlaps.append(app_id)
        try:
            delay = self.delay_s.get(app_id, self.default_delay_s)
            until = time.monotonic() + delay
            while time.monotonic() < until:  # short sleeps: interruptible, as Python code is
                time.sleep(min(0.01, max(0.0, until - time.monotonic())))
            if time.monotonic() < self.outage_until:
                assert self.outage_error is not None  # set with outage_until
                raise self.outage_error
            with self.lock:
                left = self.fail.get(app_id, 0)
                if left:
                    self.fail[app_id] = left - 1 if left > 0 else left
            if left:
                raise self.error(f"told to fail on {app_id} (attempt {ctx.message.attempt})")
            if ctx.in_transaction:
                ctx.session.execute(insert(sample_effects).values(
                    event_id=event.event_id, app_id=app_id, seq=int(event.name.rsplit("-", 1)[-1]),
                    attempt=ctx.message.attempt, group_name=ctx.group))
            with self.lock:
                self.order.append((app_id, int(event.name.rsplit("-", 1)[-1])))
        finally:
            with self.lock:
                self.running[app_id] -= 1


    def handle_batch(self, events: list[AppWasCreated], ctx: BatchContext) -> None:
        """As a batch handler: records the call, then handles each event as ``handle`` does, with its own
        context (so one that fails fails the call)."""
        with self.lock:
            self.batch_calls.append([(e.app_id, int(e.name.rsplit("-", 1)[-1])) for e in events])
        for event, event_ctx in zip(events, ctx.contexts, strict=True):
            self.handle(event, event_ctx)


def recording_group(name: str = "sample-recorder", behaviour: Behaviour | None = None, *,
                    database_url: str | None = None, handler_options: dict | None = None, batch: bool = False,
                    **group_options) -> tuple[ConsumerGroup, Behaviour]:
    """``batch``: its handler is a batch handler (``handle_batch``)."""
    behaviour = behaviour or Behaviour()
    group = ConsumerGroup(name, database_url=database_url, **group_options)
    if batch:
        group.batch_handler(AppWasCreated, **(handler_options or {}))(behaviour.handle_batch)
    else:
        group.handler(AppWasCreated, **(handler_options or {}))(behaviour.handle)
    return group, behaviour


# -- the registered group, for `events run` in a subprocess -------------------------------------
_behaviour = Behaviour(default_delay_s=float(os.environ.get("SAMPLE_HANDLER_DELAY_S", "0")))
group, _ = recording_group("sample-recorder", _behaviour, max_attempts=3, min_backoff_s=0.05)
register(group)
