"""Errors of the recovery tools. Each says what went wrong and what to do about it."""

from __future__ import annotations

from ..errors import ConsumerError


class RecoveryError(ConsumerError):
    """Base of the errors of ``events replay`` and ``events dlq``."""


class BadTime(RecoveryError):
    """A ``--since``/``--until`` value that is neither ISO 8601, a relative time (``2h``) nor epoch ms."""


class BadOffsets(RecoveryError):
    """A ``--from-offsets`` list (or file) that does not read as ``topic:partition:offset,...``."""


class BadSelection(RecoveryError):
    """Options that do not go together, or that select nothing of the group's (a topic it does not read)."""


class GroupActive(RecoveryError):
    """A rewind was asked of a group that has members: Kafka only lets a stopped group's offsets be set."""


class NotReplaySafe(RecoveryError):
    """The group has a handler declared ``replay_safe=False``; replaying it needs ``--force``."""


class MissingTopic(RecoveryError):
    """A topic the operation needs (a retry or dead-letter topic) does not exist."""


class CopyFailed(RecoveryError):
    """Messages were not acknowledged by the broker while copying; the summary says how many."""


class DeadLetterNotFound(RecoveryError):
    """``events dlq show`` names an offset the dead-letter topic does not hold."""
