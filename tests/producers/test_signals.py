"""The blinker-shaped facade: the seed's calls, with Dify-shaped senders, publish typed events."""

from __future__ import annotations

import enum
import json
from types import SimpleNamespace as Obj

import pytest
from sqlalchemy.orm import Session

from dify_events.producers import EventProducer, signals
from dify_events.producers.signals import SIGNALS, SignalError, app_was_created, configure, document_index_created
from dify_events.schemas import headers as names
from dify_events.schemas.codec import AvroCodec
from dify_events.schemas.errors import EventsError
from dify_events.schemas.events import (
    AppDraftWorkflowWasSynced,
    AppModelConfigWasUpdated,
    AppPublishedWorkflowWasUpdated,
    AppWasCreated,
    DatasetWasDeleted,
    DocumentIndexCreated,
    DocumentWasDeleted,
    MessageWasCreated,
    TenantWasCreated,
    TenantWasUpdated,
)

from .conftest import headers_of
from .support import counts, outbox_engine

codec = AvroCodec()


class AppMode(enum.StrEnum):  # Dify's models hold enums in some columns
    ADVANCED_CHAT = "advanced-chat"


TENANT = "tenant-1"
app = Obj(id="app-1", tenant_id=TENANT, mode=AppMode.ADVANCED_CHAT, name="Support bot", created_by=None,
          icon_type="emoji", icon="🤖", icon_background="#FFEAD5", description=None, app_model_config_id="cfg-0")
account = Obj(id="acc-1")
model_config = Obj(id="cfg-7", agent_mode=json.dumps({"tools": [{"dataset": {"enabled": True, "id": "ds-1"}},
                                                                 {"builtin": {"id": "x"}}]}),
                   dataset_configs=json.dumps({"datasets": {"datasets": [{"dataset": {"id": "ds-2"}},
                                                                         {"dataset": {"id": "ds-1"}}]}}))
graph = {"nodes": [
    {"id": "n1", "data": {"type": "knowledge-retrieval", "title": "Knowledge", "dataset_ids": ["ds-3", "ds-4"],
                          "retrieval_mode": "multiple"}},
    {"id": "n2", "data": {"type": "tool", "provider_type": "builtin", "provider_id": "google",
                          "tool_name": "google_search"}},
    {"id": "n3", "data": {"type": "llm"}},
]}
workflow = Obj(id="wf-1", graph=json.dumps(graph), updated_by="acc-2")
dataset = Obj(id="ds-1", tenant_id=TENANT, indexing_technique="high_quality", doc_form="text_model",
              index_struct={"type": "qdrant"}, collection_binding_id=None)
message = Obj(id="msg-1", conversation_id="conv-1", app_id="app-1", model_provider="openai", model_id="gpt-4o",
              message_tokens=812, answer_tokens=233, provider_response_latency=1.8304, invoke_from="web-app")
generate_entity = Obj(app_config=Obj(tenant_id=TENANT), model_conf=Obj(provider="langgenius/openai/openai",
                                                                        model="gpt-4o"))
tenant = Obj(id=TENANT, name="Acme", plan="team", custom_config=json.dumps({"remove_webapp_brand": True}))

# (signal, the seed's call arguments, the event it must make)
SEED_CALLS = [
    ("app_was_created", (app,), {"account": account},
     AppWasCreated, {"app_id": "app-1", "tenant_id": TENANT, "mode": "advanced-chat", "name": "Support bot",
                     "created_by": "acc-1", "icon": "🤖", "description": ""}),
    ("app_model_config_was_updated", (app,), {"app_model_config": model_config},
     AppModelConfigWasUpdated, {"app_id": "app-1", "app_model_config_id": "cfg-7", "dataset_ids": ("ds-1", "ds-2")}),
    ("app_published_workflow_was_updated", (app,), {"published_workflow": workflow},
     AppPublishedWorkflowWasUpdated, {"app_id": "app-1", "workflow_id": "wf-1", "dataset_ids": ("ds-3", "ds-4")}),
    ("app_draft_workflow_was_synced", (app,), {"synced_draft_workflow": workflow},
     AppDraftWorkflowWasSynced, {"workflow_id": "wf-1", "synced_by": "acc-2"}),
    ("dataset_was_deleted", (dataset,), {},
     DatasetWasDeleted, {"dataset_id": "ds-1", "doc_form": "text_model", "index_struct": '{"type": "qdrant"}'}),
    ("document_was_deleted", ("doc-1",), {"dataset_id": "ds-1", "doc_form": "text_model", "file_id": None,
                                          "tenant_id": TENANT},
     DocumentWasDeleted, {"document_id": "doc-1", "dataset_id": "ds-1", "file_id": None}),
    ("document_index_created", ("ds-1",), {"document_ids": ["doc-2", "doc-3"], "tenant_id": TENANT},
     DocumentIndexCreated, {"dataset_id": "ds-1", "document_ids": ("doc-2", "doc-3")}),
    ("message_was_created", (message,), {"application_generate_entity": generate_entity, "conversation": None,
                                         "is_first_message": True, "extras": {}},
     MessageWasCreated, {"tenant_id": TENANT, "provider_name": "langgenius/openai/openai", "total_tokens": 1045,
                         "latency_ms": 1830, "invoke_from": "web-app"}),
    ("tenant_was_created", (tenant,), {},
     TenantWasCreated, {"tenant_id": TENANT, "tenant_name": "Acme", "plan": "team"}),
    ("tenant_was_updated", (tenant,), {},
     TenantWasUpdated, {"tenant_id": TENANT, "custom_config": {"remove_webapp_brand": "true"}}),
]


