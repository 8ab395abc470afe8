"""A handler that hangs past its time limit: interrupted, its attempt rolled back, retried; one that
always hangs is dead-lettered once its attempts are spent. The others' effects happen once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine, select

from dify_events.consumers.demo.workload import Size
from dify_events.schemas.events import AppWasCreated
from tests.faults import hanging_handlers as H
from tests.faults.harness import assert_exactly_once, world

ROOT = Path(__file__).resolve().parents[2]


def test_a_handler_hanging_past_its_time_limit_is_interrupted_retried_or_dead_lettered(world_args):
    # Given `faults-hanger` (in its own process, from EVENTS_HANDLER_MODULES) beside two of the seed's
    # groups that take the same events, under a stream of new apps
    size = Size(tenants=2, apps=18, documents=1, messages=0)
    engine = create_engine(world_args["database_url"])
    H.metadata.create_all(engine)
    with world(**world_args, size=size, groups=["faults-hanger", "site-provisioner", "installed-app-provisioner"],
               concurrency=4,
               extra_env={"EVENTS_HANDLER_MODULES": "dify_events.consumers.handlers,tests.faults.hanging_handlers",
                          "PYTHONPATH": str(ROOT)}) as w:
        apps = [e for e in w.workload.events() if isinstance(e, AppWasCreated)]
        kinds = Counter(H.hang_kind(e.app_id) for e in apps)
        w.start().stream(seconds=8)
        # When every app's event has been handled, retried or dead-lettered
        recover_s = w.settle()
        always = {e.event_id for e in apps if H.hang_kind(e.app_id) == H.ALWAYS}
        fig, checks = w.figures("handler hanging past its time limit", faults=kinds[H.FIRST] + kinds[H.ALWAYS],
                                recover_s=recover_s, expected_dead={"faults-hanger": len(always)})
        with engine.connect() as conn:
            rows = conn.execute(select(H.hang_effects.c.event_id, H.hang_effects.c.attempt)).all()
        interrupted = w.log_count("time limit exceeded")
    engine.dispose()
    per_event = Counter(r[0] for r in rows)
    fig.notes.append(f"apps {len(apps)}: {dict(kinds)}; interruptions logged {interrupted}")
    # Then every interrupted attempt rolled back: one row per event that finished, none for the
    # dead-lettered; and the seed's groups beside it made one site and one installed app per app
    fig.duplicated += sum(n - 1 for n in per_event.values() if n > 1)
    assert_exactly_once(fig, checks)
    assert set(per_event) == {e.event_id for e in apps} - always
    assert fig.dead_lettered == len(always)
    assert all(attempt == 2 for event_id, attempt in rows if event_id in {
        e.event_id for e in apps if H.hang_kind(e.app_id) == H.FIRST})
    assert interrupted >= kinds[H.FIRST] + H.MAX_ATTEMPTS * kinds[H.ALWAYS]
