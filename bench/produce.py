"""1. Produce: ``EventProducer.publish`` against a hand-written confluent-kafka + fastavro loop
doing the same work, and against producing pre-encoded bytes (librdkafka's ceiling here).

All three get the same librdkafka configuration (the platform's defaults: ``acks=all``,
idempotence, lz4, ``linger.ms=5``), the same events (the ten sample types in turn, over the five
domain topics, three partitions each), and the clock stops only when ``flush()`` says every event
was acknowledged. Per event the SDK and the loop both:

- **validate**: build the pydantic event from a dict of fields;
- **encode**: Avro single-object encoding (marker, fingerprint, ``schemaless_writer``);
- **headers**: event type, event id, idempotency key, occurred-at, content type;
- **produce** to the domain topic, keyed by the aggregate id, delivery reports served by
  ``poll(0)`` every 64 events.

The SDK also checks for an active trace, looks the route up per event type, and reports every
failure. "pre-encoded bytes" produces the very values and headers the loop would, built before the
clock starts: what is left is librdkafka and one Python call per event. Runs take turns (SDK,
loop, bytes, SDK, ...) so a busy machine slows them alike.
"""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta

from confluent_kafka import Producer
from fastavro import schemaless_writer

from dify_events.producers.config import producer_config
from dify_events.producers.producer import EventProducer
from dify_events.schemas import headers as names
from dify_events.schemas.catalogue import CATALOGUE
from dify_events.schemas.samples import sample_events
from dify_events.schemas.settings import Settings

from .common import Row

POLL_EVERY = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

Run = tuple[float, float, float]  # (events/s until flush() returned, microseconds per event in the loop
#                                   alone, CPU microseconds per event of the whole process, librdkafka's too)


def field_dicts(count: int) -> list[tuple[type, dict]]:
    """(model, fields) of ``count`` events, the ten sample types in turn, each with its own id."""
    samples = sample_events()
    out = []
    for i in range(count):
        sample = samples[i % len(samples)]
        out.append((type(sample), sample.model_dump(exclude={"event_id", "occurred_at"})))
    return out


