"""The consumer runtime as production runs it: ``events run --group NAME`` in its own process
(``python -m dify_events.consumers run``), with the bench's group (``bench/handlers.py``), watched through the
progress file its handler module writes, stopped with SIGTERM (drain, commit, leave the group)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from dify_events.consumers.broker.local import free_port

from .common import ROOT, child_env, vm_hwm_kib, wait_for


class RuntimeProcess:
    """One ``events run`` child. ``env`` adds to the child's environment (``EVENTS_KAFKA_*``
    librdkafka properties, ``EVENTS_DATABASE_URL``, ``EVENTS_CONCURRENCY``, ...)."""

    def __init__(self, *, bootstrap: str, prefix: str, home: Path, group: str, idempotent: bool = False,
                 latency: bool = False, health: bool = False, env: dict[str, str] | None = None, tag: str = ""):
        self.out = home / f"{group}{tag}.progress.json"
        self.log_path = home / f"{group}{tag}.log"
        self.health_port = free_port() if health else 0
        # each child its own Prometheus port, so that every one runs with its metrics on, as shipped
        # (on a taken port `events run` carries on without metrics: a different, cheaper runtime)
        self.env = child_env(bootstrap, prefix, home, BENCH_GROUP=group, BENCH_OUT=str(self.out),
                             BENCH_IDEMPOTENT="1" if idempotent else "0", BENCH_LATENCY="1" if latency else "0",
                             **{"EVENTS_METRICS_PORT": str(free_port()), **(env or {})})
        self.args = [sys.executable, "-m", "dify_events.consumers", "run", "--group", group,
                     "--health-port", str(self.health_port)]
        self.proc: subprocess.Popen | None = None
        self.peak_rss_kib: int | None = None

    def start(self) -> RuntimeProcess:
        self.out.unlink(missing_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def progress(self) -> dict[str, Any]:
        self._check_alive()
        try:
            return json.loads(self.out.read_text())
        except (OSError, ValueError):
            return {"n": 0, "first_ns": 0, "last_ns": 0, "windows": {}}

    def status(self) -> dict[str, Any] | None:
        """The runner's /readyz answer (``joined``, ``assigned`` partitions, ...), None until it serves."""
        self._check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1) as resp:
                return json.loads(resp.read())
        except OSError as exc:
            body = getattr(exc, "read", None)
            if body is not None:  # 503: not ready yet, the body says why
                try:
                    return json.loads(body())
                except ValueError:
                    return None
            return None

    def wait_count(self, n: int, timeout_s: float) -> dict[str, Any]:
        wait_for(lambda: self.progress()["n"] >= n, timeout_s, what=f"{n:,} events in {self.log_path.name}")
        return self.progress()

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """SIGTERM (the runtime drains, commits and leaves); returns the last progress."""
        if self.proc is None:
            return {}
        self.peak_rss_kib = vm_hwm_kib(self.proc.pid) or self.peak_rss_kib
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        try:
            return json.loads(self.out.read_text())
        except (OSError, ValueError):
            return {}

    def latencies(self) -> dict[str, list[int]]:
        return json.loads(Path(str(self.out) + ".latency.json").read_text())

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError(f"events run exited with {self.proc.returncode}:\n  " + "\n  ".join(tail))

    def __enter__(self) -> RuntimeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def throughput(progress: dict[str, Any]) -> float:
    elapsed = (progress["last_ns"] - progress["first_ns"]) / 1e9
    return progress["n"] / elapsed if elapsed > 0 else 0.0


def run_until(process: RuntimeProcess, expect: int, timeout_s: float) -> dict[str, Any]:
    """Starts the process, waits for ``expect`` events, reads its peak RSS, stops it."""
    with process:
        data = process.wait_count(expect, timeout_s)
    return {"rate": throughput(data), "n": data["n"], "vm_hwm_kib": process.peak_rss_kib,
            "cpu_us": data["cpu_s"] / data["cpu_n"] * 1e6 if data.get("cpu_n") else None}
