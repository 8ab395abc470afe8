"""The keyword index: keywords, segments, and search over indexed rows."""

from sqlalchemy import func, select

from dify_events.consumers.domain import DocumentKeyword, DocumentSegment, keywords, search, split_segments, unindex
from dify_events.consumers.domain.search import MAX_KEYWORD_LENGTH, word_count


def test_keywords_fold_case_drop_common_words_and_pair_cjk_characters():
    # Given text in English, with punctuation and common words, and in Chinese
    text = "The Kafka CONSUMER, and the consumer's offsets! 向量索引"
    # When its keywords are taken
    found = keywords(text)
    # Then words are case-folded and unique, common words and single letters left out, and
    # Chinese cut into neighbouring pairs
    assert found == ["kafka", "consumer", "offsets", "向量", "量索", "索引"]


def test_a_long_word_is_cut_to_the_keyword_length():
    assert keywords("x" * 100) == ["x" * MAX_KEYWORD_LENGTH]


def test_word_count_counts_each_cjk_character():
    assert word_count("hello 世界, you") == 4


def test_segments_keep_paragraphs_under_the_limit_and_lose_no_word():
    # Given two short paragraphs and a long one of many sentences
    text = "First paragraph.\n\nSecond one.\n\n" + " ".join(f"Sentence number {i} is here." for i in range(80))
    # When it is split into segments of at most 300 characters
    segments = split_segments(text, max_chars=300)
    # Then the short paragraphs share a segment, no segment is too long, and every word is kept in order
    assert segments[0] == "First paragraph.\n\nSecond one."
    assert all(len(s) <= 300 for s in segments)
    assert " ".join(" ".join(segments).split()) == " ".join(text.split())


def test_a_word_longer_than_a_segment_is_cut():
    assert split_segments("y" * 1200, max_chars=500) == ["y" * 500, "y" * 500, "y" * 200]


def _index(session, dataset_id, document_id, text):
    segment_id = f"{document_id}-s1"
    session.add(DocumentSegment(id=segment_id, tenant_id="t1", dataset_id=dataset_id, document_id=document_id,
                                position=1, content=text, word_count=word_count(text), index_node_id=segment_id))
    session.add_all(DocumentKeyword(segment_id=segment_id, keyword=k, dataset_id=dataset_id, document_id=document_id)
                    for k in keywords(text))


def test_search_finds_documents_holding_every_query_word(db):
    # Given three documents indexed in two datasets
    with db() as s, s.begin():
        _index(s, "ds1", "doc1", "Kafka consumer groups commit offsets")
        _index(s, "ds1", "doc2", "A Kafka producer batches records")
        _index(s, "ds2", "doc3", "Consumer lag of a Kafka group")
    with db() as s:
        # When queries are run
        # Then a document matches when it holds every keyword of the query, in any case and order
        assert search(s, "ds1", "kafka") == ["doc1", "doc2"]
        assert search(s, "ds1", "CONSUMER kafka") == ["doc1"]
        assert search(s, None, "consumer kafka") == ["doc1", "doc3"]
        assert search(s, "ds2", "producer") == []
        # and a query of common words only finds nothing
        assert search(s, None, "the and of") == []


def test_unindex_removes_a_document_or_a_dataset(db):
    # Given three indexed documents in two datasets
    with db() as s, s.begin():
        _index(s, "ds1", "doc1", "Kafka consumer")
        _index(s, "ds1", "doc2", "Kafka producer")
        _index(s, "ds2", "doc3", "Kafka broker")
    # When one document, then one dataset, leave the index
    with db() as s, s.begin():
        assert unindex(s, document_id="doc1") == (1, 2)
    with db() as s:
        assert search(s, None, "kafka") == ["doc2", "doc3"]
    with db() as s, s.begin():
        assert unindex(s, dataset_id="ds2") == (1, 2)
    # Then only the remaining document is found, and only its rows are left
    with db() as s:
        assert search(s, None, "kafka") == ["doc2"]
        assert s.scalar(select(func.count()).select_from(DocumentKeyword)) == 2
