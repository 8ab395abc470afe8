"""``record_size`` counts a record exactly as librdkafka does against ``message.max.bytes``."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from dify_events.producers.sizes import record_size

LIMIT = 20_000
SHAPES = {
    "bare": (None, []),
    "key": (b"k" * 300, []),
    "str-key": ("ключ" * 10, []),
    "headers": (b"app-1", [("event-type", b"app_was_created"), ("x" * 70, b"y" * 130), ("null", None)]),
    "many-headers": (None, [(f"h{i}", b"v" * i) for i in range(0, 400, 7)]),
}


@pytest.mark.parametrize("key, headers", list(SHAPES.values()), ids=list(SHAPES))
def test_the_largest_value_librdkafka_takes_is_the_one_record_size_allows(key, headers):
    producer = Producer({"bootstrap.servers": "127.0.0.1:1", "message.max.bytes": LIMIT,
                         "logger": logging.getLogger("tests.quiet")})

    def takes(value_length: int) -> bool:
        try:
            producer.produce("t", b"v" * value_length, key, headers=headers)
        except KafkaException as exc:
            assert exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
            return False
        return True

    largest = LIMIT - record_size(key, b"", headers)
    assert takes(largest) and not takes(largest + 1)
    assert record_size(key, b"v" * largest, headers) == LIMIT
    producer.purge()
