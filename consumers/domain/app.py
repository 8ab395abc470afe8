"""Apps and what hangs off them: sites, installed apps, model configs, workflows, dataset joins,
the tool-parameter cache, and the telemetry count of app events.

Written by the application: ``apps`` (with ``app_model_config_id`` / ``workflow_id`` pointing at
the current config and the published workflow), ``app_model_configs``, ``workflows``.
Written by the consumer groups: ``sites``, ``installed_apps``, ``app_dataset_joins`` (and their
version), the deletion of ``tool_parameter_cache`` rows (which the app runtime fills), and
``app_telemetry``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, new_id, utcnow

WORKFLOW_MODES = frozenset({"workflow", "advanced-chat"})
"""App modes whose datasets come from the published workflow; the others' from the model config."""
DRAFT = "draft"
"""``workflows.version`` of an app's draft; a published workflow's version is its publication time."""
RAG_PIPELINE = "rag-pipeline"
"""``workflows.type`` of a knowledge pipeline's workflows (``app_id`` is then the pipeline's id)."""


class App(Base):
    __tablename__ = "apps"
    __table_args__ = (Index(None, "tenant_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str]
    mode: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    icon_type: Mapped[str | None] = mapped_column(String(16))
    icon: Mapped[str | None]
    icon_background: Mapped[str | None]
    app_model_config_id: Mapped[str | None] = mapped_column(String(36))
    workflow_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(32), default="normal")
    enable_site: Mapped[bool] = mapped_column(Boolean, default=True)
    enable_api: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Site(Base):
    """An app's web app: one per app, reached at ``/chat/<code>``."""

    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    app_id: Mapped[str] = mapped_column(String(36), unique=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str]
    icon_type: Mapped[str | None] = mapped_column(String(16))
    icon: Mapped[str | None]
    icon_background: Mapped[str | None]
    description: Mapped[str] = mapped_column(Text, default="")
    default_language: Mapped[str] = mapped_column(String(32), default="en-US")
    customize_token_strategy: Mapped[str] = mapped_column(String(32), default="not_allow")
    status: Mapped[str] = mapped_column(String(32), default="normal")
    created_by: Mapped[str | None] = mapped_column(String(36))
    updated_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class InstalledApp(Base):
    """An app as it appears in a tenant's workspace (the owner's, or one it was shared with)."""

    __tablename__ = "installed_apps"
    __table_args__ = (UniqueConstraint("tenant_id", "app_id"), Index(None, "app_id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    app_id: Mapped[str] = mapped_column(String(36))
    app_owner_tenant_id: Mapped[str] = mapped_column(String(36))
    position: Mapped[int] = mapped_column(Integer, default=0)
    is_pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    last_used_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AppModelConfig(Base):
    """One version of a chat-style app's model config (Dify writes a new row per change)."""

    __tablename__ = "app_model_configs"
    __table_args__ = (Index(None, "app_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    app_id: Mapped[str] = mapped_column(String(36))
    provider: Mapped[str | None]
    model_id: Mapped[str | None]
    model: Mapped[dict[str, Any] | None]
    dataset_configs: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def dataset_ids(self) -> list[str]:
        """The datasets this config retrieves from, in Dify's ``dataset_configs`` shape:
        ``{"datasets": {"datasets": [{"dataset": {"enabled": true, "id": "..."}}]}}``."""
        entries = ((self.dataset_configs or {}).get("datasets") or {}).get("datasets") or []
        ids = [e.get("dataset", {}).get("id") for e in entries if e.get("dataset", {}).get("enabled", True)]
        return list(dict.fromkeys(i for i in ids if i))


class Workflow(Base):
    """An app's workflow graph: its draft (``version == "draft"``) and each published version."""

    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("app_id", "version"), Index(None, "tenant_id", "app_id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    app_id: Mapped[str] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(32), default="workflow")  # workflow | chat
    version: Mapped[str] = mapped_column(String(64), default=DRAFT)
    graph: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def nodes(self, node_type: str) -> list[dict[str, Any]]:
        return [n for n in (self.graph or {}).get("nodes") or [] if (n.get("data") or {}).get("type") == node_type]

    def knowledge_dataset_ids(self) -> list[str]:
        """The datasets the graph's ``knowledge-retrieval`` nodes reference (``data.dataset_ids``)."""
        ids = [i for n in self.nodes("knowledge-retrieval") for i in (n["data"].get("dataset_ids") or [])]
        return list(dict.fromkeys(ids))


class AppDatasetJoin(Base):
    """An app retrieves from a dataset. Kept equal to the datasets its current config references."""

    __tablename__ = "app_dataset_joins"
    __table_args__ = (UniqueConstraint("app_id", "dataset_id"), Index(None, "dataset_id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    app_id: Mapped[str] = mapped_column(String(36))
    dataset_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AppDatasetJoinVersion(Base):
    """Which event the app's joins were last made equal to. ``version`` is that event's
    ``"<occurred_at ISO>/<event_id>"`` (it sorts by time), so an older config or workflow arriving
    after a newer one is ignored."""

    __tablename__ = "app_dataset_join_versions"

    app_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[str] = mapped_column(String(96))
    occurred_at: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(String(36))
    source_type: Mapped[str] = mapped_column(String(32))  # app_model_config | workflow
    source_id: Mapped[str] = mapped_column(String(36))
    dataset_ids: Mapped[list[Any]] = mapped_column(default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ToolParameterCache(Base):
    """Decrypted parameters of a workflow tool node, cached by the app runtime (Dify keeps these
    in Redis under ``tool_parameter_cache:<tenant>:<provider>:<tool>:WORKFLOW.<app>.<node>``)."""

    __tablename__ = "tool_parameter_cache"
    __table_args__ = (
        UniqueConstraint("tenant_id", "app_id", "node_id", "provider_type", "provider_id", "tool_name"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    app_id: Mapped[str] = mapped_column(String(36))
    node_id: Mapped[str]
    provider_type: Mapped[str] = mapped_column(String(40))
    provider_id: Mapped[str]
    tool_name: Mapped[str]
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cached_at: Mapped[datetime] = mapped_column(default=utcnow)


class AppTelemetry(Base):
    """One counted app event (Dify's enterprise telemetry cases ``APP_CREATED``, ``APP_DELETED``,
    ``APP_UPDATED``): the count of apps created, deleted and updated per tenant is the count of
    these rows. A row per event, so counting one twice is impossible."""

    __tablename__ = "app_telemetry"
    __table_args__ = (Index(None, "tenant_id", "telemetry_case"),)

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    telemetry_case: Mapped[str] = mapped_column(String(32))  # app.created | app.deleted | app.updated
    tenant_id: Mapped[str] = mapped_column(String(36))
    app_id: Mapped[str] = mapped_column(String(36))
    mode: Mapped[str | None] = mapped_column(String(32))
    occurred_at: Mapped[datetime]
