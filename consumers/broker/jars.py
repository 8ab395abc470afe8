"""Apache Kafka's jars, resolved from Maven Central by ``mvn`` and cached per user."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

from .errors import BrokerError

POM = files(__package__) / "pom.xml"
KAFKA_VERSION: str = re.findall(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())[0]
POM_DIGEST = hashlib.sha256(POM.read_bytes()).hexdigest()[:8]  # a changed pom resolves afresh


def require_tool(name: str, what_to_do: str) -> str:
    path = shutil.which(name)
    if not path:
        raise BrokerError(f"`{name}` was not found on PATH. {what_to_do}")
    return path


def classpath(cache_dir: Path) -> list[Path]:
    """The broker's class path; the first call resolves it with Maven (about 10 s warm, a minute cold)."""
    lib = cache_dir / f"kafka-{KAFKA_VERSION}-{POM_DIGEST}" / "lib"
    done = lib / ".complete"
    if not done.exists():
        mvn = require_tool("mvn", "Install Apache Maven (apt-get install maven) to resolve Kafka's jars.")
        lib.mkdir(parents=True, exist_ok=True)
        cmd = [mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
               f"-DoutputDirectory={lib}", "-DincludeScope=runtime"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise BrokerError(f"Maven could not resolve Apache Kafka {KAFKA_VERSION}'s jars:\n{tail}")
        done.write_text(KAFKA_VERSION)
    jars = sorted(lib.glob("*.jar"))
    if not any(j.name.startswith("kafka_2.13-") for j in jars):
        raise BrokerError(f"{lib} holds no kafka_2.13 jar; delete {lib.parent} and try again.")
    return jars
