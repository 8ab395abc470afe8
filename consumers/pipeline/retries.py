"""Retries: run the rest of the pipeline again after a transient failure, with backoff.

Each attempt runs the inner steps anew, so each attempt is its own database transaction (see
``Idempotency``). Backoff is tenacity's exponential with jitter
(``min_backoff_s * 2**(n-1) + U(0, min_backoff_s)``, at most ``max_backoff_s``). A message is retried
until ``max_attempts`` attempts or ``max_retry_time_s`` seconds are spent; then the error goes on to
``DeadLetters``. Backoff happens on the worker thread: the poll loop keeps polling, so the consumer
never misses ``max.poll.interval.ms``, and other keys go on being handled meanwhile. A job run on the
poll loop (``Job.inline``) that fails, or meets an open breaker, is handed to a worker (``HandOff``).

Which failures are retried: exceptions in ``retry_on`` (default: every ``Exception``) and in
``pause_on``, never ``MessageRejected`` (raise it from a handler for "this will never work"), the
codec's errors, or pydantic's ``ValidationError``. An event that failed in a batch, or on the poll
loop, comes here with that failure as its attempt 1 (``Job.first_failure``): the next attempt is its
2nd, after a backoff. Failures in ``pause_on`` (dependency errors: the database or a service is
down) also feed the group's ``OutageBreaker``: during an outage messages wait for the dependency
instead of being dead-lettered (see ``consumers.breaker``).
"""

from __future__ import annotations

import inspect
import logging
import time

from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from dify_events.schemas.errors import CodecError

from ..errors import MessageRejected
from ..job import HANDLED, HandOff, Job
from ..observers import emit
from ..redact import error_message, fqcn
from ..telemetry.fields import message_fields
from .step import CallNext, Step

log = logging.getLogger("consumers.retries")

NEVER_RETRIED: tuple[type[BaseException], ...] = (MessageRejected, CodecError, ValidationError)
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, ConnectionError)
# the first backoff's keyword: tenacity 9.2 renamed `initial` to `multiplier` (the old name warns there)
_FIRST_BACKOFF = "multiplier" if "multiplier" in inspect.signature(wait_exponential_jitter).parameters else "initial"


class Retries(Step):
    options = {
        "max_attempts": 5,                 # attempts in one delivery, the first included
        "max_retry_time_s": 300.0,         # seconds from the first attempt after which no retry starts
        "min_backoff_s": 0.5,              # the first backoff, and the jitter's range
        "max_backoff_s": 30.0,             # the longest backoff
        "retry_on": (Exception,),          # exception classes worth another attempt
        "pause_on": DEPENDENCY_ERRORS,     # classes that mean "a dependency is down" (outage breaker)
    }

    def __init__(self, resources):
        super().__init__(resources)
        self.breaker = resources.breaker
        self.after_retry = resources.observers.after_retry
        for handler in self.group.handlers.values():
            if handler.option("max_attempts") < 1:
                raise ValueError(f"{handler.name}: max_attempts must be at least 1")

    def process(self, job: Job, call_next: CallNext) -> str:
        assert job.handler is not None  # Decode let the job through
        breaker = self.breaker
        if breaker.is_open():
            if job.inline:
                raise HandOff()
            breaker.wait_closed(job.lane)
        job.attempts = 1
        started = time.monotonic()
        try:
            first, job.first_failure = job.first_failure, None
            if first is not None:  # attempt 1 failed in a batch (consumers.pipeline.batch) or on the poll loop
                raise first
            outcome = call_next(job)
        except Exception as exc:  # noqa: BLE001 - sorted below
            if job.inline:  # on the poll loop: a worker retries it, or dead-letters it
                raise self._hand_off(job, exc) from None
            handler = job.handler
            if not self.retryable(handler, exc):
                raise
            return self._retry(job, call_next, exc, started)
        if outcome == HANDLED:
            breaker.success(job.handler.name)
        return outcome

    def _hand_off(self, job: Job, exc: Exception) -> HandOff:
        """A failure on the poll loop goes to a worker as its attempt 1; a dependency's (``pause_on``) is told the
        breaker now and goes over untried: the worker's attempt 1 is then a fresh one, not this failure told the
        breaker again when a worker gets to it, maybe after the dependency came back."""
        handler = job.handler
        assert handler is not None  # Decode let the job through
        if isinstance(exc, handler.option("pause_on")):
            self.breaker.failure(handler.name, id(job), exc, message_fields(job, self.group.name))
            return HandOff()
        return HandOff(exc)

    @staticmethod
    def retryable(handler, exc: BaseException) -> bool:
        if isinstance(exc, NEVER_RETRIED):
            return False
        return isinstance(exc, handler.option("retry_on")) or isinstance(exc, handler.option("pause_on"))

    def _retry(self, job: Job, call_next: CallNext, first: Exception, started: float) -> str:
        handler = job.handler
        assert handler is not None  # Decode let the job through
        pending = [first]  # tenacity's attempt 1 is the one that just failed

        def attempt() -> str:
            if pending:
                raise pending.pop()
            job.attempts += 1
            return call_next(job)

        min_backoff = handler.option("min_backoff_s")
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: self.retryable(handler, exc)),
            stop=lambda state: self._spent(job, state, started),
            wait=wait_exponential_jitter(max=handler.option("max_backoff_s"), jitter=min_backoff,
                                         **{_FIRST_BACKOFF: min_backoff}),
            sleep=lambda seconds: self._sleep(job, seconds),
            before_sleep=lambda state: self._log_retry(job, state),
            reraise=True,
        )
        outcome = retrying(attempt)
        if outcome == HANDLED:
            self.breaker.success(handler.name)
        return outcome

    def _spent(self, job: Job, state: RetryCallState, started: float) -> bool:
        handler = job.handler
        assert handler is not None and state.outcome is not None  # past Decode; called after a failed attempt
        exc = state.outcome.exception()
        dependency = isinstance(exc, handler.option("pause_on"))
        if dependency:
            fields = message_fields(job, self.group.name)
            self.breaker.failure(handler.name, id(job), exc, fields)
        spent = (state.attempt_number >= handler.option("max_attempts")
                 or time.monotonic() - started >= handler.option("max_retry_time_s"))
        if spent and dependency and not self.breaker.healthy_since(handler.name, started):
            # no message of this handler has succeeded since this one was first tried: nothing shows
            # the dependency is up, so take it for an outage, not this message's fault, and wait
            self.breaker.hold(handler.name, exc, fields)
            return False
        return spent

    def _sleep(self, job: Job, seconds: float) -> None:
        job.lane.sleep(seconds)
        self.breaker.wait_closed(job.lane)

    def _log_retry(self, job: Job, state: RetryCallState) -> None:
        self.resources.counters.add("retries")
        exc = state.outcome.exception() if state.outcome is not None else None
        assert job.handler is not None and exc is not None  # past Decode; called after a failed attempt
        message = error_message(exc)[:300]  # redacted: no credentials, no event data
        error = f"{type(exc).__name__}: {message}"
        emit(self.after_retry, job, attempt=state.attempt_number, exc=exc, backoff_s=state.upcoming_sleep)
        log.warning("%s of group %s, handler %s: attempt %d failed (%s); retrying in %.2fs", job.where(),
                    self.group.name, job.handler.name, state.attempt_number, error, state.upcoming_sleep,
                    extra={**message_fields(job, self.group.name), "handler": job.handler.name,
                           "attempt": state.attempt_number, "error_class": fqcn(exc),
                           "backoff_s": round(state.upcoming_sleep, 3)})
