"""What the ``events`` tables share: ``--output json``, and cells short enough for 80 columns."""

from __future__ import annotations

import json
import sys

import click

output_option = click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
                             help="table: for people (fits 80 columns); json: every field, for scripts.")


def print_json(data: object) -> None:
    """``data`` as indented JSON on stdout (not through rich: no wrapping, no colours)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def short_class(name: str) -> str:
    """An error class by its own name (``schemas.errors.BadEvent`` -> ``BadEvent``)."""
    return name.rsplit(".", 1)[-1]


def short_time(text: str) -> str:
    """``2025-03-01 12:00:00.123Z`` -> ``03-01 12:00``: a table's time, to the minute (the full one in JSON)."""
    return text[5:16] if len(text) >= 16 else text


def leftover(width: int, fixed: list[int], *, edge: bool = True) -> int:
    """The width left for one flexible column of a rich table ``width`` wide beside columns of the
    ``fixed`` content widths (each cell padded by one space a side, one rule between columns)."""
    columns = len(fixed) + 1
    return max(4, width - sum(fixed) - 3 * columns + (1 if not edge else -1))
