"""``feedback-telemetry``: each rating of a message is counted.

Dify: the enterprise telemetry receiver of ``feedback_was_created``, which emits the metric-only
event ``dify.feedback.created`` (message, tenant, app, conversation, user, rating, source) and
increments the ``FEEDBACK`` counter labelled with tenant, app and rating. Here each event is a
``feedback_telemetry`` row (the counter is their count per tenant, app and rating) and one log
record with the same attributes.

Difference on purpose: the feedback's text is not carried by the event nor logged (Dify logs it
only when its exporter's ``include_content`` is on); Dify's receiver returns when no enterprise
exporter is configured, here when the group is not deployed. Naturally idempotent: one row per event.
"""

from __future__ import annotations

from dify_events.consumers import ConsumerGroup, HandlerContext, register
from dify_events.consumers.domain import DOMAIN, FeedbackTelemetry, insert_ignore
from dify_events.schemas.events import FeedbackWasCreated

group = register(ConsumerGroup("feedback-telemetry", tables=DOMAIN))


@group.handler(FeedbackWasCreated)
def count_feedback(event: FeedbackWasCreated, ctx: HandlerContext) -> None:
    insert_ignore(ctx.session, FeedbackTelemetry, dict(
        event_id=event.event_id, tenant_id=event.tenant_id, app_id=event.app_id, message_id=event.message_id,
        rating=event.rating, from_source=event.from_source, occurred_at=event.occurred_at), conflict=("event_id",))
    ctx.log.info("dify.feedback.created message=%s app=%s conversation=%s user=%s rating=%s source=%s",
                 event.message_id, event.app_id, event.conversation_id,
                 event.from_end_user_id or event.from_account_id, event.rating, event.from_source)
