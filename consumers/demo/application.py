"""Plays a workload as Dify's application would, against a real database and Kafka.

A ``Change`` via the outbox: its rows and one ``event_outbox`` row per event in one transaction
(Dify's calls through ``producers.signals`` with ``session=``, other events with
``add_to_outbox``); the ``Relay`` thread (an ``OutboxRelay``) publishes them after the commit. A
``Change`` via the SDK: its rows in one transaction, then, once it committed, Dify's calls through
the signals (other events with ``EventProducer.publish``). A ``Poison``: its bytes produced
straight onto the domain topic by a plain confluent_kafka ``Producer``, past the SDK and its
schemas.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from itertools import groupby

from confluent_kafka import Producer
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.orm import Session

from dify_events.producers import EventProducer, OutboxRelay, PublishError, add_to_outbox
from dify_events.producers.outbox import event_outbox
from dify_events.producers.signals import SIGNALS

from .workload import OUTBOX, SDK, Change, Poison

log = logging.getLogger("consumers.demo.application")
AGAIN = "again"  # the channel of the second pass's events in ``published``


class Application:
    """Writes the application's rows and publishes its events. ``published`` counts events per
    ``(event type, channel)`` once handed over (the SDK) or committed to the outbox."""

    def __init__(self, engine: Engine, producer: EventProducer, raw_producer: Producer, *, topic_prefix: str,
                 reader: Engine | None = None):
        self.engine = engine
        self.reader = reader or engine  # for counting: on SQLite, `engine` takes the write lock to read
        self.producer = producer
        self.raw_producer = raw_producer
        self.topic_prefix = topic_prefix
        self.published: Counter[tuple[str, str]] = Counter()
        self.poisoned = 0
        self.errors: list[PublishError] = []
        self._lock = threading.Lock()

    def on_error(self, error: PublishError) -> None:
        """The SDK's report of an event the broker did not take (from its delivery thread)."""
        with self._lock:
            self.errors.append(error)

    def play(self, step: Change | Poison) -> None:
        """One application transaction (rows, and outbox rows for ``OUTBOX``), then the SDK's
        publishing for ``SDK``; or a poison message."""
        if isinstance(step, Poison):
            self.inject(step)
            return
        with Session(self.engine) as session, session.begin():
            for (model, _), rows in groupby(step.inserts, key=lambda i: (i.model, tuple(sorted(i.values)))):
                session.execute(insert(model), [row.values for row in rows])
            for change in step.updates:
                session.execute(update(change.model).where(change.model.id == change.id).values(**change.values))
            for gone in step.deletes:
                session.execute(delete(gone.model).where(gone.model.id == gone.id))
            if step.via == OUTBOX:
                for call in step.calls:  # Dify's call, into the outbox in this transaction
                    SIGNALS[call.site.signal].send(call.sender, session=session, topic_prefix=self.topic_prefix,
                                                   **call.kwargs)
                for event in step.direct_events:
                    add_to_outbox(session, event, topic_prefix=self.topic_prefix)
        if step.via == SDK:
            for call in step.calls:  # Dify's call, after the commit, as Dify sends it
                SIGNALS[call.site.signal].send(call.sender, producer=self.producer, **call.kwargs)
            for event in step.direct_events:
                self.producer.publish(event)
        for event in step.events:
            self.published[(event.event_type, step.via)] += 1

    def play_again(self, step: Change | Poison) -> None:
        """The step's messages once more, the rows left alone: its events through the SDK with their
        ids unchanged (what a publisher retrying after a lost acknowledgement sends), or its poison."""
        if isinstance(step, Poison):
            self.inject(step)
            return
        for event in step.events:
            self.producer.publish(event)
            self.published[(event.event_type, AGAIN)] += 1

    def inject(self, poison: Poison) -> None:
        topic = f"{self.topic_prefix}.{poison.domain}"
        self.raw_producer.produce(topic, poison.value, poison.key, headers=list(poison.headers) or None)
        self.raw_producer.poll(0)
        self.poisoned += 1

    def flush(self, timeout_s: float = 60.0) -> int:
        """Waits for the broker's answers to everything handed over; returns how many are missing."""
        return self.producer.flush(timeout_s) + self.raw_producer.flush(timeout_s)

    def outbox_pending(self) -> int:
        with self.reader.connect() as conn:
            return conn.execute(select(func.count()).select_from(event_outbox)
                                .where(event_outbox.c.sent_at.is_(None))).scalar_one()


class Relay:
    """The outbox relay on a thread of this process, as an application would run it beside itself."""

    def __init__(self, engine: Engine, producer: EventProducer, *, poll_interval_s: float = 0.1):
        self.relay = OutboxRelay(engine, producer, batch_size=500, poll_interval_s=poll_interval_s)
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-outbox-relay", daemon=True)

    @property
    def sent(self) -> int:
        return self.relay.sent_total

    def start(self) -> Relay:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.relay.run(self._stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the demo
            log.exception("the outbox relay stopped")
            self.failure = exc

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        self.relay.close()
