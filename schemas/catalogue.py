"""The event catalogue: for every event type, its domain topic, key field, model and schema versions.

The ``avro/`` folder is the schema registry: ``avro/<domain>/<event_type>.v<N>.avsc``, every past
version kept. ``Catalogue.load()`` reads and checks it once; ``CATALOGUE`` is that load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from .errors import CatalogueError, UnknownEventType, UnknownSchema
from .events import ALL_EVENTS, Event

AVRO_ROOT = Path(__file__).with_name("avro")
NAMESPACE = "io.dify.events"
ENVELOPE = ("event_id", "occurred_at", "tenant_id")
FILE_NAME = re.compile(r"^(?P<event_type>[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")

# -- CRC-64-AVRO (the Rabin fingerprint of the Avro specification) ---------------------------
_EMPTY64 = 0xC15D213AA4D7A795


def _fp_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return tuple(table)


_FP_TABLE = _fp_table()


def crc64_avro(data: bytes) -> bytes:
    """CRC-64-AVRO of ``data``, as the 8 little-endian bytes single-object encoding writes."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def pascal_case(event_type: str) -> str:
    """``app_was_created`` -> ``AppWasCreated``: the record name of an event type's schema."""
    return "".join(part.capitalize() for part in event_type.split("_"))


# -- the catalogue ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SchemaVersion:
    """One ``.avsc`` file: its version, fastavro-parsed schema, canonical form and fingerprint."""

    version: int
    schema: dict[str, Any] = field(repr=False, compare=False)  # fastavro.parse_schema's result
    canonical_form: str = field(repr=False)
    fingerprint: bytes  # CRC-64-AVRO of the canonical form, little-endian (8 bytes)
    path: Path
    raw: dict[str, Any] = field(repr=False, compare=False)  # the file's JSON, untouched

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()


@dataclass(frozen=True)
class EventSpec:
    """What the platform knows about one event type."""

    event_type: str
    domain: str
    model: type[Event]
    key_field: str
    versions: tuple[SchemaVersion, ...]  # ascending, v1 first
    pinned: int | None = None  # the model's schema_version, when it is not the latest

    @property
    def latest(self) -> SchemaVersion:
        return self.versions[-1]

    @property
    def current(self) -> SchemaVersion:
        """The version this process writes, and resolves what it reads to: the model's version."""
        return self.latest if self.pinned is None else self.versions[self.pinned - 1]

    def topic(self, prefix: str) -> str:
        return f"{prefix}.{self.domain}"

    def key_of(self, event: Event) -> str:
        return getattr(event, self.key_field)

    def version(self, number: int) -> SchemaVersion:
        for version in self.versions:
            if version.version == number:
                return version
        raise UnknownSchema(f"{self.event_type} has no schema v{number} "
                            f"(known: {', '.join(f'v{v.version}' for v in self.versions)})")


