"""Idempotency: one database transaction per attempt, claiming the idempotency key first.

Inside ``Retries``, so every attempt is its own transaction: the claim of
``(group, idempotency_key)`` in ``processed_events`` and the handler's effects (written through
``ctx.session``) commit together or roll back together. A failed attempt leaves nothing behind,
not even the claim, so the next attempt starts clean; and no transaction stays open (holding
locks and a connection) through a backoff. A key claimed before means the event was handled:
the handler is skipped (outcome ``duplicate``). A replay's ``events-reprocess: 1`` header runs the
handler again and stamps the claim anew.

Handlers declared ``idempotent=False`` run without a transaction (``ctx.session`` raises
``NoTransaction``):
they must be idempotent on their own, since at-least-once delivery may run them twice.

The step owns what it uses, made when it is (only when a handler is idempotent): the engine on the
group's database (a connection per worker, and 2 more), the ``processed_events`` table (created when
missing), and, when the runner asks for it (``Resources.purge_interval_s``), a thread that purges
keys older than ``Resources.idempotency_retention``. ``close()`` stops the thread and disposes of the
engine.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ..idempotency import IdempotencyStore, make_engine
from ..job import DUPLICATE, Job
from .step import CallNext, Resources, Step

log = logging.getLogger("consumers.idempotency")
PURGE_JOIN_S = 5.0  # past it, close() disposes the engine under a purge stuck on its database


class Idempotency(Step):
    options = {"idempotent": True, "batched": True}  # batched: may share a transaction (consumers.pipeline.batch)

    def __init__(self, resources: Resources):
        super().__init__(resources)
        self._active = any(h.option("idempotent") for h in self.group.handlers.values())
        self._stop = threading.Event()
        self._purger: threading.Thread | None = None
        self.engine: Engine | None = None
        if not self._active:
            return
        if resources.database_url is None:
            raise ValueError(f"group {self.group.name}: Idempotency needs a database_url")
        self.engine = make_engine(resources.database_url, pool_size=resources.workers + 2)
        try:
            self.store = IdempotencyStore(self.engine, self.group.name)
            self.store.create()
        except BaseException:
            self.engine.dispose()
            raise
        if resources.purge_interval_s is not None:
            self._purger = threading.Thread(target=self._purge_loop, args=(resources.purge_interval_s,),
                                            name=f"events-purge-{self.group.name}", daemon=True)
            self._purger.start()

    @property
    def active(self) -> bool:
        return self._active

    def process(self, job: Job, call_next: CallNext) -> str:
        assert job.handler is not None and job.event is not None  # Decode let the job through
        if not job.handler.option("idempotent"):
            return call_next(job)
        assert job.idempotency_key is not None  # Decode set it
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            if not self.store.claim(session.connection(), job.idempotency_key, job.event.event_id,
                                    reprocess=job.reprocess):
                return DUPLICATE
            job.session = session
            try:
                return call_next(job)
            finally:
                job.session = None

    def _purge_loop(self, interval_s: float) -> None:
        retention = self.resources.idempotency_retention
        while not self._stop.is_set():
            try:
                purged = self.store.purge(retention)
                if purged:
                    log.info("group %s purged %d idempotency keys older than %s", self.group.name, purged, retention)
            except Exception as exc:  # noqa: BLE001 - the database may be down; try again next time
                log.warning("purging idempotency keys of %s failed: %s", self.group.name, exc)
            if self._stop.wait(interval_s):
                return

    def close(self) -> None:
        """Stops the purge (a purge under way has ``PURGE_JOIN_S`` to finish) and releases the engine."""
        self._stop.set()
        if self._purger is not None:
            self._purger.join(PURGE_JOIN_S)
        if self.engine is not None:
            self.engine.dispose()
