"""Consumer processes SIGKILLed at random moments, several rounds, under a steady stream."""

from __future__ import annotations

import random
import time

from tests.faults.harness import assert_exactly_once, world

ROUNDS = 3


def test_group_processes_killed_at_random_moments_lose_and_double_nothing(world_args):
    rng = random.Random(11)
    # Given the seed's groups handling a steady stream of the seed's events
    with world(**world_args) as w:
        w.start().stream(seconds=24)
        kills = 0
        # When, in several rounds, random groups' processes are SIGKILLed at a random moment and restarted
        for _ in range(ROUNDS):
            time.sleep(rng.uniform(2.0, 5.0))
            victims = rng.sample(w.names, rng.randint(1, len(w.names)))
            kills += w.kill(victims)
            time.sleep(rng.uniform(0.2, 1.5))
            w.restart(victims)
        # Then once they drained, every event had its effects exactly once
        recover_s = w.settle()
        fig, checks = w.figures("consumer processes SIGKILLed", faults=kills, recover_s=recover_s)
    assert_exactly_once(fig, checks)
