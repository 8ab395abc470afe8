"""The compiled Avro readers: they read what fastavro reads, raise where the bytes are bad, and the
codec reads every body with them (or with fastavro, for what they do not cover) to the same event."""

from __future__ import annotations

import io
import math
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from dify_events.schemas import codec as codec_module
from dify_events.schemas.catalogue import AVRO_ROOT, CATALOGUE, Catalogue, SchemaVersion
from dify_events.schemas.codec import AvroCodec, single_object_header
from dify_events.schemas.errors import CorruptBody
from dify_events.schemas.reader import Unsupported, compile_reader, reader_source, varint
from dify_events.schemas.samples import sample_events

MIN_MILLIS = -62_135_596_800_000  # 0001-01-01T00:00:00Z, datetime's first instant
MAX_MILLIS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, its last millisecond
LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)


# -- helpers ----------------------------------------------------------------------------------
def write(schema: Any, value: Any) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, schema, value)
    return buf.getvalue()


def fastavro_read(schema: Any, data: bytes) -> tuple[Any, int]:
    fo = io.BytesIO(data)
    return schemaless_reader(fo, schema, None), fo.tell()


def assert_same(ours: Any, theirs: Any, where: str = "value") -> None:
    """Equal, of the same types, dicts in the same key order, datetimes with the same tzinfo object."""
    assert type(ours) is type(theirs), f"{where}: {type(ours).__name__} != {type(theirs).__name__}"
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), where
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, datetime):
        assert ours == theirs and ours.tzinfo is theirs.tzinfo, f"{where}: {ours!r} != {theirs!r}"
    elif isinstance(theirs, float) and math.isnan(theirs):
        assert math.isnan(ours), where
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


def assert_reads_like_fastavro(schema: Any, data: bytes, prefix: bytes = b"") -> Any:
    """Our reader and fastavro read ``data`` alike (ours also behind ``prefix``, as the codec calls it
    behind the header): the same value, up to the same end."""
    theirs, their_end = fastavro_read(schema, data)
    ours, our_end = compile_reader(schema)(prefix + data, len(prefix))
    assert_same(ours, theirs)
    assert our_end - len(prefix) == their_end == len(data)
    return ours


def values(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of a (fastavro-parsed) schema that fastavro's writer takes; timestamps as milliseconds
    over datetime's whole range."""
    if isinstance(schema, list):
        return st.one_of([values(branch, named) for branch in schema])
    if isinstance(schema, str):
        schema = named[schema] if schema in named else {"type": schema}
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return st.integers(min_value=MIN_MILLIS, max_value=MAX_MILLIS)
    simple = {
        "null": st.none(), "boolean": st.booleans(), "long": LONGS,
        "int": st.integers(min_value=-(2**31), max_value=2**31 - 1), "string": st.text(max_size=80),
        "bytes": st.binary(max_size=80), "double": st.floats(), "float": st.floats(width=32),
    }
    if kind in simple:
        return simple[kind]
    if kind == "record":
        named[schema["name"]] = schema
        return st.fixed_dictionaries({f["name"]: values(f["type"], named) for f in schema["fields"]})
    if kind == "enum":
        named[schema["name"]] = schema
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(values(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=12), values(schema["values"], named), max_size=4)
    raise AssertionError(f"no strategy for {kind}")


ALL_VERSIONS = [version for spec in CATALOGUE for version in spec.versions]


# -- every schema of the catalogue reads like fastavro ----------------------------------------
def test_every_version_of_every_catalogue_schema_compiles():
    # the codec reads every body written with the current version with a compiled reader: a schema
    # change that loses it (a type the compiler does not cover) should be a decision, not an accident
    assert len(ALL_VERSIONS) == len(list(AVRO_ROOT.glob("*/*.avsc")))
    for version in ALL_VERSIONS:
        compile_reader(version.schema)


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"{v.path.stem}")
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_record_of_any_catalogue_schema_reads_like_fastavro(version: SchemaVersion, data):
    # Given any record of a schema version of the catalogue, written by fastavro
    record = data.draw(values(version.schema, {}))
    body = write(version.schema, record)
    # When read by its compiled reader (behind a header, as the codec reads) / Then it is what
    # fastavro reads, up to the same end
    assert_reads_like_fastavro(version.schema, body, prefix=single_object_header(version.fingerprint))


