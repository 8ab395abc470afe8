"""The groups this process knows: registered by handler modules, found by ``discover()``.

``discover()`` imports the modules named in ``EVENTS_HANDLER_MODULES`` (comma-separated dotted
names, e.g. ``EVENTS_HANDLER_MODULES=myapp.handlers``), by default ``dify_events.consumers.handlers``
(Dify's receivers as groups): an application of its own names its modules, and adds that one to run
Dify's beside them. A handler module builds its groups and calls ``register(group)`` at import time.
"""

from __future__ import annotations

import importlib
import os

from .errors import DuplicateGroup, GroupDefinitionError, UnknownGroup
from .group import ConsumerGroup

HANDLER_MODULES_ENV = "EVENTS_HANDLER_MODULES"
BUILTIN_HANDLERS = "dify_events.consumers.handlers"

_groups: dict[str, ConsumerGroup] = {}


def register(group: ConsumerGroup) -> ConsumerGroup:
    """Adds a group (returns it, so ``group = register(ConsumerGroup(...))`` reads well).
    Registering the same object again is harmless; another group under a taken name is refused."""
    existing = _groups.get(group.name)
    if existing is not None and existing is not group:
        raise DuplicateGroup(f"two consumer groups are named {group.name!r}; group names must be unique "
                             "(each is a Kafka consumer group with its own offsets)")
    _groups[group.name] = group
    return group


def unregister(name: str) -> None:
    _groups.pop(name, None)


def get(name: str) -> ConsumerGroup:
    try:
        return _groups[name]
    except KeyError:
        known = ", ".join(sorted(_groups)) or "none (no handler module was found: set EVENTS_HANDLER_MODULES)"
        raise UnknownGroup(f"no consumer group is named {name!r}; registered groups: {known}") from None


def all_groups() -> list[ConsumerGroup]:
    return [_groups[name] for name in sorted(_groups)]


def handler_modules(*, builtin: bool = False) -> list[str]:
    """The modules ``discover()`` imports, in order: ``EVENTS_HANDLER_MODULES``'s, else Dify's receivers.
    ``builtin``: Dify's receivers first in any case (the demo runs them)."""
    named = [name.strip() for name in os.environ.get(HANDLER_MODULES_ENV, "").split(",") if name.strip()]
    return list(dict.fromkeys([BUILTIN_HANDLERS] * builtin + named)) or [BUILTIN_HANDLERS]


def discover(*, builtin: bool = False) -> list[ConsumerGroup]:
    """Imports the handler modules (which register their groups) and returns every group."""
    for name in handler_modules(builtin=builtin):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                raise GroupDefinitionError(f"the handler module {name!r} (from {HANDLER_MODULES_ENV}) "
                                           f"cannot be imported: {exc}") from exc
            raise
    return all_groups()
