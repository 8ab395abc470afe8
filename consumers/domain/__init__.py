"""The domain: the slice of Dify's database that the seed's handlers read and write.

``base``      the declarative base, portable types, ``create_all(engine)``, ``insert_ignore(_returning)``, ``rowcount``
``tenant``    tenants, tenant settings, default models
``app``       apps, sites, installed apps, model configs, workflows, dataset joins, tool cache, app telemetry
``dataset``   datasets, documents, segments, the keyword index table, files, metadata, pipelines
``provider``  providers (quota, last use), credit pools, usage totals, counted messages, messages, feedback counts
``trigger``   a workflow app's triggers, schedule plan, plugin triggers and webhooks
``search``    text -> segments and keywords; ``search(session, dataset_id, query)``
``invariants`` the database's invariants, checked by ``events demo``
"""

from .app import (
    App,
    AppDatasetJoin,
    AppDatasetJoinVersion,
    AppModelConfig,
    AppTelemetry,
    InstalledApp,
    Site,
    ToolParameterCache,
    Workflow,
)
from .base import (
    Base,
    UTCDateTime,
    create_all,
    dialect_insert,
    insert_ignore,
    insert_ignore_returning,
    new_id,
    rowcount,
    utcnow,
)
from .dataset import (
    Dataset,
    DatasetMetadata,
    DatasetMetadataBinding,
    DatasetProcessRule,
    DatasetQuery,
    Document,
    DocumentKeyword,
    DocumentSegment,
    Pipeline,
    SegmentAttachmentBinding,
    UploadFile,
)
from .provider import FeedbackTelemetry, Message, MessageUsage, Provider, ProviderUsage, TenantCreditPool
from .search import keywords, search, split_segments, unindex
from .tenant import Tenant, TenantDefaultModel, TenantSetting, WorkspaceSyncTask
from .trigger import AppTrigger, WorkflowPluginTrigger, WorkflowSchedulePlan, WorkflowWebhookTrigger

DOMAIN = Base.metadata  # every table of the slice (each model module is imported above)

__all__ = [
    "DOMAIN", "App", "AppDatasetJoin", "AppDatasetJoinVersion", "AppModelConfig", "AppTelemetry", "AppTrigger", "Base",
    "Dataset",
    "DatasetMetadata", "DatasetMetadataBinding", "DatasetProcessRule", "DatasetQuery", "Document", "DocumentKeyword",
    "DocumentSegment", "FeedbackTelemetry", "InstalledApp", "Message", "MessageUsage", "Pipeline", "Provider",
    "ProviderUsage", "SegmentAttachmentBinding", "Site", "Tenant", "TenantCreditPool", "TenantDefaultModel",
    "TenantSetting", "ToolParameterCache", "UTCDateTime", "UploadFile", "Workflow", "WorkflowPluginTrigger",
    "WorkflowSchedulePlan", "WorkflowWebhookTrigger", "WorkspaceSyncTask", "create_all", "dialect_insert",
    "insert_ignore", "insert_ignore_returning", "keywords", "new_id", "rowcount", "search",
    "split_segments", "unindex", "utcnow",
]
