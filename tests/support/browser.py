"""A real headless Chromium for the console's tests: Debian's package, driven by Playwright.

The browser is never downloaded by Playwright: ``/usr/bin/chromium`` (installed with apt-get when
missing, as ``consumers/demo/postgres.py`` installs PostgreSQL) is launched by its path."""

from __future__ import annotations

from pathlib import Path

from dify_events.consumers.demo.postgres import install_debian_package

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> Path:
    """Debian's chromium, installed now if missing (we are root on the test machines)."""
    if not CHROMIUM.exists():
        install_debian_package("chromium")
    return CHROMIUM
