"""The peers' own virtualenvs (``bench/.venvs/<name>``, git-ignored), with pinned versions, so that
their dependency pins never touch the project's virtualenv (Quix Streams pins its own
confluent-kafka). Made once; remade when the pins change (a stamp file holds them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .common import BENCH

VENVS = BENCH / ".venvs"
FASTAVRO = "fastavro==1.13.1"  # the project's own pin: every contender decodes with the same fastavro

PINS: dict[str, list[str]] = {
    # faststream[kafka] is aiokafka (pure Python protocol client on asyncio); faststream[confluent]
    # wraps confluent-kafka (librdkafka) in threads: both transports, both measured
    "faststream": ["faststream[kafka,confluent]==0.7.8", "aiokafka[lz4]==0.14.0", "confluent-kafka==2.16.1", FASTAVRO],
    # quixstreams pins confluent-kafka itself (2.12.x)
    "quix": ["quixstreams==3.28.1", FASTAVRO],
}
REPORTED = {"faststream": ["faststream", "aiokafka", "confluent-kafka", "fastavro"],
            "quix": ["quixstreams", "confluent-kafka", "fastavro"]}


def python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def ensure(name: str, log=print) -> dict[str, str]:
    """Makes (or reuses) the peer's virtualenv; returns the installed versions of what matters."""
    venv = VENVS / name
    stamp = venv / ".bench-pins.json"
    pins = PINS[name]
    if not (stamp.is_file() and json.loads(stamp.read_text()).get("pins") == pins and python(name).exists()):
        log(f"  setting up {venv.relative_to(BENCH.parent)}: {' '.join(pins)}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python(name)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
                       check=True)
        versions = _versions(name)
        stamp.write_text(json.dumps({"pins": pins, "versions": versions}))
    return json.loads(stamp.read_text())["versions"]


def _versions(name: str) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys; "
            "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))")
    out = subprocess.run([str(python(name)), "-c", code, *REPORTED[name]], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)
