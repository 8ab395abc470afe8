"""Observers: what watches the consumer runtime (metrics, tracing, your own) without being in its way.

The runtime names what happens to a message and to the group (an outcome, a retry, a dead letter,
a pause, a batch) and tells every ``Observer`` that overrides the hook. Two kinds of hooks:

- ``after_*`` / ``before_*`` notifications: told what happened. One that raises is logged, never
  raised: an observer cannot change what becomes of a message.
- ``around_*`` wraps, in the call-next shape of pipeline steps: ``around_message`` (one delivery,
  all its attempts), ``around_attempt`` (one handler call), ``around_dead_letter`` (sending a
  letter), for what must hold something open around the work (a span that is current while a
  handler runs). A wrap must call ``call_next``/``send`` exactly once and re-raise what it raises:
  a wrap that raises looks like the handler failing (retried, dead-lettered).

Message hooks run on worker threads, several at once (and on the poll loop's, for an ``inline`` group):
keep them thread-safe and short. Inline, a delivery that must wait leaves the loop's ``around_message``
by ``HandOff`` (a ``BaseException``: not a failure) and enters a worker's: that wrap runs twice for it.

Cost: ``Observers.of`` resolves a list once, when the group starts, into one tuple per hook of the
observers that override it. The runtime tests a tuple's truth (once per message at most) and
composes wraps into the chain once, so with no observers the hot path is as it was without them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .job import Job
    from .runner import GroupRunner

log = logging.getLogger("consumers.observers")

CallNext = Callable[["Job"], str]


class Observer:
    """Hooks that do nothing; override those you need."""

    needs_lag: ClassVar[bool] = False  # the poll loop measures consumer lag (``GroupRunner.lag``) only if one asks

    # -- wraps --------------------------------------------------------------------------------
    def around_message(self, job: Job, call_next: CallNext) -> str:
        """One delivery of a decoded message, all its attempts; returns its outcome."""
        return call_next(job)

    def around_attempt(self, job: Job, call_next: CallNext) -> str:
        """One call of the handler."""
        return call_next(job)

    def around_dead_letter(self, job: Job, exc: BaseException, attempts: int, send: Callable[[], bool]) -> bool:
        """Sending the dead letter of ``job`` (``send()`` builds its headers, sends it and waits for the
        broker: True; False when no letter fits the topic)."""
        return send()

    # -- notifications ------------------------------------------------------------------------
    def after_message(self, job: Job, outcome: str) -> None:
        """A message that entered the pipeline is finished (``consumers.job``'s outcomes but ``passed``),
        before its offset moves."""

    def after_retry(self, job: Job, *, attempt: int, exc: BaseException, backoff_s: float) -> None:
        """Attempt ``attempt`` failed with ``exc``; the next starts after ``backoff_s``."""

    def after_dead_letter(self, job: Job, *, exc: BaseException, attempts: int, sent: bool) -> None:
        """The dead letter of ``job`` was acknowledged (``sent``), or none fits the topic."""

    def after_dead_letter_refused(self, job: Job, *, error: str, retry_in_s: float) -> None:
        """The broker did not take the dead letter (``error``, redacted); it is sent again in ``retry_in_s``."""

    def after_acknowledge(self, job: Job, ack: str, delivery: int) -> None:
        """A shared group acknowledged ``job``'s record on its ``delivery``-th delivery: ``accept``,
        ``reject``, ``release``, or ``failed`` (its lock had ended: the broker offers it again)."""

    def after_pause(self, group: str, reason: str) -> None:
        """The group paused fetching: ``outage``, ``buffer_full`` or ``stopping``."""

    def before_batch_job(self, job: Job, size: int) -> None:
        """``job`` runs in a database batch of ``size`` events (``consumers.pipeline.batch``)."""

    def after_batch_job(self, job: Job, outcome: str, exc: BaseException | None) -> None:
        """``job`` of a batch is done: after the COMMIT with its outcome, or ``left_batch`` (and the
        error, if any) when it goes on alone; every job of a batch rolled back whole is told so."""

    def after_batch(self, group: str, *, committed: bool, messages: int) -> None:
        """A batch's transaction committed (``messages`` handled or duplicates in it) or rolled back."""

    def after_start(self, runner: GroupRunner) -> None:
        """The runner subscribed."""

    def before_stop(self, runner: GroupRunner) -> None:
        """The runner's consumer is closed; its steps are about to be."""


HOOKS = ("around_message", "around_attempt", "around_dead_letter", "after_message", "after_retry",
         "after_dead_letter", "after_dead_letter_refused", "after_acknowledge", "after_pause", "before_batch_job",
         "after_batch_job", "after_batch", "after_start", "before_stop")


class Observers:
    """The hooks of an observer list, resolved once: per hook, a tuple of the bound methods of the
    observers that override it (in list order)."""

    EMPTY: ClassVar[Observers]

    around_message: tuple[Callable[..., str], ...]
    around_attempt: tuple[Callable[..., str], ...]
    around_dead_letter: tuple[Callable[..., bool], ...]
    after_message: tuple[Callable[..., None], ...]
    after_retry: tuple[Callable[..., None], ...]
    after_dead_letter: tuple[Callable[..., None], ...]
    after_dead_letter_refused: tuple[Callable[..., None], ...]
    after_acknowledge: tuple[Callable[..., None], ...]
    after_pause: tuple[Callable[..., None], ...]
    before_batch_job: tuple[Callable[..., None], ...]
    after_batch_job: tuple[Callable[..., None], ...]
    after_batch: tuple[Callable[..., None], ...]
    after_start: tuple[Callable[..., None], ...]
    before_stop: tuple[Callable[..., None], ...]

    def __init__(self, observers: Sequence[Observer]):
        self.observers = tuple(observers)
        for hook in HOOKS:
            base = getattr(Observer, hook)
            setattr(self, hook, tuple(getattr(o, hook) for o in self.observers if getattr(type(o), hook) is not base))
        self.needs_lag = any(o.needs_lag for o in self.observers)

    @classmethod
    def of(cls, observers: Sequence[Observer]) -> Observers:
        return cls(observers) if observers else cls.EMPTY

    def __bool__(self) -> bool:
        return bool(self.observers)

    def __repr__(self) -> str:
        return f"Observers({', '.join(type(o).__name__ for o in self.observers)})"


Observers.EMPTY = Observers(())


def emit(hooks: tuple[Callable[..., None], ...], *args: Any, **kwargs: Any) -> None:
    """Calls each notification hook; one that raises is logged and the next still runs."""
    for hook in hooks:
        try:
            hook(*args, **kwargs)
        except Exception:  # noqa: BLE001 - an observer never changes what becomes of a message
            log.exception("observer hook %s failed", getattr(hook, "__qualname__", hook))


def wrapped(wraps: tuple[Callable[..., Any], ...], call_next: Callable[..., Any]) -> Callable[..., Any]:
    """``call_next`` inside ``wraps`` (the first outermost), composed once; ``call_next`` itself when none."""
    for wrap in reversed(wraps):
        call_next = partial(_call_inside, wrap, call_next)
    return call_next


def _call_inside(wrap: Callable[..., Any], call_next: Callable[..., Any], job: Any) -> Any:
    return wrap(job, call_next)  # positionally: a partial's keyword costs a dict per call
