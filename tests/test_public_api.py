"""The packages' public names: each importable from the package, and importing a package stays light."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from dify_events import consumers, producers, schemas


def loaded_by(statement: str, modules: list[str]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after ``statement``."""
    probe = f"import sys; {statement}; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()


def test_a_handler_module_needs_one_import_from_consumers():
    namespace: dict = {}
    exec("from dify_events.consumers import *", namespace)
    for name in consumers.__all__:
        module = importlib.import_module(namespace[name].__module__)
        assert getattr(module, name) is namespace[name] is getattr(consumers, name)
    assert {"ConsumerGroup", "HandlerContext", "MessageRejected", "register"} <= set(consumers.__all__)


@pytest.mark.parametrize("statement", ["import dify_events.consumers", "import dify_events.consumers.cli"])
def test_importing_consumers_loads_neither_sqlalchemy_nor_the_schemas(statement):
    # every consumers.* import runs consumers/__init__.py: the CLI's included
    assert loaded_by(statement, ["sqlalchemy", "dify_events.schemas.events", "dify_events.schemas.codec",
                                 "dify_events.consumers.pipeline"]) == []


def type_checked_names(package) -> set[str]:
    """The names a package's ``if TYPE_CHECKING:`` block imports (what type checkers see)."""
    tree = ast.parse(Path(package.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    return {alias.asname or alias.name for node in block.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}


@pytest.mark.parametrize("package", [producers, schemas], ids=lambda p: p.__name__)
def test_every_lazy_name_is_shown_to_type_checkers_and_imports(package):
    assert type_checked_names(package) == set(package.__all__)
    for name in package.__all__:
        value = getattr(package, name)
        assert getattr(importlib.import_module(f"{package.__name__}.{package._EXPORTS[name]}"), name) is value
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        package.Nope  # noqa: B018 - the attribute access is the test


@pytest.mark.parametrize("statement, heavy", [
    ("import dify_events.producers.config", ["sqlalchemy", "dify_events.schemas.events",
                                             "dify_events.producers.outbox"]),
    ("from dify_events.producers import EventProducer", ["sqlalchemy", "dify_events.producers.outbox",
                                                         "dify_events.producers.relay"]),
    ("import dify_events.schemas.settings", ["dify_events.schemas.events", "dify_events.schemas.codec",
                                             "dify_events.schemas.catalogue"]),
])
def test_a_name_or_a_module_of_the_sdk_loads_only_what_it_needs(statement, heavy):
    assert loaded_by(statement, heavy) == []


def test_the_pipeline_exports_what_composing_one_takes():
    from dify_events.consumers import pipeline

    namespace: dict = {}
    exec("from dify_events.consumers.pipeline import *", namespace)
    steps = {step.__name__ for step in pipeline.DEFAULT_PIPELINE}
    exported = set(namespace) - {"__builtins__"}
    assert exported == set(pipeline.__all__) == steps | {"DEFAULT_PIPELINE", "Step", "CallNext"}


def test_every_event_type_is_exported_by_schemas_and_schemas_events():
    # Given the event types of the catalogue; then each is a name of both packages, and the same class
    from dify_events.schemas import events

    for event_type in schemas.ALL_EVENTS:
        name = event_type.__name__
        assert name in schemas.__all__ and name in events.__all__, name
        assert getattr(schemas, name) is event_type


def test_loggers_keep_the_names_operators_configure():
    """Logger names are configuration (levels, filters, the JSON logs' ``logger`` field): they stay
    ``consumers.*``, ``producers.*`` and ``schemas.*``, whatever name the package is installed under."""
    root = Path(__file__).resolve().parent.parent
    by_module_name = [str(path.relative_to(root)) for folder in ("consumers", "producers", "schemas")
                      for path in (root / folder).rglob("*.py") if "getLogger(__name__)" in path.read_text()]
    assert by_module_name == []
