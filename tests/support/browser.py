"""A real headless Chromium for the console's tests: Debian's package, driven by Playwright.

The browser is never downloaded by Playwright: ``/usr/bin/chromium`` (installed with apt-get when
missing, as ``consumers/demo/postgres.py`` installs PostgreSQL) is launched by its path."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> Path:
    """Debian's chromium, installed now if missing (we are root on the test machines)."""
    if not CHROMIUM.exists():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeError("the console's browser tests need Chromium: apt-get install chromium")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env, stdout=subprocess.DEVNULL)
    return CHROMIUM
