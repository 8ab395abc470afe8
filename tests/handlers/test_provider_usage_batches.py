"""``provider-usage`` as a batch handler: a batch of messages ends exactly as the same messages handled one
at a time, through the group's real pipeline (``GroupHarness``), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from dify_events.consumers.domain import MessageUsage, Provider, ProviderUsage, TenantCreditPool
from dify_events.consumers.handlers import provider_usage
from tests.handlers.test_provider_usage import FULL, T0, hosted, message


def world(p: str) -> tuple[list, list]:
    """Rows and messages of tenants ``{p}1`` and ``{p}2``, every name prefixed by ``p``: quotas and a pool that
    run out in the middle, a message id repeated, other app modes, a v2 event, mixed units and providers."""
    t1, t2 = f"{p}1", f"{p}2"
    rows = [hosted(limit=400, tenant_id=t1),  # 150 tokens a message: the third overdraws it, the fourth is not charged
            Provider(tenant_id=t1, provider_name=FULL, provider_type="custom"),
            hosted(limit=10_000, name="anthropic", quota_type="free", tenant_id=t1),  # stamped and charged: one row
            hosted(limit=-1, name="openai", quota_type="paid", tenant_id=t2),
            TenantCreditPool(tenant_id=t2, pool_type="trial", quota_limit=1000, quota_used=800),  # 200 left
            TenantCreditPool(tenant_id=t1, pool_type="paid", quota_limit=-1)]
    minute = timedelta(minutes=1)
    events = [
        message(1, tenant_id=t1, message_id=f"{p}m1", at=T0),
        message(2, tenant_id=t2, message_id=f"{p}m2", at=T0),
        message(3, tenant_id=t1, message_id=f"{p}m3", at=T0 + 3 * minute),
        message(4, tenant_id=t1, message_id=f"{p}m1", at=T0 + 4 * minute, tokens=(7, 7)),  # m1 again: counted once
        message(5, tenant_id=t2, message_id=f"{p}m5", at=T0 + 1 * minute),
        message(6, tenant_id=t1, message_id=f"{p}m6", at=T0 + 9 * minute, app_mode="workflow"),  # not charged
        message(7, tenant_id=t1, message_id=f"{p}m7", at=T0 + 6 * minute, app_mode=None),  # v2: charged
        message(8, tenant_id=t2, message_id=f"{p}m8", at=T0 + 2 * minute),  # the pool is empty by now
        message(9, tenant_id=t1, message_id=f"{p}m9", at=T0 + 12 * minute),  # the trial quota is used up
        message(10, tenant_id=t1, message_id=f"{p}m10", provider="anthropic", quota_type="free", quota_unit="times",
                at=T0 + 2 * minute),
        message(11, tenant_id=t1, message_id=f"{p}m11", provider="anthropic", quota_type="free", quota_unit="credits",
                at=T0 + 8 * minute),
        message(12, tenant_id=t1, message_id=f"{p}m12", quota_type="paid", quota_unit="credits"),  # unlimited pool
        message(13, tenant_id=t2, message_id=f"{p}m13", quota_type="paid", at=T0 + 20 * minute),  # unlimited row
        message(14, tenant_id=t1, message_id=f"{p}m14", quota_type=None, at=T0 + 30 * minute),  # own key
    ]
    return rows, events


def state(db, p: str) -> dict:
    """Every row the handler writes for tenants of prefix ``p``, the prefix taken out."""
    def bare(name: str) -> str:
        return name.removeprefix(p)

    with db() as s:
        return {
            "providers": sorted((bare(r.tenant_id), r.provider_name, r.quota_used, r.last_used)
                                for r in s.scalars(select(Provider).where(Provider.tenant_id.startswith(p)))),
            "pools": sorted((bare(r.tenant_id), r.pool_type, r.quota_used) for r in s.scalars(
                select(TenantCreditPool).where(TenantCreditPool.tenant_id.startswith(p)))),
            "usage": sorted((bare(r.tenant_id), r.provider_name, r.message_count, r.message_tokens, r.answer_tokens,
                             r.total_tokens, r.last_used) for r in s.scalars(
                select(ProviderUsage).where(ProviderUsage.tenant_id.startswith(p)))),
            "messages": sorted((bare(r.message_id), bare(r.tenant_id), r.total_tokens, r.occurred_at)
                               for r in s.scalars(select(MessageUsage).where(MessageUsage.tenant_id.startswith(p)))),
        }


@pytest.mark.parametrize("size", [14, 5, 1], ids=["one-batch", "batches-of-5", "batches-of-1"])
def test_a_batch_of_messages_ends_exactly_as_the_messages_one_at_a_time(harness, add, db, size):
    # Given the same world twice, under the prefixes "one-" and "many-"
    one_rows, one_events = world("one-")
    many_rows, many_events = world("many-")
    add(*one_rows, *many_rows)
    group = harness(provider_usage.group)
    # When one copy's messages are handled one at a time, and the other's in batches of ``size``, in order
    assert all(group.send(e).handled for e in one_events)
    results = [r for i in range(0, len(many_events), size) for r in group.send_batch(many_events[i:i + size])]
    # Then every message was handled in its batch, and each row ends exactly as one at a time left it
    assert [(r.outcome, r.batched) for r in results] == [("handled", True)] * len(many_events)
    assert state(db, "many-") == state(db, "one-")
    # which is: the trial quota charged until it ran out (the third message overdrew it), the pool emptied
    # (150, then the 50 left, then nothing), one row stamped and charged, unlimited ones and a repeat not charged
    expected = state(db, "one-")
    assert ("1", "openai", 450, T0 + 6 * timedelta(minutes=1)) in expected["providers"]
    assert ("1", "anthropic", 1 + 1, T0 + 8 * timedelta(minutes=1)) in expected["providers"]
    assert ("1", FULL, 0, T0 + 30 * timedelta(minutes=1)) in expected["providers"]
    assert ("2", "openai", 0, None) in expected["providers"]
    assert expected["pools"] == [("1", "paid", 0), ("2", "trial", 1000)]
    assert ("m1", "1", 150, T0) in expected["messages"] and len(expected["messages"]) == 13
    assert ("1", FULL, 7, 7 * 100, 7 * 50, 7 * 150, T0 + 30 * timedelta(minutes=1)) in expected["usage"]


def test_a_batch_counts_a_message_claimed_by_an_earlier_batch_once(harness, add, db):
    # Given a message counted in one batch
    add(hosted(limit=10_000))
    group = harness(provider_usage.group)
    first = message(1)
    assert [r.handled for r in group.send_batch([first, message(2)])] == [True, True]
    # When a later batch brings the same message under a new event id, with a new one
    results = group.send_batch([message(1, message_id="m1"), message(3)])
    # Then both events are handled, but only the new message is counted and charged
    assert [r.handled for r in results] == [True, True]
    with db() as s:
        assert s.scalars(select(ProviderUsage.message_count)).one() == 3
        assert s.scalars(select(Provider.quota_used)).one() == 3 * 150


def test_members_charging_the_same_quota_at_once_charge_it_as_one_at_a_time(harness, add, db):
    # Given a hosted quota of 10,000 tokens and a credit pool of 5,000, and two members of the group, whose
    # messages name the provider by its full id and by its short name (so no statistics row is shared)
    add(hosted(limit=10_000), TenantCreditPool(tenant_id="t2", pool_type="trial", quota_limit=5_000))
    members = [harness(provider_usage.group), harness(provider_usage.group)]
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def work(member, name: str, provider: str) -> None:
        try:
            start.wait(10)
            for b in range(10):  # ten batches of ten messages of 150 tokens, half for each tenant
                batch = [message(n, tenant_id=f"t{1 + n % 2}", message_id=f"{name}-{b}-{n}", provider=provider)
                         for n in range(10)]
                assert all(r.handled for r in member.send_batch(batch))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(member, f"member{i}", provider))
               for i, (member, provider) in enumerate(zip(members, (FULL, "openai"), strict=True))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # When both charge at once (each batch reading the rows it charges under a lock)
    assert failures == [] and not any(t.is_alive() for t in threads)
    # Then the quota was charged until it ran out, by whole messages (the last overdrawing it), and the pool
    # emptied to the unit: what the 100 messages one at a time would have charged, in any order
    with db() as s:
        assert s.scalars(select(Provider.quota_used)).one() == 67 * 150
        assert s.scalars(select(TenantCreditPool.quota_used)).one() == 5_000
        assert s.scalars(select(ProviderUsage.message_count)).all() == [50] * 4
