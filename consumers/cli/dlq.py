"""``events dlq``: a consumer group's dead letters: list, show, re-drive, stats."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import replace
from functools import wraps
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dify_events.schemas.settings import get_settings

from ..recovery import browse, dead_letters, kafka
from ..recovery.browse import Listing
from ..recovery.dead_letters import DeadLetter, Selection
from ..recovery.ledger import Ledger
from ..recovery.redrive import Redrive
from ..recovery.times import parse_time, show
from ._tables import leftover, output_option, print_json, short_class, short_time
from .replay import progress_bar

out = Console()
err = Console(stderr=True)

def _group(name: str):
    from .. import registry

    registry.discover()
    return registry.get(name)


def selection_options(fn):
    """--error-class, --event-type, --since, --until: which dead letters a subcommand works on."""

    @click.option("--error-class", "error_classes", multiple=True, metavar="CLASS",
                  help="Only this error class: its name (BugError) or full name (myapp.errors.BugError). Repeatable.")
    @click.option("--event-type", "event_types", multiple=True, metavar="TYPE",
                  help="Only this event type (app_was_created). Repeatable.")
    @click.option("--since", metavar="TIME",
                  help="Only dead letters written at or after TIME (ISO 8601, 2h, epoch ms).")
    @click.option("--until", metavar="TIME", help="Only dead letters written before TIME.")
    @wraps(fn)
    def wrapper(*args, error_classes, event_types, since, until, **kwargs):
        selection = Selection(error_classes=error_classes, event_types=event_types,
                              since=parse_time(since) if since else None, until=parse_time(until) if until else None)
        return fn(*args, selection=selection, **kwargs)

    return wrapper


group_option = click.option("--group", "group_name", required=True, metavar="NAME",
                            help="The consumer group whose dead letters to work on.")


@click.group("dlq")
def command() -> None:
    """A consumer group's dead letters (<prefix>.dlq.<group>): list, show, re-drive, stats."""


# -- list ------------------------------------------------------------------------------------
@command.command("list")
@group_option
@selection_options
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Show at most this many.")
@output_option
def list_(group_name: str, selection: Selection, limit: int, output: str) -> None:
    """The dead letters, oldest first: position, time, event type, error class, message, attempts."""
    group, found = _selected(group_name, selection, output)
    if found is None:
        return
    shown = found.chosen[:limit]
    if output == "json":
        letters = [letter_json(letter, found.ledger) for letter in shown]
        print_json({"group": group.name, "topic": found.topic, "held": len(found.letters),
                    "selected": len(found.chosen), "dead_letters": letters})
        return
    out.print(letters_table(shown, title=f"dead letters of {group.name} ({found.topic})", ledger=found.ledger))
    out.print(f"{len(found.chosen)} of {len(found.letters)} dead letter(s) selected"
              + (f"; showing the first {len(shown)} (--limit)" if len(shown) < len(found.chosen) else "")
              + f". Look at one: events dlq show --group {group.name} PARTITION:OFFSET")


# -- show ------------------------------------------------------------------------------------
@command.command("show")
@group_option
@click.argument("position", metavar="PARTITION:OFFSET")
@output_option
def show_(group_name: str, position: str, output: str) -> None:
    """One dead letter: where it came from, why it failed, its event decoded, every header."""
    settings = get_settings()
    group = _group(group_name)
    letter, entry = browse.find(settings, group, position)
    topic = group.dlq_topic(settings.topic_prefix)
    if output == "json":
        print_json({"topic": topic, "position": letter.position, "facts": dict(browse.facts(letter, entry)),
                    "event": browse.decoded(letter), "headers": browse.header_rows(letter),
                    "stacktrace": letter.stacktrace})
        return
    facts = Table(show_header=False, box=None, title=f"dead letter {topic} {letter.position}", title_justify="left")
    facts.add_column("name", no_wrap=True)
    facts.add_column("value", overflow="fold")
    for name, value in browse.facts(letter, entry):
        facts.add_row(f"[bold]{name}[/]", escape(value))
    out.print(facts)
    out.print("\n[bold]event[/]")
    out.print_json(json.dumps(browse.decoded(letter), default=str))
    headers = Table(title="headers", title_justify="left")
    headers.add_column("name", no_wrap=True, overflow="ellipsis", max_width=32)
    headers.add_column("value", overflow="fold")
    for name, value in browse.header_rows(letter):
        headers.add_row(name, escape(value))
    out.print(headers)
    if letter.stacktrace:
        out.print("[bold]stack trace[/]")
        out.print(escape(letter.stacktrace), highlight=False)


