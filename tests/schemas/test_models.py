"""The typed models: they agree with their schemas, and reject invalid values when built."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, ValidationError

from dify_events.schemas.catalogue import CATALOGUE
from dify_events.schemas.conformance import mismatches
from dify_events.schemas.events import ALL_EVENTS, MessageWasCreated, TenantWasCreated, new_event_id, utcnow
from dify_events.schemas.samples import TENANT, sample_events


@pytest.mark.parametrize("spec", list(CATALOGUE), ids=lambda s: s.event_type)
def test_each_model_agrees_with_its_latest_schema(spec):
    # Given an event type's model and the latest .avsc of that type
    # When they are compared field for field (names, order, types, optionality, defaults)
    found = mismatches(spec.model, spec.current.raw)
    # Then they agree
    assert found == []


def test_the_agreement_check_notices_each_kind_of_difference():
    # Given the message schema v2 and models that differ from it in one way each
    raw = CATALOGUE.get("message_was_created").latest.raw

    class WrongType(MessageWasCreated):
        latency_ms: float | None = None

    class WrongDefault(MessageWasCreated):
        invoke_from: str = "web-app"

    class Required(MessageWasCreated):
        invoke_from: str

    class Extra(MessageWasCreated):
        more: int = 0

    # When each is compared with the schema
    # Then the difference is named
    assert mismatches(MessageWasCreated, raw) == []
    assert any("latency_ms" in m and "double" in m for m in mismatches(WrongType, raw))
    assert any("invoke_from" in m and "web-app" in m for m in mismatches(WrongDefault, raw))
    assert any("invoke_from" in m and "required in the model" in m for m in mismatches(Required, raw))
    assert any("more" in m for m in mismatches(Extra, raw))
    # and the older version (without v2's fields) disagrees with today's model
    v1 = CATALOGUE.get("message_was_created").version(1).raw
    assert any("latency_ms" in m for m in mismatches(MessageWasCreated, v1))


def test_there_is_one_model_per_event_type_of_the_seed_and_of_dify():
    assert sorted(m.event_type for m in ALL_EVENTS) == sorted([
        "app_was_created", "app_model_config_was_updated", "app_published_workflow_was_updated",
        "app_draft_workflow_was_synced", "dataset_was_deleted", "document_was_deleted",
        "document_index_created", "message_was_created", "tenant_was_created", "tenant_was_updated",
        "feedback_was_created", "app_was_deleted", "app_was_updated"])
    assert [type(e) for e in sample_events()] == list(ALL_EVENTS)


def message(**overrides) -> MessageWasCreated:
    values = dict(tenant_id=TENANT, message_id="m", conversation_id="c", app_id="a", provider_name="openai",
                  model_name="gpt-4o", message_tokens=1, answer_tokens=2, total_tokens=3)
    return MessageWasCreated(**(values | overrides))


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"message_tokens": -1}, "message_tokens", "greater than or equal to 0"),
    ({"total_tokens": 2**63}, "total_tokens", "less than or equal to"),
    ({"tenant_id": ""}, "tenant_id", "at least 1 character"),
    ({"conversation_id": ""}, "conversation_id", "at least 1 character"),
    ({"event_id": "not-a-uuid"}, "event_id", "UUID"),
    ({"event_id": "01a25229-0975-755f-8a34-20cfd05a66b5\n"}, "event_id", "UUID"),  # a trailing newline
    ({"occurred_at": datetime(2025, 1, 1, 12, 0)}, "occurred_at", "timezone-aware"),
    ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
])
def test_invalid_values_are_rejected_when_the_event_is_built(overrides, field, words):
    # Given a value that breaks the model's rules
    # When the event is built with it
    with pytest.raises(ValidationError) as caught:
        message(**overrides)
    # Then pydantic's message names the field and the rule
    assert field in str(caught.value) and words in str(caught.value)


def test_app_mode_is_one_of_difys_modes():
    from dify_events.schemas.events import AppWasCreated

    for mode in ("chat", "completion", "agent-chat", "advanced-chat", "workflow"):
        AppWasCreated(tenant_id=TENANT, app_id="a", mode=mode, name="n", created_by="u")
    with pytest.raises(ValidationError, match="mode"):
        AppWasCreated(tenant_id=TENANT, app_id="a", mode="agent_chat", name="n", created_by="u")


def test_document_index_created_needs_at_least_one_document():
    from dify_events.schemas.events import DocumentIndexCreated

    with pytest.raises(ValidationError, match="document_ids"):
        DocumentIndexCreated(tenant_id=TENANT, dataset_id="d", document_ids=[])


def test_events_are_frozen_and_their_lists_immutable():
    # Given an event
    event = sample_events()[1]
    # When it is changed / Then it refuses
    with pytest.raises(ValidationError, match="frozen"):
        event.app_id = "other"
    assert isinstance(event.dataset_ids, tuple)
    assert hash(event)  # hashable: usable as a dict key or in a set


def test_the_envelope_is_filled_in_utc_milliseconds():
    # Given an event built without envelope values
    before = utcnow()
    event = TenantWasCreated(tenant_id=TENANT, tenant_name="Acme")
    # Then it has a UUIDv7 id and a UTC occurred_at cut to milliseconds
    parsed = uuid.UUID(event.event_id)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert event.occurred_at.tzinfo is UTC and event.occurred_at.microsecond % 1000 == 0
    assert before <= event.occurred_at <= utcnow()
    # and the id's 48-bit timestamp is the creation millisecond
    id_ms = parsed.int >> 80
    assert abs(id_ms - int(event.occurred_at.timestamp() * 1000)) < 1000


def test_occurred_at_in_another_zone_becomes_utc_milliseconds():
    # Given a time in UTC+8 with microseconds
    at = datetime(2025, 3, 1, 20, 0, 0, 123456, tzinfo=timezone(timedelta(hours=8)))
    # When an event is built with it
    event = TenantWasCreated(tenant_id=TENANT, tenant_name="Acme", occurred_at=at)
    # Then it is the same instant, in UTC, cut to milliseconds
    assert event.occurred_at == datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC


def test_event_ids_are_unique_and_sort_in_creation_order_across_threads():
    # Given ids made in a tight loop (many per millisecond) by several threads at once
    per_thread: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(new_event_id() for _ in range(20_000))

    threads = [threading.Thread(target=make, args=(ids,)) for ids in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then no id repeats, and each thread's ids sort in the order they were made
    every = [i for ids in per_thread for i in ids]
    assert len(set(every)) == len(every)
    for ids in per_thread:
        assert ids == sorted(ids)
    # and each is a valid version-7 UUID
    assert {uuid.UUID(i).version for i in every[:100]} == {7}


def test_key_is_the_value_of_the_key_field():
    for event in sample_events():
        assert event.key() == getattr(event, type(event).key_field)
        assert isinstance(event, BaseModel)
