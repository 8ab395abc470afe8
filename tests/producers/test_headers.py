"""The headers every event carries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from opentelemetry.baggage import set_baggage
from opentelemetry.context import attach, detach
from opentelemetry.sdk.trace import TracerProvider

from dify_events.producers.headers import build_headers, epoch_millis, header_value
from dify_events.schemas import headers as names
from dify_events.schemas.catalogue import CATALOGUE
from dify_events.schemas.events import AppWasCreated
from dify_events.schemas.samples import APP, TENANT, sample_events

tracer = TracerProvider().get_tracer("tests.producers")


def app_created(**overrides) -> AppWasCreated:
    return AppWasCreated(**{"tenant_id": TENANT, "app_id": APP, "mode": "chat", "name": "Bot", "created_by": "u1",
                            **overrides})


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.event_type)
def test_every_event_gets_type_id_idempotency_key_time_and_content_type(event):
    # Given an event of each type and its catalogue entry
    spec = CATALOGUE.for_event(event)
    # When its headers are built outside any trace
    headers = build_headers(spec, event)
    # Then they name it, with the event id as idempotency key, the time in ms, and the fingerprint
    assert [name for name, _ in headers] == [names.EVENT_TYPE, names.EVENT_ID, names.IDEMPOTENCY_KEY,
                                            names.OCCURRED_AT, names.CONTENT_TYPE]
    as_dict = dict(headers)
    assert as_dict[names.EVENT_TYPE] == event.event_type.encode()
    assert as_dict[names.EVENT_ID] == as_dict[names.IDEMPOTENCY_KEY] == event.event_id.encode()
    assert int(as_dict[names.OCCURRED_AT]) == int(event.occurred_at.timestamp() * 1000 + 0.5)
    assert as_dict[names.CONTENT_TYPE] == names.content_type(spec.latest.fingerprint).encode()
    assert spec.latest.fingerprint.hex().encode() in as_dict[names.CONTENT_TYPE]


def test_a_business_key_replaces_the_event_id_as_idempotency_key():
    # Given an event
    event = app_created()
    # When its headers are built with a business idempotency key
    headers = dict(build_headers(CATALOGUE.for_event(event), event, idempotency_key="create-app:42"))
    # Then that key is the idempotency key, and the event id stays the event id
    assert headers[names.IDEMPOTENCY_KEY] == b"create-app:42"
    assert headers[names.EVENT_ID] == event.event_id.encode()


def test_occurred_at_is_the_exact_millisecond_avro_stores():
    # Given instants whose float timestamps round badly (x.001 s is not exact in binary)
    for when in (datetime(2024, 1, 1, 0, 0, 0, 1000, tzinfo=UTC), datetime(2025, 11, 28, 13, 7, 59, 999000, tzinfo=UTC),
                 datetime(1970, 1, 1, tzinfo=UTC)):
        event = app_created(occurred_at=when)
        # When the header is built, Then it is the integer count of milliseconds
        header = header_value(build_headers(CATALOGUE.for_event(event), event), names.OCCURRED_AT)
        expected = (when - datetime(1970, 1, 1, tzinfo=UTC)).days * 86_400_000 + \
            (when - datetime(1970, 1, 1, tzinfo=UTC)).seconds * 1000 + when.microsecond // 1000
        assert int(header) == epoch_millis(when) == expected


def test_the_trace_context_travels_when_a_span_is_active():
    # Given an active span (with baggage)
    event = app_created()
    spec = CATALOGUE.for_event(event)
    token = attach(set_baggage("tenant", TENANT))
    try:
        with tracer.start_as_current_span("create app") as span:
            # When the headers are built
            headers = dict(build_headers(spec, event))
    finally:
        detach(token)
    # Then traceparent names that span's trace and span ids, and the baggage rides along
    ctx = span.get_span_context()
    assert headers[names.TRACEPARENT] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}".encode()
    assert headers["baggage"] == f"tenant={TENANT}".encode()
    # And without a span there is no trace header at all
    assert names.TRACEPARENT not in dict(build_headers(spec, event))


def test_extra_headers_are_added_but_may_not_replace_the_sdks():
    # Given an event
    event = app_created()
    spec = CATALOGUE.for_event(event)
    # When extra headers are given as a dict of text and bytes, Then they follow the SDK's
    headers = build_headers(spec, event, extra={"source": "console", "blob": b"\x00\x01"})
    assert headers[-2:] == [("source", b"console"), ("blob", b"\x00\x01")]
    # And one that would replace an SDK header is refused, saying which
    with pytest.raises(ValueError, match="'event-id' is set by the SDK"):
        build_headers(spec, event, extra=[(names.EVENT_ID, "forged")])
