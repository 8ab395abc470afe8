"""Imported by a demo's group processes (``EVENTS_HANDLER_MODULES=tests.demo.failing_indexer``):
the document indexer rejects one index request, ``FAIL_INDEX_EVENT_ID``, the first time it meets
it, as an unforeseen error would; the marker file ``FAIL_INDEX_MARKER`` says it happened (across
processes and restarts)."""

from __future__ import annotations

import os

from dify_events.consumers.errors import MessageRejected
from dify_events.consumers.handlers.document_indexer import group
from dify_events.schemas.events import DocumentIndexCreated

EVENT_ID = os.environ["FAIL_INDEX_EVENT_ID"]
MARKER = os.environ["FAIL_INDEX_MARKER"]

handler = group.handlers[DocumentIndexCreated.event_type]
index = handler.fn


def index_unless_first_time(event, ctx):
    if event.event_id == EVENT_ID:
        try:
            os.close(os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            raise MessageRejected(f"rejected once on purpose: {EVENT_ID}")
    return index(event, ctx)


object.__setattr__(handler, "fn", index_unless_first_time)  # a frozen dataclass; the runner calls handler.fn
