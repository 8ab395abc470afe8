"""4. End-to-end latency: ``EventProducer.publish`` at a fixed rate into a live ``events run``,
and the time from the ``publish()`` call to the handler's first line (``time.time_ns()`` on both
sides, one machine, so one clock), per event.

Each profile runs one consumer process; each rate runs ``reps`` windows of ``seconds`` seconds;
before the first profile, ``WARM_UP_S`` of paced traffic warm the broker up, not measured;
each window's p50/p99/p99.9 is a repetition (the table shows the median window and the spread).
The publisher paces itself on a schedule (the events due by now, then a short sleep) and stamps
each event when ``publish()`` is called; the rate it achieved is reported beside the target.

Profiles:

- **default**: what we ship: producer ``linger.ms=5`` (lz4, acks=all, idempotent); consumer
  ``fetch.wait.max.ms=100``, 8 workers;
- **low-latency**: producer ``linger.ms=1`` (a batch waits at most 1 ms for company);
  consumer ``fetch.wait.max.ms=10``; TCP_NODELAY on both (``socket.nagle.disable=true``).
  Measured while building this: the producer's linger is what moves p50 (5 ms -> 1 ms ->
  0 ms gave p50 5.8 / 1.9 / 0.6 ms at 1,000/s), the consumer's fetch wait and Nagle made no
  difference we could tell from the noise (a waiting fetch returns as soon as data arrives, with
  ``fetch.min.bytes=1``); ``linger.ms=0`` sends one request per event and, on this shared 2-core
  box, fell behind at 5,000-10,000/s, so the profile keeps 1 ms;
- **inline**: the shipped settings with ``EVENTS_INLINE=true`` (handlers on the poll loop's thread),
  at 1,000 and 10,000/s only;
- **idempotent, batched, SQLite** and **idempotent, batched, PostgreSQL fsync off**: the shipped
  settings with the idempotency step (a claim per event) and batching on (the default
  ``batch_max``), at 1,000 and 10,000/s only (of ``--rates``); the clock stops at the handler's
  first line, as for the others (the batch's commit comes after);
- **default + gc.freeze (prototype)**: the shipped settings with ``bench/prototype.py``'s ``gc``
  patch in the consumer. What it measured first (freezing start-up's ~150,000 objects away from the
  collector's full passes, 20-40 ms each) ships in ``tune_interpreter``; it now adds one more
  ``gc.collect(); gc.freeze()`` after start-up and comes out level with ``default``.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from pathlib import Path

from dify_events.producers.producer import EventProducer
from dify_events.schemas.settings import Settings

from .common import PARTITIONS, SENT_HEADER, WINDOW_HEADER, Row, app_events, postgres, wait_for
from .runtime import RuntimeProcess

PROFILES: dict[str, dict] = {
    "default": {"producer": {}, "consumer": {}},
    "low-latency": {"producer": {"linger.ms": 1, "socket.nagle.disable": True},
                    "consumer": {"EVENTS_KAFKA_FETCH_WAIT_MAX_MS": "10", "EVENTS_KAFKA_SOCKET_NAGLE_DISABLE": "true"}},
    "inline": {"producer": {}, "consumer": {"EVENTS_INLINE": "true"}, "rates": (1000, 10000)},
    # idempotent: a claim per event, batched (the default); rates: the rates of --rates it runs at
    "idempotent, batched, SQLite": {"producer": {}, "consumer": {}, "idempotent": "sqlite", "rates": (1000, 10000)},
    "idempotent, batched, PostgreSQL fsync off": {"producer": {}, "consumer": {}, "idempotent": "postgres",
                                                  "rates": (1000, 10000)},
}
PROTOTYPE_PROFILES: dict[str, dict] = {
    "default + gc.freeze (prototype)": {"producer": {}, "consumer": {"BENCH_PATCH": "gc"}},
}
PERCENTILES = (("p50", 0.50), ("p99", 0.99), ("p99.9", 0.999))
# Paced traffic through the broker before the first profile, not measured: whichever profile came first
# had a p99 at 1,000/s ~3 ms worse than the same profile run again later (12-08: 9.6-10.8 against 7.3 ms)
WARM_UP_S = 20


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def publish_at(producer: EventProducer, events, rate: int, window: str) -> float:
    """Publishes ``events`` at ``rate``/s; returns the rate achieved."""
    publish = producer.publish
    tag = window.encode()
    start = time.perf_counter()
    sent = 0
    total = len(events)
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            publish(events[sent], headers=[(SENT_HEADER, b"%d" % time.time_ns()), (WINDOW_HEADER, tag)])
            sent += 1
        ahead = sent / rate - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(min(ahead, 0.001))
    producer.poll(0)
    return total / (time.perf_counter() - start)


def warm_up(bootstrap: str, topics, home: Path, log) -> None:
    """``WARM_UP_S`` of 1,000 events/s published to an ``events run`` of the shipped settings, not measured."""
    prefix = f"{topics.prefix}lw"
    topics.create([f"{prefix}.app"], PARTITIONS)
    log(f"  latency: warming the broker up ({WARM_UP_S} s at 1,000/s, not measured) ...")
    events = app_events(WARM_UP_S * 1000)
    with EventProducer(settings=Settings(bootstrap_servers=bootstrap, topic_prefix=prefix)) as producer, \
            RuntimeProcess(bootstrap=bootstrap, prefix=prefix, home=home, group=f"bench-{uuid.uuid4().hex[:8]}",
                           latency=True) as consumer:
        publish_at(producer, events, 1000, "warmup")
        wait_for(lambda: consumer.progress()["n"] >= len(events), 60, what="the warm-up's events")


def section(bootstrap: str, topics, home: Path, *, rates: list[int], seconds: float, reps: int,
            with_prototypes: bool = True, log=print) -> list[Row]:
    rows: list[Row] = []
    profiles = {**PROFILES, **(PROTOTYPE_PROFILES if with_prototypes else {})}
    warm_up(bootstrap, topics, home, log)
    for profile, conf in profiles.items():
        profile_rates = [rate for rate in rates if rate in conf.get("rates", rates)]
        if not profile_rates:
            continue
        stack = contextlib.ExitStack()
        env = dict(conf["consumer"])
        if conf.get("idempotent") == "postgres":
            try:
                env["EVENTS_DATABASE_URL"] = stack.enter_context(postgres(fsync=False))[0]
            except Exception as exc:  # noqa: BLE001 - PostgreSQL could not start: the other profiles still count
                log(f"  latency {profile}: PostgreSQL did not start ({exc}); skipped")
                continue
        prefix = f"{topics.prefix}l{len(rows)}"
        section_name = "latency" if profile in PROFILES else "prototype"
        topics.create([f"{prefix}.app"], PARTITIONS)
        settings = Settings(bootstrap_servers=bootstrap, topic_prefix=prefix)
        producer = EventProducer(conf["producer"], settings=settings)
        consumer = RuntimeProcess(bootstrap=bootstrap, prefix=prefix, home=home, group=f"bench-{uuid.uuid4().hex[:8]}",
                                  latency=True, idempotent="idempotent" in conf, env=env).start()
        try:
            # warm up until the consumer has joined and handled events (not counted: their own window)
            warm = app_events(200)
            deadline = time.monotonic() + 90
            while consumer.progress()["n"] == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("the latency consumer never handled an event")
                publish_at(producer, warm[:20], 200, "warmup")
            publish_at(producer, warm, 1000, "warmup")
            wait_for(lambda consumer=consumer: consumer.progress()["n"] >= 200, 30, what="warm-up events")
            achieved: dict[int, list[float]] = {rate: [] for rate in profile_rates}
            for rate in profile_rates:
                for rep in range(reps):
                    events = app_events(int(rate * seconds))  # fresh ids each window: an idempotent group skips repeats
                    window = f"{rate}-{rep}"
                    achieved[rate].append(publish_at(producer, events, rate, window))
                    wait_for(lambda consumer=consumer, window=window, events=events:
                             consumer.progress()["windows"].get(window, 0) >= len(events), 60,
                             what=f"latency window {window}")
                    time.sleep(0.3)
            consumer.stop()
            latencies = consumer.latencies()
        finally:
            consumer.stop()
            producer.close()
            stack.close()
        for rate in profile_rates:
            per_window = []
            for rep in range(reps):
                values = sorted(latencies.get(f"{rate}-{rep}", []))
                per_window.append({name: percentile(values, q) / 1e6 for name, q in PERCENTILES})
            target = f"{rate:,}/s (achieved {statistics.median(achieved[rate]):,.0f}/s)"
            for name, _ in PERCENTILES:
                rows.append(Row(section_name, f"latency {profile}, {target}, {name}" if section_name == "prototype"
                                else f"{profile}, {target}, {name}", "ms", [w[name] for w in per_window],
                                note=f"{int(rate * seconds):,} events/window" if name == "p50" else "",
                                extra={"profile": profile, "rate": rate, "percentile": name,
                                       "achieved_rate": achieved[rate]}))
        log(f"  latency {profile}: " + ", ".join(f"{r.extra['rate']}/s {r.extra['percentile']} {r.median:.1f} ms"
                                                  for r in rows[-3 * len(profile_rates):]))
    return rows
