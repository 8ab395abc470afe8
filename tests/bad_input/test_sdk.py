"""Bad input at the SDK's doors: ``EventProducer.publish`` and ``add_to_outbox`` refuse it with a
typed ``PublishError`` that says why, before anything is sent or written."""

from __future__ import annotations

import socket
import time

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from dify_events.consumers.breaker import OutageBreaker
from dify_events.consumers.errors import BadHeader
from dify_events.consumers.job import Job, Lane
from dify_events.consumers.pipeline import Decode, Resources
from dify_events.consumers.registry import get
from dify_events.producers import EventProducer, add_to_outbox, create_outbox_table
from dify_events.producers.errors import DeliveryFailed, MessageTooLarge, UnpublishableEvent
from dify_events.producers.headers import build_headers
from dify_events.producers.outbox import event_outbox
from dify_events.schemas import headers as H
from dify_events.schemas.catalogue import CATALOGUE
from dify_events.schemas.codec import AvroCodec
from dify_events.schemas.events import AppWasCreated, MessageWasCreated
from dify_events.schemas.settings import Settings
from tests.bad_input.test_decoder_fuzz import FakeMessage

APP = dict(tenant_id="t1", app_id="a1", mode="chat", name="Support bot", created_by="u1")
BAD_VALUES = dict(tenant_id="t1", app_id="a1", conversation_id="c1", message_id="m1", provider_name="openai",
                  model_name="gpt-4o", message_tokens=3, answer_tokens="many", total_tokens=2 ** 70)


def invalid_event() -> MessageWasCreated:
    """Values the model would refuse, smuggled past it (``model_construct``) as buggy code might."""
    return MessageWasCreated.model_construct(**BAD_VALUES)


@pytest.fixture
def producer(domain_topics):
    with EventProducer(settings=Settings(topic_prefix=domain_topics), topic_prefix=domain_topics) as p:
        yield p


@pytest.mark.parametrize("make, error, words", [
    (lambda: {"app_id": "a1"}, UnpublishableEvent, "takes an event of schemas.events, not dict"),
    (lambda: None, UnpublishableEvent, "not NoneType"),
    (invalid_event, UnpublishableEvent, "does not encode with its schema"),
    (lambda: AppWasCreated(**{**APP, "name": "x" * 1_200_000}), MessageTooLarge, "message.max.bytes"),
], ids=["a-dict", "none", "out-of-range-values", "oversize"])
def test_publish_refuses_bad_events_before_sending_anything(producer, domain_topics, topic_messages, make, error,
                                                            words):
    # When the SDK is given something it cannot publish, waiting or not, or among others
    for wait in (False, True):
        with pytest.raises(error) as raised:
            producer.publish(make(), wait=wait, timeout=5)
        # Then the error says why
        assert words in str(raised.value)
    [outcome] = producer.publish_many([make()], timeout=5)
    assert isinstance(outcome, error) and words in str(outcome)
    # And nothing was sent
    assert producer.flush(10) == 0
    assert topic_messages(domain_topics) == 0


def test_publish_to_an_unreachable_broker_fails_within_its_timeout(kafka_env):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with EventProducer(settings=Settings(bootstrap_servers=f"127.0.0.1:{port}", topic_prefix=kafka_env),
                       topic_prefix=kafka_env) as producer:
        began = time.monotonic()
        with pytest.raises(DeliveryFailed) as raised:
            producer.publish(AppWasCreated(**APP), wait=True, timeout=3)
        assert time.monotonic() - began < 10
        assert raised.value.retriable and "no answer from the broker within 3 s" in str(raised.value)
        producer.close(timeout=0.5)


@pytest.mark.parametrize("make", [lambda: {"app_id": "a1"}, invalid_event], ids=["a-dict", "out-of-range-values"])
def test_add_to_outbox_refuses_bad_events_and_the_transaction_writes_nothing(tmp_path, make):
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    create_outbox_table(engine)
    # When a bad event is added in the application's transaction
    with pytest.raises(UnpublishableEvent), Session(engine) as session, session.begin():
        add_to_outbox(session, AppWasCreated(**APP), topic_prefix="p")
        add_to_outbox(session, make(), topic_prefix="p")
    # Then the transaction rolled back: not even the good event before it is in the outbox
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(event_outbox)).scalar_one() == 0
    engine.dispose()


KEYS = {"255-ascii": "k" * 255, "256-ascii": "k" * 256, "255-accented": "é" * 255, "256-accented": "é" * 256,
        "255-emoji": "\U0001F600" * 255, "lone-surrogate": "ab\ud800"}


def consumer_accepts(key: str) -> bool:
    """Whether a group's Decode step takes the idempotency-key header of this key as written."""
    import dify_events.consumers.handlers  # noqa: F401 - registers the seed's groups

    group = get("site-provisioner")
    event = AppWasCreated(**APP)
    headers = [(n, v) for n, v in build_headers(CATALOGUE.for_event(event), event) if n != H.IDEMPOTENCY_KEY]
    headers.append((H.IDEMPOTENCY_KEY, key.encode("utf-8", "surrogatepass")))
    step = Decode(Resources(group=group, prefix="p", codec=AvroCodec(), breaker=OutageBreaker(group.name)))
    message = FakeMessage("p.app", 0, 0, b"a1", AvroCodec().encode(event), headers)
    job = Job(message, Lane("p.app", 0), 0, headers, b"app_was_created", group.handlers["app_was_created"])
    try:
        step.process(job, call_next=lambda _job: "handled")
    except BadHeader:
        return False
    return True


@pytest.mark.parametrize("key", list(KEYS.values()), ids=list(KEYS))
def test_the_sdk_and_the_outbox_refuse_exactly_the_idempotency_keys_consumers_refuse(tmp_path, key):
    # Given an event and a business idempotency key
    event = AppWasCreated(**APP)
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    create_outbox_table(engine)
    # When the SDK and the outbox are given it
    with EventProducer(settings=Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="p")) as producer:
        try:
            producer.check(event, idempotency_key=key)
            sdk_accepts = True
        except UnpublishableEvent as exc:
            sdk_accepts = False
            assert "idempotency key" in str(exc)
        producer.close(timeout=0.5)
    try:
        with Session(engine) as session, session.begin():
            add_to_outbox(session, event, idempotency_key=key, topic_prefix="p")
        outbox_accepts = True
    except UnpublishableEvent:
        outbox_accepts = False
    engine.dispose()
    # Then both take it exactly when every consumer does
    assert sdk_accepts == outbox_accepts == consumer_accepts(key), (sdk_accepts, outbox_accepts)


def test_an_idempotency_key_consumers_would_refuse_is_never_published(producer, domain_topics, topic_messages):
    for wait in (False, True):
        with pytest.raises(UnpublishableEvent, match="1 to 255 characters"):
            producer.publish(AppWasCreated(**APP), idempotency_key="k" * 300, wait=wait, timeout=5)
    assert producer.flush(10) == 0
    assert topic_messages(domain_topics) == 0
