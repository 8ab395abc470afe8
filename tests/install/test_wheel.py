"""A wheel that stands alone: ``python -m build`` makes a wheel and an sdist; the wheel carries every
file the packages read; installed the way the image installs it (with the constraints and both
PostgreSQL drivers) into a fresh virtualenv, run from a directory outside the checkout, it runs
``events demo --size small`` on the suite's broker. Its packages are ``dify_events.schemas``,
``.producers`` and ``.consumers``, and nothing else at the top: no ``schemas`` of ours to shadow
another distribution's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
import uuid
import zipfile

from .venvs import CONSTRAINTS, PYPROJECT, REPO, run, source_tree

PACKAGES = ("schemas", "producers", "consumers")  # the repository's folders; installed as dify_events.<folder>


def data_files() -> set[str]:
    """The packages' files that are not Python: schemas, topics, the broker's build files, the
    console's templates and static files (not their guides, schemas/README.md: nothing reads them)."""
    return {path.relative_to(REPO).as_posix() for package in PACKAGES for path in (REPO / package).rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc", ".md") and "__pycache__" not in path.parts}


def test_the_wheel_installed_outside_the_checkout_runs_the_demo(kafka_bootstrap, tmp_path):
    # Given a wheel and an sdist built by `python -m build` from the project's source
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--outdir", dist, source_tree(tmp_path / "source")], timeout_s=300)
    (wheel,) = dist.glob("dify_events-*.whl")
    (sdist,) = dist.glob("dify_events-*.tar.gz")
    # Then both carry every file the packages read, and the wheel no tests
    needed = data_files()
    assert {"schemas/topics.yaml", "consumers/broker/pom.xml", "consumers/broker/log4j2.properties"} <= needed
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    missing = {f"dify_events/{name}" for name in needed} - in_wheel
    assert not missing, f"missing from the wheel: {sorted(missing)}"
    # (and nothing beside dify_events/ and its metadata: no tests, no top-level schemas/ of ours)
    assert {name.split("/")[0] for name in in_wheel if ".dist-info/" not in name} == {"dify_events"}
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert needed <= in_sdist, f"missing from the sdist: {sorted(needed - in_sdist)}"

    # When it is installed as the image installs it, into a fresh virtualenv
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", CONSTRAINTS,
         f"{wheel}[psycopg,psycopg2]"], timeout_s=600)
    # And its `events demo --size small` runs in a directory of its own, on the suite's broker
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("EVENTS_", "PYTEST_")) and name != "PYTHONPATH"}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, EVENTS_HOME=str(tmp_path / "home"), COLUMNS="160")
    report = tmp_path / "report.json"
    done = run([venv / "bin" / "events", "demo", "--size", "small", "--delete-topics", "--prefix",
                f"twheel{uuid.uuid4().hex[:10]}", "--report-json", report], cwd=elsewhere, env=env, timeout_s=300)

    # Then it exits 0 with every check holding, from the installed packages (not the checkout's)
    assert json.loads(report.read_text())["ok"], done.stdout[-3000:]
    where = run([venv / "bin" / "python", "-c", "import dify_events.consumers as c; print(c.__file__)"], cwd=elsewhere,
                env=env)
    assert where.stdout.startswith(str(venv)), where.stdout
    # And the old top-level names are not installed at all
    for name in PACKAGES:
        old = subprocess.run([venv / "bin" / "python", "-c", f"import {name}"], cwd=elsewhere, env=env,
                             capture_output=True, text=True)
        assert f"No module named '{name}'" in old.stderr, old.stderr


def test_the_build_configuration_lists_every_package_of_the_folders():
    # setuptools' package-dir maps each folder to dify_events.<folder>; a subpackage missing from
    # `packages` would be missing from the wheel (and only there: the checkout and -e have it all)
    configured = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    assert configured["package-dir"] == {f"dify_events.{name}": name for name in PACKAGES}
    folders = {"dify_events." + init.parent.relative_to(REPO).as_posix().replace("/", ".")
               for name in PACKAGES for init in (REPO / name).rglob("__init__.py")}
    assert sorted(folders) == sorted(configured["packages"])
