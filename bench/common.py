"""What every part of the benchmark shares: figures and their spread, the machine, the broker,
topics, the events on the consume topic, and running contenders as child processes."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from dify_events.schemas.catalogue import CATALOGUE  # noqa: E402
from dify_events.schemas.events import (  # noqa: E402
    AppDraftWorkflowWasSynced,
    AppModelConfigWasUpdated,
    AppPublishedWorkflowWasUpdated,
    AppWasCreated,
    Event,
)
from dify_events.schemas.samples import sample_events  # noqa: E402
from dify_events.schemas.topics import await_served  # noqa: E402

# The consume topic holds the app domain's four event types in turn (a real domain topic mixes
# types), keyed by app id over KEYS apps: every contender decodes each with its writer schema.
APP_EVENTS: tuple[type[Event], ...] = (AppWasCreated, AppModelConfigWasUpdated, AppPublishedWorkflowWasUpdated,
                                       AppDraftWorkflowWasSynced)
KEYS = 1000
PARTITIONS = 6
SENT_HEADER = "bench-sent-ns"    # time.time_ns() when publish() was called (latency runs)
WINDOW_HEADER = "bench-window"   # which latency window the event belongs to


# -- figures ----------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table: the median of ``values``, its spread, and a ratio to a baseline
    measured in the same run."""

    section: str
    name: str
    unit: str                      # "ev/s", "ms", "MiB"
    values: list[float]
    ratio: float | None = None
    ratio_to: str = ""             # what the ratio is against
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def low(self) -> float | None:
        return min(self.values) if self.values else None

    @property
    def high(self) -> float | None:
        return max(self.values) if self.values else None

    def as_json(self) -> dict[str, Any]:
        return {"section": self.section, "name": self.name, "unit": self.unit, "median": self.median,
                "min": self.low, "max": self.high, "values": self.values, "ratio": self.ratio,
                "ratio_to": self.ratio_to or None, "note": self.note or None, **self.extra}


def ratio(a: Row | None, b: Row | None) -> float | None:
    if a is None or b is None or not a.median or not b.median:
        return None
    return a.median / b.median


def vm_hwm_kib(pid: int | str = "self", field: str = "VmHWM") -> int | None:
    """Peak resident set size (VmHWM; ``field="VmRSS"``: the current one) of a process, KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# -- the machine ------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def machine(kafka_version: str) -> dict[str, Any]:
    import confluent_kafka
    import fastavro
    import pydantic

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE")
                                                                             * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(), "kafka": kafka_version,
            "confluent_kafka": _version("confluent-kafka"), "librdkafka": confluent_kafka.libversion()[0],
            "fastavro": fastavro.__version__, "pydantic": pydantic.VERSION}


# -- the broker and topics --------------------------------------------------------------------
class Broker:
    """The cluster of ``KAFKA_BOOTSTRAP_SERVERS`` (or ``EVENTS_BOOTSTRAP_SERVERS``) when set, else
    the local broker (``events broker``), started if needed and stopped again if we started it."""

    def __init__(self) -> None:
        self.started_here = None
        configured = os.environ.get("EVENTS_BOOTSTRAP_SERVERS") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if configured:
            self.bootstrap, self.version = configured, "(external cluster)"
            return
        from dify_events.consumers.broker import LocalBroker
        from dify_events.schemas.settings import cache_dir, local_broker_home

        broker = LocalBroker(local_broker_home(), cache_dir())
        state = broker.status()
        if not state:
            print("starting the local Kafka broker (events broker start) ...", file=sys.stderr, flush=True)
            state = broker.start(timeout_s=120)
            self.started_here = broker
        self.bootstrap, self.version = state.bootstrap, state.version
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap  # for the settings of this process

    def close(self) -> None:
        if self.started_here is not None:
            self.started_here.stop()


class Topics:
    """Topics under one unique prefix, all deleted at the end (including those the consumer
    runtime creates for its groups: ``<prefix>.retry.*``, ``<prefix>.dlq.*``)."""

    def __init__(self, bootstrap: str):
        self.prefix = f"bench{uuid.uuid4().hex[:8]}"
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    def create(self, names: list[str], partitions: int) -> None:
        futures = self.admin.create_topics([NewTopic(n, partitions, 1) for n in names], operation_timeout=30)
        for future in futures.values():
            future.result(30)
        await_served(self.admin, dict.fromkeys(names, partitions))

    def delete_all(self) -> None:
        try:
            names = [t for t in self.admin.list_topics(timeout=15).topics if t.startswith(self.prefix)]
        except Exception:  # noqa: BLE001 - best effort
            return
        if names:
            for future in self.admin.delete_topics(names, operation_timeout=30).values():
                try:
                    future.result(30)
                except Exception:  # noqa: BLE001
                    pass


# -- the events -------------------------------------------------------------------------------
def app_events(count: int) -> list[Event]:
    """``count`` events of the app domain, the four types in turn, over ``KEYS`` app ids."""
    samples = [e for e in sample_events() if type(e) in APP_EVENTS]
    apps = [str(uuid.UUID(int=i + 1)) for i in range(KEYS)]
    out = []
    for i in range(count):
        sample = samples[i % len(samples)]
        fields = sample.model_dump(exclude={"event_id", "occurred_at"})
        fields["app_id"] = apps[i % KEYS]
        out.append(type(sample)(**fields))
    return out


def writer_schemas() -> dict[str, Any]:
    """fingerprint (hex) -> the writer schema's JSON, of every app event type: what the
    hand-written loop and the peers decode with (each parses them once)."""
    return {spec.current.fingerprint.hex(): spec.current.raw for spec in CATALOGUE if spec.model in APP_EVENTS}


# -- child processes --------------------------------------------------------------------------
def child_env(bootstrap: str, prefix: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``events run`` child: our broker, our topic prefix, a scratch home
    (its SQLite database), the bench's handler module, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "EVENTS_BOOTSTRAP_SERVERS": bootstrap,
                "EVENTS_TOPIC_PREFIX": prefix, "EVENTS_HOME": str(home), "EVENTS_HANDLER_MODULES": "bench.handlers",
                "EVENTS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def run_json_child(args: list[str], *, timeout_s: float, env: dict[str, str] | None = None,
                   cwd: Path = ROOT) -> dict[str, Any]:
    """Runs a child that prints its result as the last line of stdout, JSON."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=cwd)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        raise RuntimeError(f"{' '.join(args[:3])} ... exited {proc.returncode}:\n  " + "\n  ".join(tail))
    return json.loads(lines[-1])


def wait_for(predicate, timeout_s: float, interval_s: float = 0.02, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


# -- databases --------------------------------------------------------------------------------
@contextlib.contextmanager
def postgres(fsync: bool) -> Iterator[tuple[str, str]]:
    """A throwaway PostgreSQL server (fsync off: ``EVENTS_TEST_POSTGRES_URL`` when set); yields its URL
    and what it runs with (``fsync=on, synchronous_commit=on``, as the server says)."""
    from sqlalchemy import create_engine, text

    from dify_events.consumers.demo.postgres import throwaway_postgres
    try:
        from tests.support.postgres import postgres_server
    except ImportError:
        postgres_server = throwaway_postgres
    with throwaway_postgres(prefix="events-bench-pg-", fsync=True) if fsync else postgres_server() as url:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                shown = [f"{name}={conn.execute(text(f'SHOW {name}')).scalar()}"
                         for name in ("fsync", "synchronous_commit")]
        finally:
            engine.dispose()
        yield url, ", ".join(shown)
