"""Copies messages into a group's private retry topic: the one way recovery sends anything.

Only the group whose retry topic it is reads it (the runtime subscribes each group to its own), so
a copy reaches that group and no other. The key and value bytes are copied unchanged, so a copy
lands on the retry partition of its key and per-key order holds among copies.

Plain copies (``events replay --copy``) use the platform's idempotent producer: a copy run that
dies half-way is run again, and the idempotency keys skip what the group already handled.
Transactional copies (``events dlq redrive``) put each batch of copies and the records that say
they were sent (the redrive ledger) in one Kafka transaction: both are visible, or neither is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Producer

from dify_events.producers.config import producer_config
from dify_events.schemas.settings import Settings

from .errors import CopyFailed

log = logging.getLogger("consumers.recovery")

Headers = list[tuple[str, bytes | None]]
BATCH_MESSAGES = 500      # copies per transaction
BATCH_SECONDS = 1.0       # and at most this long between commits (slow --rate)
TIMEOUT_S = 60.0
TRANSACTION_TIMEOUT_MS = 180_000
FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


@dataclass
class Copied:
    """What a copy run did."""

    sent: int = 0     # acknowledged by the broker (transactional: committed)
    failed: int = 0   # not acknowledged


class Copier:
    """``send(key, value, headers)`` to ``target``; ``close()`` waits for the last acknowledgements.

    ``rate``: at most this many copies per second. ``transactional_id``: commit copies in
    transactions (with ``also``'s records, see ``send``); starting a second copier with the same id
    fences the first, so two redrives of one group never interleave.
    """

    def __init__(self, settings: Settings, target: str, *, client_id: str, transactional_id: str | None = None,
                 rate: float | None = None):
        self.target = target
        self.rate = rate
        self.result = Copied()
        self.transactional = transactional_id is not None
        self._fatal: KafkaError | None = None  # the error that ended the producer (a fence), from error_cb
        overrides: dict[str, object] = {"client.id": client_id, "logger": log, "error_cb": self._on_error}
        if transactional_id is not None:
            overrides["transactional.id"] = transactional_id
            # must be at least the producer's delivery.timeout.ms (120 s); the broker allows up to 15 min
            overrides["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
        try:
            self._producer = Producer(producer_config(overrides, settings))
        except KafkaException as exc:
            raise CopyFailed(f"the producer cannot be created: {exc.args[0].str()} (check the kafka settings)") from exc
        self._in_batch = 0
        self._batch_started = 0.0
        self._started = time.monotonic()
        self._count = 0
        self._errors: list[str] = []
        if self.transactional:
            try:
                self._producer.init_transactions(TIMEOUT_S)
            except KafkaException as exc:
                raise CopyFailed(f"could not start a transaction on the cluster ({exc.args[0].str()}); the "
                                 "cluster must allow transactions (transaction.state.log.* settings, and the "
                                 "TransactionalId ACL on secured clusters)") from exc

    # -- sending ------------------------------------------------------------------------------
    def send(self, key: bytes | None, value: bytes | None, headers: Headers,
             also: Sequence[tuple[str, bytes, bytes]] = ()) -> None:
        """Copies one message; ``also``: ``(topic, key, value)`` records that go in the same
        transaction (transactional copiers only)."""
        try:
            self._pace()
            if self.transactional and self._in_batch == 0:
                self._producer.begin_transaction()
                self._batch_started = time.monotonic()
            self._produce(self.target, key, value, headers, counted=True)
            for topic, k, v in also:
                self._produce(topic, k, v, None, counted=False)
        except KafkaException as exc:  # a transactional producer fenced meanwhile fails any call
            self.result.failed += self._in_batch
            self._in_batch = 0
            raise self._failure(exc.args[0], "copying") from exc
        self._in_batch += 1
        self._count += 1
        if self.transactional and (self._in_batch >= BATCH_MESSAGES
                                   or time.monotonic() - self._batch_started >= BATCH_SECONDS):
            self._commit()

    def close(self) -> Copied:
        """Commits (or flushes) what is pending; raises ``CopyFailed`` if anything was not acknowledged."""
        if self.transactional:
            if self._in_batch:
                self._commit()
        else:
            left = self._producer.flush(TIMEOUT_S)
            self.result.failed += left
            self._producer.poll(0)
        if self.result.failed:
            raise CopyFailed(f"{self.result.failed} of {self._count} copies to {self.target} were not acknowledged "
                             f"({'; '.join(sorted(set(self._errors))[:3]) or 'no answer in time'}); "
                             f"{self.result.sent} were. Run the command again: what was copied is recorded or "
                             "skipped by the idempotency keys")
        return self.result

    def abort(self) -> None:
        """Drops a pending transaction (Ctrl-C): its copies are never seen."""
        if self.transactional and self._in_batch:
            try:
                self._producer.abort_transaction(TIMEOUT_S)
            except KafkaException as exc:
                log.warning("aborting the copy transaction: %s", exc)
            self._in_batch = 0
        elif not self.transactional:
            self._producer.flush(TIMEOUT_S)

    # -- inside -------------------------------------------------------------------------------
    def _produce(self, topic: str, key, value, headers, *, counted: bool) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers,
                                       on_delivery=self._on_delivery if counted and not self.transactional else None)
                break
            except BufferError:
                self._producer.poll(0.1)  # librdkafka's queue is full: let it drain
        self._producer.poll(0)

    def _on_delivery(self, err, _msg) -> None:
        if err is None:
            self.result.sent += 1
        else:
            self.result.failed += 1
            self._errors.append(err.str())

    def _commit(self) -> None:
        try:
            self._producer.commit_transaction(TIMEOUT_S)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.txn_requires_abort():
                self._producer.abort_transaction(TIMEOUT_S)
            self.result.failed += self._in_batch
            self._in_batch = 0
            raise self._failure(error, f"committing {self.result.failed} copies to {self.target}") from exc
        self.result.sent += self._in_batch
        self._in_batch = 0

    def _failure(self, error: KafkaError, doing: str) -> CopyFailed:
        """What to say when a call failed: a fence means another copier with our transactional id
        (another redrive of the group) started after this one, whichever call met it first (later
        calls fail with librdkafka's bare ``Local: Fatal error``)."""
        if error.code() == KafkaError._FATAL and self._fatal is None:
            try:
                self._producer.poll(0)  # serves the error callback, which names the fatal error ...
            except KafkaException as exc:  # ... or raises it
                self._fatal = exc.args[0]
        cause = self._fatal if error.code() == KafkaError._FATAL and self._fatal is not None else error
        if cause.code() in FENCED:
            return CopyFailed(f"another redrive holds the group's ledger: one started after this one, and Kafka "
                              f"fenced this one out ({cause.str()}); {self.result.sent} copies were committed before, "
                              "none is sent twice. Run `events dlq redrive` again once the other has finished")
        return CopyFailed(f"{doing} failed: {cause.str()}; {self.result.sent} were committed before. Run the "
                          "command again")

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error
        else:
            log.warning("Kafka: %s", error.str())

    def _pace(self) -> None:
        if not self.rate:
            return
        due = self._started + self._count / self.rate
        while (wait := due - time.monotonic()) > 0:
            self._producer.poll(min(wait, 0.1))  # serve delivery reports while waiting
