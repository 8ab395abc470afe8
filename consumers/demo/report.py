"""What the demo shows: a live table per group while it runs, then the summary tables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..domain.invariants import Check
from .checks import DeadLetterRow
from .progress import GroupProgress
from .workload import OUTBOX, SDK, ExpectedDeadLetter

OK, FAIL = "[green]✓[/]", "[bold red]✗[/]"


@dataclass
class Status:
    """The run as the live table shows it."""

    phase: str = "starting"
    elapsed_s: float = 0.0
    total: int = 0              # Kafka messages of the pass: events and poison
    via_sdk: int = 0
    via_outbox: int = 0         # relayed (acknowledged by the broker)
    poisoned: int = 0
    outbox_pending: int = 0
    groups: dict[str, GroupProgress] = field(default_factory=dict)
    expected_dead_letters: Counter[str] = field(default_factory=Counter)  # group -> count

    @property
    def published(self) -> int:
        return self.via_sdk + self.via_outbox + self.poisoned


def _state(g: GroupProgress) -> str:
    if g.exit_code is not None:
        return f"[red]exited ({g.exit_code})[/]" if g.exit_code else "[dim]stopped[/]"
    if not g.joined:
        return "[yellow]starting[/]"
    return "[green]caught up[/]" if g.lag == 0 else "[cyan]consuming[/]"


def _name(g: GroupProgress) -> str:
    return f"{g.name} (shared, {len(g.spread)})" if g.spread else g.name


class LiveView:
    """A renderable for ``rich.live.Live``: re-reads ``status()`` at every refresh."""

    def __init__(self, status: Callable[[], Status], title: str):
        self.status, self.title = status, title

    def __rich__(self) -> Group:
        s = self.status()
        table = Table(title=f"{self.title} · {s.phase} · {s.elapsed_s:.0f}s", title_justify="left")
        for column in ("consumer group", "state", "handled", "duplicates", "lag", "dead letters"):
            table.add_column(column, justify="left" if column in ("consumer group", "state") else "right")
        for g in s.groups.values():
            expected = s.expected_dead_letters.get(g.name, 0)
            dead = f"{g.dead_letters}" + (f" [dim]({expected} expected)[/]" if expected else "")
            table.add_row(_name(g), _state(g), f"{g.handled:,}", "-" if g.duplicates is None else f"{g.duplicates:,}",
                          f"{g.lag:,}", dead if g.dead_letters <= expected else f"[red]{dead}[/]")
        line = Text.from_markup(
            f"published {s.published:,} of {s.total:,} messages: {s.via_sdk:,} with the SDK, {s.via_outbox:,} "
            f"relayed from the outbox ({s.outbox_pending:,} pending), {s.poisoned} poison")
        return Group(table, line)

    def line(self) -> str:
        """One line of progress, for a console that is not a terminal."""
        s = self.status()
        lag = sum(g.lag for g in s.groups.values())
        handled = sum(g.handled for g in s.groups.values())
        return (f"{s.elapsed_s:5.0f}s {s.phase}: published {s.published:,}/{s.total:,}, outbox pending "
                f"{s.outbox_pending:,}, handled {handled:,}, lag {lag:,}")


# -- the summary ------------------------------------------------------------------------------
def published_table(published: Counter[tuple[str, str]], poisoned: int, republished: int = 0) -> Table:
    table = Table(title="Events published", title_justify="left")
    for column in ("event type", "SDK", "outbox", "total"):
        table.add_column(column, justify="left" if column == "event type" else "right")
    for event_type in sorted({t for t, _ in published}):
        sdk, outbox = published[(event_type, SDK)], published[(event_type, OUTBOX)]
        table.add_row(event_type, f"{sdk:,}", f"{outbox:,}", f"{sdk + outbox:,}")
    table.add_row("[dim]poison (raw bytes, past the SDK)[/]", f"{poisoned}", "", f"{poisoned}")
    sdk = sum(n for (_, via), n in published.items() if via == SDK) + poisoned
    outbox = sum(n for (_, via), n in published.items() if via == OUTBOX)
    table.add_row("[bold]total[/]", f"[bold]{sdk:,}[/]", f"[bold]{outbox:,}[/]", f"[bold]{sdk + outbox:,}[/]",
                  end_section=bool(republished))
    if republished:
        table.add_row("second pass: all again, same ids", f"{republished:,}", "", f"{republished:,}")
    return table


def groups_table(groups: dict[str, GroupProgress], expected: Counter[str]) -> Table:
    table = Table(title="Consumer groups (one process each; a shared group: several)", title_justify="left")
    for column in ("consumer group", "handled", "duplicates skipped", "dead letters"):
        table.add_column(column, justify="left" if column == "consumer group" else "right")
    for g in groups.values():
        n = expected.get(g.name, 0)
        table.add_row(_name(g), f"{g.handled:,}", "-" if g.duplicates is None else f"{g.duplicates:,}",
                      f"{g.dead_letters}" + (f" ({n} expected)" if n else ""))
    table.add_row("[bold]total[/]", f"[bold]{sum(g.handled for g in groups.values()):,}[/]",
                  f"[bold]{sum(g.duplicates or 0 for g in groups.values()):,}[/]",
                  f"[bold]{sum(g.dead_letters for g in groups.values())}[/]")
    return table


def members_table(groups: dict[str, GroupProgress], prefix: str) -> Table | None:
    """How a shared group's members shared its partitions: records each one ran, per partition."""
    table = Table(title="Shared groups: what each member ran, from which partitions", title_justify="left")
    table.add_column("member")
    table.add_column("ran", justify="right")
    table.add_column("records per partition", overflow="fold")
    for g in groups.values():
        for i, partitions in enumerate(g.spread, 1):
            where = "  ".join(f"{key.removeprefix(prefix + '.')}: {n}" for key, n in sorted(partitions.items()))
            table.add_row(f"{g.name}#{i}", f"{sum(partitions.values()):,}", where or "none")
    return table if table.rows else None


def dead_letters_table(rows: list[DeadLetterRow], missing: list[ExpectedDeadLetter]) -> Table:
    table = Table(title="Dead letters (read back from each <prefix>.dlq.<group>; ✓ = expected poison)",
                  title_justify="left")
    for column in ("", "consumer group", "n", "poison message", "error: reason (dlq-error-class, dlq-error-message)"):
        table.add_column(column, justify="right" if column == "n" else "left", overflow="fold")
    for row in rows:
        table.add_row(OK if row.expected else FAIL, row.group, str(row.count),
                      row.expected or "[bold red]unexpected[/]", f"[bold]{row.error_class}[/]: {row.reason}")
    for e in missing:
        table.add_row(FAIL, e.group, "0", f"{e.what} [bold red](missing)[/]", f"[bold]{e.error_class}[/] expected")
    if not rows and not missing:
        table.add_row(OK, "", "0", "none", "")
    return table


def checks_table(checks: list[Check], title: str = "Invariants") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("check")
    table.add_column("detail", overflow="fold")
    for check in checks:
        table.add_row(OK if check.ok else FAIL, check.name, check.detail)
    return table


def print_tables(console: Console, *tables: Table | None) -> None:
    for table in tables:
        if table is not None:
            console.print(table)
            console.print()
