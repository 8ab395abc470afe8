"""``events replay``: make one consumer group read a range of its topics again.

A stopped group is rewound (its committed offsets set back with Kafka's offsets-for-times lookup);
a running group, a shared group, or any group with ``--until``, ``--copy`` or ``--reprocess``, gets
the range copied into its private retry topic, which no other group reads. ``--rewind`` insists on a rewind and is
refused while the group has members (naming them). ``--dry-run`` (the default) prints the plan.
"""

from __future__ import annotations

from collections import Counter

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dify_events.schemas.settings import get_settings

from ..config import group_id
from ..recovery import kafka, replay
from ..recovery import plan as planning
from ..recovery.positions import parse_positions
from ..recovery.times import parse_time
from ._tables import output_option, print_json

out = Console()
err = Console(stderr=True)


def progress_bar(console: Console = err) -> Progress:
    """The progress bar of long copies (on stderr, so stdout keeps only tables and summaries)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


@click.command("replay")
@click.option("--group", "group_name", required=True, metavar="NAME", help="The consumer group to replay for.")
@click.option("--since", metavar="TIME", help="Start at this time: ISO 8601 (2025-03-01T12:00:00Z; no zone = local), "
              "relative (30m, 2h, 1d) or epoch ms.")
@click.option("--from-offsets", "from_offsets", metavar="LIST|@FILE",
              help="Start at these offsets: topic:partition:offset,... or a file of them.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message each partition still holds.")
@click.option("--until", metavar="TIME",
              help="End before this time (a rewind cannot stop at an end, so this copies; default: where the "
              "group has read to).")
@click.option("--topic", metavar="TOPIC", help="Only this one of the group's topics (full name, or the domain: app).")
@click.option("--copy/--rewind", "copy", default=None,
              help="--copy copies the range into the group's retry topic, even a stopped group's; --rewind only "
              "rewinds (refused while the group has members, naming them, and with --until or --reprocess). "
              "Neither: a running group, a shared one, or --until, copies; a stopped group is rewound.")
@click.option("--reprocess", is_flag=True,
              help="Run handlers again even for events already handled (sets events-reprocess: 1; implies --copy).")
@click.option("--force", is_flag=True, help="Replay a group that has handlers declared replay_safe=False.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), metavar="N",
              help="Copy at most N messages a second.")
@click.option("--dry-run/--execute", "dry_run", default=True, show_default=True,
              help="--dry-run prints the plan and changes nothing; --execute carries it out.")
@output_option
def command(group_name: str, since: str | None, from_offsets: str | None, from_beginning: bool, until: str | None,
            topic: str | None, copy: bool | None, reprocess: bool, force: bool, rate: float | None, dry_run: bool,
            output: str) -> None:
    """Make GROUP read its events again from a time or offsets, to recover from a bug or a restored database.

    A stopped group is rewound: its committed offsets are set back, and it re-reads from there when it
    starts. A running group gets the range copied into its private retry topic while live traffic
    goes on; so does any group with --until (a rewind cannot stop at an end), and a shared group (a
    Kafka share group keeps no offsets). Already handled events are skipped by their idempotency keys
    unless --reprocess is given.

    \b
    events replay --group provider-usage --since 2h                        # the plan (dry run)
    events replay --group provider-usage --since 2h --execute              # stopped: rewind; running: copy
    events replay --group provider-usage --since 2h --rewind --execute     # a rewind or nothing
    events replay --group provider-usage --since 3h --until 1h --execute   # copy of a bounded range
    events replay --group site-provisioner --since 2025-03-01T09:00Z --reprocess --execute
    """
    from .. import registry

    registry.discover()
    group = registry.get(group_name)
    settings = get_settings()
    prefix = settings.topic_prefix
    request = planning.Request(
        since=parse_time(since) if since else None,
        positions=tuple(parse_positions(from_offsets)) if from_offsets else (),
        from_beginning=from_beginning,
        until=parse_time(until) if until else None,
    )
    client = kafka.admin(settings)
    plan = planning.build(client, group, prefix=prefix, group_id=group_id(prefix, group.name), request=request,
                          topic=topic, copy=copy, reprocess=reprocess)
    if not dry_run:
        replay.check_replay_safe(plan, force=force)
    if output == "json":
        _execute_json(settings, client, plan, group, dry_run=dry_run, rate=rate)
        return

    _print_intro(plan)
    if plan.unsafe and dry_run:
        err.print(f"[yellow]warning:[/] handler(s) declared replay_safe=False: {', '.join(plan.unsafe)}; "
                  "--execute will need --force", highlight=False)
    if dry_run or not plan.changes:
        print_plan(plan, dry_run=dry_run)
        out.print(plan.outcome_text() + (" Dry run: nothing changed; add --execute to do it." if plan.changes else ""))
        return

    if plan.mode == planning.REWIND:
        now = replay.rewind(client, plan)
        print_plan(plan, dry_run=False, now=now)
        out.print(f"rewound {len(plan.changes)} partition(s) of consumer group {plan.group_id}: it re-reads "
                  f"{plan.messages} message(s) when it starts. Events it handled before are skipped by their "
                  "idempotency keys (effects lost with a restored database are made again).")
        return

    print_plan(plan, dry_run=False)
    with progress_bar() as bar:
        task = bar.add_task(f"copying into {plan.target}", total=plan.messages)
        report = replay.copy(settings, plan, group, advance=lambda n: bar.advance(task, n), rate=rate)
    skipped = []
    if report.other_types:
        skipped.append(f"{report.other_types} of other event types")
    if report.repeated:
        skipped.append(f"{report.repeated} repeated idempotency key(s)")
    out.print(f"copied {report.copied} of {report.read} message(s) read into {plan.target} (run {report.run})"
              + (f"; skipped {', '.join(skipped)}" if skipped else "")
              + ("; each carries events-reprocess: 1, so its handler runs again" if plan.reprocess else
                 "; events the group handled before are skipped by their idempotency keys") + ".")


def _execute_json(settings, client, plan: planning.ReplayPlan, group, *, dry_run: bool, rate: float | None) -> None:
    """The plan, and with --execute what was done, as one JSON document."""
    result: dict = {"dry_run": dry_run, "plan": plan.as_json()}
    if not dry_run and plan.changes:
        if plan.mode == planning.REWIND:
            now = replay.rewind(client, plan)
            result["rewound"] = [{"topic": t, "partition": p, "committed": o} for (t, p), o in sorted(now.items())]
        else:
            report = replay.copy(settings, plan, group, rate=rate)
            result["copied"] = {"run": report.run, "read": report.read, "copied": report.copied,
                                "other_types": report.other_types, "repeated": report.repeated}
    print_json(result)


def _print_intro(plan: planning.ReplayPlan) -> None:
    out.print(f"[bold]replay[/] of group [bold]{plan.group}[/] ({plan.kind} {plan.group_id}, {plan.state_text()}), "
              f"{plan.request.describe()}", highlight=False)
    target = f" into {plan.target}" if plan.target else ""
    out.print(f"mode: [bold]{plan.mode}[/]{target} ({plan.reason})", highlight=False)


def print_plan(plan: planning.ReplayPlan, *, dry_run: bool, now: dict | None = None) -> None:
    """The plan's table, its notes numbered below it (so the table fits 80 columns), then what was left alone."""
    table, notes = plan_table(plan, dry_run=dry_run, now=now)
    out.print(table)
    for number, note in enumerate(notes, 1):
        out.print(f"  [{number}] {note}", highlight=False, markup=False)
    left = _left_alone(plan) if plan.changes else None
    if left:
        out.print(left, highlight=False)


