"""``document-indexer``: documents go from waiting to completed (or error), split into segments,
their keywords in the index where ``search`` finds them."""

import pytest
from sqlalchemy import func, select

from dify_events.consumers.domain import Document, DocumentKeyword, DocumentSegment, keywords, search
from dify_events.consumers.errors import MessageRejected
from dify_events.consumers.handlers.document_indexer import EMPTY, NO_WORDS, index_documents
from dify_events.consumers.handlers.errors import DocumentNotFound, TenantMismatch
from dify_events.schemas.events import DocumentIndexCreated

from .rows import AVRO_TEXT, KAFKA_TEXT, dataset, document


def index_created(*document_ids, dataset_id="ds1", tenant_id="t1") -> DocumentIndexCreated:
    return DocumentIndexCreated(tenant_id=tenant_id, dataset_id=dataset_id, document_ids=document_ids)


def segments_of(db, document_id) -> list[tuple]:
    with db() as s:
        return [(g.id, g.position, g.content) for g in s.scalars(
            select(DocumentSegment).where(DocumentSegment.document_id == document_id)
            .order_by(DocumentSegment.position))]


def test_waiting_documents_are_indexed_and_found(handle, add, db):
    # Given two waiting documents in a dataset, written by the application
    add(dataset(), document("doc1", content=KAFKA_TEXT), document("doc2", content=AVRO_TEXT, position=2))
    with db() as s:
        assert s.get(Document, "doc1").indexing_status == "waiting"
        assert search(s, "ds1", "kafka") == []
    # When their index request is handled
    handle(index_documents, index_created("doc1", "doc2"))
    # Then both are completed, with their segments and word counts
    with db() as s:
        docs = {d.id: d for d in s.scalars(select(Document))}
        for d in docs.values():
            assert (d.indexing_status, d.error) == ("completed", None)
            assert d.processing_started_at <= d.completed_at and d.indexing_latency >= 0
        assert docs["doc1"].segment_count == 1 and docs["doc1"].word_count == 22
        # and search finds each by its own words, and neither by words of neither
        assert search(s, "ds1", "consumer offsets") == ["doc1"]
        assert search(s, "ds1", "schema") == ["doc2"]
        assert search(s, None, "partitioned topics") == ["doc1"]
        assert search(s, "ds1", "zookeeper") == []
    assert segments_of(db, "doc1")[0][2] == " ".join(KAFKA_TEXT.split("\n\n")[0].split()) + "\n\n" + \
        " ".join(KAFKA_TEXT.split("\n\n")[1].split())


def test_a_long_document_is_split_into_segments_each_indexed(handle, add, db):
    # Given a document of many paragraphs, one with a rare word near the end
    paragraphs = [f"Paragraph {i} talks about brokers, replicas and leaders at some length." * 3 for i in range(30)]
    paragraphs[27] += " Quokka."
    add(dataset(), document("doc1", content="\n\n".join(paragraphs)))
    # When it is indexed
    handle(index_documents, index_created("doc1"))
    # Then it has several segments, each within the limit, in order, and the rare word finds it
    segments = segments_of(db, "doc1")
    assert len(segments) > 5 and [p for _, p, _ in segments] == list(range(1, len(segments) + 1))
    assert all(len(content) <= 500 for _, _, content in segments)
    with db() as s:
        assert search(s, "ds1", "quokka") == ["doc1"]
        quokka_segment = s.scalar(select(DocumentKeyword.segment_id).where(DocumentKeyword.keyword == "quokka"))
    assert "Quokka" in dict((i, c) for i, _, c in segments)[quokka_segment]


