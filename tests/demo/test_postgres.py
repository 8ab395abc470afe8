"""The throwaway PostgreSQL server: fsync off by default (tests, the demo), on when asked (the bench's durable rows)."""

import pytest
from sqlalchemy import create_engine, text

from dify_events.consumers.demo.postgres import throwaway_postgres


@pytest.mark.parametrize(("fsync", "shown"), [(False, "off"), (True, "on")])
def test_the_server_runs_with_the_fsync_asked_for_and_synchronous_commits(fsync, shown):
    with throwaway_postgres(prefix="events-test-pg-fsync-", fsync=fsync) as url:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SHOW fsync")).scalar() == shown
                assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
        finally:
            engine.dispose()
