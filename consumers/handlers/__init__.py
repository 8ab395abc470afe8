"""Dify's receivers, one consumer group per job (as one blinker receiver was one job).

Importing this package registers every group with ``consumers.registry``. ``GROUPS`` lists them.
Each module's docstring says what matches Dify's receiver and what differs on purpose.

| Dify receiver (event)                                              | consumer group              |
|--------------------------------------------------------------------|-----------------------------|
| create_installed_app_when_app_created (app_was_created)            | installed-app-provisioner   |
| create_site_record_when_app_created (app_was_created)              | site-provisioner            |
| update_app_dataset_join_when_app_model_config_updated,             | app-dataset-joins           |
| update_app_dataset_join_when_app_published_workflow_updated        |                             |
| delete_tool_parameters_cache_when_sync_draft_workflow              | tool-cache-cleaner          |
| sync_plugin_trigger_when_app_created (draft synced, published)     | plugin-trigger-sync         |
| sync_webhook_when_app_created (draft synced, published)            | webhook-sync                |
| sync_workflow_schedule_when_app_published                          | workflow-schedule-sync      |
| update_app_triggers_when_app_published_workflow_updated            | app-trigger-sync            |
| clean_when_dataset_deleted (dataset_was_deleted)                   | dataset-cleaner             |
| clean_when_document_deleted (document_was_deleted)                 | document-cleaner            |
| create_document_index (document_index_created)                     | document-indexer            |
| update_provider_when_message_created (message_was_created)         | provider-usage              |
| enterprise telemetry's feedback receiver (feedback_was_created)    | feedback-telemetry          |
| enterprise telemetry's app receivers (app_was_created, _updated,   | app-telemetry               |
| _deleted; Dify main)                                               |                             |
| queue_credential_sync_when_tenant_created (tenant_was_created)     | credential-sync             |
| the seed's tenant_was_created / tenant_was_updated receivers       | tenant-provisioner          |
"""

from __future__ import annotations

from . import (
    app_dataset_joins,
    app_telemetry,
    app_triggers,
    credential_sync,
    dataset_cleaner,
    document_cleaner,
    document_indexer,
    feedback_telemetry,
    installed_app_provisioner,
    plugin_triggers,
    provider_usage,
    site_provisioner,
    tenant_provisioner,
    tool_cache_cleaner,
    webhooks,
    workflow_schedule,
)

GROUPS = [
    installed_app_provisioner.group,
    site_provisioner.group,
    app_dataset_joins.group,
    tool_cache_cleaner.group,
    plugin_triggers.group,
    webhooks.group,
    workflow_schedule.group,
    app_triggers.group,
    dataset_cleaner.group,
    document_cleaner.group,
    document_indexer.group,
    provider_usage.group,
    feedback_telemetry.group,
    app_telemetry.group,
    credential_sync.group,
    tenant_provisioner.group,
]

__all__ = ["GROUPS"]
