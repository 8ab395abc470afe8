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

from dify_events.schemas.errors import describe_validation_error

__all__ = ["error_message", "error_traceback", "fqcn", "mask_credentials", "redact"]

MASK = "***"
# scheme://user:secret@host: the secret runs to the last '@' before a space (a raw password may hold
# '@', ':', ',' or '/'; masking too much beats showing a tail of it)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)\S*@")
# name=value / name: value / "name": "value" where the name says it holds a secret. A quoted value
# ends at its closing quote when a delimiter follows; any other value runs to the next space.
_SECRET_NAME = (r"[\w.-]*(?:passw(?:or)?d|pwd|secret|api[_.-]?key|access[_.-]?key|private[_.-]?key|token"
                r"|credentials?|authorization)")
_SECRET_VALUE = re.compile(
    rf"""(?i)({_SECRET_NAME}["']?\s*[=:]\s*)((?:bearer|basic)\s+)?"""
    r"""("(?:[^"\\\n]|\\.)*"(?=[\s,;&)\]}]|$)|'(?:[^'\\\n]|\\.)*'(?=[\s,;&)\]}]|$)|[^\s"']\S*|["']\S*)""")
# an HTTP Authorization header's credentials, wherever they appear
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"'\\]{8,}")
# model providers' API keys: OpenAI/Anthropic/DeepSeek sk-..., Stripe sk_..., Groq gsk_..., xAI xai-...,
# Hugging Face hf_..., Google AIza...
_PROVIDER_KEY = re.compile(r"\b(sk-|sk_|gsk_|xai-|hf_|AIza)[A-Za-z0-9_-]{16,}")
_MARKERS = ("://", "passw", "pwd", "secret", "key", "token", "credential", "authorization", "bearer", "basic",
            "sk-", "sk_", "xai-", "hf_", "aiza")

# pydantic's "[type=..., input_value=..., input_type=...]" (one line; pydantic cuts long values)
_INPUT_VALUE = re.compile(r"input_value=[^\n]*?, (input_type=)")
# SQLAlchemy's "[parameters: ...]" line of a StatementError
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*\]")


def _masked_value(match: re.Match) -> str:
    name, scheme, value = match.group(1), match.group(2) or "", match.group(3)
    quote = value[0] if value[0] in "\"'" and len(value) > 1 and value[-1] == value[0] else ""
    return f"{name}{scheme}{quote}{MASK}{quote}"


def mask_credentials(text: str) -> str:
    """``text`` with every credential shape masked: a URL's password (``scheme://user:***@host``),
    the value of a name that says it is secret (``sasl.password=***``, ``"api_key": "***"``,
    ``token=***``, ``Authorization: Bearer ***``), HTTP ``Bearer``/``Basic`` credentials, and
    model providers' API keys (``sk-***``). Cheap when there is nothing to do."""
    lowered = text.lower()
    if not any(marker in lowered for marker in _MARKERS):
        return text
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    text = _SECRET_VALUE.sub(_masked_value, text)
    text = _AUTH_SCHEME.sub(rf"\1\2{MASK}", text)
    return _PROVIDER_KEY.sub(rf"\1{MASK}", text)


def redact(text: str) -> str:
    """``text`` with credentials masked (``mask_credentials``) and embedded event data (pydantic
    input values, SQL parameters) removed. Cheap when there is nothing to do (substring checks first)."""
    text = mask_credentials(text)
    if "input_value=" in text:
        text = _INPUT_VALUE.sub(r"\1", text)
    if "[parameters: " in text:
        text = _SQL_PARAMETERS.sub("[SQL parameters hidden]", text)
    return text


def fqcn(exc: BaseException) -> str:
    """The error's class as Java tooling names one: ``module.Class`` (``Class`` for builtins)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


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
