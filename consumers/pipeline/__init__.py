"""The per-message pipeline, in the order a message goes through it.

    DeadLetters   every final failure below ends here: published to <prefix>.dlq.<group>, acknowledged
    Decode        headers + Avro bytes -> the typed event; idempotency key; failures are final
    Tracing       continue the W3C trace context; a CONSUMER span (only when tracing is configured)
    Retries       attempts with exponential backoff + jitter; dependency outages pause the group
    Idempotency   per attempt, one transaction: claim (group, idempotency key), then the handler
    TimeLimit     interrupt a handler past its time_limit_s (only for handlers that set one)
    -> the handler: handle(event, ctx)

Each step is a small class in a module of its own name (``retries.py`` -> ``Retries``); a step's
code before ``call_next`` runs top-down, after it bottom-up. Events of types the group does not
handle never enter the pipeline: the poll loop passes them over by their ``event-type`` header.
"""

from __future__ import annotations

from functools import partial

from ..context import HandlerContext, MessageMeta
from ..job import HANDLED, Job
from .dead_letters import DeadLetters
from .decode import Decode
from .idempotency import Idempotency
from .retries import Retries
from .step import CallNext, Counters, Resources, Step
from .time_limit import TimeLimit
from .tracing import Tracing

DEFAULT_PIPELINE: list[type[Step]] = [DeadLetters, Decode, Tracing, Retries, Idempotency, TimeLimit]

__all__ = ["DEFAULT_PIPELINE", "CallNext", "Counters", "DeadLetters", "Decode", "Idempotency", "Resources",
           "Retries", "Step", "TimeLimit", "Tracing", "build", "call_handler"]


def message_meta(job: Job) -> MessageMeta:
    msg = job.message
    return MessageMeta(job.lane.topic, job.lane.partition, job.offset, msg.key(), job.headers, msg.timestamp()[1],
                       job.prior_attempts + job.attempts)


def call_handler(job: Job) -> str:
    """The end of the chain: ``handler(event, ctx)``."""
    handler = job.handler
    ctx = HandlerContext(session=job.session, message=partial(message_meta, job), group=handler.group.name,
                         handler=handler.name, event_id=job.event.event_id, event_type=handler.event_type,
                         reprocess=job.reprocess)
    handler.fn(job.event, ctx)
    return HANDLED


def build(resources: Resources, steps: list[type[Step]] | tuple[type[Step], ...]) -> tuple[CallNext, list[Step]]:
    """Chains the steps (inactive ones left out) around ``call_handler``; returns the chain's
    entry and the step objects (to close them when the group stops)."""
    instances = [cls(resources) for cls in steps]
    chain: CallNext = call_handler
    for step in reversed(instances):
        if step.active:
            chain = partial(step.process, call_next=chain)
    return chain, instances
