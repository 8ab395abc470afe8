"""The keyword index: how text becomes segments and keywords, and how a query finds documents.

A keyword is a word of two or more letters or digits (NFKC-normalised, case-folded, common
English words left out), or, in Chinese, Japanese and Korean text, where words are not
separated, each pair of neighbouring characters (a lone character stands for itself). A query is
cut the same way; a document matches when it holds every keyword of the query, and documents
with more matching segments come first. Dify's economy index keeps the same idea (its keyword
table per dataset, filled with jieba for Chinese) as one JSON blob per dataset.
"""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .base import rowcount
from .dataset import DocumentKeyword, DocumentSegment

MAX_KEYWORD_LENGTH = 64
SEGMENT_MAX_CHARS = 500
STOP_WORDS = frozenset(
    "a an and are as at be but by for from has have in is it its of on or that the this to was were will with".split())

_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+)")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？；;])\s*")


def keywords(text: str) -> list[str]:
    """The distinct keywords of ``text``, in order of first appearance."""
    found: dict[str, None] = {}
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).casefold()):
        for part in _CJK.split(word):
            if not part:
                continue
            if _CJK.fullmatch(part):
                grams = [part] if len(part) == 1 else [part[i:i + 2] for i in range(len(part) - 1)]
                found.update(dict.fromkeys(grams))
            elif len(part) >= 2 and part not in STOP_WORDS:
                found[part[:MAX_KEYWORD_LENGTH]] = None
    return list(found)


def word_count(text: str) -> int:
    """Words, counting each Chinese, Japanese or Korean character as one."""
    count = 0
    for word in _WORD.findall(text):
        for part in _CJK.split(word):
            count += len(part) if _CJK.fullmatch(part) else (1 if part else 0)
    return count


def split_segments(text: str, max_chars: int = SEGMENT_MAX_CHARS) -> list[str]:
    """Cuts text into segments of at most ``max_chars``: paragraphs (blank-line separated),
    neighbouring short ones joined, long ones cut at sentence ends, then at spaces, then hard."""
    pieces: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = " ".join(paragraph.split())
        if paragraph:
            pieces.extend(_cut(paragraph, max_chars))
    segments: list[str] = []
    for piece in pieces:
        if segments and len(segments[-1]) + 2 + len(piece) <= max_chars:
            segments[-1] = f"{segments[-1]}\n\n{piece}"
        else:
            segments.append(piece)
    return segments


def _cut(paragraph: str, max_chars: int) -> list[str]:
    if len(paragraph) <= max_chars:
        return [paragraph]
    out: list[str] = []
    current = ""
    for unit in _units(paragraph, max_chars):
        if current and len(current) + 1 + len(unit) > max_chars:
            out.append(current)
            current = unit
        else:
            current = f"{current} {unit}" if current else unit
    if current:
        out.append(current)
    return out


def _units(paragraph: str, max_chars: int) -> list[str]:
    """Sentences; a sentence longer than a segment split into words; a word longer, into slices."""
    units: list[str] = []
    for sentence in filter(None, (s.strip() for s in _SENTENCE_END.split(paragraph))):
        if len(sentence) <= max_chars:
            units.append(sentence)
            continue
        for word in sentence.split():
            units.extend(word[i:i + max_chars] for i in range(0, len(word), max_chars))
    return units


def search(session: Session, dataset_id: str | None, query: str, *, limit: int | None = None) -> list[str]:
    """Ids of the documents (of one dataset, or of all with ``None``) holding every keyword of
    ``query``, best first (most matching segment keywords), then by id. A query with no
    keywords finds nothing."""
    terms = keywords(query)
    if not terms:
        return []
    hits = func.count().label("hits")
    stmt = (select(DocumentKeyword.document_id, hits)
            .where(DocumentKeyword.keyword.in_(terms))
            .group_by(DocumentKeyword.document_id)
            .having(func.count(DocumentKeyword.keyword.distinct()) == len(terms))
            .order_by(hits.desc(), DocumentKeyword.document_id))
    if dataset_id is not None:
        stmt = stmt.where(DocumentKeyword.dataset_id == dataset_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [row.document_id for row in session.execute(stmt)]


def unindex(session: Session, *, document_id: str | None = None, dataset_id: str | None = None) -> tuple[int, int]:
    """Removes the segments and keyword entries of one document, or of every document of a
    dataset: ``(segments, keyword entries)`` deleted."""
    if (document_id is None) == (dataset_id is None):
        raise ValueError("unindex takes a document_id or a dataset_id")
    if document_id is not None:
        kw, seg = DocumentKeyword.document_id == document_id, DocumentSegment.document_id == document_id
    else:
        kw, seg = DocumentKeyword.dataset_id == dataset_id, DocumentSegment.dataset_id == dataset_id
    keywords_deleted = rowcount(session.execute(delete(DocumentKeyword).where(kw)))
    segments_deleted = rowcount(session.execute(delete(DocumentSegment).where(seg)))
    return segments_deleted, keywords_deleted
