"""``events config show``: the effective configuration (environment, config file, defaults), and the
librdkafka properties each kind of client gets, with every secret masked."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from dify_events.schemas.settings import config_file, get_settings, is_secret, masked

out = Console()

def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy can parse: show nothing of it that could be secret
        return "(not a valid SQLAlchemy URL)"


def effective(group: str) -> dict:
    """Settings, source and client properties, secrets masked (``masked()``/``is_secret()``)."""
    from dify_events.consumers.config import consumer_config
    from dify_events.producers.config import producer_config

    settings = get_settings()
    try:
        bootstrap = settings.bootstrap()
    except ValueError as exc:
        bootstrap = f"(none: {exc})"
    values = {
        "bootstrap_servers": bootstrap,
        "topic_prefix": settings.topic_prefix,
        "database_url": _safe_url(settings.database()),
        "concurrency": settings.concurrency,
        "batch_max": settings.batch_max,
        "inline": settings.inline,
        "drain_timeout_s": settings.drain_timeout_s,
        "health_port": settings.health_port,
        "metrics_port": settings.metrics_port,
        "log_format": settings.log_format,
        "log_level": settings.log_level,
    }
    clients = {}
    if not bootstrap.startswith("(none"):
        clients["producer"] = producer_config(settings=settings)
        clients["consumer"] = consumer_config(settings, group)
    return {
        "config_file": str(path) if (path := config_file()) else None,
        "settings": values,
        "kafka": masked(settings.kafka_properties()),
        "clients": {name: masked({k: v for k, v in conf.items() if not callable(v) and k != "logger"})
                    for name, conf in clients.items()},
    }


@click.group("config")
def command() -> None:
    """Show the effective configuration."""


@command.command()
@click.option("--group", default="example-group", show_default=True,
              help="Consumer group whose consumer properties are shown.")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def show(group: str, output: str) -> None:
    """The settings as the platform sees them (environment over EVENTS_CONFIG_FILE over defaults) and the
    librdkafka properties of the producer and of a group's consumer. Passwords and other secrets are masked."""
    data = effective(group)
    if output == "json":
        click.echo(json.dumps(data, indent=2, default=str))
        return
    out.print(f"config file: {data['config_file'] or '(none)'}", highlight=False)
    table = Table("setting", "value", title="settings")
    for name, value in data["settings"].items():
        table.add_row(name, str(value))
    out.print(table)
    for name, conf in data["clients"].items():
        table = Table("property", "value", title=f"{name} (librdkafka)")
        for key, value in sorted(conf.items()):
            table.add_row(key, "[yellow]*****[/]" if is_secret(key) and value else str(value))
        out.print(table)
