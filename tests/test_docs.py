"""The documentation holds together: every relative link of a tracked Markdown page reaches a file
(and its heading, for a ``#fragment``), the README links every other page, and stays short."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def pages() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in tracked.stdout.split() if not line.startswith("dify_events/")]


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped but '-' and '_', spaces as '-'."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", FENCE.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", page.read_text())) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_its_file_and_heading(page):
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to nothing: {broken}"


def test_the_readme_is_short_and_links_every_other_page():
    readme = ROOT / "README.md"
    assert len(readme.read_bytes()) < 15_000
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in links(readme)}
    guides = [p for p in pages() if p.parent.name == "docs" or p.name == "README.md"]
    unlinked = [str(p.relative_to(ROOT)) for p in guides if p != readme and p.resolve() not in linked]
    assert not unlinked, f"pages the README does not link: {unlinked}"
