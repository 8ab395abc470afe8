"""What the demo checks once every group has drained: the domain's invariants
(``consumers.domain.invariants``), a few checks that need to know the workload, that each group
claimed every event it takes, and a digest of the domain tables (to show that a second delivery
of every event changed nothing).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from dify_events.schemas.events import AppDraftWorkflowWasSynced

from ..domain import Base, Document, Provider, Tenant, TenantDefaultModel, TenantSetting, ToolParameterCache, search
from ..domain.invariants import Check, check_all, examples
from ..domain.provider import DEFAULT_MODELS, SYSTEM, plan_quota
from ..group import ConsumerGroup
from ..idempotency import processed_events
from .workload import Change, ExpectedDeadLetter, Workload

SEARCH_SAMPLE = 25


def run_checks(engine: Engine, workload: Workload) -> list[Check]:
    with Session(engine) as session:
        return [*check_all(session), search_finds_documents(session, workload),
                tool_caches_follow_drafts(session, workload), tenant_settings_follow_tenants(session)]


def every_event_claimed_once(engine: Engine, workload: Workload, groups: Iterable[ConsumerGroup]) -> Check:
    """Each group holds an idempotency claim for every event of the types it takes (those it is
    meant to reject, and handlers without claims, aside) and none for any other event: nothing was
    lost or passed over by mistake."""
    rejected = {e.event_id for e in workload.expected_dead_letters if e.event_id}
    claimed: dict[str, set[str]] = defaultdict(set)
    with engine.connect() as conn:
        for group, event_id in conn.execute(select(processed_events.c.group_name, processed_events.c.event_id)):
            claimed[group].add(event_id)
    lost, foreign, total, groups = [], [], 0, list(groups)
    for group in groups:
        claiming = {t for t, h in group.handlers.items() if h.option("idempotent")}
        wanted = {e.event_id: e.event_type for e in workload.events()
                  if e.event_type in claiming and e.event_id not in rejected}
        total += len(wanted)
        lost += [f"{group.name}: {wanted[i]} {i}" for i in sorted(wanted.keys() - claimed[group.name])]
        foreign += [f"{group.name}: {i}" for i in sorted(claimed[group.name] - wanted.keys())]
    name = "each group claimed every event it takes, and only those"
    problems = [f"{len(lost)} never handled ({examples(lost)})"] if lost else []
    problems += [f"{len(foreign)} claims of no such event ({examples(foreign)})"] if foreign else []
    return Check(name, not problems, "; ".join(problems) or f"{total:,} claims over {len(groups)} groups")


def search_finds_documents(session: Session, workload: Workload) -> Check:
    """The keyword index finds a sample of live documents by a word only each holds, and finds no
    deleted document by its word."""
    live = dict(session.execute(select(Document.id, Document.dataset_id)
                                .where(Document.id.in_(list(workload.markers)),
                                       Document.indexing_status == "completed"))
                .all())
    found = missing = 0
    bad = []
    for document_id in sorted(live)[:SEARCH_SAMPLE]:
        hits = search(session, live[document_id], workload.markers[document_id])
        found += hits == [document_id]
        if hits != [document_id]:
            bad.append(f"{document_id} found as {hits}")
    deleted = [d for d in workload.markers if d not in live and session.get(Document, d) is None]
    for document_id in deleted:
        hits = search(session, None, workload.markers[document_id])
        missing += not hits
        if hits:
            bad.append(f"deleted {document_id} still found")
    return Check("search finds indexed documents, and no deleted one", not bad,
                 f"{found} of {min(len(live), SEARCH_SAMPLE)} sampled documents found, "
                 f"{missing} of {len(deleted)} deleted ones not" if not bad else "; ".join(bad[:3]))


def tool_caches_follow_drafts(session: Session, workload: Workload) -> Check:
    """No cached tool parameters are left for the tool nodes of a synced draft; the cache of apps
    whose draft was never synced is untouched."""
    synced = {(e.tenant_id, e.app_id, n.node_id) for e in workload.events() if isinstance(e, AppDraftWorkflowWasSynced)
              for n in e.tool_nodes}
    filled = [(i.values["tenant_id"], i.values["app_id"], i.values["node_id"]) for step in workload.steps
              if isinstance(step, Change) for i in step.inserts if i.model is ToolParameterCache]
    kept_wanted = sum(1 for entry in filled if entry not in synced)
    rows = [tuple(r) for r in session.execute(select(ToolParameterCache.tenant_id, ToolParameterCache.app_id,
                                                     ToolParameterCache.node_id))]
    stale = sum(1 for entry in rows if entry in synced)
    ok = stale == 0 and len(rows) == kept_wanted
    return Check("synced drafts' tool caches are dropped, other caches kept", ok,
                 f"{len(filled) - kept_wanted} entries of {len({(t, a) for t, a, _ in synced})} synced drafts dropped, "
                 f"{len(rows)} kept" if ok else f"{stale} entries of synced tool nodes left; {len(rows)} entries "
                                                f"in all, {kept_wanted} expected")


def tenant_settings_follow_tenants(session: Session) -> Check:
    """Each tenant's settings, hosted quotas and default models follow the application's tenant row."""
    tenants = session.scalars(select(Tenant)).all()
    settings = {s.tenant_id: s for s in session.scalars(select(TenantSetting))}
    limits = {(p.tenant_id, p.provider_name): p.quota_limit for p in session.scalars(
        select(Provider).where(Provider.provider_type == SYSTEM))}
    defaults = dict(session.execute(select(TenantDefaultModel.tenant_id, func.count())
                                    .group_by(TenantDefaultModel.tenant_id)).all())
    bad = []
    for tenant in tenants:
        s = settings.get(tenant.id)
        if s is None:
            bad.append(f"{tenant.id} has no settings")
            continue
        if (s.name, s.plan, s.custom_config or {}) != (tenant.name, tenant.plan, tenant.custom_config or {}):
            bad.append(f"{tenant.id}: settings {s.name!r}/{s.plan} != tenant {tenant.name!r}/{tenant.plan}")
        wrong = [p for (t, p), limit in limits.items() if t == tenant.id and limit != plan_quota(tenant.plan)]
        if wrong:
            bad.append(f"{tenant.id}: quota of {', '.join(wrong)} is not the {tenant.plan} plan's")
        if defaults.get(tenant.id, 0) != len(DEFAULT_MODELS):
            bad.append(f"{tenant.id} has {defaults.get(tenant.id, 0)} default models")
    return Check("tenant settings, quotas and default models follow each tenant", not bad,
                 f"{len(tenants)} tenants" if not bad else "; ".join(bad[:3]))


# -- dead letters ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeadLetterRow:
    """Dead letters of one group with one error: how many, why, and which poison they are."""

    group: str
    error_class: str
    reason: str
    count: int
    expected: str | None  # the poison it is, or None: unexpected


def match_dead_letters(letters: dict[str, list], expected: list[ExpectedDeadLetter],
                       passes: int = 1) -> tuple[list[DeadLetterRow], list[ExpectedDeadLetter]]:
    """Pairs each dead letter with an expected one of its group and error class. Returns the rows
    (unexpected ones with ``expected=None``) and the expected dead letters that did not appear."""
    wanted = Counter({e: passes for e in expected})
    rows: Counter[tuple[str, str, str, str | None]] = Counter()
    for group, found in letters.items():
        for letter in found:
            short = letter.error_class.rsplit(".", 1)[-1]
            match = next((e for e in wanted if wanted[e] and e.group == group and e.error_class == short), None)
            if match is not None:
                wanted[match] -= 1
            reason = " ".join(letter.error_message.split())
            rows[(group, short, reason[:90] + ("…" if len(reason) > 90 else ""), match.what if match else None)] += 1
    table = [DeadLetterRow(g, c, r, n, w) for (g, c, r, w), n in sorted(rows.items(), key=lambda i: (i[0][0], i[0][1]))]
    missing = [e for e, n in wanted.items() for _ in range(n)]
    return table, missing


# -- the digest -------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def digest(engine: Engine) -> tuple[str, dict[str, int]]:
    """SHA-256 over every row of every domain table (in primary-key order), and the row counts."""
    sha = hashlib.sha256()
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            counts[table.name] = len(rows)
            sha.update(table.name.encode())
            for row in rows:
                sha.update(json.dumps([_plain(v) for v in row], sort_keys=True, default=str).encode())
    return sha.hexdigest(), counts


def failed(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]
