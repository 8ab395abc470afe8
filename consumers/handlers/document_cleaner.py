"""``document-cleaner``: a deleted document leaves the index and its files.

Dify: ``clean_when_document_deleted`` (on ``document_was_deleted``), which queues
``clean_document_task``. As they do: the tenant is the dataset row's (Dify's call does not say
it; the event's ``tenant_id`` is then empty), and a dataset that is gone means nothing is cleaned
here (Dify's task raises "Document has no dataset" and logs it; ``dataset-cleaner`` cleans all of
a deleted dataset). Otherwise the document's index entries and segments go, with the images shown
in them, its uploaded file (``file_id``), its segment attachments and its metadata bindings. The
document row is the application's to delete (Dify deletes it right after sending the signal).

Its own group rather than part of ``dataset-cleaner``: one receiver was one job in Dify.
Naturally idempotent.
"""

from __future__ import annotations

from sqlalchemy import delete, select

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import (
    DOMAIN,
    Dataset,
    DatasetMetadataBinding,
    DocumentSegment,
    SegmentAttachmentBinding,
    unindex,
)
from dify_events.schemas.events import DocumentWasDeleted

from .cleanup import delete_attachments, delete_files, delete_segment_images

group = register(ConsumerGroup("document-cleaner", tables=DOMAIN))


@group.handler(DocumentWasDeleted)
def clean_document(event: DocumentWasDeleted, ctx: HandlerContext) -> None:
    session, document_id, dataset_id = ctx.session, event.document_id, event.dataset_id
    tenant_id = session.scalar(select(Dataset.tenant_id).where(Dataset.id == dataset_id))
    if tenant_id is None:
        ctx.log.info("document %s: its dataset %s is gone, dataset-cleaner cleans it (Dify: 'Document has no "
                     "dataset')", document_id, dataset_id)
        return
    images = delete_segment_images(session, DocumentSegment.document_id == document_id)
    segments, keywords = unindex(session, document_id=document_id)
    files = delete_files(session, [event.file_id])
    attachments = delete_attachments(session, SegmentAttachmentBinding.tenant_id == tenant_id,
                                     SegmentAttachmentBinding.dataset_id == dataset_id,
                                     SegmentAttachmentBinding.document_id == document_id)
    session.execute(delete(DatasetMetadataBinding).where(DatasetMetadataBinding.dataset_id == dataset_id,
                                                         DatasetMetadataBinding.document_id == document_id))
    ctx.log.info("cleaned document %s of dataset %s: %d segments, %d keyword entries, %d files, %d images, "
                 "%d attachments", document_id, dataset_id, segments, keywords, files, images, attachments)
