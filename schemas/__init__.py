"""The event contract: Avro schemas, typed event models, the catalogue and the codec.

The main names are re-exported lazily (``from schemas import AvroCodec, CATALOGUE, AppWasCreated``),
so importing ``schemas.settings`` alone does not load every schema.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AvroCodec": "codec", "single_object_header": "codec", "split_single_object": "codec",
    "CATALOGUE": "catalogue", "Catalogue": "catalogue", "EventSpec": "catalogue", "SchemaVersion": "catalogue",
    "Event": "events", "ALL_EVENTS": "events", "new_event_id": "events", "ToolNode": "events",
    "AppWasCreated": "events", "AppModelConfigWasUpdated": "events", "AppPublishedWorkflowWasUpdated": "events",
    "AppDraftWorkflowWasSynced": "events", "DatasetWasDeleted": "events", "DocumentWasDeleted": "events",
    "DocumentIndexCreated": "events", "MessageWasCreated": "events", "TenantWasCreated": "events",
    "TenantWasUpdated": "events",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
