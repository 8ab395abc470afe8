"""The redrive ledger: which dead letters of a group were re-driven, so none is sent twice.

A compacted topic ``<prefix>.redriven.<group>`` (beside ``<prefix>.dlq.<group>`` and
``<prefix>.retry.<group>``; a name no group's dead-letter topic can take), one record per re-driven
dead letter, keyed by its ``partition:offset`` in the dead-letter topic, valued with a small JSON
document (when, by which run, the dead letter's timestamp). The copy into the retry topic and its
ledger record are written in one Kafka transaction, so a redrive that dies half-way leaves
either both or neither: the next redrive sends exactly what is missing.

Why a ledger of positions and not a consumer-group cursor on the dead-letter topic: redrives
select (``--error-class``, ``--event-type``, ``--limit``), so what was re-driven is not a prefix of
the topic. A record holds the dead letter's timestamp as well as its position, so a dead-letter
topic deleted and created again (its offsets starting over) is not mistaken for the old one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka.admin import AdminClient

from dify_events.schemas.settings import Settings

from . import kafka
from .dead_letters import DeadLetter

CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}


def ledger_topic(prefix: str, group: str) -> str:
    return f"{prefix}.redriven.{group}"


@dataclass(frozen=True)
class Entry:
    dlq_timestamp: int
    redriven_at: str
    run: str


def record(letter: DeadLetter, run: str) -> tuple[bytes, bytes]:
    """The (key, value) of the ledger record for ``letter``."""
    value = {"dlq_timestamp": letter.timestamp, "redriven_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
             "run": run, "event_id": letter.event_id, "error_class": letter.error_class}
    return letter.position.encode(), json.dumps(value, separators=(",", ":")).encode()


class Ledger:
    def __init__(self, settings: Settings, topic: str):
        self.settings = settings
        self.topic = topic
        self.entries: dict[str, Entry] = {}

    def load(self, client: AdminClient) -> Ledger:
        """Reads every committed record (the latest per dead letter); an absent ledger is empty."""
        self.entries = {}
        if not kafka.exists(client, self.topic):
            return self
        count = kafka.partition_counts(client, [self.topic])[self.topic]
        marks = kafka.watermarks(client, [(self.topic, p) for p in range(count)])
        ranges = [(self.topic, p, low, high) for (_, p), (low, high) in marks.items()]
        for msg in kafka.read_ranges(kafka.reader(self.settings, "redrive-ledger"), ranges):
            key, value = (msg.key() or b"").decode(), msg.value()
            if value is None:
                self.entries.pop(key, None)
                continue
            try:
                data = json.loads(value)
                self.entries[key] = Entry(int(data["dlq_timestamp"]), str(data["redriven_at"]), str(data["run"]))
            except (ValueError, KeyError, TypeError):
                continue  # not ours: ignored
        return self

    def ensure(self, client: AdminClient) -> None:
        kafka.create_topic(client, self.topic, partitions=1, config=CONFIG)

    def redriven(self, letter: DeadLetter) -> Entry | None:
        """The ledger's entry for this very dead letter (same position and timestamp), if any."""
        entry = self.entries.get(letter.position)
        return entry if entry is not None and entry.dlq_timestamp == letter.timestamp else None
