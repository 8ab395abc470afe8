"""The consumer runtime: consumer groups of handlers, run with retries, dead letters and idempotency.

What a handler module needs, in one import::

    from dify_events.consumers import ConsumerGroup, HandlerContext, MessageRejected, register

The runner (``consumers.runner.GroupRunner``), the pipeline's steps (``consumers.pipeline``) and
the rest stay in their modules. These imports are light (no SQLAlchemy, no schemas): every
``consumers.*`` import, the ``events`` command line's included, runs this file.
"""

from __future__ import annotations

from .context import BatchContext, HandlerContext, MessageMeta, NoTransaction
from .errors import GroupDefinitionError, MessageRejected
from .group import ConsumerGroup
from .registry import register

__all__ = ["BatchContext", "ConsumerGroup", "GroupDefinitionError", "HandlerContext", "MessageMeta", "MessageRejected",
           "NoTransaction", "register"]
