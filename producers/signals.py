"""A blinker-shaped facade, so code written the seed's way publishes Kafka events.

Dify's ``api/events/*.py`` define blinker signals and its services call
``app_was_created.send(app, account=account)``. Here the same names, with the same call shape,
build the typed event from the sender (a Dify model object, anything with attributes, or a dict)
and the keyword arguments, and publish it::

    from dify_events.producers.signals import app_was_created          # was: from events.app_event import ...

    app_was_created.send(app, account=account)              # -> AppWasCreated on <prefix>.app
    app_was_created.send(app, account=account, session=db.session)   # -> into the outbox instead

Keyword arguments named like a field of the event set that field (and win over the sender's
attributes); the objects Dify passes (``account``, ``app_model_config``, ``published_workflow``,
``application_generate_entity``, ...) are read for the fields they hold; any other keyword is an
error. ``send`` also takes ``session=`` (add to the outbox in that transaction instead of
publishing), ``producer=``, ``key=``, ``idempotency_key=`` and ``wait=``; it returns the event.

Without ``producer=``, signals publish through the producer given to ``configure()``, or one
made from the settings on first use (closed, and so flushed, when the process exits).

Receivers are consumer groups now (``consumers/``): ``connect`` raises, saying so.

Dify's own call shapes (1.12.x and main, each call site) are in ``producers.dify_calls``, and
``docs/adopting-in-dify.md`` says how Dify swaps its ``events`` package for this module. Newer Dify
passes its SQLAlchemy session to a signal (``app_model_config_was_updated.send(app,
app_model_config=config, session=session)``) so its receivers write in the caller's transaction;
here the same keyword adds the event to the outbox in that transaction: the event commits or rolls
back with the caller's writes, and the consumer groups' effects follow the commit.
"""

from __future__ import annotations

import atexit
import json
import threading
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from pydantic import ValidationError

from dify_events.schemas.errors import EventsError
from dify_events.schemas.events import (
    AppDraftWorkflowWasSynced,
    AppModelConfigWasUpdated,
    AppPublishedWorkflowWasUpdated,
    AppWasCreated,
    AppWasDeleted,
    AppWasUpdated,
    DatasetWasDeleted,
    DocumentIndexCreated,
    DocumentWasDeleted,
    Event,
    FeedbackWasCreated,
    MessageWasCreated,
    TenantWasCreated,
    TenantWasUpdated,
)

from .producer import EventProducer

Fields = dict[str, Any]
_CONTROL = ("session", "producer", "key", "idempotency_key", "wait", "topic_prefix")
TRIGGER_NODE_TYPES = ("trigger-webhook", "trigger-schedule", "trigger-plugin")
RETRIEVAL_MODES = ("single", "multiple")
SYSTEM = "system"


class SignalError(EventsError):
    """A signal's sender and arguments do not make a valid event (pydantic's message says which field)."""


