"""The consumer runtime's OpenTelemetry instruments.

Names are chosen for what the Prometheus exporter makes of them (dots -> underscores, a counter
gains ``_total``, a unit ``s`` gains ``_seconds``, a ``{message}`` annotation adds nothing), so the
chart's alerts can name them:

    events.messages.handled        counter    group, event_type     events_messages_handled_total
    events.messages.duplicates     counter    group, event_type     events_messages_duplicates_total
    events.messages.retried        counter    group, event_type     events_messages_retried_total
    events.messages.dead_lettered  counter    group, event_type     events_messages_dead_lettered_total
    events.messages.failed         counter    group, event_type, error_class  events_messages_failed_total
    events.messages.abandoned      counter    group, event_type     events_messages_abandoned_total
    events.handler.duration        histogram  group, event_type, outcome  events_handler_duration_seconds
    events.end_to_end.latency      histogram  group, event_type     events_end_to_end_latency_seconds
    events.consumer.lag            gauge      group, topic, partition  events_consumer_lag
    events.messages.in_flight      gauge      group                 events_messages_in_flight
    events.consumer.pauses         counter    group, reason         events_consumer_pauses_total

``failed`` counts failed attempts (each raise of a handler or of the steps around it), so a
message that fails twice and then succeeds counts failed 2, retried 2, handled 1. ``group`` is
the group's name (not the Kafka group id). One ``ConsumerMetrics`` per meter provider: the SDK
hands back the first instrument of a name, so observable gauges read every registered runner.
"""

from __future__ import annotations

import threading
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, NoOpMeterProvider, Observation

if TYPE_CHECKING:
    from ..runner import GroupRunner

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 900.0, 3600.0)


def meter_provider_configured() -> bool:
    provider = metrics.get_meter_provider()
    return not isinstance(provider, NoOpMeterProvider) and type(provider).__name__ != "_ProxyMeterProvider"


_by_provider: weakref.WeakKeyDictionary[Any, ConsumerMetrics] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


COUNTERS = {  # our name -> (instrument, unit, description)
    "handled": ("events.messages.handled", "{message}", "Messages whose handler ran and committed"),
    "duplicate": ("events.messages.duplicates", "{message}",
                  "Messages skipped: their idempotency key was claimed before"),
    "retried": ("events.messages.retried", "{retry}", "Retries scheduled after a transient failure"),
    "dead_lettered": ("events.messages.dead_lettered", "{message}",
                      "Messages published to the group's dead-letter topic"),
    "failed": ("events.messages.failed", "{attempt}", "Failed handler attempts"),
    "abandoned": ("events.messages.abandoned", "{message}",
                  "Messages left unfinished (revoked, stopping, a step's bug): delivered again"),
    "pauses": ("events.consumer.pauses", "{pause}", "Times the group paused fetching, by reason"),
}
OUTCOMES = frozenset({"handled", "duplicate", "abandoned"})  # outcomes the runner counts (dead letters: the step)

Key = tuple[tuple[str, str], ...]  # a point's attributes, hashable


class ConsumerMetrics:
    """The instruments of one meter provider, and the runners its gauges observe.

    Counters are tallies in a dict under a lock (``count``; a fraction of a microsecond), read by
    observable counters when a reader collects: an SDK ``Counter.add`` costs ~10 µs, several per
    message. Histograms are the SDK's."""

    def __init__(self, provider: Any):
        meter = provider.get_meter("consumers")
        self._tallies: dict[str, dict[Key, int]] = {name: {} for name in COUNTERS}
        self._tally_lock = threading.Lock()
        for name, (instrument, unit, description) in COUNTERS.items():
            meter.create_observable_counter(instrument, [partial(self._observe_tally, name)], unit=unit,
                                            description=description)
        self.handler_duration = meter.create_histogram(
            "events.handler.duration", unit="s", description="Time of one handler attempt",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS)
        self.latency = meter.create_histogram(
            "events.end_to_end.latency", unit="s", description="Handling done minus the event's occurred_at",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS)
        meter.create_observable_gauge("events.consumer.lag", [self._observe_lag], unit="{message}",
                                      description="High watermark minus the group's next offset to commit")
        meter.create_observable_gauge("events.messages.in_flight", [self._observe_in_flight], unit="{message}",
                                      description="Messages dispatched and not yet finished")
        self._runners: weakref.WeakSet[GroupRunner] = weakref.WeakSet()

    def count(self, name: str, key: Key, n: int = 1) -> None:
        """Adds ``n`` to counter ``name`` (a key of ``COUNTERS``) at the point ``key``."""
        tally = self._tallies[name]
        with self._tally_lock:
            tally[key] = tally.get(key, 0) + n

    def _observe_tally(self, name: str, _options: CallbackOptions):
        with self._tally_lock:
            points = list(self._tallies[name].items())
        return [Observation(n, dict(key)) for key, n in points]

    @classmethod
    def of(cls, provider: Any) -> ConsumerMetrics:
        """The instruments of ``provider``, made on first use."""
        with _lock:
            found = _by_provider.get(provider)
            if found is None:
                found = _by_provider[provider] = cls(provider)
            return found

    def watch(self, runner: GroupRunner) -> None:
        self._runners.add(runner)

    def unwatch(self, runner: GroupRunner) -> None:
        self._runners.discard(runner)

    def _observe_lag(self, _options: CallbackOptions):
        out = []
        for runner in list(self._runners):
            group = runner.group.name
            for (topic, partition), lag in runner.lag.items():
                out.append(Observation(lag, {"group": group, "topic": topic, "partition": str(partition)}))
        return out

    def _observe_in_flight(self, _options: CallbackOptions):
        return [Observation(runner.in_flight, {"group": runner.group.name}) for runner in list(self._runners)]


def key(group: str, event_type: str, **more: str) -> Key:
    return (("group", group), ("event_type", event_type), *more.items())
