"""The database's invariants once every event is handled: what ``events demo`` checks and prints.

Each check is ``check(session) -> Check(name, ok, detail)``; ``check_all(session)`` runs them all.
They compare what the consumer groups wrote with what the application wrote (apps, datasets,
documents, messages, the apps' current config pointers), so they hold only after the groups have
drained the events of everything the application wrote.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import NamedTuple

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from .app import WORKFLOW_MODES, App, AppDatasetJoin, AppModelConfig, InstalledApp, Site, Workflow
from .dataset import COMPLETED, ERROR, Dataset, Document, DocumentKeyword, DocumentSegment
from .provider import (
    CHARGED_APP_MODES,
    SYSTEM,
    UNLIMITED,
    Message,
    Provider,
    ProviderUsage,
    model_credits,
    short_provider_name,
)

EXAMPLES = 3  # offenders named in a failing check's detail


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str


def examples(items: Iterable[str]) -> str:
    items = list(items)
    more = f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else ""
    return ", ".join(items[:EXAMPLES]) + more


def every_app_has_one_site(session: Session) -> Check:
    counts = dict(session.execute(select(App.id, func.count(Site.id)).outerjoin(Site, Site.app_id == App.id)
                                  .group_by(App.id)).all())
    bad = sorted(f"{app} has {n}" for app, n in counts.items() if n != 1)
    return Check("every app has exactly one site", not bad,
                 f"{len(counts)} apps, one site each" if not bad
                 else f"{len(bad)} of {len(counts)} apps: {examples(bad)}")


def every_app_has_one_installed_app(session: Session) -> Check:
    counts = dict(session.execute(
        select(App.id, func.count(InstalledApp.id))
        .outerjoin(InstalledApp, and_(InstalledApp.app_id == App.id, InstalledApp.tenant_id == App.tenant_id,
                                      InstalledApp.app_owner_tenant_id == App.tenant_id))
        .group_by(App.id)).all())
    bad = sorted(f"{app} has {n}" for app, n in counts.items() if n != 1)
    return Check("every app is installed once in its owner's workspace", not bad,
                 f"{len(counts)} apps, one installed-app record each" if not bad
                 else f"{len(bad)} of {len(counts)} apps: {examples(bad)}")


def deleted_datasets_leave_nothing(session: Session) -> Check:
    live = select(Dataset.id)
    left = {name: session.scalar(select(func.count()).select_from(model).where(model.dataset_id.not_in(live)))
            for name, model in (("documents", Document), ("segments", DocumentSegment),
                                ("index entries", DocumentKeyword), ("app joins", AppDatasetJoin))}
    bad = {name: n for name, n in left.items() if n}
    return Check("no document, segment, index entry or join of a deleted dataset remains", not bad,
                 "none left" if not bad else ", ".join(f"{n} {name}" for name, n in bad.items()))


def index_holds_only_completed_documents(session: Session) -> Check:
    completed = select(Document.id).where(Document.indexing_status == COMPLETED)
    segments = session.scalar(select(func.count()).select_from(DocumentSegment)
                              .where(DocumentSegment.document_id.not_in(completed)))
    entries = session.scalar(select(func.count()).select_from(DocumentKeyword)
                             .where(DocumentKeyword.document_id.not_in(completed)))
    ok = segments == 0 and entries == 0
    return Check("segments and index entries belong only to live, completed documents", ok,
                 "none astray" if ok else f"{segments} segments and {entries} index entries of deleted or "
                                          "unfinished documents")


def documents_are_indexed(session: Session) -> Check:
    live = select(Dataset.id)
    statuses = dict(session.execute(select(Document.indexing_status, func.count()).where(Document.dataset_id.in_(live))
                                    .group_by(Document.indexing_status)).all())
    unexplained = session.scalar(select(func.count()).select_from(Document).where(
        Document.dataset_id.in_(live), Document.indexing_status == ERROR,
        or_(Document.error.is_(None), Document.error == "")))
    pending = {status: n for status, n in statuses.items() if status not in (COMPLETED, ERROR)}
    ok = not pending and not unexplained
    summary = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) or "no documents"
    problems = [f"{n} still {status}" for status, n in sorted(pending.items())]
    if unexplained:
        problems.append(f"{unexplained} in error without a reason")
    return Check("every document of a live dataset is completed, or in error with a reason", ok,
                 summary if ok else f"{summary}: {'; '.join(problems)}")


def _message_totals(session: Session) -> dict[tuple[str, str], int]:
    return {(tenant, provider): int(total) for tenant, provider, total in session.execute(
        select(Message.tenant_id, Message.model_provider, func.sum(Message.total_tokens))
        .group_by(Message.tenant_id, Message.model_provider))}


def provider_usage_equals_message_tokens(session: Session) -> Check:
    expected = _message_totals(session)
    actual = {(u.tenant_id, u.provider_name): u.total_tokens for u in session.scalars(select(ProviderUsage))}
    bad = sorted(f"{t}/{p}: usage {actual.get((t, p), 0)} != messages {expected.get((t, p), 0)}"
                 for t, p in expected.keys() | actual.keys() if actual.get((t, p), 0) != expected.get((t, p), 0))
    return Check("each provider's usage equals the sum of its messages' tokens", not bad,
                 f"{len(expected)} tenant providers, {sum(expected.values())} tokens" if not bad
                 else f"{len(bad)} differ: {examples(bad)}")


def provider_quota_deducted(session: Session) -> Check:
    """Each hosted provider's quota is charged as Dify charges it: by the credits of the chat and
    agent-chat messages that used the provider (its short name; the demo's messages of a hosted
    provider use its trial quota, in credits, as Dify's cloud does), while the quota is not used
    up, so the last charge may overdraw it and none follows; an unlimited quota (-1) and a
    tenant's own key are never charged (a quota made unlimited by a plan change keeps what was
    charged before). Messages are charged in any order, so a used-up quota may
    stop at any of the sums that cross its limit."""
    charges: dict[tuple[str, str], list[int]] = defaultdict(list)
    for tenant, provider, model, mode in session.execute(
            select(Message.tenant_id, Message.model_provider, Message.model_id, App.mode)
            .join(App, App.id == Message.app_id)):
        if mode in CHARGED_APP_MODES:
            charges[(tenant, short_provider_name(provider))].append(model_credits(model))
    bad = []
    for p in session.scalars(select(Provider)):
        got = charges.get((p.tenant_id, p.provider_name), []) if p.provider_type == SYSTEM else []
        total, used, limit = sum(got), p.quota_used, p.quota_limit
        if limit is None or not got:
            ok = used == 0
        elif limit == UNLIMITED:  # never charged while unlimited; a plan change may have made it so
            ok = 0 <= used <= total
        else:
            ok = used == min(total, used) and (used == total or limit <= used < limit + max(got))
        if not ok:
            bad.append(f"{p.tenant_id}/{p.provider_name} ({p.provider_type}, limit {limit}): used {used}, "
                       f"charges {total}")
    return Check("each hosted provider's quota is deducted as Dify charges it", not bad,
                 f"{sum(len(c) for c in charges.values())} charged messages, every quota matches" if not bad
                 else f"{len(bad)} differ: {examples(sorted(bad))}")


def app_joins_follow_latest_config(session: Session) -> Check:
    """A workflow or advanced-chat app's joins are its published workflow's knowledge datasets;
    another app's, its current model config's datasets; in both cases those that still exist in
    the app's tenant."""
    apps = session.scalars(select(App)).all()
    configs = {c.id: c for c in session.scalars(select(AppModelConfig).where(
        AppModelConfig.id.in_([a.app_model_config_id for a in apps if a.app_model_config_id])))}
    workflows = {w.id: w for w in session.scalars(select(Workflow).where(
        Workflow.id.in_([a.workflow_id for a in apps if a.workflow_id])))}
    live = {tuple(row) for row in session.execute(select(Dataset.tenant_id, Dataset.id))}
    joins: dict[str, set[str]] = defaultdict(set)
    for app_id, dataset_id in session.execute(select(AppDatasetJoin.app_id, AppDatasetJoin.dataset_id)):
        joins[app_id].add(dataset_id)
    bad = []
    for app in apps:
        if app.mode in WORKFLOW_MODES:
            workflow = workflows.get(app.workflow_id) if app.workflow_id else None
            referenced = workflow.knowledge_dataset_ids() if workflow else []
        else:
            config = configs.get(app.app_model_config_id) if app.app_model_config_id else None
            referenced = config.dataset_ids() if config else []
        want = {d for d in referenced if (app.tenant_id, d) in live}
        have = joins.get(app.id, set())
        if have != want:
            bad.append(f"{app.id}: joined {len(have - want)} extra, {len(want - have)} missing")
    return Check("app dataset joins equal the datasets of each app's current config", not bad,
                 f"{len(apps)} apps, {sum(len(v) for v in joins.values())} joins" if not bad
                 else f"{len(bad)} of {len(apps)} apps: {examples(sorted(bad))}")


CHECKS: list[Callable[[Session], Check]] = [
    every_app_has_one_site,
    every_app_has_one_installed_app,
    app_joins_follow_latest_config,
    deleted_datasets_leave_nothing,
    index_holds_only_completed_documents,
    documents_are_indexed,
    provider_usage_equals_message_tokens,
    provider_quota_deducted,
]


def check_all(session: Session) -> list[Check]:
    return [check(session) for check in CHECKS]
