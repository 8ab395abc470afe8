"""Batches: many idempotent events handled in one database transaction.

Under a backlog the dispatcher hands a worker a *batch*: contiguous runs of ready keys' queued
jobs, all of idempotent, ``batched`` handlers (``consumers.dispatcher``). ``BatchRunner.run`` then:

1. decodes each job; one that fails to decode, is a replay's ``events-reprocess``, or repeats an
   idempotency key seen earlier in the batch leaves the batch (below);
2. opens one transaction and claims every idempotency key with one statement
   (``IdempotencyStore.claim_many``); keys claimed before are duplicates, skipped;
3. runs each claimed job's handler, tenant by tenant (``lock_order``: no deadlock between two batches),
   through the steps after ``Idempotency`` (time limit, telemetry), in a SAVEPOINT, with ``ctx.session``
   the batch's session (the savepoint opens when the handler first reads ``ctx.session``: a handler that
   never does has nothing to undo); a batch handler (``ConsumerGroup.batch_handler``) takes each
   contiguous run of its claimed jobs in one call, in one savepoint, and a failing call's events all
   leave the batch (below);
4. removes the claims of the jobs that did not run, and commits once. Outcomes are reported only
   after COMMIT returns, so no offset moves before its effects are durable.

An event *leaves the batch*: its savepoint (if it ran) is rolled back, its claim removed, and it goes
back to the head of its key's queue with every later event of its key (per-key order), made ``solo``:
it runs alone on the per-event path, whose ``Retries`` counts the batch's failure as attempt 1
(backoff, dead letters and the breaker as ever). A ``pause_on`` failure (the database or a service is
down), or anything raised outside a savepoint (the claim, COMMIT, a time limit landing in runtime
code), rolls the whole batch back and sends every event the per-event way, where the outage breaker
decides. A batch open ``batch_max_s`` takes on no more events; the rest go back still batchable.

A handler must not end the transaction itself: ``ctx.session.commit()`` and ``.rollback()`` raise
``CommitInBatch`` (the event then runs alone, where they behave as before); declare it
``batched=False`` to always run it alone (so also a handler with effects outside the database).
Groups with a pipeline other than the default run every event alone.

Observers (``consumers.observers``) are told ``before_batch_job`` when a job is taken into the
transaction, ``after_batch`` when it commits or rolls back, then ``after_batch_job`` with each job's
outcome, or ``left_batch`` (and the error) for a job that goes on alone. Tracing gives each event
of a batch its own CONSUMER span that way, with ``events.batch.size``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from contextlib import ExitStack

from sqlalchemy.orm import Session

from ..context import OpensSession
from ..job import ABANDONED, DUPLICATE, HANDLED, Job
from ..observers import emit
from ..telemetry.fields import message_fields
from . import DEFAULT_PIPELINE, compose
from .decode import Decode
from .idempotency import Idempotency
from .step import Resources, Step

log = logging.getLogger("consumers.batch")

LEFT_BATCH = "left_batch"  # an outcome told to observers only: the event runs again, alone
# PostgreSQL caches 64 subtransactions per transaction (a savepoint that writes takes one); past them the
# whole server slows down (pg_subtrans lookups)
POSTGRES_SUBXIDS = 64


class CommitInBatch(RuntimeError):
    """A handler called ``ctx.session.commit()`` or ``.rollback()`` while in a batch."""


class BatchSession(Session):
    """The session of a batch (its handlers' ``ctx.session``): only the runner ends its transaction."""

    def commit(self) -> None:
        raise CommitInBatch("ctx.session.commit() inside a batch: the runner commits the whole batch; this event "
                            "will run again on its own (declare the handler batched=False to always run it alone)")

    def rollback(self) -> None:
        raise CommitInBatch("ctx.session.rollback() inside a batch: raise an exception to undo this event's "
                            "effects; this event will run again on its own (or declare the handler batched=False)")

    def commit_batch(self) -> None:
        super().commit()


class LazySavepoint(OpensSession):
    """``job.session`` of an event in a batch: called (by ``ctx.session``), it opens the event's savepoint in
    ``exits`` (which ends it with the handler's call) and gives the batch's session."""

    __slots__ = ("session", "exits", "opened")

    def __init__(self, session: BatchSession, exits: ExitStack):
        self.session, self.exits, self.opened = session, exits, False

    def __call__(self) -> BatchSession:
        if not self.opened:
            self.exits.enter_context(self.session.begin_nested())
            self.opened = True
        return self.session


def dispatch_key(job: Job) -> Hashable:
    """The key the runner dispatched ``job`` under: its message key, else its partition."""
    key = job.message.key()
    return job.lane if key is None else key


def lock_order(jobs: list[Job]) -> list[Job]:
    """``jobs`` ordered by tenant, each key's jobs in their order (a stable sort on the tenant of the key's
    first job). Handlers lock their tenants' rows (usage counters, quotas) as they run, so two batches that
    take the same tenants in two orders deadlock on PostgreSQL (each waits ``deadlock_timeout``, then one
    rolls back whole); taken in one order, the later batch only waits for the earlier one's commit."""
    tenants: dict[Hashable, str] = {}
    for job in jobs:
        tenants.setdefault(dispatch_key(job), job.event.tenant_id)  # type: ignore[union-attr]
    return sorted(jobs, key=lambda job: tenants[dispatch_key(job)])


class BatchRunner:
    """Runs batches of one group's jobs (``run``); ``of`` makes one when the group batches."""

    def __init__(self, resources: Resources, steps: list[Step], batch_max_s: float):
        self.group = resources.group
        self.breaker = resources.breaker
        self.batch_max_s = batch_max_s
        self.observers = resources.observers
        self.decode = next(s for s in steps if isinstance(s, Decode))
        idempotency = next(s for s in steps if isinstance(s, Idempotency))
        self.engine, self.store = idempotency.engine, idempotency.store
        self.inner = compose(resources, steps[steps.index(idempotency) + 1:])
        self.batched_types = frozenset(t for t, h in self.group.handlers.items()
                                       if h.option("idempotent") and h.option("batched"))
        self.committed = 0    # batches committed (for tests and stats)
        self.rolled_back = 0  # batches rolled back whole

    @classmethod
    def of(cls, resources: Resources, steps: list[Step], batch_max: int) -> BatchRunner | None:
        """A runner for the group's batches, or None when its events run one per transaction: ``batch_max``
        1, no handler batched and idempotent, or a pipeline other than the default one."""
        if batch_max <= 1 or [type(s) for s in steps] != DEFAULT_PIPELINE:
            return None
        idempotency = next(s for s in steps if isinstance(s, Idempotency))
        if not idempotency.active:
            return None
        if batch_max > POSTGRES_SUBXIDS and idempotency.engine.dialect.name == "postgresql":  # type: ignore[union-attr]
            log.warning("group %s: batch_max %d is above %d, which overflows PostgreSQL's cache of a transaction's "
                        "savepoints and slows the whole server down: use %d or less", resources.group.name,
                        batch_max, POSTGRES_SUBXIDS, POSTGRES_SUBXIDS)
        runner = cls(resources, steps, resources.group.option("batch_max_s"))
        return runner if runner.batched_types else None

    def batchable(self, job: Job) -> bool:
        """May ``job`` be taken into a batch (the dispatcher asks, under its lock)."""
        handler = job.handler
        return not job.solo and handler is not None and handler.event_type in self.batched_types

    def run(self, jobs: list[Job]) -> tuple[list[tuple[Job, str]], list[Job]]:
        """Handles ``jobs`` (a batch, in each key's order) in one transaction; returns the finished
        ``(job, outcome)`` pairs, reported after the commit, and the jobs to put back."""
        if self.breaker.is_open():  # an outage: the per-event path waits for it, lane by lane
            return [], self._alone(jobs)
        finished: list[tuple[Job, str]] = []
        back: list[Job] = []
        cut: set[Hashable] = set()  # keys with an event out of the batch: their later events wait behind it
        candidates: list[Job] = []
        seen: set[str] = set()
        for job in jobs:
            key = dispatch_key(job)
            if job.lane.revoked:
                finished.append((job, ABANDONED))
                continue
            if key in cut:
                back.append(job)
                continue
            try:
                self.decode.prepare(job)
            except Exception:  # noqa: BLE001 - the per-event path decodes it again and dead-letters it
                job.solo = True
            if job.solo or job.reprocess or job.idempotency_key in seen:
                job.solo = True
                cut.add(key)
                back.append(job)
                continue
            assert job.idempotency_key is not None  # decoded
            seen.add(job.idempotency_key)
            candidates.append(job)
        if candidates:
            done, left = self._transaction(lock_order(candidates))
            finished += done
            back += left
        return finished, back

    def _transaction(self, jobs: list[Job]) -> tuple[list[tuple[Job, str]], list[Job]]:
        """``jobs``' claims and handlers in one transaction (each key's jobs before any it left out)."""
        done: list[tuple[Job, str]] = []
        back: list[Job] = []
        cut: set[Hashable] = set()
        unclaim: list[str] = []
        before_job, after_job = self.observers.before_batch_job, self.observers.after_batch_job
        session = BatchSession(self.engine, expire_on_commit=False)
        try:
            session.begin()
            conn = session.connection()
            claimed = self.store.claim_many(conn, [(job.idempotency_key, job.event.event_id)  # type: ignore[misc,union-attr]
                                                   for job in jobs])
            started = time.monotonic()
            run: list[Job] = []  # a batch handler's claimed jobs, in a row: one call

            def call(called: list[Job]) -> None:
                """One handler call: each of its jobs is done, or leaves the batch with its key's later jobs."""
                failure = self._handle(called, session)
                for one in called:
                    if failure is None:
                        done.append((one, HANDLED))
                        continue
                    if after_job:
                        emit(after_job, one, LEFT_BATCH, failure)
                    # a commit refused in a batch is no failure of the handler: alone, it runs afresh
                    one.solo = True
                    one.first_failure = None if isinstance(failure, CommitInBatch) else failure
                    cut.add(dispatch_key(one))
                    back.append(one)
                    unclaim.append(one.idempotency_key)  # type: ignore[arg-type]

            for job in jobs:
                if run and run[0].handler is not job.handler:
                    call(run)
                    run = []
                key = dispatch_key(job)
                is_claimed = job.idempotency_key in claimed
                if key in cut or ((done or run) and time.monotonic() - started >= self.batch_max_s):
                    cut.add(key)
                    back.append(job)
                    if is_claimed:
                        unclaim.append(job.idempotency_key)  # type: ignore[arg-type]
                    continue
                if before_job:
                    emit(before_job, job, len(jobs))
                if not is_claimed:
                    done.append((job, DUPLICATE))
                    continue
                if job.handler.takes_list:  # type: ignore[union-attr]
                    run.append(job)
                else:
                    call([job])
            if run:
                call(run)
            if unclaim:
                self.store.unclaim(conn, unclaim)
            session.commit_batch()
        except BaseException as exc:  # noqa: BLE001 - anything outside a savepoint: the whole batch goes back
            session.close()  # rolls back
            self.rolled_back += 1
            emit(self.observers.after_batch, self.group.name, committed=False, messages=0)
            log.warning("group %s: a batch of %d events was rolled back (%s: %s); each runs alone now",
                        self.group.name, len(jobs), type(exc).__name__, str(exc)[:200],
                        extra=message_fields(jobs[0], self.group.name))
            for job in jobs:
                if after_job:
                    emit(after_job, job, LEFT_BATCH, exc)
            return [], self._alone(jobs)
        session.close()
        self.committed += 1
        emit(self.observers.after_batch, self.group.name, committed=True, messages=len(done))
        for job, outcome in done:
            if after_job:
                emit(after_job, job, outcome, None)
        for handler in {job.handler.name for job, outcome in done if outcome == HANDLED}:  # type: ignore[union-attr]
            self.breaker.success(handler)
        return done, back

    def _handle(self, jobs: list[Job], session: BatchSession) -> Exception | None:
        """Runs one handler call in a savepoint: ``jobs`` is one job, or a batch handler's run of them. None
        when it succeeded, else its failure (the savepoint rolled back). Raises a ``pause_on`` failure and
        anything not an ``Exception`` (the whole batch). The savepoint opens when the handler first reads
        ``ctx.session``: before anything it writes, and not at all for a handler that writes nothing
        (SQLAlchemy's nested transaction costs ~20 us)."""
        lead, handler = jobs[0], jobs[0].handler
        assert handler is not None  # decoded
        for job in jobs:
            job.attempts = 1
        lead.together = jobs if handler.takes_list else None
        try:
            with ExitStack() as exits:
                lead.session = LazySavepoint(session, exits)
                self.inner(lead)
        except Exception as exc:  # noqa: BLE001 - sorted here
            if isinstance(exc, handler.option("pause_on")):
                raise
            return exc
        finally:
            lead.session, lead.together = None, None
        return None

    @staticmethod
    def _alone(jobs: list[Job]) -> list[Job]:
        for job in jobs:
            job.solo, job.first_failure, job.attempts = True, None, 0
        return jobs
