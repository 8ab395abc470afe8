"""The outbox relay: publishes committed outbox rows, in order per key, and marks them sent.

One round (``run_once``) takes up to ``batch_size`` pending rows, hands them all to librdkafka,
waits for the broker's answers, and marks sent exactly the rows it acknowledged. Guarantees:

- **At least once.** A row is marked sent only after its acknowledgement. A relay killed at any
  point leaves its unacknowledged rows pending, and the next round publishes them again, byte
  for byte (same event id, same idempotency-key header): consumers drop the duplicates.
- **Per-key order.** Rows of one key are published in ``id`` order, through one idempotent
  producer (librdkafka keeps a partition's order across its own retries), and a key is never
  published by two relays at once (below). A row whose publishing fails is retried first in the
  next round; within a round, a key's later rows are not handed over after a failure that is
  known at once, but rows already in flight when a broker-side failure comes back may land
  before the failed row's retry. ``events outbox status`` shows failing rows.
- **Several relays (PostgreSQL).** Each round runs in one READ COMMITTED transaction held until
  the acknowledgements are in. The relay scans the oldest pending rows, takes a transaction-level
  advisory lock per key (``pg_try_advisory_xact_lock(hashtext('event_outbox'), hashtext(key))``,
  skipping keys another relay holds, the key-level form of ``SKIP LOCKED``) until its keys cover a
  batch, then re-reads the pending rows of just those keys ``FOR UPDATE`` (a fresh snapshot,
  after the locks, so it sees what the key's previous holder committed). So a key belongs to one
  relay at a time, and that relay publishes the key's oldest pending rows: the case "relay A locks
  row 5 of key K while relay B holds row 4" cannot arise, since row-level ``SKIP LOCKED`` alone
  would allow exactly that. Distinct keys that share a hash are only serialised, never mixed.
- **One relay (SQLite).** SQLite has no row locks; a second relay on the same database file
  is refused (an exclusive ``flock`` on ``<file>.relay.lock``, which the OS releases when the
  holder dies, even by SIGKILL). The relay reads, publishes, then marks in a short write
  transaction, so the application's writers are not blocked while acknowledgements travel.
- **Known limit.** Order is ``id`` order among committed rows. Two application transactions
  that add rows of the same key concurrently, and commit in the opposite order of their inserts,
  can have the later-committed (lower id) row published after the other; transactions that change
  one aggregate normally serialise on its row, which rules this out.

Sent rows are deleted after ``retention`` by ``purge()`` (``run()`` calls it every
``purge_interval_s``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, bindparam, create_engine, select, text, update

from .errors import OutboxError, PublishError, RelayAlreadyRunning
from .outbox import event_outbox, purge_sent, require_outbox_table, utcnow
from .producer import Delivery, EventProducer

log = logging.getLogger("producers.relay")

_ROW_COLUMNS = (event_outbox.c.id, event_outbox.c.event_id, event_outbox.c.topic, event_outbox.c.key,
                event_outbox.c.payload, event_outbox.c.headers)
_LOCK_KEYS = text("SELECT k FROM unnest(CAST(:keys AS text[])) AS k "
                  "WHERE pg_try_advisory_xact_lock(hashtext('event_outbox'), hashtext(k))")


@dataclass
class RoundResult:
    """What one round did."""

    sent: list[int] = field(default_factory=list)           # row ids acknowledged
    failed: dict[int, PublishError] = field(default_factory=dict)
    unanswered: list[int] = field(default_factory=list)     # no answer within ack_timeout_s


class Stop(Protocol):
    """What ``OutboxRelay.run`` waits on: a ``threading.Event``, or one a signal handler may set."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class OutboxRelay:
    """Publishes the outbox's committed rows. ``engine``: a SQLAlchemy engine or URL (PostgreSQL
    or SQLite). ``producer``: an ``EventProducer`` (default: one from the settings, closed with
    the relay). ``ack_timeout_s``: how long a round waits for the broker's answers; rows without
    one stay pending and are published again."""

    def __init__(self, engine: Engine | str, producer: EventProducer | None = None, *, batch_size: int = 500,
                 poll_interval_s: float = 0.5, retention: timedelta = timedelta(days=7),
                 ack_timeout_s: float = 60.0, purge_interval_s: float = 300.0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self._own_engine = isinstance(engine, str)
        engine = create_engine(engine, hide_parameters=True) if isinstance(engine, str) else engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("postgresql", "sqlite"):
            raise OutboxError(f"the outbox relay runs on PostgreSQL or SQLite, not {self.dialect}")
        if self.dialect == "postgresql":  # the re-read after the key locks needs a fresh snapshot
            engine = engine.execution_options(isolation_level="READ COMMITTED")
        self.engine = engine
        self._own_producer = producer is None
        self.producer = producer if producer is not None else EventProducer()
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.retention = retention
        self.ack_timeout_s = ack_timeout_s
        self.purge_interval_s = purge_interval_s
        self.sent_total = 0
        self.rounds = 0
        self.last_round = RoundResult()
        self.last_round_at: float | None = None  # time.monotonic() when a round last ended, failed ones too
        self._ready = False
        self._lock_file: int | None = None

    # -- the work ---------------------------------------------------------------------------
    def run_once(self) -> int:
        """One round: publishes up to ``batch_size`` pending rows; returns how many were sent."""
        self._prepare()
        if self.dialect == "postgresql":
            with self.engine.begin() as conn:
                rows = self._claim_postgres(conn)
                result = self._publish(rows)
                self._mark(conn, result)
        else:
            with self.engine.connect() as conn:
                rows = conn.execute(select(*_ROW_COLUMNS).where(event_outbox.c.sent_at.is_(None))
                                    .order_by(event_outbox.c.id).limit(self.batch_size)).all()
            result = self._publish(rows)
            with self.engine.begin() as conn:
                self._mark(conn, result)
        self.rounds += 1
        self.sent_total += len(result.sent)
        self.last_round = result
        self.last_round_at = time.monotonic()
        return len(result.sent)

    def run(self, stop_event: Stop) -> None:
        """Rounds until ``stop_event`` is set: at once after a full batch, else every
        ``poll_interval_s``; a round that fails (database or broker away) is retried with
        exponential backoff up to 30 s. Purges sent rows every ``purge_interval_s``."""
        backoff = self.poll_interval_s
        next_purge = time.monotonic()
        while not stop_event.is_set():
            try:
                sent = self.run_once()
            except OutboxError:
                raise  # a second relay on SQLite, a missing table: waiting does not help
            except Exception:  # noqa: BLE001 - the relay outlives a database or broker outage
                log.exception("an outbox relay round failed; retrying in %.1f s", backoff)
                self.last_round_at = time.monotonic()  # the loop is alive, waiting out an outage
                stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            failed = len(self.last_round.failed) + len(self.last_round.unanswered)
            if time.monotonic() >= next_purge:
                self.purge()
                next_purge = time.monotonic() + self.purge_interval_s
            if failed and not sent:
                stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            else:
                backoff = self.poll_interval_s
                if sent < self.batch_size:
                    stop_event.wait(self.poll_interval_s)

    def purge(self) -> int:
        """Deletes rows sent more than ``retention`` ago; returns how many."""
        deleted = purge_sent(self.engine, self.retention)
        if deleted:
            log.info("purged %d outbox rows sent more than %s ago", deleted, self.retention)
        return deleted

    def close(self) -> None:
        """Closes the producer (and engine) the relay made and releases the SQLite relay lock."""
        if self._own_producer:
            self.producer.close()
        if self._own_engine:
            self.engine.dispose()
        if self._lock_file is not None:
            os.close(self._lock_file)  # closing the descriptor releases the flock
            self._lock_file = None

    def __enter__(self) -> OutboxRelay:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------
    def _prepare(self) -> None:
        if self._ready:
            return
        require_outbox_table(self.engine)
        if self.dialect == "sqlite":
            self._lock_sqlite()
        self._ready = True

    def _lock_sqlite(self) -> None:
        database = self.engine.url.database
        if not database or database == ":memory:" or database.startswith("file::memory:"):
            return  # a private in-memory database: no other process can see it
        db_file = Path(database).resolve()
        path = db_file.with_name(db_file.name + ".relay.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RelayAlreadyRunning(
                f"another outbox relay is already running on {database} (pid {holder} holds {path}); SQLite allows "
                "one relay at a time: stop that one first, or use PostgreSQL to run several") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_file = fd

    def _claim_postgres(self, conn) -> Sequence[Any]:
        """Locks whole keys (advisory locks) until they cover a batch, then reads their oldest
        pending rows ``FOR UPDATE``."""
        t = event_outbox
        window = conn.execute(select(t.c.key).where(t.c.sent_at.is_(None)).order_by(t.c.id)
                              .limit(self.batch_size * 4)).scalars().all()
        counts = Counter(window)  # insertion order: keys by their oldest row in the window
        keys = list(counts)
        owned: list[str] = []
        covered = 0
        start = 0
        while covered < self.batch_size and start < len(keys):
            end, want = start, covered
            while end < len(keys) and want < self.batch_size:
                want += counts[keys[end]]
                end += 1
            got = set(conn.execute(_LOCK_KEYS, {"keys": keys[start:end]}).scalars())
            for key in keys[start:end]:
                if key in got:
                    owned.append(key)
                    covered += counts[key]
            start = end
        if not owned:
            return []
        return conn.execute(select(*_ROW_COLUMNS).where(t.c.sent_at.is_(None), t.c.key.in_(owned))
                            .order_by(t.c.id).limit(self.batch_size).with_for_update()).all()

    def _publish(self, rows) -> RoundResult:
        result = RoundResult()
        if not rows:
            return result
        acks = _Acks()
        handed: list[int] = []
        stopped_keys: set[str] = set()
        for row in rows:
            if row.key in stopped_keys:
                continue  # an earlier row of this key could not be handed over: keep the order
            headers = [(name, value.encode()) for name, value in row.headers]
            handed.append(row.id)
            try:
                self.producer.publish_encoded(row.topic, row.payload, key=row.key, headers=headers,
                                              event_id=row.event_id, on_result=partial(acks.answer, row.id))
            except PublishError as exc:
                acks.answer(row.id, None, exc)
                stopped_keys.add(row.key)
        answers = acks.wait(self.producer, len(handed), self.ack_timeout_s)
        for row_id, error in answers.items():
            if error is None:
                result.sent.append(row_id)
            else:
                result.failed[row_id] = error
                log.error("outbox row %d not published (it stays pending): %s", row_id, error)
        result.unanswered = [row_id for row_id in handed if row_id not in answers]
        if result.unanswered:
            log.warning("%d outbox rows got no answer within %.0f s; they stay pending and will be published again",
                        len(result.unanswered), self.ack_timeout_s)
        return result

    def _mark(self, conn, result: RoundResult) -> None:
        t = event_outbox
        if result.sent:
            conn.execute(update(t).where(t.c.id.in_(result.sent))
                         .values(sent_at=utcnow(), attempts=t.c.attempts + 1, last_error=None))
        if result.failed:
            conn.execute(update(t).where(t.c.id == bindparam("row_id"))
                         .values(attempts=t.c.attempts + 1, last_error=bindparam("error")),
                         [{"row_id": row_id, "error": str(error)[:2000]} for row_id, error in result.failed.items()])


class _Acks:
    """Collects the broker's answers for one round (on whichever thread serves delivery reports)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._answers: dict[int, PublishError | None] = {}

    def answer(self, row_id: int, delivery: Delivery | None, error: PublishError | None) -> None:
        with self._lock:
            self._answers[row_id] = error

    def wait(self, producer: EventProducer, expected: int, timeout: float) -> dict[int, PublishError | None]:
        """Serves delivery reports until ``expected`` answers came in or ``timeout`` seconds
        passed; returns them (row id -> None for acknowledged, else the error)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self._answers) >= expected or time.monotonic() >= deadline:
                    return dict(self._answers)
            producer.poll(min(0.01, max(0.0, deadline - time.monotonic())))
