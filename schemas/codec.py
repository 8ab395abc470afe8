"""The codec: Avro single-object encoding over fastavro, with schema resolution on decode.

Wire format (Avro specification, "Single-object encoding")::

    C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema's canonical form, little-endian | body

The body is fastavro's schemaless encoding. Events are written with their type's latest schema
(``EventSpec.current``: the latest, unless the model pins an older one); on decode the writer
schema is looked up by fingerprint and resolved to that version, so a consumer reads events
written with an older or newer version, as long as the newer version's file is in its catalogue. Every schema is
parsed once (by the catalogue); per event type the 10-byte header is computed once. A body written
with the version it is read into (no resolution: the usual case) is read by a reader compiled for
that schema (``reader.py``: 1.8x faster than fastavro), any other body by fastavro.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, get_args

from fastavro import schemaless_reader, schemaless_writer
from pydantic import BaseModel, ValidationError

from .catalogue import CATALOGUE, Catalogue, EventSpec
from .errors import (
    CorruptBody,
    EventTypeMismatch,
    InvalidEvent,
    NotSingleObjectEncoded,
    UnencodableEvent,
    UnknownSchema,
    describe_validation_error,
)
from .events import Event
from .reader import Reader, Unsupported, compile_reader

MAGIC = b"\xC3\x01"
HEADER_SIZE = 10


def single_object_header(fp: bytes) -> bytes:
    """The 10 bytes before a single-object-encoded body: the marker and the 8-byte fingerprint."""
    if len(fp) != 8:
        raise ValueError(f"a fingerprint has 8 bytes, not {len(fp)}")
    return MAGIC + fp


def split_single_object(data: bytes) -> tuple[bytes, memoryview]:
    """(fingerprint, body) of single-object-encoded bytes; ``NotSingleObjectEncoded`` otherwise."""
    if len(data) < HEADER_SIZE or data[:2] != MAGIC:
        raise NotSingleObjectEncoded(
            f"not Avro single-object encoded: expected the marker c301 and an 8-byte fingerprint, "
            f"got {len(data)} bytes starting {bytes(data[:HEADER_SIZE]).hex() or '(nothing)'}")
    view = memoryview(data)
    return bytes(view[2:HEADER_SIZE]), view[HEADER_SIZE:]


def _nests_models(model: type[BaseModel]) -> bool:
    """Whether any field's type mentions a pydantic model (a record inside the record)."""

    def mentions(annotation: Any) -> bool:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return True
        return any(mentions(arg) for arg in get_args(annotation))

    return any(mentions(field.annotation) for field in model.model_fields.values())


def _corrupt(event_type: str, fp: bytes, size: int, exc: Exception) -> CorruptBody:
    """The error of a body that does not decode (``size``: the whole message's)."""
    reason = str(exc) or "unexpected end of data"
    return CorruptBody(f"the {event_type} body (fingerprint {fp.hex()}, {size - HEADER_SIZE} bytes) does not "
                       f"decode: {type(exc).__name__}: {reason}")


