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
    (handler_duration)             histogram  group, event_type, outcome  events_handler_duration_seconds
    (latency)                      histogram  group, event_type     events_end_to_end_latency_seconds
    events.consumer.lag            gauge      group, topic, partition  events_consumer_lag
    events.messages.in_flight      gauge      group                 events_messages_in_flight
    events.consumer.capacity       gauge      group                 events_consumer_capacity
    events.consumer.pauses         counter    group, reason         events_consumer_pauses_total

``failed`` counts failed attempts (each raise of a handler or of the steps around it), so a
message that fails twice and then succeeds counts failed 2, retried 2, handled 1. ``capacity`` is
the messages a runner handles at once (its ``concurrency``: handler threads of an ordered group,
pollers of a shared one), so ``in_flight / capacity`` is how busy a group is: what the chart's KEDA
trigger scales a shared group on. ``group`` is the group's name (not the Kafka group id). One
``ConsumerMetrics`` per meter provider: the SDK hands back the first instrument of a name, so
observable gauges read every registered runner.

The two histograms are not SDK instruments (an SDK ``Histogram.record`` costs ~6.4 µs, and the
OpenTelemetry API has no observable histogram): they are bucket counts kept here and exported on
Prometheus only, by ``HistogramCollector`` registered on the exporter's registry (``setup.py``).
OTLP does not carry them.

``MetricsObserver`` keeps them for one group: an observer of the runtime's events
(``consumers.observers``), which the runner adds when a meter provider is configured. What every
message updates (the latency, whose count is ``handled``; a returning attempt's duration; duplicates;
abandoned messages) it keeps per thread and event type in ``Figures``, labelled only when a reader
collects: hashing a tuple of labels per update cost ~1 µs a message. The rest are rarer and go to
``Tallies`` under their labels.
"""

from __future__ import annotations

import threading
import time
import weakref
from bisect import bisect_left
from functools import partial
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, NoOpMeterProvider, Observation
from prometheus_client.core import HistogramMetricFamily

from ..job import ABANDONED, DUPLICATE, HANDLED
from ..observers import CallNext, Observer
from .fields import event_type_of

if TYPE_CHECKING:
    from ..job import Job
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
    "batches": ("events.consumer.batches", "{batch}",
                "Transactions that held several idempotent events, by result (committed, rolled_back)"),
    "batched": ("events.messages.batched", "{message}",
                "Messages handled or skipped as duplicates inside a batch's committed transaction"),
    "acknowledged": ("events.share.acknowledgements", "{record}",
                     "Records a shared group acknowledged, by type (accept, reject, release, failed)"),
    "redelivered": ("events.share.redelivered", "{record}",
                    "Records a shared group was given again (a delivery count above 1)"),
}
HISTOGRAMS = {  # our name -> (Prometheus family, its labels, description); buckets: SECONDS_BUCKETS
    "handler_duration": ("events_handler_duration_seconds", ("group", "event_type", "outcome"),
                         "Time of one handler attempt"),
    "latency": ("events_end_to_end_latency_seconds", ("group", "event_type"),
                "Handling done minus the event's occurred_at"),
}
# the labels the Prometheus exporter gives every point of the ``consumers`` meter, so the series match
_SCOPE_LABELS = (("otel_scope_name", "consumers"), ("otel_scope_version", ""), ("otel_scope_schema_url", ""))
Key = tuple[tuple[str, str], ...]  # a point's attributes, hashable
# A histogram's point: a count per bound of SECONDS_BUCKETS (inclusive upper bounds, as Prometheus' le), then
# +Inf's, then the sum of the values.
HistogramPoint = list


def new_histogram() -> HistogramPoint:
    return [0] * (len(SECONDS_BUCKETS) + 1) + [0.0]


def record(histogram: HistogramPoint, seconds: float) -> None:
    histogram[bisect_left(SECONDS_BUCKETS, seconds)] += 1
    histogram[-1] += seconds


FIGURES_COUNTERS = (HANDLED, DUPLICATE, ABANDONED)  # the counters ``Figures`` keep


class Figures:
    """One thread's figures of one event type of one group: those every message updates."""

    __slots__ = ("latency", "handler_ok", "duplicate", "abandoned")

    def __init__(self) -> None:
        self.latency = new_histogram()     # handled messages' end-to-end latency; its count is ``handled``
        self.handler_ok = new_histogram()  # handler attempts that returned (those that raised: ``Tallies``)
        self.duplicate = 0
        self.abandoned = 0

    def count(self, name: str) -> int:
        """Counter ``name``'s value here (``handled``, ``duplicate`` or ``abandoned``)."""
        return sum(self.latency[:-1]) if name == HANDLED else getattr(self, name)


