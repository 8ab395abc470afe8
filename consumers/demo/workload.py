"""The demo's workload: what Dify's application does in a busy hour, as data.

``build(size, seed=...)`` returns a ``Workload``: a list of steps in publishing order. A ``Change``
is one application transaction: the rows it inserts, updates and deletes (the rows the domain's
docstrings say the application writes), and the events it publishes, either through the
transactional outbox (``OUTBOX``: in that same transaction) or through the producer SDK after the
commit (``SDK``). Where Dify has a call site for an event, the change holds Dify's call
(``SignalCall``: a call site of ``producers.dify_calls`` with Dify-shaped objects), which the
application plays through the signals; the other events (tenant updates and index requests, which
Dify never sends) are built directly. A ``Poison`` is bytes produced straight onto a domain topic,
past the SDK.

The channels follow what each kind of write is: configuration changes (tenants, apps, model
configs, workflows, new documents with their index request) go through the outbox, so the event
exists exactly when the rows do; the high-volume message stream and the deletions are published
with the SDK after their transaction commits, as Dify's signals fire after a commit.

Deterministic: the same size and seed give the same rows, events (ids and times included) and
order. Times are a virtual clock from ``START``; event ids are UUIDv7 of those times with random
bits from the seed. Nothing here touches a database or Kafka (``application.py`` plays it).
"""

from __future__ import annotations

import json
import random
import string
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import pairwise
from typing import Any, Final, Literal

from dify_events.producers import dify_calls as dify
from dify_events.producers.signals import SIGNALS
from dify_events.schemas import headers as H
from dify_events.schemas.events import DocumentIndexCreated, Event, TenantWasCreated, TenantWasUpdated

from ..domain import (
    App,
    AppModelConfig,
    Base,
    Dataset,
    Document,
    Message,
    Provider,
    Tenant,
    ToolParameterCache,
    Workflow,
)
from ..domain.app import DRAFT, WORKFLOW_MODES
from ..domain.provider import HOSTED_PROVIDERS, SYSTEM, plan_quota

OUTBOX: Final = "outbox"
SDK: Final = "sdk"
# Dify's call sites the demo's application makes (producers.dify_calls)
CREATE_TENANT = dify.site("api/services/account_service.py", "tenant_was_created")
CREATE_APP = dify.site("api/services/app_service.py", "app_was_created")
UPDATE_MODEL_CONFIG = dify.site("api/controllers/console/app/model_config.py", "app_model_config_was_updated")
PUBLISH_WORKFLOW = dify.site("api/services/workflow_service.py", "app_published_workflow_was_updated")
SYNC_DRAFT = dify.site("api/services/workflow_service.py", "app_draft_workflow_was_synced")
SAVE_MESSAGE = dify.site("api/core/app/task_pipeline/easy_ui_based", "message_was_created")
SAVE_ADVANCED_CHAT_MESSAGE = dify.site("api/core/app/apps/advanced_chat", "message_was_created")
CREATE_FEEDBACK = dify.site("api/events/feedback_event.py", "feedback_was_created")
DELETE_DATASET = dify.site("api/services/dataset_service.py", "dataset_was_deleted")
DELETE_DOCUMENT = dify.site("api/services/dataset_service.py", "document_was_deleted")
Via = Literal["outbox", "sdk"]
START = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
DEFAULT_SEED = 2025


@dataclass(frozen=True)
class Size:
    tenants: int
    apps: int
    documents: int
    messages: int

    @property
    def datasets(self) -> int:
        return max(2, self.tenants * 2)


SIZES = {
    "small": Size(tenants=3, apps=9, documents=60, messages=400),
    "default": Size(tenants=8, apps=48, documents=600, messages=8000),  # about 45 s on 2 cores
    "large": Size(tenants=20, apps=120, documents=2000, messages=20000),
}


# -- the steps --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Insert:
    model: type[Base]
    values: dict[str, Any]


KeyedModel = type[App] | type[Dataset] | type[Document] | type[Tenant] | type[Workflow]  # rows changed by their id


@dataclass(frozen=True)
class Update:
    model: KeyedModel
    id: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    model: KeyedModel
    id: str


@dataclass(frozen=True)
class SignalCall:
    """Dify's call at ``site``: ``<site.signal>.send(sender, **kwargs)``; ``kwargs`` add only the
    demo's ``event_id`` and ``occurred_at`` to Dify's. ``event`` is what the call publishes."""

    site: dify.CallSite
    sender: Any
    kwargs: dict[str, Any]
    event: Event


