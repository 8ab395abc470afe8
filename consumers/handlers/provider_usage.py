"""``provider-usage``: a model's answer counts against its provider, the way Dify charges it.

Dify: ``update_provider_when_message_created`` (on ``message_was_created``). As it does:

- only messages of chat and agent-chat apps are charged here (Dify returns unless the generate
  entity is a ``ChatAppGenerateEntity`` or ``AgentChatAppGenerateEntity``: completion, workflow
  and advanced-chat apps are charged by their own code paths);
- the provider's ``last_used`` is stamped on the row named by the full provider id
  (``langgenius/openai/openai``), and the quota is charged on the hosted row named by the short
  name (``openai``, Dify's ``ModelProviderID(...).provider_name``) with ``provider_type = system``
  and the message's ``quota_type``;
- the charge is in the quota's unit: tokens (message + answer tokens), credits (the model's
  credits, ``HOSTED_MODEL_CREDIT_CONFIG``) or times (1); a quota whose limit is -1 is unlimited
  and is not charged; a charge applies only while ``quota_limit > quota_used`` (so the last
  message may overdraw it, and none after it is charged);
- no provider row is ever created: a missing row changes nothing (Dify logs a warning);
- Dify main's credit pools: a ``trial`` or ``paid`` charge goes to the tenant's credit pool of
  that type (``tenant_credit_pools``) instead of the hosted row, capped at what is left in the
  pool (Dify's ``deduct_credits_capped``: the message is already answered, so the pool is emptied,
  never overdrawn, and a warning says how much went uncharged).

Which Dify the charge follows is read from the database: a tenant that has a pool of the quota
type is a tenant of Dify main (which creates the trial pool with the tenant), and a tenant without
one is charged on the hosted row as Dify 1.12.x does. The event is the same in both.

Differences kept on purpose:

- ``last_used`` is throttled in the row itself (it moves only when it is null or older than
  ``LAST_USED_WINDOW``), where Dify keeps the window in a Redis key per tenant and provider; the
  time written is the message's ``occurred_at``, not the handling time, so a replay or a late
  delivery never moves it to the time of the replay;
- the seed's usage statistics (``provider_usage``, token totals per tenant and provider, every
  message counted) and the claim of each message id (``message_usage``, so a message published
  twice under two event ids is charged once) are this platform's additions: Dify has neither.

Idempotent by nature: the first step claims the message id; counts are added in SQL, never
read-modified-written.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, case, literal, or_, select, update

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import (
    DOMAIN,
    MessageUsage,
    Provider,
    ProviderUsage,
    TenantCreditPool,
    UTCDateTime,
    insert_ignore,
    rowcount,
)
from dify_events.consumers.domain.provider import (
    CHARGED_APP_MODES,
    POOLED_QUOTA_TYPES,
    SYSTEM,
    UNLIMITED,
    model_credits,
    short_provider_name,
)
from dify_events.schemas.events import MessageWasCreated

group = register(ConsumerGroup("provider-usage", tables=DOMAIN))

LAST_USED_WINDOW = timedelta(minutes=5)  # Dify's LAST_USED_UPDATE_WINDOW_SECONDS


def quota_charge(event: MessageWasCreated) -> int | None:
    """The units Dify charges for the message; None when it charges nothing."""
    if event.quota_type is None:
        return None
    if event.quota_unit == "tokens":
        return event.message_tokens + event.answer_tokens
    if event.quota_unit == "credits":
        return model_credits(event.model_name)
    if event.quota_unit == "times":
        return 1
    return None


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
    _add_statistics(ctx, event)
    if event.app_mode is not None and event.app_mode not in CHARGED_APP_MODES:  # a v2 event has no mode
        ctx.log.info("message %s of a %s app: not charged here (as in Dify)", event.message_id, event.app_mode)
        return
    at = event.occurred_at
    session.execute(update(Provider)
                    .where(Provider.tenant_id == tenant_id, Provider.provider_name == provider, _due(at))
                    .values(last_used=at).execution_options(synchronize_session=False))
    charge = quota_charge(event)
    if charge is None or _charge_credit_pool(ctx, event, charge):
        return
    charged = rowcount(session.execute(
        update(Provider)
        .where(Provider.tenant_id == tenant_id, Provider.provider_name == short_provider_name(provider),
               Provider.provider_type == SYSTEM, Provider.quota_type == event.quota_type,
               Provider.quota_limit != UNLIMITED, Provider.quota_limit > Provider.quota_used)
        .values(quota_used=Provider.quota_used + charge, last_used=case((_due(at), literal(at, UTCDateTime())),
                                                                         else_=Provider.last_used))
        .execution_options(synchronize_session=False, preserve_rowcount=True)))
    hosted = short_provider_name(provider)
    if not charged:
        ctx.log.warning("no %s quota of %s charged for message %s: no such hosted provider row, the quota is "
                        "unlimited, or it is used up", event.quota_type, hosted, event.message_id)
    else:
        ctx.log.info("charged %d %s of %s's %s quota for message %s", charge, event.quota_unit, hosted,
                     event.quota_type, event.message_id)


def _charge_credit_pool(ctx: HandlerContext, event: MessageWasCreated, charge: int) -> bool:
    """Dify main: charges ``charge`` to the tenant's pool of the message's quota type, capped at
    what is left; False when the tenant has no such pool (Dify 1.12.x: the hosted row is charged)."""
    if event.quota_type not in POOLED_QUOTA_TYPES:
        return False
    where = (TenantCreditPool.tenant_id == event.tenant_id, TenantCreditPool.pool_type == event.quota_type)
    pool = ctx.session.execute(select(TenantCreditPool.quota_limit, TenantCreditPool.quota_used).where(*where)).first()
    if pool is None:
        return False
    if pool.quota_limit == UNLIMITED:
        ctx.log.info("the %s credit pool of tenant %s is unlimited: message %s charges nothing", event.quota_type,
                     event.tenant_id, event.message_id)
        return True
    remaining = TenantCreditPool.quota_limit - TenantCreditPool.quota_used
    ctx.session.execute(update(TenantCreditPool).where(*where, remaining > 0)
                        .values(quota_used=TenantCreditPool.quota_used + case((remaining < charge, remaining),
                                                                               else_=charge))
                        .execution_options(synchronize_session=False))
    charged = min(charge, max(0, pool.quota_limit - pool.quota_used))  # as read; the update itself is atomic
    if charged < charge:
        ctx.log.warning("the %s credit pool of tenant %s is exhausted: about %d of %d %s charged for message %s",
                        event.quota_type, event.tenant_id, charged, charge, event.quota_unit, event.message_id)
    else:
        ctx.log.info("charged %d %s to the %s credit pool for message %s", charge, event.quota_unit,
                     event.quota_type, event.message_id)
    return True


def _due(at: datetime) -> ColumnElement[bool]:
    """``last_used`` may move to ``at``: it is null, or older than the window before ``at``."""
    return or_(Provider.last_used.is_(None), Provider.last_used < literal(at - LAST_USED_WINDOW, UTCDateTime()))


def _add_statistics(ctx: HandlerContext, event: MessageWasCreated) -> None:
    """The seed's usage statistics: every message's tokens, per tenant and provider."""
    session, key = ctx.session, dict(tenant_id=event.tenant_id, provider_name=event.provider_name)
    insert_ignore(session, ProviderUsage, key, conflict=("tenant_id", "provider_name"))
    session.execute(update(ProviderUsage)
                    .where(ProviderUsage.tenant_id == event.tenant_id,
                           ProviderUsage.provider_name == event.provider_name)
                    .values(message_count=ProviderUsage.message_count + 1,
                            message_tokens=ProviderUsage.message_tokens + event.message_tokens,
                            answer_tokens=ProviderUsage.answer_tokens + event.answer_tokens,
                            total_tokens=ProviderUsage.total_tokens + event.total_tokens,
                            last_used=_later(ProviderUsage.last_used, event.occurred_at))
                    .execution_options(synchronize_session=False))


def _later(column, at: datetime) -> ColumnElement:
    """``max(column, at)`` in SQL, null counting as the earliest."""
    value = literal(at, UTCDateTime())
    return case((column.is_(None), value), (column < value, value), else_=column)
