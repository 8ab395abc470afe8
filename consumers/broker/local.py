"""A single-node Apache Kafka broker in KRaft mode, run from Kafka's own jars on the local JDK.

For development, the demo and the tests on machines without Docker. One home directory holds
everything: ``server.properties``, ``data/`` (the log dirs, formatted once with a stable cluster
id, so topics and committed offsets survive a restart), ``server.log`` and ``broker.json`` (pid,
ports, version), which :func:`schemas.settings` reads to find the broker.

A node of a local cluster (``consumers.broker.cluster``) is the same broker given a ``Quorum``:
its node id, fixed ports, the controller quorum's voters, and Kafka's replicated defaults for the
internal topics instead of a single node's replication factor 1.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import secrets
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path

from .errors import BrokerError, PortTaken
from .jars import KAFKA_VERSION, classpath, require_tool
from .readiness import wait_for_group_coordinators
from .tls import ensure_certificates

DEFAULT_PORT = 9092
LAUNCH_ATTEMPTS = 3  # a port another process took between our choice and the JVM's bind: choose again
OFFSETS_PARTITIONS = 10  # of __consumer_offsets: fewer than Kafka's 50, so a fresh broker is ready sooner
SCRAM = "SCRAM-SHA-512"
LOG4J_CONFIG = files(__package__) / "log4j2.properties"


@dataclass(frozen=True)
class Quorum:
    """A node's place in a local cluster whose every node is both broker and controller."""

    node_id: int
    port: int
    controller_port: int
    voters: str  # controller.quorum.voters: "1@127.0.0.1:<port>,2@..."


# The internal topics of one node (replication 1) and of a cluster (Kafka's defaults, written out):
# __consumer_offsets, __transaction_state and __share_group_state.
SINGLE_NODE_REPLICATION = {
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
}
CLUSTER_REPLICATION = {
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "unclean.leader.election.enable": "false",
}


@dataclass
class BrokerState:
    pid: int
    port: int
    controller_port: int
    version: str
    data_dir: str
    cluster_id: str
    secure: bool = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


_handed_out: set[int] = set()


def free_port() -> int:
    """A free port below the kernel's ephemeral range: between this check and the JVM's bind,
    seconds later, no outgoing connection can take it as its local port. Never the same port twice
    in one process: several ports taken in a row (one per demo group) are all bound only later."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    start = random.randrange(20000, max(20001, low - 2000))
    for port in range(start, low):
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reserve(port: int) -> int:
    """Keeps ``free_port`` from handing ``port`` out in this process: a cluster node's, free while the
    node is down, must not become, say, a consumer's health port."""
    _handed_out.add(port)
    return port


def pid_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline


def new_cluster_id() -> str:
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # the storage tool would read it as an option (as Kafka's Uuid avoids)
            return cluster_id