@dataclass(frozen=True)
class Change:
    """One application transaction and the events it publishes (``calls``' events among them)."""

    what: str
    via: Via
    inserts: tuple[Insert, ...] = ()
    updates: tuple[Update, ...] = ()
    deletes: tuple[Delete, ...] = ()
    events: tuple[Event, ...] = ()
    calls: tuple[SignalCall, ...] = ()

    @property
    def direct_events(self) -> list[Event]:
        """The events no Dify call makes, built as they are."""
        made = {call.event.event_id for call in self.calls}
        return [event for event in self.events if event.event_id not in made]


@dataclass(frozen=True)
class Poison:
    """Bytes produced straight onto ``<prefix>.<domain>`` with a plain Kafka producer."""

    what: str
    domain: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class ExpectedDeadLetter:
    """A dead letter the workload asks for: ``group`` dead-letters ``what`` with ``error_class``."""

    group: str
    error_class: str  # the class name, without its module
    what: str
    event_id: str | None = None  # a valid event the group rejects (poison bytes have none)


Step = Change | Poison


@dataclass
class Workload:
    size: Size
    seed: int
    steps: list[Step]
    expected_dead_letters: list[ExpectedDeadLetter]
    markers: dict[str, str] = field(default_factory=dict)
    """document id -> a word only that document holds (the demo searches for it)."""

    def events(self) -> Iterator[Event]:
        for step in self.steps:
            if isinstance(step, Change):
                yield from step.events

    def poison(self) -> list[Poison]:
        return [step for step in self.steps if isinstance(step, Poison)]

    def published(self) -> Counter[tuple[str, str]]:
        """Events per (event type, channel)."""
        return Counter((event.event_type, step.via) for step in self.steps if isinstance(step, Change)
                       for event in step.events)

    def event_count(self) -> int:
        return sum(len(step.events) for step in self.steps if isinstance(step, Change))

    def message_count(self) -> int:
        """Kafka messages the workload produces: its events and its poison."""
        return self.event_count() + len(self.poison())


# -- what it is made of -----------------------------------------------------------------------
COMPANIES = ["Acme Robotics", "Blue Harbor Bank", "Cedar Health", "Delta Freight", "Evergreen Schools",
             "Fjord Analytics", "Granite Insurance", "Helios Energy", "Indigo Retail", "Juniper Legal",
             "Kestrel Travel", "Lumen Media", "Meridian Labs", "Northwind Foods", "Orbit Telecom",
             "Pinnacle Realty", "Quartz Security", "Redwood Games", "Summit Cloud", "Tidal Logistics"]
PLANS = ["sandbox", "basic", "professional", "team", "enterprise"]
APP_MODES = ["chat", "chat", "chat", "advanced-chat", "advanced-chat", "workflow", "workflow", "agent-chat",
             "completion"]
APP_NAMES = ["Support Copilot", "Policy Q&A", "Onboarding Guide", "Sales Assistant", "Claims Triage",
             "Contract Reviewer", "HR Helpdesk", "Release Notes Writer", "Ticket Summarizer", "Lead Qualifier",
             "Incident Responder", "Catalog Search", "Invoice Checker", "Travel Planner", "Course Tutor"]
MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-3-5-haiku"),
          ("anthropic", "claude-3-5-sonnet"), ("ollama", "llama3.1:8b"), ("azure_openai", "gpt-4o")]
TOOLS = [("builtin", "google", "google_search"), ("builtin", "wikipedia", "wikipedia_search"),
         ("builtin", "webscraper", "webscraper"), ("api", "crm-api", "lookup_customer"),
         ("workflow", "invoice-tools", "parse_invoice")]
DATASET_TOPICS = ["Product Manual", "Refund Policy", "Engineering Runbooks", "Security Handbook", "Pricing FAQ",
                  "Onboarding Wiki", "Legal Templates", "Release Notes", "Support Macros", "Sales Playbook"]
SUBJECTS = ["the customer", "an administrator", "the billing service", "each workspace", "the support team",
            "a new employee", "the mobile app", "the API gateway", "the finance team", "every invoice",
            "the scheduler", "a reviewer", "the data pipeline", "the on-call engineer", "the storefront"]
VERBS = ["must confirm", "can request", "should review", "will receive", "may export", "needs to approve",
         "is able to renew", "has to rotate", "can escalate", "should archive", "will synchronise", "must encrypt"]
OBJECTS = ["the refund within thirty days", "their access keys every quarter", "the monthly usage report",
           "a replacement device", "the signed contract", "the quarterly forecast", "the audit trail",
           "the shipping label", "the incident timeline", "the tax certificate", "the onboarding checklist",
           "the backup snapshot", "the renewal quote", "the cancellation form", "the compliance evidence"]
