"""``events topics``: make the cluster's topics match ``schemas/topics.yaml``, and show them."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from dify_events.schemas.settings import get_settings
from dify_events.schemas.topics import TOPICS_FILE, admin_client, list_topics, load_topics_file, plan
from dify_events.schemas.topics import apply as apply_plan

from ..group import SHARED, ConsumerGroup

out = Console()
err = Console(stderr=True)

_STYLE = {"create": "green", "alter": "yellow", "ok": "dim"}


@click.group("topics")
def command() -> None:
    """Create and update the platform's topics from the topics file; list them."""


@command.command()
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--group", "groups", multiple=True, metavar="NAME",
              help="Manage the dead-letter and retry topics of only this consumer group (repeatable). "
                   "Default: every registered group.")
@click.option("--no-groups", is_flag=True, help="Manage the domain topics only, no group's topics.")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=TOPICS_FILE,
              show_default=True, help="The topics file.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the cluster.")
def apply(dry_run: bool, groups: tuple[str, ...], no_groups: bool, path: Path, timeout: float) -> None:
    """Create missing topics, set drifted configuration, add partitions. Never removes partitions,
    never changes a replication factor, never touches keys the file does not name.

    The topics are the catalogue's domain topics and the dead-letter and retry topics of every
    registered consumer group (EVENTS_HANDLER_MODULES', by default Dify's receivers, as `events run`
    finds them), or of the groups named with --group; a shared group's retry topic is declared by the
    file's shared_retry template (1 partition)."""
    if groups and no_groups:
        raise click.UsageError("give --group NAME or --no-groups, not both")
    registered = {} if no_groups else _registered_groups(warn=not groups)
    groups = groups or tuple(registered)
    shared = [group.name for group in registered.values() if group.delivery == SHARED]
    prefix = get_settings().topic_prefix
    admin = admin_client()
    the_plan = plan(admin, prefix, groups=groups, shared_groups=shared, topics_file=load_topics_file(path),
                    timeout=timeout)
    for warning in the_plan.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if not dry_run and the_plan.changes:
        apply_plan(admin, the_plan, timeout=timeout)
    table = Table(title=f"topics {prefix}.*" + ("  (dry run: nothing changed)" if dry_run else ""))
    table.add_column("topic", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("details", overflow="fold")
    for action in the_plan.actions:
        verb = action.action if not dry_run or action.action == "ok" else f"would {action.action}"
        table.add_row(action.topic, f"[{_STYLE[action.action]}]{verb}[/]", action.details())
    out.print(table)
    changed = len(the_plan.changes)
    out.print(f"{changed} topic(s) {'to change' if dry_run else 'changed'}, "
              f"{len(the_plan.actions) - changed} as declared")


def _registered_groups(*, warn: bool) -> dict[str, ConsumerGroup]:
    """The registered groups by name (a shared group's retry topic differs); ``warn``: say so when there are none."""
    from .. import registry

    groups = {group.name: group for group in registry.discover()}
    if not groups and warn:
        err.print("[yellow]warning:[/] no consumer groups are registered (set EVENTS_HANDLER_MODULES to the "
                  "modules that define them): only the domain topics are managed", highlight=False)
    return groups


@command.command("list")
@click.option("--all", "every", is_flag=True, help="Every topic of the cluster, not only this prefix's.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the cluster.")
def list_(every: bool, timeout: float) -> None:
    """The topics under the prefix, with partitions, replication and the configuration set on them."""
    prefix = None if every else get_settings().topic_prefix
    states = list_topics(admin_client(), prefix, timeout=timeout)
    table = Table(title="every topic" if every else f"topics {prefix}.*")
    table.add_column("topic", no_wrap=True)
    table.add_column("partitions", justify="right")
    table.add_column("replication", justify="right")
    table.add_column("configuration (set on the topic)", overflow="fold")
    for state in states:
        table.add_row(state.name, str(state.partitions), str(state.replication_factor),
                      ", ".join(f"{k}={v}" for k, v in sorted(state.config.items())))
    out.print(table)
    if not states:
        out.print("no topics yet: run `events topics apply`")
