"""What every page of the console reads: the settings, the groups, the options, the sampler."""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort, current_app

from dify_events.schemas.settings import Settings

from ..group import ConsumerGroup
from .sampler import Sampler


@dataclass(frozen=True)
class ConsoleOptions:
    allow_actions: bool = False   # redrive and replay may be executed (else: previews and plans only)
    token: str | None = None      # required of every request when set (it must be, with actions)
    interval_s: float = 5.0       # between measurements
    window_s: float = 600.0       # of history kept, and shown by the trend charts
    metrics_urls: tuple[str, ...] = ()


@dataclass
class ConsoleState:
    settings: Settings
    groups: dict[str, ConsumerGroup]
    options: ConsoleOptions
    sampler: Sampler

    def group(self, name: str) -> ConsumerGroup:
        group = self.groups.get(name)
        if group is None:
            abort(404, f"no consumer group is named {name!r}")
        return group


def state() -> ConsoleState:
    return current_app.extensions["events-console"]
