"""The Dockerfile, checked without a Docker engine: it parses, it is multi-stage, it ends as a
non-root user with `events` as its entry point, and everything it copies is in the build
context (present in the repository, not excluded by .dockerignore)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}


@dataclass
class Instruction:
    line: int
    keyword: str
    arguments: str

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """`--flag=value` options, then the remaining words (exec form or shell form)."""
        text = self.arguments
        flags: dict[str, str] = {}
        while (match := re.match(r"--([a-z-]+)(?:=(\S+))?\s+", text)):
            flags[match[1]] = match[2] or ""
            text = text[match.end():]
        if text.startswith("["):
            return flags, json.loads(text)
        return flags, shlex.split(text)


def parse(text: str) -> list[Instruction]:
    """Joins continued lines, drops comments and blank lines (as Docker's parser does)."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical = pending + stripped
        pending = ""
        keyword, _, arguments = logical.partition(" ")
        instructions.append(Instruction(start, keyword, arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def stages(instructions: list[Instruction]) -> list[tuple[str, list[Instruction]]]:
    result: list[tuple[str, list[Instruction]]] = []
    for instruction in instructions:
        if instruction.keyword.upper() == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            result.append((name, []))
        elif result:
            result[-1][1].append(instruction)
    return result


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stay within a path segment, `**` spans
    any number of them (Go's filepath.Match, with Docker's `**` extension)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context: a pattern excludes what it
    matches and everything under it; a later `!pattern` takes a path back."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_every_instruction_is_a_dockerfile_instruction(instructions):
    # Then
    assert instructions
    unknown = [(i.line, i.keyword) for i in instructions if i.keyword.upper() not in INSTRUCTIONS]
    assert not unknown, f"unknown instructions: {unknown}"
    assert all(i.keyword == i.keyword.upper() for i in instructions), "instructions are written upper-case"
    first = next(i for i in instructions if i.keyword != "ARG")
    assert first.keyword == "FROM", "only ARG may come before the first FROM"


def test_image_is_multi_stage_on_python_3_11(instructions):
    # When
    built = stages(instructions)

    # Then
    assert len(built) >= 2, "a build stage and a runtime stage"
    assert all(name for name, _ in built), "every stage is named: FROM <image> AS <name>"
    args = dict(i.arguments.split("=", 1) for i in instructions if i.keyword == "ARG" and "=" in i.arguments)
    bases = {i.arguments.split()[0] for i in instructions if i.keyword == "FROM"}
    for base in bases:
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], base)
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base


def test_runtime_stage_is_non_root_with_events_as_entry_point(instructions):
    # Given
    name, runtime = stages(instructions)[-1]

    # Then
    users = [i.arguments for i in runtime if i.keyword == "USER"]
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    (entrypoint,) = [i for i in runtime if i.keyword == "ENTRYPOINT"]
    _, words = entrypoint.flags_and_words()
    assert entrypoint.arguments.startswith("["), "exec form, so `events` is PID 1 and gets SIGTERM"
    assert words == ["events"]
    assert not [i for i in runtime if i.keyword in {"RUN"} and "pip install" in i.arguments], (
        "the runtime stage only copies the built environment")


def test_copies_read_existing_files_of_the_build_context(instructions, ignore_patterns):
    # Given
    stage_names = {name for name, _ in stages(instructions)}
    copied_from_context = []

    # When
    for _, body in stages(instructions):
        for instruction in body:
            if instruction.keyword not in {"COPY", "ADD"}:
                continue
            flags, words = instruction.flags_and_words()
            sources = words[:-1]
            assert sources, f"line {instruction.line}: {instruction.keyword} needs a source and a destination"
            if "from" in flags:
                assert flags["from"] in stage_names, f"line {instruction.line}: unknown stage {flags['from']}"
                continue
            copied_from_context += [(instruction.line, source) for source in sources]

    # Then
    assert copied_from_context
    for line, source in copied_from_context:
        assert (REPO / source).exists(), f"line {line}: COPY {source}: no such path in the repository"
        assert not ignored(source, ignore_patterns), f"line {line}: COPY {source}: excluded by .dockerignore"


def test_the_project_and_its_packages_are_copied(instructions):
    # Then
    copied = " ".join(i.arguments for i in instructions if i.keyword == "COPY")
    for needed in ("pyproject.toml", "README.md", "schemas", "producers", "consumers"):
        assert needed in copied, f"{needed} is needed by `pip install .`"


@pytest.mark.parametrize("path", [".venv/bin/python", ".git/HEAD", ".pytest_cache/v", ".hypothesis/examples",
                                  ".events/broker/data", "consumers/__pycache__/x.pyc", "tests/conftest.py",
                                  "dify_events.egg-info/PKG-INFO"])
def test_dockerignore_keeps_local_state_out(ignore_patterns, path):
    # Then
    assert ignored(path, ignore_patterns), path


def test_dockerignore_parser_keeps_what_is_not_ignored(ignore_patterns):
    # Then: the checks above would pass vacuously if everything counted as ignored
    for path in ("pyproject.toml", "README.md", "consumers/cli/__init__.py", "schemas/topics.yaml"):
        assert not ignored(path, ignore_patterns), path


def test_the_image_installs_the_projects_wheel_at_the_pinned_versions(instructions):
    # Given the shell commands of each stage
    commands = {name: [command.strip() for i in body if i.keyword == "RUN" for command in i.arguments.split("&&")]
                for name, body in stages(instructions)}
    everything = [command for stage in commands.values() for command in stage]

    # Then a stage builds the project's wheel, the way it is published (no source or editable install anywhere)
    assert any(re.fullmatch(r"pip wheel --no-deps --wheel-dir \S+ \.", command) for command in everything)
    assert not [c for c in everything if re.search(r"pip install .*(\s-e\s|--editable|\s\.(\s|$))", c)]
    # And the environment the runtime stage copies installs that wheel, with both PostgreSQL drivers
    (source,) = [i.flags_and_words()[0]["from"] for i in stages(instructions)[-1][1] if i.keyword == "COPY"]
    wheel = [re.search(r'"\$\(ls \S+/dify_events-\*\.whl\)\[([\w,]+)\]"', c) for c in commands[source]]
    (extras,) = [match[1] for match in wheel if match]
    assert set(extras.split(",")) == {"psycopg", "psycopg2"}
    # And every install takes the exact versions of constraints.txt, which the stage copies
    installs = [c for c in everything if c.startswith("pip install")]
    assert installs and all("-c constraints.txt" in c for c in installs), installs
    copied = [w for i in dict(stages(instructions))[source] if i.keyword == "COPY" for w in i.flags_and_words()[1]]
    assert "constraints.txt" in copied
