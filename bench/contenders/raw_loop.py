"""The hand-written loop: what one writes with confluent-kafka and fastavro alone.

``consume(500)`` batches; each value decoded (single-object header stripped, ``schemaless_reader``
with the writer schema its fingerprint names); the batch's last offset per partition stored with
``store_offsets`` and committed by librdkafka's auto-commit (the runtime's own commit scheme).
Options: ``typed`` decodes with the project's ``AvroCodec`` into the validated pydantic event and
reads the headers instead (what the runtime must do for its handlers; needs the project on the
path), ``conf`` adds librdkafka properties.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from probe import Clock, config, single_object_decoder  # noqa: E402


def main() -> None:
    cfg = config()
    topic = cfg["topic"]
    if cfg.get("typed"):
        sys.path.insert(0, cfg["root"])
        from dify_events.schemas.codec import AvroCodec

        codec_decode = AvroCodec().decode

        def decode(m):
            m.headers()
            return codec_decode(m.value())
    else:
        body = single_object_decoder(cfg)

        def decode(m):
            return body(m.value())

    consumer = Consumer({"bootstrap.servers": cfg["bootstrap"], "group.id": cfg["group"],
                         "auto.offset.reset": "earliest", "enable.auto.commit": True,
                         "enable.auto.offset.store": False, **cfg.get("conf", {})})
    consumer.subscribe([topic])
    clock = Clock(cfg["expect"])
    done = False
    while not done:
        msgs = consumer.consume(500, 1.0)
        if not msgs:
            continue
        clock.start()
        last: dict[Any, Any] = {}  # partition -> offset (int | None to the stub; a cast would cost in this loop)
        count = 0
        for m in msgs:
            if m.error() is not None:
                continue
            decode(m)
            last[m.partition()] = m.offset()
            count += 1
        consumer.store_offsets(offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()])
        done = clock.tick(count)
    clock.report()
    consumer.close()


if __name__ == "__main__":
    main()
