"""Observability of the consumer runtime: OpenTelemetry traces and metrics, the Prometheus endpoint.

    setup.py       process-wide providers for ``events run``: a Prometheus reader (``/metrics`` on
                   ``metrics_port``), OTLP exporters when ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set
    metrics.py     ``ConsumerMetrics``: the instruments, shared by every group of one meter provider
    lag.py         consumer lag per partition from librdkafka's cached high watermarks
    fields.py      the structured fields of a log record about one message (ids, where, trace id)

Telemetry is off unless a provider is given to the runner or set globally (``events run`` sets
them); off, the runner holds ``None`` and the hot path pays one ``is None`` test per message.
"""

from __future__ import annotations

from .fields import message_fields, trace_id_of
from .metrics import ConsumerMetrics, meter_provider_configured
from .setup import Telemetry, configure

__all__ = ["ConsumerMetrics", "Telemetry", "configure", "message_fields", "meter_provider_configured", "trace_id_of"]
