"""The transactional outbox: events written in the application's own database transaction.

``add_to_outbox(session, event)`` encodes the event and inserts one row into ``event_outbox`` on
the caller's session or connection, with no Kafka I/O: the row commits with the application's
changes, or rolls back with them. The relay (``producers.relay.OutboxRelay``, ``events outbox
relay``) publishes committed rows afterwards, in ``id`` order per key, and marks each row sent only
once the broker acknowledged it.

The table has its own ``MetaData`` (``metadata``): create it with ``create_outbox_table(engine)``,
or add ``producers.outbox.metadata`` to the application's migrations (Alembic's
``target_metadata`` accepts a list).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
)

from dify_events.schemas.catalogue import CATALOGUE, Catalogue
from dify_events.schemas.codec import AvroCodec
from dify_events.schemas.errors import UnknownEventType
from dify_events.schemas.events import Event
from dify_events.schemas.settings import get_settings

from .errors import OutboxTableMissing, UnpublishableEvent
from .headers import build_headers

TABLE = "event_outbox"
metadata = MetaData()

_pending = text("sent_at IS NULL")
event_outbox = Table(
    TABLE, metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True,
           comment="insertion order: the relay publishes each key's rows in this order"),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("event_type", String(128), nullable=False),
    Column("topic", String(249), nullable=False),
    Column("key", String(255), nullable=False, comment="the Kafka message key (the aggregate id)"),
    Column("payload", LargeBinary, nullable=False, comment="the Avro single-object-encoded event"),
    Column("headers", JSON, nullable=False, comment="[[name, UTF-8 value], ...], trace context included"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True, comment="set once the broker acknowledged the row"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Index("ix_event_outbox_pending", "id", postgresql_where=_pending, sqlite_where=_pending),
    Index("ix_event_outbox_pending_key", "key", "id", postgresql_where=_pending, sqlite_where=_pending),
    Index("ix_event_outbox_sent_at", "sent_at"),
    sqlite_autoincrement=True,  # never reuse an id, even after the newest rows were purged
)

_INSERT = insert(event_outbox)  # one statement object: SQLAlchemy compiles it once
_codec: AvroCodec | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_outbox_table(engine: Engine) -> None:
    """Creates ``event_outbox`` and its indexes if they are missing (idempotent)."""
    metadata.create_all(engine, checkfirst=True)


def require_outbox_table(engine: Engine) -> None:
    """Raises ``OutboxTableMissing`` (with what to do) when the database has no outbox table."""
    if not inspect(engine).has_table(TABLE):
        raise OutboxTableMissing(
            f"the database {engine.url.render_as_string(hide_password=True)} has no {TABLE} table: the application "
            "creates it with producers.outbox.create_outbox_table(engine) or its migrations, or run "
            "`events outbox init`")


def add_to_outbox(session, event: Event, *, key: str | None = None, idempotency_key: str | None = None,
                  headers: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None = None,
                  catalogue: Catalogue = CATALOGUE, codec: AvroCodec | None = None,
                  topic_prefix: str | None = None) -> str:
    """Adds ``event`` to the outbox in the transaction of ``session`` (a SQLAlchemy ``Session``
    or ``Connection``): nothing is sent now, nothing at all if that transaction rolls back.

    The row holds the topic, the key (the aggregate id unless ``key`` is given), the encoded
    event and its headers (``idempotency_key`` or the event id; the current trace context), so
    every re-publish by the relay is byte-for-byte the same message. Returns the event id."""
    if not isinstance(event, Event):
        raise UnpublishableEvent(f"add_to_outbox() takes an event of schemas.events, not {type(event).__name__}")
    try:
        spec = catalogue.for_event(event)
    except UnknownEventType as exc:
        raise UnpublishableEvent(str(exc), event_id=event.event_id) from exc
    topic = spec.topic(topic_prefix or get_settings().topic_prefix)
    try:
        payload = (codec or _default_codec(catalogue)).encode(event)
    except Exception as exc:  # noqa: BLE001 - fastavro raises several types
        raise UnpublishableEvent(f"it does not encode with its schema: {exc}", event_id=event.event_id,
                                 event_type=spec.event_type, topic=topic) from exc
    try:
        stored = [[name, _text(name, value)] for name, value in
                  build_headers(spec, event, idempotency_key=idempotency_key, extra=headers)]
    except ValueError as exc:  # a business idempotency key consumers would refuse, a reserved header
        raise UnpublishableEvent(str(exc), event_id=event.event_id, event_type=spec.event_type, topic=topic) from exc
    session.execute(_INSERT, {"event_id": event.event_id, "event_type": spec.event_type, "topic": topic,
                              "key": key if key is not None else spec.key_of(event), "payload": payload,
                              "headers": stored, "created_at": utcnow()})
    return event.event_id


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ValueError(f"the outbox stores header values as UTF-8 text; {name!r} is not") from None


def _default_codec(catalogue: Catalogue) -> AvroCodec:
    global _codec
    if catalogue is not CATALOGUE:
        return AvroCodec(catalogue)
    if _codec is None:
        _codec = AvroCodec(CATALOGUE)
    return _codec


def outbox_status(engine: Engine) -> dict[str, Any]:
    """Counts of pending and sent rows, pending rows that failed at least once, the oldest
    pending row's age and the last send."""
    require_outbox_table(engine)
    t = event_outbox
    with engine.connect() as conn:
        pending, failing, oldest = conn.execute(
            select(func.count(), func.count().filter(t.c.attempts > 0), func.min(t.c.created_at))
            .where(t.c.sent_at.is_(None))).one()
        sent, last_sent = conn.execute(
            select(func.count(), func.max(t.c.sent_at)).where(t.c.sent_at.is_not(None))).one()
        last_error = conn.execute(select(t.c.event_id, t.c.last_error).where(
            t.c.sent_at.is_(None), t.c.last_error.is_not(None)).order_by(t.c.id).limit(1)).first()
    return {"pending": pending, "failing": failing, "sent": sent, "oldest_pending_at": _aware(oldest),
            "last_sent_at": _aware(last_sent), "first_error": tuple(last_error) if last_error else None}


def purge_sent(engine: Engine, retention: timedelta, *, chunk: int = 10_000) -> int:
    """Deletes rows sent more than ``retention`` ago, ``chunk`` rows a transaction. Returns the count."""
    require_outbox_table(engine)
    t = event_outbox
    cutoff = utcnow() - retention
    total = 0
    while True:
        with engine.begin() as conn:
            ids = select(t.c.id).where(t.c.sent_at.is_not(None), t.c.sent_at < cutoff).limit(chunk)
            deleted = conn.execute(delete(t).where(t.c.id.in_(ids.scalar_subquery()))).rowcount
        total += deleted
        if deleted < chunk:
            return total


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive: they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
