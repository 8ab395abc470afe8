"""``events outbox``: run the transactional outbox's relay, see what is pending, purge sent rows."""

from __future__ import annotations

import logging
import re
import signal
import time
from datetime import timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from dify_events.schemas.settings import get_settings

from ..stop_event import StopEvent

out = Console()
err = Console(stderr=True)

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w`` (or plain seconds) as a timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration: use a number and one of s, m, h, d, w (e.g. 7d)")
    return timedelta(**{_UNITS[match[2] or "s"]: float(match[1])})


def _engine(database_url: str | None):
    from sqlalchemy import create_engine

    url = database_url or get_settings().database()
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url, hide_parameters=True)  # SQL parameters are event data: not in error text


def _logging() -> None:
    """JSON records for log shippers when ``EVENTS_LOG_FORMAT=json``, readable lines otherwise."""
    settings = get_settings()
    root = logging.getLogger()
    if settings.log_format == "json":
        from ..logs import configure_logging

        configure_logging("json", settings.log_level)
    elif not root.handlers:
        from ..logs import RedactingFilter, RepeatedLines

        handler = RichHandler(console=err, show_path=False)
        handler.addFilter(RepeatedLines())
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
        root.setLevel(settings.log_level.upper())


database_option = click.option("--database-url", metavar="URL",
                               help="SQLAlchemy URL of the application's database (default: the settings' database).")


@click.group("outbox")
def command() -> None:
    """The transactional outbox: relay committed events to Kafka, show what is pending, purge."""


@command.command()
@database_option
def init(database_url: str | None) -> None:
    """Create the event_outbox table (if missing) in the database."""
    from dify_events.producers.outbox import create_outbox_table

    engine = _engine(database_url)
    create_outbox_table(engine)
    out.print(f"event_outbox is ready in {engine.url.render_as_string(hide_password=True)}")


@command.command()
@database_option
@click.option("--once", is_flag=True, help="Publish what is pending now, then exit (non-zero if a row failed).")
@click.option("--batch-size", type=click.IntRange(1), default=500, show_default=True, help="Rows per round.")
@click.option("--poll-interval", type=float, default=0.5, show_default=True,
              help="Seconds between rounds when the outbox is drained.")
@click.option("--retention", default="7d", show_default=True, help="Purge rows sent longer ago than this.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Serve Prometheus /metrics (events published by type and outcome) on this port; 0: none.")
@click.option("--health-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Serve /healthz (rounds keep ending) and /readyz (a round went through) on this port, "
                   "for Kubernetes' probes; 0: none. Not with --once.")
def relay(database_url: str | None, once: bool, batch_size: int, poll_interval: float, retention: str,
          metrics_port: int, health_port: int) -> None:
    """Publish committed outbox rows to Kafka, in order per key, marking each sent once the broker
    acknowledged it. Runs until SIGTERM or Ctrl-C (finishing the round in hand). Several relays may
    run at once on PostgreSQL; on SQLite only one. Traces and metrics go by OTLP where the standard
    OTEL_EXPORTER_OTLP_* variables name an endpoint."""
    from ..telemetry import configure

    _logging()
    telemetry = configure(metrics_port)
    try:
        _relay(database_url, once, batch_size, poll_interval, retention, health_port)
    finally:
        telemetry.shutdown()


def _relay(database_url: str | None, once: bool, batch_size: int, poll_interval: float, retention: str,
           health_port: int) -> None:
    from dify_events.producers.relay import OutboxRelay

    engine = _engine(database_url)
    with OutboxRelay(engine, batch_size=batch_size, poll_interval_s=poll_interval,
                     retention=parse_duration(retention)) as outbox_relay:
        where = engine.url.render_as_string(hide_password=True)
        if once:
            while outbox_relay.run_once():
                pass
        else:
            stop = StopEvent()  # set by the signal handlers below (threading.Event's set() can deadlock there)
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
            health = _health_server(outbox_relay, stop, health_port) if health_port else None
            err.print(f"relaying {where} -> {outbox_relay.producer.config.get('bootstrap.servers')} "
                      f"(batch {batch_size}); stop with Ctrl-C or SIGTERM", highlight=False)
            try:
                outbox_relay.run(stop)
            finally:
                if health is not None:
                    health.stop()
        out.print(f"sent {outbox_relay.sent_total} events in {outbox_relay.rounds} rounds", highlight=False)
        failed = outbox_relay.last_round.failed
        if once and (failed or outbox_relay.last_round.unanswered):
            first = next(iter(failed.values()), None)
            raise click.ClickException(f"{len(failed) + len(outbox_relay.last_round.unanswered)} rows stay pending"
                                       + (f"; first error: {first}" if first else " (no answer from the broker)"))


def _health_server(outbox_relay, stop: StopEvent, port: int):
    """/healthz: a round ended (published, or failed and being retried) within the window;
    /readyz: a round went through (the database and its outbox table reached) and not stopping."""
    from ..health import HealthServer

    started = time.monotonic()
    # A round may wait ack_timeout_s for the broker's answers, then the loop sleeps a poll interval
    # or its backoff (at most 30 s): only a loop silent for longer than both is wedged.
    window = outbox_relay.ack_timeout_s + max(60.0, 3 * outbox_relay.poll_interval_s)
    return HealthServer(
        port,
        live=lambda: time.monotonic() - (outbox_relay.last_round_at or started) < window,
        ready=lambda: outbox_relay.rounds > 0 and not stop.is_set(),
        status=lambda: {"rounds": outbox_relay.rounds, "sent": outbox_relay.sent_total},
    ).start()


@command.command()
@database_option
def status(database_url: str | None) -> None:
    """Pending, failing and sent rows, the oldest pending row and the last send."""
    from dify_events.producers.outbox import outbox_status

    state = outbox_status(_engine(database_url))
    table = Table(show_header=False, box=None)
    table.add_row("[bold]pending[/]", str(state["pending"]))
    table.add_row("[bold]failing[/] (pending, failed before)",
                  f"[red]{state['failing']}[/]" if state["failing"] else "0")
    table.add_row("[bold]sent[/] (not yet purged)", str(state["sent"]))
    table.add_row("[bold]oldest pending[/]", str(state["oldest_pending_at"] or "-"))
    table.add_row("[bold]last sent[/]", str(state["last_sent_at"] or "-"))
    if state["first_error"]:
        event_id, message = state["first_error"]
        table.add_row("[bold]first error[/]", f"{event_id}: {message}")
    out.print(table)


@command.command()
@database_option
@click.option("--older-than", default="7d", show_default=True, help="Delete rows sent longer ago than this.")
def purge(database_url: str | None, older_than: str) -> None:
    """Delete sent rows older than the retention period (pending rows are never deleted)."""
    from dify_events.producers.outbox import purge_sent

    deleted = purge_sent(_engine(database_url), parse_duration(older_than))
    out.print(f"deleted {deleted} sent rows older than {older_than}")
