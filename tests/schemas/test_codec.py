"""The codec: Avro single-object encoding, schema resolution between versions, clear errors."""

from __future__ import annotations

import io
import json
import shutil
import time
from typing import ClassVar

import avro.io
import avro.schema
import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from dify_events.schemas import headers
from dify_events.schemas.catalogue import AVRO_ROOT, CATALOGUE, Catalogue
from dify_events.schemas.codec import AvroCodec, single_object_header, split_single_object
from dify_events.schemas.conformance import mismatches
from dify_events.schemas.errors import (
    CatalogueError,
    CodecError,
    CorruptBody,
    EventsError,
    EventTypeMismatch,
    InvalidEvent,
    NotSingleObjectEncoded,
    UnencodableEvent,
    UnknownEventType,
    UnknownSchema,
)
from dify_events.schemas.events import ALL_EVENTS, Event, Id, MessageWasCreated, TenantWasCreated, TenantWasUpdated
from dify_events.schemas.samples import TENANT, sample_events

codec = AvroCodec()


def consume(consumer, count: int, timeout_s: float = 30.0) -> list:
    messages, deadline = [], time.monotonic() + timeout_s
    while len(messages) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        messages.append(msg)
    assert len(messages) == count, f"consumed {len(messages)} of {count} messages in {timeout_s}s"
    return messages


def produce(producer, topic: str, key: str, value: bytes, event_type: str) -> None:
    producer.produce(topic, key=key.encode(), value=value, headers={headers.EVENT_TYPE: event_type.encode()})


# -- through a real broker --------------------------------------------------------------------
def test_all_ten_events_travel_through_kafka_and_decode_equal(kafka_env, topic_factory, producer_factory,
                                                              consumer_factory, group_factory):
    # Given the five domain topics under a unique prefix, and one event of each type
    prefix = kafka_env
    for topic in CATALOGUE.topics(prefix):
        topic_factory(topic, partitions=3)
    events = sample_events()
    # When each is encoded and produced to its domain topic, keyed by its key field
    producer = producer_factory()
    for event in events:
        spec = CATALOGUE.for_event(event)
        produce(producer, spec.topic(prefix), spec.key_of(event), codec.encode(event), event.event_type)
    assert producer.flush(30) == 0
    # And a consumer reads every domain topic
    consumer = consumer_factory(group_factory(), CATALOGUE.topics(prefix))
    messages = consume(consumer, len(events))
    # Then every message decodes to the event that was sent, from its own topic and key
    by_id = {e.event_id: e for e in events}
    for msg in messages:
        event_type = dict(msg.headers())[headers.EVENT_TYPE].decode()
        decoded = codec.decode(msg.value(), event_type)
        original = by_id.pop(decoded.event_id)
        assert decoded == original and type(decoded) is type(original)
        assert msg.topic() == f"{prefix}.{original.domain}"
        assert msg.key().decode() == original.key()
    assert by_id == {}


class MessageWasCreatedV1(Event):
    """The model of a consumer written before message_was_created v2: it knows v1's fields only."""

    event_type: ClassVar[str] = "message_was_created"
    domain: ClassVar[str] = "message"
    key_field: ClassVar[str] = "conversation_id"
    schema_version: ClassVar[int | None] = 1

    message_id: Id
    conversation_id: Id
    app_id: Id
    provider_name: Id
    model_name: Id
    message_tokens: int
    answer_tokens: int
    total_tokens: int


def models_with(model: type[Event]) -> list[type[Event]]:
    return [m for m in ALL_EVENTS if m.event_type != model.event_type] + [model]


@pytest.fixture
def v1_codec() -> AvroCodec:
    """The codec of a process whose message_was_created model is v1, with every schema file shipped
    (the folder is the registry: it has v2's file, so v2 bytes can be resolved to v1)."""
    return AvroCodec(Catalogue.load(AVRO_ROOT, models_with(MessageWasCreatedV1)))


def v1_message() -> MessageWasCreatedV1:
    return MessageWasCreatedV1(tenant_id=TENANT, message_id="msg-1", conversation_id="conv-1", app_id="app-1",
                               provider_name="anthropic", model_name="claude", message_tokens=10,
                               answer_tokens=20, total_tokens=30)


