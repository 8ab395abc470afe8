"""``events dlq``: a consumer group's dead letters: list, show, re-drive, stats."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import replace
from functools import wraps

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas.codec import AvroCodec
from schemas.settings import get_settings

from ..recovery import dead_letters, kafka
from ..recovery.dead_letters import DeadLetter, Selection, header_text
from ..recovery.errors import DeadLetterNotFound
from ..recovery.ledger import Ledger, ledger_topic
from ..recovery.redrive import Redrive
from ..recovery.times import parse_time, show
from .replay import progress_bar

out = Console()
err = Console(stderr=True)

MESSAGE_WIDTH = 80


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
    @click.option("--since", metavar="TIME", help="Only dead letters written at or after TIME (ISO 8601, 2h, epoch ms).")
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
def list_(group_name: str, selection: Selection, limit: int) -> None:
    """The dead letters, oldest first: time, event type, key, error class, message, attempts."""
    found = _selected(group_name, selection)
    if found is None:
        return
    group, topic, letters, chosen, ledger = found
    out.print(_letters_table(chosen[:limit], title=f"dead letters of {group.name} ({topic})", ledger=ledger))
    shown = min(limit, len(chosen))
    out.print(f"{len(chosen)} of {len(letters)} dead letter(s) selected"
              + (f"; showing the first {shown} (--limit)" if shown < len(chosen) else "")
              + f". Look at one: events dlq show --group {group.name} PARTITION:OFFSET")


# -- show ------------------------------------------------------------------------------------
@command.command("show")
@group_option
@click.argument("position", metavar="PARTITION:OFFSET")
def show_(group_name: str, position: str) -> None:
    """One dead letter: where it came from, why it failed, its event decoded, every header."""
    settings = get_settings()
    group = _group(group_name)
    topic = group.dlq_topic(settings.topic_prefix)
    count = kafka.partition_counts(kafka.admin(settings), [topic])[topic]
    where = dead_letters.parse_position(position, count)
    found = list(dead_letters.read(settings, topic, positions=[where]))
    if not found:
        raise DeadLetterNotFound(f"{topic} holds no dead letter at {where[0]}:{where[1]} (gone with retention, or "
                                 f"not written yet); `events dlq list --group {group.name}` lists those it holds")
    letter = found[0]
    ledger = Ledger(settings, ledger_topic(settings.topic_prefix, group.name)).load(kafka.admin(settings))
    entry = ledger.redriven(letter)
    facts = Table(show_header=False, box=None, title=f"dead letter {topic} {letter.position}", title_justify="left")
    for name, value in (("dead-lettered", show(letter.timestamp)), ("origin", letter.origin),
                        ("event type", letter.event_type or "?"), ("event id", letter.event_id or "?"),
                        ("key", _key(letter.key)), ("handler", letter.handler or "?"),
                        ("error class", letter.error_class), ("error", letter.error_message),
                        ("attempts", "?" if letter.attempts is None else str(letter.attempts)),
                        ("re-driven", f"{entry.redriven_at} (run {entry.run})" if entry else "no")):
        facts.add_row(f"[bold]{name}[/]", escape(value))
    out.print(facts)
    out.print("\n[bold]event[/]")
    out.print_json(json.dumps(_decoded(letter), default=str))
    headers = Table(title="headers", title_justify="left")
    headers.add_column("name", no_wrap=True)
    headers.add_column("value", overflow="fold")
    for name, value in letter.headers:
        if name in (dead_letters.DL.ERROR_STACKTRACE, dead_letters.DL.DLT_EXCEPTION_STACKTRACE):
            text = f"({len(value or b'')} bytes, below)"
        else:
            text = header_text(name, value)
        headers.add_row(name, escape(text))
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
        out.print(_letters_table(plan.pending, title="to re-drive" + ("  (dry run: nothing sent)" if dry_run else "")))
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
def stats(group_name: str, selection: Selection) -> None:
    """Dead letters by error class: how many, how many not yet re-driven, event types, first and last."""
    found = _selected(group_name, selection)
    if found is None:
        return
    group, topic, letters, chosen, ledger = found
    by_class: dict[str, list[DeadLetter]] = defaultdict(list)
    for letter in chosen:
        by_class[letter.error_class].append(letter)
    table = Table(title=f"dead letters of {group.name} by error class ({topic})")
    table.add_column("error class", overflow="fold")
    table.add_column("dead letters", justify="right")
    table.add_column("not re-driven", justify="right")
    table.add_column("event types", overflow="fold")
    table.add_column("first (UTC)", no_wrap=True)
    table.add_column("last (UTC)", no_wrap=True)
    for name, items in sorted(by_class.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        types = Counter(letter.event_type or "?" for letter in items)
        table.add_row(name, str(len(items)), str(sum(1 for i in items if not ledger.redriven(i))),
                      ", ".join(f"{t} ({n})" for t, n in types.most_common()),
                      show(min(i.timestamp for i in items)), show(max(i.timestamp for i in items)))
    out.print(table)
    pending = sum(1 for i in chosen if not ledger.redriven(i))
    out.print(f"{len(chosen)} dead letter(s) in {len(by_class)} error class(es), {pending} not re-driven")


# -- helpers ---------------------------------------------------------------------------------
def _letters_table(letters: list[DeadLetter], *, title: str, ledger: Ledger | None = None) -> Table:
    table = Table(title=title)
    columns = [("at", "right"), ("time (UTC)", "left"), ("event type", "left"), ("key", "left"),
               ("error class", "left"), ("message", "left"), ("attempts", "right")]
    if ledger is not None:
        columns.append(("re-driven", "left"))
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold", no_wrap=name in ("at", "time (UTC)"))
    for letter in letters:
        row = [letter.position, show(letter.timestamp), letter.event_type or "?", _key(letter.key),
               letter.error_class, escape(_one_line(letter.error_message)),
               "?" if letter.attempts is None else str(letter.attempts)]
        if ledger is not None:
            entry = ledger.redriven(letter)
            row.append(entry.redriven_at[:19].replace("T", " ") if entry else "")
        table.add_row(*row)
    return table


def _read(settings, topic: str) -> list[DeadLetter] | None:
    if not kafka.exists(kafka.admin(settings), topic):
        out.print(f"{topic} does not exist: nothing was dead-lettered")
        return None
    return list(dead_letters.read(settings, topic))


def _key(key: bytes | None) -> str:
    if key is None:
        return "(none)"
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + key.hex()


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_WIDTH else line[:MESSAGE_WIDTH - 1] + "…"


def _decoded(letter: DeadLetter) -> object:
    """The event as JSON, or why it does not decode (the reason it may have been dead-lettered)."""
    if letter.omitted:
        return {"undecodable": f"the dead letter does not carry the original value: {letter.omitted}"}
    if not letter.value:
        return {"undecodable": "the dead letter has no value (a tombstone)"}
    try:
        event = AvroCodec().decode(letter.value, letter.event_type)
    except Exception as exc:  # noqa: BLE001 - any codec or header problem is shown, not raised
        return {"undecodable": f"{type(exc).__name__}: {exc}", "bytes": len(letter.value),
                "first_bytes_hex": letter.value[:32].hex()}
    return event.model_dump(mode="json")


def _selected(group_name: str, selection: Selection):
    """The group, its dead-letter topic, all and the selected dead letters, the redrive ledger; None
    (having said why) when there is nothing to show."""
    settings = get_settings()
    group = _group(group_name)
    topic = group.dlq_topic(settings.topic_prefix)
    letters = _read(settings, topic)
    if letters is None:
        return None
    ledger = Ledger(settings, ledger_topic(settings.topic_prefix, group.name)).load(kafka.admin(settings))
    chosen = dead_letters.select(letters, selection)
    if not chosen:
        out.print(f"{topic} holds {len(letters)} dead letter(s)" + (", none of them selected" if letters else ""))
        return None
    return group, topic, letters, chosen, ledger
