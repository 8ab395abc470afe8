"""``events schemas``: the event catalogue, and the schema evolution check."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from dify_events.schemas.catalogue import AVRO_ROOT, CATALOGUE, EventSpec
from dify_events.schemas.compat import check_folder
from dify_events.schemas.conformance import mismatches
from dify_events.schemas.settings import get_settings

from ._tables import output_option, print_json

out = Console()
err = Console(stderr=True)


@click.group("schemas")
def command() -> None:
    """The event contract: list event types, check schema evolution."""


@command.command("list")
@output_option
def list_(output: str) -> None:
    """Every event type: topic, key field, schema versions (and with --output json the domain and fingerprints)."""
    prefix = get_settings().topic_prefix
    if output == "json":
        print_json([catalogue_entry(spec, prefix) for spec in CATALOGUE])
        return
    table = Table(title=f"{len(CATALOGUE)} event types, on topics {prefix}.<domain>", show_edge=False)
    for name in ("event type", "domain", "key", "versions"):
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for spec in CATALOGUE:
        table.add_row(spec.event_type, spec.domain, spec.key_field, ", ".join(f"v{v.version}" for v in spec.versions))
    out.print(table)


def catalogue_entry(spec: EventSpec, prefix: str) -> dict:
    """One event type as the catalogue knows it (``events schemas list --output json``, the console)."""
    return {"event_type": spec.event_type, "domain": spec.domain, "topic": spec.topic(prefix), "key": spec.key_field,
            "versions": [v.version for v in spec.versions], "current": spec.current.version,
            "fingerprint": spec.latest.fingerprint.hex()}


@command.command()
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A schema folder to check instead of the package's own (candidate schemas).")
@click.argument("event_types", nargs=-1)
def check(root: Path | None, event_types: tuple[str, ...]) -> None:
    """Checks that each event's latest schema is FULL_TRANSITIVE compatible with every earlier
    version (backward and forward), that every file follows the contract, and (for the package's
    own folder) that each model agrees with its latest schema. Exit 1 on any problem."""
    report = check_folder(root or AVRO_ROOT, event_types or None)
    problems = [*report.problems, *(str(i) for i in report.incompatibilities)]
    if root is None:
        wanted = set(event_types) or set(CATALOGUE.event_types())
        for spec in CATALOGUE:
            if spec.event_type in wanted:
                problems += mismatches(spec.model, spec.current.raw)
    for problem in problems:
        err.print(f"[bold red]✗[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        err.print(f"[bold red]error:[/] {len(problems)} problem(s) in the schemas", highlight=False)
        raise SystemExit(1)
    versions = sum(len(v) for v in report.event_versions.values())
    out.print(f"[green]✓[/] {len(report.event_versions)} event types, {versions} schema versions: "
              "every latest version is full-transitive compatible with its earlier ones")
