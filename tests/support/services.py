"""The services a test session shares, started once for every pytest-xdist worker.

Run in parallel (``pytest -n N``, as ``make test`` does), the controller process starts the Kafka
broker and the PostgreSQL server before the workers start, side by side, and hands their addresses
to the workers through the environment (``EVENTS_TEST_KAFKA_BOOTSTRAP``,
``EVENTS_TEST_POSTGRES_URL``), which ``tests.support.kafka`` and ``tests.support.postgres`` read;
it stops them after the last worker ended. Meanwhile it builds the pinned ``helm`` and installs
Chromium when they are missing (minutes on a fresh machine), for the chart and browser tests.

Run in one process, nothing happens here: the session fixtures start what a test asks for, when
it first asks (a single unit test starts no broker).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

SHARED_KAFKA = "EVENTS_TEST_KAFKA_BOOTSTRAP"
SHARED_POSTGRES = "EVENTS_TEST_POSTGRES_URL"


def is_parallel_controller(config: pytest.Config) -> bool:
    """The process that runs pytest-xdist's workers (not a worker, not a plain run)."""
    return not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None) not in (None, 0)


class SharedServices:
    """Starts the session's services at once (each on a thread of its own), stops them at the end."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._builder: threading.Thread | None = None

    def start(self) -> None:
        from tests.support.kafka import kafka_cluster
        from tests.support.postgres import postgres_server

        self._builder = _prepare_in_background()
        wanted: dict[str, Callable[[], contextlib.AbstractContextManager[str]]] = {}
        if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            wanted[SHARED_KAFKA] = kafka_cluster
        if not os.environ.get(SHARED_POSTGRES):
            wanted[SHARED_POSTGRES] = postgres_server
        with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
            started = {name: pool.submit(_enter, factory()) for name, factory in wanted.items()}
        failure: BaseException | None = None
        for name, future in started.items():  # every service that started is stopped again at the end
            try:
                manager, address = future.result()
            except BaseException as exc:  # noqa: BLE001 - raised below, once the others are in the stack
                failure = failure or exc
                continue
            self._stack.push(manager)
            os.environ[name] = address
        if failure is not None:
            self.stop()
            raise failure

    def stop(self) -> None:
        for name in (SHARED_KAFKA, SHARED_POSTGRES):
            os.environ.pop(name, None)
        self._stack.close()
        if self._builder is not None:
            self._builder.join()


def _enter(manager: contextlib.AbstractContextManager[str]) -> tuple[contextlib.AbstractContextManager[str], str]:
    return manager, manager.__enter__()


def _prepare_in_background() -> threading.Thread | None:
    """Builds the pinned helm and installs Chromium on a thread when they are missing (minutes on a
    fresh machine); the chart and browser tests wait for them on their locks."""
    from tests.helm.tools import HelmUnavailable, find_cached_helm, find_or_build_helm
    from tests.support.browser import CHROMIUM, chromium

    work = [] if find_cached_helm() is not None else [find_or_build_helm]
    work += [] if CHROMIUM.exists() else [chromium]
    if not work:
        return None

    def prepare() -> None:
        for step in work:
            with contextlib.suppress(HelmUnavailable, RuntimeError, OSError):  # their tests report it
                step()

    thread = threading.Thread(target=prepare, name="prepare-tools", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def shared_services(config: pytest.Config) -> Iterator[None]:
    if not is_parallel_controller(config):
        yield
        return
    services = SharedServices()
    services.start()
    try:
        yield
    finally:
        services.stop()
