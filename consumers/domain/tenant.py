"""Tenants (Dify's workspaces), their settings as the consumers keep them, and default models.

``tenants`` is written by the application (Dify's ``TenantService``) before it publishes
``tenant_was_created`` / ``tenant_was_updated``. ``tenant_settings`` and ``tenant_default_models``
are the tenant's resources that the ``tenant-provisioner`` group initialises and keeps in step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, new_id, utcnow

DEFAULT_PLAN = "basic"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str]
    plan: Mapped[str] = mapped_column(String(32), default=DEFAULT_PLAN)
    status: Mapped[str] = mapped_column(String(32), default="normal")
    custom_config: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TenantSetting(Base):
    """The tenant's settings as applied by the consumers: name, plan (which sets the hosted
    providers' quotas) and custom config (web-app branding: ``remove_webapp_brand``, ...).

    ``field_versions`` holds, per field, the version of the event that last set it
    (``"<occurred_at ISO>/<event_id>"``, which sorts by time), so an older update delivered
    late (a replay, a re-driven dead letter) never overwrites a newer one."""

    __tablename__ = "tenant_settings"

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None]
    plan: Mapped[str] = mapped_column(String(32), default=DEFAULT_PLAN)
    custom_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    field_versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TenantDefaultModel(Base):
    """The model a tenant's apps use by default, per model type (Dify's ``tenant_default_models``)."""

    __tablename__ = "tenant_default_models"
    __table_args__ = (UniqueConstraint("tenant_id", "model_type"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    model_type: Mapped[str] = mapped_column(String(40))
    provider_name: Mapped[str]
    model_name: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkspaceSyncTask(Base):
    """A credential-sync task for the enterprise plugin manager: Dify pushes it onto the Redis list
    ``enterprise:workspace:sync:queue``; here the queue is this table."""

    __tablename__ = "workspace_sync_tasks"

    task_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(36))
    source: Mapped[str] = mapped_column(String(64))
    retry_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def tenant_plan(session: Session, tenant_id: str) -> str:
    """The tenant's plan: its settings' if the tenant-provisioner has run, else the tenants
    row's (written by the application), else the default."""
    plan = session.scalar(select(TenantSetting.plan).where(TenantSetting.tenant_id == tenant_id))
    if plan is None:
        plan = session.scalar(select(Tenant.plan).where(Tenant.id == tenant_id))
    return plan or DEFAULT_PLAN