def load_schema_file(path: Path) -> tuple[dict[str, Any], dict[str, Any], str, bytes]:
    """(raw JSON, parsed schema, parsing canonical form, fingerprint) of one ``.avsc`` file."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"cannot read the schema {path}: {exc}") from exc
    try:
        parsed = parse_schema(raw, {})  # a fresh name space per file: v1 and v2 share record names
    except Exception as exc:  # noqa: BLE001 - fastavro raises several types for bad schemas
        raise CatalogueError(f"{path} is not a valid Avro schema: {exc}") from exc
    canonical = to_parsing_canonical_form(parsed)
    return raw, cast(dict[str, Any], parsed), canonical, crc64_avro(canonical.encode())  # an event is a record


class Catalogue:
    """Event types by name, and schema versions by fingerprint."""

    def __init__(self, specs: Iterable[EventSpec]):
        self._specs: dict[str, EventSpec] = {}
        self._by_model: dict[type[Event], EventSpec] = {}
        self._by_fingerprint: dict[bytes, tuple[EventSpec, SchemaVersion]] = {}
        for spec in specs:
            self._specs[spec.event_type] = spec
            self._by_model[spec.model] = spec
            for version in spec.versions:
                other = self._by_fingerprint.get(version.fingerprint)
                if other and other[0].event_type != spec.event_type:
                    raise CatalogueError(f"{version.path} and {other[1].path} have the same fingerprint "
                                         f"{version.fingerprint.hex()}: two event types share one schema")
                # versions that differ only in docs or defaults share a fingerprint: the first wins,
                # which is harmless (the body is the same; the reader's schema supplies defaults)
                self._by_fingerprint.setdefault(version.fingerprint, (spec, version))

    @classmethod
    def load(cls, root: Path = AVRO_ROOT, models: Iterable[type[Event]] = ALL_EVENTS) -> Catalogue:
        """Reads every ``<domain>/<event_type>.v<N>.avsc`` under ``root`` and checks the contract:
        file names, record names and namespaces, the envelope first, versions 1..N without gaps, and
        exactly one model per event type."""
        models_by_type: Mapping[str, type[Event]] = {m.event_type: m for m in models}
        found: dict[str, dict[int, SchemaVersion]] = {}
        domains: dict[str, str] = {}
        for path in sorted(Path(root).glob("*/*.avsc")):
            match = FILE_NAME.match(path.name)
            if not match:
                raise CatalogueError(f"{path}: schema files are named <event_type>.v<N>.avsc")
            event_type, number, domain = match["event_type"], int(match["version"]), path.parent.name
            raw, parsed, canonical, fp = load_schema_file(path)
            check_contract(path, raw, event_type, domain)
            if domains.setdefault(event_type, domain) != domain:
                raise CatalogueError(f"{event_type} has schemas in two domains: {domains[event_type]} and {domain}")
            found.setdefault(event_type, {})[number] = SchemaVersion(number, parsed, canonical, fp, path, raw)
        if not found:
            raise CatalogueError(f"no schemas under {root}")
        missing = sorted(set(models_by_type) - set(found))
        if missing:
            raise CatalogueError(f"no schema for the event types {', '.join(missing)} under {root}")
        specs = []
        for event_type, versions in sorted(found.items()):
            model = models_by_type.get(event_type)
            if model is None:
                raise CatalogueError(f"{event_type} has a schema but no model in schemas/events.py")
            if sorted(versions) != list(range(1, len(versions) + 1)):
                raise CatalogueError(f"{event_type}: versions must run 1..N without gaps, found "
                                     f"{', '.join(f'v{n}' for n in sorted(versions))}")
            if model.domain != domains[event_type]:
                raise CatalogueError(f"{event_type}: the model says domain {model.domain!r}, "
                                     f"the schema lives under {domains[event_type]!r}")
            if model.key_field not in model.model_fields:
                raise CatalogueError(f"{event_type}: key field {model.key_field!r} is not a field of the model")
            pinned = model.schema_version
            if pinned is not None and pinned not in versions:
                raise CatalogueError(f"{event_type}: the model is pinned to v{pinned}, which has no schema file")
            specs.append(EventSpec(event_type, domains[event_type], model, model.key_field,
                                   tuple(versions[n] for n in sorted(versions)),
                                   None if pinned == len(versions) else pinned))
        return cls(specs)

    # -- look-ups ---------------------------------------------------------------------------
    def get(self, event_type: str) -> EventSpec:
        try:
            return self._specs[event_type]
        except KeyError:
            raise UnknownEventType(f"unknown event type {event_type!r}; known: {', '.join(self._specs)}") from None

    def for_event(self, event: Event | type[Event]) -> EventSpec:
        model = event if isinstance(event, type) else type(event)
        spec = self._by_model.get(model)
        if spec is None:
            return self.get(getattr(model, "event_type", model.__name__))
        return spec

    def by_fingerprint(self, fp: bytes) -> tuple[EventSpec, SchemaVersion]:
        try:
            return self._by_fingerprint[fp]
        except KeyError:
            raise UnknownSchema(f"no schema in the catalogue has the fingerprint {bytes(fp).hex()} "
                                "(written by a newer producer, or not one of our events)") from None

    def __iter__(self) -> Iterator[EventSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._specs

    def event_types(self) -> list[str]:
        return list(self._specs)

    def domains(self) -> list[str]:
        return sorted({spec.domain for spec in self._specs.values()})

    def topics(self, prefix: str) -> list[str]:
        return [f"{prefix}.{domain}" for domain in self.domains()]

    def fingerprints(self) -> Mapping[bytes, tuple[EventSpec, SchemaVersion]]:
        return self._by_fingerprint


def check_contract(path: Path, raw: Any, event_type: str, domain: str) -> None:
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise CatalogueError(f"{path}: an event schema is a record")
    expected = (pascal_case(event_type), f"{NAMESPACE}.{domain}")
    if (raw.get("name"), raw.get("namespace")) != expected:
        raise CatalogueError(f"{path}: the record must be named {expected[0]!r} in namespace {expected[1]!r}, "
                             f"not {raw.get('name')!r} in {raw.get('namespace')!r}")
    names = tuple(f.get("name") for f in raw.get("fields", ())[:len(ENVELOPE)])
    if names != ENVELOPE:
        raise CatalogueError(f"{path}: the first fields must be the envelope {', '.join(ENVELOPE)}")
    if not raw.get("doc") or any(not f.get("doc") for f in raw["fields"]):
        raise CatalogueError(f"{path}: the record and every field need a doc")


CATALOGUE = Catalogue.load()
