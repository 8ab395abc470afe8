"""The Alembic revision of docs/dify/ that Dify's Flask-Migrate runs: its upgrade makes the outbox
and processed-events tables exactly as the platform creates them, and its downgrade removes them
(SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect

from dify_events.consumers.idempotency import create_table as create_processed_events
from dify_events.producers.outbox import create_outbox_table

REVISION = next((Path(__file__).parents[2] / "docs" / "dify").glob("*_add_event_outbox_and_processed_events.py"))
TABLES = ("event_outbox", "processed_events")
ENV = """
from alembic import context
from sqlalchemy import create_engine

with create_engine(context.config.get_main_option("sqlalchemy.url")).connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""


def migrations(tmp_path: Path, url: str) -> Config:
    """A migrations folder as Flask-Migrate keeps Dify's: an env.py and the revision in versions/."""
    (tmp_path / "versions").mkdir(parents=True)
    shutil.copy(REVISION, tmp_path / "versions" / REVISION.name)
    (tmp_path / "env.py").write_text(ENV)
    (tmp_path / "script.py.mako").write_text("")
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def shape(url: str) -> dict:
    """Each table's columns (type, nullability, default), primary key, unique constraints and indexes."""
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        return {table: {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default"))
                        for c in inspector.get_columns(table)],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in inspector.get_indexes(table)),
        } for table in TABLES if inspector.has_table(table)}
    finally:
        engine.dispose()


def test_the_revision_upgrades_to_the_platforms_tables_and_downgrades(database_url, tmp_path):
    config = migrations(tmp_path / "migrations", database_url)
    # When Flask-Migrate runs the revision's upgrade
    command.upgrade(config, "head")
    migrated = shape(database_url)
    # Then both tables are there; and its downgrade removes them
    assert set(migrated) == set(TABLES)
    command.downgrade(config, "base")
    assert shape(database_url) == {}
    # And the tables the platform creates itself have the same shape
    engine = create_engine(database_url)
    try:
        create_outbox_table(engine)
        create_processed_events(engine)
    finally:
        engine.dispose()
    assert shape(database_url) == migrated
