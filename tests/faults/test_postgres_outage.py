"""PostgreSQL unavailable for a while: the groups pause and resume, without flooding the dead-letter topic."""

from __future__ import annotations

import glob
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from dify_events.consumers.demo.postgres import MAX_CONNECTIONS, _as_postgres_user, pg_bin, throwaway_postgres
from dify_events.consumers.demo.workload import SDK, Change
from tests.faults.harness import assert_exactly_once, fresh_database, wait_for, world

OUTAGE_S = 12.0


class Server:
    """A throwaway PostgreSQL server of this test alone, stopped and started with pg_ctl."""

    def __init__(self, url: str, root: Path):
        self.url, self.root, self.bin = url, root, pg_bin()
        self.port = make_url(url).port
        self.uid, self.gid = _as_postgres_user()

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), *args], check=True,
                       capture_output=True, user=self.uid, group=self.gid, cwd=self.root)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self._pg_ctl("-l", str(self.root / "server.log"), "-w", "-t", "60", "-o",
                     f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                     f"-c max_connections={MAX_CONNECTIONS}", "start")


@pytest.fixture
def own_postgres():
    prefix = f"events-faults-pg-{uuid.uuid4().hex[:8]}-"
    with throwaway_postgres(prefix=prefix) as url:
        [root] = glob.glob(os.path.join(tempfile.gettempdir(), prefix + "*"))
        yield Server(url, Path(root))


def test_a_database_outage_pauses_the_groups_and_they_resume_without_dead_letters(world_args, own_postgres):
    # Given the seed's groups on a PostgreSQL server of their own, handling a steady stream
    url = fresh_database(own_postgres.url, "faults")
    with world(**{**world_args, "database_url": url}, concurrency=4) as w:
        w.start().stream(seconds=24)
        first_messages = next(i for i, step in enumerate(w.workload.steps) if isinstance(step, Change)
                              and step.via == SDK and any(e.event_type == "message_was_created" for e in step.events))
        wait_for(lambda: w.played >= first_messages, 60, "the stream to reach its first messages")
        # When the database goes away for a while (events keep coming: the application publishes and
        # writes its rows once the database is back), then comes back
        own_postgres.stop()
        time.sleep(OUTAGE_S)
        own_postgres.start()
        back = time.monotonic()
        # Then the groups drain, every event had its effects exactly once
        w.settle()
        recover_s = time.monotonic() - back
        fig, checks = w.figures("PostgreSQL stopped for 12 s", faults=1, recover_s=recover_s)
        pauses = w.log_count("dependency outage")
        fig.notes.append(f"outage pauses logged by the groups: {pauses}; application steps deferred during the "
                         f"outage: {w.db_waits}")
    # and the outage paused the groups rather than dead-lettering their events
    assert_exactly_once(fig, checks)
    assert pauses >= 1, "no group paused for the outage"
