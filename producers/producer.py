"""``EventProducer``: typed events to Kafka through one idempotent librdkafka producer.

``publish(event)`` finds the event's topic, key and schema in the catalogue (once per event type),
encodes it with the codec, builds its headers and hands it to librdkafka. Nothing fails silently:

- what can be known at once raises from ``publish()`` (``UnpublishableEvent``,
  ``MessageTooLarge``, ``QueueFull``, ``DeliveryFailed`` for a topic librdkafka already knows
  is missing);
- what the broker answers later is raised by ``publish(..., wait=True)``, set on the future of
  ``publish_async()``, or else handed to ``on_error`` and logged.

Delivery reports are served where it is cheap: ``publish()`` serves them itself every
``POLL_EVERY`` events, and ``flush()``/``poll()``/``wait=True`` do; a background thread
(``poll_thread=True``, the default) serves them whenever the caller has not for ``IDLE_POLL_S``,
so failures surface and futures resolve even when the application publishes nothing more. It
stays out of the way during bursts: a second Python thread serving reports then would fight the
publishing thread for the GIL once per report (measured: a third of the throughput).

Under gevent's monkey-patching (Dify's gunicorn workers and Celery's gevent pool) threads are
greenlets, and a call that blocks inside librdkafka blocks every greenlet of the process. A
producer made after patching notices, and never blocks there: it serves what is ready, then
sleeps cooperatively (the poll thread, ``wait=True``, ``flush()``, ``close()``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Producer

from dify_events.schemas.catalogue import CATALOGUE, Catalogue, EventSpec
from dify_events.schemas.codec import HEADER_SIZE, AvroCodec
from dify_events.schemas.errors import UnknownEventType
from dify_events.schemas.events import Event
from dify_events.schemas.settings import Settings, get_settings

from .config import producer_config
from .errors import DeliveryFailed, MessageTooLarge, PublishError, QueueFull, UnpublishableEvent
from .headers import Headers, event_headers, static_headers
from .observers import ProducerObserver, nested
from .sizes import DEFAULT_MESSAGE_MAX_BYTES, record_size
from .telemetry import observers as telemetry_observers

log = logging.getLogger("producers.producer")

POLL_EVERY = 64     # publish() serves delivery reports every this many events
IDLE_POLL_S = 0.02  # the poll thread serves them when nobody else has for this long
GREENLET_SLICE_S = 0.005  # under gevent: the longest cooperative sleep between two looks at librdkafka
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
_HINTS = {
    KafkaError.UNKNOWN_TOPIC_OR_PART: "the topic does not exist and the cluster does not create topics on use "
                                      "(`events topics apply` creates the domain topics)",
    KafkaError._UNKNOWN_TOPIC: "the topic does not exist (`events topics apply` creates the domain topics)",
    KafkaError._MSG_TIMED_OUT: "no acknowledgement within delivery.timeout.ms (the cluster is unreachable, "
                               "or the topic is missing)",
    KafkaError.MSG_SIZE_TOO_LARGE: "larger than the topic's max.message.bytes or the producer's message.max.bytes",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "this client may not write to the topic (ACLs)",
}
_OWN_PROPERTIES = ("on_delivery", "delivery.report.only.error", "dr_cb", "dr_msg_cb")

ExtraHeaders = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None
ResultCallback = Callable[["Delivery | None", "PublishError | None"], None]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker stored an event."""

    topic: str
    partition: int
    offset: int
    event_id: str


class _Route(NamedTuple):
    """What publishing one event type needs, looked up once per type."""

    spec: EventSpec
    topic: str
    key_field: str
    static_headers: tuple[tuple[str, bytes], tuple[str, bytes]]


