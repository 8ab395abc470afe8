"""One console per module, on the real broker, over a group with lag and dead letters; a real
headless Chromium (Playwright) signed in to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from dify_events.consumers.broker.local import free_port
from dify_events.consumers.config import group_id
from dify_events.schemas.topics import await_served
from tests.conftest import unique
from tests.console import handlers
from tests.consumers.support import app_event, publish
from tests.recovery.support import end_offsets, wait_committed_to_end
from tests.support.browser import ARGS, chromium
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "console-test-token-0123456789"


@dataclass
class World:
    url: str
    prefix: str
    env: dict[str, str]
    database_url: str
    admin: AdminClient
    log: Path
    screens: Path
    since: datetime               # the replay's start: after the poison, before the rest
    poison: list                  # the two events dead-lettered
    group_id: str
    metrics_port: int             # the console scrapes the group's /metrics here

    @property
    def topic(self) -> str:
        return f"{self.prefix}.app"

    def start_group(self, **env: str) -> subprocess.Popen:
        log = open(self.log.with_name(f"group-{time.monotonic_ns()}.log"), "wb")  # noqa: SIM115 - the process's
        return subprocess.Popen([sys.executable, "-m", "dify_events.consumers", "run", "--group", handlers.GROUP,
                                 "--health-port", "0", "--metrics-port", str(self.metrics_port)],
                                env={**self.env, **env}, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def audit_lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if "consumers.console.audit" in line]


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="module")
def world(kafka_bootstrap, kafka_client_config, admin, tmp_path_factory) -> Iterator[World]:
    """A group that handled 4 events and dead-lettered 2 (``poison-*``), then stopped with 5 more
    behind it (lag 5); a console with actions allowed, measuring every half second."""
    tmp = tmp_path_factory.mktemp("console")
    prefix = unique("console").replace("-", "")
    database_url = f"sqlite:///{tmp / 'groups.db'}"
    handlers.create_tables(database_url)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "EVENTS_TOPIC_PREFIX": prefix,
           "EVENTS_HOME": str(tmp / "home"), "EVENTS_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT),
           "EVENTS_HANDLER_MODULES": "tests.console.handlers", "PYTHONUNBUFFERED": "1"}
    topic = f"{prefix}.app"
    for future in admin.create_topics([NewTopic(topic, 2, 1)], operation_timeout=30).values():
        future.result(30)
    await_served(admin, {topic: 2})
    producer = Producer(kafka_client_config)
    poison = [app_event(f"poison-{i}", i) for i in range(2)]
    publish(producer, topic, poison)
    since = _moment_after()
    publish(producer, topic, [app_event(f"app-{i}", i) for i in range(2, 6)])
    world = World("", prefix, env, database_url, admin, tmp / "console.log", tmp_path_factory.mktemp("screens"),
                  since, poison, group_id(prefix, handlers.GROUP), free_port())

    group = world.start_group()
    try:
        wait_until(lambda: len(handlers.effects(database_url)) == 4 or group.poll() is not None, 90, "4 handled")
        wait_until(lambda: end_offsets(admin, f"{prefix}.dlq.{handlers.GROUP}") == [2], 60, "2 dead letters")
        wait_committed_to_end(admin, world.group_id, topic, 2)
    finally:
        stop(group)
    publish(producer, topic, [app_event(f"app-{i}", i) for i in range(6, 11)])

    console = subprocess.Popen(
        [sys.executable, "-m", "dify_events.consumers", "console", "--port", "0", "--interval", "0.5s", "--window",
         "2m",
         "--allow-actions", "--metrics", f"http://127.0.0.1:{world.metrics_port}/metrics"],
        env={**env, "EVENTS_CONSOLE_TOKEN": TOKEN}, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=open(world.log, "wb"), stdin=subprocess.DEVNULL, text=True)  # noqa: SIM115 - the process's
    try:
        assert console.stdout is not None
        first = console.stdout.readline()
        assert "events console at http://" in first, f"the console did not start: {first}{world.log.read_text()}"
        world.url = first.split(" at ", 1)[1].split()[0].rstrip("/")
        yield world
    finally:
        stop(console)


def _moment_after() -> datetime:
    before = int(time.time() * 1000)
    wait_until(lambda: int(time.time() * 1000) > before, 5, "the clock to tick")
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium()), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def signed_in(browser, world):
    """A browser context signed in as ``tester`` (the name the audit log must show)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(world.url + "/")
    page.fill("input[name=name]", "tester")
    page.fill("input[name=token]", TOKEN)
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("h1:has-text('Consumer groups')")
    yield context
    context.close()


@pytest.fixture
def page(signed_in):
    page = signed_in.new_page()
    page.set_default_timeout(15_000)
    yield page
    page.close()
