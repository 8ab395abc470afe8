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
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..job import DUPLICATE, Job
from .step import CallNext, Step


class Idempotency(Step):
    options = {"idempotent": True}

    def __init__(self, resources):
        super().__init__(resources)
        self.engine = resources.engine
        self.store = resources.store

    @property
    def active(self) -> bool:
        return any(h.option("idempotent") for h in self.group.handlers.values())

    def process(self, job: Job, call_next: CallNext) -> str:
        assert job.handler is not None and job.event is not None  # Decode let the job through
        if not job.handler.option("idempotent"):
            return call_next(job)
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            if not self.store.claim(session.connection(), job.idempotency_key, job.event.event_id,
                                    reprocess=job.reprocess):
                return DUPLICATE
            job.session = session
            try:
                return call_next(job)
            finally:
                job.session = None
