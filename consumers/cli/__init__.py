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
    """Turns the platform's own errors into one red line and exit code 1, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (EventsError, ValidationError, ValueError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)


@click.group(cls=EventsGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Dify's event system on Apache Kafka: publish typed events, run consumer groups, recover."""


def _register() -> None:
    """Each module of this package that defines ``command`` is a subcommand (``broker.py`` -> ``events broker``)."""
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(module, "command", None), click.Command):
            main.add_command(module.command)


_register()
