"""The domain: the slice of Dify's database that the seed's handlers read and write.

``base``      the declarative base, portable types, ``create_all(engine)``, ``insert_ignore``
``tenant``    tenants, tenant settings, default models
``app``       apps, sites, installed apps, model configs, workflows, dataset joins, tool cache
``dataset``   datasets, documents, segments, the keyword index table
``provider``  providers (quota, last use), usage totals, counted messages, messages
``search``    text -> segments and keywords; ``search(session, dataset_id, query)``
``invariants`` the database's invariants, checked by ``events demo``
"""

from .app import (
    App, AppDatasetJoin, AppDatasetJoinVersion, AppModelConfig, InstalledApp, Site, ToolParameterCache, Workflow,
)
from .base import Base, UTCDateTime, create_all, insert_ignore, new_id, utcnow
from .dataset import Dataset, Document, DocumentKeyword, DocumentSegment
from .provider import Message, MessageUsage, Provider, ProviderUsage
from .search import keywords, search, split_segments, unindex
from .tenant import Tenant, TenantDefaultModel, TenantSetting

DOMAIN = Base.metadata  # every table of the slice (each model module is imported above)

__all__ = [
    "DOMAIN", "App", "AppDatasetJoin", "AppDatasetJoinVersion", "AppModelConfig", "Base", "Dataset", "Document",
    "DocumentKeyword", "DocumentSegment", "InstalledApp", "Message", "MessageUsage", "Provider", "ProviderUsage",
    "Site", "Tenant", "TenantDefaultModel", "TenantSetting", "ToolParameterCache", "UTCDateTime", "Workflow",
    "create_all", "insert_ignore", "keywords", "new_id", "search", "split_segments", "unindex", "utcnow",
]
