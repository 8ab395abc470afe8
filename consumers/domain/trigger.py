"""A workflow app's triggers, kept in step with its graph by the trigger groups (Dify's ``models/trigger.py``).

``app_triggers`` (every trigger node of the published workflow), ``workflow_schedule_plans`` (the
schedule node's cron plan), ``workflow_plugin_triggers`` (plugin trigger nodes and their
subscriptions) and ``workflow_webhook_triggers`` (webhook nodes and their public webhook ids).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, new_id, utcnow

WEBHOOK, SCHEDULE, PLUGIN = "trigger-webhook", "trigger-schedule", "trigger-plugin"
ENABLED = "enabled"


class AppTrigger(Base):
    __tablename__ = "app_triggers"
    __table_args__ = (UniqueConstraint("app_id", "node_id"), Index(None, "tenant_id", "app_id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    app_id: Mapped[str] = mapped_column(String(36))
    node_id: Mapped[str] = mapped_column(String(64))
    trigger_type: Mapped[str] = mapped_column(String(32))
    title: Mapped[str | None]
    provider_name: Mapped[str | None]
    status: Mapped[str] = mapped_column(String(32), default=ENABLED)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WorkflowSchedulePlan(Base):
    __tablename__ = "workflow_schedule_plans"
    __table_args__ = (UniqueConstraint("app_id"), Index(None, "tenant_id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    app_id: Mapped[str] = mapped_column(String(36))
    node_id: Mapped[str] = mapped_column(String(64))
    cron_expression: Mapped[str]
    timezone: Mapped[str] = mapped_column(String(64))
    next_run_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WorkflowPluginTrigger(Base):
    __tablename__ = "workflow_plugin_triggers"
    __table_args__ = (UniqueConstraint("app_id", "node_id"), Index(None, "subscription_id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    app_id: Mapped[str] = mapped_column(String(36))
    node_id: Mapped[str] = mapped_column(String(64))
    provider_id: Mapped[str]
    event_name: Mapped[str]
    subscription_id: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WorkflowWebhookTrigger(Base):
    __tablename__ = "workflow_webhook_triggers"
    __table_args__ = (UniqueConstraint("app_id", "node_id"), UniqueConstraint("webhook_id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    app_id: Mapped[str] = mapped_column(String(36))
    node_id: Mapped[str] = mapped_column(String(64))
    webhook_id: Mapped[str] = mapped_column(String(24))
    created_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
