"""``workflow-schedule-sync``: a published workflow app's schedule plan follows its schedule node.

Dify: ``sync_workflow_schedule_when_app_published`` (on ``app_published_workflow_was_updated``)
with ``ScheduleService``. For workflow apps only: the first ``trigger-schedule`` node of the
graph, in ``cron`` mode or ``visual`` mode (hourly, daily, weekly, monthly, converted to cron as
Dify does), gives the app's one ``workflow_schedule_plans`` row, created or updated with its next
run time in the node's time zone; a graph without one deletes the plan.

Difference on purpose: an invalid schedule node (Dify's ``ScheduleConfigError``, which fails the
publish request in Dify because the receiver runs inside it) is rejected here as a
``MessageRejected`` and dead-lettered: the publish already happened, and retrying cannot fix it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from sqlalchemy import delete, select

from dify_events.consumers import ConsumerGroup, HandlerContext, MessageRejected, register
from dify_events.consumers.domain import DOMAIN, WorkflowSchedulePlan, insert_ignore, rowcount
from dify_events.consumers.domain.trigger import SCHEDULE
from dify_events.schemas.events import AppPublishedWorkflowWasUpdated

from .trigger_nodes import nodes, of_workflow_app

group = register(ConsumerGroup("workflow-schedule-sync", tables=DOMAIN))
WEEKDAYS = {"sun": "0", "mon": "1", "tue": "2", "wed": "3", "thu": "4", "fri": "5", "sat": "6"}


class ScheduleConfigError(MessageRejected):
    """The schedule node's settings do not make a cron plan (Dify's ``ScheduleConfigError``)."""


@group.handler(AppPublishedWorkflowWasUpdated)
def sync_schedule_plan(event: AppPublishedWorkflowWasUpdated, ctx: HandlerContext) -> None:
    if not of_workflow_app(event):
        return
    session = ctx.session
    schedule = nodes(event, SCHEDULE)
    if not schedule:
        gone = rowcount(session.execute(delete(WorkflowSchedulePlan).where(
            WorkflowSchedulePlan.tenant_id == event.tenant_id, WorkflowSchedulePlan.app_id == event.app_id)))
        if gone:
            ctx.log.info("app %s has no schedule node any more: plan removed", event.app_id)
        return
    node_id, data = schedule[0]  # Dify: the first schedule node; more are not supported
    cron, timezone = schedule_config(data)
    values = dict(node_id=node_id, cron_expression=cron, timezone=timezone,
                  next_run_at=next_run_at(cron, timezone, event.occurred_at))
    insert_ignore(session, WorkflowSchedulePlan, dict(tenant_id=event.tenant_id, app_id=event.app_id, **values),
                  conflict=("app_id",))
    plan = session.scalars(select(WorkflowSchedulePlan).where(WorkflowSchedulePlan.app_id == event.app_id)).one()
    for name, value in values.items():
        setattr(plan, name, value)
    ctx.log.info("app %s runs on schedule %r (%s), next at %s", event.app_id, cron, timezone, plan.next_run_at)


def schedule_config(data: dict[str, Any]) -> tuple[str, str]:
    """``(cron expression, time zone)`` of a schedule node's data (Dify's ``extract_schedule_config``)."""
    mode, timezone = data.get("mode", "visual"), data.get("timezone", "UTC")
    if mode == "cron":
        cron = data.get("cron_expression")
        if not cron:
            raise ScheduleConfigError("Cron expression is required for cron mode")
    elif mode == "visual":
        cron = visual_to_cron(data.get("frequency"), data.get("visual_config") or {})
    else:
        raise ScheduleConfigError(f"Invalid schedule mode: {mode}")
    if not croniter.is_valid(cron):
        raise ScheduleConfigError(f"Invalid cron expression: {cron!r}")
    return cron, timezone


def visual_to_cron(frequency: str | None, config: dict[str, Any]) -> str:
    """Dify's ``ScheduleService.visual_to_cron``."""
    if frequency == "hourly":
        if config.get("on_minute") is None:
            raise ScheduleConfigError("on_minute is required for hourly schedules")
        return f"{config['on_minute']} * * * *"
    if frequency not in ("daily", "weekly", "monthly"):
        raise ScheduleConfigError(f"Unsupported frequency: {frequency}")
    if not config.get("time"):
        raise ScheduleConfigError(f"time is required for {frequency} schedules")
    hour, minute = to_24h(config["time"])
    if frequency == "daily":
        return f"{minute} {hour} * * *"
    if frequency == "weekly":
        if not config.get("weekdays") or any(day not in WEEKDAYS for day in config["weekdays"]):
            raise ScheduleConfigError("Weekdays are required for weekly schedules")
        return f"{minute} {hour} * * {','.join(sorted(WEEKDAYS[day] for day in config['weekdays']))}"
    days = config.get("monthly_days") or []
    if not days:
        raise ScheduleConfigError("Monthly days are required for monthly schedules")
    numbers = [str(d) for d in sorted({d for d in days if d != "last"})] + (["L"] if "last" in days else [])
    return f"{minute} {hour} {','.join(numbers)} * *"


def to_24h(text: str) -> tuple[int, int]:
    """``"2:45 PM"`` -> ``(14, 45)`` (Dify's ``convert_12h_to_24h``)."""
    try:
        clock, period = text.strip().split()
        hour, minute = (int(part) for part in clock.split(":"))
    except ValueError:
        raise ScheduleConfigError(f"Invalid time format: {text!r}") from None
    if period.upper() not in ("AM", "PM") or not (1 <= hour <= 12 and 0 <= minute <= 59):
        raise ScheduleConfigError(f"Invalid time format: {text!r}")
    return hour % 12 + (12 if period.upper() == "PM" else 0), minute


def next_run_at(cron: str, timezone: str, after: datetime) -> datetime:
    """The first run after ``after`` in ``timezone``, in UTC (Dify's ``calculate_next_run_at``,
    which counts from the handling time; here from the publication's, so a replay computes the same)."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleConfigError(f"Unknown time zone: {timezone!r}") from None
    return croniter(cron, after.astimezone(zone)).get_next(datetime).astimezone(UTC)