def test_a_model_pinned_to_v1_agrees_with_v1_and_writes_v1(v1_codec):
    spec = v1_codec.catalogue.get("message_was_created")
    assert spec.current.version == 1 and spec.latest.version == 3 and spec.pinned == 1
    assert mismatches(MessageWasCreatedV1, spec.current.raw) == []
    assert v1_codec.fingerprint("message_was_created") == spec.version(1).fingerprint


def test_v1_written_is_read_by_a_v2_consumer_through_kafka(kafka_env, topic_factory, producer_factory,
                                                           consumer_factory, group_factory, v1_codec):
    # Given an old producer that writes message_was_created with schema v1
    topic = topic_factory(f"{kafka_env}.message")
    old = v1_message()
    data = v1_codec.encode(old)
    assert data[2:10] == CATALOGUE.get("message_was_created").version(1).fingerprint
    producer = producer_factory()
    produce(producer, topic, old.conversation_id, data, old.event_type)
    assert producer.flush(30) == 0
    # When today's consumer (latest: v3) reads it
    (msg,) = consume(consumer_factory(group_factory(), [topic]), 1)
    event = codec.decode(msg.value(), "message_was_created")
    # Then it gets a v2 event: v1's values, and v2's defaults for the fields v1 did not have
    assert isinstance(event, MessageWasCreated)
    newer = {"latency_ms", "invoke_from", "app_mode", "quota_type", "quota_unit"}
    assert event.model_dump(exclude=newer) == old.model_dump()
    assert event.latency_ms is None and event.invoke_from == "unknown" and event.quota_type is None


def test_v2_written_is_read_by_a_v1_consumer_through_kafka(kafka_env, topic_factory, producer_factory,
                                                           consumer_factory, group_factory, v1_codec):
    # Given today's producer writing message_was_created with schema v3, new fields set
    topic = topic_factory(f"{kafka_env}.message")
    new = [e for e in sample_events() if isinstance(e, MessageWasCreated)][0]
    assert new.latency_ms is not None
    producer = producer_factory()
    produce(producer, topic, new.conversation_id, codec.encode(new), new.event_type)
    assert producer.flush(30) == 0
    # When a consumer whose model knows only v1 reads it
    (msg,) = consume(consumer_factory(group_factory(), [topic]), 1)
    event = v1_codec.decode(msg.value(), "message_was_created")
    # Then it gets its own v1 model, v2's new fields skipped
    assert type(event) is MessageWasCreatedV1
    newer = {"latency_ms", "invoke_from", "app_mode", "quota_type", "quota_unit"}
    assert event.model_dump() == new.model_dump(exclude=newer)


def test_a_process_without_the_v2_file_cannot_read_v2_bytes(tmp_path):
    # Given a process deployed before v2's file existed (its folder stops at v1)
    root = tmp_path / "avro"
    shutil.copytree(AVRO_ROOT, root)
    for version in (2, 3):
        (root / "message" / f"message_was_created.v{version}.avsc").unlink()
    old = AvroCodec(Catalogue.load(root, models_with(MessageWasCreatedV1)))
    # When it meets bytes written with v2
    data = codec.encode(sample_events()[7])
    # Then it cannot resolve them (no writer schema): UnknownSchema names the fingerprint, so the
    # consumer dead-letters the message, to re-drive after the upgrade. Hence the rollout rule:
    # ship a new version's file to every consumer before any producer writes it.
    with pytest.raises(UnknownSchema, match=data[2:10].hex()):
        old.decode(data, "message_was_created")
    message = v1_message()
    assert old.decode(old.encode(message)) == message


def test_a_pin_to_a_missing_version_does_not_load():
    class Pinned(MessageWasCreatedV1):
        schema_version: ClassVar[int | None] = 7

    with pytest.raises(CatalogueError, match="pinned to v7"):
        Catalogue.load(AVRO_ROOT, models_with(Pinned))


