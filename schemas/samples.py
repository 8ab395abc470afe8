"""One realistic event of each type, as application code would build them: for tests, the
benchmark and demos."""

from __future__ import annotations

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
    ToolNode,
)

TENANT = "6a1f9e3c-0b5d-4b7e-9a51-3f8e2d7c1b40"
APP = "9d2c4f1e-8b3a-4e6d-a7c5-1f0e9d8c7b6a"
DATASET = "3e5f7a9b-1c2d-4e8f-b0a1-2c3d4e5f6a7b"


def sample_events() -> list[Event]:
    return [
        AppWasCreated(tenant_id=TENANT, app_id=APP, mode="advanced-chat", name="Support bot",
                      created_by="acc-1", icon_type="emoji", icon="🤖", icon_background="#FFEAD5",
                      description="Answers questions — in 中文 too"),
        AppModelConfigWasUpdated(tenant_id=TENANT, app_id=APP, app_model_config_id="cfg-7",
                                 dataset_ids=[DATASET, "ds-2"]),
        AppPublishedWorkflowWasUpdated(tenant_id=TENANT, app_id=APP, workflow_id="wf-3", dataset_ids=[DATASET]),
        AppDraftWorkflowWasSynced(tenant_id=TENANT, app_id=APP, workflow_id="wf-4", synced_by="acc-1", tool_nodes=[
            ToolNode(node_id="1717", provider_type="builtin", provider_id="google", tool_name="google_search"),
            ToolNode(node_id="1718", provider_type="api", provider_id="prov-9", tool_name="weather"),
        ]),
        DatasetWasDeleted(tenant_id=TENANT, dataset_id=DATASET, indexing_technique="high_quality",
                          doc_form="text_model", index_struct='{"type": "qdrant"}', collection_binding_id=None),
        DocumentWasDeleted(tenant_id=TENANT, document_id="doc-1", dataset_id=DATASET, doc_form="qa_model",
                           file_id="file-1"),
        DocumentIndexCreated(tenant_id=TENANT, dataset_id=DATASET, document_ids=["doc-2", "doc-3"]),
        MessageWasCreated(tenant_id=TENANT, message_id="msg-1", conversation_id="conv-1", app_id=APP,
                          provider_name="langgenius/openai/openai", model_name="gpt-4o", message_tokens=812,
                          answer_tokens=233, total_tokens=1045, latency_ms=1830, invoke_from="web-app",
                          app_mode="chat", quota_type="trial", quota_unit="credits"),
        TenantWasCreated(tenant_id=TENANT, tenant_name="Acme", plan="sandbox", created_by="acc-1"),
        TenantWasUpdated(tenant_id=TENANT, plan="team", custom_config={"remove_webapp_brand": "true"}),
        FeedbackWasCreated(tenant_id=TENANT, feedback_id="fb-1", message_id="msg-1", app_id=APP,
                           conversation_id="conv-1", rating="like", from_source="user", from_end_user_id="eu-1"),
        AppWasDeleted(tenant_id=TENANT, app_id=APP, mode="advanced-chat"),
        AppWasUpdated(tenant_id=TENANT, app_id=APP, mode="advanced-chat"),
    ]
