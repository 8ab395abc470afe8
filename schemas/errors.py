"""The platform's error types. Every one carries a message that says what went wrong and what to do."""


class EventsError(Exception):
    """Base of every error the platform raises on purpose; the command line prints its message."""
