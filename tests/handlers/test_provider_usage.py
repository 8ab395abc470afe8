"""``provider-usage``: Dify's way of charging a hosted provider's quota, and the seed's statistics."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from dify_events.consumers.domain import MessageUsage, Provider, ProviderUsage, TenantCreditPool
from dify_events.consumers.domain.provider import model_credits, short_provider_name
from dify_events.consumers.handlers.provider_usage import record_provider_usage
from dify_events.schemas.events import MessageWasCreated

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FULL = "langgenius/openai/openai"


def message(n, tokens=(100, 50), provider=FULL, tenant_id="t1", at=None, message_id=None, app_mode="chat",
            quota_type="trial", quota_unit="tokens") -> MessageWasCreated:
    prompt, answer = tokens
    return MessageWasCreated(tenant_id=tenant_id, message_id=message_id or f"m{n}", conversation_id="conv1",
                             app_id="a1", provider_name=provider, model_name="gpt-4o", message_tokens=prompt,
                             answer_tokens=answer, total_tokens=prompt + answer, app_mode=app_mode,
                             quota_type=quota_type, quota_unit=quota_unit, occurred_at=at or T0 + timedelta(seconds=n))


def hosted(limit=10_000, used=0, name="openai", quota_type="trial", tenant_id="t1") -> Provider:
    return Provider(tenant_id=tenant_id, provider_name=name, provider_type="system", quota_type=quota_type,
                    quota_limit=limit, quota_used=used)


def row(db, name="openai", tenant_id="t1") -> Provider:
    with db() as s:
        return s.scalars(select(Provider).where(Provider.tenant_id == tenant_id, Provider.provider_name == name)).one()


def test_the_short_name_is_charged_in_tokens_and_usage_counts_every_message(handle, add, db):
    # Given a hosted openai row (Dify's short name) and the tenant's own-key row under the full id
    add(hosted(), Provider(tenant_id="t1", provider_name=FULL, provider_type="custom"))
    events = [message(n, (10 * n, n)) for n in range(1, 21)]
    # When twenty messages of a chat app are handled, out of order, each twice
    handle(record_provider_usage, *reversed(events), *events)
    # Then the hosted quota is charged message + answer tokens, once each, and the statistics add up
    tokens = sum(11 * n for n in range(1, 21))
    assert row(db).quota_used == tokens and row(db, FULL).quota_used == 0
    with db() as s:
        usage = s.scalars(select(ProviderUsage)).one()
        assert (usage.provider_name, usage.message_count, usage.total_tokens) == (FULL, 20, tokens)
        assert s.scalar(select(func.count()).select_from(MessageUsage)) == 20


@pytest.mark.parametrize(("unit", "expected"), [("tokens", 150), ("credits", 1), ("times", 1)])
def test_the_charge_is_in_the_quotas_unit(handle, add, db, unit, expected):
    add(hosted())
    handle(record_provider_usage, message(1, quota_unit=unit))
    assert row(db).quota_used == expected


def test_credits_come_from_difys_credit_config(monkeypatch):
    assert model_credits("gpt-4o", "gpt-4:20, gpt-4o:10") == 10
    assert model_credits("claude", "gpt-4:20") == 1 and model_credits("gpt-4o", "") == 1
    monkeypatch.setenv("HOSTED_MODEL_CREDIT_CONFIG", "gpt-4o:7")
    assert model_credits("gpt-4o") == 7


@pytest.mark.parametrize("mode", ["completion", "advanced-chat", "workflow"])
def test_messages_of_other_app_modes_are_not_charged_here(handle, add, db, mode):
    add(hosted(), Provider(tenant_id="t1", provider_name=FULL, provider_type="custom"))
    handle(record_provider_usage, message(1, app_mode=mode))
    assert row(db).quota_used == 0 and row(db, FULL).last_used is None
    with db() as s:  # the seed's statistics still count it
        assert s.scalars(select(ProviderUsage)).one().message_count == 1


def test_an_unlimited_quota_is_not_charged_and_no_row_is_ever_created(handle, add, db):
    add(hosted(limit=-1))
    handle(record_provider_usage, message(1), message(2, provider="anthropic"), message(3, quota_type=None))
    assert row(db).quota_used == 0
    with db() as s:
        assert s.scalar(select(func.count()).select_from(Provider)) == 1


def test_charges_stop_once_the_quota_is_used_up_and_only_the_quota_type_is_charged(handle, add, db):
    # Given a trial quota of 200 tokens, and a paid row of the same provider
    add(hosted(limit=200), hosted(limit=1000, quota_type="paid", name="openai-paid"))
    # When five trial messages of 150 tokens come
    handle(record_provider_usage, *(message(n) for n in range(1, 6)))
    # Then the first two are charged (the second overdraws it, as in Dify), none after
    assert row(db).quota_used == 300 and row(db, "openai-paid").quota_used == 0


def test_last_used_moves_at_most_once_per_window(handle, add, db):
    add(hosted(), Provider(tenant_id="t1", provider_name=FULL, provider_type="custom"))
    handle(record_provider_usage, message(1, at=T0), message(2, at=T0 + timedelta(minutes=3)))
    assert row(db, FULL).last_used == T0 and row(db).last_used == T0
    handle(record_provider_usage, message(3, at=T0 + timedelta(minutes=6)))
    assert row(db, FULL).last_used == T0 + timedelta(minutes=6)


def test_a_message_is_charged_once_even_under_two_event_ids(handle, add, db):
    add(hosted())
    handle(record_provider_usage, message(1), message(1, message_id="m1"))
    assert row(db).quota_used == 150


def pool(db, pool_type="trial", tenant_id="t1") -> TenantCreditPool:
    with db() as s:
        return s.scalars(select(TenantCreditPool).where(TenantCreditPool.tenant_id == tenant_id,
                                                        TenantCreditPool.pool_type == pool_type)).one()


def test_dify_main_charges_trial_and_paid_quotas_to_the_tenants_credit_pools(handle, add, db):
    # Given a tenant of Dify main: trial and paid credit pools, and the hosted rows of 1.12.x
    add(hosted(), hosted(quota_type="paid", name="openai-paid"),
        TenantCreditPool(tenant_id="t1", pool_type="trial", quota_limit=1000),
        TenantCreditPool(tenant_id="t1", pool_type="paid", quota_limit=1000))
    # When a trial message (150 tokens) and a paid message in credits are handled
    handle(record_provider_usage, message(1), message(2, quota_type="paid", quota_unit="credits"))
    # Then each pool is charged its message's units and no provider row's quota moves
    assert (pool(db).quota_used, pool(db, "paid").quota_used) == (150, 1)
    assert row(db).quota_used == 0 and row(db, "openai-paid").quota_used == 0


def test_a_credit_pool_is_emptied_never_overdrawn_and_unlimited_pools_are_not_charged(handle, add, db):
    # Given a trial pool with 200 credits left, and another tenant whose paid pool is unlimited
    add(TenantCreditPool(tenant_id="t1", pool_type="trial", quota_limit=1000, quota_used=800),
        TenantCreditPool(tenant_id="t2", pool_type="paid", quota_limit=-1))
    # When two messages of 150 tokens come, and one for the unlimited pool
    handle(record_provider_usage, message(1), message(2), message(3, tenant_id="t2", quota_type="paid"))
    # Then the second is charged only the 50 left (Dify's capped deduction), the unlimited pool nothing
    assert pool(db).quota_used == 1000 and pool(db, "paid", "t2").quota_used == 0


def test_free_quotas_and_tenants_without_a_pool_are_charged_on_the_hosted_row(handle, add, db):
    # Given tenant t1 with only a paid pool, and a free hosted row
    add(hosted(), hosted(quota_type="free", name="openai-free"),
        TenantCreditPool(tenant_id="t1", pool_type="paid", quota_limit=1000))
    handle(record_provider_usage, message(1), message(2, provider="openai-free", quota_type="free"))
    # Then the trial charge falls back to the hosted row (Dify 1.12.x), and free is charged there (both Difys)
    assert row(db).quota_used == 150 and row(db, "openai-free").quota_used == 150
    assert pool(db, "paid").quota_used == 0


def test_difys_provider_ids_strip_to_their_last_part():
    assert short_provider_name(FULL) == "openai" and short_provider_name("openai") == "openai"
    assert short_provider_name("acme/plugin/llm") == "llm"
