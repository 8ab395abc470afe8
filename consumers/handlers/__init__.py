"""The seed's handlers, one consumer group per job (as one blinker receiver was one job).

Importing this package registers every group with ``consumers.registry``. ``GROUPS`` lists them.

| seed receiver (event)                                              | consumer group              |
|--------------------------------------------------------------------|-----------------------------|
| create_installed_app_when_app_created (app_was_created)            | installed-app-provisioner   |
| create_site_record_when_app_created (app_was_created)              | site-provisioner            |
| update_app_dataset_join_when_app_model_config_updated,             | app-dataset-joins           |
| update_app_dataset_join_when_app_published_workflow_updated        |                             |
| delete_tool_parameters_cache_when_sync_draft_workflow              | tool-cache-cleaner          |
| clean_when_dataset_deleted (dataset_was_deleted)                   | dataset-cleaner             |
| clean_when_document_deleted (document_was_deleted)                 | document-cleaner            |
| create_document_index (document_index_created)                     | document-indexer            |
| update_provider_when_message_created (message_was_created)         | provider-usage              |
| tenant_was_created / tenant_was_updated receivers                  | tenant-provisioner          |
"""

from __future__ import annotations

from . import (
    app_dataset_joins,
    dataset_cleaner,
    document_cleaner,
    document_indexer,
    installed_app_provisioner,
    provider_usage,
    site_provisioner,
    tenant_provisioner,
    tool_cache_cleaner,
)

GROUPS = [
    installed_app_provisioner.group,
    site_provisioner.group,
    app_dataset_joins.group,
    tool_cache_cleaner.group,
    dataset_cleaner.group,
    document_cleaner.group,
    document_indexer.group,
    provider_usage.group,
    tenant_provisioner.group,
]

__all__ = ["GROUPS"]
