"""Failures of the seed's handlers that retrying cannot fix: dead-lettered at once.

Everything else a handler raises (a database error, a lost connection, a unique-key race) is
retried by the runtime with backoff, then dead-lettered when the attempts are spent.
"""

from __future__ import annotations

from dify_events.consumers import MessageRejected


class DocumentNotFound(MessageRejected):
    """None of the documents an index request names exists in its dataset: a request for documents
    that never existed, or that were all deleted before the indexer reached them."""


class TenantMismatch(MessageRejected):
    """The event's tenant is not the tenant that owns the row it names."""
