"""The local Apache Kafka broker for development, the demo and the tests."""

from .errors import BrokerError
from .jars import KAFKA_VERSION
from .local import BrokerState, LocalBroker

__all__ = ["BrokerError", "BrokerState", "KAFKA_VERSION", "LocalBroker"]