# -- every supported type, and edge cases -----------------------------------------------------
EVERYTHING = parse_schema({
    "type": "record", "name": "Everything", "namespace": "test.reader", "fields": [
        {"name": "s", "type": "string"},
        {"name": "l", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "b", "type": "boolean"},
        {"name": "n", "type": "null"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "raw", "type": "bytes"},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item", "fields": [
            {"name": "x", "type": "string"}, {"name": "tags", "type": {"type": "array", "items": "long"}}]}}},
        {"name": "again", "type": ["null", "Item"]},  # a named type referenced a second time
        {"name": "other", "type": "test.reader.Colour"},
        {"name": "m", "type": {"type": "map", "values": ["null", "long", "string"]}},
        {"name": "u", "type": ["null", "string", "long", "Colour", {"type": "map", "values": "string"}]},
        {"name": "when", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
    ],
})


def everything(**overrides: Any) -> dict[str, Any]:
    return {"s": "text", "l": -5, "i": 7, "b": True, "n": None, "at": datetime(2026, 12, 7, 20, 1, 2, 345000, UTC),
            "f": 1.5, "d": -2.25, "raw": b"\x00\xff", "colour": "GREEN",
            "items": [{"x": "a", "tags": [1, -2]}, {"x": "", "tags": []}], "again": {"x": "b", "tags": [3]},
            "other": "BLUE", "m": {"k": 1, "": None, "z": "zz"}, "u": {"a": "b"}, "when": None} | overrides


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_value_of_every_supported_type_reads_like_fastavro(data):
    assert_reads_like_fastavro(EVERYTHING, write(EVERYTHING, data.draw(values(EVERYTHING, {}))), prefix=b"\xc3\x01")


@pytest.mark.parametrize("text", [
    "", "a", "x" * 63, "x" * 64, "x" * 8191, "x" * 8192, "y" * 70_000, "é", "中文 🤖" * 40, "\x00", "nul\x00inside",
])
def test_strings_of_any_length_and_script(text):
    # lengths 63/64, 8191/8192 (raw zig-zag 16382/16384): the varint's byte count changes
    value = assert_reads_like_fastavro(EVERYTHING, write(EVERYTHING, everything(s=text, raw=text.encode())))
    assert value["s"] == text


@pytest.mark.parametrize("number", [
    0, 1, -1, 63, -64, 64, -65, 2**27, 2**28, -(2**28), 2**31 - 1, -(2**31), 2**35, 2**41 - 1, 2**41, 2**48,
    2**62, 2**63 - 1, -(2**63), -(2**63) + 1,
])
def test_longs_of_every_varint_length(number):
    value = assert_reads_like_fastavro(EVERYTHING, write(EVERYTHING, everything(l=number, m={"n": number})))
    assert value["l"] == number


@pytest.mark.parametrize("millis", [
    0, 1, -1, 999, -999, -1000, -1001, -86_400_001, 1_765_137_662_345, 2**41 - 1, 2**41, -(2**41), -(2**41) - 1,
    -2_208_988_800_000,  # 1900-01-01
    MIN_MILLIS, MIN_MILLIS + 1, MAX_MILLIS, MAX_MILLIS - 1, 4_102_444_800_000,  # 2100-01-01
])
def test_timestamps_before_1970_and_far_ahead(millis):
    value = assert_reads_like_fastavro(EVERYTHING, write(EVERYTHING, everything(at=millis, when=millis)))
    assert value["at"] == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    assert value["at"].tzinfo is UTC and value["when"].tzinfo is UTC


@pytest.mark.parametrize("millis", [MIN_MILLIS - 1, MAX_MILLIS + 1, 2**62, -(2**63)])
def test_timestamps_out_of_datetimes_range_raise_as_fastavro_does(millis):
    data = write(EVERYTHING, everything(at=millis))
    with pytest.raises(OverflowError) as theirs:
        fastavro_read(EVERYTHING, data)
    with pytest.raises(OverflowError) as ours:
        compile_reader(EVERYTHING)(data, 0)
    assert str(ours.value) == str(theirs.value)


def test_any_byte_but_zero_is_true_as_in_fastavro():
    schema = {"type": "record", "name": "Flags", "fields": [{"name": "f", "type": "boolean"}]}
    for byte in (0, 1, 2, 0x80, 0xFF):
        assert_reads_like_fastavro(schema, bytes([byte]))


def test_floats_keep_their_bits():
    for number in (math.inf, -math.inf, math.nan, -0.0, 5e-324, 1.7976931348623157e308):
        assert_reads_like_fastavro(EVERYTHING, write(EVERYTHING, everything(d=number, f=number)))