class Tallies:
    """One thread's counter values and histogram buckets. Only that thread writes them, so they need
    no lock; a collection copies every thread's (a dict's copy is atomic under the GIL) and adds them up."""

    __slots__ = ("counts", "histograms")

    def __init__(self) -> None:
        self.counts: dict[str, dict[Key, int]] = {name: {} for name in COUNTERS}
        self.histograms: dict[str, dict[Key, HistogramPoint]] = {name: {} for name in HISTOGRAMS}

    def count(self, name: str, key: Key, n: int = 1) -> None:
        counts = self.counts[name]
        counts[key] = counts.get(key, 0) + n

    def observe(self, name: str, key: Key, value: float) -> None:
        histogram = self.histograms[name]
        point = histogram.get(key)
        if point is None:
            point = histogram[key] = new_histogram()
        record(point, value)


class ConsumerMetrics:
    """The instruments of one meter provider, and the runners its gauges observe.

    Counters are tallies kept by each thread (``Tallies``, and the ``Figures`` observers ``adopt``; no
    lock), read by observable counters when a reader collects: an SDK ``Counter.add`` costs ~10 µs,
    several per message. Histograms are bucket counts kept the same way, read by ``HistogramCollector``
    when Prometheus scrapes."""

    def __init__(self, provider: Any):
        meter = provider.get_meter("consumers")
        self._local = threading.local()
        self._every: list[Tallies] = []  # every thread's, kept when it ends: counters only grow
        self._figures: list[tuple[str, dict[str, Figures]]] = []  # every thread's of every group, by event type
        self._every_lock = threading.Lock()
        for name, (instrument, unit, description) in COUNTERS.items():
            meter.create_observable_counter(instrument, [partial(self._observe_tally, name)], unit=unit,
                                            description=description)
        meter.create_observable_gauge("events.consumer.lag", [self._observe_lag], unit="{message}",
                                      description="High watermark minus the group's next offset to commit")
        meter.create_observable_gauge("events.messages.in_flight", [self._observe_in_flight], unit="{message}",
                                      description="Messages dispatched and not yet finished")
        meter.create_observable_gauge("events.consumer.capacity", [self._observe_capacity], unit="{message}",
                                      description="Messages the group's process handles at once (its concurrency)")
        self._runners: weakref.WeakSet[GroupRunner] = weakref.WeakSet()

    def tallies(self) -> Tallies:
        """The calling thread's tallies."""
        try:
            return self._local.tallies
        except AttributeError:
            mine = self._local.tallies = Tallies()
            with self._every_lock:
                self._every.append(mine)
            return mine

    def count(self, name: str, key: Key, n: int = 1) -> None:
        """Adds ``n`` to counter ``name`` (a key of ``COUNTERS``) at the point ``key``."""
        self.tallies().count(name, key, n)

    def observe(self, name: str, key: Key, value: float) -> None:
        """Records ``value`` (seconds) in histogram ``name`` (a key of ``HISTOGRAMS``) at the point ``key``
        (its labels in the order of ``HISTOGRAMS``)."""
        self.tallies().observe(name, key, value)

    def adopt(self, group: str, figures: dict[str, Figures]) -> None:
        """Collects ``figures`` (one thread's of ``group``, by event type) from now on."""
        with self._every_lock:
            self._figures.append((group, figures))

    def _threads(self) -> list[Tallies]:
        with self._every_lock:
            return list(self._every)

    def _every_figures(self) -> list[tuple[str, str, Figures]]:
        with self._every_lock:
            adopted = list(self._figures)
        return [(group, event_type, figures)
                for group, by_type in adopted for event_type, figures in by_type.copy().items()]

    def _histogram_points(self, name: str) -> dict[Key, HistogramPoint]:
        merged: dict[Key, HistogramPoint] = {}

        def add(key: Key, point: HistogramPoint) -> None:
            into = merged.get(key)
            merged[key] = list(point) if into is None else [a + b for a, b in zip(into, list(point), strict=True)]

        for tallies in self._threads():
            for key, point in tallies.histograms[name].copy().items():
                add(key, point)
        for group, event_type, figures in self._every_figures():
            if name == "latency":
                point, at = figures.latency, metric_key(group, event_type)
            else:
                point, at = figures.handler_ok, metric_key(group, event_type, outcome="ok")
            if any(point[:-1]):
                add(at, point)
        return merged

    def histogram_families(self) -> list[HistogramMetricFamily]:
        """The histograms as Prometheus families (cumulative buckets), a snapshot of now."""
        families = []
        for name, (family_name, labels, description) in HISTOGRAMS.items():
            family = HistogramMetricFamily(family_name, description, labels=[*labels, *(k for k, _ in _SCOPE_LABELS)])
            for key, point in self._histogram_points(name).items():
                buckets, running = [], 0
                for bound, n in zip((*SECONDS_BUCKETS, "+Inf"), point[:-1], strict=True):
                    running += n
                    buckets.append((f"{bound}", running))  # bounds written as the OTel exporter writes them
                family.add_metric([*(v for _, v in key), *(v for _, v in _SCOPE_LABELS)], buckets, sum_value=point[-1])
            families.append(family)
        return families

    def _observe_tally(self, name: str, _options: CallbackOptions):
        summed: dict[Key, int] = {}
        for tallies in self._threads():
            for key, n in tallies.counts[name].copy().items():
                summed[key] = summed.get(key, 0) + n
        if name in FIGURES_COUNTERS:
            for group, event_type, figures in self._every_figures():
                n = figures.count(name)
                if n:
                    at = metric_key(group, event_type)
                    summed[at] = summed.get(at, 0) + n
        return [Observation(n, dict(key)) for key, n in summed.items()]

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

    def _observe_capacity(self, _options: CallbackOptions):
        return [Observation(runner.concurrency, {"group": runner.group.name}) for runner in list(self._runners)]


