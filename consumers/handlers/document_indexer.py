"""``document-indexer``: documents become searchable.

Seed: ``create_document_index`` (on ``document_index_created``), which queues Dify's
``document_indexing_task``. For each document: ``waiting`` -> ``indexing`` -> ``completed``, or
``error`` with the reason; its text (``documents.content``, written by the application before it
published the event) is split into segments, and each segment's keywords are written to the
keyword index, where ``consumers.domain.search`` finds them.

Missing rows:
- the dataset is gone (deleted after the request): nothing to index, the event is done
  (``dataset-cleaner`` removes whatever the dataset had);
- some documents are gone (deleted meanwhile): the others are indexed, the gone ones logged;
- none of the documents exists: ``DocumentNotFound``, not retried, dead-lettered with the ids.
The dataset row is locked for share and the documents for update, so the application cannot
delete either between this handler's reads and its commit (PostgreSQL; SQLite has one writer).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from logging import LoggerAdapter
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import (
    DOMAIN,
    Dataset,
    Document,
    DocumentKeyword,
    DocumentSegment,
    keywords,
    split_segments,
    unindex,
)
from dify_events.consumers.domain.dataset import COMPLETED, ERROR, INDEXING
from dify_events.consumers.domain.search import word_count
from dify_events.schemas.events import DocumentIndexCreated

from .errors import DocumentNotFound, TenantMismatch

group = register(ConsumerGroup("document-indexer", tables=DOMAIN, delivery="shared"))

SEGMENT_IDS = uuid.UUID("5c1d7a52-8f0e-4e43-9a57-3d0f6b1c2e90")
"""Namespace of segment ids: uuid5(document id : position), so indexing twice writes the same ids."""
EMPTY = "the document has no text to index (empty content)"
NO_WORDS = "the document has no words to index (only punctuation, symbols or common words)"


@group.handler(DocumentIndexCreated)
def index_documents(event: DocumentIndexCreated, ctx: HandlerContext) -> None:
    session = ctx.session
    dataset = session.scalars(select(Dataset).where(Dataset.id == event.dataset_id).with_for_update(read=True)).first()
    if dataset is None:
        ctx.log.info("dataset %s is gone: %d documents not indexed", event.dataset_id, len(event.document_ids))
        return
    if dataset.tenant_id != event.tenant_id:
        raise TenantMismatch(f"dataset {dataset.id} belongs to tenant {dataset.tenant_id}, "
                             f"not to the event's tenant {event.tenant_id}")
    wanted = list(dict.fromkeys(event.document_ids))
    documents = session.scalars(select(Document).where(Document.id.in_(wanted), Document.dataset_id == dataset.id)
                                .order_by(Document.position, Document.id).with_for_update()).all()
    found = {d.id for d in documents}
    gone = [d for d in wanted if d not in found]
    if not documents:
        raise DocumentNotFound(f"none of the {len(wanted)} documents to index exists in dataset {dataset.id}: "
                               f"{', '.join(gone)}")
    if gone:
        ctx.log.warning("%d of %d documents of dataset %s are gone, not indexed: %s", len(gone), len(wanted),
                        dataset.id, ", ".join(gone))
    for document in documents:
        index_document(session, document, ctx.log)
    session.flush()


def index_document(session: Session, document: Document, log: LoggerAdapter) -> None:
    """Indexes one document (naturally idempotent: a completed document is left as it is; any
    other is re-indexed from scratch, replacing what an earlier attempt wrote)."""
    if document.indexing_status == COMPLETED:
        log.info("document %s is indexed already", document.id)
        return
    started = datetime.now(UTC)
    document.indexing_status, document.processing_started_at = INDEXING, started
    document.error = document.stopped_at = document.completed_at = None
    session.flush()
    unindex(session, document_id=document.id)

    text = (document.content or "").strip()
    segments = split_segments(text) if text else []
    if not segments:
        return _fail(document, EMPTY, log)
    segment_rows: list[dict[str, Any]] = []
    keyword_rows: list[dict[str, Any]] = []
    for position, content in enumerate(segments, start=1):
        segment_id = str(uuid.uuid5(SEGMENT_IDS, f"{document.id}:{position}"))
        words = keywords(content)
        segment_rows.append(dict(
            id=segment_id, tenant_id=document.tenant_id, dataset_id=document.dataset_id, document_id=document.id,
            position=position, content=content, word_count=word_count(content), keywords=words,
            index_node_id=segment_id, status=COMPLETED, created_at=started, completed_at=started))
        keyword_rows.extend(dict(segment_id=segment_id, keyword=w, dataset_id=document.dataset_id,
                                 document_id=document.id) for w in words)
    if not keyword_rows:
        return _fail(document, NO_WORDS, log)
    session.execute(insert(DocumentSegment), segment_rows)
    session.execute(insert(DocumentKeyword), keyword_rows)
    finished = datetime.now(UTC)
    document.word_count = sum(r["word_count"] for r in segment_rows)
    document.segment_count = len(segment_rows)
    document.indexing_status, document.completed_at = COMPLETED, finished
    document.indexing_latency = (finished - started).total_seconds()
    log.info("indexed document %s: %d segments, %d keyword entries", document.id, len(segment_rows),
             len(keyword_rows))


def _fail(document: Document, reason: str, log: LoggerAdapter) -> None:
    document.indexing_status, document.error, document.stopped_at = ERROR, reason, datetime.now(UTC)
    log.warning("document %s not indexed: %s", document.id, reason)
