"""What pyproject.toml declares: a library's ranges (a lower bound each, an upper bound only for a
known break), with the exact versions the suite runs on in constraints.txt and the lower bounds
in lowest.txt, which the compat run installs."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement

from .venvs import CONSTRAINTS, canonical, exact_pins, project

LOWEST = Path(__file__).parent / "lowest.txt"
KNOWN_BREAKS: dict[str, str] = {}  # distribution -> why it has an upper bound (none known so far)
COMPANIONS = {"psycopg-binary"}  # pinned in lowest.txt beside psycopg (constraints take no extras)


def library_requirements() -> list[Requirement]:
    """The dependencies and every extra an application may ask for (not the test tools)."""
    extras = project()["optional-dependencies"]
    return [Requirement(line) for line in project()["dependencies"] + [
        line for name, lines in extras.items() if name != "test" for line in lines]]


def test_every_requirement_is_a_range_whose_lower_bound_lowest_txt_installs():
    # Given the lowest versions the compat run installs
    lowest = exact_pins(LOWEST)
    for requirement in library_requirements():
        # Then each requirement has one lower bound, and no upper bound without a known break
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lower) == 1, f"{requirement}: a library's requirement is a range with a lower bound (>=)"
        capped = [spec for spec in requirement.specifier if spec.operator not in (">=", "!=")]
        assert not capped or canonical(requirement.name) in KNOWN_BREAKS, (
            f"{requirement}: an upper bound or a pin needs a known break, in KNOWN_BREAKS")
        # And lowest.txt pins exactly that lower bound
        assert lowest.get(canonical(requirement.name)) == lower[0], f"lowest.txt: {requirement.name}=={lower[0]}"
    # And it pins nothing else
    assert set(lowest) - {canonical(r.name) for r in library_requirements()} == COMPANIONS


def test_constraints_pin_every_requirement_inside_its_range():
    # Given the exact versions make, CI and the image install
    pins = exact_pins(CONSTRAINTS)
    test_tools = [Requirement(line) for line in project()["optional-dependencies"]["test"]]
    for requirement in library_requirements() + [r for r in test_tools if r.name != project()["name"]]:
        # Then each requirement is pinned, at a version its range allows
        pinned = pins.get(canonical(requirement.name))
        assert pinned is not None, f"constraints.txt pins no version of {requirement.name}"
        assert requirement.specifier.contains(pinned, prereleases=True), f"{requirement.name}=={pinned}: {requirement}"
