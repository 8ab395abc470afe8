"""A Quix Streams application doing the same work: decode each event, nothing else.

The topic's value deserializer is a Quix ``Deserializer`` that strips the single-object header
and reads the body with the writer schema; the StreamingDataFrame does nothing but count
(``update``). Defaults otherwise (Quix's checkpointing commits every 5 s), no state used, its
state directory in a scratch folder, its logs at WARNING.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe import Clock, config, single_object_decoder  # noqa: E402
from quixstreams import Application  # noqa: E402
from quixstreams.models.serializers import Deserializer  # noqa: E402


class SingleObjectAvro(Deserializer):
    def __init__(self, decode):
        super().__init__()
        self.decode = decode

    def __call__(self, value: bytes, ctx):
        return self.decode(value)


def main() -> None:
    cfg = config()
    clock = Clock(cfg["expect"])
    app = Application(broker_address=cfg["bootstrap"], consumer_group=cfg["group"], auto_offset_reset="earliest",
                      state_dir=tempfile.mkdtemp(prefix="bench-quix-"), loglevel="WARNING", auto_create_topics=False)
    topic = app.topic(cfg["topic"], value_deserializer=SingleObjectAvro(single_object_decoder(cfg)),
                      key_deserializer="bytes")
    sdf = app.dataframe(topic)

    def count(_value) -> None:
        if clock.tick():
            app.stop()

    sdf.update(count)
    app.run()
    clock.report()


if __name__ == "__main__":
    main()
