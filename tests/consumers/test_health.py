"""The health endpoints' port: taken ports are refused with an error that says what to do."""

import socket

import pytest

from consumers.broker.local import free_port
from consumers.errors import ConsumerError
from consumers.health import HealthServer


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
