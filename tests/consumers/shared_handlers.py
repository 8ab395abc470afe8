"""The sample handler as a shared group, for `events run --group sample-shared` in a subprocess
(``EVENTS_HANDLER_MODULES=tests.consumers.shared_handlers``); ``SAMPLE_HANDLER_DELAY_S`` slows each
handling down. A module of its own, so that `events run --all` over ``sample_handlers`` is unchanged."""

from __future__ import annotations

import os

from dify_events.consumers.registry import register
from tests.consumers.sample_handlers import Behaviour, recording_group

_behaviour = Behaviour(default_delay_s=float(os.environ.get("SAMPLE_HANDLER_DELAY_S", "0")))
group, _ = recording_group("sample-shared", _behaviour, delivery="shared", max_attempts=3, min_backoff_s=0.05)
register(group)
