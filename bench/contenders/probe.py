"""What every contender script shares: configuration, the single-object decode, the clock. The
scripts import it from their own folder (``sys.path``), so it works in any virtualenv; it needs
only fastavro."""

from __future__ import annotations

import json
import sys
import time
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from fastavro import parse_schema, schemaless_reader

if TYPE_CHECKING:
    from fastavro.types import AvroMessage, Schema

HEADER_SIZE = 10  # Avro single-object encoding: C3 01 + 8-byte fingerprint


def config() -> dict:
    return json.loads(Path(sys.argv[1]).read_text())


def readers(cfg: dict) -> dict[bytes, Schema]:
    """fingerprint -> parsed writer schema (parsed once)."""
    return {bytes.fromhex(fp): parse_schema(schema) for fp, schema in cfg["schemas"].items()}


def single_object_decoder(cfg: dict):
    """``decode(value) -> dict``: strip the 10-byte header, read the body with the writer schema
    its fingerprint names."""
    schemas = readers(cfg)

    def decode(value: bytes) -> AvroMessage:
        fo = BytesIO(value)
        fo.seek(HEADER_SIZE)
        return schemaless_reader(fo, schemas[value[2:HEADER_SIZE]], None)

    return decode


def vm_hwm_kib() -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


class Clock:
    """Counts events; the clock runs from the first to the last."""

    __slots__ = ("n", "first", "last", "expect", "cpu")

    def __init__(self, expect: int):
        self.cpu = 0.0
        self.n = 0
        self.first = 0
        self.last = 0
        self.expect = expect

    def start(self) -> None:
        """Starts the clock when a batch arrives, before its events are processed (batch consumers)."""
        if not self.first:
            self.first = time.time_ns()
            self.cpu = time.process_time()

    def tick(self, count: int = 1) -> bool:
        """Counts ``count`` events; True once ``expect`` were counted."""
        now = time.time_ns()
        if not self.first:
            self.first = now
            self.cpu = time.process_time()
        self.n += count
        self.last = now
        return self.n >= self.expect

    def report(self, **extra) -> None:
        print(json.dumps({"n": self.n, "first_ns": self.first, "last_ns": self.last, "vm_hwm_kib": vm_hwm_kib(),
                          "cpu_s": time.process_time() - self.cpu,
                          **extra}), flush=True)
