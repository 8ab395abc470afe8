"""One fetched message on its way through the pipeline, and the partition it belongs to."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .offsets import PartitionOffsets

if TYPE_CHECKING:
    from confluent_kafka import Message
    from sqlalchemy.orm import Session

    from dify_events.schemas.events import Event

    from .context import OpensSession
    from .group import Handler

# What became of a message. Every outcome but ABANDONED finishes its offset.
HANDLED = "handled"              # the handler ran and its transaction committed
DUPLICATE = "duplicate"          # the idempotency key was claimed before: skipped
DEAD_LETTERED = "dead_lettered"  # published to the dead-letter topic, and the broker acknowledged it
PASSED = "passed"                # an event type the group does not handle: passed over by header
ABANDONED = "abandoned"          # the partition was revoked or the consumer stopped first: not done
NOT_DEAD_LETTERED = "not_dead_lettered"  # failed for good, and no dead letter of it fits the topic: passed over


class Abandoned(BaseException):
    """Raised inside the pipeline when the message's partition is revoked or the consumer stops
    while the message waits (backoff, an outage pause, a dead letter's retry). The message is left
    unfinished, so its offset is not committed and the next owner of the partition handles it.
    A ``BaseException``, so that no handler's ``except Exception`` swallows it."""


class HandOff(BaseException):
    """Raised inside the pipeline of a job run on the poll loop's thread (``Job.inline``) that must wait
    (a retry's backoff, an outage, a dead letter's acknowledgement): the runner hands the job to a worker,
    which runs its pipeline again with ``failure`` (the first attempt's exception, if one) as attempt 1.
    A ``BaseException``, so that no handler's or step's ``except Exception`` takes it for a failure."""

    def __init__(self, failure: Exception | None = None):
        super().__init__(failure)
        self.failure = failure


class Lane:
    """One assigned partition. A new ``Lane`` per assignment, so completions of jobs fetched under
    an earlier assignment are recognised and ignored."""

    __slots__ = ("topic", "partition", "revoked", "stop_waiting", "outstanding", "offsets", "committed")

    def __init__(self, topic: str, partition: int):
        self.topic = topic
        self.partition = partition
        self.revoked = False                     # queued jobs of this lane are skipped
        self.stop_waiting = threading.Event()    # backoff and pause waits end early (revoke, shutdown)
        self.outstanding = 0                     # jobs dispatched and not yet reported (poll thread only)
        self.offsets: PartitionOffsets = PartitionOffsets()  # the runner gives it the tracker's
        self.committed: int | None = None        # the group's committed offset at assignment, once asked (lag)

    def sleep(self, seconds: float) -> None:
        """Waits ``seconds`` unless told to stop waiting, which abandons the message."""
        if self.stop_waiting.wait(seconds):
            raise Abandoned(f"{self.topic}[{self.partition}] stopped waiting")

    def __repr__(self) -> str:
        return f"Lane({self.topic}[{self.partition}])"


class Job:
    """Mutable per-message state the steps read and fill in."""

    __slots__ = ("message", "lane", "offset", "raw_headers", "raw_event_type", "handler", "headers", "event",
                 "idempotency_key", "reprocess", "prior_attempts", "attempts", "session", "span", "solo",
                 "first_failure", "together", "inline")

    def __init__(self, message: Message, lane: Lane, offset: int, raw_headers: list[tuple[str, bytes]] | None,
                 raw_event_type: bytes | None, handler: Handler | None):
        self.message = message
        self.lane = lane
        self.offset = offset
        self.raw_headers = raw_headers
        self.raw_event_type = raw_event_type
        self.handler = handler
        self.headers: dict[str, bytes] = {}
        self.event: Event | None = None
        self.idempotency_key: str | None = None
        self.reprocess = False
        self.prior_attempts = 0   # attempts made before this delivery (events-attempt header)
        self.attempts = 0         # attempts made in this delivery
        self.session: Session | OpensSession | None = None
        self.span: Any = None
        self.solo = False         # runs alone (per-event path), never in a batch: it left one
        self.first_failure: Exception | None = None  # a failed attempt (a batch's, inline), Retries' attempt 1
        self.together: list[Job] | None = None  # a batch handler's call in a batch: its jobs, this one first
        self.inline = False       # on the poll loop's thread: what must wait raises HandOff (``GroupRunner``)

    @property
    def topic(self) -> str:
        return self.lane.topic

    @property
    def partition(self) -> int:
        return self.lane.partition

    def where(self) -> str:
        return f"{self.lane.topic}[{self.lane.partition}]@{self.offset}"

    def __repr__(self) -> str:
        return f"Job({self.where()}, {self.raw_event_type!r})"
