"""Observability of the consumer runtime: OpenTelemetry traces and metrics, the Prometheus endpoint.

    setup.py       process-wide providers for ``events run``: a Prometheus reader (``/metrics`` on
                   ``metrics_port``), OTLP exporters when ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set
    metrics.py     ``ConsumerMetrics``: the instruments, shared by every group of one meter provider;
                   ``MetricsObserver``: one group's, kept from the runtime's events
    tracing.py     ``TracingObserver``: one group's spans (message, handler attempt, dead letter)
    lag.py         consumer lag per partition from librdkafka's cached high watermarks
    fields.py      the structured fields of a log record about one message (ids, where, trace id)

Telemetry is an observer of the runtime's events (``consumers.observers``), there only when a
provider is given to the runner or set globally (``events run`` sets them): ``observers`` makes
them. Off, the observer list is empty and the hot path pays one truth test of an empty tuple per
message.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from ..observers import Observer
from .fields import message_fields, trace_id_of
from .metrics import ConsumerMetrics, MetricsObserver, meter_provider_configured
from .setup import Telemetry, configure
from .tracing import TracingObserver, tracing_configured

__all__ = ["ConsumerMetrics", "MetricsObserver", "Telemetry", "TracingObserver", "configure", "message_fields",
           "meter_provider_configured", "observers", "trace_id_of", "tracing_configured"]


def observers(group: str, *, dead_letter_topic: str, tracer_provider: Any = None, meter_provider: Any = None,
              global_meter: bool = True) -> list[Observer]:
    """The telemetry observers of ``group``, tracing first (its spans hold the rest): tracing when
    ``tracer_provider`` is given or a global one is set; metrics when ``meter_provider`` is given, or
    (with ``global_meter``) when a global one is set."""
    found: list[Observer] = []
    if tracer_provider is None and tracing_configured():
        tracer_provider = trace.get_tracer_provider()
    if tracer_provider is not None:
        found.append(TracingObserver(tracer_provider.get_tracer("consumers"), group, dead_letter_topic))
    if meter_provider is None and global_meter and meter_provider_configured():
        from opentelemetry import metrics

        meter_provider = metrics.get_meter_provider()
    if meter_provider is not None:
        found.append(MetricsObserver(ConsumerMetrics.of(meter_provider), group))
    return found
