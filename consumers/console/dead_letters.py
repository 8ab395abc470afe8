"""A group's dead letters: the list with its filters, one letter, and redrive with a preview first
(the same reading and redriving as ``events dlq``: ``consumers.recovery.browse`` and ``.redrive``)."""

from __future__ import annotations

import json

from flask import Blueprint, abort, render_template, request
from werkzeug.datastructures import MultiDict

from ..recovery import browse, dead_letters, kafka
from ..recovery.dead_letters import Selection
from ..recovery.redrive import Redrive
from ..recovery.times import parse_time
from .security import audit, require_actions
from .state import state

bp = Blueprint("dead_letters", __name__)
FILTERS = ("error_class", "event_type", "since", "until")


def _selection(name: str, values: MultiDict) -> Selection:
    """The filters (and the ticked positions, unless the form's ``scope`` is ``filter``) of a form or a query."""
    def one(key: str) -> tuple[str, ...]:
        return tuple(v.strip() for v in values.getlist(key) if v.strip())

    positions: tuple[tuple[int, int], ...] = ()
    if one("position") and values.get("scope") != "filter":
        console = state()
        topic = console.group(name).dlq_topic(console.settings.topic_prefix)
        count = kafka.partition_counts(kafka.admin(console.settings), [topic])[topic]
        positions = tuple(dead_letters.parse_position(p, count) for p in one("position"))
    since, until = values.get("since", "").strip(), values.get("until", "").strip()
    return Selection(error_classes=one("error_class"), event_types=one("event_type"),
                     since=parse_time(since) if since else None, until=parse_time(until) if until else None,
                     positions=positions)


def _described(selection: Selection) -> str:
    parts = [f"{name}={','.join(values)}" for name, values in (("error_class", selection.error_classes),
                                                                ("event_type", selection.event_types)) if values]
    parts += [f"{name}={moment.isoformat()}" for name, moment in (("since", selection.since),
                                                                  ("until", selection.until)) if moment]
    if selection.positions:
        parts.append("positions=" + ",".join(f"{p}:{o}" for p, o in selection.positions))
    return " ".join(parts) or "every dead letter"


@bp.route("/groups/<name>/dead-letters")
def index(name: str):
    console = state()
    group = console.group(name)
    found = browse.listing(console.settings, group, _selection(name, request.args))
    letters = found.letters if found else []
    return render_template("dead_letters.html", group=group, found=found,
                           filters={k: request.args.get(k, "") for k in FILTERS},
                           error_classes=sorted({letter.error_class for letter in letters}),
                           event_types=sorted({letter.event_type or "?" for letter in letters}))


@bp.route("/groups/<name>/dead-letters/<position>")
def show(name: str, position: str):
    console = state()
    group = console.group(name)
    letter, entry = browse.find(console.settings, group, position)
    return render_template("dead_letter.html", group=group, letter=letter, facts=browse.facts(letter, entry),
                           event=json.dumps(browse.decoded(letter), indent=2, default=str),
                           headers=browse.header_rows(letter), redriven=entry is not None)


@bp.route("/groups/<name>/redrive", methods=["POST"])
def preview(name: str):
    """What a redrive of the selection would send (a dry run: nothing is sent)."""
    console = state()
    group = console.group(name)
    selection = _selection(name, request.form)
    plan = Redrive(console.settings, group).prepare(selection, execute=False)
    return render_template("redrive.html", group=group, plan=plan, described=_described(selection),
                           carried=_carried(selection))


@bp.route("/groups/<name>/redrive/execute", methods=["POST"])
def execute(name: str):
    require_actions()
    if request.form.get("confirm") != "yes":
        abort(400, "tick the confirmation to re-drive")
    console = state()
    group = console.group(name)
    selection = _selection(name, request.form)
    job = Redrive(console.settings, group)
    plan = job.prepare(selection, execute=True)
    report = job.run(plan)
    audit("redrive", group=group.name, selection=_described(selection), sent=report.sent, run=report.run,
          target=plan.target)
    return render_template("redrive.html", group=group, plan=plan, described=_described(selection),
                           carried=_carried(selection), report=report)


def _carried(selection: Selection) -> list[tuple[str, str]]:
    """The selection as the confirmation form sends it back (exactly what the preview showed)."""
    fields = [("error_class", c) for c in selection.error_classes] + [("event_type", t) for t in selection.event_types]
    fields += [(name, moment.isoformat()) for name, moment in (("since", selection.since), ("until", selection.until))
               if moment is not None]
    return fields + [("position", f"{p}:{o}") for p, o in selection.positions]
