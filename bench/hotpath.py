"""Where the consumer's time goes: the runtime's per-message path, stage by stage, on one thread,
without Kafka (``python -m bench.hotpath``).

The messages are real ``confluent_kafka.Message`` objects holding the very bytes and headers the
SDK publishes (app events, the four types in turn, 1,000 keys). Each stage runs the same messages
(best of ``--rounds`` passes, microseconds of CPU per event), adding one part at a time:

1. ``touch``: what any consumer does per message: ``error()``, ``topic()``, ``partition()``,
   ``offset()``, ``key()``, ``headers()``, ``value()`` (Python-C crossings);
2. ``fastavro``: + the hand-written loop's decode (header stripped, ``schemaless_reader``);
3. ``AvroCodec``: + the codec's decode into the validated pydantic event instead;
4. ``runtime``: the runner's own code: ``_accept`` (header check, lanes, offsets, ``Job``),
   ``_process`` (the pipeline chain: DeadLetters, Decode, Retries, the handler), completions,
   watermarks and ``store_offsets``, with the dispatcher replaced by an inline call (the worker
   threads' hand-off is what the real benchmark adds on top of this);
   (``runtime + metrics``: with an OpenTelemetry meter provider, as ``events run`` has by
   default: its instruments on the hot path);
   (``runtime, gc frozen``: after ``gc.freeze()`` and ``gc.set_threshold(10_000, 10, 10)``: what the
   collector's passes over start-up's objects cost);
5. the same with each prototype of ``bench/prototype.py`` (``--patch NAME``);
6. ``threads xN``: the runtime with the real ``KeyedDispatcher`` and N worker threads (the poll
   loop's back-pressure included): what the hand-off between threads adds.

``--cprofile`` then prints the runtime stage's functions by own time (cProfile inflates
Python-heavy code, so read it for the ranking, and stage 4 minus stage 3 for the size).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import time
from collections import Counter
from functools import partial
from io import BytesIO

from confluent_kafka import Message
from fastavro import schemaless_reader

from .common import PARTITIONS, app_events

TOPIC = "bench.app"


def messages(count: int) -> list[Message]:
    """What a consumer of ``bench.app`` would fetch: SDK-encoded values and headers."""
    from dify_events.producers.producer import EventProducer
    from dify_events.schemas.settings import Settings

    sdk = EventProducer({"bootstrap.servers": "127.0.0.1:1"},
                        settings=Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="bench"), poll_thread=False)
    out = []
    offsets: Counter[int] = Counter()
    for event in app_events(count):
        _, value, key, headers = sdk._prepare(event, None, None, None)
        partition = hash(key) % PARTITIONS
        # ignore: confluent-kafka's stub wants list[tuple[str, str | bytes | None]], and lists are invariant
        out.append(Message(topic=TOPIC, partition=partition, offset=offsets[partition], key=key.encode(),
                           value=value, headers=headers,  # type: ignore[arg-type]
                           timestamp=(1, int(time.time() * 1000))))
        offsets[partition] += 1
    sdk.close(0)
    return out


class InlineDispatcher:
    """The dispatcher's interface, running each job at once on the caller's thread."""

    def __init__(self, process):
        self.process = process
        self.pending = 0

    def submit(self, items) -> int:
        process = self.process
        n = 0
        for _key, job in items:
            process(job)
            n += 1
        return n


class NullConsumer:
    def store_offsets(self, offsets=None):
        pass


class NullProducer:
    """Stands in for the dead-letter producer (no message of the bench fails): no client's threads."""

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def meter_provider():
    """An OpenTelemetry meter provider like ``events run``'s (a reader that collects on demand),
    or None when the runtime has no metrics (``consumers.telemetry``)."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        import dify_events.consumers.telemetry.metrics  # noqa: F401
    except ImportError:
        return None
    return MeterProvider(metric_readers=[InMemoryMetricReader()])


def make_runner(patches: list[str], metrics: bool = False):
    from dify_events.consumers.breaker import OutageBreaker
    from dify_events.consumers.group import ConsumerGroup
    from dify_events.consumers.observers import Observers
    from dify_events.consumers.pipeline import Resources
    from dify_events.consumers.runner import GroupRunner
    from dify_events.consumers.telemetry import observers as telemetry_observers
    from dify_events.schemas.codec import AvroCodec
    from dify_events.schemas.settings import Settings

    from . import prototype
    from .common import APP_EVENTS

    prototype.apply(patches)
    group = ConsumerGroup("bench-profile", idempotent=False)

    def noop(event, ctx):
        pass

    for model in APP_EVENTS:
        group.handler(model)(noop)
    runner = GroupRunner(group, settings=Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="bench"),
                         concurrency=1, health_port=0, create_topics=False)
    provider = meter_provider() if metrics else None
    # as GroupRunner._make_pipeline makes them, without the global meter provider
    observers = telemetry_observers(group.name, dead_letter_topic=group.dlq_topic("bench"), meter_provider=provider,
                                    global_meter=False)
    runner.build_pipeline(Resources(group=group, prefix="bench", codec=AvroCodec(group.catalogue),
                                    breaker=OutageBreaker(group.name), observers=Observers.of(observers),
                                    dead_letter_producer=NullProducer))  # type: ignore[arg-type]
    # ignores: stand-ins for the worker threads and the Kafka consumer (duck-typed, not subclasses)
    runner._dispatcher = InlineDispatcher(runner._process)  # type: ignore[assignment]
    runner._consumer = NullConsumer()  # type: ignore[assignment]
    return runner


def run_runtime(runner, msgs: list[Message], batch: int = 500) -> None:
    from dify_events.consumers.job import Lane

    runner.outcomes.clear()
    runner._lanes.clear()
    for p in range(PARTITIONS):  # a fresh assignment: offsets start again
        lane = Lane(TOPIC, p)
        lane.offsets = runner._tracker.open(TOPIC, p)
        runner._lanes[(TOPIC, p)] = lane
    accept, drain = runner._accept, runner._drain
    dispatcher = runner._dispatcher
    threaded = not isinstance(dispatcher, InlineDispatcher)
    for i in range(0, len(msgs), batch):
        accept(msgs[i:i + batch])
        drain()
        if threaded and dispatcher.pending >= runner.max_buffered:  # the poll loop's back-pressure
            dispatcher.wait_below(runner.max_buffered // 2, 10.0)
    if threaded:
        dispatcher.wait_idle(30.0)
        drain()
    assert runner.outcomes["handled"] >= len(msgs), runner.outcomes


def threaded_runner(patches: list[str], workers: int):
    """A runner whose dispatcher is the real one (or a prototype's), with ``workers`` threads."""
    import dify_events.consumers.runner  # noqa: F401 - makes consumers.runner an attribute
    from dify_events import consumers

    runner = make_runner(patches)
    runner._dispatcher = consumers.runner.KeyedDispatcher(runner._process, workers=workers, name="bench-worker")
    runner._dispatcher.start()
    make_runner([])  # undo the patch for the runners made after this one
    return runner


def stages(msgs: list[Message], rounds: int, patches: list[str], threads: list[int]) -> dict[str, tuple[float, float]]:
    from dify_events.schemas.catalogue import CATALOGUE
    from dify_events.schemas.codec import AvroCodec

    schemas = {spec.current.fingerprint: spec.current.schema for spec in CATALOGUE}
    codec = AvroCodec()

    def touch(ms):
        for m in ms:
            m.error(), m.topic(), m.partition(), m.offset(), m.key(), m.headers(), m.value()

    def fast(ms):
        for m in ms:
            m.error(), m.topic(), m.partition(), m.offset(), m.key(), m.headers()
            value = m.value()
            fo = BytesIO(value)
            fo.seek(10)
            schemaless_reader(fo, schemas[value[2:10]], None)

    def typed(ms):
        decode = codec.decode
        for m in ms:
            m.error(), m.topic(), m.partition(), m.offset(), m.key(), m.headers()
            decode(m.value())

    cases = {"touch": touch, "fastavro": fast, "AvroCodec": typed}
    baseline = make_runner([])
    cases["runtime"] = lambda ms: run_runtime(baseline, ms)
    if meter_provider() is not None:
        with_metrics = make_runner([], metrics=True)
        cases["runtime + metrics"] = lambda ms: run_runtime(with_metrics, ms)

    def frozen(ms):  # bench/prototype.py's `gc` patch: start-up's objects frozen, young collections rarer
        import gc

        from .prototype import GC_THRESHOLD

        threshold = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)
        try:
            run_runtime(baseline, ms)
        finally:
            gc.set_threshold(*threshold)
            gc.unfreeze()

    cases["runtime, gc frozen"] = frozen
    for patch in patches:
        patched = make_runner([patch])
        cases[f"runtime+{patch}"] = partial(run_runtime, patched)
        make_runner([])  # undo: later runners are built unpatched (apply() patches modules)
    for workers in threads:
        for patch in ["", *patches]:
            runner = threaded_runner([patch] if patch else [], workers)
            cases[f"threads x{workers}" + (f"+{patch}" if patch else "")] = partial(run_runtime, runner)
    best = {name: float("inf") for name in cases}
    wall = {name: float("inf") for name in cases}
    for _ in range(rounds):  # taking turns, so that a busy machine slows them alike
        for name, fn in cases.items():
            start, start_wall = time.process_time(), time.perf_counter()
            fn(msgs)
            best[name] = min(best[name], time.process_time() - start)
            wall[name] = min(wall[name], time.perf_counter() - start_wall)
    return {name: (t / len(msgs) * 1e6, len(msgs) / wall[name]) for name, t in best.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--patch", action="append", default=[], help="a prototype of bench/prototype.py (repeat)")
    parser.add_argument("--threads", default="1,8", help="worker counts of the threaded stages ('' for none)")
    parser.add_argument("--cprofile", action="store_true", help="print the runtime stage's functions by own time")
    args = parser.parse_args(argv)
    logging.getLogger("producers").setLevel(logging.CRITICAL)  # the offline SDK has no broker to reach
    msgs = messages(args.events)
    result = stages(msgs, args.rounds, args.patch, [int(t) for t in args.threads.split(",") if t])
    print(f"{args.events:,} messages, best of {args.rounds} passes: CPU microseconds per event (all threads), "
          "and events/s")
    prev = None
    for name, (us, rate) in result.items():
        step = f"  (+{us - prev:.1f})" if prev is not None and name in ("fastavro", "AvroCodec", "runtime") else ""
        print(f"  {name:28}{us:7.1f} us{rate:>12,.0f}/s{step}")
        if name in ("touch", "fastavro", "AvroCodec", "runtime"):
            prev = us
    if args.cprofile:
        for name in ["runtime", *(f"runtime+{p}" for p in args.patch)]:
            runner = make_runner([name.split("+", 1)[1]] if "+" in name else [])
            profiler = cProfile.Profile()
            profiler.enable()
            run_runtime(runner, msgs)
            profiler.disable()
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(25)
            print(f"\n{name}: functions by own time (cProfile)")
            print("\n".join(line for line in stream.getvalue().splitlines()[4:] if line.strip()))


if __name__ == "__main__":
    main()
