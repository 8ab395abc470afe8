"""``dataset-cleaner``: a deleted dataset leaves nothing behind.

Seed: ``clean_when_dataset_deleted`` (on ``dataset_was_deleted``), which queues Dify's
``clean_dataset_task``. A heavy job, so a group of its own: a slow clean-up never delays another
group.
"""

from __future__ import annotations

from sqlalchemy import delete

from consumers.context import HandlerContext
from consumers.domain import DOMAIN, AppDatasetJoin, Dataset, Document, unindex
from consumers.group import ConsumerGroup
from consumers.registry import register
from schemas.events import DatasetWasDeleted

group = register(ConsumerGroup("dataset-cleaner", tables=DOMAIN))


@group.handler(DatasetWasDeleted)
def clean_dataset(event: DatasetWasDeleted, ctx: HandlerContext) -> None:
    """Deletes the dataset's keyword entries, segments, documents and app joins, and the dataset
    row if the application left it (the event says it was deleted). Naturally idempotent."""
    session, dataset_id = ctx.session, event.dataset_id
    segments, keywords = unindex(session, dataset_id=dataset_id)
    documents = session.execute(delete(Document).where(Document.dataset_id == dataset_id)).rowcount
    joins = session.execute(delete(AppDatasetJoin).where(AppDatasetJoin.dataset_id == dataset_id)).rowcount
    rows = session.execute(delete(Dataset).where(Dataset.id == dataset_id)).rowcount
    ctx.log.info("cleaned dataset %s: %d documents, %d segments, %d keyword entries, %d app joins%s", dataset_id,
                 documents, segments, keywords, joins, " and its row" if rows else "")