class AvroCodec:
    """Encodes events to single-object Avro bytes and back. Thread-safe; keep one per process."""

    def __init__(self, catalogue: Catalogue = CATALOGUE):
        self.catalogue = catalogue
        # model -> (header, writer schema, whether its fields hold no nested model)
        self._writers: dict[type[Event], tuple[bytes, dict[str, Any], bool]] = {}
        # fingerprint -> (spec, writer schema, reader schema or None when they are one, model, the
        # writer schema's compiled reader when no resolution is needed and it compiles, else None)
        self._readers: dict[bytes, tuple[EventSpec, dict[str, Any], dict[str, Any] | None, type[Event],
                                         Reader | None]] = {}
        for spec in catalogue:
            current = spec.current
            self._writers[spec.model] = (single_object_header(current.fingerprint), current.schema,
                                         not _nests_models(spec.model))
        for fp, (spec, version) in catalogue.fingerprints().items():
            reader = None if version.fingerprint == spec.current.fingerprint else spec.current.schema
            compiled = None
            if reader is None:
                try:
                    compiled = compile_reader(version.schema)
                except Unsupported:
                    pass  # a schema the compiler does not cover: fastavro reads it
            self._readers[fp] = (spec, version.schema, reader, spec.model, compiled)

    def fingerprint(self, event_type: str) -> bytes:
        """The 8-byte fingerprint events of this type are written with (their latest schema, or
        the version the model is pinned to)."""
        return self.catalogue.get(event_type).current.fingerprint

    def encode(self, event: Event) -> bytes:
        try:
            header, schema, flat = self._writers[type(event)]
        except KeyError:
            spec = self.catalogue.for_event(event)  # raises UnknownEventType for a stranger
            header, schema, flat = self._writers[spec.model]
            flat = flat and type(event).model_fields.keys() == spec.model.model_fields.keys()
        buf = BytesIO()
        buf.write(header)
        # A frozen model's __dict__ is its field values, ready for fastavro: no copy needed unless
        # a field holds models (ToolNode), which fastavro cannot read. Measured: encode ~25% faster
        # than model_dump() for every event (bench/codec_bench.py).
        try:
            schemaless_writer(buf, schema, event.__dict__ if flat else event.model_dump())
        except Exception as exc:  # noqa: BLE001 - fastavro raises ValueError, TypeError, ... for bad values
            raise UnencodableEvent(f"the {event.event_type} event {event.event_id} does not encode with its "
                                   f"schema: {type(exc).__name__}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes, event_type: str | None = None) -> Event:
        """The event in ``data``. With ``event_type`` (e.g. from the message's header), the
        fingerprint must name that type, else ``EventTypeMismatch``."""
        if type(data) is not bytes:
            data = bytes(data)  # a memoryview or bytearray: the compiled readers slice bytes
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            split_single_object(data)  # raises with the message
        fp = data[2:HEADER_SIZE]
        entry = self._readers.get(fp)
        if entry is None:
            raise UnknownSchema(f"unknown schema fingerprint {fp.hex()}: no version of any event in the "
                                "catalogue has it (written by a newer producer, or not one of our events)")
        spec, writer, reader, model, compiled = entry
        if event_type is not None and event_type != spec.event_type:
            raise EventTypeMismatch(f"expected event type {event_type}, but the fingerprint {fp.hex()} "
                                    f"is a schema of {spec.event_type}")
        size = len(data)
        if compiled is not None:
            try:
                record, end = compiled(data, HEADER_SIZE)
                if end > size:
                    raise EOFError  # a string cut short by the end of the data (a slice does not raise)
            except Exception as exc:  # noqa: BLE001 - IndexError, ValueError, UnicodeDecodeError, ... on bad bytes
                raise _corrupt(spec.event_type, fp, size, exc) from exc
        else:
            fo = BytesIO(data)
            fo.seek(HEADER_SIZE)
            try:
                record = schemaless_reader(fo, writer, reader)
            except Exception as exc:  # noqa: BLE001 - fastavro raises EOFError, IndexError, ... on bad bytes
                raise _corrupt(spec.event_type, fp, size, exc) from exc
            end = fo.tell()
        if end != size:
            raise CorruptBody(f"the {spec.event_type} body (fingerprint {fp.hex()}) has "
                              f"{size - end} trailing bytes after the record")
        try:
            # the model's validator itself: model_validate() is a Python wrapper around it (0.4 of its 2.5 µs)
            return model.__pydantic_validator__.validate_python(record)
        except ValidationError as exc:
            # pydantic's errors without their input values: the message goes to logs and dead-letter headers
            raise InvalidEvent(f"the {spec.event_type} event (fingerprint {fp.hex()}) is not valid: "
                               f"{describe_validation_error(exc)}") from exc
