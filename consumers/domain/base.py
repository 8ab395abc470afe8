"""The domain's declarative base, its portable column types, ``create_all`` and ``insert_ignore``.

Portable means one model runs on SQLite (the embedded default) and PostgreSQL (production): ids
are UUID text, times are timezone-aware UTC on both (SQLite keeps them as naive UTC text; this
module puts the zone back), JSON is SQLAlchemy's ``JSON``.

Like Dify's own models, tables have no foreign keys: events of different domains travel on
different topics and are handled by independent groups, so a handler must be able to write a row
whose neighbour does not exist (yet, or any more). The invariants (``invariants.py``) check what
foreign keys would have.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import JSON, CursorResult, DateTime, Engine, MetaData, Result, String, Table, TypeDecorator
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    """A new row id: a random UUID in text form, as Dify's ids are."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """``DateTime(timezone=True)`` that reads back timezone-aware UTC on every database.

    Naive datetimes are refused: a time without a zone is a bug waiting for a server in
    another zone (use ``datetime.now(UTC)``)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: give it a zone (datetime.now(UTC))")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The domain's own base: its MetaData holds only the domain's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
        str: String(255),
    }


def create_all(engine: Engine) -> None:
    """Creates every domain table and index that does not exist yet (SQLite and PostgreSQL)."""
    from . import app, dataset, provider, tenant, trigger  # noqa: F401 - registers the models on Base.metadata

    Base.metadata.create_all(engine)


_INSERTS: dict[str, Callable[[Table], postgresql.Insert | sqlite.Insert]] = {
    "postgresql": postgresql.insert, "sqlite": sqlite.insert}  # the dialects with ON CONFLICT


def insert_ignore(session: Session, model: type[Base], values: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                  conflict: Sequence[str] | None = None) -> int:
    """``INSERT ... ON CONFLICT DO NOTHING``: how many rows were inserted.

    ``conflict`` names the columns of the unique constraint to ignore a clash on; None ignores a
    clash on any. This is the race-free "create it unless it exists": two writers at once never
    raise, and the loser sees 0."""
    rows = [dict(values)] if isinstance(values, Mapping) else [dict(v) for v in values]
    if not rows:
        return 0
    table = model.__table__
    assert isinstance(table, Table)  # a declarative model's (typed as any FromClause)
    for row in rows:  # Core inserts with several rows do not fill Python-side defaults per row
        for column in table.columns:
            if column.key not in row and column.default is not None and column.default.is_callable:
                row[column.key] = column.default.arg(None)  # SQLAlchemy wraps it to take a context
            elif column.key not in row and column.default is not None and column.default.is_scalar:
                row[column.key] = column.default.arg
    index = tuple(conflict) if conflict else None
    if len(rows) == 1:  # one statement per table and conflict, compiled once: its row goes as parameters
        return rowcount(session.execute(_insert_ignore_one(_insert_of(session), table, index), rows[0]))
    keys = {key for row in rows for key in row}
    rows = [{key: row.get(key) for key in keys} for row in rows]  # one shape for a multi-row VALUES
    # SQLAlchemy compiles a multi-row VALUES again on every call (its cache keeps no such statement)
    stmt = dialect_insert(session, model).values(rows).on_conflict_do_nothing(index_elements=index)
    # rowcount of an INSERT is only kept when asked for (SQLAlchemy 2.1 on psycopg gives -1 otherwise)
    return rowcount(session.execute(stmt.execution_options(preserve_rowcount=True)))


@functools.cache
def _insert_ignore_one(insert: Callable[[Table], postgresql.Insert | sqlite.Insert], table: Table,
                       index: tuple[str, ...] | None) -> postgresql.Insert | sqlite.Insert:
    """``insert_ignore``'s statement for one row given as parameters: built once, so SQLAlchemy finds its
    compiled form in its cache (a ``.values(row)`` statement costs ~2.5 times as much to execute)."""
    return insert(table).on_conflict_do_nothing(index_elements=index).execution_options(
        preserve_rowcount=True)


def insert_ignore_returning(session: Session, model: type[Base], values: Sequence[Mapping[str, Any]],
                            column: Any, conflict: Sequence[str] | None = None) -> set[Any]:
    """``insert_ignore`` that says which rows it inserted: ``column``'s values of them (``RETURNING``). The rows
    go as parameters of one compiled (cached) statement, which SQLAlchemy sends as multi-row ``VALUES``."""
    if not values:
        return set()
    stmt = dialect_insert(session, model).on_conflict_do_nothing(index_elements=list(conflict) if conflict else None)
    return set(session.scalars(stmt.returning(column), list(values)))


def dialect_insert(session: Session, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` into ``model``'s table in the session's database's own terms (with ``ON CONFLICT``)."""
    table = model.__table__
    assert isinstance(table, Table)  # a declarative model's (typed as any FromClause)
    return _insert_of(session)(table)


def _insert_of(session: Session) -> Callable[[Table], postgresql.Insert | sqlite.Insert]:
    dialect = session.get_bind().dialect.name
    if dialect not in _INSERTS:
        raise NotImplementedError(f"insert .. on conflict supports sqlite and postgresql, not {dialect}")
    return _INSERTS[dialect]


def rowcount(result: Result[Any]) -> int:
    """The rows an INSERT, UPDATE or DELETE touched: ``Session.execute`` returns a ``CursorResult``
    for those, but is typed to return any ``Result``."""
    return cast(CursorResult[Any], result).rowcount
