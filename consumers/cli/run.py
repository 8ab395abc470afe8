"""``events run``: run consumer groups (one process per group, as a pod does)."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import click
from rich.console import Console
from rich.table import Table

from dify_events.schemas.settings import MAX_RETENTION_DAYS, get_settings

from ..errors import ConsumerError
from ..group import DELIVERIES, SHARED
from ..logs import configure_logging

log = logging.getLogger("consumers.cli.run")
out = Console()
err = Console(stderr=True)


class NoGroups(ConsumerError):
    """``events run`` found nothing to run."""


class Days(click.FloatRange):
    """A number of days above 0 and at most ``MAX_RETENTION_DAYS`` (not NaN, which every range admits)."""

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True, max=MAX_RETENTION_DAYS)

    def convert(self, value, param, ctx) -> float:
        days = super().convert(value, param, ctx)
        if math.isnan(days):
            self.fail(f"{value!r} is not a number of days", param, ctx)
        return days


@click.command("run")
@click.option("--group", "group_name", metavar="NAME",
              help="Run this consumer group in this process (what a pod runs).")
@click.option("--all", "run_all", is_flag=True,
              help="Run every registered group, each in its own process (development).")
@click.option("--list", "list_groups", is_flag=True, help="List the registered groups and exit.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=None,
              help="Messages handled at once (default: settings' concurrency, EVENTS_CONCURRENCY).")
@click.option("--batch-max", type=click.IntRange(1, 10_000), default=None,
              help="Most idempotent events per database transaction; 1 turns batches off "
                   "(default: EVENTS_BATCH_MAX, else the group's batch_max, 50).")
@click.option("--inline/--no-inline", default=None,
              help="Handlers' first attempts on the poll loop's thread, for handlers that do not wait; retries, and "
                   "a fetch's rest after 1 s, go to the workers (default: EVENTS_INLINE, else the group's inline "
                   "option, off).")
@click.option("--delivery", type=click.Choice(DELIVERIES), default=None,
              help="Run the group ordered (a consumer group) or shared (a share group) instead of as its code "
                   "declares; `ordered` where the cluster has no share groups (default: EVENTS_DELIVERY).")
@click.option("--health-port", type=click.IntRange(0, 65535), default=None,
              help="Port of /healthz and /readyz (default: EVENTS_HEALTH_PORT; 0: none).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Port of the Prometheus endpoint /metrics (default: EVENTS_METRICS_PORT; 0: none).")
@click.option("--idempotency-retention-days", type=Days(), default=None,
              help="How long processed idempotency keys are kept, older ones purged hourly "
                   "(default: EVENTS_IDEMPOTENCY_RETENTION_DAYS, 7).")
def command(group_name: str | None, run_all: bool, list_groups: bool, concurrency: int | None,
            batch_max: int | None, inline: bool | None, delivery: str | None, health_port: int | None,
            metrics_port: int | None, idempotency_retention_days: float | None) -> None:
    """Run consumer groups until SIGTERM or Ctrl-C, which drain in-flight messages, commit and leave the group.

    Handler modules: EVENTS_HANDLER_MODULES (comma-separated), by default Dify's receivers.
    Metrics are served on /metrics (Prometheus) and, like traces, exported by OTLP when
    OTEL_EXPORTER_OTLP_ENDPOINT is set.
    """
    from .. import registry

    groups = registry.discover()
    if list_groups:
        _print_groups(groups)
        return
    if bool(group_name) == run_all:
        raise click.UsageError("give exactly one of --group NAME or --all")
    if not groups:
        raise NoGroups("no consumer groups are registered: set EVENTS_HANDLER_MODULES to the modules that define them")
    if idempotency_retention_days is None:
        idempotency_retention_days = get_settings().idempotency_retention_days
    if run_all:
        sys.exit(_run_all([g.name for g in groups], concurrency, batch_max, inline, delivery, health_port,
                          metrics_port, idempotency_retention_days))
    assert group_name is not None  # --group NAME, since not --all
    _run_one(registry.get(group_name), concurrency, batch_max, inline, delivery, health_port, metrics_port,
             idempotency_retention_days)


def _run_one(group, concurrency: int | None, batch_max: int | None, inline: bool | None, delivery: str | None,
             health_port: int | None, metrics_port: int | None, retention_days: float) -> None:
    from ..runners import runner_class
    from ..telemetry import configure

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    delivery = delivery or settings.delivery
    if delivery and delivery != group.delivery:
        log.info("group %s runs %s here, not %s as its code declares (EVENTS_DELIVERY / --delivery)",
                 group.name, delivery, group.delivery)
        group.delivery = delivery
    telemetry = configure(settings.metrics_port if metrics_port is None else metrics_port, group=group.name)
    runner = runner_class(group)(group, settings=settings, concurrency=concurrency, batch_max=batch_max, inline=inline,
                                 health_port=health_port, idempotency_retention=timedelta(days=retention_days),
                                 tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)

    def on_signal(_signum, _frame):
        runner.stop()  # only sets an event: safe in a signal handler; the loop logs what follows

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        runner.run()
    finally:
        telemetry.shutdown()


def _run_all(names: list[str], concurrency: int | None, batch_max: int | None, inline: bool | None,
             delivery: str | None, health_port: int | None, metrics_port: int | None, retention_days: float) -> int:
    """One child process per group (health and metrics ports counted up from the given ones);
    signals are passed on; when one child ends, all are stopped."""
    base_port = get_settings().health_port if health_port is None else health_port
    base_metrics = get_settings().metrics_port if metrics_port is None else metrics_port
    children: dict[str, subprocess.Popen] = {}
    for i, name in enumerate(names):
        args = [sys.executable, "-m", "dify_events.consumers", "run", "--group", name,
                "--health-port", str(base_port + i if base_port else 0),
                "--metrics-port", str(base_metrics + i if base_metrics else 0),
                "--idempotency-retention-days", str(retention_days)]
        if concurrency:
            args += ["--concurrency", str(concurrency)]
        if batch_max:
            args += ["--batch-max", str(batch_max)]
        if inline is not None:
            args.append("--inline" if inline else "--no-inline")
        if delivery:
            args += ["--delivery", delivery]
        children[name] = subprocess.Popen(args, env=os.environ.copy())
        out.print(f"started [bold]{name}[/] (pid {children[name].pid})")
    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while any(child.poll() is None for child in children.values()):
        ended = [name for name, child in children.items() if child.poll() is not None]
        if ended and not stopping:
            err.print(f"[bold red]error:[/] group {ended[0]} exited with code {children[ended[0]].returncode}; "
                      "stopping the others")
            forward(signal.SIGTERM, None)
        time.sleep(0.2)
    # a child still starting when the signal came ends by it (its handler not yet installed): that is a stop too
    by_signal = (-signal.SIGTERM, -signal.SIGINT) if stopping else ()
    return max(0 if child.returncode in by_signal else abs(child.returncode or 0) for child in children.values())


def _print_groups(groups) -> None:
    prefix = get_settings().topic_prefix
    table = Table("group", "handlers", "subscribes to", "dead letters")
    for group in groups:
        name = f"{group.name}\n(shared)" if group.delivery == SHARED else group.name
        table.add_row(name, "\n".join(f"{t} -> {h.name}" for t, h in sorted(group.handlers.items())),
                      "\n".join(group.topics(prefix)), group.dlq_topic(prefix))
    out.print(table)
