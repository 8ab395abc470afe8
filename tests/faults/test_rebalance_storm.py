"""A rebalance storm: members of one group started and stopped repeatedly while events flow."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from dify_events.consumers.demo.cluster import terminate_with_parent
from tests.faults.harness import assert_exactly_once, wait_for, world

CYCLES = 3
GROUP = "provider-usage"


def test_members_joining_and_leaving_repeatedly_lose_and_double_nothing(world_args):
    # Given the seed's groups handling a steady stream of the seed's events
    with world(**world_args) as w:
        w.start().stream(seconds=30)
        logs = w.run_dir / "logs"
        joins = leaves = 0
        # When extra members of provider-usage join (each waits for its partitions) and leave, over and
        # over: one of each pair by SIGTERM (drains, commits, leaves), the other by SIGTERM or SIGKILL
        for cycle in range(CYCLES):
            members = []
            for n in range(2):
                log = logs / f"storm-{cycle}-{n}.log"
                with log.open("ab") as out:
                    members.append((log, subprocess.Popen(
                        [sys.executable, "-m", "dify_events.consumers", "run", "--group", GROUP, "--concurrency", "2"],
                        env={**w.env, "EVENTS_HEALTH_PORT": "0"}, stdout=out, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, preexec_fn=terminate_with_parent)))
            for log, _ in members:
                wait_for(lambda log=log: " assigned " in log.read_text(errors="replace"), 40, f"{log.name} to join")
                joins += 1
            members[0][1].send_signal(signal.SIGTERM)
            time.sleep(1.0)  # the second leave lands in the rebalance the first one started
            members[1][1].kill() if cycle % 2 else members[1][1].send_signal(signal.SIGTERM)
            for _, member in members:
                member.wait(40)
                leaves += 1
        # Then once the group drained, every event had its effects exactly once
        recover_s = w.settle()
        fig, checks = w.figures("rebalance storm", faults=joins + leaves, recover_s=recover_s)
        fig.notes.append(f"{joins} joins, {leaves} leaves ({CYCLES // 2} by SIGKILL); logged: "
                         f"{w.log_count(' assigned ')} assignments, {w.log_count(' revoked ')} revocations")
    assert_exactly_once(fig, checks)
