"""Process-wide OpenTelemetry set-up for ``events run`` (one consumer group per process).

- Metrics: a Prometheus reader served on ``metrics_port`` (``/metrics``; ``0``: none), and an OTLP
  reader when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set
  (the exporter reads the other ``OTEL_EXPORTER_OTLP_*`` variables itself). The consumer's two
  histograms are pre-aggregated outside the SDK and served on ``/metrics`` only (not by OTLP): see
  ``metrics.py``.
- Traces: a tracer provider with a batching OTLP span exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT``
  or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; otherwise none, so tracing stays off.
- ``OTEL_SDK_DISABLED=true`` turns everything off; ``OTEL_TRACES_EXPORTER=none`` /
  ``OTEL_METRICS_EXPORTER=none`` turn the OTLP side of one signal off (``/metrics`` stays);
  ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` name the process (default service name
  ``dify-events``). The exporter speaks OTLP/HTTP (protobuf): another ``OTEL_EXPORTER_OTLP_PROTOCOL``
  is refused with a warning rather than silently ignored.

Both providers are set as the global ones, so the producer SDK inside handlers uses them too.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from prometheus_client import CollectorRegistry

log = logging.getLogger("consumers.telemetry")


@dataclass
class Telemetry:
    tracer_provider: Any = None
    meter_provider: Any = None
    metrics_port: int | None = None                      # the port /metrics is served on
    _closers: list = field(default_factory=list, repr=False)

    def shutdown(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - exporting on the way out must not fail the exit
                log.warning("shutting telemetry down: %s", exc)
        self._closers.clear()


def _otlp(signal: str) -> bool:
    """Whether this signal goes out by OTLP: an endpoint is set, the signal's exporter is not
    ``none``, and the protocol is the one installed (HTTP with protobuf)."""
    env = os.environ.get
    if not (env("OTEL_EXPORTER_OTLP_ENDPOINT") or env(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")):
        return False
    if env(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() == "none":
        return False
    protocol = env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or env("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported (only http/protobuf is installed): %s are "
                    "not exported by OTLP", protocol, signal.lower())
        return False
    return True


def _serve_metrics(host: str, port: int, registry: Any):
    """``/metrics`` of ``registry`` on a bounded pool of threads (``consumers.serving``), as
    prometheus_client's ``start_http_server`` serves it on a thread per connection."""
    import threading
    from wsgiref.simple_server import make_server

    from prometheus_client import make_wsgi_app

    from ..serving import PooledWSGIServer, QuietWSGIHandler

    server = make_server(host, port, make_wsgi_app(registry), PooledWSGIServer, handler_class=QuietWSGIHandler)
    threading.Thread(target=server.serve_forever, name="events-metrics", daemon=True).start()
    return server


def prometheus_reader(registry: CollectorRegistry) -> MetricReader:
    """OpenTelemetry's Prometheus reader, collected by ``registry``. Its ``registry`` argument came
    with opentelemetry-exporter-prometheus 0.63b0; before it (with SDK 1.40, Dify's pin) the reader
    joins prometheus_client's global registry only, and its collector is added to ``registry`` too."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    if "registry" in inspect.signature(PrometheusMetricReader).parameters:
        return PrometheusMetricReader(registry=registry)
    reader = PrometheusMetricReader()
    registry.register(reader._collector)
    return reader


def configure(metrics_port: int, *, group: str | None = None, set_global: bool = True,
              host: str = "0.0.0.0") -> Telemetry:
    """Builds the providers this environment asks for (see the module's doc)."""
    telemetry = Telemetry()
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return telemetry
    from opentelemetry.sdk.resources import Resource

    attributes = {"service.name": os.environ.get("OTEL_SERVICE_NAME") or "dify-events"}
    if group:
        attributes["events.group"] = group
    resource = Resource.create(attributes)
    otlp_metrics = _otlp("METRICS")
    otlp_traces = _otlp("TRACES")

    readers: list[MetricReader] = []
    prometheus_registry = None
    if metrics_port:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
        try:
            server = _serve_metrics(host, metrics_port, registry)
        except OSError as exc:  # e.g. several `events run` on one machine: the group runs on without it
            log.error("cannot serve Prometheus metrics on :%d (%s); set EVENTS_METRICS_PORT (or --metrics-port) "
                      "to a free port, or 0 for none", metrics_port, exc)
        else:
            readers.append(prometheus_reader(registry))
            prometheus_registry = registry
            telemetry.metrics_port = server.server_address[1]

            def stop_server():
                server.shutdown()
                server.server_close()

            telemetry._closers.append(stop_server)
            log.info("Prometheus metrics on :%d/metrics", telemetry.metrics_port,
                     extra={"metrics_port": telemetry.metrics_port})
    if otlp_metrics:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if readers:
        from opentelemetry.sdk.metrics import MeterProvider

        telemetry.meter_provider = MeterProvider(metric_readers=readers, resource=resource)
        telemetry._closers.append(telemetry.meter_provider.shutdown)
        if prometheus_registry is not None:
            from .metrics import HistogramCollector

            prometheus_registry.register(HistogramCollector(telemetry.meter_provider))
        if set_global:
            metrics.set_meter_provider(telemetry.meter_provider)
    if otlp_traces:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        telemetry.tracer_provider = TracerProvider(resource=resource)
        telemetry.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        telemetry._closers.append(telemetry.tracer_provider.shutdown)
        if set_global:
            trace.set_tracer_provider(telemetry.tracer_provider)
        log.info("traces exported by OTLP")
    return telemetry
