"""``tenant-provisioner``: a new tenant's default resources; its changed settings applied."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from dify_events.consumers.domain import Provider, Tenant, TenantDefaultModel, TenantSetting
from dify_events.consumers.domain.provider import HOSTED_PROVIDERS, PLAN_QUOTAS
from dify_events.consumers.handlers.provider_usage import record_provider_usage
from dify_events.consumers.handlers.tenant_provisioner import provision_tenant, sync_tenant_settings
from dify_events.schemas.events import MessageWasCreated, TenantWasCreated, TenantWasUpdated

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def created(plan="basic", at=T0) -> TenantWasCreated:
    return TenantWasCreated(tenant_id="t1", tenant_name="Acme", plan=plan, occurred_at=at)


def updated(seconds, **fields) -> TenantWasUpdated:
    return TenantWasUpdated(tenant_id="t1", occurred_at=T0 + timedelta(seconds=seconds), **fields)


def settings(db) -> TenantSetting:
    with db() as s:
        return s.get(TenantSetting, "t1")


def quotas(db) -> dict[str, tuple]:
    with db() as s:
        return {p.provider_name: (p.provider_type, p.quota_type, p.quota_limit, p.quota_used)
                for p in s.scalars(select(Provider).where(Provider.tenant_id == "t1"))}


def test_a_new_tenant_gets_its_resources_once(handle, db):
    # Given a tenant_was_created event on the professional plan
    event = created("professional")
    # When it is handled twice
    handle(provision_tenant, event, event)
    # Then the tenant has its settings, one trial record per hosted provider with the plan's quota,
    # and its default models, once each
    s = settings(db)
    assert (s.name, s.plan, s.custom_config) == ("Acme", "professional", {})
    assert quotas(db) == {p: ("system", "trial", PLAN_QUOTAS["professional"], 0) for p in HOSTED_PROVIDERS}
    with db() as session:
        models = {(m.model_type, m.provider_name) for m in session.scalars(select(TenantDefaultModel))}
    assert models == {("llm", "openai"), ("text-embedding", "openai")}


def test_a_plan_change_sets_the_quotas_and_keeps_what_was_used(handle, db):
    # Given a basic tenant whose messages used 500 tokens
    handle(provision_tenant, created("basic"))
    handle(record_provider_usage, MessageWasCreated(
        tenant_id="t1", message_id="m1", conversation_id="c1", app_id="a1", provider_name="openai",
        model_name="gpt-4o", message_tokens=400, answer_tokens=100, total_tokens=500, app_mode="chat",
        quota_type="trial", quota_unit="tokens"))
    # When it moves to the team plan
    handle(sync_tenant_settings, updated(1, plan="team"))
    # Then its hosted quotas are the team plan's, with the used tokens still used
    assert quotas(db)["openai"] == ("system", "trial", PLAN_QUOTAS["team"], 500)
    assert quotas(db)["anthropic"] == ("system", "trial", PLAN_QUOTAS["team"], 0)
    assert settings(db).plan == "team"


def test_only_the_fields_given_change(handle, db):
    # Given a provisioned tenant
    handle(provision_tenant, created())
    # When its custom config changes, then its name
    handle(sync_tenant_settings, updated(1, custom_config={"remove_webapp_brand": "true"}),
           updated(2, tenant_name="Acme Inc"))
    # Then both changes hold, and the plan, given by neither, is unchanged
    s = settings(db)
    assert (s.name, s.plan, s.custom_config) == ("Acme Inc", "basic", {"remove_webapp_brand": "true"})


def test_an_older_update_arriving_late_changes_no_field_a_newer_one_set(handle, db):
    # Given a tenant whose plan was set to team at t+10
    handle(provision_tenant, created())
    handle(sync_tenant_settings, updated(10, plan="team"))
    # When an update from t+5 arrives late, setting the plan to sandbox and the name
    handle(sync_tenant_settings, updated(5, plan="sandbox", tenant_name="Older name"))
    # Then the plan stays team (and so do the quotas), while the name, which nothing newer set, is applied
    s = settings(db)
    assert (s.plan, s.name) == ("team", "Older name")
    assert quotas(db)["openai"][2] == PLAN_QUOTAS["team"]


def test_an_update_before_the_creation_still_provisions(handle, add, db):
    # Given a tenant row of the application, and its update handled before its creation event
    add(Tenant(id="t1", name="Acme", plan="sandbox"))
    handle(sync_tenant_settings, updated(5, custom_config={"replace_webapp_logo": "logo.png"}))
    # When the (older) creation event is handled
    handle(provision_tenant, created("sandbox"))
    # Then the resources exist, the plan is the tenant's, and the update's config was not lost
    s = settings(db)
    assert (s.name, s.plan, s.custom_config) == ("Acme", "sandbox", {"replace_webapp_logo": "logo.png"})
    assert quotas(db)["openai"] == ("system", "trial", PLAN_QUOTAS["sandbox"], 0)