# -- redrive ---------------------------------------------------------------------------------
@command.command()
@group_option
@selection_options
@click.option("--offset", "positions", multiple=True, metavar="PARTITION:OFFSET",
              help="Only this dead letter (as `list` shows it). Repeatable.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Re-drive at most this many.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), metavar="N", help="At most N a second.")
@click.option("--dry-run", is_flag=True, help="Show what would be re-driven; send nothing.")
def redrive(group_name: str, selection: Selection, positions: tuple[str, ...], limit: int | None,
            rate: float | None, dry_run: bool) -> None:
    """Copy the selected dead letters into the group's retry topic, to be handled again (after a fix).

    Each keeps its key, value, headers and attempt count; each is recorded in the redrive ledger
    (<prefix>.redriven.<group>) in the same transaction, so running redrive again never sends it twice.
    """
    settings = get_settings()
    group = _group(group_name)
    if positions:
        topic = group.dlq_topic(settings.topic_prefix)
        count = kafka.partition_counts(kafka.admin(settings), [topic])[topic]
        selection = replace(selection, positions=tuple(dead_letters.parse_position(p, count) for p in positions))
    job = Redrive(settings, group, rate=rate)
    plan = job.prepare(selection, limit=limit, execute=not dry_run)
    if not plan.dlq_exists:
        out.print(f"{plan.dlq_topic} does not exist: group {group.name} has dead-lettered nothing")
        return
    out.print(f"[bold]redrive[/] of group [bold]{group.name}[/]: {plan.dlq_topic} -> {plan.target}", highlight=False)
    if plan.pending:
        out.print(letters_table(plan.pending, title="to re-drive" + ("  (dry run: nothing sent)" if dry_run else "")))
    tail = []
    if plan.already:
        tail.append(f"{len(plan.already)} selected were re-driven before (ledger {plan.ledger}) and are not sent again")
    if plan.over_limit:
        tail.append(f"{plan.over_limit} more are left for a later run (--limit)")
    if plan.omitted:
        tail.append(f"{len(plan.omitted)} selected carry no value (it was too large for {plan.dlq_topic}) and are not "
                    "re-driven: `events dlq show` says where each original still is, to replay it from there "
                    "(`events replay --from-offsets`)")
    if dry_run or not plan.pending:
        out.print(f"{len(plan.pending)} dead letter(s) {'would be' if dry_run else 'to be'} re-driven "
                  f"of {plan.held} held" + "".join(f"; {t}" for t in tail) + "."
                  + (" Dry run: nothing sent." if dry_run else ""))
        return
    with progress_bar() as bar:
        task = bar.add_task(f"re-driving into {plan.target}", total=len(plan.pending))
        report = job.run(plan, advance=lambda n: bar.advance(task, n))
    out.print(f"re-drove {report.sent} dead letter(s) into {plan.target} (run {report.run}), each recorded in "
              f"{plan.ledger}" + "".join(f"; {t}" for t in tail) + ".")


# -- stats -----------------------------------------------------------------------------------
@command.command()
@group_option
@selection_options
@output_option
def stats(group_name: str, selection: Selection, output: str) -> None:
    """Dead letters by error class: how many, how many not yet re-driven, event types, first and last."""
    group, found = _selected(group_name, selection, output)
    if found is None:
        return
    by_class: dict[str, list[DeadLetter]] = defaultdict(list)
    for letter in found.chosen:
        by_class[letter.error_class].append(letter)
    rows: list[dict[str, Any]] = [{"error_class": name, "dead_letters": len(items),
             "not_redriven": sum(1 for i in items if not found.ledger.redriven(i)),
             "event_types": dict(Counter(letter.event_type or "?" for letter in items).most_common()),
             "first": show(min(i.timestamp for i in items)), "last": show(max(i.timestamp for i in items))}
            for name, items in sorted(by_class.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    if output == "json":
        print_json({"group": group.name, "topic": found.topic, "by_error_class": rows})
        return
    classes = max(len(short_class(row["error_class"])) for row in rows)
    table = Table(title=f"dead letters of {group.name} by error class")
    table.add_column("error class", no_wrap=True, overflow="ellipsis", max_width=28)
    table.add_column("letters", justify="right", no_wrap=True)
    table.add_column("pending", justify="right", no_wrap=True)
    table.add_column("event types", no_wrap=True, overflow="ellipsis",
                     width=leftover(out.width, [min(28, max(classes, 11)), 7, 7, 11]))
    table.add_column("last (UTC)", no_wrap=True)
    for row in rows:
        table.add_row(short_class(row["error_class"]), str(row["dead_letters"]), str(row["not_redriven"]),
                      ", ".join(f"{t} ({n})" for t, n in row["event_types"].items()), short_time(row["last"]))
    out.print(table)
    out.print(f"{len(found.chosen)} dead letter(s) in {len(by_class)} error class(es), {found.pending()} not re-driven "
              f"({found.topic}); full class names and first times: --output json")


# -- helpers ---------------------------------------------------------------------------------
def letters_table(letters: list[DeadLetter], *, title: str, ledger: Ledger | None = None,
                  width: int | None = None) -> Table:
    """Fits the terminal (80 columns too): one line per letter, cells cut with an ellipsis rather than
    wrapped; the error class by its own name (in full, with the attempts and the key, in `show` and
    --output json); a re-driven letter is marked ✓."""
    rows = [[letter.position, short_time(show(letter.timestamp)), letter.event_type or "?",
             short_class(letter.error_class), escape(" ".join(letter.error_message.split()))]
            + ([("✓" if ledger.redriven(letter) else "")] if ledger is not None else []) for letter in letters]
    widths = [max([len(r[i]) for r in rows] + [len(name)]) for i, name in enumerate(("at", "time (UTC)"))]
    widths += [min(limit, max([len(r[i]) for r in rows] + [len(name)]))
               for i, name, limit in ((2, "event type", 18), (3, "error class", 22))]
    widths += [1] if ledger is not None else []
    table = Table(title=title, show_edge=False)
    table.add_column("at", justify="right", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("event type", no_wrap=True, overflow="ellipsis", max_width=18)
    table.add_column("error class", no_wrap=True, overflow="ellipsis", max_width=22)
    table.add_column("message", no_wrap=True, overflow="ellipsis",
                     width=leftover(width or out.width, widths, edge=False))
    if ledger is not None:
        table.add_column("✓", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def letter_json(letter: DeadLetter, ledger: Ledger) -> dict:
    entry = ledger.redriven(letter)
    return {"position": letter.position, "time": show(letter.timestamp), "event_type": letter.event_type,
            "event_id": letter.event_id, "key": browse.key_text(letter.key), "error_class": letter.error_class,
            "error_message": letter.error_message, "attempts": letter.attempts, "origin": letter.origin,
            "redriven_at": entry.redriven_at if entry else None}


def _selected(group_name: str, selection: Selection, output: str):
    """The group and its listing; the listing is None (having said why) when there is nothing to show."""
    settings = get_settings()
    group = _group(group_name)
    found: Listing | None = browse.listing(settings, group, selection)
    topic = group.dlq_topic(settings.topic_prefix)
    if output == "json":
        return group, found if found is not None else Listing(topic, [], [], Ledger(settings, ""))
    if found is None:
        out.print(f"{topic} does not exist: nothing was dead-lettered")
        return group, None
    if not found.chosen:
        none = ", none of them selected" if found.letters else ""
        out.print(f"{topic} holds {len(found.letters)} dead letter(s){none}")
        return group, None
    return group, found
