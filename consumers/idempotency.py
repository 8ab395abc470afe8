"""The processed-events table: one row per (group, idempotency key) handled.

The idempotency step claims the key with an INSERT inside the same transaction as the handler's
effects, so both commit or neither does. A second delivery finds the row (the INSERT does nothing)
and is skipped. On PostgreSQL a concurrent second claim waits on the first's uncommitted row and
then sees it; on SQLite writers take the database lock up front (``BEGIN IMMEDIATE``), so two
claims never interleave either.

Rows are kept for a retention period (``purge(older_than)``): long enough to cover any redelivery
or replay you expect; a replay older than that runs handlers again.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from dify_events.schemas.headers import IDEMPOTENCY_KEY_MAX_LENGTH

metadata = MetaData()

processed_events = Table(
    "processed_events", metadata,
    Column("group_name", String(200), primary_key=True),
    Column("idempotency_key", String(IDEMPOTENCY_KEY_MAX_LENGTH), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, index=True),
)

SQLITE_BUSY_TIMEOUT_MS = 30_000
CLAIMS_PER_STATEMENT = 500  # 4 parameters a row: well under SQLite's and PostgreSQL's bind limits


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    """An engine that worker threads can share.

    SQLite: WAL journal (readers never wait on the writer), ``busy_timeout`` (a writer waits for the
    lock instead of failing at once), and ``BEGIN IMMEDIATE`` for every transaction (the write lock
    is taken at the start, so two transactions never deadlock upgrading from read to write); a
    file's directory is created.
    PostgreSQL and others: a pool as large as the worker count. No pre-ping (a round trip per
    transaction): a dead connection fails its attempt with a retryable ``OperationalError`` and
    SQLAlchemy then replaces every pooled connection. ``hide_parameters``: the statements' parameters
    are event data, and SQLAlchemy's errors (logged, put in dead-letter headers) would show them.
    """
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///"):  # a file (not :memory:): its directory may not exist yet
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                               pool_size=pool_size, max_overflow=pool_size, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (pysqlite's own is deferred)
            cur = dbapi_conn.cursor()
            _wal(cur)
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, hide_parameters=True)


def _wal(cursor: sqlite3.Cursor) -> None:
    """Puts the database in WAL mode, unless it is. Switching takes the database's lock without waiting
    (SQLite calls no busy handler for it): processes that open a new database at once (pods starting
    together) retry while another holds it, up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def create_table(engine: Engine) -> None:
    """Creates ``processed_events`` (and its index) if missing; safe to call from many processes."""
    try:
        metadata.create_all(engine, checkfirst=True)
    except IntegrityError:  # PostgreSQL: two processes created it at the same moment
        metadata.create_all(engine, checkfirst=True)


def _insert_ignoring_conflict(dialect: str):
    """``INSERT .. ON CONFLICT DO NOTHING RETURNING idempotency_key``, where the dialect has it."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return (pg_insert(processed_events).on_conflict_do_nothing(index_elements=["group_name", "idempotency_key"])
                .returning(processed_events.c.idempotency_key))
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert
        return (sqlite_insert(processed_events).on_conflict_do_nothing(index_elements=["group_name", "idempotency_key"])
                .returning(processed_events.c.idempotency_key))
    return None


class IdempotencyStore:
    """Claims and expires idempotency keys of one group in one database."""

    def __init__(self, engine: Engine, group: str):
        self.engine = engine
        self.group = group
        self._insert = _insert_ignoring_conflict(engine.dialect.name)

    def create(self) -> None:
        create_table(self.engine)

    def claim(self, conn: Connection, key: str, event_id: str, *, reprocess: bool = False) -> bool:
        """Claims ``key`` in the caller's transaction. True: first time, run the handler. False: a
        duplicate. With ``reprocess`` the claim always succeeds and the row is stamped anew."""
        now = datetime.now(UTC)
        row = {"group_name": self.group, "idempotency_key": key, "event_id": event_id, "processed_at": now}
        if self._insert is not None:
            # RETURNING, not rowcount: drivers disagree on rowcount after ON CONFLICT DO NOTHING
            claimed = conn.execute(self._insert, row).first() is not None
        else:  # another database: a savepoint keeps a conflict from spoiling the transaction
            try:
                with conn.begin_nested():
                    conn.execute(insert(processed_events), row)
                claimed = True
            except IntegrityError:
                claimed = False
        if claimed or not reprocess:
            return claimed
        conn.execute(update(processed_events)
                     .where(processed_events.c.group_name == self.group,
                            processed_events.c.idempotency_key == key)
                     .values(event_id=event_id, processed_at=now))
        return True

    def claim_many(self, conn: Connection, rows: Iterable[tuple[str, str]]) -> set[str]:
        """Claims many ``(key, event_id)`` in the caller's transaction with one multi-row INSERT (one per
        ``CLAIMS_PER_STATEMENT`` rows); returns the keys claimed now, the others being duplicates. Rows go
        in key order, so concurrent batches take the unique index's locks in one order and never deadlock
        on claims; a key given twice is claimed for its first event only."""
        now = datetime.now(UTC)
        by_key: dict[str, str] = {}
        for key, event_id in rows:
            by_key.setdefault(key, event_id)
        keys = sorted(by_key)
        if self._insert is None:  # another database: one claim at a time, each in a savepoint
            return {key for key in keys if self.claim(conn, key, by_key[key])}
        values = [{"group_name": self.group, "idempotency_key": key, "event_id": by_key[key], "processed_at": now}
                  for key in keys]
        claimed: set[str] = set()
        for start in range(0, len(values), CLAIMS_PER_STATEMENT):
            # One cached statement, executed with a list of rows: SQLAlchemy's "insertmanyvalues" sends it as
            # one multi-row INSERT .. RETURNING without compiling it again (``insert().values(rows)`` compiles
            # anew every time: 5 times the cost). Matched by the returned key: RETURNING's row order is not
            # guaranteed.
            claimed.update(conn.execute(self._insert, values[start:start + CLAIMS_PER_STATEMENT]).scalars())
        return claimed

    def unclaim(self, conn: Connection, keys: list[str]) -> None:
        """Deletes the claims of ``keys`` in the caller's transaction (events that left their batch)."""
        conn.execute(delete(processed_events).where(processed_events.c.group_name == self.group,
                                                    processed_events.c.idempotency_key.in_(keys)))

    def is_processed(self, key: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(processed_events.select().where(
                processed_events.c.group_name == self.group,
                processed_events.c.idempotency_key == key)).first() is not None

    def purge(self, older_than: timedelta, *, now: datetime | None = None) -> int:
        """Deletes this group's keys processed more than ``older_than`` ago; returns how many."""
        cutoff = (now or datetime.now(UTC)) - older_than
        with self.engine.begin() as conn:
            return conn.execute(delete(processed_events).where(
                processed_events.c.group_name == self.group,
                processed_events.c.processed_at < cutoff)).rowcount


def handled_by_group(engine: Engine) -> dict[str, int]:
    """Events each group has handled (its claims held now), measured from outside the groups."""
    with engine.connect() as conn:
        rows = conn.execute(select(processed_events.c.group_name, func.count()).group_by(processed_events.c.group_name))
        return {name: count for name, count in rows}
