"""``tenant-provisioner``: a tenant's default resources exist, and follow its settings.

Seed: the receivers of ``tenant_was_created`` (initialise the tenant's resources) and
``tenant_was_updated`` (sync its configuration). Resources: the ``tenant_settings`` row (name, plan,
custom config), a record with the plan's trial quota for each hosted provider, and the default
models. A plan change sets the hosted providers' quota limits to the new plan's (tokens already
used stay used).

Order: both events are keyed by ``tenant_id``. Each settings field remembers the version of the
event that set it, so an older update delivered late (a replay, a re-driven dead letter) changes
no field a newer one set, while its other fields still apply. Everything is upserted, so the
handlers are idempotent by nature and ``tenant_was_updated`` before ``tenant_was_created`` works.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import DOMAIN, Provider, Tenant, TenantDefaultModel, TenantSetting, insert_ignore
from dify_events.consumers.domain.provider import DEFAULT_MODELS, HOSTED_PROVIDERS, SYSTEM, ensure_provider, plan_quota
from dify_events.consumers.domain.tenant import tenant_plan
from dify_events.schemas.events import Event, TenantWasCreated, TenantWasUpdated

from .versions import is_stale, version_of

group = register(ConsumerGroup("tenant-provisioner", tables=DOMAIN))


@group.handler(TenantWasCreated)
def provision_tenant(event: TenantWasCreated, ctx: HandlerContext) -> None:
    apply_settings(ctx, event, {"name": event.tenant_name, "plan": event.plan})


@group.handler(TenantWasUpdated)
def sync_tenant_settings(event: TenantWasUpdated, ctx: HandlerContext) -> None:
    changes = {"name": event.tenant_name, "plan": event.plan, "custom_config": event.custom_config}
    apply_settings(ctx, event, {field: value for field, value in changes.items() if value is not None})


def apply_settings(ctx: HandlerContext, event: Event, changes: dict[str, Any]) -> None:
    """Applies each changed field the event is not older than, then brings the resources in step."""
    session, tenant_id = ctx.session, event.tenant_id
    if session.scalar(select(TenantSetting.tenant_id).where(TenantSetting.tenant_id == tenant_id)) is None:
        name = session.scalar(select(Tenant.name).where(Tenant.id == tenant_id))
        insert_ignore(session, TenantSetting, dict(
            tenant_id=tenant_id, name=name, plan=tenant_plan(session, tenant_id), custom_config={}, field_versions={}),
            conflict=("tenant_id",))
    settings = session.scalars(select(TenantSetting).where(TenantSetting.tenant_id == tenant_id)
                               .with_for_update()).one()  # one tenant's updates apply one at a time
    versions = dict(settings.field_versions or {})
    applied, ignored = [], []
    for field, value in changes.items():
        if is_stale(event, versions.get(field)):
            ignored.append(field)
            continue
        setattr(settings, field, dict(value) if isinstance(value, dict) else value)
        versions[field] = version_of(event)
        applied.append(field)
    settings.field_versions = versions  # a new dict: the JSON column sees the change
    session.flush()
    provision_resources(session, tenant_id, settings.plan)
    ctx.log.info("tenant %s: applied %s%s; plan %s", tenant_id, ", ".join(applied) or "nothing",
                 f"; ignored older {', '.join(ignored)}" if ignored else "", settings.plan)


def provision_resources(session: Session, tenant_id: str, plan: str) -> None:
    """The hosted providers' records with the plan's quota limit, and the default models."""
    for provider in HOSTED_PROVIDERS:
        ensure_provider(session, tenant_id, provider, plan)
    session.execute(update(Provider)
                    .where(Provider.tenant_id == tenant_id, Provider.provider_type == SYSTEM,
                           Provider.quota_type == "trial")
                    .values(quota_limit=plan_quota(plan))
                    .execution_options(synchronize_session=False))
    insert_ignore(session, TenantDefaultModel, [
        dict(tenant_id=tenant_id, model_type=model_type, provider_name=provider, model_name=model)
        for model_type, (provider, model) in DEFAULT_MODELS.items()], conflict=("tenant_id", "model_type"))