class HandLoop:
    """What a careful engineer writes without the SDK: per-type values computed once."""

    def __init__(self, conf: dict, prefix: str):
        self.errors = 0
        self.producer = Producer({**conf, "on_delivery": self._on_delivery})
        self.routes = {}
        for spec in CATALOGUE:
            fp = spec.latest.fingerprint
            self.routes[spec.model] = (spec.topic(prefix), spec.latest.schema, b"\xc3\x01" + fp, spec.key_field,
                                       (names.EVENT_TYPE, spec.event_type.encode()),
                                       (names.CONTENT_TYPE, names.content_type(fp).encode()))

    def _on_delivery(self, err, msg):
        if err is not None:
            self.errors += 1

    def prepare(self, event) -> tuple[str, bytes, str, list]:
        topic, schema, prefix, key_field, type_header, content_type = self.routes[type(event)]
        buf = io.BytesIO()
        buf.write(prefix)
        schemaless_writer(buf, schema, event.model_dump())
        event_id = event.event_id.encode()
        headers = [type_header, (names.EVENT_ID, event_id), (names.IDEMPOTENCY_KEY, event_id),
                   (names.OCCURRED_AT, b"%d" % ((event.occurred_at - _EPOCH) // _MS)), content_type]
        return topic, buf.getvalue(), getattr(event, key_field), headers

    def publish(self, event) -> None:
        topic, value, key, headers = self.prepare(event)
        self.producer.produce(topic, value, key, headers=headers)


def run_hand(loop: HandLoop, work, prebuilt: bool = False) -> Run:
    producer, publish = loop.producer, loop.publish
    cpu = time.process_time()
    start = time.perf_counter()
    for i, item in enumerate(work):
        publish(item if prebuilt else item[0](**item[1]))
        if i % POLL_EVERY == 0:
            producer.poll(0)
    handed = time.perf_counter()
    assert producer.flush(120) == 0 and loop.errors == 0, "the hand-written loop did not deliver everything"
    return (len(work) / (time.perf_counter() - start), (handed - start) / len(work) * 1e6,
            (time.process_time() - cpu) / len(work) * 1e6)


def run_bytes(loop: HandLoop, encoded: list[tuple[str, bytes, str, list]]) -> Run:
    producer = loop.producer
    produce, poll = producer.produce, producer.poll
    cpu = time.process_time()
    start = time.perf_counter()
    for i, (topic, value, key, headers) in enumerate(encoded):
        produce(topic, value, key, headers=headers)
        if i % POLL_EVERY == 0:
            poll(0)
    handed = time.perf_counter()
    assert producer.flush(120) == 0 and loop.errors == 0, "pre-encoded bytes were not all delivered"
    return (len(encoded) / (time.perf_counter() - start), (handed - start) / len(encoded) * 1e6,
            (time.process_time() - cpu) / len(encoded) * 1e6)


def run_sdk(producer: EventProducer, work, prebuilt: bool = False) -> Run:
    publish = producer.publish
    cpu = time.process_time()
    start = time.perf_counter()
    if prebuilt:
        for event in work:
            publish(event)
    else:
        for model, fields in work:
            publish(model(**fields))
    handed = time.perf_counter()
    assert producer.flush(120) == 0, "the SDK did not deliver everything"
    return (len(work) / (time.perf_counter() - start), (handed - start) / len(work) * 1e6,
            (time.process_time() - cpu) / len(work) * 1e6)


def section(bootstrap: str, topics, *, events: int, reps: int, log=print) -> list[Row]:
    prefix = f"{topics.prefix}p"
    settings = Settings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    conf = producer_config(settings=settings)
    topics.create(CATALOGUE.topics(prefix), 3)
    errors: list = []
    work = field_dicts(events)
    hand = HandLoop(conf, prefix)
    encoded = [hand.prepare(model(**fields)) for model, fields in work]
    sdk = EventProducer(settings=settings, on_error=errors.append)
    warm = work[:2000]  # connections, metadata, first-call costs
    run_hand(hand, warm)
    run_sdk(sdk, warm)
    run_bytes(hand, encoded[:2000])
    runs: dict[str, list[Run]] = {"sdk": [], "hand": [], "bytes": []}
    for rep in range(reps):
        runs["sdk"].append(run_sdk(sdk, work))
        runs["hand"].append(run_hand(hand, work))
        runs["bytes"].append(run_bytes(hand, encoded))
        log(f"  produce rep {rep + 1}/{reps}: " + ", ".join(f"{k} {v[-1][0]:,.0f}/s" for k, v in runs.items()))
    sdk.close()
    hand.producer.flush(30)
    assert not errors, errors[:3]

    def row(name: str, key: str, note: str) -> Row:
        def median(i: int) -> float:
            return sorted(run[i] for run in runs[key])[len(runs[key]) // 2]

        return Row("produce", name, "ev/s", [run[0] for run in runs[key]], note=note,
                   extra={"us_per_event_in_loop": median(1), "cpu_us": median(2)})

    settings_note = (f"acks={conf['acks']}, idempotent, {conf['compression.type']}, linger.ms={conf['linger.ms']}; "
                     f"{events:,} events/run, clock stops after flush()")
    sdk_row = row("EventProducer.publish (validate, encode, headers)", "sdk", settings_note)
    hand_row = row("hand-written confluent-kafka + fastavro loop, same work", "hand", "baseline")
    bytes_row = row("pre-encoded bytes, produce() only (librdkafka ceiling)", "bytes", "")
    assert sdk_row.median is not None and hand_row.median is not None and bytes_row.median is not None  # all ran
    sdk_row.ratio, sdk_row.ratio_to = sdk_row.median / hand_row.median, "hand loop"
    hand_row.ratio, hand_row.ratio_to = 1.0, "hand loop"
    bytes_row.ratio, bytes_row.ratio_to = bytes_row.median / hand_row.median, "hand loop"
    sdk_row.extra["of_ceiling"] = sdk_row.median / bytes_row.median
    return [sdk_row, hand_row, bytes_row]
