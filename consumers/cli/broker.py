"""``events broker``: the local single-node Kafka (KRaft) for development, the demo and the tests."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from schemas.settings import cache_dir, local_broker_home

from ..broker import LocalBroker

out = Console()


def local_broker(port: int | None = None, secure: bool = False) -> LocalBroker:
    return LocalBroker(local_broker_home(), cache_dir(), port=port, secure=secure)


@click.group("broker")
def command() -> None:
    """Start, stop and inspect the local Apache Kafka broker (KRaft, no ZooKeeper)."""


@command.command()
@click.option("--port", type=int, default=None, help="Listener port (default 9092, or the next free one).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for it to answer.")
@click.option("--secure", is_flag=True, help="TLS (a local CA) with SASL/SCRAM-SHA-512 users instead of PLAINTEXT.")
def start(port: int | None, timeout: float, secure: bool) -> None:
    """Start the broker in the background and wait until it answers metadata requests."""
    broker = local_broker(port, secure)
    running = broker.status()
    if running:
        out.print(f"already running at [bold]{running.bootstrap}[/] (pid {running.pid})")
        return
    with out.status("starting") as status:
        def progress(message: str) -> None:
            status.update(message)
            out.print(f"[dim]{message}[/]")

        state = broker.start(timeout_s=timeout, on_progress=progress)
    out.print(f"Apache Kafka {state.version} is up at [bold green]{state.bootstrap}[/] (pid {state.pid})")
    if state.secure:
        out.print(f"  SASL_SSL: clients need the CA and the SCRAM user in {broker.client_config_file}")
        out.print(f"  export EVENTS_CONFIG_FILE={broker.client_config_file}")
    else:
        out.print(f"  export KAFKA_BOOTSTRAP_SERVERS={state.bootstrap}")


@command.command()
def stop() -> None:
    """Stop the broker (controlled shutdown); its data stays for the next start."""
    broker = local_broker()
    with out.status("stopping"):
        stopped = broker.stop()
    out.print("stopped" if stopped else "the broker was not running")


@command.command()
def status() -> None:
    """Address, Kafka version, pid and data directory of the running broker."""
    state = local_broker().status()
    if not state:
        out.print(f"not running (home: {local_broker_home()}); start it with `events broker start`")
        raise SystemExit(3)
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # a long data dir is folded onto more lines, never cut
    for name, value in (("address", state.bootstrap), ("kafka", state.version), ("pid", state.pid),
                        ("data dir", state.data_dir), ("cluster id", state.cluster_id),
                        ("security", "SASL_SSL (SCRAM-SHA-512)" if state.secure else "PLAINTEXT")):
        table.add_row(f"[bold]{name}[/]", str(value))
    out.print(table)


@command.command()
@click.option("-n", "--lines", type=int, default=50, show_default=True)
def logs(lines: int) -> None:
    """The last lines of the broker's log."""
    broker = local_broker()
    text = broker.logs(lines)
    click.echo(text or f"no log yet at {broker.log_file}")
