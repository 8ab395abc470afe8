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


def content_type(fingerprint: bytes) -> str:
    """The content-type header for a single-object-encoded body with this 8-byte fingerprint."""
    return f"{AVRO_CONTENT_TYPE}; fingerprint={fingerprint.hex()}"