def test_empty_or_wordless_documents_end_in_error_with_the_reason(handle, add, db):
    # Given a document with no text, one of blanks, and one of punctuation and common words
    add(dataset(), document("empty", content=None), document("blank", content="  \n\n  "),
        document("wordless", content="... !!! the and of ???"), document("ok", content=AVRO_TEXT))
    # When they are indexed together with a good one
    handle(index_documents, index_created("empty", "blank", "wordless", "ok"))
    # Then each bad one is in error with the reason and left nothing in the index; the good one completed
    with db() as s:
        docs = {d.id: d for d in s.scalars(select(Document))}
        assert {k: (d.indexing_status, d.error) for k, d in docs.items()} == {
            "empty": ("error", EMPTY), "blank": ("error", EMPTY), "wordless": ("error", NO_WORDS),
            "ok": ("completed", None)}
        assert set(s.scalars(select(DocumentSegment.document_id))) == {"ok"}


def test_indexing_twice_leaves_the_same_index(handle, add, db):
    # Given an indexed document
    add(dataset(), document("doc1"))
    event = index_created("doc1")
    handle(index_documents, event)
    first = segments_of(db, "doc1")
    # When the same request is handled again
    handle(index_documents, event)
    # Then the segments and keyword entries are the same rows, not twice as many
    assert segments_of(db, "doc1") == first
    with db() as s:
        assert s.scalar(select(func.count()).select_from(DocumentKeyword)) == sum(len(keywords(c)) for _, _, c in first)


def test_a_document_in_error_is_indexed_again_once_fixed(handle, add, db):
    # Given a document that failed for want of text
    add(dataset(), document("doc1", content=""))
    handle(index_documents, index_created("doc1"))
    # When the application gives it text and asks again (status back to waiting, as Dify's retry does)
    with db() as s, s.begin():
        doc = s.get(Document, "doc1")
        doc.content, doc.indexing_status = AVRO_TEXT, "waiting"
    handle(index_documents, index_created("doc1"))
    # Then it is completed, its error cleared, and found
    with db() as s:
        doc = s.get(Document, "doc1")
        assert (doc.indexing_status, doc.error, doc.stopped_at) == ("completed", None, None)
        assert search(s, "ds1", "avro") == ["doc1"]


def test_a_gone_dataset_means_nothing_to_index(handle, add, db):
    # Given a document whose dataset was deleted after the request (its cleaner has not run yet)
    add(document("doc1"))
    # When the request is handled
    handle(index_documents, index_created("doc1"))
    # Then it did nothing and raised nothing
    with db() as s:
        assert s.get(Document, "doc1").indexing_status == "waiting"
        assert s.scalar(select(func.count()).select_from(DocumentSegment)) == 0


def test_gone_documents_are_skipped_while_the_others_are_indexed(handle, add, db):
    # Given one of two requested documents deleted before the indexer got to it
    add(dataset(), document("doc1"))
    # When the request is handled
    handle(index_documents, index_created("doc1", "deleted-doc"))
    # Then the one left is indexed
    with db() as s:
        assert s.get(Document, "doc1").indexing_status == "completed"


def test_a_request_for_no_existing_document_is_rejected_not_retried(handle, add, db):
    # Given a dataset without the requested documents (and one of them in another dataset)
    add(dataset(), dataset("ds2"), document("elsewhere", dataset_id="ds2"))
    # When the request is handled
    # Then it raises DocumentNotFound, a MessageRejected (dead-lettered at once), naming the ids
    with pytest.raises(DocumentNotFound, match="nope.*elsewhere") as raised:
        handle(index_documents, index_created("nope", "elsewhere"))
    assert isinstance(raised.value, MessageRejected)
    # and the transaction left nothing
    with db() as s:
        assert s.get(Document, "elsewhere").indexing_status == "waiting"


def test_a_request_from_another_tenant_is_rejected(handle, add):
    # Given a dataset of tenant t1
    add(dataset(), document("doc1"))
    # When tenant t2 asks to index its document
    # Then the request is rejected
    with pytest.raises(TenantMismatch, match="t1.*t2"):
        handle(index_documents, index_created("doc1", tenant_id="t2"))
