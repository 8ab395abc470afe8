"""The platform's database tables: created by ``events db init``, checked when a group starts.

``create_tables`` makes what is missing of the seed groups' domain (``consumers.domain``), the
transactional outbox (``producers.outbox``) and the runtime's ``processed_events``; run twice, it
changes nothing. ``require_tables`` is what ``events run`` checks before it consumes anything: a
handler that meets a missing table would fail every message as if the database were down.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, Table, inspect

from .errors import ConsumerError


class MissingTables(ConsumerError):
    """The database lacks tables a group's handlers use."""


def create_tables(engine: Engine) -> tuple[list[str], list[str]]:
    """Creates every missing table; returns (created, already there), by name."""
    from dify_events.producers.outbox import metadata as outbox_tables

    from . import idempotency
    from .domain import Base

    wanted = [*Base.metadata.sorted_tables, *outbox_tables.sorted_tables, *idempotency.metadata.sorted_tables]
    before = set(inspect(engine).get_table_names())
    for metadata in (Base.metadata, outbox_tables):
        metadata.create_all(engine, checkfirst=True)
    idempotency.create_table(engine)  # safe when several processes race
    created = [t.name for t in wanted if t.name not in before]
    return created, [t.name for t in wanted if t.name in before]


def require_tables(engine: Engine, tables: Iterable[Table], *, group: str) -> None:
    """Raises ``MissingTables`` naming the first missing table and what to do."""
    tables = list(tables)
    if not tables:
        return
    present = set(inspect(engine).get_table_names())
    missing = [t.name for t in tables if t.name not in present]
    if missing:
        more = f" and {len(missing) - 1} more of the {len(tables)} tables" if len(missing) > 1 else \
            ", one of the tables"
        raise MissingTables(
            f"the database {engine.url.render_as_string(hide_password=True)} has no table `{missing[0]}`{more} "
            f"group {group} needs: run `events db init` (it creates the seed groups' tables, the outbox and "
            "processed_events), or the application's migrations, then start the group again")
