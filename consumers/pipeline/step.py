"""The base of every pipeline step, and what steps are given to make their resources from.

A step wraps the rest of the pipeline: ``process(job, call_next)`` does its part, calls
``call_next(job)`` (the next step, the handler at the end) and returns the outcome
(``consumers.job.HANDLED`` / ``DUPLICATE`` / ``DEAD_LETTERED``), or raises. Code before
``call_next`` runs in pipeline order, code after it in reverse, like dramatiq's before/after hooks;
the call-next shape lets a step run the rest more than once (retries) or inside a ``with``
(a transaction, a span). A step that has nothing to do for a group says so with ``active`` and is
left out of the chain, so it costs nothing per message. A step makes what it alone uses (a
database engine, a Kafka producer, a thread) when it is made, so that the runner refuses a group
that cannot work before it joins the cluster, and releases it in ``close()``.

``options`` maps each handler option the step owns to its default. ``ConsumerGroup`` refuses an
option that no step of its pipeline owns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from dify_events.producers.sizes import DEFAULT_MESSAGE_MAX_BYTES

from ..observers import Observers, wrapped

if TYPE_CHECKING:
    from confluent_kafka import Producer

    from dify_events.schemas.codec import AvroCodec

    from ..breaker import OutageBreaker
    from ..group import ConsumerGroup
    from ..job import Job

CallNext = Callable[["Job"], str]


@dataclass
class Counters:
    """Events that happen on worker threads (outcomes are counted by the poll loop)."""

    retries: int = 0
    dead_letters: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


@dataclass
class Resources:
    """What the runner (or ``consumers.testing.GroupHarness``) gives the steps of one group when it
    starts: the group's settings, and what steps share with each other and with the poll loop."""

    group: ConsumerGroup
    prefix: str
    codec: AvroCodec
    breaker: OutageBreaker        # the poll loop pauses while it is open; ``Retries`` feeds it
    workers: int = 1              # worker threads: the idempotency engine's pool is that large, and 2 more
    database_url: str | None = None  # the group's database: ``Idempotency``'s engine
    idempotency_retention: timedelta = timedelta(days=7)
    purge_interval_s: float | None = None  # how often ``Idempotency`` purges older keys; None: never
    dead_letter_producer: Callable[[], Producer] | None = None  # makes ``DeadLetters``' producer
    dead_letter_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES  # the largest letter the producer and the topic take
    counters: Counters = field(default_factory=Counters)
    observers: Observers = Observers.EMPTY  # what watches the group's messages (``consumers.observers``)


class Step:
    """A pipeline step; subclasses override ``process`` and declare ``options``."""

    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, resources: Resources):
        self.resources = resources
        self.group = resources.group

    @property
    def active(self) -> bool:
        """False leaves the step out of this group's chain."""
        return True

    def process(self, job: Job, call_next: CallNext) -> str:
        return call_next(job)

    def chain(self, call_next: CallNext) -> CallNext:
        """The step in front of ``call_next``, as the chain holds it (composed once, when the group starts):
        like an observer's wrap, with ``call_next`` passed positionally (a keyword costs a dict per call)."""
        return wrapped((self.process,), call_next)

    def poll(self) -> None:
        """Serves the callbacks (log lines, delivery reports) of the Kafka clients the step holds;
        the poll loop calls it on every round of a step that overrides it."""

    def close(self) -> None:
        """Releases what the step holds (called once, when the group stops, or when a later step of
        the pipeline could not be made)."""
