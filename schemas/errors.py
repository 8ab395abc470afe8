"""The platform's error types. Every one carries a message that says what went wrong and what to do."""


class EventsError(Exception):
    """Base of every error the platform raises on purpose; the command line prints its message."""


class UnknownEventType(EventsError):
    """An event type the catalogue does not know (a typo, or a consumer older than the producer)."""


class CatalogueError(EventsError):
    """The schema folder breaks a rule of the contract (file name, record name, envelope, versions)."""


class CodecError(EventsError):
    """Bytes that cannot be turned into an event, or an event that cannot be turned into bytes."""


class NotSingleObjectEncoded(CodecError):
    """The bytes do not start with the Avro single-object marker ``C3 01`` and an 8-byte fingerprint."""


class UnknownSchema(CodecError):
    """The fingerprint in the header names no schema version in the catalogue."""


class CorruptBody(CodecError):
    """The Avro body after the header is truncated, has trailing bytes, or does not decode."""


class EventTypeMismatch(CodecError):
    """The caller expected one event type and the fingerprint names another."""


class UnencodableEvent(CodecError):
    """An event whose values its schema cannot hold (built with ``model_construct``/``model_copy``,
    which skip validation)."""


class InvalidEvent(CodecError):
    """The body decoded, but its values break the event model's rules (pydantic's message says which)."""


class SettingsError(EventsError, ValueError):
    """The configuration (``EVENTS_*`` variables, the config file) cannot be read or is not valid."""


class TopicsError(EventsError):
    """The topics file is wrong, or the cluster refused a topic change (the message says which topic)."""


def describe_validation_error(exc) -> str:
    """A pydantic ``ValidationError`` in one line, ``loc: msg`` per error, WITHOUT the input values
    pydantic's own message shows (they are the event's data, which must not reach logs or
    dead-letter headers): ``2 errors: mode: Input should be 'chat' or 'workflow'; event_id: ...``."""
    try:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
    except Exception:  # noqa: BLE001 - not a pydantic error after all: say only what it is
        return type(exc).__name__
    parts = []
    for error in errors:
        loc = ".".join(str(part) for part in error.get("loc", ()))
        msg = error.get("msg", "invalid")
        parts.append(f"{loc}: {msg}" if loc else msg)
    count = f"{len(parts)} error{'s' if len(parts) != 1 else ''}"
    return f"{count}: {'; '.join(parts)}" if parts else "invalid"
