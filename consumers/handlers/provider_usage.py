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

Idempotent by nature: the first step claims the message ids; counts are added in SQL, never
read-modified-written; the rows charged are read under a lock.

A batch handler (``ConsumerGroup.batch_handler``): a batch's messages are handled in one call, with
exactly the outcome of handling them one by one in order (a message alone is a batch of one): one
statement claims their ids (a message id repeated in the batch counts once, first come), one upsert
adds their statistics (a row of sums per tenant and provider), and the provider rows and credit pools
they charge are read under a row lock (``FOR UPDATE``; SQLite's one writer holds its lock already),
charged message by message in Python as the per-message statements would, and written back by id in
one statement. The log lines stay one per message (``ctx.log``, naming the message).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Insert, Table, bindparam, case, select, tuple_, update
from sqlalchemy.orm import Session

from dify_events.consumers import BatchContext, ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import (
    DOMAIN,
    MessageUsage,
    Provider,
    ProviderUsage,
    TenantCreditPool,
    dialect_insert,
    insert_ignore_returning,
    new_id,
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


@dataclass
class Tally:
    """A provider row or credit pool as read under its lock, and what the batch's messages do to it."""

    id: str
    quota_limit: int | None
    quota_used: int
    last_used: datetime | None = None
    provider_type: str | None = None
    quota_type: str | None = None
    charged: int = 0
    stamped: bool = False

    def charge(self, units: int) -> None:
        self.quota_used += units
        self.charged += units

    def stamp(self, at: datetime) -> None:
        """``last_used`` moves to ``at`` when it is null or older than the window before ``at``."""
        if self.last_used is None or self.last_used < at - LAST_USED_WINDOW:
            self.last_used, self.stamped = at, True


# the rows a batch charges, locked (built once: most of a statement's cost in SQLAlchemy is in making it)
POOLS = (select(TenantCreditPool.id, TenantCreditPool.tenant_id, TenantCreditPool.pool_type,
                TenantCreditPool.quota_limit, TenantCreditPool.quota_used)
         .where(tuple_(TenantCreditPool.tenant_id, TenantCreditPool.pool_type).in_(bindparam("keys", expanding=True)))
         .order_by(TenantCreditPool.id).with_for_update())
PROVIDERS = (select(Provider.id, Provider.tenant_id, Provider.provider_name, Provider.quota_limit, Provider.quota_used,
                    Provider.last_used, Provider.provider_type, Provider.quota_type)
             .where(tuple_(Provider.tenant_id, Provider.provider_name).in_(bindparam("keys", expanding=True)))
             .order_by(Provider.id).with_for_update())

PROVIDER_ROWS, POOL_ROWS = cast(Table, Provider.__table__), cast(Table, TenantCreditPool.__table__)
PROVIDER_WRITE = (update(PROVIDER_ROWS).where(PROVIDER_ROWS.c.id == bindparam("row_id"))
                  .values(quota_used=bindparam("used"), last_used=bindparam("last")))
POOL_WRITE = update(POOL_ROWS).where(POOL_ROWS.c.id == bindparam("row_id")).values(quota_used=bindparam("used"))
UPSERTS: dict[str, Insert] = {}  # the statistics' upsert, per dialect


def record_provider_usage(event: MessageWasCreated, ctx: HandlerContext) -> None:
    """One message: a batch of one (the per-message form the domain's tests call)."""
    record_provider_usages([event], ctx)


@group.batch_handler(MessageWasCreated)
def record_provider_usages(events: list[MessageWasCreated], ctx: BatchContext | HandlerContext) -> None:
    session = ctx.session
    counted = _claim(ctx, events)
    if not counted:
        return
    _add_statistics(session, counted)
    charged = []
    for event in counted:
        if event.app_mode is not None and event.app_mode not in CHARGED_APP_MODES:  # a v2 event has no mode
            ctx.log.info("message %s of a %s app: not charged here (as in Dify)", event.message_id, event.app_mode)
        else:
            charged.append(event)
    if charged:
        _charge(ctx, charged)


def _claim(ctx: BatchContext | HandlerContext, events: list[MessageWasCreated]) -> list[MessageWasCreated]:
    """The events whose message ids this batch claimed (in ``message_usage``), each id's first one."""
    rows = {e.message_id: dict(message_id=e.message_id, tenant_id=e.tenant_id, provider_name=e.provider_name,
                               model_name=e.model_name, total_tokens=e.total_tokens, event_id=e.event_id,
                               occurred_at=e.occurred_at) for e in reversed(events)}
    # rows in one order in every transaction (so is everything this handler writes): two at once wait, never deadlock
    fresh = insert_ignore_returning(ctx.session, MessageUsage, [rows[m] for m in sorted(rows)], MessageUsage.message_id,
                                    conflict=("message_id",))
    counted = []
    for event in events:
        if event.message_id in fresh:
            fresh.discard(event.message_id)
            counted.append(event)
        else:
            ctx.log.info("message %s was counted already", event.message_id)
    return counted


def _charge(ctx: BatchContext | HandlerContext, events: list[MessageWasCreated]) -> None:
    """Stamps ``last_used`` and charges the quotas of ``events`` (messages of charged app modes), in order."""
    session = ctx.session
    pooled = {(e.tenant_id, e.quota_type) for e in events if e.quota_type in POOLED_QUOTA_TYPES}
    pools = {(r.tenant_id, r.pool_type): Tally(r.id, r.quota_limit, r.quota_used)
             for r in session.execute(POOLS, {"keys": list(pooled)})} if pooled else {}
    named = {(e.tenant_id, name) for e in events for name in (e.provider_name, short_provider_name(e.provider_name))}
    providers = {(r.tenant_id, r.provider_name): Tally(r.id, r.quota_limit, r.quota_used, r.last_used, r.provider_type,
                                                        r.quota_type)
                 for r in session.execute(PROVIDERS, {"keys": list(named)})}
    for event in events:
        at, tenant_id = event.occurred_at, event.tenant_id
        stamped = providers.get((tenant_id, event.provider_name))
        if stamped is not None:
            stamped.stamp(at)
        charge = quota_charge(event)
        if charge is None:
            continue
        pool = pools.get((tenant_id, event.quota_type)) if event.quota_type in POOLED_QUOTA_TYPES else None
        if pool is not None:
            _charge_credit_pool(ctx, event, charge, pool)
            continue
        hosted_name = short_provider_name(event.provider_name)
        hosted = providers.get((tenant_id, hosted_name))
        if (hosted is None or hosted.provider_type != SYSTEM or hosted.quota_type != event.quota_type
                or hosted.quota_limit is None or hosted.quota_limit == UNLIMITED
                or hosted.quota_limit <= hosted.quota_used):
            ctx.log.warning("no %s quota of %s charged for message %s: no such hosted provider row, the quota is "
                            "unlimited, or it is used up", event.quota_type, hosted_name, event.message_id)
            continue
        hosted.charge(charge)
        hosted.stamp(at)
        ctx.log.info("charged %d %s of %s's %s quota for message %s", charge, event.quota_unit, hosted_name,
                     event.quota_type, event.message_id)
    _write(session, TenantCreditPool, pools.values())
    _write(session, Provider, providers.values())


def _charge_credit_pool(ctx: BatchContext | HandlerContext, event: MessageWasCreated, charge: int,
                        pool: Tally) -> None:
    """Dify main: charges ``charge`` to the tenant's pool of the message's quota type, capped at what is left
    (Dify's ``deduct_credits_capped``); an unlimited pool is not charged."""
    if pool.quota_limit == UNLIMITED:
        ctx.log.info("the %s credit pool of tenant %s is unlimited: message %s charges nothing", event.quota_type,
                     event.tenant_id, event.message_id)
        return
    assert pool.quota_limit is not None  # a pool always has a limit
    charged = min(charge, max(0, pool.quota_limit - pool.quota_used))
    pool.charge(charged)
    if charged < charge:
        ctx.log.warning("the %s credit pool of tenant %s is exhausted: %d of %d %s charged for message %s",
                        event.quota_type, event.tenant_id, charged, charge, event.quota_unit, event.message_id)
    else:
        ctx.log.info("charged %d %s to the %s credit pool for message %s", charge, event.quota_unit,
                     event.quota_type, event.message_id)


def _write(session: Session, model: type[Provider] | type[TenantCreditPool], tallies: Iterable[Tally]) -> None:
    """The rows the messages charged or stamped, in one statement (read under their lock, so the values
    computed are what the per-message updates would have left)."""
    provider = model is Provider
    rows = [dict(row_id=t.id, used=t.quota_used, **({"last": t.last_used} if provider else {}))
            for t in sorted(tallies, key=lambda t: t.id) if t.charged or t.stamped]
    if rows:
        session.execute(PROVIDER_WRITE if provider else POOL_WRITE, rows)


def _add_statistics(session: Session, events: list[MessageWasCreated]) -> None:
    """The seed's usage statistics: every message's tokens, per tenant and provider (one upsert for them all)."""
    totals: dict[tuple[str, str], dict] = {}
    for e in events:
        total = totals.setdefault((e.tenant_id, e.provider_name), dict(
            id=new_id(), tenant_id=e.tenant_id, provider_name=e.provider_name, message_count=0, message_tokens=0,
            answer_tokens=0, total_tokens=0, last_used=e.occurred_at))
        total["message_count"] += 1
        total["message_tokens"] += e.message_tokens
        total["answer_tokens"] += e.answer_tokens
        total["total_tokens"] += e.total_tokens
        total["last_used"] = max(total["last_used"], e.occurred_at)
    session.execute(_usage_upsert(session), [totals[key] for key in sorted(totals)])


def _usage_upsert(session: Session) -> Insert:
    """Adds a row of sums to the statistics of its tenant and provider (made once per database dialect)."""
    dialect = session.get_bind().dialect.name
    if dialect not in UPSERTS:
        stmt = dialect_insert(session, ProviderUsage)
        new, old = stmt.excluded, ProviderUsage
        UPSERTS[dialect] = stmt.on_conflict_do_update(index_elements=["tenant_id", "provider_name"], set_=dict(
            message_count=old.message_count + new.message_count,
            message_tokens=old.message_tokens + new.message_tokens,
            answer_tokens=old.answer_tokens + new.answer_tokens,
            total_tokens=old.total_tokens + new.total_tokens,
            last_used=case((old.last_used.is_(None), new.last_used), (old.last_used < new.last_used, new.last_used),
                           else_=old.last_used)))
    return UPSERTS[dialect]
