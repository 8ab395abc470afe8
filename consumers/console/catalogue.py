"""The schema catalogue, and the console's own settings (every secret masked, as ``events config show``)."""

from __future__ import annotations

from flask import Blueprint, render_template

from dify_events.schemas.catalogue import CATALOGUE

from ..cli.config import effective
from ..cli.schemas import catalogue_entry
from .state import state

bp = Blueprint("catalogue", __name__)


@bp.route("/schemas")
def schemas():
    prefix = state().settings.topic_prefix
    return render_template("schemas.html", entries=[catalogue_entry(spec, prefix) for spec in CATALOGUE])


@bp.route("/settings")
def settings():
    console = state()
    name = next(iter(sorted(console.groups)), "example")
    return render_template("settings.html", effective=effective(name), options=console.options)
