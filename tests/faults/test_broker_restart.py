"""The broker stopped and started again mid-stream: producers keep publishing (the SDK buffers and
retries, the outbox relay retries), and no acknowledged event is lost. A broker of this test alone
(a LocalBroker in a temporary home), never the shared one."""

from __future__ import annotations

import time

from tests.faults.harness import assert_exactly_once, world

DOWN_S = 6.0


def test_a_broker_restart_mid_stream_loses_no_acknowledged_event(world_args, own_broker):
    # Given the seed's groups and a steady stream on a broker of this test's own
    bootstrap = own_broker.status().bootstrap
    with world(**{**world_args, "bootstrap": bootstrap}) as w:
        w.start().stream(seconds=24)
        w.wait_played(0.3)
        # When the broker stops mid-stream (publishing goes on) and starts again a few seconds later
        own_broker.stop()
        time.sleep(DOWN_S)
        own_broker.start(timeout_s=120)
        back = time.monotonic()
        # Then everything published was acknowledged in the end, and every event had its effects once
        w.settle(timeout_s=180)
        recover_s = time.monotonic() - back
        fig, checks = w.figures("broker stopped for 6 s and started", faults=1, recover_s=recover_s)
    assert_exactly_once(fig, checks)
    assert fig.not_acknowledged == 0, "the SDK gave up on events while the broker was down for 6 s"
