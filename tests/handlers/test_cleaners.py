"""``dataset-cleaner`` and ``document-cleaner``: nothing of a deleted dataset or document remains,
and the index no longer finds it."""

from sqlalchemy import delete, func, select

from dify_events.consumers.domain import AppDatasetJoin, Dataset, Document, DocumentKeyword, DocumentSegment, search
from dify_events.consumers.handlers.dataset_cleaner import clean_dataset
from dify_events.consumers.handlers.document_cleaner import clean_document
from dify_events.consumers.handlers.document_indexer import index_documents
from dify_events.schemas.events import DatasetWasDeleted, DocumentIndexCreated, DocumentWasDeleted

from .rows import AVRO_TEXT, KAFKA_TEXT, dataset, document


def count(s, model, *where) -> int:
    return s.scalar(select(func.count()).select_from(model).where(*where))


def two_indexed_datasets(add, handle):
    add(dataset("ds1"), dataset("ds2"),
        document("doc1", "ds1", KAFKA_TEXT), document("doc2", "ds1", AVRO_TEXT, position=2),
        document("doc3", "ds2", KAFKA_TEXT),
        AppDatasetJoin(app_id="a1", dataset_id="ds1"), AppDatasetJoin(app_id="a1", dataset_id="ds2"))
    handle(index_documents, DocumentIndexCreated(tenant_id="t1", dataset_id="ds1", document_ids=("doc1", "doc2")),
           DocumentIndexCreated(tenant_id="t1", dataset_id="ds2", document_ids=("doc3",)))


def test_a_deleted_dataset_leaves_nothing_and_is_not_found(handle, add, db):
    # Given two indexed datasets joined to an app
    two_indexed_datasets(add, handle)
    with db() as s:
        assert search(s, None, "kafka") == ["doc1", "doc3"]
    # When the application deletes ds1 and its dataset_was_deleted is handled twice
    with db() as s, s.begin():
        s.execute(delete(Dataset).where(Dataset.id == "ds1"))
    event = DatasetWasDeleted(tenant_id="t1", dataset_id="ds1", indexing_technique="economy", doc_form="text_model")
    handle(clean_dataset, event, event)
    # Then no document, segment, keyword entry or join of ds1 remains, and search finds only ds2's
    with db() as s:
        for model in (Document, DocumentSegment, DocumentKeyword, AppDatasetJoin):
            assert count(s, model, model.dataset_id == "ds1") == 0, model.__tablename__
        assert search(s, None, "kafka") == ["doc3"]
        # and ds2 is untouched
        assert count(s, Document, Document.dataset_id == "ds2") == 1
        assert count(s, AppDatasetJoin, AppDatasetJoin.dataset_id == "ds2") == 1
        assert count(s, DocumentKeyword, DocumentKeyword.dataset_id == "ds2") > 0


def test_a_dataset_row_is_the_applications_and_one_without_doc_form_is_skipped(handle, add, db):
    # Given a dataset whose row the application did not delete (yet), and one without a doc_form
    add(dataset("ds1"), document("doc1"), dataset("ds2"), document("doc2", "ds2"))
    # When their deletions are handled
    handle(clean_dataset, DatasetWasDeleted(tenant_id="t1", dataset_id="ds1", indexing_technique="economy",
                                            doc_form="text_model"),
           DatasetWasDeleted(tenant_id="t1", dataset_id="ds2", indexing_technique="economy"))
    # Then ds1's documents are gone and its row is left (Dify's task leaves it), ds2 is untouched
    with db() as s:
        assert s.get(Dataset, "ds1") is not None and count(s, Document, Document.dataset_id == "ds1") == 0
        assert count(s, Document, Document.dataset_id == "ds2") == 1


def test_a_deleted_document_leaves_the_index(handle, add, db):
    # Given two indexed documents of a dataset that share the word "kafka"... one of them
    two_indexed_datasets(add, handle)
    with db() as s:
        assert search(s, "ds1", "schema") == ["doc2"]
        assert search(s, "ds1", "kafka") == ["doc1"]
    # When the application deletes doc1 and its document_was_deleted is handled twice
    with db() as s, s.begin():
        s.execute(delete(Document).where(Document.id == "doc1"))
    event = DocumentWasDeleted(tenant_id="t1", dataset_id="ds1", document_id="doc1")
    handle(clean_document, event, event)
    # Then doc1 has no segment or keyword entry left and is not found, while doc2 still is
    with db() as s:
        assert count(s, DocumentSegment, DocumentSegment.document_id == "doc1") == 0
        assert count(s, DocumentKeyword, DocumentKeyword.document_id == "doc1") == 0
        assert search(s, "ds1", "kafka") == []
        assert search(s, "ds1", "schema") == ["doc2"]
        assert search(s, "ds2", "kafka") == ["doc3"]
