"""Dify's own calls to its signals, as data: every ``<signal>.send(`` call site of Dify 1.12.x and
of its main branch, with the objects Dify passes, so tests replay them and the demo publishes with them.

Each ``CallSite`` names the Dify file and the function that makes the call (``where``), the line
of Dify's code (``code``), the versions it appears in, and ``call(world)``, which returns the
sender and keyword arguments exactly as that line passes them, built from a ``World`` of objects
shaped like Dify's (its models and generate entities, with the attributes the call and its
receivers read). Read in the public index of ``langgenius/dify`` (see ``docs/adopting-in-dify.md``
for the files and the versions read); the index gives no line numbers, and lines move between
versions, so a site is named by its file and function (by the index's file id where the index does
not give a newer file's path; by the signal's declaration or the receiver that reads a keyword,
saying so, where the index holds no sender).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

T = TypeVar("T")


# -- objects shaped like Dify's ---------------------------------------------------------------
@dataclass
class Account:  # models.account.Account
    id: str
    interface_language: str | None = "en-US"


@dataclass
class Tenant:  # models.account.Tenant
    id: str
    name: str
    plan: str = "basic"


@dataclass
class App:  # models.model.App
    id: str
    tenant_id: str
    mode: str
    name: str
    created_by: str | None = None
    updated_by: str | None = None
    icon_type: str | None = "emoji"
    icon: str | None = None
    icon_background: str | None = None
    description: str = ""
    app_model_config_id: str | None = None
    workflow_id: str | None = None


@dataclass
class AppEvent:  # services.entities.app_entities.AppEvent (Dify main)
    app_id: str
    tenant_id: str
    mode: str


@dataclass
class AppModelConfig:  # models.model.AppModelConfig: configs are JSON text
    id: str
    app_id: str
    agent_mode: str | None = None
    dataset_configs: str | None = None


@dataclass
class Workflow:  # models.workflow.Workflow: the graph is JSON text
    id: str
    tenant_id: str
    app_id: str
    graph: str
    version: str = "draft"
    updated_by: str | None = None


@dataclass
class Dataset:  # models.dataset.Dataset
    id: str
    tenant_id: str
    indexing_technique: str | None = "economy"
    doc_form: str | None = "text_model"
    index_struct: str | None = None
    collection_binding_id: str | None = None
    pipeline_id: str | None = None


@dataclass
class Document:  # models.dataset.Document
    id: str
    dataset_id: str
    doc_form: str = "text_model"
    data_source_type: str = "upload_file"
    data_source_info: str | None = None

    @property
    def data_source_info_dict(self) -> dict[str, Any]:
        return json.loads(self.data_source_info) if self.data_source_info else {}


@dataclass
class Message:  # models.model.Message
    id: str
    conversation_id: str
    app_id: str
    model_provider: str
    model_id: str
    message_tokens: int
    answer_tokens: int
    provider_response_latency: float = 0.0
    invoke_from: str = "web-app"


@dataclass
class MessageFeedback:  # models.model.MessageFeedback
    id: str
    app_id: str
    conversation_id: str
    message_id: str
    rating: str | None
    from_source: str = "user"
    from_end_user_id: str | None = None
    from_account_id: str | None = None


def generate_entity(*, tenant_id: str, app_id: str, app_mode: str, provider: str, model: str,
                    provider_type: str = "system", quota_type: str | None = "trial",
                    quota_unit: str = "tokens", quota_limit: int = 200) -> SimpleNamespace:
    """A ``ChatAppGenerateEntity`` (or the entity of another app mode), with the provider model
    bundle Dify's provider-usage receiver reads: ``model_conf.provider_model_bundle.configuration``."""
    quota = SimpleNamespace(quota_type=quota_type, quota_unit=quota_unit, quota_limit=quota_limit)
    system = SimpleNamespace(current_quota_type=quota_type, quota_configurations=[quota])
    configuration = SimpleNamespace(using_provider_type=provider_type, system_configuration=system)
    return SimpleNamespace(
        app_config=SimpleNamespace(tenant_id=tenant_id, app_id=app_id, app_mode=app_mode),
        model_conf=SimpleNamespace(provider=provider, model=model,
                                   provider_model_bundle=SimpleNamespace(configuration=configuration)),
        invoke_from="web-app")


@dataclass
class World:
    """The objects of one scenario; a call site uses those its call passes."""

    account: Account | None = None
    tenant: Tenant | None = None
    app: App | None = None
    app_model_config: AppModelConfig | None = None
    workflow: Workflow | None = None
    dataset: Dataset | None = None
    document: Document | None = None
    message: Message | None = None
    entity: Any = None
    feedback: MessageFeedback | None = None
    session: Any = None  # the caller's SQLAlchemy session, where Dify passes one
    extra: dict[str, Any] = field(default_factory=dict)


