"""Under gevent, as Dify runs (gunicorn's gevent workers, Celery's gevent pool): greenlets publish
through the SDK and the outbox at once, nothing hangs (every process ends within its deadline)
and nothing is lost (every event is read back from the broker)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dify_events.consumers.broker.local import free_port
from dify_events.schemas import headers as names

from .conftest import headers_of
from .support import wait_until

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 90  # a process under gevent that outlives this hangs


def event_ids(messages: list) -> list[str]:
    return [headers_of(m)[names.EVENT_ID].decode() for m in messages]


def test_a_gevent_pool_publishes_through_the_sdk_and_the_outbox_relay_without_hanging_or_losing(
        domain_topics, database_url, read_messages):
    # Given a process patched by gevent, as a Celery worker with the gevent pool
    # When 200 tasks on 20 greenlets each publish one event through the SDK (poll_thread=False, half of them
    # waiting for the broker) and add one to the outbox in a transaction, while the relay runs in a greenlet
    done = subprocess.run([sys.executable, "-m", "tests.producers.gevent_pool", database_url, "200"], cwd=REPO,
                          capture_output=True, text=True, timeout=DEADLINE_S)

    # Then the process ended in time, with everything flushed and relayed
    assert done.returncode == 0, done.stderr[-3000:]
    published = json.loads(done.stdout.splitlines()[-1])
    assert published["unanswered"] == 0 and published["pending"] == 0
    # And every event is on the topic, once
    on_topic = event_ids(read_messages([f"{domain_topics}.app"], 400, settle_s=0.5))
    assert sorted(on_topic) == sorted(published["sdk"] + published["outbox"])


def test_gunicorn_gevent_workers_publish_every_request_and_flush_on_a_graceful_stop(
        domain_topics, read_messages):
    # Given gunicorn with two gevent workers serving an application that publishes one event per request
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--worker-class", "gevent", "--workers", "2", "--bind", f"127.0.0.1:{port}",
         "--config", "python:tests.producers.gevent_app", "tests.producers.gevent_app:application"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def get(number: int) -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/publish?wait={number % 2}", timeout=30) as response:
                return json.loads(response.read())

        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/"), 60, "gunicorn to answer")
        # When 60 requests arrive 20 at a time, half of them waiting for the broker's acknowledgement
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(get, range(60)))
        # And gunicorn is stopped gracefully (SIGTERM), as a rollout does
        server.send_signal(signal.SIGTERM)
        stderr = server.communicate(timeout=DEADLINE_S)[1]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    # Then every request was served by a patched worker, gunicorn stopped in time, and every event is on the topic
    assert server.returncode == 0, stderr[-3000:]
    assert all(answer["patched"] for answer in answers)
    published = [answer["event_id"] for answer in answers]
    on_topic = event_ids(read_messages([f"{domain_topics}.app"], len(published), settle_s=0.5))
    assert sorted(on_topic) == sorted(published)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False
