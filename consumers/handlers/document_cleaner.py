"""``document-cleaner``: a deleted document leaves the index.

Seed: ``clean_when_document_deleted`` (on ``document_was_deleted``), which queues Dify's
``clean_document_task``. Its own group rather than part of ``dataset-cleaner``: one receiver was
one job in the seed, and the two clean-ups share nothing but a word.
"""

from __future__ import annotations

from sqlalchemy import delete

from consumers.context import HandlerContext
from consumers.domain import DOMAIN, Document, unindex
from consumers.group import ConsumerGroup
from consumers.registry import register
from schemas.events import DocumentWasDeleted

group = register(ConsumerGroup("document-cleaner", tables=DOMAIN))


@group.handler(DocumentWasDeleted)
def clean_document(event: DocumentWasDeleted, ctx: HandlerContext) -> None:
    """Deletes the document's segments and keyword entries, and its row if the application left
    it. Naturally idempotent."""
    session = ctx.session
    segments, keywords = unindex(session, document_id=event.document_id)
    rows = session.execute(delete(Document).where(Document.id == event.document_id,
                                                  Document.dataset_id == event.dataset_id)).rowcount
    ctx.log.info("cleaned document %s of dataset %s: %d segments, %d keyword entries%s", event.document_id,
                 event.dataset_id, segments, keywords, " and its row" if rows else "")