def plan_table(plan: planning.ReplayPlan, *, dry_run: bool, now: dict | None = None) -> tuple[Table, list[str]]:
    """One row per partition replayed (per partition of the plan when none is); each cell on one line
    (a topic too long is cut with an ellipsis, notes are numbered and printed below)."""
    title = f"replay {plan.group}: {plan.mode}" + ("  (dry run: nothing changed)" if dry_run else "")
    rows = plan.changes or plan.ranges
    table = Table(title=title)
    table.add_column("topic", no_wrap=True, overflow="ellipsis", ratio=1, min_width=10)
    for name in ("partition", "from", "to", "messages", "group at") + (("now at",) if now is not None else ()):
        table.add_column(name, justify="right", no_wrap=True)
    notes: list[str] = []
    noted = any(r.note for r in rows)
    if noted:
        table.add_column("note", no_wrap=True)
    for r in rows:
        row = [r.topic, str(r.partition), str(r.start), str(r.end), str(r.messages),
               "-" if r.committed is None else str(r.committed)]
        if now is not None:
            after = now.get((r.topic, r.partition), r.committed)
            row.append("-" if after is None else str(after))
        if noted:
            if r.note and r.note not in notes:
                notes.append(r.note)
            row.append(f"[{notes.index(r.note) + 1}]" if r.note else "")
        table.add_row(*row, style=None if r.messages else "dim")
    return table, notes


def _left_alone(plan: planning.ReplayPlan) -> str | None:
    """``left alone: 4 partition(s) with no messages in the range, 1 not read by the group yet``."""
    reasons = Counter(r.note.split(":")[0] for r in plan.ranges if not r.messages)
    if not reasons:
        return None
    return "left alone: " + ", ".join(f"{n} partition(s): {why}" for why, n in reasons.most_common())
