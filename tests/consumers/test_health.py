"""The health endpoints' port: taken ports are refused with an error that says what to do; idle
connections to it (or to the metrics port) hold no threads."""

import socket
import threading
import time
import urllib.request

import pytest

from dify_events.consumers.broker.local import free_port
from dify_events.consumers.errors import ConsumerError
from dify_events.consumers.health import HealthServer
from dify_events.consumers.serving import READ_TIMEOUT_S, WORKERS
from tests.support.waiting import wait_until


def test_ports_taken_in_a_row_are_all_different():
    # Given several ports asked for before any is bound (the demo's one per group process)
    ports = [free_port() for _ in range(200)]
    # Then no two are the same
    assert len(set(ports)) == len(ports)


def test_a_taken_health_port_is_refused_with_what_to_do():
    # Given a port another program listens on
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", free_port()))
        squatter.listen()
        taken = squatter.getsockname()[1]
        # When the health endpoints are to be served there
        with pytest.raises(ConsumerError) as refused:
            HealthServer(taken, live=lambda: True, ready=lambda: True)
    # Then the error names the port and the setting that moves it
    assert str(taken) in str(refused.value) and "--health-port" in str(refused.value)


def _health_server():
    server = HealthServer(0, live=lambda: True, ready=lambda: True, host="127.0.0.1").start()
    return server.port, "/healthz", server.stop


def _metrics_server():
    from dify_events.consumers.telemetry import configure

    telemetry = configure(free_port(), set_global=False, host="127.0.0.1")
    return telemetry.metrics_port, "/metrics", telemetry.shutdown


@pytest.mark.parametrize("serve", [_health_server, _metrics_server], ids=["health", "metrics"])
def test_a_thousand_idle_connections_hold_no_threads_and_probes_still_answer(serve):
    # Given the health (or metrics) endpoint
    port, path, stop = serve()
    before = threading.active_count()
    idle = []
    try:
        # When a thousand connections are opened and send nothing
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status == 200, 10,
                   "an answer")
        # Then the process runs a handful of threads more, not a thousand
        assert threading.active_count() - before <= WORKERS + 2, threading.active_count() - before
        # ... a probe is answered at once, in between them
        began = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            assert response.status == 200
        assert time.monotonic() - began < 1.0
        # ... and the idle connections are closed by the server after its read timeout
        idle[0].settimeout(READ_TIMEOUT_S + 10)
        assert idle[0].recv(1) == b""
    finally:
        for connection in idle:
            connection.close()
        stop()