CLAUSES = ["before the deadline", "after the approval arrives", "unless the account is suspended",
           "when the ticket is closed", "during the maintenance window", "once the payment clears",
           "if the region supports it", "as described in the appendix", "without contacting sales",
           "within two business days"]
INVOKE_FROM = ["web-app", "explore", "service-api", "debugger"]


def _id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _event_id(rng: random.Random, at: datetime) -> str:
    """A UUIDv7 of ``at`` (milliseconds) with random bits from the seed: time-ordered, reproducible."""
    ms = int(at.timestamp() * 1000)
    value = (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62) | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


class _Generator:
    def __init__(self, size: Size, seed: int):
        self.size, self.seed = size, seed
        self.rng = random.Random(seed)
        self.now = START
        self.steps: list[Step] = []
        self.expected: list[ExpectedDeadLetter] = []
        self.markers: dict[str, str] = {}
        self.tenants: list[dict[str, Any]] = []
        self.accounts: dict[str, str] = {}                  # tenant id -> its owner's account id
        self.datasets: dict[str, list[str]] = {}            # tenant id -> dataset ids
        self.dataset_tenant: dict[str, str] = {}
        self.apps: list[dict[str, Any]] = []
        self.app_model: dict[str, tuple[str, str]] = {}     # app id -> (provider, model) in use now
        self.conversations: dict[str, list[str]] = {}       # app id -> conversation ids
        self.batches: list[list[str]] = []                  # document ids of each index request
        self.document_dataset: dict[str, str] = {}
        self.gone_datasets: list[str] = []                  # deleted near the end
        self.later_messages: list[int] = []                 # message batches among the deletions

    # -- helpers ------------------------------------------------------------------------------
    def tick(self, low_s: float = 0.2, high_s: float = 4.0) -> datetime:
        self.now += timedelta(milliseconds=self.rng.randint(int(low_s * 1000), int(high_s * 1000)))
        return self.now

    def event(self, cls: type[Event], at: datetime, **fields: Any) -> Event:
        return cls(event_id=_event_id(self.rng, at), occurred_at=at, **fields)

    def change(self, what: str, via: Via, *, inserts=(), updates=(), deletes=(), events=(), calls=()) -> Change:
        step = Change(what, via, tuple(inserts), tuple(updates), tuple(deletes),
                      tuple(events) + tuple(call.event for call in calls), tuple(calls))
        self.steps.append(step)
        return step

    def call(self, site: dify.CallSite, world: dify.World, at: datetime) -> SignalCall:
        """Dify's call at ``site`` on ``world``'s objects, with a reproducible event id and time."""
        sender, kwargs = site.call(world)
        kwargs = {**kwargs, "event_id": _event_id(self.rng, at), "occurred_at": at}
        return SignalCall(site, sender, kwargs, SIGNALS[site.signal].event(sender, **kwargs))

    def sentence(self) -> str:
        r = self.rng
        return f"{r.choice(SUBJECTS).capitalize()} {r.choice(VERBS)} {r.choice(OBJECTS)} {r.choice(CLAUSES)}."

    def document_text(self, marker: str) -> str:
        r = self.rng
        paragraphs = []
        for _ in range(r.randint(3, 7)):
            paragraphs.append(" ".join(self.sentence() for _ in range(r.randint(2, 6))))
        spot = r.randrange(len(paragraphs))
        paragraphs[spot] += f" Reference code {marker}."
        return "\n\n".join(paragraphs)

    def marker(self) -> str:
        return "ref" + "".join(self.rng.choice(string.ascii_lowercase + string.digits) for _ in range(10))

    # -- the phases ---------------------------------------------------------------------------
    def build(self) -> Workload:
        self.create_tenants()
        self.create_datasets()
        self.gone_datasets = self.rng.sample(sorted(self.dataset_tenant), max(1, self.size.datasets // 6))
        later_documents = self.plan_documents()
        self.create_apps(later_documents)
        self.busy_hour(later_documents)
        self.deletions()
        return Workload(self.size, self.seed, self.steps, self.expected, self.markers)

    def create_tenants(self) -> None:
        names = list(COMPANIES)
        self.rng.shuffle(names)
        for i in range(self.size.tenants):
            at = self.tick()
            name = names[i % len(names)] + ("" if i < len(names) else f" {i // len(names) + 1}")
            tenant: dict[str, Any] = dict(id=_id(self.rng), name=name, plan=self.rng.choice(PLANS[:4]),
                                          status="normal", custom_config=None, created_at=at, updated_at=at)
            account = _id(self.rng)
            self.tenants.append(tenant)
            self.accounts[tenant["id"]] = account
            self.datasets[tenant["id"]] = []
            # Dify's application (its ProviderManager) makes the hosted providers' trial records; the
            # provider-usage group only charges existing rows, as Dify's receiver does
            providers = [Insert(Provider, dict(id=_id(self.rng), tenant_id=tenant["id"], provider_name=name_,
                                               provider_type=SYSTEM, quota_type="trial",
                                               quota_limit=plan_quota(tenant["plan"]), quota_used=0, created_at=at,
                                               updated_at=at)) for name_ in HOSTED_PROVIDERS]
            self.change(f"tenant {name} created", OUTBOX, inserts=[Insert(Tenant, tenant), *providers],
                        calls=[self.call(CREATE_TENANT, dify.World(tenant=dify.Tenant(tenant["id"], name,
                                                                                      tenant["plan"])), at)])

    def create_datasets(self) -> None:
        """Datasets are rows only: the seed has no event for a new dataset."""
        inserts = []
        for i in range(self.size.datasets):
            tenant = self.tenants[i % len(self.tenants)]
            at = self.tick(0.1, 1.0)
            dataset_id = _id(self.rng)
            topic = DATASET_TOPICS[i % len(DATASET_TOPICS)]
            inserts.append(Insert(Dataset, dict(
                id=dataset_id, tenant_id=tenant["id"], name=f"{topic} ({tenant['name']})",
                description=f"What {tenant['name']} knows about {topic.lower()}", indexing_technique="economy",
                doc_form="text_model", created_by=self.accounts[tenant["id"]], created_at=at, updated_at=at)))
            self.datasets[tenant["id"]].append(dataset_id)
            self.dataset_tenant[dataset_id] = tenant["id"]
        self.change(f"{len(inserts)} datasets created", OUTBOX, inserts=inserts)

    def plan_documents(self) -> list[Callable[[], None]]:
        """Documents are uploaded in batches of 5 to 20 per dataset, each batch one index request;
        a few files have no text (they end in ``error`` with the reason, not in a dead letter)."""
        remaining = self.size.documents
        dataset_ids = list(self.dataset_tenant)
        uploads = []
        index = 0
        while remaining > 0:
            count = min(remaining, self.rng.randint(5, 20))
            uploads.append((dataset_ids[index % len(dataset_ids)], count))
            remaining -= count
            index += 1
        blank = {self.rng.randrange(self.size.documents) for _ in range(max(1, self.size.documents // 120))}
        first = 0
        thunks: list[Callable[[], None]] = []
        for dataset_id, count in uploads:
            thunks.append(partial(self.upload, dataset_id, count, first, blank))
            first += count
        return thunks

    def upload(self, dataset_id: str, count: int, first: int, blank: set[int]) -> None:
        tenant_id = self.dataset_tenant[dataset_id]
        inserts, ids = [], []
        for n in range(first, first + count):
            at = self.tick(0.05, 0.5)
            document_id = _id(self.rng)
            if n in blank:
                content = "" if n % 2 == 0 else "— … ——  ·  …"
            else:
                marker = self.marker()
                self.markers[document_id] = marker
                content = self.document_text(marker)
            inserts.append(Insert(Document, dict(
                id=document_id, tenant_id=tenant_id, dataset_id=dataset_id, position=n, name=f"doc-{n:05d}.md",
                data_source_type="upload_file", content=content, doc_form="text_model", doc_language="English",
                indexing_status="waiting", enabled=True, created_by=self.accounts[tenant_id], created_at=at,
                updated_at=at)))
            ids.append(document_id)
            self.document_dataset[document_id] = dataset_id
        self.batches.append(ids)
        self.change(f"{count} documents uploaded to dataset {dataset_id}", OUTBOX, inserts=inserts, events=[
            self.event(DocumentIndexCreated, self.now, tenant_id=tenant_id, dataset_id=dataset_id,
                       document_ids=tuple(ids))])

    def create_apps(self, documents: list[Callable[[], None]]) -> None:
        first_uploads = len(documents) // 3
        for i in range(self.size.apps):
            if documents and i % max(1, self.size.apps // max(1, first_uploads)) == 0:
                documents.pop(0)()
            self.create_app(i)

    def create_app(self, i: int) -> None:
        r = self.rng
        tenant = self.tenants[i % len(self.tenants)]
        tenant_id = tenant["id"]
        at = self.tick()
        mode = r.choice(APP_MODES)
        app_id = _id(r)
        provider, model = r.choice(MODELS)
        name = f"{r.choice(APP_NAMES)} {i + 1}"
        app = dict(id=app_id, tenant_id=tenant_id, name=name, mode=mode, description=f"{name} for {tenant['name']}",
                   icon_type="emoji", icon=r.choice("🤖🧭📚🛟🧾🧠"), icon_background="#E4FBCC", status="normal",
                   enable_site=True, enable_api=True, created_by=self.accounts[tenant_id], created_at=at, updated_at=at)
        inserts = []
        if mode in WORKFLOW_MODES:
            draft_id = _id(r)
            graph = self.graph(provider, model, [], self.tool_nodes(), triggers=mode == "workflow")
            inserts.append(Insert(Workflow, dict(id=draft_id, tenant_id=tenant_id, app_id=app_id, version=DRAFT,
                                                 type="workflow" if mode == "workflow" else "chat", graph=graph,
                                                 created_by=app["created_by"], created_at=at, updated_at=at)))
            state = dict(draft_id=draft_id, graph=graph)
        else:
            config_id = _id(r)
            inserts.append(Insert(AppModelConfig, self.model_config(config_id, app_id, provider, model, [], at)))
            app["app_model_config_id"] = config_id
            state = {}
        self.apps.append(dict(id=app_id, tenant_id=tenant_id, mode=mode, **state))
        self.app_model[app_id] = (provider, model)
        self.conversations[app_id] = [_id(r) for _ in range(r.randint(2, 6))]
        account = dify.Account(self.accounts[tenant_id], interface_language=r.choice(["en-US", "zh-Hans", "ja-JP"]))
        self.change(f"app {name} ({mode}) created", OUTBOX, inserts=[Insert(App, app), *inserts], calls=[self.call(
            CREATE_APP, dify.World(app=self.dify_app(app), account=account), at)])

    @staticmethod
    def dify_app(app: dict[str, Any]) -> dify.App:
        """The app as Dify's ``App`` model passes it to a signal."""
        return dify.App(app["id"], app["tenant_id"], app["mode"], app.get("name", ""),
                        created_by=app.get("created_by"), updated_by=app.get("created_by"),
                        icon_type=app.get("icon_type"), icon=app.get("icon"),
                        icon_background=app.get("icon_background"), description=app.get("description", ""))

    def model_config(self, config_id: str, app_id: str, provider: str, model: str, dataset_ids: list[str],
                     at: datetime) -> dict[str, Any]:
        entries = [{"dataset": {"enabled": True, "id": d}} for d in dataset_ids]
        if dataset_ids and self.rng.random() < 0.3:  # a dataset switched off in the config: not joined
            entries.append({"dataset": {"enabled": False, "id": _id(self.rng)}})
        return dict(id=config_id, app_id=app_id, provider=provider, model_id=model,
                    model={"provider": provider, "name": model, "mode": "chat",
                           "completion_params": {"temperature": round(self.rng.uniform(0, 1), 2)}},
                    dataset_configs={"retrieval_model": "multiple", "datasets": {"datasets": entries}}, created_at=at)

    def tool_nodes(self) -> list[dict[str, Any]]:
        chosen = self.rng.sample(TOOLS, self.rng.randint(1, 3))
        return [{"id": f"tool-{n + 1}", "data": {"type": "tool", "title": name, "provider_type": ptype,
                                                  "provider_id": pid, "tool_name": name}}
                for n, (ptype, pid, name) in enumerate(chosen)]

    def graph(self, provider: str, model: str, dataset_ids: list[str], tools: list[dict[str, Any]],
              *, triggers: bool = False) -> dict[str, Any]:
        nodes: list[dict[str, Any]] = [{"id": "start", "data": {"type": "start", "title": "Start"}}]
        if triggers:  # a workflow app's trigger nodes: a webhook and a weekday-morning schedule
            nodes += [{"id": "webhook", "data": {"type": "trigger-webhook", "title": "Incoming webhook"}},
                      {"id": "schedule", "data": {"type": "trigger-schedule", "title": "Weekday mornings",
                                                  "mode": "cron", "cron_expression": "0 9 * * 1-5",
                                                  "timezone": "Europe/Berlin"}}]
        for n, chunk in enumerate(_chunks(dataset_ids, 2)):
            nodes.append({"id": f"knowledge-{n + 1}", "data": {"type": "knowledge-retrieval", "title": "Knowledge",
                                                               "dataset_ids": chunk, "retrieval_mode": "multiple"}})
        nodes.append({"id": "llm", "data": {"type": "llm", "title": "LLM",
                                            "model": {"provider": provider, "name": model, "mode": "chat"}}})
        nodes.extend(tools)
        nodes.append({"id": "end", "data": {"type": "end", "title": "End"}})
        edges = [{"source": a["id"], "target": b["id"]} for a, b in pairwise(nodes)]
        return {"nodes": nodes, "edges": edges}

    def pick_datasets(self, tenant_id: str) -> list[str]:
        own = self.datasets[tenant_id]
        return self.rng.sample(own, self.rng.randint(0, min(3, len(own))))

    # -- the busy hour: configuration, workflows, documents, messages, in a shuffled order ----
    def busy_hour(self, documents: list[Callable[[], None]]) -> None:
        actions: list[Callable[[], None]] = list(documents)
        for app in self.apps:
            if app["mode"] in WORKFLOW_MODES:
                actions += [partial(self.publish_workflow, app)] * self.rng.randint(1, 2)
                if self.rng.random() < 0.7:
                    actions.append(partial(self.sync_draft, app))
                else:
                    actions.append(partial(self.fill_tool_cache, app))  # never synced: the cache stays
            else:
                actions += [partial(self.update_model_config, app)] * self.rng.randint(1, 3)
        for tenant in self.tenants:
            if self.rng.random() < 0.6:
                actions.append(partial(self.update_tenant, tenant))
        batches = self.message_batches()
        actions += [partial(self.messages, n) for n in batches[: len(batches) * 4 // 5]]
        self.later_messages = batches[len(batches) * 4 // 5:]
        self.rng.shuffle(actions)
        poison_at = sorted(self.rng.sample(range(len(actions)), 2))
        for i, action in enumerate(actions):
            action()
            if i == poison_at[0]:
                self.poison_bytes()
            elif i == poison_at[1]:
                self.index_unknown_documents()

    def update_model_config(self, app: dict[str, Any]) -> None:
        at = self.tick()
        provider, model = self.rng.choice(MODELS)
        config_id = _id(self.rng)
        datasets = self.pick_datasets(app["tenant_id"])
        self.app_model[app["id"]] = (provider, model)
        config = self.model_config(config_id, app["id"], provider, model, datasets, at)
        dify_config = dify.AppModelConfig(config_id, app["id"], agent_mode=json.dumps({"enabled": False, "tools": []}),
                                          dataset_configs=json.dumps(config["dataset_configs"]))
        self.change(f"model config of app {app['id']} updated", OUTBOX, inserts=[Insert(AppModelConfig, config)],
                    updates=[Update(App, app["id"], dict(app_model_config_id=config_id, updated_at=at))],
                    calls=[self.call(UPDATE_MODEL_CONFIG, dify.World(app=self.dify_app(app),
                                                                     app_model_config=dify_config), at)])

    def publish_workflow(self, app: dict[str, Any]) -> None:
        at = self.tick()
        provider, model = self.rng.choice(MODELS)
        datasets = self.pick_datasets(app["tenant_id"])
        workflow_id = _id(self.rng)
        graph = self.graph(provider, model, datasets, self.tool_nodes(), triggers=app["mode"] == "workflow")
        self.app_model[app["id"]] = (provider, model)
        workflow = dify.Workflow(workflow_id, app["tenant_id"], app["id"], json.dumps(graph), version=str(at))
        self.change(f"workflow of app {app['id']} published", OUTBOX,
                    inserts=[Insert(Workflow, dict(
                        id=workflow_id, tenant_id=app["tenant_id"], app_id=app["id"],
                        version=at.strftime("%Y-%m-%d %H:%M:%S.%f"),
                        type="workflow" if app["mode"] == "workflow" else "chat", graph=graph,
                        created_by=self.accounts[app["tenant_id"]], created_at=at, updated_at=at))],
                    updates=[Update(App, app["id"], dict(workflow_id=workflow_id, updated_at=at))],
                    calls=[self.call(PUBLISH_WORKFLOW, dify.World(app=self.dify_app(app), workflow=workflow), at)])

    def fill_tool_cache(self, app: dict[str, Any]) -> None:
        """The app runtime ran the draft: it cached each tool node's decrypted parameters."""
        at = self.tick(0.1, 1.0)
        rows = [Insert(ToolParameterCache, dict(
            id=_id(self.rng), tenant_id=app["tenant_id"], app_id=app["id"], node_id=node["id"],
            provider_type=node["data"]["provider_type"], provider_id=node["data"]["provider_id"],
            tool_name=node["data"]["tool_name"], parameters={"api_key": "sk-…redacted", "region": "eu"},
            cached_at=at)) for node in app["graph"]["nodes"] if node["data"]["type"] == "tool"]
        self.change(f"tool parameters of app {app['id']} cached", OUTBOX, inserts=rows)

    def sync_draft(self, app: dict[str, Any]) -> None:
        self.fill_tool_cache(app)
        at = self.tick()
        provider, model = self.app_model[app["id"]]
        tools = [n for n in app["graph"]["nodes"] if n["data"]["type"] == "tool"]
        graph = self.graph(provider, model, self.pick_datasets(app["tenant_id"]), tools,
                           triggers=app["mode"] == "workflow")
        app["graph"] = graph
        draft = dify.Workflow(app["draft_id"], app["tenant_id"], app["id"], json.dumps(graph),
                              updated_by=self.accounts[app["tenant_id"]])
        self.change(f"draft workflow of app {app['id']} synced", OUTBOX,
                    updates=[Update(Workflow, app["draft_id"], dict(graph=graph, updated_at=at))],
                    calls=[self.call(SYNC_DRAFT, dify.World(app=self.dify_app(app), workflow=draft), at)])

    def update_tenant(self, tenant: dict[str, Any]) -> None:
        at = self.tick()
        changes: dict[str, Any] = {}
        roll = self.rng.random()
        if roll < 0.5:
            changes["plan"] = self.rng.choice([p for p in PLANS if p != tenant["plan"]])
        if roll > 0.3:
            changes["custom_config"] = {"remove_webapp_brand": self.rng.choice(["true", "false"]),
                                        "replace_webapp_logo": f"https://cdn.example.com/{tenant['id'][:8]}.png"}
        if roll > 0.8:
            changes["name"] = tenant["name"] + " Group"
        tenant.update(changes)
        self.change(f"tenant {tenant['id']} updated", OUTBOX,
                    updates=[Update(Tenant, tenant["id"], dict(changes, updated_at=at))],
                    events=[self.event(TenantWasUpdated, at, tenant_id=tenant["id"], plan=changes.get("plan"),
                                       tenant_name=changes.get("name"), custom_config=changes.get("custom_config"),
                                       updated_by=self.accounts[tenant["id"]])])

    def message_batches(self) -> list[int]:
        sizes, left = [], self.size.messages
        while left > 0:
            sizes.append(min(left, self.rng.randint(20, 80)))
            left -= sizes[-1]
        return sizes

    def messages(self, count: int) -> None:
        """Answers in conversations of busy apps: the rows, then the events (SDK, after the commit)."""
        inserts, calls = [], []
        talking = [app for app in self.apps if app["mode"] != "workflow"]  # a workflow app makes no messages
        if not talking:
            return
        weights = [1 + (i % 5) for i in range(len(talking))]
        for app in self.rng.choices(talking, weights, k=count):
            at = self.tick(0.0, 0.05)
            short, model = self.app_model[app["id"]]
            provider = f"langgenius/{short}/{short}"  # Dify 1.x names providers by their plugin id
            message_tokens, answer_tokens = self.rng.randint(20, 2400), self.rng.randint(5, 900)
            latency_ms = self.rng.randint(300, 9000)
            conversation = self.rng.choice(self.conversations[app["id"]])
            message_id = _id(self.rng)
            invoke_from = self.rng.choice(INVOKE_FROM)
            inserts.append(Insert(Message, dict(
                id=message_id, tenant_id=app["tenant_id"], app_id=app["id"], conversation_id=conversation,
                model_provider=provider, model_id=model, message_tokens=message_tokens, answer_tokens=answer_tokens,
                total_tokens=message_tokens + answer_tokens, currency="USD",
                provider_response_latency=latency_ms / 1000, invoke_from=invoke_from, created_at=at)))
            message = dify.Message(message_id, conversation, app["id"], provider, model, message_tokens,
                                   answer_tokens, latency_ms / 1000, invoke_from)
            entity = dify.generate_entity(tenant_id=app["tenant_id"], app_id=app["id"], app_mode=app["mode"],
                                          provider=provider, model=model, quota_unit="credits",
                                          provider_type="system" if short in HOSTED_PROVIDERS else "custom")
            site = SAVE_ADVANCED_CHAT_MESSAGE if app["mode"] == "advanced-chat" else SAVE_MESSAGE
            calls.append(self.call(site, dify.World(message=message, entity=entity), at))
            if self.rng.random() < 0.04:  # a user rates the answer
                feedback = dify.MessageFeedback(_id(self.rng), app["id"], conversation, message_id,
                                                self.rng.choice(["like", "dislike"]), from_end_user_id=_id(self.rng))
                calls.append(self.call(CREATE_FEEDBACK, dify.World(feedback=feedback,
                                                                   tenant=dify.Tenant(app["tenant_id"], "")), at))
        self.change(f"{count} messages answered", SDK, inserts=inserts, calls=calls)

    # -- deletions, among the last messages -------------------------------------------------
    def deletions(self) -> None:
        """Some documents and datasets are deleted: the application deletes the row, commits,
        then publishes (as Dify does). Each index request keeps at least one document, so none of
        them finds all its documents gone (that would be a dead letter)."""
        gone_datasets = self.gone_datasets
        candidates = [d for batch in self.batches for d in batch[1:] if self.document_dataset[d] not in gone_datasets]
        gone_documents = self.rng.sample(candidates, min(len(candidates), max(2, self.size.documents // 20)))
        actions: list[Callable[[], None]] = [partial(self.messages, n) for n in self.later_messages]
        actions += [partial(self.delete_document, d) for d in gone_documents]
        actions += [partial(self.delete_dataset, d) for d in gone_datasets]
        self.rng.shuffle(actions)
        for action in actions:
            action()

    def delete_document(self, document_id: str) -> None:
        at = self.tick(0.1, 1.0)
        dataset_id = self.document_dataset[document_id]
        document = dify.Document(document_id, dataset_id, doc_form="text_model")
        self.change(f"document {document_id} deleted", SDK, deletes=[Delete(Document, document_id)],
                    calls=[self.call(DELETE_DOCUMENT, dify.World(document=document), at)])

    def delete_dataset(self, dataset_id: str) -> None:
        at = self.tick(0.1, 1.0)
        tenant_id = self.dataset_tenant[dataset_id]
        self.datasets[tenant_id].remove(dataset_id)
        dataset = dify.Dataset(dataset_id, tenant_id, indexing_technique="economy", doc_form="text_model")
        self.change(f"dataset {dataset_id} deleted", SDK, deletes=[Delete(Dataset, dataset_id)],
                    calls=[self.call(DELETE_DATASET, dify.World(dataset=dataset), at)])

    # -- poison -----------------------------------------------------------------------------
    def poison_bytes(self) -> None:
        """Three messages no consumer can decode, produced past the SDK onto the message topic."""
        garbage = bytes(self.rng.getrandbits(8) for _ in range(48))
        tenant = self.tenants[0]
        self.steps.append(Poison("garbage bytes without headers", "message", b"poison-1", garbage))
        for group in ("provider-usage", "feedback-telemetry"):  # both read the message topic
            self.expected.append(ExpectedDeadLetter(group, "BadHeader", "garbage bytes without headers"))
        self.steps.append(Poison("garbage bytes labelled message_was_created", "message", b"poison-2", garbage,
                                 ((H.EVENT_TYPE, b"message_was_created"),)))
        self.expected.append(ExpectedDeadLetter("provider-usage", "NotSingleObjectEncoded",
                                                "garbage bytes labelled message_was_created"))
        wrong = self.event(TenantWasCreated, self.tick(), tenant_id=tenant["id"], tenant_name=tenant["name"])
        self.steps.append(Poison("a tenant_was_created body labelled message_was_created", "message", b"poison-3",
                                 _encode(wrong), ((H.EVENT_TYPE, b"message_was_created"),
                                                  (H.EVENT_ID, wrong.event_id.encode()))))
        self.expected.append(ExpectedDeadLetter("provider-usage", "EventTypeMismatch",
                                                "a tenant_was_created body labelled message_was_created"))

    def index_unknown_documents(self) -> None:
        """A valid event naming documents that never existed, in a dataset that stays: the indexer
        rejects it."""
        dataset_id = next(d for d in self.dataset_tenant if d not in self.gone_datasets)
        at = self.tick()
        request = self.event(DocumentIndexCreated, at, tenant_id=self.dataset_tenant[dataset_id],
                             dataset_id=dataset_id, document_ids=(_id(self.rng), _id(self.rng)))
        self.change("index request for documents that do not exist", SDK, events=[request])
        self.expected.append(ExpectedDeadLetter("document-indexer", "DocumentNotFound",
                                                "an index request for documents that do not exist", request.event_id))


def _chunks(items: list[str], n: int) -> list[list[str]]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def _encode(event: Event) -> bytes:
    from dify_events.schemas.catalogue import CATALOGUE
    from dify_events.schemas.codec import AvroCodec

    return AvroCodec(CATALOGUE).encode(event)


def build(size: Size, *, seed: int = DEFAULT_SEED) -> Workload:
    """The workload of this size and seed (the same every time)."""
    if min(size.tenants, size.apps, size.documents) < 1 or size.messages < 0:
        raise ValueError(f"a workload needs at least one tenant, app and document: {size}")
    return _Generator(size, seed).build()
