"""The benchmark's consumer group, run by ``events run --group $BENCH_GROUP`` with
``EVENTS_HANDLER_MODULES=bench.handlers`` (nothing is registered without ``BENCH_GROUP``).

One handler per app event type, doing nothing but counting (and, with ``BENCH_LATENCY=1``,
recording publish->handler time from the ``bench-sent-ns`` header). Counting takes no lock: each
worker thread keeps its own ``[count, first ns, last ns]``, and a reporter thread writes the sums
(and the process's CPU time since the first event) to ``BENCH_OUT`` (JSON, replaced atomically)
every 20 ms while they change, which the benchmark polls. Latencies are
written to ``BENCH_OUT.latency.json`` when the process exits (the benchmark stops it with SIGTERM:
the runtime drains, commits, leaves the group, returns).

``BENCH_IDEMPOTENT=1`` keeps the idempotency step (a claim in ``EVENTS_DATABASE_URL`` or the
SQLite database under ``EVENTS_HOME`` per event); otherwise the group is ``idempotent=False``.
``BENCH_SLEEP_MS=50`` makes the handler sleep that long per event (an I/O-bound job), counted from
the start of its first event to the end of its last, with the partitions it saw;
``BENCH_DELIVERY=shared`` makes the group a shared one (a Kafka share group).
``BENCH_SEED=provider-usage`` gives the group the seed's provider-usage handler instead (its tables,
its handler for ``MessageWasCreated``, idempotent; counted when its transaction commits): the seed's
work under a fresh group name, so every run reads its topic from the start (``bench/seed.py``).
How many events share a transaction is the shipped setting ``EVENTS_BATCH_MAX`` (1: one each).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

from dify_events.consumers import ConsumerGroup, register

from .common import APP_EVENTS, SENT_HEADER, WINDOW_HEADER, vm_hwm_kib

NAME = os.environ.get("BENCH_GROUP")
OUT = os.environ.get("BENCH_OUT")
LATENCY = os.environ.get("BENCH_LATENCY") == "1"
SLEEP_S = int(os.environ.get("BENCH_SLEEP_MS", "0")) / 1000

_threads: dict[int, list[int]] = {}                    # thread id -> [count, first ns, last ns]
_latencies: dict[str, list[int]] = defaultdict(list)   # window -> publish->handler ns
_partitions: set[tuple[str, int]] = set()              # what the slow handler saw


def count(n: int = 1) -> None:
    now = time.time_ns()
    state = _threads.get(threading.get_ident())
    if state is None:
        state = _threads[threading.get_ident()] = [0, now, now]
    state[0] += n
    state[2] = now


def noop(event, ctx) -> None:
    count()


def slow(event, ctx) -> None:
    """``noop`` after ``SLEEP_S``, its first event counted from its start (so n / (last - first) is the rate)."""
    started = time.time_ns()
    time.sleep(SLEEP_S)
    _partitions.add((ctx.message.topic, ctx.message.partition))
    _threads.setdefault(threading.get_ident(), [0, started, started])
    noop(event, ctx)


def timed(event, ctx) -> None:
    now = time.time_ns()
    headers = ctx.message.headers
    sent = headers.get(SENT_HEADER)
    if sent is not None:
        _latencies[headers.get(WINDOW_HEADER, b"").decode()].append(now - int(sent))
    noop(event, ctx)


_cpu_at_first: list[tuple[float, int]] = []  # (process CPU seconds, events) when the reporter first saw one


def snapshot(final: bool = False) -> dict:
    states = list(_threads.values())
    n = sum(s[0] for s in states)
    cpu = time.process_time()
    if n and not _cpu_at_first:
        _cpu_at_first.append((cpu, n))
    return {"pid": os.getpid(), "n": n, "first_ns": min((s[1] for s in states), default=0),
            "last_ns": max((s[2] for s in states), default=0),
            "cpu_s": cpu - _cpu_at_first[0][0] if _cpu_at_first else 0.0,
            "cpu_n": n - _cpu_at_first[0][1] if _cpu_at_first else 0,
            "vm_hwm_kib": vm_hwm_kib() if final else None,
            "windows": {w: len(v) for w, v in list(_latencies.items())},
            "partitions": sorted(_partitions)}


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _report() -> None:
    assert OUT is not None  # started only with BENCH_OUT
    path = Path(OUT)
    last_n = -1
    while True:
        data = snapshot()
        if data["n"] != last_n:
            _write(path, data)
            last_n = data["n"]
        time.sleep(0.02)


def _at_exit() -> None:
    assert OUT is not None  # registered only with BENCH_OUT
    _write(Path(OUT), snapshot(final=True))
    if LATENCY:
        _write(Path(OUT + ".latency.json"), dict(_latencies))


def provider_usage_group(name: str) -> ConsumerGroup:
    """The seed's provider-usage handler (and tables) in a group named ``name``. A message is counted when the
    transaction it was handled in commits, once: a batch rolled back (a deadlock) runs its events again."""
    from sqlalchemy import event as sqlalchemy_event
    from sqlalchemy.orm import Session

    from dify_events.consumers.handlers.provider_usage import group as seed
    from dify_events.consumers.handlers.provider_usage import record_provider_usages
    from dify_events.schemas.events import MessageWasCreated

    group = ConsumerGroup(name, tables=seed.tables)
    committed: set[str] = set()
    lock = threading.Lock()

    @group.batch_handler(MessageWasCreated)  # as the seed's: a batch's messages in one call, one alone
    def provider_usage(events, ctx) -> None:
        record_provider_usages(events, ctx)
        ctx.session.info.setdefault("bench_handled", []).extend(event.message_id for event in events)

    def after_commit(session) -> None:
        with lock:
            new = set(session.info.pop("bench_handled", ())) - committed
            committed.update(new)
        if new:
            count(len(new))

    sqlalchemy_event.listen(Session, "after_commit", after_commit)
    sqlalchemy_event.listen(Session, "after_rollback", lambda session: session.info.pop("bench_handled", None))
    return group


if NAME:
    if os.environ.get("BENCH_SEED") == "provider-usage":
        register(provider_usage_group(NAME))
    else:
        group = register(ConsumerGroup(NAME, idempotent=os.environ.get("BENCH_IDEMPOTENT") == "1",
                                       delivery="shared" if os.environ.get("BENCH_DELIVERY") == "shared"
                                       else "ordered"))
        for model in APP_EVENTS:
            group.handler(model)(slow if SLEEP_S else timed if LATENCY else noop)
    if OUT:
        threading.Thread(target=_report, name="bench-report", daemon=True).start()
        atexit.register(_at_exit)
    if os.environ.get("BENCH_PATCH"):
        from . import prototype  # noqa: F401 - swaps in the prototyped runtime code (bench/prototype.py)
