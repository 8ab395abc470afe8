"""The packages' public names: each importable from the package, and importing a package stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import consumers


def loaded_by(statement: str, modules: list[str]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after ``statement``."""
    probe = f"import sys; {statement}; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()


def test_a_handler_module_needs_one_import_from_consumers():
    namespace: dict = {}
    exec("from consumers import *", namespace)
    for name in consumers.__all__:
        module = importlib.import_module(namespace[name].__module__)
        assert getattr(module, name) is namespace[name] is getattr(consumers, name)
    assert {"ConsumerGroup", "HandlerContext", "MessageRejected", "register"} <= set(consumers.__all__)


@pytest.mark.parametrize("statement", ["import consumers", "import consumers.cli"])
def test_importing_consumers_loads_neither_sqlalchemy_nor_the_schemas(statement):
    # every consumers.* import runs consumers/__init__.py: the CLI's included
    assert loaded_by(statement, ["sqlalchemy", "schemas.events", "schemas.codec", "consumers.pipeline"]) == []
