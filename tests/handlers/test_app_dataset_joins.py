"""``app-dataset-joins``: an app's joins equal the datasets of its latest config or workflow."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from dify_events.consumers.domain import AppDatasetJoin, AppDatasetJoinVersion, Dataset
from dify_events.consumers.handlers.app_dataset_joins import (
    sync_joins_with_model_config,
    sync_joins_with_published_workflow,
)
from dify_events.schemas.events import AppModelConfigWasUpdated, AppPublishedWorkflowWasUpdated

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def config_updated(dataset_ids, at=T0, app_id="a1", config_id="c1") -> AppModelConfigWasUpdated:
    return AppModelConfigWasUpdated(tenant_id="t1", app_id=app_id, app_model_config_id=config_id,
                                    dataset_ids=tuple(dataset_ids), occurred_at=at)


def workflow_published(dataset_ids, at=T0, app_id="a1", workflow_id="w1") -> AppPublishedWorkflowWasUpdated:
    return AppPublishedWorkflowWasUpdated(tenant_id="t1", app_id=app_id, workflow_id=workflow_id,
                                          dataset_ids=tuple(dataset_ids), occurred_at=at)


def joined(db, app_id="a1") -> set[str]:
    with db() as s:
        return set(s.scalars(select(AppDatasetJoin.dataset_id).where(AppDatasetJoin.app_id == app_id)))


def datasets(*ids, tenant_id="t1"):
    return [Dataset(id=i, tenant_id=tenant_id, name=i) for i in ids]


def test_joins_follow_each_config_adding_and_removing(handle, add, db):
    # Given four datasets of the tenant
    add(*datasets("d1", "d2", "d3", "d4"))
    # When the app's model config references d1 and d2, then d2, d3 and d4, then only d4
    handle(sync_joins_with_model_config, config_updated(["d1", "d2"]))
    after_first = joined(db)
    handle(sync_joins_with_model_config, config_updated(["d2", "d3", "d4"], T0 + timedelta(seconds=1), config_id="c2"))
    after_second = joined(db)
    handle(sync_joins_with_model_config, config_updated(["d4"], T0 + timedelta(seconds=2), config_id="c3"))
    # Then after each update the joins are exactly the referenced datasets
    assert (after_first, after_second, joined(db)) == ({"d1", "d2"}, {"d2", "d3", "d4"}, {"d4"})


def test_a_published_workflow_sets_the_joins_too_and_an_empty_one_clears_them(handle, add, db):
    # Given two datasets, joined by an earlier model config
    add(*datasets("d1", "d2"))
    handle(sync_joins_with_model_config, config_updated(["d1"]))
    # When a workflow referencing d2 is published, then one with no knowledge-retrieval node
    handle(sync_joins_with_published_workflow, workflow_published(["d2"], T0 + timedelta(seconds=1)))
    after_publish = joined(db)
    handle(sync_joins_with_published_workflow, workflow_published([], T0 + timedelta(seconds=2), workflow_id="w2"))
    # Then the joins followed the workflow, and are empty at the end
    assert after_publish == {"d2"}
    assert joined(db) == set()


def test_an_older_update_arriving_late_is_ignored(handle, add, db):
    # Given a newer config (d2) applied first
    add(*datasets("d1", "d2"))
    handle(sync_joins_with_model_config, config_updated(["d2"], T0 + timedelta(seconds=5), config_id="c2"))
    # When an older config (d1) arrives after it, as a replay or a re-driven dead letter would bring it
    handle(sync_joins_with_model_config, config_updated(["d1"], T0, config_id="c1"))
    # Then the joins still follow the newer config, and the version names it
    assert joined(db) == {"d2"}
    with db() as s:
        version = s.get(AppDatasetJoinVersion, "a1")
    assert (version.source_id, version.dataset_ids) == ("c2", ["d2"])


def test_the_same_update_twice_changes_nothing(handle, add, db):
    # Given two datasets
    add(*datasets("d1", "d2"))
    event = config_updated(["d1", "d2"])
    # When one config update is handled twice
    handle(sync_joins_with_model_config, event)
    with db() as s:
        before = sorted((j.id, j.dataset_id) for j in s.scalars(select(AppDatasetJoin)))
    handle(sync_joins_with_model_config, event)
    # Then the second run left the joins exactly as the first made them
    with db() as s:
        assert sorted((j.id, j.dataset_id) for j in s.scalars(select(AppDatasetJoin))) == before


def test_deleted_datasets_and_other_tenants_datasets_are_not_joined(handle, add, db):
    # Given d1 of the tenant, d2 of another tenant, and no d3 (deleted)
    add(*datasets("d1"), *datasets("d2", tenant_id="t2"))
    # When a config references all three
    handle(sync_joins_with_model_config, config_updated(["d1", "d2", "d3"]))
    # Then only the tenant's live dataset is joined
    assert joined(db) == {"d1"}


def test_apps_do_not_touch_each_others_joins(handle, add, db):
    # Given two apps sharing a dataset
    add(*datasets("d1", "d2"))
    handle(sync_joins_with_model_config, config_updated(["d1", "d2"], app_id="a1"),
           config_updated(["d1"], app_id="a2", config_id="c9"))
    # When the first app drops both
    handle(sync_joins_with_model_config, config_updated([], T0 + timedelta(seconds=1), app_id="a1", config_id="c2"))
    # Then the second app keeps its join
    assert (joined(db, "a1"), joined(db, "a2")) == (set(), {"d1"})
