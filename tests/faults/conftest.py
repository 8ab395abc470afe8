"""Fixtures of the fault suite: every test here carries the ``faults`` marker, gets a fresh topic
prefix (``kafka_env``), a fresh database on the shared throwaway PostgreSQL, and a run directory.

The cluster scenarios (``test_cluster_*.py``) run on ``three_brokers``, a local cluster of three
nodes started once for them and stopped after them; they carry the ``cluster`` marker. A plain run
(``make test``) takes only those also marked ``cluster_quick``; ``-m cluster`` (``make
faults-cluster``) takes them all."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

import dify_events.consumers.handlers  # noqa: F401 - registers the seed's groups
from dify_events.consumers.broker import LocalBroker
from dify_events.consumers.broker.local import free_port, port_is_free, wait_for_exit
from dify_events.schemas.settings import cache_dir
from tests.conftest import settings_pointed_at, unique
from tests.support.kafka import local_cluster
from tests.support.waiting import wait_until

FAULT_TIMEOUT_S = 300  # one scenario takes 20-90 s on 2 cores; a hang fails it, not the suite


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/faults/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.postgres)
            item.add_marker(pytest.mark.kafka)
            item.add_marker(pytest.mark.timeout(FAULT_TIMEOUT_S))
        if "three_brokers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
    if "cluster" not in (config.option.markexpr or ""):  # the long cluster scenarios need -m cluster
        left_out = [i for i in items if i.get_closest_marker("cluster") and not i.get_closest_marker("cluster_quick")]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [i for i in items if i not in left_out]


@pytest.fixture
def fault_db(postgres_url):
    name = unique("faults").replace("-", "_")
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def world_args(kafka_env, kafka_bootstrap, fault_db, tmp_path):
    return dict(bootstrap=kafka_bootstrap, prefix=kafka_env, database_url=fault_db, run_dir=tmp_path / "run")


@pytest.fixture(scope="package")
def three_brokers():
    """The local three-node cluster, started for the first cluster scenario, stopped after the last."""
    with local_cluster() as cluster:
        yield cluster


@pytest.fixture
def cluster_env(three_brokers, tmp_path, monkeypatch) -> Iterator[str]:
    """``kafka_env`` on the three-node cluster: its address, a topic prefix of the test's own."""
    yield from settings_pointed_at(three_brokers.bootstrap, monkeypatch, tmp_path)


@pytest.fixture
def cluster_world_args(three_brokers, cluster_env, fault_db, tmp_path):
    """``world_args`` on the three-node cluster."""
    return dict(bootstrap=three_brokers.bootstrap, prefix=cluster_env, database_url=fault_db, run_dir=tmp_path / "run")


@pytest.fixture
def own_broker(tmp_path):
    """A broker of this test alone (a LocalBroker in a temporary home), never the shared one: the test
    may stop it, kill it (``kill_broker``) and start it again, on the same port."""
    broker = LocalBroker(tmp_path / "broker-home", cache_dir(), port=free_port())
    broker.start(timeout_s=120)
    yield broker
    broker.stop()


def kill_broker(broker: LocalBroker) -> None:
    """SIGKILL, as a node failure ends it: no controlled shutdown. Returns once the process is gone and
    its port can be bound again (its connections' last states cleared), so it starts again on that port,
    as a restarted node comes back at its address."""
    state = broker.status()
    assert state is not None, "the broker to kill is not running"
    wait_for_exit(state.pid, deadline=time.monotonic())  # past its deadline: SIGKILL at once, then reaped
    wait_until(lambda: port_is_free(state.port), 90, f"port {state.port} to be free after the kill")
