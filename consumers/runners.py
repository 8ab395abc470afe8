"""Which runner runs a group: ``GroupRunner`` for an ordered group, ``ShareGroupRunner`` for a
shared one. The share runner is imported only for a shared group: it needs confluent-kafka's
``ShareConsumer`` (2.15.0 or later), which the lowest version the project allows lacks."""

from __future__ import annotations

import confluent_kafka

from .errors import GroupDefinitionError
from .group import SHARED, ConsumerGroup
from .runner import GroupRunner


def runner_class(group: ConsumerGroup) -> type[GroupRunner]:
    """The runner of ``group``'s delivery."""
    if group.delivery != SHARED:
        return GroupRunner
    if not hasattr(confluent_kafka, "ShareConsumer"):
        raise GroupDefinitionError(
            f"group {group.name} is shared, and shared groups need confluent-kafka 2.15.0 or later "
            f"(installed: {confluent_kafka.version()[0]}): pip install 'confluent-kafka>=2.15'")
    from .share_runner import ShareGroupRunner
    return ShareGroupRunner
