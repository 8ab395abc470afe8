"""Fixtures for the chart's checks: the real ``helm`` binary, and rendering the chart with it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.helm.tools import HelmUnavailable, find_or_build_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "dify-events"
EXAMPLES = {path.name.removesuffix("-values.yaml"): path for path in sorted((CHART / "ci").glob("*-values.yaml"))}
# The cluster version `helm template` and `helm lint` render for: the newest that both the
# pinned helm and kubernetes-validate know. The chart's kubeVersion floor is checked separately.
KUBE_VERSION = "1.37.0"
RELEASE = "events"
NAMESPACE = "dify"


@dataclass
class HelmResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Rendered:
    """The documents ``helm template`` printed, with lookups by kind and name."""

    documents: list[dict]
    text: str
    by_kind: dict[str, list[dict]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for doc in self.documents:
            self.by_kind.setdefault(doc["kind"], []).append(doc)

    def kind(self, kind: str) -> list[dict]:
        return self.by_kind.get(kind, [])

    def one(self, kind: str, name: str) -> dict:
        matches = [doc for doc in self.kind(kind) if doc["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} named {name}, found {len(matches)}"
        return matches[0]


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    try:
        return find_or_build_helm()
    except HelmUnavailable as exc:
        pytest.fail(f"the chart checks need the real helm binary: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Keeps helm's cache, config and data out of the user's home."""
    home = tmp_path_factory.mktemp("helm-home")
    return {f"HELM_{kind}_HOME": str(home / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}


@pytest.fixture(scope="session")
def helm(helm_bin: Path, helm_home: dict[str, str]) -> Callable[..., HelmResult]:
    """Runs helm with the given arguments; returns its exit code and output, never raises."""
    env = {**os.environ, **helm_home}

    def run(*args: str) -> HelmResult:
        proc = subprocess.run([str(helm_bin), *args], capture_output=True, text=True, env=env, timeout=120)
        return HelmResult(list(args), proc.returncode, proc.stdout, proc.stderr)

    return run


def _values_args(values_files: Iterable[Path], set_values: Iterable[str]) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["--values", str(path)]
    for item in set_values:
        args += ["--set", item]
    return args


@pytest.fixture(scope="session")
def template(helm: Callable[..., HelmResult]) -> Callable[..., HelmResult]:
    """``helm template`` of the chart with values files and ``--set`` pairs (raw result)."""

    def run(*values_files: Path, set_values: Iterable[str] = (), extra: Iterable[str] = ()) -> HelmResult:
        return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION,
                    *_values_args(values_files, set_values), *extra)

    return run


@pytest.fixture(scope="session")
def lint(helm: Callable[..., HelmResult]) -> Callable[..., HelmResult]:
    """``helm lint --strict`` of the chart with values files and ``--set`` pairs (raw result)."""

    def run(*values_files: Path, set_values: Iterable[str] = ()) -> HelmResult:
        return helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION,
                    *_values_args(values_files, set_values))

    return run


@pytest.fixture(scope="session")
def render(template: Callable[..., HelmResult]) -> Callable[..., Rendered]:
    """Renders the chart (it must succeed) and parses every document; cached per arguments."""
    cache: dict[tuple, Rendered] = {}

    def run(*values_files: Path, set_values: Iterable[str] = ()) -> Rendered:
        key = (values_files, tuple(set_values))
        if key not in cache:
            result = template(*values_files, set_values=set_values)
            assert result.returncode == 0, f"helm template failed:\n{result.output}"
            documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
            cache[key] = Rendered(documents, result.stdout)
        return cache[key]

    return run
