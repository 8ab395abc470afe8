"""Tracing: the place in the pipeline where the observers' ``around_message`` wraps run (after
``Decode``, around ``Retries``): one delivery of a decoded message, all its attempts. Tracing's
CONSUMER span is one of them (``consumers.telemetry.tracing.TracingObserver``), hence the name.

Active only when an observer wraps messages; otherwise the step leaves the chain and costs nothing.
"""

from __future__ import annotations

from ..job import Job
from ..observers import wrapped
from .step import CallNext, Resources, Step


class Tracing(Step):
    options = {}

    def __init__(self, resources: Resources):
        super().__init__(resources)
        self.wraps = resources.observers.around_message

    @property
    def active(self) -> bool:
        return bool(self.wraps)

    def process(self, job: Job, call_next: CallNext) -> str:
        return wrapped(self.wraps, call_next)(job)

    def chain(self, call_next: CallNext) -> CallNext:
        """The wraps composed once around ``call_next``, without a frame of the step's own."""
        return wrapped(self.wraps, call_next)
