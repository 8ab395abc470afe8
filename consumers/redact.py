"""Redaction of error text before it leaves the process (log lines, dead-letter headers, span events).

Two kinds of things must not: credentials (``scheme://user:secret@host``, ``password=...``) and
event data, which exceptions embed: pydantic's ``ValidationError`` shows each bad field's
``input_value=...`` and SQLAlchemy's errors show the statement's ``[parameters: ...]`` (engines made
by ``consumers.idempotency.make_engine`` hide them already; other engines may not). ``redact``
masks both in any text; ``error_message`` and ``error_traceback`` give an exception's message and
traceback with pydantic's errors described without their input values, then redacted.

Redact before cutting text to a length: a cut can leave half a URL the patterns no longer match.
"""

from __future__ import annotations

import re
import traceback

from schemas.errors import describe_validation_error

__all__ = ["error_message", "error_traceback", "mask_credentials", "redact"]

_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")

# key=value / key: value / "key": "value" where the key names a password or a secret
_SECRET_VALUE = re.compile(
    r"""(?i)([\w.-]*(?:password|passwd|secret)["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&'"})\]]+)""")
# pydantic's "[type=..., input_value=..., input_type=...]" (one line; pydantic cuts long values)
_INPUT_VALUE = re.compile(r"input_value=[^\n]*?, (input_type=)")
# SQLAlchemy's "[parameters: ...]" line of a StatementError
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*\]")


def mask_credentials(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` anywhere in ``text``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def redact(text: str) -> str:
    """``text`` with credentials masked and embedded event data (pydantic input values, SQL
    parameters) removed. Cheap when there is nothing to do (substring checks first)."""
    if "://" in text:
        text = mask_credentials(text)
    lowered = text.lower()
    if "passw" in lowered or "secret" in lowered:
        text = _SECRET_VALUE.sub(r"\1***", text)
    if "input_value=" in text:
        text = _INPUT_VALUE.sub(r"\1", text)
    if "[parameters: " in text:
        text = _SQL_PARAMETERS.sub("[SQL parameters hidden]", text)
    return text


def _is_validation_error(exc: BaseException) -> bool:
    from pydantic import ValidationError

    return isinstance(exc, ValidationError)


def _plain_message(exc: BaseException) -> str:
    if _is_validation_error(exc):
        return describe_validation_error(exc)
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails
        return f"<{type(exc).__name__}: message unavailable>"


def error_message(exc: BaseException) -> str:
    """``str(exc)``, safe to log or to put in a header (may be empty, as ``str(exc)`` may)."""
    return redact(_plain_message(exc))


def _chain(exc: BaseException):
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def error_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` and its causes (as ``traceback.format_exception``), safe to log or
    to put in a header: each pydantic ``ValidationError`` in the chain described without its input
    values, then the whole text redacted."""
    text = "".join(traceback.format_exception(exc))
    for link in _chain(exc):
        if _is_validation_error(link):
            raw = str(link)
            if raw:
                text = text.replace(raw, describe_validation_error(link))
    return redact(text)
