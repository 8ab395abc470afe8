"""The registry: groups registered by handler modules, found through EVENTS_HANDLER_MODULES."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dify_events.consumers import registry
from dify_events.consumers.errors import DuplicateGroup, GroupDefinitionError, UnknownGroup
from dify_events.consumers.group import ConsumerGroup


def test_discover_imports_the_modules_named_in_the_environment(monkeypatch):
    # Given the sample handler module named in EVENTS_HANDLER_MODULES
    monkeypatch.setenv("EVENTS_HANDLER_MODULES", " tests.consumers.sample_handlers , ")
    # When groups are discovered
    groups = registry.discover()
    # Then its group is registered and found by name
    assert "tests.consumers.sample_handlers" in registry.handler_modules()
    assert registry.get("sample-recorder") in groups


def test_the_modules_named_replace_difys_receivers_which_are_the_default(monkeypatch):
    # By default, Dify's receivers (the platform's own groups)
    monkeypatch.delenv("EVENTS_HANDLER_MODULES", raising=False)
    assert registry.handler_modules() == ["dify_events.consumers.handlers"]
    # Named, an application's modules replace them (Dify's run beside them only when named too)
    monkeypatch.setenv("EVENTS_HANDLER_MODULES", "tests.consumers.sample_handlers")
    assert registry.handler_modules() == ["tests.consumers.sample_handlers"]
    monkeypatch.setenv("EVENTS_HANDLER_MODULES", "dify_events.consumers.handlers,tests.consumers.sample_handlers")
    assert registry.handler_modules() == ["dify_events.consumers.handlers", "tests.consumers.sample_handlers"]
    # and the demo, which runs Dify's groups, takes them first in any case
    monkeypatch.setenv("EVENTS_HANDLER_MODULES", "tests.consumers.sample_handlers")
    assert registry.handler_modules(builtin=True) == ["dify_events.consumers.handlers",
                                                      "tests.consumers.sample_handlers"]


def test_events_run_lists_only_the_groups_of_the_modules_named():
    # Given a process whose EVENTS_HANDLER_MODULES names the sample handlers only
    env = {**os.environ, "EVENTS_HANDLER_MODULES": "tests.consumers.sample_handlers", "COLUMNS": "250"}
    # When it lists its groups
    listed = subprocess.run([sys.executable, "-m", "dify_events.consumers", "run", "--list"], env=env,
                            capture_output=True, text=True, timeout=120)
    # Then the sample's are there, and none of Dify's
    assert listed.returncode == 0, listed.stderr
    assert "sample-recorder" in listed.stdout and "document-indexer" not in listed.stdout


def test_a_module_that_does_not_exist_is_reported(monkeypatch):
    monkeypatch.setenv("EVENTS_HANDLER_MODULES", "no_such_module.handlers")
    with pytest.raises(GroupDefinitionError, match="no_such_module.handlers"):
        registry.discover()


def test_unknown_and_duplicate_group_names_are_refused():
    with pytest.raises(UnknownGroup, match="no consumer group is named 'nope'"):
        registry.get("nope")
    group = registry.register(ConsumerGroup("registry-test"))
    try:
        assert registry.register(group) is group  # the same object again: harmless
        with pytest.raises(DuplicateGroup):
            registry.register(ConsumerGroup("registry-test"))
    finally:
        registry.unregister("registry-test")