def zigzag(number: int) -> bytes:
    """The Avro varint of a long."""
    raw = (number << 1) ^ (number >> 63)
    out = bytearray()
    while raw > 0x7F:
        out.append(raw & 0x7F | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def string(text: str) -> bytes:
    return zigzag(len(text.encode())) + text.encode()


def test_arrays_and_maps_in_blocks_with_negative_counts():
    # Given an array and a map each written as blocks, one with a negative count (then its size in
    # bytes), as writers that buffer blocks do (fastavro writes one block with a positive count)
    schema = {"type": "record", "name": "Blocks", "fields": [
        {"name": "a", "type": {"type": "array", "items": "string"}},
        {"name": "m", "type": {"type": "map", "values": "long"}}]}
    block = string("x") + string("yy")
    array = zigzag(-2) + zigzag(len(block)) + block + zigzag(1) + string("z") + zigzag(0)
    entries = string("k") + zigzag(-7) + string("j") + zigzag(300)
    mapping = zigzag(-2) + zigzag(len(entries)) + entries + zigzag(-1) + zigzag(3) + string("k") + zigzag(8) + zigzag(0)
    # When read / Then every block's items, as fastavro reads them (a later key replaces an earlier one)
    value = assert_reads_like_fastavro(schema, array + mapping)
    assert value == {"a": ["x", "yy", "z"], "m": {"k": 8, "j": 300}}


def test_overlong_varints_read_as_their_value():
    # 0 written in two bytes (80 00) is not canonical, but valid: fastavro reads it, so do we
    schema = {"type": "record", "name": "R", "fields": [{"name": "u", "type": ["null", "string"]},
                                                       {"name": "l", "type": "long"}]}
    assert_reads_like_fastavro(schema, b"\x82\x00" + string("a") + b"\xff\x80\x00")
    assert varint(b"\xff" * 9 + b"\x01", 0) == (2**64 - 1, 10)


@pytest.mark.parametrize(("data", "words"), [
    (b"\x01\x02", "negative length"),  # a string of length -1
    (string("ok") + b"\x04", "union index 2 out of range: the schema has 2"),
    (string("ok") + b"\x01", "union index -1 out of range"),  # fastavro would take it for the last branch
    (string("ok") + b"\x02" + b"\x80" * 10 + b"\x00", "varint longer than 10 bytes"),
    (string("ok") + b"\x02" + b"\xff" * 9 + b"\x7f", "varint beyond 64 bits"),
    (b"\x04\xff\xfe\x00", "invalid start byte"),  # not UTF-8
])
def test_bad_bytes_raise(data, words):
    schema = {"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"},
                                                       {"name": "u", "type": ["null", "long"]}]}
    with pytest.raises(ValueError, match=words):  # UnicodeDecodeError is a ValueError
        compile_reader(schema)(data, 0)


def test_an_enum_index_out_of_range_raises():
    schema = {"type": "enum", "name": "E", "symbols": ["A", "B"]}
    assert compile_reader(schema)(b"\x02", 0) == ("B", 1)
    for data in (b"\x04", b"\x01"):
        with pytest.raises(ValueError, match="enum index"):
            compile_reader(schema)(data, 0)


def test_data_cut_anywhere_raises_or_reads_past_its_end():
    # Given a record touching every type, and every prefix of its bytes
    data = write(EVERYTHING, everything(s="ünïcode " * 10, u="tail", when=0))
    read = compile_reader(EVERYTHING)
    for cut in range(len(data)):
        # When read / Then it raises, or (a string or bytes value cut short: slicing does not raise)
        # it ends past the data's end: never a short record that looks whole
        try:
            _, end = read(data[:cut], 0)
        except (IndexError, ValueError, struct.error):
            continue
        assert end > cut, f"cut at {cut} of {len(data)} read as a whole record"


def test_trailing_bytes_end_before_the_datas_end():
    data = write(EVERYTHING, everything())
    assert compile_reader(EVERYTHING)(data + b"\x00\x00", 0)[1] == len(data)


# -- what it does not compile -----------------------------------------------------------------
@pytest.mark.parametrize("schema", [
    {"type": "fixed", "name": "F", "size": 4},
    {"type": "string", "logicalType": "uuid"},
    {"type": "int", "logicalType": "date"},
    {"type": "long", "logicalType": "timestamp-micros"},
    {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
    {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]},  # recursive
    {"type": "record", "name": "R", "fields": [{"name": "f", "type": {"type": "fixed", "name": "F", "size": 2}}]},
    {"type": "array", "items": "NoSuchType"},
])
def test_what_it_does_not_cover_is_unsupported(schema):
    with pytest.raises(Unsupported):
        compile_reader(schema)


