"""A throwaway PostgreSQL server: ``events demo --postgres``, and the tests' database server.

Installs Debian's ``postgresql`` package when ``pg_ctl`` is missing (as root; otherwise it says
what to install), creates a cluster in a temporary directory with ``initdb``, starts it with
``pg_ctl`` on a free port of 127.0.0.1 (its unix socket in the same directory), and removes it all
when the block ends. As root the server runs as the ``postgres`` system user (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..broker.local import free_port

MAX_CONNECTIONS = 200  # every consumer group's pool at once, with room


def postgres_scheme() -> str:
    """The SQLAlchemy URL scheme of an installed PostgreSQL driver: psycopg 3's, else psycopg2's."""
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2"
    return "postgresql+psycopg"


def pg_bin() -> Path:
    """The directory of PostgreSQL's server programs, installing Debian's package if needed."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates:
        install_debian_package("postgresql")
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent


def install_debian_package(package: str) -> None:
    """``apt-get install package`` as root; one install at a time on this machine (parallel test
    workers may want two packages at once, and apt holds a lock of its own that it does not wait on)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"{package} is not installed and cannot be installed here (not root, or no apt-get): "
                           f"apt-get install {package}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with open(Path(tempfile.gettempdir()) / "dify-events-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, env=env, stdout=subprocess.DEVNULL)


def _as_postgres_user() -> tuple[int | None, int | None]:
    """initdb refuses to run as root: run the server as the `postgres` system user instead."""
    if os.geteuid() != 0:
        return None, None
    user = pwd.getpwnam("postgres")
    return user.pw_uid, user.pw_gid


@contextlib.contextmanager
def throwaway_postgres(*, prefix: str = "events-pg-", fsync: bool = False) -> Iterator[str]:
    """Yields a SQLAlchemy URL of a superuser on an empty server (through the driver installed);
    removes it after. ``fsync`` off (the default) trades durability on a crash of the machine for speed."""
    bin_dir = pg_bin()
    uid, gid = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix=prefix))
    data = root / "data"
    port = free_port()
    if uid is not None and gid is not None:
        os.chown(root, uid, gid)

    def run(*args: str) -> None:
        subprocess.run([str(bin_dir / args[0]), *args[1:]], check=True, capture_output=True,
                       user=uid, group=gid, cwd=root)

    try:
        run("initdb", "-D", str(data), "-U", "events", "--auth=trust", "-E", "UTF8", "--no-sync")
        run("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync={'on' if fsync else 'off'} "
                  f"-c max_connections={MAX_CONNECTIONS}", "start")
        yield f"{postgres_scheme()}://events@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(Exception):
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
