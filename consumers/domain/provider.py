"""Model providers per tenant (quota and last use), credit pools, usage, and the messages that use them.

``messages`` is written by the application when a model answers, before it publishes
``message_was_created``. The ``provider-usage`` group writes ``providers`` (quota used, last
use), ``tenant_credit_pools`` (Dify main's trial and paid credits), ``provider_usage`` (token
totals) and ``message_usage`` (one row per counted message: what makes counting a message twice
impossible, whatever the event id).
"""

from __future__ import annotations

import os
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, insert_ignore, new_id, utcnow

SYSTEM, CUSTOM = "system", "custom"
HOSTED_PROVIDERS = ("openai", "anthropic")
"""Providers the platform hosts: every tenant gets a trial quota of tokens on each."""
UNLIMITED = -1
"""``quota_limit`` of an unlimited quota, as Dify writes it."""
CHARGED_APP_MODES = frozenset({"chat", "agent-chat"})
"""App modes whose messages Dify's provider-usage receiver charges (the others are charged elsewhere)."""


CREDIT_CONFIG_ENV = "HOSTED_MODEL_CREDIT_CONFIG"


def model_credits(model_name: str, config: str | None = None) -> int:
    """Credits one message of ``model_name`` costs: Dify's ``get_model_credits`` over its
    ``HOSTED_MODEL_CREDIT_CONFIG`` (``gpt-4:20,gpt-4o:10``); 1 for a model not listed."""
    config = os.environ.get(CREDIT_CONFIG_ENV, "") if config is None else config
    for item in config.split(","):
        pattern, _, credits = item.partition(":")
        if credits and pattern.strip() == model_name:
            return int(credits)
    return 1


def short_provider_name(provider: str) -> str:
    """``langgenius/openai/openai`` -> ``openai``: Dify's ``ModelProviderID(provider).provider_name``
    (a bare name is ``langgenius/<name>/<name>``, so it stays itself)."""
    return provider.rsplit("/", 1)[-1]
PLAN_QUOTAS: dict[str, int] = {
    "sandbox": 200_000,
    "basic": 1_000_000,
    "professional": 10_000_000,
    "team": 50_000_000,
    "enterprise": UNLIMITED,
}
"""Tokens of hosted trial quota per plan; a plan not listed gets the basic quota."""
DEFAULT_MODELS = {"llm": ("openai", "gpt-4o-mini"), "text-embedding": ("openai", "text-embedding-3-small")}


def plan_quota(plan: str) -> int:
    return PLAN_QUOTAS.get(plan, PLAN_QUOTAS["basic"])


class Provider(Base):
    """A tenant's model provider: hosted (``system``, with a quota; a limit of -1 is unlimited) or
    the tenant's own key (``custom``, no quota). Dify names hosted rows by the short provider name
    (``openai``) and rows of the 1.x plugin era by the full id (``langgenius/openai/openai``)."""

    __tablename__ = "providers"
    __table_args__ = (UniqueConstraint("tenant_id", "provider_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    provider_name: Mapped[str]
    provider_type: Mapped[str] = mapped_column(String(40), default=CUSTOM)
    quota_type: Mapped[str | None] = mapped_column(String(40))  # trial | paid | free; null for custom
    quota_limit: Mapped[int | None] = mapped_column(BigInteger)
    quota_used: Mapped[int] = mapped_column(BigInteger, default=0)
    is_valid: Mapped[bool] = mapped_column(Boolean, default=True)
    last_used: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def quota_remaining(self) -> int | None:
        """Units left; negative when the last message overdrew it; None when unlimited."""
        return None if self.quota_limit in (None, UNLIMITED) else self.quota_limit - self.quota_used


POOLED_QUOTA_TYPES = frozenset({"trial", "paid"})
"""Quota types Dify main charges to the tenant's credit pool of that type instead of the provider row."""


class TenantCreditPool(Base):
    """A tenant's pool of hosted-model credits, ``trial`` or ``paid`` (Dify main's
    ``tenant_credit_pools``; Dify creates the trial pool with the tenant). ``quota_limit`` -1 is
    unlimited, and then nothing is charged to it, as in Dify (its remaining credits are 0)."""

    __tablename__ = "tenant_credit_pools"
    __table_args__ = (UniqueConstraint("tenant_id", "pool_type"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    pool_type: Mapped[str] = mapped_column(String(40))
    quota_limit: Mapped[int] = mapped_column(BigInteger)
    quota_used: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def remaining_credits(self) -> int:
        """Dify's ``remaining_credits``: never negative."""
        return max(0, self.quota_limit - self.quota_used)


class ProviderUsage(Base):
    """Token totals per tenant and provider: the usage statistics of the seed's handler."""

    __tablename__ = "provider_usage"
    __table_args__ = (UniqueConstraint("tenant_id", "provider_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    provider_name: Mapped[str]
    message_count: Mapped[int] = mapped_column(BigInteger, default=0)
    message_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    answer_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    last_used: Mapped[datetime | None]


class MessageUsage(Base):
    """A message whose tokens were counted: inserting it is the claim, so a message published
    twice (even under two event ids) is counted once."""

    __tablename__ = "message_usage"

    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    provider_name: Mapped[str]
    model_name: Mapped[str]
    total_tokens: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[str] = mapped_column(String(36))
    occurred_at: Mapped[datetime]
    counted_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    """A model's answer in a conversation (the slice of Dify's ``messages`` usage needs)."""

    __tablename__ = "messages"
    __table_args__ = (Index(None, "tenant_id", "model_provider"), Index(None, "conversation_id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    app_id: Mapped[str] = mapped_column(String(36))
    conversation_id: Mapped[str] = mapped_column(String(36))
    model_provider: Mapped[str]
    model_id: Mapped[str]
    message_tokens: Mapped[int] = mapped_column(Integer, default=0)
    answer_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_price: Mapped[Decimal | None] = mapped_column(Numeric(10, 7))
    currency: Mapped[str] = mapped_column(String(8), default="USD")
    provider_response_latency: Mapped[float | None]
    invoke_from: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FeedbackTelemetry(Base):
    """One counted feedback (Dify's ``dify.feedback.created`` telemetry event): the enterprise
    telemetry counter ``FEEDBACK`` per tenant, app and rating is the count of these rows. A row per
    event, so counting one twice is impossible."""

    __tablename__ = "feedback_telemetry"
    __table_args__ = (Index(None, "tenant_id", "app_id", "rating"),)

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    app_id: Mapped[str] = mapped_column(String(36))
    message_id: Mapped[str] = mapped_column(String(36))
    rating: Mapped[str | None] = mapped_column(String(16))
    from_source: Mapped[str | None] = mapped_column(String(16))
    occurred_at: Mapped[datetime]


def ensure_provider(session: Session, tenant_id: str, provider_name: str, plan: str) -> None:
    """Creates the tenant's record of a provider unless it exists: a hosted provider with the
    plan's trial quota, any other as the tenant's own (custom, unlimited). Race-free."""
    if provider_name in HOSTED_PROVIDERS:
        values = dict(provider_type=SYSTEM, quota_type="trial", quota_limit=plan_quota(plan))
    else:
        values = dict(provider_type=CUSTOM, quota_type=None, quota_limit=None)
    insert_ignore(session, Provider, dict(tenant_id=tenant_id, provider_name=provider_name, quota_used=0, **values),
                  conflict=("tenant_id", "provider_name"))
