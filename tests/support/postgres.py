"""A throwaway PostgreSQL server for the database tests.

Uses ``EVENTS_TEST_POSTGRES_URL`` when set. Otherwise ``consumers.demo.postgres`` installs Debian's
``postgresql`` package if ``initdb`` is missing, creates a cluster in a temporary directory, starts
it on a free port (unix socket in the same directory), and removes it all at the end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from dify_events.consumers.demo.postgres import throwaway_postgres


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a SQLAlchemy URL of a superuser on an empty server."""
    configured = os.environ.get("EVENTS_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    with throwaway_postgres(prefix="events-test-pg-") as url:
        yield url