class HistogramCollector:
    """A ``prometheus_client`` collector of the histograms of ``provider``'s ``ConsumerMetrics``
    (none until a runner made them); register it on the Prometheus reader's registry."""

    def __init__(self, provider: Any):
        self._provider = weakref.ref(provider)

    def collect(self):
        provider = self._provider()
        found = _by_provider.get(provider) if provider is not None else None
        return found.histogram_families() if found is not None else []


def metric_key(group: str, event_type: str, **more: str) -> Key:
    return (("group", group), ("event_type", event_type), *more.items())


class MetricsObserver(Observer):
    """Counts one group's outcomes, failed attempts, retries, dead letters, pauses and batches, times
    its handler attempts and end-to-end latency, and has its runner's lag, in-flight and capacity gauges read."""

    needs_lag = True

    def __init__(self, metrics: ConsumerMetrics, group: str):
        self.metrics = metrics
        self.group = group
        self._local = threading.local()  # .figures: this thread's Figures by event type
        self._points: dict[str, Key] = {}  # event type -> its point (a GIL-safe cache, filled by the workers)

    def _point(self, event_type: str) -> Key:
        point = self._points.get(event_type)
        if point is None:
            point = self._points[event_type] = metric_key(self.group, event_type)
        return point

    def _figures(self, event_type: str) -> Figures:
        """The calling thread's figures of ``event_type`` (the hooks inline its lookup; this when it misses)."""
        try:
            mine = self._local.figures
        except AttributeError:
            mine = self._local.figures = {}
            self.metrics.adopt(self.group, mine)
        found = mine.get(event_type)
        if found is None:
            found = mine[event_type] = Figures()
        return found

    def after_message(self, job: Job, outcome: str) -> None:
        if outcome not in FIGURES_COUNTERS:
            return  # dead letters: after_dead_letter; passed over: not counted
        handler = job.handler
        event_type = handler.event_type if handler is not None else event_type_of(job)
        try:
            figures = self._local.figures[event_type]
        except (AttributeError, KeyError):
            figures = self._figures(event_type)
        if outcome == HANDLED:
            event = job.event
            seconds = time.time() - event.occurred_at.timestamp() if event is not None else 0.0
            record(figures.latency, seconds if seconds > 0.0 else 0.0)
        elif outcome == DUPLICATE:
            figures.duplicate += 1
        else:
            figures.abandoned += 1

    def around_attempt(self, job: Job, call_next: CallNext) -> str:
        started = time.perf_counter()
        try:
            outcome = call_next(job)
        except BaseException as exc:
            self.metrics.observe("handler_duration", metric_key(self.group, event_type_of(job), outcome="error"),
                                 time.perf_counter() - started)
            self.metrics.count("failed", metric_key(self.group, event_type_of(job), error_class=type(exc).__name__))
            raise
        seconds = time.perf_counter() - started
        event_type = job.handler.event_type  # type: ignore[union-attr] # Decode let the job through
        try:
            figures = self._local.figures[event_type]
        except (AttributeError, KeyError):
            figures = self._figures(event_type)
        record(figures.handler_ok, seconds)
        return outcome

    def after_retry(self, job: Job, *, attempt: int, exc: BaseException, backoff_s: float) -> None:
        self.metrics.count("retried", self._point(event_type_of(job)))

    def after_dead_letter(self, job: Job, *, exc: BaseException, attempts: int, sent: bool) -> None:
        if sent:
            self.metrics.count("dead_lettered", self._point(event_type_of(job)))

    def after_acknowledge(self, job: Job, ack: str, delivery: int) -> None:
        self.metrics.count("acknowledged", (("group", self.group), ("type", ack)))
        if delivery > 1:
            self.metrics.count("redelivered", (("group", self.group),))

    def after_pause(self, group: str, reason: str) -> None:
        self.metrics.count("pauses", (("group", group), ("reason", reason)))

    def after_batch(self, group: str, *, committed: bool, messages: int) -> None:
        self.metrics.count("batches", (("group", group), ("result", "committed" if committed else "rolled_back")))
        if messages:
            self.metrics.count("batched", (("group", group),), messages)

    def after_start(self, runner: GroupRunner) -> None:
        self.metrics.watch(runner)

    def before_stop(self, runner: GroupRunner) -> None:
        self.metrics.unwatch(runner)
        runner.lag = {}
