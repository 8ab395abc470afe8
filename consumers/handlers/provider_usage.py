"""``provider-usage``: a model's answer counts against its provider.

Seed: ``update_provider_when_message_created`` (on ``message_was_created``): add the message's
tokens to the provider's usage, deduct them from a hosted provider's quota, stamp its last use.

Missing provider record: created on the spot (a hosted provider with the tenant's plan's trial
quota, any other as the tenant's own key), exactly as ``tenant-provisioner`` would. Tenants and
messages travel on different topics and are handled by different groups, so a new tenant's first
messages may well be counted before its ``tenant_was_created``; dropping their usage would lose it.

Idempotent by nature, not only by the runtime's key: the first step claims the message id in
``message_usage``; a message already counted (say, published twice under two event ids) changes
nothing. Counts are added in SQL (``quota_used = quota_used + n``), never read-modified-written,
and ``last_used`` only moves forward, so the order messages are counted in does not matter.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, case, literal, update

from consumers.context import HandlerContext
from consumers.domain import DOMAIN, MessageUsage, Provider, ProviderUsage, UTCDateTime, insert_ignore
from consumers.domain.provider import SYSTEM, ensure_provider
from consumers.domain.tenant import tenant_plan
from consumers.group import ConsumerGroup
from consumers.registry import register
from schemas.events import MessageWasCreated

group = register(ConsumerGroup("provider-usage", tables=DOMAIN))


@group.handler(MessageWasCreated)
def record_provider_usage(event: MessageWasCreated, ctx: HandlerContext) -> None:
    session, tenant_id, provider = ctx.session, event.tenant_id, event.provider_name
    counted = insert_ignore(session, MessageUsage, dict(
        message_id=event.message_id, tenant_id=tenant_id, provider_name=provider, model_name=event.model_name,
        total_tokens=event.total_tokens, event_id=event.event_id, occurred_at=event.occurred_at),
        conflict=("message_id",))
    if not counted:
        ctx.log.info("message %s was counted already", event.message_id)
        return
    ensure_provider(session, tenant_id, provider, tenant_plan(session, tenant_id))
    tokens, at = event.total_tokens, event.occurred_at
    session.execute(update(Provider)
                    .where(Provider.tenant_id == tenant_id, Provider.provider_name == provider)
                    .values(quota_used=case((Provider.provider_type == SYSTEM, Provider.quota_used + tokens),
                                            else_=Provider.quota_used),
                            last_used=_later(Provider.last_used, at))
                    .execution_options(synchronize_session=False))
    insert_ignore(session, ProviderUsage, dict(tenant_id=tenant_id, provider_name=provider),
                  conflict=("tenant_id", "provider_name"))
    session.execute(update(ProviderUsage)
                    .where(ProviderUsage.tenant_id == tenant_id, ProviderUsage.provider_name == provider)
                    .values(message_count=ProviderUsage.message_count + 1,
                            message_tokens=ProviderUsage.message_tokens + event.message_tokens,
                            answer_tokens=ProviderUsage.answer_tokens + event.answer_tokens,
                            total_tokens=ProviderUsage.total_tokens + tokens,
                            last_used=_later(ProviderUsage.last_used, at))
                    .execution_options(synchronize_session=False))
    ctx.log.info("counted %d tokens of message %s against %s of tenant %s", tokens, event.message_id, provider,
                 tenant_id)


def _later(column, at: datetime) -> ColumnElement:
    """``max(column, at)`` in SQL, null counting as the earliest."""
    at = literal(at, UTCDateTime())
    return case((column.is_(None), at), (column < at, at), else_=column)
