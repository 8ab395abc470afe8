"""The Kafka headers every published event carries (names in ``schemas.headers``).

``event-type`` and ``content-type`` depend on the event type only and are built once per type;
``event-id``, ``idempotency-key`` and ``occurred-at`` come from the event; ``traceparent`` and
``tracestate`` are injected by OpenTelemetry's global propagator only when a valid span is
current (checking that costs ~0.25 µs, a no-op ``inject`` ~1 µs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from opentelemetry.propagate import inject
from opentelemetry.trace import get_current_span

from dify_events.schemas import headers as names
from dify_events.schemas.catalogue import EventSpec
from dify_events.schemas.events import Event

Headers = list[tuple[str, bytes]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
RESERVED = frozenset({names.EVENT_TYPE, names.EVENT_ID, names.IDEMPOTENCY_KEY, names.OCCURRED_AT,
                      names.CONTENT_TYPE, names.TRACEPARENT, names.TRACESTATE})

_static: dict[tuple[str, bytes], tuple[tuple[str, bytes], tuple[str, bytes]]] = {}


def static_headers(spec: EventSpec) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """``event-type`` and ``content-type`` of events of this type (built once, then cached)."""
    fingerprint = spec.current.fingerprint  # what the codec writes (a pinned model writes an older version)
    pair = _static.get((spec.event_type, fingerprint))
    if pair is None:
        pair = _static[(spec.event_type, fingerprint)] = (
            (names.EVENT_TYPE, spec.event_type.encode()),
            (names.CONTENT_TYPE, names.content_type(fingerprint).encode()))
    return pair


def epoch_millis(when: datetime) -> int:
    """Milliseconds since the epoch, exactly (the integer Avro's timestamp-millis holds)."""
    return (when - _EPOCH) // _MS


def trace_headers() -> Headers:
    """W3C ``traceparent`` (and ``tracestate``, baggage) of the current span; ``[]`` without one."""
    if not get_current_span().get_span_context().is_valid:
        return []
    carrier: dict[str, str] = {}
    inject(carrier)
    return [(name, value.encode()) for name, value in carrier.items()]


def build_headers(spec: EventSpec, event: Event, *, idempotency_key: str | None = None,
                  extra: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None = None) -> Headers:
    """The headers of one event: event type, event id, idempotency key (the event id unless a
    business key is given), occurred-at in milliseconds, content type with the schema's
    fingerprint, the trace context when a span is active, then ``extra`` (which may not replace
    any of those)."""
    return event_headers(static_headers(spec), event, idempotency_key, extra)


def event_headers(static: tuple[tuple[str, bytes], tuple[str, bytes]], event: Event,
                  idempotency_key: str | None = None,
                  extra: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None = None) -> Headers:
    """``build_headers`` with the type's ``static_headers`` already looked up (the producer's path).
    A business idempotency key consumers would refuse raises ``ValueError``."""
    event_type, content_type = static
    event_id = event.event_id.encode()
    if idempotency_key and (problem := names.idempotency_key_problem(idempotency_key)):
        raise ValueError(problem)
    headers = [event_type, (names.EVENT_ID, event_id),
               (names.IDEMPOTENCY_KEY, idempotency_key.encode() if idempotency_key else event_id),
               (names.OCCURRED_AT, b"%d" % ((event.occurred_at - _EPOCH) // _MS)),
               content_type]
    if get_current_span().get_span_context().is_valid:
        headers += trace_headers()
    if extra:
        headers += _extra(extra)
    return headers


def _extra(extra: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]]) -> Headers:
    pairs = extra.items() if isinstance(extra, Mapping) else extra
    out: Headers = []
    for name, value in pairs:
        if name in RESERVED:
            raise ValueError(f"the header {name!r} is set by the SDK and cannot be given as an extra header")
        out.append((name, value.encode() if isinstance(value, str) else bytes(value)))
    return out


def header_value(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> bytes | None:
    """The first value of the header ``name`` in a message's header list, or ``None``."""
    for key, value in headers or ():
        if key == name:
            return value
    return None
