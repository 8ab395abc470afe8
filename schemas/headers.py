"""Kafka header names: the part of the contract that travels beside the Avro body.

Values are UTF-8 bytes. Consumers read the event type from the header to pass over events they
do not handle without decoding the body.
"""

EVENT_TYPE = "event-type"            # e.g. b"app_was_created"
EVENT_ID = "event-id"                # the envelope's event_id (UUIDv7, time-ordered)
IDEMPOTENCY_KEY = "idempotency-key"  # the event id unless the publisher gave a business key
OCCURRED_AT = "occurred-at"          # milliseconds since the epoch, decimal ASCII
CONTENT_TYPE = "content-type"        # "application/vnd.apache.avro+binary; fingerprint=<16 hex digits>"
TRACEPARENT = "traceparent"          # W3C trace context, when a trace is active
TRACESTATE = "tracestate"
REPROCESS = "events-reprocess"       # b"1": a replay asks the idempotency step to run handlers again
ATTEMPT = "events-attempt"           # attempts already made (on messages in a group's retry topic)

AVRO_CONTENT_TYPE = "application/vnd.apache.avro+binary"

# What a consumer accepts as an idempotency key (its processed_events column holds no more), and
# so what a producer may send: the SDK, the outbox and `events publish` refuse a longer one.
IDEMPOTENCY_KEY_MAX_LENGTH = 255  # characters of UTF-8 text


def idempotency_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an idempotency key, or None when it can (1 to
    ``IDEMPOTENCY_KEY_MAX_LENGTH`` characters of text that UTF-8 can encode)."""
    if not key or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        return (f"an idempotency key has 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters, this one {len(key)} "
                "(consumers refuse a longer one; a hash of a long business key fits)")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "an idempotency key is text that UTF-8 can encode (this one holds a lone surrogate)"
    return None


def content_type(fingerprint: bytes) -> str:
    """The content-type header for a single-object-encoded body with this 8-byte fingerprint."""
    return f"{AVRO_CONTENT_TYPE}; fingerprint={fingerprint.hex()}"
