"""Who may look and who may act.

Every request needs the token when one is set (``EVENTS_CONSOLE_TOKEN``; ``events console`` refuses
``--allow-actions`` without one): a person signs in once with their name and the token (a signed,
HttpOnly, SameSite=Strict session cookie); a script sends ``Authorization: Bearer <token>``. Every
form carries a CSRF token tied to the session. Every action is logged on ``consumers.console.audit``
with who (the name given at sign-in, or ``token``) and from where."""

from __future__ import annotations

import hmac
import logging
import secrets

from flask import Blueprint, Flask, abort, g, redirect, render_template, request, session, url_for

from .state import state

audit_log = logging.getLogger("consumers.console.audit")
bp = Blueprint("security", __name__)
OPEN = frozenset({"static", "security.login", "security.healthz"})


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _token_matches(given: str | None) -> bool:
    token = state().options.token
    return token is not None and given is not None and hmac.compare_digest(given.encode(), token.encode())


def install(app: Flask) -> None:
    app.register_blueprint(bp)
    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.before_request
    def guard():
        options = state().options
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer ") and _token_matches(bearer[7:].strip()):
            g.who, g.bearer = "token", True
            return None
        g.bearer = False
        if request.method == "POST" and request.endpoint != "static":
            given = request.form.get("csrf", "")
            if not hmac.compare_digest(given.encode(), session.get("csrf", "").encode()):
                abort(400, "the form is stale or did not come from this console (CSRF check): reload the page")
        if options.token is None:
            g.who = "anonymous"
            return None
        g.who = session.get("who")
        if g.who is None and request.endpoint not in OPEN:
            return render_template("login.html", next=request.full_path), 401
        return None


def require_actions() -> None:
    """Aborts unless the console was started with --allow-actions."""
    if not state().options.allow_actions:
        abort(403, "this console is read-only: start it with --allow-actions (and EVENTS_CONSOLE_TOKEN) to act")


def audit(action: str, **details: object) -> None:
    """One line per action: what, by whom, from where, on what, with what result."""
    what = " ".join(f"{k}={v}" for k, v in details.items())
    audit_log.info("%s by %s from %s: %s", action, g.get("who"), request.remote_addr, what,
                   extra={"action": action, "who": g.get("who"), "remote_addr": request.remote_addr, **details})


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", "/"))
    name = " ".join(request.form.get("name", "").split())[:64]
    target = request.form.get("next") or "/"
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    if not name or not _token_matches(request.form.get("token")):
        audit_log.warning("sign-in refused for %r from %s", name, request.remote_addr)
        return render_template("login.html", next=target, refused=True), 401
    session.clear()
    session["who"] = name
    g.who = name
    audit("sign-in")
    return redirect(target)


@bp.route("/logout", methods=["POST"])
def logout():
    audit("sign-out")
    session.clear()
    return redirect(url_for("security.login"))


@bp.route("/healthz")
def healthz():
    sampler = state().sampler
    return {"ok": sampler.error is None, "samples": len(sampler.history), "error": sampler.error}