class LocalBroker:
    """``start``/``stop``/``status``/``logs`` of the broker living in ``home``."""

    def __init__(self, home: Path, cache_dir: Path, *, port: int | None = None, heap: str = "1g",
                 secure: bool = False, quorum: Quorum | None = None):
        """``secure``: one SASL_SSL listener (TLS with a local CA, SCRAM-SHA-512 users) instead of PLAINTEXT.
        ``quorum``: this broker is a node of a local cluster (its ports are the quorum's)."""
        self.home = Path(home)
        self.secure = secure
        self.quorum = quorum
        self.node_id = quorum.node_id if quorum else 1
        self.cache_dir = Path(cache_dir)
        self.requested_port = port
        self.heap = heap
        self.state_file = self.home / "broker.json"
        self.log_file = self.home / "server.log"
        self.data_dir = self.home / "data"
        self.client_config_file = self.home / "client.yaml"
        self._launch_log_offset = 0  # where the log's lines of the last launch start

    # -- queries -------------------------------------------------------------------------
    def status(self) -> BrokerState | None:
        """The running broker's state, or None when it is not running."""
        try:
            state = BrokerState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return state if pid_alive(state.pid) else None

    def logs(self, lines: int = 50) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _log_since_launch(self) -> bytes:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(self._launch_log_offset)
                return log.read()
        except OSError:
            return b""

    def failure_excerpt(self) -> str:
        """The log's ERROR lines (the cause, usually) and then its last lines."""
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [line for line in text if " ERROR " in line or " FATAL " in line or "Exception" in line][:10]
        return "\n".join(errors + ["..."] + text[-10:]) if errors else "\n".join(text[-25:])

    # -- start -------------------------------------------------------------------------
    def start(self, *, timeout_s: float = 60.0, on_progress=lambda message: None) -> BrokerState:
        """Start the broker (or return the running one) and wait until it answers metadata."""
        running = self.status()
        if running:
            return running
        previous = self._previous_state()
        for attempt in range(1, LAUNCH_ATTEMPTS + 1):
            proc, state = self.launch(on_progress=on_progress)
            try:
                self.wait_until_ready(state, timeout_s, proc)
                break
            except PortTaken:  # the next launch chooses again: the taken port is no longer free
                if self.quorum is not None or attempt == LAUNCH_ATTEMPTS:
                    raise
                on_progress("another process bound a port chosen for the broker before it did; choosing again")
        self.wait_for_coordinators(state.bootstrap, timeout_s)
        if previous is not None and previous.version != KAFKA_VERSION:
            on_progress(f"upgrading the cluster's features from Kafka {previous.version}'s to {KAFKA_VERSION}'s")
            self.upgrade_features(state)
        return state

    def launch(self, *, on_progress=lambda message: None) -> tuple[subprocess.Popen, BrokerState]:
        """Starts the broker's process and returns at once (a cluster's nodes start together: none
        answers before a majority of the controller quorum is up)."""
        on_progress(f"resolving Apache Kafka {KAFKA_VERSION}'s jars")
        jvm = self._jvm()
        port, controller_port = self._choose_ports(on_progress)
        self.home.mkdir(parents=True, exist_ok=True)
        cluster_id = self._cluster_id()
        self._check_security_mode()
        properties = self._write_properties(port, controller_port)
        if not (self.data_dir / "meta.properties").exists():
            on_progress(f"formatting the storage in {self.data_dir} (cluster id {cluster_id})")
            users = []
            if self.secure:
                creds = self.credentials()
                users = ["--add-scram", f"{SCRAM}=[name={creds['username']},password={creds['password']}]"]
            fmt = subprocess.run(jvm + ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties),
                                        "--ignore-formatted", *users], capture_output=True, text=True)
            if fmt.returncode != 0:
                raise BrokerError(f"formatting the broker's storage failed:\n{fmt.stdout}{fmt.stderr}")
        on_progress(f"starting the broker on 127.0.0.1:{port}")
        with open(self.log_file, "ab") as log:
            self._launch_log_offset = log.tell()
            proc = subprocess.Popen(jvm + ["kafka.Kafka", str(properties)], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        state = BrokerState(pid=proc.pid, port=port, controller_port=controller_port, version=KAFKA_VERSION,
                            data_dir=str(self.data_dir), cluster_id=cluster_id, secure=self.secure)
        self.state_file.write_text(json.dumps(asdict(state), indent=2))
        self._write_client_config(state)
        return proc, state

    def _jvm(self) -> list[str]:
        """The ``java`` command line up to the main class: heap, logging, Kafka's class path."""
        java = require_tool("java", "Install a JDK 17 or newer (apt-get install openjdk-17-jre-headless).")
        cp = os.pathsep.join(str(j) for j in classpath(self.cache_dir))
        return [java, "-Xms256m", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", cp]

    def upgrade_features(self, state: BrokerState) -> None:
        """Finalizes this Kafka's feature levels (``metadata.version``, ``share.version``, ...) on
        storage formatted by an older Kafka, which keeps its old levels until told: without it, a
        home made by Kafka 4.1 would run 4.4 without share groups. Kafka's own FeatureCommand, through
        the controller's listener (PLAINTEXT, also when the broker's is SASL_SSL)."""
        major_minor = ".".join(KAFKA_VERSION.split(".")[:2])
        result = subprocess.run([*self._jvm(), "org.apache.kafka.tools.FeatureCommand", "--bootstrap-controller",
                                 f"127.0.0.1:{state.controller_port}", "upgrade", "--release-version", major_minor],
                                capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
            raise BrokerError(f"upgrading the features of {self.data_dir} to Kafka {major_minor}'s failed:\n{tail}")

    def _choose_ports(self, on_progress) -> tuple[int, int]:
        if self.quorum is not None:  # a cluster's ports are fixed: the voters name the controller ports
            taken = [p for p in (self.quorum.port, self.quorum.controller_port) if not port_is_free(p)]
            if taken:
                raise BrokerError(f"port {taken[0]} of node {self.node_id} is taken by another process; stop it "
                                  "(or use another EVENTS_HOME)")
            return self.quorum.port, self.quorum.controller_port
        previous = self._previous_state()
        wanted = self.requested_port or (previous.port if previous else DEFAULT_PORT)
        port = wanted
        while not port_is_free(port):
            port += 1
        if port != wanted:
            on_progress(f"port {wanted} is taken; using {port} instead (set --port to choose)")
        controller = previous.controller_port if previous and port_is_free(previous.controller_port) else free_port()
        while controller == port:
            controller = free_port()
        return port, controller

    def _previous_state(self) -> BrokerState | None:
        try:
            return BrokerState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _cluster_id(self) -> str:
        """Made once per home and kept, so the formatted storage stays valid across restarts."""
        path = self.home / "cluster.id"
        self.home.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(new_cluster_id())
        return path.read_text().strip()

    def _write_properties(self, port: int, controller_port: int) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum.voters if self.quorum else f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.num.partitions": str(OFFSETS_PARTITIONS),
            **(CLUSTER_REPLICATION if self.quorum else SINGLE_NODE_REPLICATION),
            "group.initial.rebalance.delay.ms": "0",
            # a share group's members get their first records after one heartbeat: 1 s, not 5
            "group.share.min.heartbeat.interval.ms": "1000",
            "group.share.heartbeat.interval.ms": "1000",
            "log.flush.interval.messages": "9223372036854775807",
            "message.max.bytes": "1048588",
        }
        if self.secure:
            props.update(self._secure_properties(port, controller_port))
        path = self.home / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        path.chmod(0o600)
        return path

    # -- security ----------------------------------------------------------------------
    def credentials(self) -> dict[str, str]:
        """The SCRAM user made at format time; kept in the home, readable by its owner only."""
        path = self.home / "credentials.json"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"username": "events", "password": secrets.token_urlsafe(24)}))
            path.chmod(0o600)
        return json.loads(path.read_text())

    def client_properties(self) -> dict[str, str]:
        """librdkafka properties a client needs to reach this broker."""
        if not self.secure:
            return {}
        creds = self.credentials()
        ca = ensure_certificates(self.home / "tls").ca_cert
        return {"security.protocol": "SASL_SSL", "sasl.mechanism": SCRAM, "sasl.username": creds["username"],
                "sasl.password": creds["password"], "ssl.ca.location": str(ca)}

    def _check_security_mode(self) -> None:
        marker = self.home / "security"
        mode = "sasl_ssl" if self.secure else "plaintext"
        if (self.data_dir / "meta.properties").exists() and marker.exists() and marker.read_text() != mode:
            raise BrokerError(f"the broker in {self.home} was made {marker.read_text()}; it cannot start {mode}. "
                              "Use another EVENTS_HOME (or delete this one).")
        marker.write_text(mode)

    def _secure_properties(self, port: int, controller_port: int) -> dict[str, str]:
        tls = ensure_certificates(self.home / "tls")
        creds = self.credentials()
        login = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
                 f'username="{creds["username"]}" password="{creds["password"]}";')
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": SCRAM,
            "sasl.mechanism.inter.broker.protocol": SCRAM,
            f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config": login,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": _one_line(tls.server_cert.read_text()),
            "ssl.keystore.key": _one_line(tls.server_key.read_text()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.certificates": _one_line(tls.ca_cert.read_text()),
        }

    def _write_client_config(self, state: BrokerState) -> None:
        """A config file (``EVENTS_CONFIG_FILE``) with which every tool reaches this broker."""
        import yaml

        config = {"bootstrap_servers": state.bootstrap, "kafka": self.client_properties()}
        self.client_config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.client_config_file.chmod(0o600)

    def wait_until_ready(self, state: BrokerState, timeout_s: float, proc: subprocess.Popen) -> None:
        """Waits until the broker answers metadata listing itself (a cluster's node: once it has
        joined); stops it and raises after ``timeout_s``."""
        from confluent_kafka.admin import AdminClient

        # ignore: confluent-kafka's stub allows only str/int/float/bool values, but librdkafka's config takes a logger
        client = {"bootstrap.servers": state.bootstrap, "logger": _QUIET, **self.client_properties()}
        admin = AdminClient(client)  # type: ignore[arg-type]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                excerpt = self.failure_excerpt()
                error = PortTaken if b"Address already in use" in self._log_since_launch() else BrokerError
                raise error(f"the broker exited with code {proc.returncode} while starting; "
                            f"the end of {self.log_file}:\n{excerpt}")
            try:
                metadata = admin.list_topics(timeout=1)
                # ours, not another broker answering on this port while ours failed to bind it
                if metadata.cluster_id == state.cluster_id and self.node_id in metadata.brokers:
                    return
            except Exception:  # noqa: BLE001 - not up yet; the deadline decides
                pass
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"the broker did not answer within {timeout_s:.0f} s; the end of {self.log_file}:\n"
                          f"{self.failure_excerpt()}")

    def wait_for_coordinators(self, bootstrap: str, timeout_s: float) -> None:
        """Waits until every group coordinator answers: a broker answers metadata seconds before they
        are loaded, and a commit made meanwhile fails with NOT_COORDINATOR."""
        client = {"bootstrap.servers": bootstrap, **self.client_properties()}
        if not wait_for_group_coordinators(client, OFFSETS_PARTITIONS, time.monotonic() + timeout_s):
            raise BrokerError(f"the broker at {bootstrap} answers, but its group coordinators did not load within "
                              f"{timeout_s:.0f} s; the end of {self.log_file}:\n{self.failure_excerpt()}")

    # -- stop --------------------------------------------------------------------------
    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """Controlled shutdown (SIGTERM), then SIGKILL after ``timeout_s``; False if it was not running."""
        state = self.status()
        if not state:
            return False
        os.kill(state.pid, signal.SIGTERM)
        wait_for_exit(state.pid, time.monotonic() + timeout_s)
        return True


def wait_for_exit(pid: int, deadline: float) -> None:
    """Waits until the process ``pid`` has exited; SIGKILL once ``deadline`` (monotonic) passed."""
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            _reap(pid)
            time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect the broker if this process started it, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _one_line(pem: str) -> str:
    """PEM text as a Java properties value: line breaks escaped."""
    return pem.strip().replace("\n", "\\n")


_QUIET = logging.getLogger("consumers.broker.probe")  # connection refusals while it starts are expected
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False