class EventProducer:
    """Publishes typed events. Thread-safe; keep one per process and close it on the way out.

    ``config``: librdkafka properties over the platform's defaults (``producers.config``).
    ``on_error(PublishError)``: called for each event that ``publish()`` without ``wait`` could
    not deliver, on whichever thread serves delivery reports (keep it short and thread-safe);
    every such failure is logged as well.
    ``queue_full_wait_s``: how long a synchronous ``publish()`` waits for room in librdkafka's
    local queue before raising ``QueueFull`` (``publish_async`` never blocks the loop: it raises at
    once). ``topic_prefix``: defaults to the settings' prefix.
    ``tracer_provider`` / ``meter_provider``: OpenTelemetry's; ``None`` takes the global one when
    set, else no spans or metrics (``producers.telemetry``).
    ``observers``: more ``ProducerObserver``s, after the SDK's tracing and metrics (``producers.observers``).
    """

    def __init__(self, config: dict[str, Any] | None = None, *, settings: Settings | None = None,
                 catalogue: Catalogue = CATALOGUE, codec: AvroCodec | None = None,
                 on_error: Callable[[PublishError], None] | None = None, poll_thread: bool = True,
                 queue_full_wait_s: float = 1.0, topic_prefix: str | None = None,
                 tracer_provider: Any = None, meter_provider: Any = None,
                 observers: Sequence[ProducerObserver] = ()):
        settings = settings or get_settings()
        conf = producer_config(config, settings)
        clashes = [name for name in _OWN_PROPERTIES if name in conf]
        if clashes:
            raise ValueError(f"{', '.join(clashes)} cannot be set: the SDK handles delivery reports itself "
                             "(pass on_error=, or use publish(wait=True) / publish_async())")
        conf["on_delivery"] = self._on_delivery
        conf.setdefault("error_cb", _log_client_error)
        conf.setdefault("logger", logging.getLogger("producers.librdkafka"))  # not raw lines on stderr
        self.config = {k: v for k, v in conf.items() if not callable(v)}
        self.catalogue = catalogue
        self.codec = codec or (_default_codec() if catalogue is CATALOGUE else AvroCodec(catalogue))
        self.topic_prefix = topic_prefix or settings.topic_prefix
        self.on_error = on_error
        self.queue_full_wait_s = queue_full_wait_s
        self._producer = Producer(conf)
        self._routes: dict[type, _Route] = {}
        watching = [*telemetry_observers(tracer_provider, meter_provider), *observers]
        self._around_publish = nested(watching, "around_publish")
        self._around_publish_encoded = nested(watching, "around_publish_encoded")
        # the one send path of each kind, chosen once: without observers, straight to librdkafka
        self._send = self._send_now if self._around_publish is None else self._send_observed
        self._send_encoded = self._produce if self._around_publish_encoded is None else self._send_encoded_observed
        self._unpolled = 0
        self._last_poll = 0.0  # monotonic time the caller's thread last served delivery reports
        self._closed = False
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._cooperative = _gevent_patched()
        if poll_thread:
            self._start_poller()

    # -- publishing -------------------------------------------------------------------------
    def publish(self, event: Event, *, key: str | None = None, idempotency_key: str | None = None,
                headers: ExtraHeaders = None, wait: bool = False, timeout: float = 30.0) -> Delivery | None:
        """Sends ``event`` to its domain topic, keyed by its aggregate id (or ``key``).

        Returns at once (``None``) unless ``wait``: then it returns the ``Delivery`` once the
        broker acknowledged it, or raises ``PublishError`` (``DeliveryFailed`` with
        ``retriable=True`` when no answer came within ``timeout`` seconds; the event may still
        arrive)."""
        if not wait:
            self._send(event, key, idempotency_key, headers, self.queue_full_wait_s, None)
            return None
        waiter = _Waiter(self, getattr(event, "event_id", ""))
        self._send(event, key, idempotency_key, headers, self.queue_full_wait_s, waiter)
        return waiter.result(timeout)

    def publish_async(self, event: Event, *, key: str | None = None, idempotency_key: str | None = None,
                      headers: ExtraHeaders = None) -> asyncio.Future[Delivery]:
        """From a running asyncio loop: sends ``event`` and returns a future that resolves to its
        ``Delivery`` when the broker acknowledged it, or fails with ``PublishError``. What can be
        known at once (an invalid event, a full queue) raises here, before anything is sent."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivery] = loop.create_future()
        if self._poller is None:
            self._start_poller()
        settle = partial(self._settle_future, loop, future, getattr(event, "event_id", ""))
        self._send(event, key, idempotency_key, headers, 0.0, settle)
        return future

    def publish_many(self, events: Iterable[Event], *, key: str | None = None,
                     timeout: float = 30.0) -> list[Delivery | PublishError]:
        """Sends every event (keyed by its aggregate id, or ``key``), then waits (``timeout``
        seconds in all) for each one's answer. Returns, in order, a ``Delivery`` or the
        ``PublishError`` of each event; raises nothing per event."""
        outcomes: list[_Waiter | PublishError] = []
        for event in events:
            try:
                waiter = _Waiter(self, getattr(event, "event_id", ""))
                self._send(event, key, None, None, self.queue_full_wait_s, waiter)
                outcomes.append(waiter)
            except PublishError as exc:
                outcomes.append(exc)
        deadline = time.monotonic() + timeout
        results: list[Delivery | PublishError] = []
        for outcome in outcomes:
            if isinstance(outcome, PublishError):
                results.append(outcome)
                continue
            try:
                results.append(outcome.result(max(0.0, deadline - time.monotonic())))
            except PublishError as exc:
                results.append(exc)
        return results

    def check(self, event: Event, *, key: str | None = None, idempotency_key: str | None = None,
              headers: ExtraHeaders = None) -> None:
        """Raises what ``publish()`` would raise before sending anything (``UnpublishableEvent``,
        ``MessageTooLarge`` over the producer's ``message.max.bytes``), and sends nothing: for a
        caller that must know every event of a batch can go before the first one does."""
        topic, value, key, hdrs = self._prepare(event, key, idempotency_key, headers)
        size = record_size(key, value, hdrs)
        limit = int(str(self.config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)))
        if size > limit:
            raise MessageTooLarge(f"{size} bytes with its key and headers, over the producer's message.max.bytes "
                                  f"({limit})", event_id=event.event_id, event_type=event.event_type, topic=topic,
                                  code="MSG_SIZE_TOO_LARGE")

    def publish_encoded(self, topic: str, value: bytes, *, key: str | bytes | None, headers: Headers,
                        event_id: str, on_result: ResultCallback | None = None) -> None:
        """Sends bytes that are already an encoded event (the outbox relay's path). ``on_result``
        gets ``(Delivery, None)`` or ``(None, PublishError)`` on whichever thread serves delivery
        reports (the poll thread, or one inside ``publish``/``poll``/``flush``); without it,
        failures go to ``on_error`` and the log like ``publish()``'s."""
        callback: Callable | None = partial(self._settle_callback, on_result, event_id) if on_result else None
        self._send_encoded(topic, value, key, headers, event_id, self.queue_full_wait_s, callback)

    def topic_of(self, event_type: str) -> str:
        """The topic events of this type go to."""
        return self.catalogue.get(event_type).topic(self.topic_prefix)

    def missing_topics(self, topics: Iterable[str], timeout: float = 10.0, grace_s: float = 2.0) -> list[str]:
        """Those of ``topics`` the cluster does not have (librdkafka otherwise waits up to
        ``topic.metadata.propagation.max.ms`` before reporting one missing). A topic created a
        moment ago may take a little while to show in every broker's metadata: one that is
        missing is looked for again for up to ``grace_s`` seconds."""
        wanted = list(dict.fromkeys(topics))
        deadline = time.monotonic() + grace_s
        while True:
            metadata = self._producer.list_topics(timeout=timeout)
            missing = [t for t in wanted if t not in metadata.topics or metadata.topics[t].error is not None]
            if not missing or time.monotonic() >= deadline:
                return missing
            self._stop.wait(0.1)

    # -- serving delivery reports, closing ---------------------------------------------------
    def poll(self, timeout: float = 0.0) -> int:
        """Serves delivery reports for up to ``timeout`` seconds; returns how many were served."""
        self._last_poll = time.monotonic() + timeout
        return self._serve(timeout)

    def flush(self, timeout: float = 30.0) -> int:
        """Waits up to ``timeout`` seconds for every queued event's answer; returns how many are
        still without one (0: everything was acknowledged or reported)."""
        self._last_poll = time.monotonic() + timeout
        try:
            return self._flush(timeout)
        finally:
            self._last_poll = time.monotonic()

    def __len__(self) -> int:
        """Events handed to librdkafka and not yet answered."""
        return len(self._producer)

    def __bool__(self) -> bool:  # a producer with nothing queued is still a producer (`producer or default`)
        return True

    def close(self, timeout: float = 30.0) -> int:
        """Flushes (up to ``timeout`` s), then reports whatever is still unanswered as failed
        (``DeliveryFailed``, to ``on_error`` and the log) and stops. Returns that count."""
        if self._closed:
            return 0
        remaining = self._flush(timeout)
        if remaining:
            log.error("%d events were not acknowledged within %.1f s of closing the producer; "
                      "they are reported as failed", remaining, timeout)
            self._producer.purge(in_queue=True, in_flight=True)
            self._flush(min(timeout, 5.0))
        self._closed = True
        self._stop.set()
        if self._poller is not None and self._poller is not threading.current_thread():
            self._poller.join()
        return remaining

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EventProducer {self.config.get('bootstrap.servers')} prefix={self.topic_prefix!r}>"

    # -- internals --------------------------------------------------------------------------
    def _send_now(self, event: Event, key: str | None, idempotency_key: str | None, headers: ExtraHeaders,
                  queue_full_wait_s: float, on_delivery: Callable | None) -> None:
        """Publishes one event (``on_delivery=None``: the producer-level ``_on_delivery`` answers).
        The callback comes last, so the observed path's ``publish(deliver)`` is a positional partial."""
        topic, value, key, hdrs = self._prepare(event, key, idempotency_key, headers)
        self._produce(topic, value, key, hdrs, event.event_id, queue_full_wait_s, on_delivery)

    def _send_observed(self, event: Event, key: str | None, idempotency_key: str | None, headers: ExtraHeaders,
                       queue_full_wait_s: float, on_delivery: Callable | None) -> None:
        """``_send_now`` inside the observers' ``around_publish`` wraps."""
        assert self._around_publish is not None  # chosen at __init__ only when an observer wraps
        self._around_publish(event, on_delivery or self._on_delivery,
                             partial(self._send_now, event, key, idempotency_key, headers, queue_full_wait_s))

    def _send_encoded_observed(self, topic: str, value: bytes, key, headers: Headers, event_id: str,
                               queue_full_wait_s: float, on_delivery: Callable | None) -> None:
        """``_produce`` of an encoded event inside the observers' ``around_publish_encoded`` wraps."""
        assert self._around_publish_encoded is not None
        self._around_publish_encoded(_header(headers, "event-type") or "unknown", on_delivery or self._on_delivery,
                                     partial(self._produce, topic, value, key, headers, event_id, queue_full_wait_s))

    def _prepare(self, event: Event, key: str | None, idempotency_key: str | None,
                 headers: ExtraHeaders) -> tuple[str, bytes, str, Headers]:
        """(topic, encoded value, key, headers) of an event; raises what can be known at once."""
        route = self._routes.get(type(event)) or self._route(event)
        try:
            value = self.codec.encode(event)
        except Exception as exc:  # noqa: BLE001 - fastavro raises several types for values a schema cannot hold
            raise UnpublishableEvent(f"it does not encode with its schema: {exc}", event_id=event.event_id,
                                     event_type=route.spec.event_type, topic=route.topic) from exc
        try:
            hdrs = event_headers(route.static_headers, event, idempotency_key, headers)
        except ValueError as exc:  # a business idempotency key consumers would refuse, a reserved header
            raise UnpublishableEvent(str(exc), event_id=event.event_id, event_type=route.spec.event_type,
                                     topic=route.topic) from exc
        return route.topic, value, getattr(event, route.key_field) if key is None else key, hdrs

    def _route(self, event: Event) -> _Route:
        if not isinstance(event, Event):
            raise UnpublishableEvent(f"publish() takes an event of schemas.events, not {type(event).__name__}")
        try:
            spec = self.catalogue.for_event(event)
        except UnknownEventType as exc:
            raise UnpublishableEvent(str(exc), event_id=event.event_id) from exc
        route = self._routes[type(event)] = _Route(spec, spec.topic(self.topic_prefix), spec.key_field,
                                                   static_headers(spec))
        return route

    def _produce(self, topic: str, value: bytes, key, headers: Headers, event_id: str, queue_full_wait_s: float,
                 on_delivery: Callable | None) -> None:
        if self._closed:
            raise PublishError("the producer is closed", event_id=event_id, topic=topic)
        producer = self._producer
        try:
            # ignores: confluent-kafka's stub wants list[tuple[str, str | bytes | None]], and lists are invariant
            if on_delivery is None:
                producer.produce(topic, value, key, headers=headers)  # type: ignore[arg-type]
            else:
                producer.produce(topic, value, key, on_delivery=on_delivery, headers=headers)  # type: ignore[arg-type]
        except BufferError:
            self._produce_when_room(topic, value, key, headers, event_id, on_delivery, queue_full_wait_s)
        except KafkaException as exc:
            raise self._error(exc.args[0], event_id, topic, value) from exc
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self._unpolled = 0
            self._last_poll = time.monotonic()
            producer.poll(0)

    def _produce_when_room(self, topic, value, key, headers, event_id, on_delivery, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            self._serve(min(0.05, max(0.0, deadline - time.monotonic())))
            try:
                if on_delivery is None:
                    self._producer.produce(topic, value, key, headers=headers)
                else:
                    self._producer.produce(topic, value, key, on_delivery=on_delivery, headers=headers)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise QueueFull(f"librdkafka's local queue is full ({len(self._producer)} events waiting; "
                                    "queue.buffering.max.messages / .kbytes): the broker is slow or unreachable",
                                    event_id=event_id, event_type=self._event_type_of(value), topic=topic,
                                    code="_QUEUE_FULL", retriable=True) from None
            except KafkaException as exc:
                raise self._error(exc.args[0], event_id, topic, value) from exc

    def _error(self, err: KafkaError, event_id: str | None, topic: str, value: bytes | None) -> PublishError:
        """The PublishError for a librdkafka error about one event."""
        code = err.code()
        cls = MessageTooLarge if code in _TOO_LARGE else QueueFull if code == KafkaError._QUEUE_FULL else DeliveryFailed
        reason = err.str()
        hint = _HINTS.get(code)
        if hint:
            reason += f": {hint}"
        if code in _TOO_LARGE and value is not None:
            reason += f" ({len(value)} bytes encoded)"
        return cls(reason, event_id=event_id, event_type=self._event_type_of(value), topic=topic,
                   code=err.name(), retriable=err.retriable())

    def _event_type_of(self, value: bytes | None) -> str | None:
        if value is None or len(value) < HEADER_SIZE:
            return None
        try:
            return self.catalogue.by_fingerprint(bytes(value[2:HEADER_SIZE]))[0].event_type
        except Exception:  # noqa: BLE001 - bytes that are not ours
            return None

    def _event_id_of(self, value: bytes | None) -> str | None:
        """The event id of an encoded event (delivery reports carry no headers, but the value)."""
        if value is None:
            return None
        try:
            return self.codec.decode(value).event_id
        except Exception:  # noqa: BLE001 - bytes that are not ours
            return None

    def _on_delivery(self, err: KafkaError | None, msg) -> None:
        """The one delivery callback of ``publish()`` without ``wait``: silent on success."""
        if err is None:
            return
        value = msg.value()
        self._report(self._error(err, self._event_id_of(value), msg.topic(), value))

    def _report(self, error: PublishError) -> None:
        log.error("%s", error, extra={"event_id": error.event_id, "error_code": error.code})
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:  # noqa: BLE001 - a broken callback must not stop delivery reports
                log.exception("the on_error callback raised while handling: %s", error)

    def _settle_future(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future, event_id: str,
                       err: KafkaError | None, msg) -> None:
        if err is None:
            outcome: Delivery | PublishError = Delivery(msg.topic(), msg.partition(), msg.offset(), event_id)
        else:
            outcome = self._error(err, event_id, msg.topic(), msg.value())
        try:
            loop.call_soon_threadsafe(_resolve, future, outcome, self)
        except RuntimeError:  # the loop is closed: nobody awaits the future any more
            if isinstance(outcome, PublishError):
                self._report(outcome)

    def _settle_callback(self, on_result: ResultCallback, event_id: str, err: KafkaError | None, msg) -> None:
        try:
            if err is None:
                on_result(Delivery(msg.topic(), msg.partition(), msg.offset(), event_id), None)
            else:
                on_result(None, self._error(err, event_id, msg.topic(), msg.value()))
        except Exception:  # noqa: BLE001
            log.exception("a delivery result callback raised (event %s)", event_id)

    def _serve(self, timeout: float) -> int:
        """Serves delivery reports for up to ``timeout`` s; returns how many. Under gevent it serves
        what is ready, then yields to the other greenlets (a short sleep if nothing was ready)."""
        if not self._cooperative:
            return self._producer.poll(timeout)
        served = self._producer.poll(0)
        if timeout > 0:  # the other greenlets run meanwhile (sleep(0) just yields)
            _green_sleep(0 if served else min(timeout, GREENLET_SLICE_S))
        return served

    def _flush(self, timeout: float) -> int:
        """librdkafka's flush; under gevent, the same as a cooperative loop (``flush(0)`` sends what
        lingers at once and serves what is ready, without blocking)."""
        if not self._cooperative:
            return self._producer.flush(timeout)
        deadline = time.monotonic() + timeout
        while (waiting := self._producer.flush(0)) and (left := deadline - time.monotonic()) > 0:
            _green_sleep(min(left, GREENLET_SLICE_S))
        return waiting

    def _start_poller(self) -> None:
        self._poller = threading.Thread(target=self._poll_loop, name="events-producer-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            quiet = time.monotonic() - self._last_poll
            if quiet < IDLE_POLL_S:  # the caller serves reports itself now: keep off the GIL
                self._stop.wait(IDLE_POLL_S - quiet)
                continue
            try:
                if not self._serve(IDLE_POLL_S) and self._cooperative:
                    self._stop.wait(IDLE_POLL_S)  # a greenlet's slice is short: idle, it looks 50 times a second
            except Exception:  # noqa: BLE001 - a callback's error must not end delivery reports
                log.exception("serving delivery reports failed")


class _Waiter:
    """The delivery callback of one event someone waits for (``wait=True``, ``publish_many``)."""

    __slots__ = ("producer", "event_id", "done", "outcome", "abandoned", "lock")

    def __init__(self, producer: EventProducer, event_id: str):
        self.producer = producer
        self.event_id = event_id
        self.done = threading.Event()
        self.outcome: Delivery | PublishError | None = None
        self.abandoned = False
        self.lock = threading.Lock()

    def __call__(self, err: KafkaError | None, msg) -> None:
        if err is None:
            outcome: Delivery | PublishError = Delivery(msg.topic(), msg.partition(), msg.offset(), self.event_id)
        else:
            outcome = self.producer._error(err, self.event_id, msg.topic(), msg.value())
        with self.lock:
            self.outcome = outcome
            self.done.set()
            late = self.abandoned
        if late and isinstance(outcome, PublishError):
            self.producer._report(outcome)  # the waiter gave up: report like a fire-and-forget event

    def result(self, timeout: float) -> Delivery:
        """Serves delivery reports on this thread (the poll thread may serve this one: hence the
        short slices) until the answer came or ``timeout`` passed."""
        producer = self.producer
        deadline = time.monotonic() + timeout
        while not self.done.is_set() and (left := deadline - time.monotonic()) > 0:
            producer._last_poll = time.monotonic()
            producer._serve(min(left, 0.01))
        with self.lock:
            if not self.done.is_set():
                self.abandoned = True
                raise DeliveryFailed(f"no answer from the broker within {timeout:g} s (it may still be delivered; "
                                     "a late failure goes to on_error)", event_id=self.event_id,
                                     code="_TIMED_OUT", retriable=True)
        if isinstance(self.outcome, PublishError):
            raise self.outcome
        assert self.outcome is not None  # done: the report set it
        return self.outcome


def _resolve(future: asyncio.Future, outcome: Delivery | PublishError, producer: EventProducer) -> None:
    if future.cancelled():
        if isinstance(outcome, PublishError):
            producer._report(outcome)
        return
    if isinstance(outcome, PublishError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _log_client_error(err: KafkaError) -> None:
    """librdkafka's client-level errors (brokers down, authentication, a fatal idempotence error)."""
    if err.fatal():
        log.critical("the Kafka producer hit a fatal error and cannot publish any more: %s", err.str())
    else:
        logging.getLogger("producers.librdkafka").warning("Kafka client: %s", err.str())


def _green_sleep(seconds: float) -> None:
    """gevent's sleep (the process is patched: see ``_gevent_patched``), whether or not ``time`` was."""
    import gevent

    gevent.sleep(seconds)


def _gevent_patched() -> bool:
    """Whether gevent monkey-patched ``threading``: our threads are then greenlets of one OS thread."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


_codec: AvroCodec | None = None


def _default_codec() -> AvroCodec:
    """One codec per process for the default catalogue (its schemas are parsed once)."""
    global _codec
    if _codec is None:
        _codec = AvroCodec(CATALOGUE)
    return _codec


def _header(headers: Headers, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None
