"""The decoder's door, fuzzed: arbitrary bytes under arbitrary headers go through the consumer's
first steps (the poll loop's pass-over by header, then the pipeline: dead letters, decode, ...)
and never crash the consumer: each is passed over (another group's well-named event type), handled
(a valid event, should one turn up) or dead-lettered to a real dead-letter topic, bytes unchanged."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dify_events.consumers.breaker import OutageBreaker
from dify_events.consumers.job import DEAD_LETTERED, DUPLICATE, HANDLED, Job, Lane
from dify_events.consumers.pipeline import Resources, build
from dify_events.consumers.runner import EVENT_TYPE_NAME
from dify_events.producers.config import producer_config
from dify_events.schemas import headers as H
from dify_events.schemas.codec import AvroCodec
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, codec, read_messages

EXAMPLES = 150


class FakeMessage:
    """What the pipeline reads of a confluent_kafka ``Message``."""

    def __init__(self, topic, partition, offset, key, value, headers):
        self._t, self._p, self._o, self._k, self._v, self._h = topic, partition, offset, key, value, headers

    def topic(self): return self._t
    def partition(self): return self._p
    def offset(self): return self._o
    def key(self): return self._k
    def value(self): return self._v
    def headers(self): return self._h
    def timestamp(self): return (1, 1_700_000_000_000)
    def error(self): return None


VALID = codec.encode(app_event("app-fuzz", 1))
header_names = st.sampled_from([H.EVENT_TYPE, H.EVENT_ID, H.IDEMPOTENCY_KEY, H.OCCURRED_AT, "traceparent",
                                "events-attempt", "x-other"]) | st.text(max_size=20)
header_values = st.none() | st.binary(max_size=64) | st.sampled_from(
    [b"app_was_created", b"tenant_was_created", b"App Was Created", b"", b"\xff\xfe", b"00-bad-trace-01",
     str(uuid.uuid4()).encode(), b"-1", b"99999999999999999999"])
bodies = st.one_of(
    st.binary(max_size=300),                                                        # anything at all
    st.binary(max_size=64).map(lambda b: b"\xC3\x01" + b),                           # the magic, then junk
    st.binary(min_size=8, max_size=8).map(lambda fp: b"\xC3\x01" + fp + VALID[10:]),  # another fingerprint
    st.integers(0, len(VALID)).map(lambda n: VALID[:n]),                             # truncated
    st.tuples(st.integers(10, len(VALID) - 1), st.integers(0, 255)).map(             # one byte changed
        lambda c: VALID[:c[0]] + bytes([c[1]]) + VALID[c[0] + 1:]),
)


def test_arbitrary_bytes_and_headers_never_crash_the_consumer_only_dead_letter(kafka_env, app_topic, group_topics,
                                                                               sqlite_db, dlq_reader):
    # Given the pipeline of a group that handles app_was_created, with its real dead-letter topic
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(database_url=sqlite_db, max_attempts=2, min_backoff_s=0.01,
                                                       max_backoff_s=0.02)
    group_topics(group.name)
    from confluent_kafka import Producer
    producer = Producer(producer_config({"client.id": "fuzz-dlq"}))
    resources = Resources(group=group, prefix=kafka_env, codec=AvroCodec(group.catalogue),
                          breaker=OutageBreaker(group.name), database_url=sqlite_db,
                          dead_letter_producer=lambda: producer)
    chain, steps = build(resources, group.pipeline)
    handlers = {t.encode(): h for t, h in group.handlers.items()}
    lane = Lane(topic, 0)
    outcomes: dict[str, int] = {}
    sent: list[bytes] = []

    # When arbitrary messages go through the poll loop's pass-over and the pipeline
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(value=bodies, headers=st.lists(st.tuples(header_names, header_values), max_size=6),
           labelled=st.booleans(), key=st.none() | st.binary(max_size=20))
    def one_message(value, headers, labelled, key):
        if labelled:  # most of them claim to be this group's event, so that they reach the decoder
            headers = [(H.EVENT_TYPE, b"app_was_created"), *headers]
        offset = len(sent) + sum(outcomes.values())
        event_type = next((v for n, v in headers if n == H.EVENT_TYPE), None)
        handler = handlers.get(event_type) if event_type is not None else None
        if handler is None and event_type is not None and EVENT_TYPE_NAME.match(event_type):
            outcomes["passed"] = outcomes.get("passed", 0) + 1  # the runner passes these over by header
            return
        job = Job(FakeMessage(topic, 0, offset, key, value, headers or None), lane, offset, headers or None,
                  event_type, handler)
        outcome = chain(job)  # Then no exception escapes the pipeline
        assert outcome in (DEAD_LETTERED, HANDLED, DUPLICATE), outcome
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == DEAD_LETTERED:
            sent.append(value)

    try:
        one_message()
        # And every dead letter is on the real dead-letter topic, its bytes unchanged
        assert producer.flush(30) == 0
        letters = read_messages(dlq_reader(group.name), len(sent)) if sent else []
        assert sorted((m.value() or b"") for m in letters) == sorted(sent)
        assert all(dict(m.headers()).get("dlq-error-class") for m in letters)
        print(f"\n[fuzz] {sum(outcomes.values())} messages: {outcomes}; {len(letters)} dead letters read back")
    finally:
        for step in steps:
            step.close()
    assert outcomes.get(DEAD_LETTERED, 0) > EXAMPLES // 3
