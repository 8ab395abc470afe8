"""A FastStream Kafka subscriber doing the same work: decode each event, nothing else.

FastStream's way to plug in a wire format is a custom ``decoder`` (message -> body): it strips the
single-object header and reads the body with the writer schema. The handler takes the body and
does nothing (no annotation, so FastStream has nothing to validate). Defaults otherwise, with
FastStream's per-message logging off (``logger=None``), as anyone benchmarking it would.

Options: ``transport`` ``aiokafka`` (``faststream.kafka``, the default extra ``faststream[kafka]``)
or ``confluent`` (``faststream.confluent``, librdkafka); ``batch`` (a batch subscriber taking up to
500 messages per call).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe import Clock, config, single_object_decoder  # noqa: E402


async def main() -> None:
    cfg = config()
    if cfg.get("transport", "aiokafka") == "confluent":
        from faststream.confluent import KafkaBroker
    else:
        from faststream.kafka import KafkaBroker
    body = single_object_decoder(cfg)
    clock = Clock(cfg["expect"])
    done = asyncio.Event()
    broker = KafkaBroker(cfg["bootstrap"], logger=None)

    if cfg.get("batch"):
        async def decode(msg):  # async: FastStream runs a sync decoder on a worker thread
            return [body(value) for value in msg.body]

        @broker.subscriber(cfg["topic"], group_id=cfg["group"], auto_offset_reset="earliest", batch=True,
                           max_records=500, decoder=decode)
        async def handle(events):
            clock.start()
            if clock.tick(len(events)):
                done.set()
    else:
        async def decode(msg):
            return body(msg.body)

        @broker.subscriber(cfg["topic"], group_id=cfg["group"], auto_offset_reset="earliest", decoder=decode)
        async def handle(event):
            if clock.tick():
                done.set()

    async with broker:
        await broker.start()
        await done.wait()
        clock.report()


if __name__ == "__main__":
    asyncio.run(main())
