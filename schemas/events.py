"""Typed events: one frozen pydantic model per event type, field for field its latest Avro schema.

Every event carries the envelope first (``event_id``, ``occurred_at``, ``tenant_id``), then the
fields the seed's handlers need, named as Dify names them. ``tests/schemas/test_models.py``
proves each model and its latest ``.avsc`` agree on names, order, types, optionality and defaults.

Class attributes (not fields): ``event_type`` (the wire name), ``domain`` (the topic's suffix),
``key_field`` (the field whose value is the Kafka message key: per-key order is what handlers
rely on) and ``schema_version`` (None: the latest schema version).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, StringConstraints, field_validator
from pydantic_core import core_schema

__all__ = [
    "ALL_EVENTS", "AppDraftWorkflowWasSynced", "AppModelConfigWasUpdated", "AppMode",
    "AppPublishedWorkflowWasUpdated", "AppWasCreated", "AppWasDeleted", "AppWasUpdated", "DatasetWasDeleted",
    "DocumentIndexCreated", "DocumentWasDeleted", "Event", "FeedbackWasCreated", "MessageWasCreated",
    "TenantWasCreated", "TenantWasUpdated",
    "Count", "Id", "Text", "ToolNode", "new_event_id", "utcnow",
]

# -- the envelope's generators ----------------------------------------------------------------
_uuid7_lock = threading.Lock()
_uuid7_last = [0, 0]  # [milliseconds, 12-bit sequence] of the last id this process made


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562) as text: 48-bit Unix milliseconds, version 7, a 12-bit sequence, the
    variant, 62 random bits. Ids from one process sort in creation order even within one
    millisecond (the sequence counts up from a random start, borrowing the next millisecond when it
    overflows); ids from different processes sort by millisecond."""
    rand = int.from_bytes(os.urandom(10), "big")
    with _uuid7_lock:
        ms = time.time_ns() // 1_000_000
        last_ms, seq = _uuid7_last
        if ms > last_ms:
            seq = rand >> 69  # a random start in the lower half of the 12 bits leaves room to count
        else:
            ms, seq = last_ms, seq + 1
            if seq > 0xFFF:
                ms, seq = ms + 1, 0
        _uuid7_last[0], _uuid7_last[1] = ms, seq
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utcnow() -> datetime:
    """Now, timezone-aware UTC, cut to milliseconds (what Avro's timestamp-millis keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# -- field types ------------------------------------------------------------------------------
Id = Annotated[str, StringConstraints(min_length=1, max_length=255)]
"""An identifier (Dify's ids are UUID text; anything non-empty is accepted)."""
Text = Annotated[str, StringConstraints(min_length=1)]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
"""A non-negative count that fits Avro's long."""


class UuidText:
    """``Annotated[str, UuidText]``: a UUID in lowercase text form, checked by pydantic-core's own (Rust) regex,
    whose ``$`` is the end of the text, with our message instead of the regex in the error (it reaches logs and
    dead-letter headers): 0.24 µs a decoded event less than a Python validator."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.custom_error_schema(
            core_schema.str_schema(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
            custom_error_type="uuid_text",
            custom_error_message="event_id must be a UUID in lowercase text form (8-4-4-4-12 hex digits)")

AppMode = Literal["chat", "completion", "agent-chat", "advanced-chat", "workflow"]
"""Dify's app modes. A string on the wire (Avro enum symbols cannot hold '-'); see the schema doc."""


class Event(BaseModel):
    """The envelope every event carries. Subclasses add their fields after it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    domain: ClassVar[str]
    key_field: ClassVar[str]
    schema_version: ClassVar[int | None] = None
    """None: the model is the latest ``.avsc`` version, which this process writes and reads into.
    A number pins the model to an older version while newer files are already shipped (the first
    step of a two-step rollout: consumers learn the new writer schema before anyone writes it)."""

    event_id: Annotated[str, UuidText] = Field(default_factory=new_event_id,
                                               description="UUIDv7 text: unique, time-ordered.")
    occurred_at: datetime = Field(default_factory=utcnow, description="When it happened, UTC, milliseconds.")
    tenant_id: Id

    @field_validator("occurred_at")
    @classmethod
    def _utc_millis(cls, value: datetime) -> datetime:
        if value.tzinfo is UTC and not value.microsecond % 1000:
            return value  # what fastavro decodes and utcnow() makes: nothing to do (the decode hot path)
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("occurred_at must be timezone-aware (a naive datetime has no instant)")
        value = value.astimezone(UTC)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)

    def key(self) -> str:
        """The Kafka message key: the value of this event type's key field."""
        return getattr(self, self.key_field)


# -- app --------------------------------------------------------------------------------------
class AppWasCreated(Event):
    """An app was created: provision its installed-app record and its site record."""

    event_type: ClassVar[str] = "app_was_created"
    domain: ClassVar[str] = "app"
    key_field: ClassVar[str] = "app_id"

    app_id: Id
    mode: AppMode
    name: str = ""
    created_by: str = ""
    icon_type: str | None = None
    icon: str | None = None
    icon_background: str | None = None
    description: str = ""
    updated_by: str | None = None  # since v2
    has_account: bool = True  # since v2: Dify creates the site record only when the signal had an account
    default_language: str | None = None  # since v2: the account's interface_language
    records_initialized: bool = False  # since v2: Dify's created_records_initialized=True


class _AppEvent(Event):
    """Dify main's ``AppEvent``: an app, its tenant and its mode."""

    domain: ClassVar[str] = "app"
    key_field: ClassVar[str] = "app_id"

    app_id: Id
    mode: str | None = None


class AppWasDeleted(_AppEvent):
    """An app was deleted (Dify main): count it for telemetry. Dify removes the app's data in its own task."""

    event_type: ClassVar[str] = "app_was_deleted"


class AppWasUpdated(_AppEvent):
    """An app's name, icon, description, site or API switch changed (Dify main): count it for telemetry."""

    event_type: ClassVar[str] = "app_was_updated"


class AppModelConfigWasUpdated(Event):
    """An app's model config changed: the app-to-dataset links follow its dataset configs."""

    event_type: ClassVar[str] = "app_model_config_was_updated"
    domain: ClassVar[str] = "app"
    key_field: ClassVar[str] = "app_id"

    app_id: Id
    app_model_config_id: str = ""
    dataset_ids: tuple[Id, ...] = ()
    config_given: bool = True  # since v2: False when the signal had no model config (the joins stay)


class TriggerNode(BaseModel):
    """A trigger node of a workflow graph; ``data`` is the node's data object as JSON text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: Id
    node_type: Text
    data: str


class AppPublishedWorkflowWasUpdated(Event):
    """An app's published workflow changed: the links follow its knowledge-retrieval nodes."""

    event_type: ClassVar[str] = "app_published_workflow_was_updated"
    domain: ClassVar[str] = "app"
    key_field: ClassVar[str] = "app_id"

    app_id: Id
    workflow_id: Id
    dataset_ids: tuple[Id, ...] = ()
    app_mode: str | None = None  # since v2
    trigger_nodes: tuple[TriggerNode, ...] = ()  # since v2


class ToolNode(BaseModel):
    """A tool node of a workflow graph: enough to name its tool-parameter cache entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: Id
    provider_type: Text
    provider_id: Id
    tool_name: Text


class AppDraftWorkflowWasSynced(Event):
    """An app's draft workflow was saved: drop the tool-parameter cache of its tool nodes."""

    event_type: ClassVar[str] = "app_draft_workflow_was_synced"
    domain: ClassVar[str] = "app"
    key_field: ClassVar[str] = "app_id"

    app_id: Id
    workflow_id: Id
    tool_nodes: tuple[ToolNode, ...] = ()
    synced_by: str | None = None
    app_mode: str | None = None  # since v2
    trigger_nodes: tuple[TriggerNode, ...] = ()  # since v2


# -- dataset ----------------------------------------------------------------------------------
class DatasetWasDeleted(Event):
    """A dataset was deleted: cascade-clean its documents, segments and index entries."""

    event_type: ClassVar[str] = "dataset_was_deleted"
    domain: ClassVar[str] = "dataset"
    key_field: ClassVar[str] = "dataset_id"

    dataset_id: Id
    indexing_technique: str | None = None
    doc_form: str | None = None
    index_struct: str | None = None
    collection_binding_id: str | None = None
    pipeline_id: str | None = None  # since v2


# -- document ---------------------------------------------------------------------------------
class DocumentWasDeleted(Event):
    """A document was deleted: remove its segments from the dataset's index."""

    event_type: ClassVar[str] = "document_was_deleted"
    domain: ClassVar[str] = "document"
    key_field: ClassVar[str] = "dataset_id"

    tenant_id: str = ""  # since v2 empty when the sender did not say (Dify does not): the dataset row knows it
    document_id: Id
    dataset_id: Id
    doc_form: str | None = None
    file_id: str | None = None


class DocumentIndexCreated(Event):
    """Documents of a dataset are ready to index: run the indexing task over them."""

    event_type: ClassVar[str] = "document_index_created"
    domain: ClassVar[str] = "document"
    key_field: ClassVar[str] = "dataset_id"

    dataset_id: Id
    document_ids: tuple[Id, ...] = Field(min_length=1)


# -- message ----------------------------------------------------------------------------------
class MessageWasCreated(Event):
    """A message was answered: count the provider's usage and quota, stamp its last use."""

    event_type: ClassVar[str] = "message_was_created"
    domain: ClassVar[str] = "message"
    key_field: ClassVar[str] = "conversation_id"

    message_id: Id
    conversation_id: Id
    app_id: Id
    provider_name: Text
    model_name: Text
    message_tokens: Count
    answer_tokens: Count
    total_tokens: Count
    latency_ms: Count | None = None  # since v2
    invoke_from: str = "unknown"  # since v2
    app_mode: str | None = None  # since v3
    quota_type: str | None = None  # since v3: the hosted quota to charge; None: the tenant's own key
    quota_unit: str | None = None  # since v3: tokens, credits or times


class FeedbackWasCreated(Event):
    """A message was rated: count the feedback for telemetry (Dify's enterprise telemetry receiver)."""

    event_type: ClassVar[str] = "feedback_was_created"
    domain: ClassVar[str] = "message"
    key_field: ClassVar[str] = "message_id"

    feedback_id: Id
    message_id: Id
    app_id: Id
    conversation_id: str | None = None
    rating: str | None = None
    from_source: str | None = None
    from_end_user_id: str | None = None
    from_account_id: str | None = None


# -- tenant -----------------------------------------------------------------------------------
class TenantWasCreated(Event):
    """A tenant (workspace) was created: initialise its resources."""

    event_type: ClassVar[str] = "tenant_was_created"
    domain: ClassVar[str] = "tenant"
    key_field: ClassVar[str] = "tenant_id"

    tenant_name: Text
    plan: Text = "basic"
    created_by: str | None = None
    source: str = "tenant_created"  # since v2: Dify's tenant_was_created.send(tenant, source=...)


class TenantWasUpdated(Event):
    """A tenant's settings changed: sync them. A field left null did not change."""

    event_type: ClassVar[str] = "tenant_was_updated"
    domain: ClassVar[str] = "tenant"
    key_field: ClassVar[str] = "tenant_id"

    tenant_name: str | None = None
    plan: str | None = None
    custom_config: dict[str, str] | None = None
    updated_by: str | None = None


ALL_EVENTS: tuple[type[Event], ...] = (
    AppWasCreated, AppModelConfigWasUpdated, AppPublishedWorkflowWasUpdated, AppDraftWorkflowWasSynced,
    DatasetWasDeleted, DocumentWasDeleted, DocumentIndexCreated, MessageWasCreated,
    TenantWasCreated, TenantWasUpdated, FeedbackWasCreated, AppWasDeleted, AppWasUpdated,
)
