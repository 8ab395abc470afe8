"""``events demo``: the platform's main job end to end (the README's first command, ``make demo``)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console

from ..demo.workload import DEFAULT_SEED, SIZES

out = Console()


@click.command("demo")
@click.option("--size", type=click.Choice(list(SIZES)), default="default", show_default=True,
              help="The workload's size: " + "; ".join(
                  f"{name}: {s.tenants} tenants, {s.apps} apps, {s.documents} documents, {s.messages} messages"
                  for name, s in SIZES.items()) + ".")
@click.option("--tenants", type=click.IntRange(1), help="Tenants (overrides --size).")
@click.option("--apps", type=click.IntRange(1), help="Apps (overrides --size).")
@click.option("--documents", type=click.IntRange(1), help="Documents to index (overrides --size).")
@click.option("--messages", type=click.IntRange(0), help="Messages answered (overrides --size).")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True,
              help="The workload's seed: the same seed and size give the same rows and events.")
@click.option("--prefix", metavar="PREFIX",
              help="Topic prefix (default: demo<UTC timestamp><4 hex digits>, fresh per run).")
@click.option("--database-url", metavar="URL",
              help="An empty database (SQLAlchemy URL; default: a fresh SQLite database in the run directory).")
@click.option("--postgres", is_flag=True, help="Run on a throwaway local PostgreSQL server (removed at the end).")
@click.option("--twice", is_flag=True,
              help="Then publish every event a second time (same ids) and show the database does not change.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1), default=300.0, show_default=True,
              help="Seconds for the groups to catch up (per pass) before the demo gives up.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Handler threads per consumer-group process.")
@click.option("--delete-topics", is_flag=True, help="Delete the run's topics and consumer groups at the end.")
@click.option("--stop-broker", is_flag=True, help="Stop the local broker at the end if the demo started it.")
@click.option("--report-json", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Also write the summary (published, groups, dead letters, checks) to PATH as JSON.")
def command(size: str, tenants: int | None, apps: int | None, documents: int | None, messages: int | None,
            seed: int, prefix: str | None, database_url: str | None, postgres: bool, twice: bool, timeout_s: float,
            concurrency: int, delete_topics: bool, stop_broker: bool, report_json: Path | None) -> None:
    """Run the platform's main job end to end: Kafka (the configured cluster, or the local broker,
    started if needed), every consumer group as its own process, a realistic workload published
    through the producer SDK and the transactional outbox (with a few poison messages), live
    progress per group, then a summary with the database's invariants. Exits non-zero if an
    invariant fails or a dead letter is not one of the expected poison messages."""
    from ..demo.run import Demo, DemoOptions

    if postgres and database_url:
        raise click.UsageError("give --database-url or --postgres, not both")
    overrides = {k: v for k, v in dict(tenants=tenants, apps=apps, documents=documents, messages=messages).items()
                 if v is not None}
    options = DemoOptions(size=replace(SIZES[size], **overrides), seed=seed, prefix=prefix,
                          database_url=database_url, postgres=postgres, twice=twice, timeout_s=timeout_s,
                          concurrency=concurrency, delete_topics=delete_topics, stop_broker=stop_broker,
                          report_json=report_json)
    sys.exit(Demo(options, out).run())
