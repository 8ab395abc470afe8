"""The outbox relay killed (SIGKILL) mid-batch, several times, and restarted."""

from __future__ import annotations

import random
import signal
import subprocess
import sys

from sqlalchemy import func, select

from dify_events.consumers.demo.cluster import terminate_with_parent
from dify_events.consumers.demo.workload import Size
from dify_events.producers.outbox import event_outbox
from tests.faults.harness import assert_exactly_once, topic_messages, wait_for, world

KILLS = 4


def test_a_relay_killed_mid_batch_loses_nothing_and_its_resends_change_nothing(world_args):
    rng = random.Random(5)
    # Given a stream whose configuration changes go through the outbox, relayed by `events outbox relay`
    size = Size(tenants=3, apps=40, documents=2, messages=60)
    with world(**world_args, size=size, in_process_relay=False) as w:
        w.run_dir.mkdir(parents=True, exist_ok=True)
        log = (w.run_dir / "relay.log").open("ab")

        def relay():
            return subprocess.Popen(
                [sys.executable, "-m", "dify_events.consumers", "outbox", "relay", "--database-url", w.database_url,
                 "--batch-size", "3", "--poll-interval", "0.05"],
                env=w.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=terminate_with_parent)

        def sent() -> int:
            with w.engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(event_outbox)
                                    .where(event_outbox.c.sent_at.is_not(None))).scalar_one()

        w.start().stream(seconds=16)
        w.wait_played(0.4)  # a backlog in the outbox, so that each relay is killed while it works
        process = relay()
        # When the relay is SIGKILLed while it works through the backlog (a few rows after it began:
        # most likely between sending a batch and marking it sent), and restarted, several times
        for _ in range(KILLS):
            target = sent() + rng.randint(2, 12)
            wait_for(lambda target=target, process=process: sent() >= target or process.poll() is not None, 60,
                     "the relay to send")
            process.kill()
            process.wait(10)
            process = relay()
        # Then once it drained the outbox and the groups caught up, every event had its effects once
        try:
            recover_s = w.settle()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            log.close()
        fig, checks = w.figures("outbox relay SIGKILLed", faults=KILLS, recover_s=recover_s)
        resent = topic_messages(w) - w.workload.message_count()
        fig.notes.append(f"outbox rows {sent()}; messages re-sent by a restarted relay (same ids, skipped by "
                         f"idempotency keys): {resent}")
    assert_exactly_once(fig, checks)