# -- the call sites ---------------------------------------------------------------------------
Call = Callable[[World], tuple[Any, dict[str, Any]]]


@dataclass(frozen=True)
class CallSite:
    signal: str
    where: str      # Dify's file and the function that calls
    versions: str   # "1.12.x", "main" or both
    code: str       # Dify's line(s), as written
    call: Call

    @property
    def id(self) -> str:
        return f"{self.where} ({self.versions})"


def _file_id(document: Any) -> str | None:
    """What ``DocumentService.delete_document`` computes before its call."""
    if document.data_source_type == "upload_file" and document.data_source_info:
        return document.data_source_info_dict.get("upload_file_id")
    return None


def _need(value: T | None, what: str) -> T:
    if value is None:
        raise ValueError(f"this call site needs a {what} in its World")
    return value


def _app_ids(w: World) -> tuple[str, str, str]:
    app = _need(w.app, "app")
    return app.id, app.tenant_id, app.mode


def _document_call(document: Document) -> tuple[Any, dict[str, Any]]:
    return document.id, {"dataset_id": document.dataset_id, "doc_form": document.doc_form,
                         "file_id": _file_id(document)}


CALL_SITES: list[CallSite] = [
    CallSite("app_was_created", "api/services/app_service.py:AppService.create_app", "1.12.x, main",
             "app_was_created.send(app, account=account)", lambda w: (w.app, {"account": w.account})),
    CallSite("app_was_created", "api/services/app_dsl_service.py:AppDslService._create_or_update_app",
             "1.12.x, main", "app_was_created.send(app, account=account)",
             lambda w: (w.app, {"account": w.account})),
    CallSite("app_was_created", "api/services/workflow/workflow_converter.py:WorkflowConverter.convert_to_workflow",
             "1.12.x, main", "app_was_created.send(new_app, account=account)",
             lambda w: (w.app, {"account": w.account})),
    CallSite("app_was_created", "api/commands.py:fix_app_site_missing", "1.12.x, main",
             "app_was_created.send(app, account=account)", lambda w: (w.app, {"account": w.account})),
    CallSite("app_was_created", "main's AppService with an AppEvent sender (index file 69014932855: "
             "Dify's tests of the app signals)", "main",
             'app_was_created.send(AppEvent(app.id, app.tenant_id, app.mode), created_records_initialized=True)',
             lambda w: (AppEvent(*_app_ids(w)), {"created_records_initialized": True})),
    CallSite("app_was_updated", "api/services/app_service.py:AppService.update_app", "main",
             "app_was_updated.send(app)", lambda w: (w.app, {})),
    CallSite("app_was_updated", "api/services/app_service.py:AppService.update_app_api_status (only when it changed)",
             "main", "app_was_updated.send(app)", lambda w: (w.app, {})),
    CallSite("app_was_updated", "main's app console service, updated() (index file 69315060837)", "main",
             "app_was_updated.send(AppEvent(app.id, context.active_workspace_id, app.mode_compatible_with_agent))",
             lambda w: (AppEvent(*_app_ids(w)), {})),
    CallSite("app_was_deleted", "api/services/app_service.py:AppService.delete_app", "main",
             "app_was_deleted.send(app)", lambda w: (w.app, {})),
    CallSite("app_was_deleted", "main's app console service, delete after its commit (index file 69014932855: "
             "Dify's tests of the app signals)", "main",
             "app_was_deleted.send(AppEvent(app.id, app.tenant_id, app.mode))",
             lambda w: (AppEvent(*_app_ids(w)), {})),
    CallSite("app_model_config_was_updated", "api/controllers/console/app/model_config.py:ModelConfigResource.post",
             "1.12.x, main", "app_model_config_was_updated.send(app_model, app_model_config=new_app_model_config)",
             lambda w: (w.app, {"app_model_config": w.app_model_config})),
    CallSite("app_model_config_was_updated", "api/services/app_dsl_service.py:AppDslService._create_or_update_app",
             "1.12.x, main", "app_model_config_was_updated.send(app, app_model_config=app_model_config)",
             lambda w: (w.app, {"app_model_config": w.app_model_config})),
    CallSite("app_model_config_was_updated",
             "controllers/console agent features: AgentAppFeatureConfigResource.post (index file 54549550168)",
             "main",
             "app_model_config_was_updated.send(app_model, app_model_config=new_app_model_config, session=session)",
             lambda w: (w.app, {"app_model_config": w.app_model_config, "session": w.session})),
    CallSite("app_published_workflow_was_updated", "api/services/workflow_service.py:WorkflowService.publish_workflow",
             "1.12.x, main", "app_published_workflow_was_updated.send(app_model, published_workflow=workflow)",
             lambda w: (w.app, {"published_workflow": w.workflow})),
    CallSite("app_published_workflow_was_updated", "main's app import, after its commit (index file 67454519647)",
             "main",
             "app_published_workflow_was_updated.send(imported_app, published_workflow=published_workflow)",
             lambda w: (w.app, {"published_workflow": w.workflow})),
    CallSite("app_draft_workflow_was_synced", "api/services/workflow_service.py:WorkflowService.sync_draft_workflow",
             "1.12.x, main", "app_draft_workflow_was_synced.send(app_model, synced_draft_workflow=workflow)",
             lambda w: (w.app, {"synced_draft_workflow": w.workflow})),
    CallSite("app_draft_workflow_was_synced", "main's Workflow Assist apply, after its commit (index file "
             "68477397848)", "main",
             "app_draft_workflow_was_synced.send(app_model, synced_draft_workflow=workflow)",
             lambda w: (w.app, {"synced_draft_workflow": w.workflow})),
    CallSite("app_draft_workflow_was_synced", "main's workflow draft events of an app owner (index file "
             "70207547020)", "main", "app_draft_workflow_was_synced.send(app, synced_draft_workflow="
             "workflow_from_snapshot(workflow), session_factory=self._sessions)",
             lambda w: (w.app, {"synced_draft_workflow": w.workflow, "session_factory": w.extra.get("sessions")})),
    CallSite("dataset_was_deleted", "api/services/dataset_service.py:DatasetService.delete_dataset", "1.12.x, main",
             "dataset_was_deleted.send(dataset)", lambda w: (w.dataset, {})),
    CallSite("document_was_deleted", "api/services/dataset_service.py:DocumentService.delete_document",
             "1.12.x, main", "document_was_deleted.send(document.id, dataset_id=document.dataset_id, "
             "doc_form=document.doc_form, file_id=file_id)",
             lambda w: _document_call(_need(w.document, "document"))),
    CallSite("message_was_created", "api/core/app/task_pipeline/easy_ui_based_generate_task_pipeline.py:"
             "EasyUIBasedGenerateTaskPipeline._save_message", "1.12.x, main",
             "message_was_created.send(message, application_generate_entity=self._application_generate_entity)",
             lambda w: (w.message, {"application_generate_entity": w.entity})),
    CallSite("message_was_created", "api/core/app/apps/advanced_chat/generate_task_pipeline.py:"
             "AdvancedChatAppGenerateTaskPipeline._save_message", "1.12.x, main",
             "message_was_created.send(message, application_generate_entity=self._application_generate_entity)",
             lambda w: (w.message, {"application_generate_entity": w.entity})),
    CallSite("tenant_was_created", "api/services/account_service.py:TenantService.create_owner_tenant_if_not_exist",
             "1.12.x, main", "tenant_was_created.send(tenant)", lambda w: (w.tenant, {})),
    CallSite("tenant_was_created", "api/controllers/console/auth/oauth.py:_generate_account", "1.12.x, main",
             "tenant_was_created.send(tenant)", lambda w: (w.tenant, {})),
    CallSite("tenant_was_created", "api/controllers/inner_api/workspace/workspace.py:EnterpriseWorkspace.post",
             "1.12.x, main", "tenant_was_created.send(tenant)", lambda w: (w.tenant, {})),
    CallSite("tenant_was_created", "api/events/event_handlers/queue_credential_sync_when_tenant_created.py:handle "
             "(the source= its receiver reads; the index holds no sender that passes it)", "1.12.x, main",
             'tenant_was_created.send(tenant, source="...")',
             lambda w: (w.tenant, {"source": w.extra.get("source", "workspace_created")})),
    CallSite("feedback_was_created", "api/events/feedback_event.py (the declared shape, sender: MessageFeedback, "
             "kwargs: tenant_id; the index holds no sender)",
             "main", "feedback_was_created.send(feedback, tenant_id=tenant_id)",
             lambda w: (w.feedback, {"tenant_id": _need(w.tenant, "tenant").id})),
]
"""Every call site; ``sites(signal)`` those of one signal."""


def sites(signal: str) -> list[CallSite]:
    return [site for site in CALL_SITES if site.signal == signal]


def site(where_prefix: str, signal: str) -> CallSite:
    """The call site of ``signal`` whose ``where`` starts with ``where_prefix``."""
    return next(s for s in CALL_SITES if s.signal == signal and s.where.startswith(where_prefix))
