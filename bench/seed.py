"""A seed handler under load: provider usage (``consumers/handlers/provider_usage.py``), Dify's
charge of a hosted provider's quota for every answered message.

``fill`` publishes ``MessageWasCreated`` events of chat apps (``TENANTS`` tenants, ``KEYS``
conversations, a trial quota in tokens) onto ``<prefix>.message``; ``prepare`` makes the handler's
tables in a database and the rows it charges: per tenant the hosted ``openai`` row (a trial quota
that never runs out) and the tenant's own-key row under the full provider id. So every event does
the handler's whole work: claim the message id, add its tokens to the tenant's statistics
(insert-or-ignore, then update), stamp ``last_used`` (throttled: an UPDATE that mostly matches
nothing), charge the quota (an UPDATE of the hosted row).
"""

from __future__ import annotations

import uuid

from sqlalchemy import insert

from dify_events.consumers.domain import Provider
from dify_events.consumers.domain.provider import SYSTEM
from dify_events.consumers.handlers.provider_usage import group as provider_usage
from dify_events.consumers.idempotency import make_engine
from dify_events.producers.producer import EventProducer
from dify_events.schemas.events import MessageWasCreated
from dify_events.schemas.settings import Settings

from .common import KEYS

TENANTS = 100
FULL_ID = "langgenius/openai/openai"
WHAT = "a batch handler: claims, usage upsert, quotas charged under row locks"


def tenant(i: int) -> str:
    return str(uuid.UUID(int=(1 << 64) + i % TENANTS))


def fill(bootstrap: str, prefix: str, count: int) -> None:
    """``count`` answered messages onto ``<prefix>.message``, keyed by conversation."""
    conversations = [str(uuid.UUID(int=(2 << 64) + i)) for i in range(KEYS)]
    with EventProducer({"linger.ms": 20}, settings=Settings(bootstrap_servers=bootstrap, topic_prefix=prefix)) as p:
        for i in range(count):
            p.publish(MessageWasCreated(
                tenant_id=tenant(i), message_id=str(uuid.uuid4()), conversation_id=conversations[i % KEYS],
                app_id=str(uuid.UUID(int=(3 << 64) + i % TENANTS)), provider_name=FULL_ID, model_name="gpt-4o",
                message_tokens=100 + i % 50, answer_tokens=50, total_tokens=150 + i % 50, app_mode="chat",
                quota_type="trial", quota_unit="tokens"))
        assert p.flush(120) == 0


def prepare(url: str) -> None:
    """The handler's tables, empty, in ``url``, with the provider rows every tenant's messages charge."""
    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            for table in reversed(provider_usage.tables):
                table.drop(conn, checkfirst=True)
            for table in provider_usage.tables:
                table.create(conn)
            conn.execute(insert(Provider), [
                row for i in range(TENANTS) for row in (
                    dict(id=str(uuid.uuid4()), tenant_id=tenant(i), provider_name="openai", provider_type=SYSTEM,
                         quota_type="trial", quota_limit=10**15, quota_used=0),
                    dict(id=str(uuid.uuid4()), tenant_id=tenant(i), provider_name=FULL_ID, provider_type="custom",
                         quota_type=None, quota_limit=None, quota_used=0))])
    finally:
        engine.dispose()
