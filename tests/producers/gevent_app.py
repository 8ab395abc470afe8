"""Publishing from where Dify runs, under gevent: both halves are started by ``test_gevent.py``.

- Dify's API: a WSGI application for gunicorn's gevent workers (``-k gevent``). Each worker makes
  its producer on first use (after gevent patched it) with ``poll_thread=False``, and closes it,
  flushing, in gunicorn's ``worker_exit`` hook (this module is also the ``-c python:`` config).
- Dify's Celery workers (``-P gevent``): ``python -m tests.producers.gevent_pool URL TASKS`` patches
  the process, then ``pool_main`` runs tasks on a pool of greenlets, each publishing through the
  SDK and through the outbox in a transaction, while the outbox relay runs in a greenlet of its own.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable

from gevent import monkey
from gevent.pool import Pool
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from dify_events.producers import EventProducer, OutboxRelay
from dify_events.producers.outbox import add_to_outbox, create_outbox_table, outbox_status
from dify_events.schemas.events import AppWasCreated

_producer: EventProducer | None = None


def app_event(name: str) -> AppWasCreated:
    return AppWasCreated(tenant_id="tenant-gevent", app_id=f"app-{uuid.uuid4().hex[:8]}", mode="chat", name=name,
                         created_by="u-1")


# -- gunicorn -----------------------------------------------------------------------------------
def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """``GET /publish?wait=1``: publishes one event (waiting for the broker with ``wait=1``);
    answers its id and whether this worker runs patched. Any other path: 200, for readiness."""
    global _producer
    if environ.get("PATH_INFO") != "/publish":
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]
    if _producer is None:
        _producer = EventProducer(poll_thread=False)
    event = app_event("from-gunicorn")
    wait = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("wait") == ["1"]
    _producer.publish(event, wait=wait)
    body = json.dumps({"event_id": event.event_id, "patched": monkey.is_module_patched("threading")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def worker_exit(server: object, worker: object) -> None:
    """gunicorn's hook, as an application would use it: a stopping worker flushes what it published."""
    if _producer is not None:
        _producer.close(10)


# -- a gevent pool, as Celery's ------------------------------------------------------------------
def pool_main() -> None:
    url, tasks = sys.argv[1], int(sys.argv[2])
    assert monkey.is_module_patched("threading"), "run through tests.producers.gevent_pool, which patches first"
    engine = create_engine(url)
    create_outbox_table(engine)
    producer = EventProducer(poll_thread=False)
    relay = OutboxRelay(engine, poll_interval_s=0.05)  # its own producer, with the poll thread: a greenlet here
    stop = threading.Event()
    relaying = threading.Thread(target=relay.run, args=(stop,))
    relaying.start()

    def task(number: int) -> tuple[str, str]:
        direct, queued = app_event(f"sdk-{number}"), app_event(f"outbox-{number}")
        producer.publish(direct, wait=number % 2 == 0)
        with Session(engine) as session, session.begin():
            add_to_outbox(session, queued)
        return direct.event_id, queued.event_id

    published = Pool(20).map(task, range(tasks))
    unanswered = producer.flush(30)
    deadline = time.monotonic() + 30
    while (pending := outbox_status(engine)["pending"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    relaying.join(30)
    relay.close()
    producer.close(10)
    print(json.dumps({"sdk": [d for d, _ in published], "outbox": [q for _, q in published],
                      "unanswered": unanswered, "pending": pending}))
