"""`events run`'s telemetry set-up: what the environment asks for, and nothing else."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dify_events.consumers.telemetry import configure


@pytest.fixture
def otlp_collector():
    """A stdlib HTTP server that records the path and content type of each OTLP/HTTP request."""
    received: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_without_a_port_or_an_otlp_endpoint_nothing_is_set_up(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    telemetry = configure(0, set_global=False)
    assert telemetry.tracer_provider is None and telemetry.meter_provider is None


def test_an_otlp_endpoint_exports_traces_and_metrics_over_http(otlp_collector, monkeypatch):
    endpoint, received = otlp_collector
    # Given the standard OTLP variable, and no metrics port
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    telemetry = configure(0, group="g", set_global=False)
    try:
        # When a span ends and a counter moves, and the providers flush
        with telemetry.tracer_provider.get_tracer("t").start_as_current_span("s"):
            pass
        telemetry.meter_provider.get_meter("m").create_counter("c").add(1)
        assert telemetry.tracer_provider.force_flush(10_000)
        assert telemetry.meter_provider.force_flush(10_000)
    finally:
        telemetry.shutdown()
    # Then both arrived at the collector as OTLP protobuf
    assert ("/v1/traces", "application/x-protobuf") in received
    assert ("/v1/metrics", "application/x-protobuf") in received


def test_the_standard_exporter_and_protocol_variables_are_honoured(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    # OTEL_TRACES_EXPORTER=none: metrics by OTLP, no tracing
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    telemetry = configure(0, set_global=False)
    assert telemetry.tracer_provider is None and telemetry.meter_provider is not None
    telemetry.shutdown()
    # a protocol that is not installed: refused with a warning, not silently sent as HTTP
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with caplog.at_level("WARNING", logger="consumers.telemetry"):
        telemetry = configure(0, set_global=False)
    assert telemetry.tracer_provider is None and telemetry.meter_provider is None
    assert "grpc is not supported" in caplog.text
