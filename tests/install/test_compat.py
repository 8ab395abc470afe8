"""The ranges of pyproject.toml, proven at both ends: the core tests pass on the lowest versions it
allows (Python 3.11), and beside Dify's own pins (Python 3.12, psycopg2 as Dify's driver). Each
runs in its own cached virtualenv (``venvs.compat_venv``), as a subprocess on the suite's broker
and PostgreSQL."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import make_url

from .venvs import REPO, compat_venv, run, source_tree

HERE = Path(__file__).parent
# The SDK, the outbox and its relay, the signals, the consumer runtime's pipeline, and what else
# touches a dependency's API (settings, schemas, metrics, the command line's tables, cron triggers):
# about two and a half minutes on one core. The slowest process-level tests stay in the main run.
CORE_TESTS = [
    "tests/producers/test_producer.py",
    "tests/producers/test_headers.py",
    "tests/producers/test_outbox.py",
    "tests/producers/test_signals.py",
    "tests/consumers/test_runner.py",
    "tests/consumers/test_postgres_drivers.py",
    "tests/consumers/pipeline/test_decode.py",
    "tests/consumers/pipeline/test_idempotency.py",
    "tests/consumers/pipeline/test_dead_letters.py",
    "tests/consumers/pipeline/test_tracing.py",
    "tests/consumers/pipeline/test_retries.py::test_a_transient_failure_is_retried_and_the_effect_happens_once",
    "tests/consumers/cli/test_tables.py",
    "tests/schemas",
    "tests/telemetry/test_metrics.py",
    "tests/telemetry/test_prometheus.py",
    "tests/telemetry/test_setup.py",
    "tests/handlers/test_triggers.py",
    "tests/bad_input/test_config_show.py",
]
UNDER_GEVENT = "tests/producers/test_gevent.py"  # beside Dify's pins: Dify's gevent, gunicorn and psycopg2
# Dify's dry run, as issue 23 reported it failing (the package's directory, and Dify's pins)
DIFY_DRY_RUN = ["opentelemetry-sdk==1.40.0", "opentelemetry-api==1.40.0", "pydantic~=2.12.5",
                "pydantic-settings~=2.13.1", "sqlalchemy~=2.0.29", "pyyaml~=6.0.1"]


def python(version: str) -> str:
    """Python ``version`` (e.g. ``3.12``): pyenv's, else one on the PATH."""
    found = sorted(glob.glob(str(Path.home() / f".pyenv/versions/{version}.*/bin/python"))) or \
        [python for python in [shutil.which(f"python{version}")] if python]
    if not found:
        pytest.fail(f"Python {version} is needed for this test: `pyenv install {version}`")
    return found[-1]


def lowest_venv() -> Path:
    # the lowest Python too (requires-python), whichever runs the suite
    return compat_venv("lowest", python("3.11"), HERE / "lowest.txt", ["console", "psycopg", "psycopg2"])


def dify_venv() -> Path:
    return compat_venv("dify", python("3.12"), HERE / "dify.txt", ["console", "psycopg2"])  # Dify's ~=3.12.0


def run_tests(venv: Path, tests: list[str], kafka_bootstrap: str, postgres_url: str, tmp_path: Path,
              *deselect: str) -> subprocess.CompletedProcess:
    """``tests`` in ``venv``, on the given broker and PostgreSQL (as a parallel run's workers get
    them), from the checkout; fails with the end of their output."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")}
    env.update(PYTHONPATH=str(REPO), EVENTS_TEST_KAFKA_BOOTSTRAP=kafka_bootstrap, EVENTS_TEST_POSTGRES_URL=postgres_url,
               EVENTS_HOME=str(tmp_path / "events-home"))
    command = [venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
               tmp_path / "basetemp", *tests, *(f"--deselect={test}" for test in deselect)]
    return run(command, cwd=REPO, env=env, timeout_s=600)


def with_driver(url: str, driver: str) -> str:
    return make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def installed(venv: Path, *names: str) -> dict[str, str | None]:
    """The versions of ``names`` in ``venv`` (None: not installed)."""
    script = ("import importlib.metadata as m, json, sys\n"
              "def v(n):\n    try: return m.version(n)\n    except m.PackageNotFoundError: return None\n"
              "print(json.dumps({n: v(n) for n in sys.argv[1:]}))")
    return json.loads(run([venv / "bin" / "python", "-c", script, *names]).stdout)


@pytest.mark.longest
def test_the_core_tests_pass_on_the_lowest_versions_pyproject_allows(kafka_bootstrap, postgres_url, tmp_path):
    # Given a virtualenv with the lower bound of every requirement
    venv = lowest_venv()
    assert installed(venv, "pydantic", "SQLAlchemy", "psycopg2-binary") == {
        "pydantic": "2.10.0", "SQLAlchemy": "2.0.33", "psycopg2-binary": "2.9.6"}
    # When the core tests run there
    done = run_tests(venv, CORE_TESTS, kafka_bootstrap, with_driver(postgres_url, "psycopg"), tmp_path)
    # Then they pass
    assert " passed" in done.stdout.splitlines()[-1], done.stdout[-2000:]


@pytest.mark.longest
def test_the_core_tests_pass_beside_difys_pins_on_python_3_12_with_psycopg2(kafka_bootstrap, postgres_url, tmp_path):
    # Given a virtualenv of Python 3.12 with Dify's pins of the packages it shares with us, and psycopg2 only
    venv = dify_venv()
    versions = installed(venv, "opentelemetry-sdk", "pydantic", "psycopg", "psycopg2-binary")
    assert versions["opentelemetry-sdk"] == "1.40.0" and versions["pydantic"].startswith("2.12.")
    assert versions["psycopg"] is None and versions["psycopg2-binary"] is not None
    # When the core tests and those under gevent run there, on PostgreSQL through psycopg2 (the psycopg 3 case
    # deselected: not installed)
    url = with_driver(postgres_url, "psycopg2")
    done = run_tests(venv, [*CORE_TESTS, UNDER_GEVENT], kafka_bootstrap, url, tmp_path,
                     "tests/consumers/test_postgres_drivers.py::"
                     "test_outbox_relay_and_idempotency_claims_run_on_the_driver_the_url_names[postgresql+psycopg-psycopg]")
    # Then they pass
    assert " passed" in done.stdout.splitlines()[-1], done.stdout[-2000:]


def test_pip_resolves_the_project_beside_difys_pins(tmp_path):
    # Given the project's source, as a checkout has it
    source = source_tree(tmp_path / "dify-events")
    # When pip resolves it beside Dify's pins, on Dify's Python (the dry run issue 23 saw fail)
    done = run([dify_venv() / "bin" / "python", "-m", "pip", "install", "--dry-run", "--disable-pip-version-check",
                source, *DIFY_DRY_RUN], cwd=tmp_path, timeout_s=300)
    # Then it would install them together
    assert "Would install" in done.stdout and "dify-events-0.1.0" in done.stdout, done.stdout[-2000:]


def test_a_url_naming_a_driver_that_is_not_installed_is_one_clear_line(postgres_url, tmp_path):
    # Given Dify's environment, which has psycopg2 and not psycopg 3
    venv = dify_venv()
    # When a command is given a psycopg 3 URL
    done = subprocess.run([venv / "bin" / "python", "-m", "dify_events.consumers", "outbox", "status", "--database-url",
                           with_driver(postgres_url, "psycopg")], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    # Then it says what to install, in one line, and exits 1
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "pip install 'dify-events[psycopg]'" in done.stderr
