"""The ``events`` command line: one command for people, a subcommand per job."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click
from pydantic import ValidationError
from rich.console import Console

from schemas.errors import EventsError

err = Console(stderr=True)


class EventsGroup(click.Group):
    """Subcommands are the modules of this package that define ``command`` (``broker.py`` ->
    ``events broker``), imported only when used, so ``events broker start`` does not pay for the
    demo's imports. The platform's own errors become one red line and exit code 1, not a traceback."""

    def list_commands(self, ctx):
        return sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))

    def get_command(self, ctx, name):
        if name not in self.list_commands(ctx):
            return None
        command = getattr(importlib.import_module(f"{__name__}.{name}"), "command", None)
        return command if isinstance(command, click.Command) else None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (EventsError, ValidationError, ValueError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)


@click.group(cls=EventsGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Dify's event system on Apache Kafka: publish typed events, run consumer groups, recover."""
