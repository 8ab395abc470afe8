"""Every group at a glance, and one group: members, lag per partition with its trend, rates."""

from __future__ import annotations

import time

from flask import Blueprint, render_template

from .state import state

bp = Blueprint("groups", __name__)


def _row(name: str) -> dict:
    console = state()
    sample = console.sampler.latest()
    lag = sample.lag.get(name) if sample else None
    status, members = sample.members.get(name, ("?", [])) if sample else ("?", [])
    scraped = sample.scraped.get(name, {}) if sample else {}
    return {"name": name, "lag": lag, "state": status, "members": members, "rates": console.sampler.rates(name),
            "in_flight": scraped.get("in_flight"), "series": console.sampler.lag_series(name)}


@bp.route("/")
def index():
    console = state()
    return render_template("groups.html", rows=[_row(name) for name in sorted(console.groups)], now=time.time())


@bp.route("/groups/<name>")
def group(name: str):
    console = state()
    the_group = console.group(name)
    row = _row(name)
    partitions = [(p, console.sampler.lag_series(name, (p.topic, p.partition))) for p in (row["lag"].partitions
                                                                                          if row["lag"] else ())]
    return render_template("group.html", group=the_group, row=row, partitions=partitions, now=time.time(),
                           prefix=console.settings.topic_prefix)
