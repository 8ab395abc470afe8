from dify_events.schemas.errors import EventsError


class BrokerError(EventsError):
    """The local broker could not be started, found or stopped; the message says what to do."""