# -- reading Dify's objects -------------------------------------------------------------------
def attr(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.name`` or ``obj[name]``; enums give their value."""
    if obj is None:
        return default
    value = obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)
    return value.value if isinstance(value, Enum) else value


def _json_attr(obj: Any, *names: str) -> dict:
    """The first of ``names`` that is a dict, or a JSON text of one (Dify keeps configs as JSON text)."""
    for name in names:
        value = attr(obj, name)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                continue
        if isinstance(value, Mapping):
            return dict(value)
    return {}


def dataset_ids_of_model_config(config: Any) -> tuple[str, ...] | None:
    """Datasets an app model config references: dataset tools of its agent mode, and the
    datasets of its dataset configs (as Dify's app-dataset-join handler reads them)."""
    if config is None:
        return None
    found: list[str] = []
    for tool in _json_attr(config, "agent_mode_dict", "agent_mode").get("tools") or []:
        if isinstance(tool, Mapping) and len(tool) == 1 and "dataset" in tool and (tool["dataset"] or {}).get("id"):
            found.append(str(tool["dataset"]["id"]))
    datasets = _json_attr(config, "dataset_configs_dict", "dataset_configs").get("datasets") or {}
    for item in datasets.get("datasets") or []:
        if isinstance(item, Mapping) and list(item) == ["dataset"] and (item["dataset"] or {}).get("id"):
            found.append(str(item["dataset"]["id"]))
    return tuple(dict.fromkeys(found))


def _graph_nodes(workflow: Any) -> list[Mapping]:
    return [n for n in _json_attr(workflow, "graph_dict", "graph").get("nodes") or [] if isinstance(n, Mapping)]


def _valid_knowledge_node(data: Mapping) -> bool:
    """What Dify's ``KnowledgeRetrievalNodeData.model_validate`` requires of a node's data: a
    title, a list of dataset ids (text) and a retrieval mode; Dify's receiver skips a node that
    fails it."""
    ids = data.get("dataset_ids")
    return (isinstance(data.get("title"), str) and isinstance(ids, list) and all(isinstance(i, str) for i in ids)
            and data.get("retrieval_mode") in RETRIEVAL_MODES)


def dataset_ids_of_workflow(workflow: Any) -> tuple[str, ...] | None:
    """Datasets the valid knowledge-retrieval nodes of a workflow graph reference."""
    if workflow is None:
        return None
    found = [i for node in _graph_nodes(workflow)
             if (data := node.get("data") or {}).get("type") == "knowledge-retrieval" and _valid_knowledge_node(data)
             for i in data["dataset_ids"]]
    return tuple(dict.fromkeys(found))


def trigger_nodes_of_workflow(workflow: Any) -> tuple[dict, ...]:
    """The trigger nodes of a workflow graph, each with its data as JSON text (what Dify's trigger,
    webhook, plugin-trigger and schedule receivers read from the graph)."""
    return tuple({"node_id": str(node.get("id")), "node_type": data["type"], "data": json.dumps(data, default=str)}
                 for node in _graph_nodes(workflow)
                 if (data := node.get("data") or {}).get("type") in TRIGGER_NODE_TYPES)


def tool_nodes_of_workflow(workflow: Any) -> tuple[dict, ...] | None:
    """The tool nodes of a workflow graph: what names their tool-parameter cache entries."""
    if workflow is None:
        return None
    nodes = []
    for node in _graph_nodes(workflow):
        data = node.get("data") or {}
        if data.get("type") == "tool":
            nodes.append({"node_id": str(node.get("id")), "provider_type": data.get("provider_type"),
                          "provider_id": data.get("provider_id"), "tool_name": data.get("tool_name")})
    return tuple(nodes)


# -- one mapper per signal: (sender, kwargs) -> fields ----------------------------------------
def _app_fields(app: Any) -> Fields:
    return {"app_id": attr(app, "app_id") or attr(app, "id"), "tenant_id": attr(app, "tenant_id")}


def _app_was_created(app, kw) -> Fields:
    """Dify 1.x sends the App with ``account=``; main sends an ``AppEvent(app_id, tenant_id,
    mode)`` with ``created_records_initialized=True`` when its transaction made the records."""
    account = kw.get("account")
    return {**_app_fields(app), "mode": attr(app, "mode"), "name": attr(app, "name"),
            "created_by": attr(app, "created_by") or attr(account, "id"),
            "icon_type": attr(app, "icon_type"), "icon": attr(app, "icon"),
            "icon_background": attr(app, "icon_background"), "description": attr(app, "description"),
            "updated_by": attr(app, "updated_by"), "has_account": account is not None,
            "default_language": attr(account, "interface_language"),
            "records_initialized": bool(kw.get("created_records_initialized"))}


def _app_event(app, kw) -> Fields:
    """Dify main's ``app_was_deleted`` / ``app_was_updated``: the App, or an ``AppEvent``."""
    return {**_app_fields(app), "mode": attr(app, "mode")}


def _app_model_config_was_updated(app, kw) -> Fields:
    config = kw.get("app_model_config")
    return {**_app_fields(app), "app_model_config_id": attr(config, "id") or attr(app, "app_model_config_id"),
            "dataset_ids": dataset_ids_of_model_config(config), "config_given": config is not None}


def _workflow_fields(app, workflow) -> Fields:
    return {**_app_fields(app), "app_mode": attr(app, "mode"), "trigger_nodes": trigger_nodes_of_workflow(workflow)}


def _app_published_workflow_was_updated(app, kw) -> Fields:
    workflow = kw.get("published_workflow")
    return {**_workflow_fields(app, workflow), "workflow_id": attr(workflow, "id") or attr(app, "workflow_id"),
            "dataset_ids": dataset_ids_of_workflow(workflow)}


def _app_draft_workflow_was_synced(app, kw) -> Fields:
    workflow = kw.get("synced_draft_workflow")
    return {**_workflow_fields(app, workflow), "workflow_id": attr(workflow, "id"),
            "tool_nodes": tool_nodes_of_workflow(workflow),
            "synced_by": attr(workflow, "updated_by") or attr(kw.get("account"), "id")}


def _dataset_was_deleted(dataset, kw) -> Fields:
    index_struct = attr(dataset, "index_struct")
    return {"dataset_id": attr(dataset, "id"), "tenant_id": attr(dataset, "tenant_id"),
            "indexing_technique": attr(dataset, "indexing_technique"), "doc_form": attr(dataset, "doc_form"),
            "index_struct": index_struct if index_struct is None or isinstance(index_struct, str)
            else json.dumps(index_struct), "collection_binding_id": attr(dataset, "collection_binding_id"),
            "pipeline_id": attr(dataset, "pipeline_id")}


def _document_was_deleted(document, kw) -> Fields:
    if isinstance(document, str):  # Dify sends the document id, the rest as keywords (no tenant: see the event)
        return {"document_id": document}
    return {"document_id": attr(document, "id"), "dataset_id": attr(document, "dataset_id"),
            "tenant_id": attr(document, "tenant_id"), "doc_form": attr(document, "doc_form")}


def _document_index_created(sender, kw) -> Fields:
    if isinstance(sender, str):  # Dify sends the dataset id, the document ids as a keyword
        return {"dataset_id": sender}
    return {"dataset_id": attr(sender, "dataset_id") or attr(sender, "id"), "tenant_id": attr(sender, "tenant_id")}


def _message_was_created(message, kw) -> Fields:
    entity = kw.get("application_generate_entity")
    model_conf = attr(entity, "model_conf")
    message_tokens, answer_tokens = attr(message, "message_tokens"), attr(message, "answer_tokens")
    latency_s = attr(message, "provider_response_latency")
    return {"message_id": attr(message, "id"),
            "conversation_id": attr(message, "conversation_id") or attr(kw.get("conversation"), "id"),
            "app_id": attr(message, "app_id"),
            "tenant_id": attr(attr(entity, "app_config"), "tenant_id") or attr(message, "tenant_id")
            or attr(kw.get("conversation"), "tenant_id"),
            "provider_name": attr(model_conf, "provider") or attr(message, "model_provider"),
            "model_name": attr(model_conf, "model") or attr(message, "model_id"),
            "message_tokens": message_tokens, "answer_tokens": answer_tokens,
            "total_tokens": (message_tokens + answer_tokens) if None not in (message_tokens, answer_tokens) else None,
            "latency_ms": round(latency_s * 1000) if isinstance(latency_s, int | float) else None,
            "invoke_from": attr(message, "invoke_from") or attr(entity, "invoke_from"),
            "app_mode": attr(attr(entity, "app_config"), "app_mode"), **_hosted_quota(model_conf)}


def _hosted_quota(model_conf: Any) -> Fields:
    """The quota Dify's update_provider_when_message_created charges, read as it reads it: the
    provider configuration's current quota type when it is used as a system (hosted) provider, and
    that quota's unit. Empty when the entity carries no provider configuration."""
    configuration = attr(attr(model_conf, "provider_model_bundle"), "configuration")
    system = attr(configuration, "system_configuration")
    quota_type = attr(system, "current_quota_type")
    if attr(configuration, "using_provider_type") != SYSTEM or not system or quota_type is None:
        return {}
    unit = next((attr(q, "quota_unit") for q in attr(system, "quota_configurations") or ()
                 if attr(q, "quota_type") == quota_type), None)
    return {"quota_type": quota_type, "quota_unit": unit}


def _tenant_was_created(tenant, kw) -> Fields:
    return {"tenant_id": attr(tenant, "id"), "tenant_name": attr(tenant, "name"), "plan": attr(tenant, "plan"),
            "created_by": attr(kw.get("account"), "id")}


def _feedback_was_created(feedback, kw) -> Fields:
    """Dify sends the MessageFeedback row, the tenant as a keyword."""
    return {"feedback_id": attr(feedback, "id"), "message_id": attr(feedback, "message_id"),
            "app_id": attr(feedback, "app_id"), "conversation_id": attr(feedback, "conversation_id"),
            "rating": attr(feedback, "rating"), "from_source": attr(feedback, "from_source"),
            "from_end_user_id": attr(feedback, "from_end_user_id"),
            "from_account_id": attr(feedback, "from_account_id")}


def _tenant_was_updated(tenant, kw) -> Fields:
    config = _json_attr(tenant, "custom_config_dict", "custom_config") or None
    return {"tenant_id": attr(tenant, "id"), "tenant_name": attr(tenant, "name"), "plan": attr(tenant, "plan"),
            "custom_config": {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
            if config else None,
            "updated_by": attr(kw.get("account"), "id")}


# -- the signals ------------------------------------------------------------------------------
class Signal:
    """One seed signal: ``send(sender, **kwargs)`` builds the event and publishes it."""

    def __init__(self, name: str, event_class: type[Event], mapper: Callable[[Any, dict], Fields],
                 context: tuple[str, ...] = (), doc: str = ""):
        self.name = name
        self.event_class = event_class
        self._mapper = mapper
        self._fields = frozenset(event_class.model_fields)
        self._accepted = self._fields | frozenset(context)
        self.__doc__ = doc

    def event(self, sender: Any = None, /, **kwargs: Any) -> Event:
        """The event ``send`` would publish, without publishing it."""
        unknown = sorted(set(kwargs) - self._accepted)
        if unknown:
            raise TypeError(f"{self.name}.send() got unexpected keyword arguments {', '.join(unknown)}; it takes the "
                            f"fields of {self.event_class.__name__} ({', '.join(self.event_class.model_fields)}), "
                            f"the seed's {', '.join(sorted(self._accepted - self._fields)) or 'nothing else'}, "
                            f"and {', '.join(_CONTROL)}")
        fields = {k: v for k, v in self._mapper(sender, kwargs).items() if v is not None}
        fields.update((k, v) for k, v in kwargs.items() if k in self._fields)
        try:
            return self.event_class(**fields)
        except ValidationError as exc:
            raise SignalError(f"{self.name}.send({_short(sender)}, ...) does not make a valid "
                              f"{self.event_class.__name__}: {exc}\nFields the sender lacks can be passed as "
                              "keyword arguments (for example tenant_id=...).") from exc

    def send(self, sender: Any = None, /, *, session: Any = None, producer: EventProducer | None = None,
             key: str | None = None, idempotency_key: str | None = None, wait: bool = False,
             topic_prefix: str | None = None, **kwargs: Any) -> Event:
        """Publishes the event made of ``sender`` and ``kwargs`` and returns it. With
        ``session`` (Dify's own ``session=`` keyword too), adds it to the outbox in that session's
        transaction instead (under ``topic_prefix``, else the settings' prefix)."""
        event = self.event(sender, **kwargs)
        if session is not None:
            if wait:
                raise ValueError("wait=True has no meaning with session=: the outbox relay publishes after commit")
            from .outbox import add_to_outbox

            add_to_outbox(session, event, key=key, idempotency_key=idempotency_key, topic_prefix=topic_prefix)
        else:
            (producer if producer is not None else default_producer()).publish(
                event, key=key, idempotency_key=idempotency_key, wait=wait)
        return event

    def connect(self, *args: Any, **kwargs: Any):
        raise EventsError(f"{self.name} has no in-process receivers any more: handlers run in consumer groups "
                          f"that read {self.event_class.event_type} events from Kafka (see consumers/)")

    connect_via = connect

    def __repr__(self) -> str:
        return f"<Signal {self.name} -> {self.event_class.__name__}>"


class Bridge:
    """A Dify signal while its receivers move to consumer groups one at a time: ``send`` publishes
    the event (as ``signal`` does; Dify's ``session=`` puts it in that transaction's outbox) and
    then calls the blinker receivers still connected to ``blinker_signal``, with Dify's own
    arguments; ``connect`` connects to ``blinker_signal``, so Dify's ``@signal.connect`` receivers
    keep working until their import is removed (see docs/adopting-in-dify.md)."""

    def __init__(self, signal: Signal, blinker_signal: Any):
        self.signal, self.blinker_signal = signal, blinker_signal
        self.name = signal.name

    def send(self, sender: Any = None, /, **kwargs: Any) -> list[tuple[Any, Any]]:
        """Publishes, then returns what blinker's ``send`` returns: ``[(receiver, result), ...]``."""
        self.signal.send(sender, **kwargs)
        return self.blinker_signal.send(sender, **kwargs)

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        return self.blinker_signal.connect(*args, **kwargs)

    def connect_via(self, *args: Any, **kwargs: Any) -> Any:
        return self.blinker_signal.connect_via(*args, **kwargs)

    def __repr__(self) -> str:
        receivers = len(self.blinker_signal.receivers)
        return f"<Bridge {self.name} -> {self.signal.event_class.__name__} and {receivers} receivers>"


def _short(sender: Any) -> str:
    text = repr(sender)
    return text if len(text) <= 60 else text[:57] + "..."


app_was_created = Signal("app_was_created", AppWasCreated, _app_was_created, ("account", "created_records_initialized"),
                         "sender: app (or main's AppEvent); kwargs: account, created_records_initialized")
app_was_deleted = Signal("app_was_deleted", AppWasDeleted, _app_event, (),
                         "sender: app (or main's AppEvent); Dify main only")
app_was_updated = Signal("app_was_updated", AppWasUpdated, _app_event, (),
                         "sender: app (or main's AppEvent); Dify main only")
app_model_config_was_updated = Signal("app_model_config_was_updated", AppModelConfigWasUpdated,
                                      _app_model_config_was_updated, ("app_model_config", "account"),
                                      "sender: app; kwargs: app_model_config")
app_published_workflow_was_updated = Signal("app_published_workflow_was_updated", AppPublishedWorkflowWasUpdated,
                                            _app_published_workflow_was_updated, ("published_workflow", "account"),
                                            "sender: app; kwargs: published_workflow")
app_draft_workflow_was_synced = Signal("app_draft_workflow_was_synced", AppDraftWorkflowWasSynced,
                                       _app_draft_workflow_was_synced,
                                       ("synced_draft_workflow", "account", "session_factory"),
                                       "sender: app; kwargs: synced_draft_workflow (main: session_factory, unused)")
dataset_was_deleted = Signal("dataset_was_deleted", DatasetWasDeleted, _dataset_was_deleted, (),
                             "sender: dataset")
document_was_deleted = Signal("document_was_deleted", DocumentWasDeleted, _document_was_deleted, (),
                              "sender: document id (or document); kwargs: dataset_id, doc_form, file_id, tenant_id")
document_index_created = Signal("document_index_created", DocumentIndexCreated, _document_index_created, (),
                                "sender: dataset id (or dataset); kwargs: document_ids, tenant_id")
message_was_created = Signal("message_was_created", MessageWasCreated, _message_was_created,
                             ("application_generate_entity", "conversation", "is_first_message", "extras"),
                             "sender: message; kwargs: application_generate_entity, conversation")
tenant_was_created = Signal("tenant_was_created", TenantWasCreated, _tenant_was_created, ("account",),
                            "sender: tenant; kwargs: source")
tenant_was_updated = Signal("tenant_was_updated", TenantWasUpdated, _tenant_was_updated, ("account",),
                            "sender: tenant")
feedback_was_created = Signal("feedback_was_created", FeedbackWasCreated, _feedback_was_created, (),
                              "sender: MessageFeedback; kwargs: tenant_id")

SIGNALS: dict[str, Signal] = {s.name: s for s in (
    app_was_created, app_model_config_was_updated, app_published_workflow_was_updated, app_draft_workflow_was_synced,
    dataset_was_deleted, document_was_deleted, document_index_created, message_was_created, tenant_was_created,
    tenant_was_updated, feedback_was_created, app_was_deleted, app_was_updated)}


# -- the producer the signals publish through -------------------------------------------------
_lock = threading.Lock()
_producer: EventProducer | None = None
_owned = False


def configure(producer: EventProducer | None = None) -> None:
    """Makes the signals publish through ``producer`` (the caller keeps closing it); ``None``
    goes back to a producer made from the settings on first use."""
    global _producer, _owned
    with _lock:
        previous, owned = _producer, _owned
        _producer, _owned = producer, False
    if previous is not None and owned:
        previous.close()


def default_producer() -> EventProducer:
    global _producer, _owned
    if _producer is None:
        with _lock:
            if _producer is None:
                _producer, _owned = EventProducer(), True
                atexit.register(_close_default)
    return _producer


def _close_default() -> None:
    global _producer, _owned
    with _lock:
        producer, owned = _producer, _owned
        if owned:
            _producer, _owned = None, False
    if producer is not None and owned:
        producer.close()
