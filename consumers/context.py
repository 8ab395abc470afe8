"""What a handler sees besides its event: the message's metadata, the transaction, a logger."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("consumers.handler")


class NoTransaction(RuntimeError):
    """``ctx.session`` of a handler that runs outside the runtime's transaction (``idempotent=False``)."""


class OpensSession:
    """A session opened when the handler first reads ``ctx.session`` (``HandlerContext`` calls it then): in a
    batch, the event's savepoint opens there."""

    __slots__ = ()

    def __call__(self) -> Session:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """Where the event came from. ``headers`` maps each header name to its (last) value's bytes;
    ``timestamp`` is the broker's or producer's milliseconds since the epoch; ``attempt`` counts
    from 1 and includes attempts made before a re-drive (the ``events-attempt`` header)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: dict[str, bytes]
    timestamp: int
    attempt: int


class HandlerContext:
    """Given to ``handle(event, ctx)``.

    - ``session``: the SQLAlchemy ``Session`` of this attempt's transaction, in which the runtime
      has already claimed the event's idempotency key. Write the handler's effects through it and
      do not commit: the runtime commits the claim and the effects together, or rolls both back.
      Handlers declared ``idempotent=False`` run outside any transaction: for them it raises
      ``NoTransaction`` (they open their own sessions).
    - ``message``: a ``MessageMeta``.
    - ``log``: a ``LoggerAdapter`` whose records carry the event id and type, group, topic,
      partition and offset.
    - ``reprocess``: True when a replay asked to run the handler again for an event already done.
    """

    __slots__ = ("group", "handler", "event_id", "event_type", "reprocess", "_session", "_message", "_log")

    def __init__(self, *, session: Session | OpensSession | None, message: MessageMeta | Callable[[], MessageMeta],
                 group: str, handler: str, event_id: str, event_type: str, reprocess: bool = False):
        self._session = session
        self._message = message  # or a function that makes it: most handlers never look
        self.group = group
        self.handler = handler
        self.event_id = event_id
        self.event_type = event_type
        self.reprocess = reprocess
        self._log: logging.LoggerAdapter | None = None

    @property
    def in_transaction(self) -> bool:
        """Whether the handler runs in the runtime's transaction (then ``session`` is its session)."""
        return self._session is not None

    @property
    def session(self) -> Session:
        if self._session is None:
            raise NoTransaction(f"handler {self.handler} of group {self.group} is declared idempotent=False, so it "
                                "runs outside the runtime's transaction and has no ctx.session: open a session "
                                "of your own, or declare it idempotent to write through the runtime's")
        session = self._session
        if isinstance(session, OpensSession):
            session = self._session = session()
        return session

    @property
    def message(self) -> MessageMeta:
        message = self._message
        if not isinstance(message, MessageMeta):
            message = self._message = message()
        return message

    @property
    def log(self) -> logging.LoggerAdapter:
        if self._log is None:
            m = self.message
            self._log = logging.LoggerAdapter(log, {
                "event_id": self.event_id, "event_type": self.event_type, "group": self.group,
                "handler": self.handler, "topic": m.topic, "partition": m.partition, "offset": m.offset,
                "attempt": m.attempt,
            })
        return self._log

    def __repr__(self) -> str:
        m = self.message
        return (f"HandlerContext({self.group}/{self.handler}: {self.event_type} {self.event_id} "
                f"at {m.topic}[{m.partition}]@{m.offset}, attempt {m.attempt})")


class BatchContext:
    """Given to a batch handler's ``handle(events, ctx)`` (``ConsumerGroup.batch_handler``).

    - ``contexts``: each event's own ``HandlerContext`` (its ``message``, ``event_id``, ``log``), in
      the order of ``events``: ``zip(events, ctx.contexts)`` pairs them.
    - ``session``: the one transaction's session of the whole call (every context's ``session``).
    - ``log``: a ``LoggerAdapter`` whose records carry the group, handler, event type and the number of
      events (no event id: it speaks for them all; ``contexts[i].log`` speaks for one).
    """

    __slots__ = ("contexts", "group", "handler", "event_type", "_log")

    def __init__(self, contexts: list[HandlerContext]):
        first = contexts[0]
        self.contexts = contexts
        self.group, self.handler, self.event_type = first.group, first.handler, first.event_type
        self._log: logging.LoggerAdapter | None = None

    @property
    def in_transaction(self) -> bool:
        return self.contexts[0].in_transaction

    @property
    def session(self) -> Session:
        return self.contexts[0].session

    @property
    def log(self) -> logging.LoggerAdapter:
        if self._log is None:
            self._log = logging.LoggerAdapter(log, {"group": self.group, "handler": self.handler,
                                                    "event_type": self.event_type, "events": len(self.contexts)})
        return self._log

    def __repr__(self) -> str:
        return f"BatchContext({self.group}/{self.handler}: {len(self.contexts)} {self.event_type})"


def extra(**fields: Any) -> dict[str, Any]:
    return {"extra": fields}
