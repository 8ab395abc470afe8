"""``provider-usage``: each message's tokens counted once against its provider."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from consumers.domain import MessageUsage, Provider, ProviderUsage, Tenant
from consumers.domain.provider import PLAN_QUOTAS
from consumers.handlers.provider_usage import record_provider_usage
from schemas.events import MessageWasCreated

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def message(n, tokens=(100, 50), provider="openai", tenant_id="t1", at=None, message_id=None) -> MessageWasCreated:
    prompt, answer = tokens
    return MessageWasCreated(tenant_id=tenant_id, message_id=message_id or f"m{n}", conversation_id="conv1",
                             app_id="a1", provider_name=provider, model_name="gpt-4o", message_tokens=prompt,
                             answer_tokens=answer, total_tokens=prompt + answer,
                             occurred_at=at or T0 + timedelta(seconds=n))


def provider(db, name="openai", tenant_id="t1") -> Provider:
    with db() as s:
        return s.scalars(select(Provider).where(Provider.tenant_id == tenant_id, Provider.provider_name == name)).one()


def usage(db, name="openai", tenant_id="t1") -> ProviderUsage:
    with db() as s:
        return s.scalars(select(ProviderUsage).where(ProviderUsage.tenant_id == tenant_id,
                                                     ProviderUsage.provider_name == name)).one()


def test_usage_is_the_sum_of_tokens_and_the_quota_is_deducted(handle, add, db):
    # Given a tenant on the sandbox plan whose hosted provider has no record yet
    add(Tenant(id="t1", name="Acme", plan="sandbox"))
    events = [message(n, (10 * n, n)) for n in range(1, 21)]
    # When twenty messages are counted, out of order
    handle(record_provider_usage, *reversed(events))
    # Then the usage is the sum of their tokens, split as given
    total = sum(e.total_tokens for e in events)
    u = usage(db)
    assert (u.message_count, u.total_tokens) == (20, total)
    assert u.message_tokens == sum(e.message_tokens for e in events)
    assert u.answer_tokens == sum(e.answer_tokens for e in events)
    # and the provider's record was created with the sandbox quota, deducted by the same tokens
    p = provider(db)
    assert (p.provider_type, p.quota_type, p.quota_limit, p.quota_used) == (
        "system", "trial", PLAN_QUOTAS["sandbox"], total)
    assert p.quota_remaining == PLAN_QUOTAS["sandbox"] - total
    # and its last use is the latest message's time, though that one was counted first
    assert p.last_used == u.last_used == events[-1].occurred_at


def test_a_message_is_counted_once_even_under_two_event_ids(handle, db):
    # Given a message, and the same message published again under a new event id
    first = message(1)
    again = message(1, at=first.occurred_at)
    assert again.event_id != first.event_id
    # When both (and the first twice) are handled
    handle(record_provider_usage, first, again, first)
    # Then its tokens are counted once
    assert (usage(db).message_count, usage(db).total_tokens, provider(db).quota_used) == (1, 150, 150)
    with db() as s:
        assert s.scalars(select(MessageUsage.event_id)).all() == [first.event_id]


def test_the_tenants_own_provider_is_created_unlimited_and_not_deducted(handle, db):
    # Given no record of a provider the platform does not host
    # When a message served by it is counted
    handle(record_provider_usage, message(1, provider="my-vllm"), message(2, provider="my-vllm"))
    # Then it is recorded as the tenant's own (custom, no limit), its usage counted, no quota deducted
    p = provider(db, "my-vllm")
    assert (p.provider_type, p.quota_limit, p.quota_used, p.quota_remaining) == ("custom", None, 0, None)
    assert usage(db, "my-vllm").total_tokens == 300


def test_providers_and_tenants_are_counted_apart(handle, db):
    # Given messages of two providers in two tenants
    # When they are counted
    handle(record_provider_usage, message(1, (1, 1)), message(2, (2, 2), provider="anthropic"),
           message(3, (3, 3), tenant_id="t2"), message(4, (4, 4), tenant_id="t2"))
    # Then each (tenant, provider) has its own totals
    assert usage(db).total_tokens == 2
    assert usage(db, "anthropic").total_tokens == 4
    assert usage(db, tenant_id="t2").total_tokens == 14
    assert provider(db, tenant_id="t2").quota_used == 14


def test_a_quota_can_be_overdrawn_by_the_last_messages(handle, add, db):
    # Given an existing provider record with 100 tokens left
    add(Provider(tenant_id="t1", provider_name="openai", provider_type="system", quota_type="trial",
                 quota_limit=1000, quota_used=900))
    # When a message of 150 tokens is counted (it was answered: its tokens were spent)
    handle(record_provider_usage, message(1))
    # Then the quota is overdrawn by 50
    assert (provider(db).quota_used, provider(db).quota_remaining) == (1050, -50)
