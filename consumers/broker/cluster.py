"""A local Apache Kafka cluster: three KRaft nodes from the same jars, each a broker and a controller.

Why three combined nodes rather than one controller and three brokers: the controller quorum is then
three voters, as production runs it, so killing the active controller is a failover (the other two
elect a new one within seconds) and not the end of every metadata change; and three JVMs fit a
2-core machine where six would not. The price: a node down is a broker and a voter down, so two
nodes down also leave the quorum without a majority until one is back (with three dedicated
controllers, the controller would stay up).

The home holds ``cluster.json`` (the nodes' ids and ports: the voters name the controller ports, so
they never change) and one ``node-<id>/`` per node, a ``LocalBroker`` home of its own (its
``server.properties``, ``data/``, ``server.log`` and ``broker.json``). The nodes are formatted once
with one cluster id; topics, offsets and the metadata log survive ``stop``/``start``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import BrokerError
from .local import (
    BrokerState,
    LocalBroker,
    Quorum,
    free_port,
    new_cluster_id,
    port_is_free,
    reserve,
    wait_for_exit,
)

DEFAULT_PORT = 9092


@dataclass(frozen=True)
class NodeState:
    """One node as ``status`` finds it: its state when running, else None."""

    node_id: int
    port: int
    home: Path
    running: BrokerState | None
    active_controller: bool = False


class LocalCluster:
    """``start``/``stop``/``status``/``logs`` of the cluster in ``home``, as a whole or node by node."""

    def __init__(self, home: Path, cache_dir: Path, *, size: int = 3, port: int | None = None, heap: str = "512m"):
        """``port``: the first node's client port (the others take the next free ones), when the
        cluster is made; a made cluster keeps its ports."""
        self.home = Path(home)
        self.cache_dir = Path(cache_dir)
        self.size = size
        self.requested_port = port
        self.heap = heap
        self.layout_file = self.home / "cluster.json"

    # -- layout -------------------------------------------------------------------------
    def quorums(self) -> list[Quorum]:
        """Each node's id and ports: made (and kept) on the first start."""
        if not self.layout_file.exists():
            self._make_layout()
        nodes = json.loads(self.layout_file.read_text())["nodes"]
        voters = ",".join(f"{n['node_id']}@127.0.0.1:{n['controller_port']}" for n in nodes)
        return [Quorum(n["node_id"], reserve(n["port"]), reserve(n["controller_port"]), voters) for n in nodes]

    def _make_layout(self) -> None:
        port, nodes = self.requested_port or DEFAULT_PORT, []
        for node_id in range(1, self.size + 1):
            while not port_is_free(port):
                port += 1
            nodes.append({"node_id": node_id, "port": port, "controller_port": free_port()})
            port += 1
        self.home.mkdir(parents=True, exist_ok=True)
        self.layout_file.write_text(json.dumps({"nodes": nodes}, indent=2))

    @property
    def exists(self) -> bool:
        return self.layout_file.exists()

    def node(self, node_id: int) -> LocalBroker:
        for quorum in self.quorums():
            if quorum.node_id == node_id:
                return LocalBroker(self.home / f"node-{node_id}", self.cache_dir, heap=self.heap, quorum=quorum)
        raise BrokerError(f"the cluster in {self.home} has no node {node_id} (its nodes: "
                          f"{', '.join(str(q.node_id) for q in self.quorums())})")

    def nodes(self) -> list[LocalBroker]:
        return [self.node(q.node_id) for q in self.quorums()]

    @property
    def bootstrap(self) -> str:
        """Every node's address: a client finds the cluster through whichever answers."""
        return ",".join(f"127.0.0.1:{q.port}" for q in self.quorums())

    # -- queries ------------------------------------------------------------------------
    def status(self) -> list[NodeState]:
        """Every node, running or not, and which one is the active controller."""
        if not self.exists:
            return []
        active = self.active_controller()
        states = []
        for quorum in self.quorums():
            node = self.node(quorum.node_id)
            states.append(NodeState(quorum.node_id, quorum.port, node.home, node.status(), quorum.node_id == active))
        return states

    def running(self) -> bool:
        return any(node.running for node in self.status())

    def active_controller(self) -> int | None:
        """The node id of the quorum's leader, as the running nodes last recorded it (KRaft keeps its
        election state in ``quorum-state``; the highest epoch is the latest election)."""
        best: tuple[int, int] | None = None
        for node in self.nodes():
            if node.status() is None:
                continue
            try:
                state = json.loads((node.data_dir / "__cluster_metadata-0" / "quorum-state").read_text())
            except (OSError, ValueError):
                continue
            leader, epoch = state.get("leaderId", -1), state.get("leaderEpoch", -1)
            if leader >= 0 and (best is None or epoch > best[1]):
                best = (leader, epoch)
        return best[0] if best else None

    def logs(self, node_id: int, lines: int = 50) -> str:
        return self.node(node_id).logs(lines)

    # -- start and stop -----------------------------------------------------------------
    def start(self, *, timeout_s: float = 120.0, on_progress=lambda message: None) -> list[NodeState]:
        """Starts every node that is not running, together (a node answers only once a majority of
        the quorum is up), and waits until each one has joined."""
        self._check_cluster_id()
        stopped = [node for node in self.nodes() if node.status() is None]
        with ThreadPoolExecutor(max_workers=len(stopped) or 1) as pool:  # formatting is a JVM each: in parallel
            launched = list(pool.map(lambda node: (node, *node.launch(on_progress=on_progress)), stopped))
        for node, proc, state in launched:
            node.wait_until_ready(state, timeout_s, proc)
        if launched:
            launched[0][0].wait_for_coordinators(self.bootstrap, timeout_s)
        return self.status()

    def start_node(self, node_id: int, *, timeout_s: float = 120.0) -> BrokerState:
        """Starts one node of the cluster again and waits until it has joined."""
        return self.node(node_id).start(timeout_s=timeout_s)

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """Controlled shutdown of every node at once (one by one, the last would wait for a quorum
        that has gone); False if none was running."""
        running = [state for node in self.nodes() if (state := node.status())] if self.exists else []
        for state in running:
            os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for state in running:
            wait_for_exit(state.pid, deadline)
        return bool(running)

    def stop_node(self, node_id: int, *, timeout_s: float = 30.0) -> bool:
        return self.node(node_id).stop(timeout_s=timeout_s)

    def _check_cluster_id(self) -> None:
        """One cluster id for every node, made once: nodes formatted apart would refuse each other."""
        path = self.home / "cluster.id"
        self.home.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(new_cluster_id())
        cluster_id = path.read_text().strip()
        for node in self.nodes():
            node.home.mkdir(parents=True, exist_ok=True)
            mine = node.home / "cluster.id"
            if not mine.exists():
                mine.write_text(cluster_id)
            elif mine.read_text().strip() != cluster_id:
                raise BrokerError(f"node {node.node_id} in {node.home} belongs to another cluster; "
                                  f"delete {self.home} to make a new one")
