"""The console's Flask application: its pages, its guards, and one-line errors."""

from __future__ import annotations

import secrets

from confluent_kafka import KafkaException
from flask import Flask, render_template
from werkzeug.exceptions import HTTPException

from dify_events.schemas.errors import EventsError
from dify_events.schemas.settings import Settings

from ..group import ConsumerGroup
from ..redact import redact
from . import catalogue, dead_letters, groups, replay, security
from .charts import sparkline
from .sampler import Sampler
from .state import ConsoleOptions, ConsoleState, state


def create_app(settings: Settings, group_list: list[ConsumerGroup], options: ConsoleOptions,
               sampler: Sampler) -> Flask:
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)  # sessions end with the process
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict", MAX_CONTENT_LENGTH=1 << 20)
    app.extensions["events-console"] = ConsoleState(settings, {g.name: g for g in group_list}, options, sampler)
    security.install(app)
    for module in (groups, dead_letters, replay, catalogue):
        app.register_blueprint(module.bp)
    app.jinja_env.globals.update(sparkline=sparkline, console=state)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return render_template("error.html", status=exc.code, message=exc.description), exc.code

    @app.errorhandler(EventsError)
    @app.errorhandler(ValueError)
    def refused(exc: Exception):
        return render_template("error.html", status=400, message=redact(str(exc))), 400

    @app.errorhandler(KafkaException)
    def kafka_error(exc: KafkaException):
        from ..cli import explain

        return render_template("error.html", status=502, message=redact(explain(exc) or str(exc))), 502

    return app
