"""The replay form: a start (time, offsets or the beginning), the plan as ``events replay`` shows
it (``consumers.recovery.plan``), then its execution after a confirmation."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from werkzeug.datastructures import MultiDict

from ..config import group_id
from ..recovery import kafka, replay
from ..recovery import plan as planning
from ..recovery.positions import parse_position_list
from ..recovery.times import parse_time
from .security import audit, require_actions
from .state import state

bp = Blueprint("replay", __name__)
MODES = {"auto": None, "copy": True, "rewind": False}


def _plan(name: str, form: MultiDict) -> planning.ReplayPlan:
    console = state()
    group = console.group(name)
    start = form.get("start", "since")
    since, offsets, until = (form.get(k, "").strip() for k in ("since", "offsets", "until"))
    request_ = planning.Request(
        since=parse_time(since) if start == "since" and since else None,
        positions=tuple(parse_position_list(offsets, "the offsets")) if start == "offsets" and offsets else (),
        from_beginning=start == "beginning",
        until=parse_time(until) if until else None)
    prefix = console.settings.topic_prefix
    return planning.build(kafka.admin(console.settings), group, prefix=prefix, group_id=group_id(prefix, group.name),
                          request=request_, topic=form.get("topic") or None, copy=MODES.get(form.get("mode", "auto")),
                          reprocess=form.get("reprocess") == "yes")


@bp.route("/groups/<name>/replay")
def form(name: str):
    console = state()
    group = console.group(name)
    return render_template("replay.html", group=group, form=request.args, plan=None,
                           topics=group.topics(console.settings.topic_prefix))


@bp.route("/groups/<name>/replay/plan", methods=["POST"])
def plan(name: str):
    console = state()
    group = console.group(name)
    return render_template("replay.html", group=group, form=request.form, plan=_plan(name, request.form),
                           topics=group.topics(console.settings.topic_prefix))


@bp.route("/groups/<name>/replay/execute", methods=["POST"])
def execute(name: str):
    require_actions()
    if request.form.get("confirm") != "yes":
        abort(400, "tick the confirmation to execute the replay")
    console = state()
    group = console.group(name)
    the_plan = _plan(name, request.form)
    replay.check_replay_safe(the_plan, force=request.form.get("force") == "yes")
    result: dict = {}
    if the_plan.changes and the_plan.mode == planning.REWIND:
        now = replay.rewind(kafka.admin(console.settings), the_plan)
        result["rewound"] = {f"{t}[{p}]": offset for (t, p), offset in sorted(now.items())}
    elif the_plan.changes:
        report = replay.copy(console.settings, the_plan, group)
        result.update(run=report.run, read=report.read, copied=report.copied, other_types=report.other_types,
                      repeated=report.repeated)
    audit("replay", group=group.name, mode=the_plan.mode, request=the_plan.request.describe(),
          messages=the_plan.messages, **result)
    return render_template("replay.html", group=group, form=request.form, plan=the_plan, result=result,
                           topics=group.topics(console.settings.topic_prefix))
