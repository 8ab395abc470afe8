"""``events db``: the platform's tables in the configured database (SQLite or PostgreSQL)."""

from __future__ import annotations

import json

import click
from rich.console import Console

from dify_events.schemas.settings import get_settings

out = Console()


@click.group("db")
def command() -> None:
    """The platform's database tables: the seed groups' domain, the outbox, processed_events."""


@command.command()
@click.option("--database-url", metavar="URL", help="SQLAlchemy URL (default: the settings' database, "
                                                    "EVENTS_DATABASE_URL).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON object, for scripts.")
def init(database_url: str | None, output: str) -> None:
    """Create the tables `events run` needs, those missing only (safe to run again): the seed groups'
    domain tables, the transactional outbox (event_outbox) and the idempotency keys (processed_events)."""
    from pathlib import Path

    from ..idempotency import make_engine
    from ..tables import create_tables

    url = database_url or get_settings().database()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url, pool_size=1)
    try:
        created, present = create_tables(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if output == "json":
        click.echo(json.dumps({"database": where, "created": created, "already_there": present}))
        return
    out.print(f"{where}: created {len(created)} table(s), {len(present)} already there", highlight=False)
    if created:
        out.print(f"[dim]created: {', '.join(created)}[/]", highlight=False)