@pytest.mark.parametrize("name, args, kwargs, event_class, expected", SEED_CALLS, ids=[c[0] for c in SEED_CALLS])
def test_each_seed_call_makes_its_typed_event(name, args, kwargs, event_class, expected):
    # Given the seed's call of a signal, with Dify-shaped objects
    # When the signal builds its event
    event = SIGNALS[name].event(*args, **kwargs)
    # Then it is the typed event, with the fields read from the sender and the keywords
    assert type(event) is event_class
    assert {field: getattr(event, field) for field in expected} == expected


def test_the_draft_workflows_tool_nodes_are_read_from_its_graph():
    event = SIGNALS["app_draft_workflow_was_synced"].event(app, synced_draft_workflow=workflow)
    assert [(n.node_id, n.provider_id, n.tool_name) for n in event.tool_nodes] == [("n2", "google", "google_search")]


def test_a_dict_sender_and_keyword_fields_work_too():
    # Given a dict as the sender, and a keyword that overrides what the sender says
    sender = {"id": "app-9", "tenant_id": TENANT, "mode": "chat", "name": "Old name", "created_by": "acc-1"}
    # When the event is built, Then the keyword wins
    event = app_was_created.event(sender, name="New name")
    assert (event.app_id, event.name) == ("app-9", "New name")


def test_a_missing_field_says_which_and_how_to_pass_it():
    # Given Dify's call of document_index_created, which names no tenant
    # When the event is built, Then the error names the field and the way to give it
    with pytest.raises(SignalError, match=r"(?s)tenant_id.*Field required.*keyword arguments") as failure:
        document_index_created.event("ds-1", document_ids=["doc-1"])
    assert isinstance(failure.value, EventsError)


def test_an_unknown_keyword_is_refused_with_the_accepted_ones():
    with pytest.raises(TypeError, match=r"unexpected keyword arguments acount.*account"):
        app_was_created.event(app, acount=account)


def test_receivers_are_consumer_groups_now():
    with pytest.raises(EventsError, match="consumer groups"):
        app_was_created.connect(lambda sender, **kw: None)


def test_send_publishes_through_the_configured_producer(domain_topics, read_messages):
    # Given a producer configured for the signals
    with EventProducer() as producer:
        configure(producer)
        try:
            # When the seed's call is made
            event = app_was_created.send(app, account=account, wait=True)
        finally:
            configure(None)
    # Then the event is on the app topic, and decodes to what send returned
    [msg] = read_messages([f"{domain_topics}.app"], 1)
    assert codec.decode(msg.value()) == event
    assert headers_of(msg)[names.EVENT_TYPE] == b"app_was_created"


def test_send_with_a_session_goes_into_the_outbox_in_that_transaction(kafka_env, database_url):
    # Given the outbox in the application's database
    engine = outbox_engine(database_url)
    # When the seed's call is made with session=, and the transaction rolls back, then commits
    with Session(engine) as session:
        app_was_created.send(app, account=account, session=session)
        session.rollback()
    assert counts(engine) == (0, 0)
    with Session(engine) as session, session.begin():
        event = app_was_created.send(app, account=account, session=session)
    # Then only the committed one is in the outbox, pending, for the relay
    assert counts(engine) == (1, 0)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT event_id FROM event_outbox").scalar_one() == event.event_id


def test_the_default_producer_is_made_from_the_settings(domain_topics, read_messages):
    # Given no configured producer
    configure(None)
    try:
        # When a signal is sent
        event = signals.tenant_was_created.send(tenant, wait=True)
    finally:
        configure(None)
        signals._close_default()
    # Then it was published with the settings' cluster and prefix
    [msg] = read_messages([f"{domain_topics}.tenant"], 1)
    assert headers_of(msg)[names.EVENT_ID] == event.event_id.encode()


def test_a_bridge_publishes_and_runs_the_receivers_not_yet_cut_over(tmp_path):
    # Given Dify's blinker signal with one receiver still in-process, bridged to ours
    import blinker
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from dify_events.producers import dify_calls as dify
    from dify_events.producers.outbox import create_outbox_table, event_outbox
    from dify_events.producers.signals import Bridge, app_was_created

    dify_signal = blinker.Namespace().signal("app-was-created")
    bridge = Bridge(app_was_created, dify_signal)
    received = []

    @bridge.connect
    def create_site_record(sender, **kwargs):  # a receiver of Dify's, connected the way Dify connects it
        received.append((sender.id, sorted(kwargs)))

    engine = create_engine(f"sqlite:///{tmp_path / 'dify.db'}")
    create_outbox_table(engine)
    app, account = dify.App("app-1", "t1", "chat", "Bot", created_by="acc-1"), dify.Account("acc-1")
    # When Dify's call runs with its session (main passes one)
    with Session(engine) as session, session.begin():
        results = bridge.send(app, account=account, session=session)
    # Then the event is in the outbox, and the remaining receiver ran with Dify's own arguments
    with engine.connect() as conn:
        assert conn.execute(select(event_outbox.c.event_type)).scalars().all() == ["app_was_created"]
    assert received == [("app-1", ["account", "session"])]
    assert [receiver for receiver, _ in results] == [create_site_record]
