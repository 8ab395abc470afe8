"""A throwaway PostgreSQL server for the database tests.

Uses ``EVENTS_TEST_POSTGRES_URL`` when set. Otherwise it installs Debian's ``postgresql`` package
if ``initdb`` is missing, creates a cluster in a temporary directory, starts it on a free port
(unix socket in the same directory), and removes it all at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates:
        if os.geteuid() != 0:
            raise RuntimeError("PostgreSQL is not installed and we are not root: apt-get install postgresql")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, env=env, stdout=subprocess.DEVNULL)
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres_user():
    """initdb refuses to run as root: run the server as the `postgres` system user instead."""
    if os.geteuid() != 0:
        return None, None
    user = pwd.getpwnam("postgres")
    return user.pw_uid, user.pw_gid


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a SQLAlchemy URL (psycopg 3) of a superuser on an empty server."""
    configured = os.environ.get("EVENTS_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    bin_dir = _pg_bin()
    uid, gid = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="events-test-pg-"))
    data = root / "data"
    port = _free_port()
    if uid is not None:
        os.chown(root, uid, gid)

    def run(*args: str) -> None:
        subprocess.run([str(bin_dir / args[0]), *args[1:]], check=True, capture_output=True,
                       user=uid, group=gid, cwd=root)

    try:
        run("initdb", "-D", str(data), "-U", "events", "--auth=trust", "-E", "UTF8", "--no-sync")
        run("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
        yield f"postgresql+psycopg://events@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(Exception):
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


