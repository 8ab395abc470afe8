"""The demo's cluster and pods: find (or start) Kafka, apply the topics, run one process per group.

The cluster is the configured one (``KAFKA_BOOTSTRAP_SERVERS``, ``EVENTS_BOOTSTRAP_SERVERS`` or
the config file), else the local broker of ``events broker``, started when it is not running.
Every consumer group runs as ``python -m dify_events.consumers run --group NAME`` in a process of its own,
configured by environment variables only, as a pod of the Helm chart is; its output goes to
``<run dir>/logs/<group>.log``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from dify_events.schemas.settings import Settings, cache_dir, local_broker_home, local_cluster_home
from dify_events.schemas.topics import Plan, apply, plan

from ..broker import LocalBroker
from ..broker.cluster import LocalCluster
from ..broker.local import free_port
from ..health import PORT_REFUSED
from ..registry import HANDLER_MODULES_ENV, handler_modules

LIBRDKAFKA_LOG = logging.getLogger("consumers.demo.librdkafka")
"""Where librdkafka's own log lines of the demo's clients go (the run's demo.log, not the console)."""


@dataclass
class Cluster:
    bootstrap: str
    local: LocalBroker | None = None  # the local broker, when that is the cluster
    started: bool = False             # whether this run started it
    what: str = "the configured cluster"


def find_cluster(settings: Settings, *, on_progress: Callable[[str], None] = lambda message: None) -> Cluster:
    """The configured cluster, else the running local broker (or three-broker cluster), else the local
    broker started now."""
    if settings.bootstrap_servers:
        return Cluster(settings.bootstrap_servers)
    broker = LocalBroker(local_broker_home(), cache_dir())
    state = broker.status()
    three = LocalCluster(local_cluster_home(), cache_dir())
    if state is None and three.running():
        return Cluster(three.bootstrap, what="the local three-broker cluster")
    if state is not None:
        if state.secure and not settings.kafka_properties():
            raise ValueError(f"the local broker runs with --secure: point the demo at its client settings with "
                             f"EVENTS_CONFIG_FILE={broker.client_config_file}")
        return Cluster(state.bootstrap, broker)
    state = broker.start(timeout_s=120, on_progress=on_progress)
    return Cluster(state.bootstrap, broker, started=True)


def apply_topics(admin: AdminClient, prefix: str, groups: list[str], shared: Collection[str] = ()) -> Plan:
    """The domain topics and every group's dead-letter and retry topics, as the topics file says
    (``shared``: the groups whose retry topic is a shared group's)."""
    the_plan = plan(admin, prefix, groups=groups, shared_groups=shared, timeout=30)
    if the_plan.changes:
        apply(admin, the_plan, timeout=60)
    return the_plan


def delete_run(admin: AdminClient, prefix: str, group_ids: list[str], timeout_s: float = 30.0) -> None:
    """Deletes the run's topics and consumer groups (``--delete-topics``)."""
    metadata = admin.list_topics(timeout=timeout_s)
    topics = [t for t in metadata.topics if t.startswith(f"{prefix}.")]
    if group_ids:
        _settle(admin.delete_consumer_groups(group_ids, request_timeout=timeout_s), "a consumer group", timeout_s)
    if topics:
        _settle(admin.delete_topics(topics, operation_timeout=timeout_s), "a topic", timeout_s)


def _settle(futures: dict, what: str, timeout_s: float) -> None:
    """Waits for each deletion; a failed one is logged, not raised (the run's result stands)."""
    for future in futures.values():
        try:
            future.result(timeout=timeout_s)
        except (KafkaException, TimeoutError) as exc:
            LIBRDKAFKA_LOG.warning("deleting %s: %s", what, str(exc) or f"no answer within {timeout_s:.0f}s")


@dataclass
class GroupProcess:
    name: str          # the group's
    log_file: Path
    health_port: int
    label: str = ""    # the group's name, and the member's number when the group runs several: "name#2"
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 15, *, problems_only: bool = False) -> str:
        """The last ``lines`` lines of the process's log (only its WARNING and ERROR records, and
        what follows them, with ``problems_only``)."""
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        if problems_only:
            text = [line for line in text if " INFO " not in line and " DEBUG " not in line]
        return "\n".join(text[-lines:])


