from dify_events.schemas.errors import EventsError


class BrokerError(EventsError):
    """The local broker could not be started, found or stopped; the message says what to do."""


class PortTaken(BrokerError):
    """Another process bound a port of the broker's between its choice and the broker's bind."""