def test_the_generated_source_reads_like_the_module_docstring_says():
    from dify_events.schemas import reader

    schema = {"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "string"},
        {"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]}]}
    source = reader_source(schema)
    assert "\n".join("    " + line if line else "" for line in source.splitlines()) in reader.__doc__


# -- the codec ----------------------------------------------------------------------------------
def unsupported(schema):
    raise Unsupported("for the test")


@pytest.fixture
def fastavro_codec() -> AvroCodec:
    """A codec whose schemas all fall back to fastavro (as one the compiler does not cover would)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec_module, "compile_reader", unsupported)
        return AvroCodec(Catalogue.load())


def test_the_codec_reads_each_current_version_with_a_compiled_reader_and_resolves_with_fastavro(fastavro_codec):
    # (fingerprint -> spec, writer, reader schema or None, model, compiled reader or None)
    entries = AvroCodec()._readers.values()
    assert all((compiled is not None) == (reader is None) for _, _, reader, _, compiled in entries)
    assert sum(reader is None for _, _, reader, _, _ in entries) == len(CATALOGUE.event_types())
    assert all(compiled is None for *_, compiled in fastavro_codec._readers.values())


def test_the_compiled_and_the_fastavro_paths_decode_the_same_events(fastavro_codec):
    codec = AvroCodec()
    for event in sample_events():
        data = codec.encode(event)
        ours, theirs = codec.decode(data, event.event_type), fastavro_codec.decode(data, event.event_type)
        assert ours == theirs == event and type(ours) is type(theirs)
        assert ours.occurred_at.tzinfo is theirs.occurred_at.tzinfo is UTC


def app_created() -> bytes:
    return AvroCodec().encode([e for e in sample_events() if e.event_type == "app_was_created"][0])


def test_a_body_cut_anywhere_is_a_corrupt_body_on_both_paths(fastavro_codec):
    # Given an app_was_created message cut after its header at every point
    codec, data = AvroCodec(), app_created()
    for cut in range(10, len(data)):
        for each in (codec, fastavro_codec):
            # When decoded / Then CorruptBody, with a one-line message naming the type
            with pytest.raises(CorruptBody, match=r"^the app_was_created body \(fingerprint [0-9a-f]{16}, "
                                                  rf"{cut - 10} bytes\) does not decode: \w+: .+$") as caught:
                each.decode(data[:cut], "app_was_created")
            assert "\n" not in str(caught.value)


def test_a_string_cut_short_at_the_end_is_an_unexpected_end_of_data():
    # the last field of tenant_was_updated is a nullable string: cut inside it, nothing else fails
    codec = AvroCodec()
    event = [e for e in sample_events() if e.event_type == "tenant_was_updated"][0]
    data = codec.encode(event.model_copy(update={"updated_by": "someone"}))
    with pytest.raises(CorruptBody, match="does not decode: EOFError: unexpected end of data$"):
        codec.decode(data[:-3])


@pytest.mark.parametrize(("body", "words"), [
    (b"\x01" + bytes(30), "ValueError: a string or bytes value of negative length"),
    (string("0" * 36) + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "ValueError: a varint longer than 10 bytes"),
    (b"\x04\xff\xfe", "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff"),
])
def test_bad_bodies_are_corrupt_with_a_one_line_reason(body, words):
    codec = AvroCodec()
    data = single_object_header(codec.fingerprint("app_was_created")) + body
    with pytest.raises(CorruptBody, match=words) as caught:
        codec.decode(data, "app_was_created")
    assert "\n" not in str(caught.value)


def test_a_union_index_out_of_range_is_a_corrupt_body():
    # Given app_was_created bytes whose icon_type (the 8th field, ["null", "string"]) names branch 5
    codec = AvroCodec()
    event = [e for e in sample_events() if e.event_type == "app_was_created"][0]
    schema, fields = CATALOGUE.get("app_was_created").latest.schema, event.model_dump()
    head = b"".join(write(field["type"], fields[field["name"]]) for field in schema["fields"][:7])
    body = write(schema, fields)
    assert body.startswith(head) and body[len(head)] == 2  # the string branch
    data = single_object_header(codec.fingerprint("app_was_created")) + head + zigzag(5) + body[len(head) + 1:]
    # When decoded / Then CorruptBody says which index
    with pytest.raises(CorruptBody, match="ValueError: union index 5 out of range: the schema has 2$"):
        codec.decode(data)


def test_trailing_bytes_are_a_corrupt_body_on_both_paths(fastavro_codec):
    data = app_created() + b"\x00"
    for each in (AvroCodec(), fastavro_codec):
        with pytest.raises(CorruptBody, match="has 1 trailing bytes after the record"):
            each.decode(data)
