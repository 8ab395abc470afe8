"""Datasets (knowledge bases), their documents, the documents' segments, and the keyword index.

Written by the application: ``datasets`` and ``documents`` (with the document's text in
``content`` and ``indexing_status = "waiting"``) before it publishes ``document_index_created``;
it deletes a row before publishing ``dataset_was_deleted`` / ``document_was_deleted``.
Written by the consumer groups: the documents' indexing state, ``document_segments`` and
``document_keywords`` (the search index, see ``search.py``), and the cascade clean-up, which also
removes what Dify's ``clean_dataset_task`` / ``clean_document_task`` remove: uploaded files,
segment attachments, process rules, queries, metadata and its bindings, a knowledge pipeline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, new_id, utcnow

WAITING, INDEXING, COMPLETED, ERROR = "waiting", "indexing", "completed", "error"
INDEXING_STATUSES = (WAITING, INDEXING, COMPLETED, ERROR)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (Index(None, "tenant_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str]
    description: Mapped[str] = mapped_column(Text, default="")
    indexing_technique: Mapped[str | None] = mapped_column(String(32), default="economy")
    index_struct: Mapped[str | None] = mapped_column(Text)
    doc_form: Mapped[str | None] = mapped_column(String(32), default="text_model")
    pipeline_id: Mapped[str | None] = mapped_column(String(36))
    created_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (Index(None, "dataset_id", "position"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    dataset_id: Mapped[str] = mapped_column(String(36))
    position: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str]
    data_source_type: Mapped[str] = mapped_column(String(32), default="upload_file")
    data_source_info: Mapped[dict[str, Any] | None]  # {"upload_file_id": ...} for an uploaded file
    content: Mapped[str | None] = mapped_column(Text)
    doc_form: Mapped[str] = mapped_column(String(32), default="text_model")
    doc_language: Mapped[str | None] = mapped_column(String(32))
    indexing_status: Mapped[str] = mapped_column(String(32), default=WAITING)
    error: Mapped[str | None] = mapped_column(Text)
    word_count: Mapped[int | None] = mapped_column(Integer)
    segment_count: Mapped[int | None] = mapped_column(Integer)
    processing_started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    indexing_latency: Mapped[float | None] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DocumentSegment(Base):
    """A chunk of a document's text: what retrieval returns and the keyword index points at."""

    __tablename__ = "document_segments"
    __table_args__ = (Index(None, "document_id", "position"), Index(None, "dataset_id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    dataset_id: Mapped[str] = mapped_column(String(36))
    document_id: Mapped[str] = mapped_column(String(36))
    position: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    word_count: Mapped[int] = mapped_column(Integer)
    keywords: Mapped[list[Any]] = mapped_column(default=list)
    index_node_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(32), default=COMPLETED)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


class DocumentKeyword(Base):
    """The keyword index: one row per (segment, keyword). Dify's economy index keeps a keyword
    table per dataset as one JSON blob; rows let a query find documents with an index lookup."""

    __tablename__ = "document_keywords"
    __table_args__ = (
        Index(None, "keyword", "dataset_id"),
        Index(None, "document_id"),
        Index(None, "dataset_id"),
    )

    segment_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    keyword: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(36))
    document_id: Mapped[str] = mapped_column(String(36))


class UploadFile(Base):
    """A file in storage (Dify's ``upload_files``): a document's source, an image in a segment, an
    attachment. The cleaners delete the row; the storage object behind ``key`` is outside the slice."""

    __tablename__ = "upload_files"
    __table_args__ = (Index(None, "tenant_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    key: Mapped[str]
    name: Mapped[str]
    size: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SegmentAttachmentBinding(Base):
    """A file attached to a segment (Dify's multimodal segments)."""

    __tablename__ = "segment_attachment_bindings"
    __table_args__ = (Index(None, "dataset_id", "document_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    dataset_id: Mapped[str] = mapped_column(String(36))
    document_id: Mapped[str] = mapped_column(String(36))
    segment_id: Mapped[str] = mapped_column(String(36))
    attachment_id: Mapped[str] = mapped_column(String(36))


class DatasetProcessRule(Base):
    __tablename__ = "dataset_process_rules"
    __table_args__ = (Index(None, "dataset_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(String(36))
    mode: Mapped[str] = mapped_column(String(32), default="automatic")
    rules: Mapped[dict[str, Any] | None]


class DatasetQuery(Base):
    __tablename__ = "dataset_queries"
    __table_args__ = (Index(None, "dataset_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(String(36))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetMetadata(Base):
    __tablename__ = "dataset_metadatas"
    __table_args__ = (Index(None, "dataset_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    dataset_id: Mapped[str] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(32), default="string")
    name: Mapped[str]


class DatasetMetadataBinding(Base):
    __tablename__ = "dataset_metadata_bindings"
    __table_args__ = (Index(None, "dataset_id", "document_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    dataset_id: Mapped[str] = mapped_column(String(36))
    metadata_id: Mapped[str] = mapped_column(String(36))
    document_id: Mapped[str] = mapped_column(String(36))


class Pipeline(Base):
    """A knowledge pipeline (Dify's RAG pipeline): its workflows are ``workflows`` rows with
    ``app_id`` = the pipeline's id and ``type`` = ``rag-pipeline``."""

    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
