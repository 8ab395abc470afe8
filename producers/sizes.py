"""How large Kafka counts a record, so that a caller can know before producing whether it fits.

``record_size`` is exactly what librdkafka compares with the producer's ``message.max.bytes`` when
``produce()`` is called: the key, the value and the headers (each name and value with its length
as a zigzag varint), plus 36 bytes for the record's own fields at their largest. The broker
compares a whole record batch with the topic's ``max.message.bytes``: a batch adds
``BATCH_OVERHEAD`` bytes, and compression its framing (lz4 adds a few bytes per 64 KiB block to
bytes that do not compress), hence ``TOPIC_HEADROOM``.
"""

from __future__ import annotations

from collections.abc import Iterable

RECORD_OVERHEAD = 36    # librdkafka's RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD
BATCH_OVERHEAD = 61     # a v2 record batch's header
TOPIC_HEADROOM = 1024   # a batch's header and compression framing, with room to spare
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes


def _varint_size(n: int) -> int:
    zigzag = (n << 1) ^ (n >> 63)
    size = 1
    while zigzag >= 0x80:
        zigzag >>= 7
        size += 1
    return size


def _length(data: str | bytes | None) -> int:
    if data is None:
        return 0
    return len(data.encode()) if isinstance(data, str) else len(data)


def headers_size(headers: Iterable[tuple[str, str | bytes | None]] | None) -> int:
    """The serialized size of a record's headers."""
    size = 0
    for name, value in headers or ():
        name_length = _length(name)
        value_length = -1 if value is None else _length(value)
        size += _varint_size(name_length) + name_length + _varint_size(value_length) + max(0, value_length)
    return size


def record_size(key: str | bytes | None, value: str | bytes | None,
                headers: Iterable[tuple[str, str | bytes | None]] | None) -> int:
    """What librdkafka counts of one record against ``message.max.bytes``."""
    return RECORD_OVERHEAD + _length(key) + _length(value) + headers_size(headers)


def largest_record(message_max_bytes: int, topic_max_message_bytes: int | None = None) -> int:
    """The largest ``record_size`` that both the producer (its ``message.max.bytes``) and, when
    given, the topic (its ``max.message.bytes``, after a batch's overhead) accept."""
    if topic_max_message_bytes is None:
        return message_max_bytes
    return min(message_max_bytes, topic_max_message_bytes - TOPIC_HEADROOM)
