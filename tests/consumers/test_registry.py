"""The registry: groups registered by handler modules, found through EVENTS_HANDLER_MODULES."""

from __future__ import annotations

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
