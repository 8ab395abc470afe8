"""Fixtures of the fault suite: every test here carries the ``faults`` marker, gets a fresh topic
prefix (``kafka_env``), a fresh database on the shared throwaway PostgreSQL, and a run directory."""

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
