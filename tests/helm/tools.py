"""Find the pinned ``helm`` binary, or build it with ``go install`` and cache it.

Order: ``<cache>/bin/helm`` if it reports the pinned version, then ``helm`` on PATH if it does,
else ``go install helm.sh/helm/v3/cmd/helm@<pin>`` into the cache (minutes, once per machine).
A file lock keeps parallel test runs from building it twice.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

HELM_VERSION = "v3.22.0"
HELM_MODULE = "helm.sh/helm/v3"
# Kubernetes modules helm v3.22.0 is built with (k8s.io/client-go v0.37.0): the default
# cluster version of `helm template` / `helm lint`, set the way helm's own Makefile sets it.
K8S_MAJOR, K8S_MINOR = "1", "37"
BUILD_TIMEOUT_S = 1500


class HelmUnavailable(RuntimeError):
    """helm is neither cached, nor on PATH at the pinned version, nor buildable here."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dify-events"


def helm_version(binary: Path | str) -> str | None:
    try:
        out = subprocess.run(
            [str(binary), "version", "--template", "{{ .Version }}"],
            capture_output=True, text=True, timeout=60, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _is_pinned(binary: Path | str) -> bool:
    return helm_version(binary) == HELM_VERSION


def _ldflags() -> str:
    flags = [
        "-s", "-w",
        f"-X {HELM_MODULE}/internal/version.version={HELM_VERSION}",
        f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMajor={K8S_MAJOR}",
        f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMinor={K8S_MINOR}",
        f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMajor={K8S_MAJOR}",
        f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMinor={K8S_MINOR}",
    ]
    return " ".join(flags)


def build_helm(target: Path) -> float:
    """``go install`` the pinned helm into a scratch GOBIN, then move it to ``target``.

    Returns the seconds the build took.
    """
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if go is None:
        raise HelmUnavailable(
            f"helm {HELM_VERSION} is not cached at {target} nor on PATH, and there is no Go toolchain "
            f"to build it: install Go, or put helm {HELM_VERSION} at {target}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".gobin-") as gobin:
        env = {**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0", "GOFLAGS": "-trimpath"}
        proc = subprocess.run(
            [go, "install", "-ldflags", _ldflags(), f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"],
            capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT_S,
        )
        if proc.returncode != 0:
            raise HelmUnavailable(
                f"`go install {HELM_MODULE}/cmd/helm@{HELM_VERSION}` failed "
                f"(exit {proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        os.replace(Path(gobin) / "helm", target)
    return time.monotonic() - started


def find_cached_helm() -> Path | None:
    """A helm binary at the pinned version, cached or on PATH, if there is one."""
    cached = cache_dir() / "bin" / "helm"
    if cached.is_file() and _is_pinned(cached):
        return cached
    on_path = shutil.which("helm")
    if on_path and _is_pinned(on_path):
        return Path(on_path)
    return None


def find_or_build_helm() -> Path:
    """The path of a helm binary at the pinned version; builds it once if needed."""
    found = find_cached_helm()
    if found is not None:
        return found
    cached = cache_dir() / "bin" / "helm"
    cached.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / "helm-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it: wait for it
        try:
            if not (cached.is_file() and _is_pinned(cached)):
                build_helm(cached)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if not _is_pinned(cached):
        raise HelmUnavailable(f"built {cached}, but it reports {helm_version(cached)!r}, not {HELM_VERSION}")
    return cached
