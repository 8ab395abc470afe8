"""``dataset-cleaner``: a deleted dataset leaves nothing behind.

Dify: ``clean_when_dataset_deleted`` (on ``dataset_was_deleted``), which queues
``clean_dataset_task``. As they do: a dataset without a ``doc_form`` or an
``indexing_technique`` is skipped; otherwise its index entries, segments, documents, the images
shown in its segments, its segment attachments, its documents' uploaded files, process rules,
queries, app joins, metadata and metadata bindings go, and with a knowledge pipeline
(``pipeline_id``) the pipeline and its RAG-pipeline workflows. The dataset row is the
application's to delete (Dify deletes it right after sending the signal): the handler leaves it.

A heavy job, so a group of its own: a slow clean-up never delays another group. Naturally
idempotent (deletes of what is there).
"""

from __future__ import annotations

from sqlalchemy import delete, select

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import (
    DOMAIN,
    AppDatasetJoin,
    DatasetMetadata,
    DatasetMetadataBinding,
    DatasetProcessRule,
    DatasetQuery,
    Document,
    DocumentSegment,
    Pipeline,
    SegmentAttachmentBinding,
    Workflow,
    rowcount,
    unindex,
)
from dify_events.consumers.domain.app import RAG_PIPELINE
from dify_events.schemas.events import DatasetWasDeleted

from .cleanup import delete_attachments, delete_files, delete_segment_images

group = register(ConsumerGroup("dataset-cleaner", tables=DOMAIN))


@group.handler(DatasetWasDeleted)
def clean_dataset(event: DatasetWasDeleted, ctx: HandlerContext) -> None:
    session, dataset_id = ctx.session, event.dataset_id
    if not event.doc_form or not event.indexing_technique:
        ctx.log.info("dataset %s has no doc_form or indexing_technique: nothing to clean (as in Dify)", dataset_id)
        return
    images = delete_segment_images(session, DocumentSegment.dataset_id == dataset_id)
    attachments = delete_attachments(session, SegmentAttachmentBinding.tenant_id == event.tenant_id,
                                     SegmentAttachmentBinding.dataset_id == dataset_id)
    sources = session.execute(select(Document.data_source_type, Document.data_source_info)
                              .where(Document.dataset_id == dataset_id)).all()
    files = delete_files(session, [(info or {}).get("upload_file_id") for kind, info in sources
                                   if kind == "upload_file"])
    segments, keywords = unindex(session, dataset_id=dataset_id)
    documents = rowcount(session.execute(delete(Document).where(Document.dataset_id == dataset_id)))
    for model in (DatasetProcessRule, DatasetQuery, AppDatasetJoin, DatasetMetadata, DatasetMetadataBinding):
        session.execute(delete(model).where(model.dataset_id == dataset_id))
    if event.pipeline_id:
        session.execute(delete(Pipeline).where(Pipeline.id == event.pipeline_id))
        session.execute(delete(Workflow).where(Workflow.tenant_id == event.tenant_id,
                                               Workflow.app_id == event.pipeline_id, Workflow.type == RAG_PIPELINE))
    ctx.log.info("cleaned dataset %s: %d documents, %d segments, %d keyword entries, %d files, %d images, "
                 "%d attachments%s", dataset_id, documents, segments, keywords, files, images, attachments,
                 f", pipeline {event.pipeline_id}" if event.pipeline_id else "")
