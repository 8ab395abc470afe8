"""Virtualenvs with other versions of the dependencies than the project's own, and the project's
source as a build sees it.

``compat_venv`` builds one once per machine, in ``~/.cache/dify-events/compat/<name>-<hash>``: the
hash covers the interpreter, the constraints, the project's requirements and the test tools, so a
change of any of them builds a new one, and a second run reuses it (a lock file makes a concurrent
run wait for the one building it); one unused for a fortnight goes when another is built. The
project itself is not left installed there: the tests run from the checkout (``PYTHONPATH``)
against the virtualenv's dependencies.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

from dify_events.schemas.settings import cache_dir

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "constraints.txt"
PYPROJECT = REPO / "pyproject.toml"
SOURCES = ("pyproject.toml", "README.md", "schemas", "producers", "consumers")  # what the Dockerfile copies
# what the core tests need beside the project, at the versions of constraints.txt
TEST_TOOLS = ("pytest", "pytest-timeout", "avro", "hypothesis", "gevent", "gunicorn")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> dict[str, str]:
    """name -> version specifier of each line of a requirements or constraints file."""
    lines = {}
    for line in path.read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9][\w.-]*)\s*([=~<>!].*)", line.split("#")[0].strip()):
            lines[canonical(match[1])] = match[2].strip()
    return lines


def exact_pins(path: Path) -> dict[str, str]:
    """name -> version of each ``name==version`` line of a requirements or constraints file."""
    return {name: spec[2:] for name, spec in requirement_lines(path).items() if spec.startswith("==")}


def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def source_tree(into: Path) -> Path:
    """The files a build of the project reads, copied to ``into``: building from a copy writes
    nothing (``build/``, ``*.egg-info``) into the checkout, where concurrent builds would race."""
    into.mkdir(parents=True)
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, into / name)
    return into


def run(command: Sequence[str | Path], *, timeout_s: float = 600, **options) -> subprocess.CompletedProcess:
    """Runs a command; fails the test with the end of its output if it fails."""
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=timeout_s,
                          **options)
    assert done.returncode == 0, (f"`{' '.join(map(str, command))}` exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _remove_unused(root: Path, name: str, days: float = 14) -> None:
    for marker in root.glob(f"{name}-*/built"):
        if time.time() - marker.stat().st_mtime > days * 86400:
            shutil.rmtree(marker.parent, ignore_errors=True)


def compat_venv(name: str, python: str, constraints: Path, extras: Sequence[str]) -> Path:
    """A virtualenv of ``python`` with the project's dependencies (and ``extras``) as pip resolves
    them under ``constraints``, and the test tools at the versions of constraints.txt unless
    ``constraints`` names them. Returns its directory."""
    tool_pins, given = exact_pins(CONSTRAINTS), requirement_lines(constraints)
    tools = [tool if tool in given else f"{tool}=={tool_pins[tool]}" for tool in TEST_TOOLS]
    interpreter = run([python, "-c", "import sys; print(sys.version)"]).stdout
    spec = [interpreter, constraints.read_text(), project()["dependencies"], project()["optional-dependencies"],
            sorted(extras), tools]
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_dir() / "compat"
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"{name}-{digest}"
    with open(root / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / "built").exists():
            (venv / "built").touch()  # when it was last used
            return venv
        _remove_unused(root, name)
        shutil.rmtree(venv, ignore_errors=True)  # half built by a run that died
        run([python, "-m", "venv", venv])
        pip: list[str | Path] = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
        run([*pip, "install", "-q", "--upgrade", "pip"])
        with tempfile.TemporaryDirectory(prefix="dify-events-source-") as scratch:
            source = source_tree(Path(scratch) / "dify-events")
            run([*pip, "install", "-q", "-c", constraints, f"{source}[{','.join(extras)}]", *tools])
        run([*pip, "uninstall", "-q", "-y", "dify-events"])
        (venv / "built").write_text(run([*pip, "freeze"]).stdout)
    return venv
