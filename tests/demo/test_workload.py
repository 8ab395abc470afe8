"""The demo's workload as data: deterministic, both channels, poison that must dead-letter, and no
accidental dead letters."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from dify_events.consumers.demo.workload import OUTBOX, SDK, SIZES, Change, Poison, Size, build
from dify_events.consumers.domain import Dataset, Document, Message
from dify_events.schemas.codec import AvroCodec
from dify_events.schemas.events import DocumentIndexCreated, MessageWasCreated

SMALL = SIZES["small"]
codec = AvroCodec()


def test_the_same_seed_gives_the_same_workload_and_another_seed_another():
    # Given two workloads of one seed and one of another
    a, b, c = build(SMALL, seed=7), build(SMALL, seed=7), build(SMALL, seed=8)
    # Then the first two have the same events, ids and times included; the third does not
    assert [e.model_dump() for e in a.events()] == [e.model_dump() for e in b.events()]
    assert [e.event_id for e in a.events()] != [e.event_id for e in c.events()]
    assert [p.value for p in a.poison()] == [p.value for p in b.poison()]


def test_sizes_set_how_many_tenants_apps_documents_and_messages():
    # Given a size with overridden counts
    size = replace(SMALL, tenants=4, apps=10, documents=33, messages=123)
    workload = build(size)
    published = workload.published()
    # Then the workload has exactly that many
    assert published[("tenant_was_created", OUTBOX)] == 4
    assert published[("app_was_created", OUTBOX)] == 10
    assert published[("message_was_created", SDK)] == 123
    documents = [i for s in workload.steps if isinstance(s, Change) for i in s.inserts if i.model is Document]
    messages = [i for s in workload.steps if isinstance(s, Change) for i in s.inserts if i.model is Message]
    assert len(documents) == 33 and len(messages) == 123


def test_every_event_encodes_and_event_ids_follow_the_clock():
    workload = build(SMALL)
    events = list(workload.events())
    assert len({e.event_id for e in events}) == len(events)
    for event in events:
        assert codec.decode(codec.encode(event)) == event
    # a UUIDv7's first 48 bits are its milliseconds: they are the event's occurred_at
    for event in events:
        assert int(event.event_id.replace("-", "")[:12], 16) == int(event.occurred_at.timestamp() * 1000)


def test_messages_rows_match_their_events():
    # The provider-usage invariant compares the rows the application wrote with what the group counted
    for step in build(SMALL).steps:
        if isinstance(step, Change) and step.events and isinstance(step.events[0], MessageWasCreated):
            rows = {i.values["id"]: i.values for i in step.inserts}
            for event in (e for e in step.events if isinstance(e, MessageWasCreated)):
                row = rows[event.message_id]
                assert (row["tenant_id"], row["model_provider"], row["total_tokens"]) == \
                    (event.tenant_id, event.provider_name, event.total_tokens)


def test_dify_call_sites_make_the_events_dify_sends():
    # Every event Dify has a call site for comes from Dify's call through the signals; the others
    # (tenant updates and index requests, which Dify never sends) are built directly
    changes = [s for s in build(SMALL).steps if isinstance(s, Change)]
    called = {c.event.event_type for s in changes for c in s.calls}
    direct = {e.event_type for s in changes for e in s.direct_events}
    assert called == {"tenant_was_created", "app_was_created", "app_model_config_was_updated",
                      "app_published_workflow_was_updated", "message_was_created", "feedback_was_created",
                      "dataset_was_deleted", "document_was_deleted"} | (called & {"app_draft_workflow_was_synced"})
    assert direct == {"tenant_was_updated", "document_index_created"}
    for step in changes:
        for call in step.calls:
            assert call.kwargs.keys() >= {"event_id", "occurred_at"}


def test_only_the_poison_can_dead_letter():
    workload = build(replace(SMALL, documents=200))
    # the poison: three undecodable messages and one index request for documents that never existed
    assert len(workload.poison()) == 3 and all(isinstance(p, Poison) for p in workload.poison())
    assert Counter(e.group for e in workload.expected_dead_letters) == {"provider-usage": 3, "document-indexer": 1,
                                                                         "feedback-telemetry": 1}
    created = {i.values["id"] for s in workload.steps if isinstance(s, Change) for i in s.inserts
               if i.model is Document}
    deleted_documents = {d.id for s in workload.steps if isinstance(s, Change) for d in s.deletes
                         if d.model is Document}
    deleted_datasets = {d.id for s in workload.steps if isinstance(s, Change) for d in s.deletes
                        if d.model is Dataset}
    requests = [e for e in workload.events() if isinstance(e, DocumentIndexCreated)]
    unknown = [r for r in requests if not set(r.document_ids) & created]
    # every real index request keeps a document that is never deleted, so the indexer never finds
    # all of one request's documents gone (DocumentNotFound)
    for request in requests:
        if request not in unknown:
            assert set(request.document_ids) - deleted_documents
    # the one request for unknown documents names a dataset that stays (else it would be a no-op)
    assert len(unknown) == 1 and unknown[0].dataset_id not in deleted_datasets
    # deletions are published with the SDK, after the rows are gone
    for step in workload.steps:
        if isinstance(step, Change) and step.deletes:
            assert step.via == SDK and step.events


def test_configuration_goes_through_the_outbox_with_its_rows():
    for step in build(SMALL).steps:
        if isinstance(step, Change) and step.events and step.events[0].event_type.startswith(("app_", "tenant_")):
            assert step.via == OUTBOX
            assert step.inserts or step.updates


def test_a_workload_needs_something_to_do():
    with pytest.raises(ValueError, match="at least one tenant"):
        build(Size(tenants=0, apps=1, documents=1, messages=1))
