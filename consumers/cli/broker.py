"""``events broker``: the local Kafka (KRaft) for development, the demo and the tests: one node, or
a cluster of three (``--brokers 3``) whose nodes start, stop and log one by one (``--node N``)."""

from __future__ import annotations

from collections.abc import Callable

import click
from rich.console import Console
from rich.status import Status
from rich.table import Table

from dify_events.schemas.settings import cache_dir, local_broker_home, local_cluster_home

from ..broker import LocalBroker
from ..broker.cluster import LocalCluster

out = Console()

NODE = click.option("--node", type=int, default=None, metavar="N",
                    help="Only node N of the local cluster (`--brokers 3`).")


def local_broker(port: int | None = None, secure: bool = False) -> LocalBroker:
    return LocalBroker(local_broker_home(), cache_dir(), port=port, secure=secure)


def local_cluster(port: int | None = None) -> LocalCluster:
    return LocalCluster(local_cluster_home(), cache_dir(), port=port)


def existing_cluster() -> LocalCluster:
    cluster = local_cluster()
    if not cluster.exists:
        raise click.UsageError(f"there is no local cluster in {cluster.home}: make it with "
                               "`events broker start --brokers 3`")
    return cluster


@click.group("broker")
def command() -> None:
    """Start, stop and inspect the local Apache Kafka broker or three-broker cluster (KRaft, no ZooKeeper)."""


@command.command()
@click.option("--port", type=int, default=None, help="Listener port (default 9092, or the next free one; "
              "a cluster's nodes take it and the next ones).")
@click.option("--brokers", type=click.Choice(["1", "3"]), default="1", show_default=True,
              help="3: a cluster of three nodes, each broker and controller, with replication.")
@NODE
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for it to answer.")
@click.option("--secure", is_flag=True, help="TLS (a local CA) with SASL/SCRAM-SHA-512 users instead of PLAINTEXT.")
def start(port: int | None, brokers: str, node: int | None, timeout: float, secure: bool) -> None:
    """Start the broker (or the cluster, or one of its nodes) in the background and wait until it answers."""
    if brokers == "3" or node is not None:
        if secure:
            raise click.UsageError("--secure runs one broker; the local cluster is PLAINTEXT")
        _start_cluster(port, node, timeout)
        return
    broker = local_broker(port, secure)
    running = broker.status()
    if running:
        out.print(f"already running at [bold]{running.bootstrap}[/] (pid {running.pid})")
        return
    with out.status("starting") as status:
        state = broker.start(timeout_s=timeout, on_progress=_reporter(status))
    out.print(f"Apache Kafka {state.version} is up at [bold green]{state.bootstrap}[/] (pid {state.pid})")
    if state.secure:
        out.print(f"  SASL_SSL: clients need the CA and the SCRAM user in {broker.client_config_file}")
        out.print(f"  export EVENTS_CONFIG_FILE={broker.client_config_file}")
    else:
        out.print(f"  export KAFKA_BOOTSTRAP_SERVERS={state.bootstrap}")


def _reporter(status: Status) -> Callable[[str], None]:
    """Shows each step of a start in the spinner and keeps it on the screen."""
    def report(message: str) -> None:
        status.update(message)
        out.print(f"[dim]{message}[/]")
    return report


def _start_cluster(port: int | None, node: int | None, timeout: float) -> None:
    cluster = existing_cluster() if node is not None else local_cluster(port)
    with out.status("starting") as status:
        if node is not None:
            cluster.start_node(node, timeout_s=timeout)
        else:
            cluster.start(timeout_s=timeout, on_progress=_reporter(status))
    _print_cluster(cluster)
    out.print(f"  export KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap}")


@command.command()
@NODE
def stop(node: int | None) -> None:
    """Stop the broker and the cluster (or one node of it): a controlled shutdown; the data stays."""
    if node is not None:
        with out.status(f"stopping node {node}"):
            stopped = existing_cluster().stop_node(node)
        out.print(f"node {node} stopped" if stopped else f"node {node} was not running")
        return
    with out.status("stopping"):
        done = [what for what, was_running in (("the broker", local_broker().stop()),
                                               ("the cluster", local_cluster().stop())) if was_running]
    out.print(f"{' and '.join(done)} stopped" if done else "the broker was not running")


@command.command()
def status() -> None:
    """Address, Kafka version, pid and data directory of the running broker; each node of the cluster."""
    state = local_broker().status()
    cluster = local_cluster()
    if not state and not cluster.running():
        out.print(f"not running (home: {local_broker_home()}); start it with `events broker start`")
        raise SystemExit(3)
    if state:
        table = Table(show_header=False, box=None)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")  # a long data dir is folded onto more lines, never cut
        for name, value in (("address", state.bootstrap), ("kafka", state.version), ("pid", state.pid),
                            ("data dir", state.data_dir), ("cluster id", state.cluster_id),
                            ("security", "SASL_SSL (SCRAM-SHA-512)" if state.secure else "PLAINTEXT")):
            table.add_row(f"[bold]{name}[/]", str(value))
        out.print(table)
    if cluster.running():
        _print_cluster(cluster)


def _print_cluster(cluster: LocalCluster) -> None:
    nodes = cluster.status()
    version = next((n.running.version for n in nodes if n.running), "?")
    table = Table(title=f"Apache Kafka {version}: a cluster of {len(nodes)} nodes in {cluster.home}",
                  title_justify="left")
    for column in ("node", "address", "state", "pid", "controller"):
        table.add_column(column)
    for n in nodes:
        table.add_row(str(n.node_id), f"127.0.0.1:{n.port}", "[green]running[/]" if n.running else "[red]stopped[/]",
                      str(n.running.pid) if n.running else "", "active" if n.active_controller else "voter")
    out.print(table)


@command.command()
@click.option("-n", "--lines", type=int, default=50, show_default=True)
@NODE
def logs(lines: int, node: int | None) -> None:
    """The last lines of the broker's log (or of node N's)."""
    broker = existing_cluster().node(node) if node is not None else local_broker()
    text = broker.logs(lines)
    click.echo(text or f"no log yet at {broker.log_file}")
