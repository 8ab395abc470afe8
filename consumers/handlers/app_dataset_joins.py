"""``app-dataset-joins``: an app's dataset joins follow its current config.

Dify: ``update_app_dataset_join_when_app_model_config_updated`` and
``update_app_dataset_join_when_app_published_workflow_updated``. Both events carry the complete
set of datasets the config (or the published workflow's knowledge-retrieval nodes that pass
Dify's node validation: the signal skips the others, as Dify's receiver does) references; the
handler makes the joins equal to it: adds the missing, removes the stale. A model-config update
sent without a config (``app_model_config=None``) changes nothing, as in Dify.

Order: both events are keyed by ``app_id``, so Kafka delivers one app's updates in order. An older
update can still arrive after a newer one (a replay, a re-driven dead letter); the app's
``app_dataset_join_versions`` row records the version (``occurred_at``, ``event_id``) the joins
were last made equal to, and an older update is ignored.

Deleted datasets (a difference kept on purpose: Dify joins whatever id the config names): a
dataset the application has deleted (no ``datasets`` row) or that belongs to another tenant is not
joined, so no join outlives its dataset; ``dataset-cleaner`` removes the joins of a dataset
deleted later.
The datasets read are locked (``FOR SHARE`` on PostgreSQL) so a dataset cannot be deleted between
this check and this transaction's commit; SQLite's single writer gives the same.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import DOMAIN, AppDatasetJoin, AppDatasetJoinVersion, Dataset, insert_ignore
from dify_events.schemas.events import AppModelConfigWasUpdated, AppPublishedWorkflowWasUpdated

from .versions import is_stale, version_of

group = register(ConsumerGroup("app-dataset-joins", tables=DOMAIN))


@group.handler(AppModelConfigWasUpdated)
def sync_joins_with_model_config(event: AppModelConfigWasUpdated, ctx: HandlerContext) -> None:
    if not event.config_given:
        ctx.log.info("app %s: model config update without a config: joins unchanged (as in Dify)", event.app_id)
        return
    sync_app_dataset_joins(event, ctx, event.dataset_ids, source_type="app_model_config",
                           source_id=event.app_model_config_id)


@group.handler(AppPublishedWorkflowWasUpdated)
def sync_joins_with_published_workflow(event: AppPublishedWorkflowWasUpdated, ctx: HandlerContext) -> None:
    sync_app_dataset_joins(event, ctx, event.dataset_ids, source_type="workflow", source_id=event.workflow_id)


def sync_app_dataset_joins(event: AppModelConfigWasUpdated | AppPublishedWorkflowWasUpdated, ctx: HandlerContext,
                           dataset_ids: Iterable[str], *, source_type: str, source_id: str) -> None:
    """Makes the app's joins equal to ``dataset_ids`` (those that exist in the event's tenant),
    unless a newer update was applied already. Naturally idempotent (set equality)."""
    session, app_id, version = ctx.session, event.app_id, version_of(event)
    insert_ignore(session, AppDatasetJoinVersion, dict(
        app_id=app_id, version="", occurred_at=event.occurred_at, event_id=event.event_id,
        source_type=source_type, source_id=source_id, dataset_ids=[]), conflict=("app_id",))
    applied = session.scalars(select(AppDatasetJoinVersion).where(AppDatasetJoinVersion.app_id == app_id)
                              .with_for_update()).one()  # one app's updates run one at a time
    if is_stale(event, applied.version or None):
        ctx.log.info("ignored %s %s of app %s: older than the applied %s %s", source_type, source_id, app_id,
                     applied.source_type, applied.source_id)
        return

    wanted = list(dict.fromkeys(dataset_ids))
    live = set(session.scalars(select(Dataset.id).where(Dataset.id.in_(wanted), Dataset.tenant_id == event.tenant_id)
                               .with_for_update(read=True)))
    gone = [d for d in wanted if d not in live]
    current = set(session.scalars(select(AppDatasetJoin.dataset_id).where(AppDatasetJoin.app_id == app_id)))
    stale, missing = current - live, [d for d in wanted if d in live and d not in current]
    if stale:
        session.execute(delete(AppDatasetJoin).where(AppDatasetJoin.app_id == app_id,
                                                     AppDatasetJoin.dataset_id.in_(stale)))
    if missing:
        insert_ignore(session, AppDatasetJoin, [dict(app_id=app_id, dataset_id=d, created_at=event.occurred_at)
                                                for d in missing], conflict=("app_id", "dataset_id"))
    applied.version, applied.occurred_at, applied.event_id = version, event.occurred_at, event.event_id
    applied.source_type, applied.source_id, applied.dataset_ids = source_type, source_id, wanted
    ctx.log.info("app %s joins %d datasets (+%d -%d)%s", app_id, len(live), len(missing), len(stale),
                 f"; not joined, no such dataset in the tenant: {', '.join(gone)}" if gone else "")
