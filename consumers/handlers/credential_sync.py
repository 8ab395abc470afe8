"""``credential-sync``: a new workspace's credentials are queued for the plugin manager.

Dify: ``queue_credential_sync_when_tenant_created`` (on ``tenant_was_created``), which pushes a
task (``task_id``, ``workspace_id``, ``retry_count`` 0, ``created_at``, ``source``: the signal's
``source=``, else ``tenant_created``) onto the Redis list ``enterprise:workspace:sync:queue`` for
the enterprise backend. Here the queue is the ``workspace_sync_tasks`` table.

Differences on purpose: Dify's receiver returns unless the deployment is the enterprise edition;
here that choice is whether the group is deployed at all (leave it out of the chart's ``groups``).
The task id is derived from the event id, not random, so a redelivery queues nothing twice.
"""

from __future__ import annotations

import uuid

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import DOMAIN, WorkspaceSyncTask, insert_ignore
from dify_events.schemas.events import TenantWasCreated

group = register(ConsumerGroup("credential-sync", tables=DOMAIN))
TASK_IDS = uuid.UUID("0c6d3f1a-6b7e-4f0a-9d4c-2e8b5a7f1c39")


@group.handler(TenantWasCreated)
def queue_credential_sync(event: TenantWasCreated, ctx: HandlerContext) -> None:
    task_id = str(uuid.uuid5(TASK_IDS, event.event_id))
    queued = insert_ignore(ctx.session, WorkspaceSyncTask, dict(
        task_id=task_id, workspace_id=event.tenant_id, source=event.source, retry_count=0,
        created_at=event.occurred_at), conflict=("task_id",))
    ctx.log.info("credential sync of workspace %s %s (source %s)", event.tenant_id,
                 "queued" if queued else "was queued already", event.source)