# -- an independent Avro implementation -------------------------------------------------------
@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.event_type)
def test_the_reference_avro_package_reads_our_bytes(event):
    # Given an event encoded by our codec
    data = codec.encode(event)
    fp, body = split_single_object(data)
    # When the reference implementation (pip `avro`) reads the body with the writer schema
    writer = avro.schema.parse(json.dumps(CATALOGUE.by_fingerprint(fp)[1].raw))
    record = avro.io.DatumReader(writer).read(avro.io.BinaryDecoder(io.BytesIO(bytes(body))))
    # Then it finds the same event
    assert type(event).model_validate(record) == event


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.event_type)
def test_our_codec_reads_what_the_reference_avro_package_writes(event):
    # Given the same event written by the reference implementation, behind our header
    spec = CATALOGUE.for_event(event)
    buf = io.BytesIO()
    buf.write(single_object_header(spec.latest.fingerprint))
    writer = avro.schema.parse(json.dumps(spec.latest.raw))
    datum = json.loads(json.dumps(event.model_dump(exclude={"occurred_at"}), ensure_ascii=False))
    avro.io.DatumWriter(writer).write(datum | {"occurred_at": event.occurred_at}, avro.io.BinaryEncoder(buf))
    # When our codec decodes it / Then it is the same event, byte for byte the same encoding
    assert codec.decode(buf.getvalue()) == event
    assert buf.getvalue() == codec.encode(event)


# -- the header -------------------------------------------------------------------------------
def test_the_header_is_the_marker_and_the_little_endian_fingerprint():
    event = sample_events()[0]
    data = codec.encode(event)
    fp = codec.fingerprint(event.event_type)
    assert data[:10] == b"\xc3\x01" + fp == single_object_header(fp)
    assert split_single_object(data)[0] == fp
    assert bytes(split_single_object(data)[1]) == data[10:]
    assert headers.content_type(fp) == f"application/vnd.apache.avro+binary; fingerprint={fp.hex()}"
    with pytest.raises(ValueError, match="8 bytes"):
        single_object_header(b"\x01\x02")


# -- bad bytes: one error type each, saying which ---------------------------------------------
def valid() -> bytes:
    return codec.encode(sample_events()[8])  # tenant_was_created


def tenant_header() -> bytes:
    return single_object_header(codec.fingerprint("tenant_was_created"))


@pytest.mark.parametrize(("data", "error", "words"), [
    (b"", NotSingleObjectEncoded, "got 0 bytes"),
    (b"\xc3\x01\x00\x01", NotSingleObjectEncoded, "got 4 bytes starting c3010001"),
    (b"\xc3\x02" + bytes(20), NotSingleObjectEncoded, "expected the marker c301"),
    (b"\x00\x00\x00\x00\x07" + bytes(20), NotSingleObjectEncoded, "starting 00000000070000"),  # Confluent framing
    (b'{"tenant_id": "t"}', NotSingleObjectEncoded, "marker"),
    (b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + b"\x02", UnknownSchema, "0123456789abcdef"),
    (valid()[:-4], CorruptBody, "tenant_was_created body"),
    (valid()[:11], CorruptBody, "does not decode"),
    (valid() + b"\x00\x00", CorruptBody, "2 trailing bytes"),
    (tenant_header() + b"\x04\xff\xfe", CorruptBody, "UnicodeDecodeError"),
    (tenant_header() + b"\x01" + bytes(30), CorruptBody, "does not decode"),  # a negative string length
])
def test_bad_bytes_raise_their_own_error(data, error, words):
    # Given bytes that are not a valid event in one way
    # When decoded / Then the error's type and message say which way
    with pytest.raises(error, match=words) as caught:
        codec.decode(data)
    assert isinstance(caught.value, CodecError) and isinstance(caught.value, EventsError)


def test_an_unexpected_event_type_is_a_mismatch():
    # Given tenant_was_created bytes, where the header claimed app_was_created
    with pytest.raises(EventTypeMismatch, match="expected event type app_was_created.*tenant_was_created"):
        codec.decode(valid(), "app_was_created")


