"""Fixtures of the fault suite: every test here carries the ``faults`` marker, gets a fresh topic
prefix (``kafka_env``), a fresh database on the shared throwaway PostgreSQL, and a run directory.

The cluster scenarios (``test_cluster_*.py``) run on ``three_brokers``, a local cluster of three
nodes started once for them and stopped after them; they carry the ``cluster`` marker. A plain run
(``make test``) takes only those also marked ``cluster_quick``; ``-m cluster`` (``make
faults-cluster``) takes them all."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

import consumers.handlers  # noqa: F401 - registers the seed's groups
from tests.conftest import unique

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


