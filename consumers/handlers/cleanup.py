"""What Dify's ``clean_dataset_task`` and ``clean_document_task`` delete besides the index: image
files named in segments' content, segment attachments (bindings and their files), uploaded files.

The rows go; the storage objects behind ``upload_files.key`` are outside the domain's slice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session

from dify_events.consumers.domain import DocumentSegment, SegmentAttachmentBinding, UploadFile, rowcount

_IMAGE_LINK = re.compile(r"!\[image\]\((https?://.*?(file-preview|image-preview))\)")


def image_upload_file_ids(content: str) -> list[str]:
    """Ids of the uploaded images a segment's markdown shows (Dify's ``get_image_upload_file_ids``:
    ``![image](https://host/files/<id>/file-preview...)`` or ``.../image-preview``)."""
    found = []
    for url, kind in _IMAGE_LINK.findall(content):
        match = re.search(rf"files/([^/]+)/{kind}", url)
        if match:
            found.append(match.group(1))
    return found


def delete_segment_images(session: Session, where: ColumnElement[bool]) -> int:
    """Deletes the uploaded images shown in the content of the segments ``where`` selects."""
    ids = [i for content in session.scalars(select(DocumentSegment.content).where(where))
           for i in image_upload_file_ids(content)]
    return delete_files(session, ids)


def delete_attachments(session: Session, *where: ColumnElement[bool]) -> int:
    """Deletes the attachment bindings ``where`` selects and the files they bind."""
    bindings = session.execute(select(SegmentAttachmentBinding.id, SegmentAttachmentBinding.attachment_id)
                               .where(*where)).all()
    delete_files(session, [attachment for _, attachment in bindings])
    if bindings:
        session.execute(delete(SegmentAttachmentBinding).where(
            SegmentAttachmentBinding.id.in_([binding for binding, _ in bindings])))
    return len(bindings)


def delete_files(session: Session, ids: Iterable[str | None]) -> int:
    ids = sorted({i for i in ids if i})
    if not ids:
        return 0
    return rowcount(session.execute(delete(UploadFile).where(UploadFile.id.in_(ids))))