class GroupProcesses:
    """One ``events run --group NAME`` process per group, as the chart runs one Deployment per group,
    or ``members[NAME]`` of them (a shared group's replicas). ``groups``: each process by its label."""

    def __init__(self, names: list[str], *, log_dir: Path, env: dict[str, str], concurrency: int,
                 members: dict[str, int] | None = None):
        self.log_dir = log_dir
        self.env = env
        self.concurrency = concurrency
        counts = members or {}
        labels = {name: [f"{name}#{i}" for i in range(1, counts[name] + 1)] if counts.get(name, 1) > 1 else [name]
                  for name in names}
        self.groups = {label: GroupProcess(name, log_dir / f"{label.replace('#', '-')}.log", free_port(), label)
                       for name in names for label in labels[name]}
        self.health_ports: dict[str, list[int]] = {}  # group -> its members' ports, kept current
        self._note_ports()
        self._restarting = threading.Lock()  # the monitor's thread and the demo's both ask

    def members(self, name: str) -> list[GroupProcess]:
        return [p for p in self.groups.values() if p.name == name]

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for group in self.groups.values():
            self._start(group)

    def _start(self, group: GroupProcess) -> None:
        env = {**self.env, "EVENTS_HEALTH_PORT": str(group.health_port)}
        with open(group.log_file, "ab") as log_file:
            group.process = subprocess.Popen(
                [sys.executable, "-m", "dify_events.consumers", "run", "--group", group.name,
                 "--concurrency", str(self.concurrency)],
                env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=terminate_with_parent)

    def _note_ports(self) -> None:
        ports: dict[str, list[int]] = {}
        for p in self.groups.values():
            ports.setdefault(p.name, []).append(p.health_port)
        self.health_ports.update(ports)

    def exited(self) -> dict[str, int]:
        """Processes that have ended (by label), with their exit code. A process whose health port
        another process took between ``free_port``'s check and its bind (it exits at once, before
        joining) is started again on another port instead."""
        with self._restarting:
            for group in self.groups.values():
                if group.returncode == 1 and PORT_REFUSED in group.log_tail(3):
                    group.health_port = free_port()
                    self._note_ports()
                    self._start(group)
        return {g.label: g.returncode for g in self.groups.values() if g.returncode is not None}

    def exited_groups(self) -> dict[str, int]:
        return self.by_group(self.exited())

    def by_group(self, codes: dict[str, Any]) -> dict[str, Any]:
        """Exit codes by label as exit codes by group: a failed member's code, else any member's."""
        out: dict[str, Any] = {}
        for label, code in codes.items():
            name = self.groups[label].name
            if name not in out or (code and not out[name]):
                out[name] = code
        return out

    def stop(self, timeout_s: float = 60.0) -> dict[str, int | None]:
        """SIGTERM to each (they drain, commit and leave their group), then waits; SIGKILL after
        ``timeout_s``. Returns each exit code, by label."""
        running = [g.process for g in self.groups.values() if g.process is not None and g.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return {g.label: g.returncode for g in self.groups.values()}


def terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the demo's process dies, however it dies (Linux's
    PR_SET_PDEATHSIG), so a killed demo leaves no group processes behind. Elsewhere: nothing."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def group_env(settings: Settings, *, bootstrap: str, prefix: str, database_url: str) -> dict[str, str]:
    """The environment of a group's process: the run's cluster, prefix, database and handler modules."""
    env = {k: v for k, v in os.environ.items() if k not in ("EVENTS_BOOTSTRAP_SERVERS", "EVENTS_HEALTH_PORT")}
    env[HANDLER_MODULES_ENV] = ",".join(handler_modules(builtin=True))
    env.update(KAFKA_BOOTSTRAP_SERVERS=bootstrap, EVENTS_TOPIC_PREFIX=prefix, EVENTS_DATABASE_URL=database_url,
               EVENTS_DRAIN_TIMEOUT_S=str(min(settings.drain_timeout_s, 20.0)), PYTHONUNBUFFERED="1",
               EVENTS_METRICS_PORT="0")  # fifteen processes on one machine: no /metrics (the demo reads /healthz)
    return env