def message_with(values: dict) -> bytes:
    """A message_was_created body that is valid Avro, with ``values`` that may break the model's rules."""
    spec = CATALOGUE.get("message_was_created")
    buf = io.BytesIO(single_object_header(spec.latest.fingerprint))
    buf.seek(10)
    schemaless_writer(buf, spec.latest.schema, sample_events()[7].model_dump() | values)
    return buf.getvalue()


def test_valid_avro_with_invalid_values_is_an_invalid_event():
    # Given a body that is valid Avro but breaks the model's rules (negative tokens, empty tenant)
    data = message_with({"message_tokens": -5, "tenant_id": ""})
    # When decoded / Then InvalidEvent carries pydantic's message, naming the fields
    with pytest.raises(InvalidEvent, match="message_was_created") as caught:
        codec.decode(data)
    assert "message_tokens" in str(caught.value) and "tenant_id" in str(caught.value)


def test_an_invalid_events_message_names_the_fields_but_not_their_values():
    # Given a valid Avro body whose values break the model's rules, one of them a distinctive string
    data = message_with({"message_tokens": -987654, "event_id": "not-a-uuid-b0dy"})
    # When decoded / Then the message lists each error as "field: reason", without the input values
    # (the message goes to logs and dead-letter headers; the values are the event's data)
    with pytest.raises(InvalidEvent) as caught:
        codec.decode(data)
    message = str(caught.value)
    assert "not-a-uuid-b0dy" not in message and "987654" not in message and "input_value" not in message
    assert "is not valid: 2 errors: event_id: event_id must be a UUID" in message
    assert "message_tokens: Input should be greater than or equal to 0" in message


def test_values_the_schema_cannot_hold_do_not_encode():
    # Given an event changed without validation (model_copy skips it) to hold a wrong value
    event = sample_events()[7].model_copy(update={"total_tokens": "many"})
    # When encoded / Then UnencodableEvent names the event
    with pytest.raises(UnencodableEvent, match=f"message_was_created event {event.event_id}"):
        codec.encode(event)


def test_encoding_an_event_the_catalogue_does_not_know_fails():
    class SomethingHappened(Event):
        event_type: ClassVar[str] = "something_happened"
        domain: ClassVar[str] = "app"
        key_field: ClassVar[str] = "tenant_id"

    with pytest.raises(UnknownEventType, match="something_happened"):
        codec.encode(SomethingHappened(tenant_id=TENANT))
    with pytest.raises(UnknownEventType):
        codec.fingerprint("something_happened")


# -- any valid event round-trips --------------------------------------------------------------
ids = st.text(min_size=1, max_size=40)
counts = st.integers(min_value=0, max_value=2**63 - 1)


@settings(max_examples=150, deadline=None)
@given(tenant=ids, conversation=ids, provider=ids, tokens=st.tuples(counts, counts, counts),
       latency=st.none() | counts, invoke_from=st.text(max_size=20), when=st.datetimes(
           min_value=__import__("datetime").datetime(1971, 1, 1), max_value=__import__("datetime").datetime(2200, 1, 1),
           timezones=st.just(__import__("datetime").UTC)))
def test_any_valid_message_event_round_trips(tenant, conversation, provider, tokens, latency, invoke_from, when):
    event = MessageWasCreated(tenant_id=tenant, message_id="m", conversation_id=conversation, app_id="a",
                              provider_name=provider, model_name="m", message_tokens=tokens[0],
                              answer_tokens=tokens[1], total_tokens=tokens[2], latency_ms=latency,
                              invoke_from=invoke_from, occurred_at=when)
    assert codec.decode(codec.encode(event), "message_was_created") == event


@settings(max_examples=100, deadline=None)
@given(config=st.none() | st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=5),
       name=st.none() | st.text(max_size=30))
def test_any_valid_tenant_update_round_trips(config, name):
    event = TenantWasUpdated(tenant_id=TENANT, tenant_name=name, custom_config=config)
    assert codec.decode(codec.encode(event)) == event


def test_decoding_returns_a_new_equal_event_every_time():
    event = TenantWasCreated(tenant_id=TENANT, tenant_name="Acme")
    data = codec.encode(event)
    assert codec.decode(data) == codec.decode(memoryview(data)) == codec.decode(bytearray(data)) == event
