"""The demo's group processes (also the fault suite's): one `events run --group` each, with its
health port, on the real broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
import uuid

import pytest

from dify_events.consumers.demo.cluster import GroupProcesses
from tests.support.waiting import wait_until

pytestmark = pytest.mark.kafka


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_a_group_whose_health_port_was_taken_meanwhile_starts_again_on_another(tmp_path, kafka_bootstrap):
    # Given a group's health port, checked free, then taken by another process before the group binds it
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTS_")}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, EVENTS_TOPIC_PREFIX=f"gp{uuid.uuid4().hex[:8]}",
               EVENTS_DATABASE_URL=f"sqlite:///{tmp_path / 'events.db'}", EVENTS_METRICS_PORT="0")
    subprocess.run([sys.executable, "-m", "dify_events.consumers", "db", "init"], env=env, check=True,
                   capture_output=True)
    processes = GroupProcesses(["provider-usage"], log_dir=tmp_path / "logs", env=env, concurrency=1)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        processes.groups["provider-usage"].health_port = port
        processes.health_ports["provider-usage"] = [port]
        processes.start()
        try:
            # When its process meets the taken port, then the group runs on another one, still named
            wait_until(lambda: not processes.exited() and processes.health_ports["provider-usage"] != [port]
                       and healthy(processes.health_ports["provider-usage"][0]), 60,
                       "the group to serve its health endpoints on another port")
        finally:
            codes = processes.stop()
    assert codes == {"provider-usage": 0}, processes.groups["provider-usage"].log_tail()
    assert "cannot serve the health endpoints on port" in processes.groups["provider-usage"].log_file.read_text()
