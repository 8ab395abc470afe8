"""The outage breaker: tells a dependency outage from a poison message, and pauses the group.

A failure counts towards an outage when its exception is one of the handler's ``pause_on``
classes (by default SQLAlchemy's ``OperationalError``/``InterfaceError`` and ``ConnectionError``:
the database or a service is unreachable). The breaker *opens* when either

- ``outage_threshold`` different messages of one handler fail in a row with the same exception
  class, no message of that handler succeeding in between (at most the group's concurrency, and
  at least 2 on that account: with two workers, two messages in retry are all the evidence there
  can be); or
- a message has spent its retries on such an error and no message of its handler has succeeded
  since its first attempt began (nothing shows the dependency is up, so it is not the message's
  fault).

While open, the poll loop pauses every assigned partition (fetching stops, the consumer keeps
polling so it stays in the group) and the failing messages wait instead of being dead-lettered.
After a backoff (doubling per consecutive opening, up to a cap) the partitions resume and the
waiting messages are tried again: one success closes the breaker; another failure opens it anew.
A message that keeps failing while its handler succeeds on other messages is a poison message
and is dead-lettered as usual. One that fails while no other message of its handler arrives is
held until one does: it blocks its own key and its partition's commit position, and each of its
spent attempts opens the breaker again (for ``outage_min_backoff_s`` when other handlers' successes
closed it meanwhile). Without evidence either way, holding is the choice that neither loses nor floods.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from .redact import error_message

if TYPE_CHECKING:
    from .group import ConsumerGroup
    from .job import Lane

log = logging.getLogger("consumers.breaker")


class OutageBreaker:
    @classmethod
    def of(cls, group: ConsumerGroup, workers: int) -> OutageBreaker:
        """The breaker of ``group`` as its options set it, for ``workers`` worker threads: no more
        messages can fail at once than there are workers, so a higher threshold could never be met;
        never below 2 on that account, so that one deadlock on one worker does not pause the group."""
        return cls(group.name, threshold=min(group.option("outage_threshold"), max(2, workers)),
                   min_backoff_s=group.option("outage_min_backoff_s"),
                   max_backoff_s=group.option("outage_max_backoff_s"))

    def __init__(self, group: str, *, threshold: int = 3, min_backoff_s: float = 1.0, max_backoff_s: float = 30.0):
        if threshold < 1:
            raise ValueError(f"outage_threshold must be at least 1, not {threshold}")
        self.group = group
        self.threshold = threshold
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self._lock = threading.Lock()
        self._last_success: dict[str, float] = {}             # handler -> monotonic time
        self._streaks: dict[str, tuple[type, set[int]]] = {}  # handler -> (exception class, message ids)
        self._open_until = 0.0
        self._openings = 0           # consecutive openings without a success (backoff exponent)
        self.total_openings = 0      # for stats and tests
        self.last_reason = ""

    # -- reports from the workers -------------------------------------------------------------
    def success(self, handler: str) -> None:
        """A message of ``handler`` was handled: its dependencies are up. Cheap: the hot path."""
        self._last_success[handler] = time.monotonic()
        if self._streaks or self._openings:
            with self._lock:
                self._streaks.pop(handler, None)
                if self._openings:
                    log.warning("group %s: %s succeeded again, the outage is over", self.group, handler)
                    self._openings = 0
                    self._open_until = 0.0

    def failure(self, handler: str, message_id: int, exc: BaseException, fields: dict | None = None) -> None:
        """A message failed with a dependency error; opens the breaker at the threshold. ``fields``:
        the message's log fields (ids, partition, offset, trace), for the record of the opening."""
        with self._lock:
            kind, ids = self._streaks.get(handler, (None, set()))
            if kind is not type(exc):
                ids = set()
                self._streaks[handler] = (type(exc), ids)
            ids.add(message_id)
            if len(ids) >= self.threshold:
                self._open(f"{len(ids)} messages of {handler} failed in a row with {type(exc).__name__}: "
                           f"{error_message(exc)[:300]}", fields)

    def healthy_since(self, handler: str, since: float) -> bool:
        """Has a message of ``handler`` succeeded after ``since`` (monotonic)?"""
        return self._last_success.get(handler, float("-inf")) > since

    def hold(self, handler: str, exc: BaseException, fields: dict | None = None) -> None:
        """A message spent its retries on a dependency error with no sign of health: open."""
        with self._lock:
            self._open(f"a message of {handler} spent its retries on {type(exc).__name__} and no message "
                       f"of {handler} has succeeded since: {error_message(exc)[:300]}", fields)

    def _open(self, reason: str, fields: dict | None = None) -> None:
        now = time.monotonic()
        if now < self._open_until:
            return  # already open
        self._openings += 1
        self.total_openings += 1
        backoff = min(self.max_backoff_s, self.min_backoff_s * 2 ** (self._openings - 1))
        self._open_until = now + backoff
        self._streaks.clear()
        self.last_reason = reason
        log.warning("group %s: dependency outage suspected (%s); pausing its partitions for %.1fs "
                    "(opening %d); failing messages wait instead of being dead-lettered",
                    self.group, reason, backoff, self._openings,
                    extra={**(fields or {}), "group": self.group, "reason": "outage", "backoff_s": backoff})

    # -- the poll loop and waiting messages ---------------------------------------------------
    def is_open(self) -> bool:
        # 0.0 until the first opening and after a success closed it: then no clock is read (the hot path)
        return self._open_until > 0.0 and time.monotonic() < self._open_until

    def wait_closed(self, lane: Lane) -> None:
        """Blocks while the breaker is open; ``Abandoned`` if the lane stops waiting meanwhile."""
        while True:
            left = self._open_until - time.monotonic()
            if left <= 0:
                return
            lane.sleep(min(left, 1.0))
