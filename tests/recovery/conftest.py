"""Fixtures of the recovery tools' tests: the `events` command run in-process, test groups
registered under unique names, and a group's topics under the test's unique prefix."""

from __future__ import annotations

import uuid

import pytest
from click.testing import CliRunner

from dify_events.consumers import registry
from dify_events.consumers.cli import main
from tests.consumers import sample_handlers


@pytest.fixture
def cli(kafka_env, admin, monkeypatch):
    """``cli("replay", "--group", ...)`` runs the `events` command in this process (so it sees the
    groups the test registered) and returns click's result; ``ok=True`` (the default) asserts it
    exited 0. ``result.text`` is its output with the line wrapping undone. Topics the commands
    created under the test's prefix (the redrive ledger) are deleted afterwards."""
    monkeypatch.setenv("COLUMNS", "200")  # rich tables at full width

    def run(*args: str, ok: bool = True):
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        result.text = " ".join(result.output.split())  # type: ignore[attr-defined]  # this fixture's own attribute
        if ok:
            assert result.exit_code == 0, f"events {' '.join(args)} exited {result.exit_code}:\n{result.output}"
        return result

    yield run
    leftovers = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{kafka_env}.redriven.")]
    if leftovers:
        for future in admin.delete_topics(leftovers, operation_timeout=30).values():
            future.result(timeout=30)


@pytest.fixture
def registered():
    """``registered(group)`` makes the group known to `events` commands (for this test only)."""
    names: list[str] = []

    def register(group):
        registry.register(group)
        names.append(group.name)
        return group

    yield register
    for name in names:
        registry.unregister(name)


@pytest.fixture
def group_name():
    return f"rec-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topics_of(kafka_env, topic_factory):
    """``topics_of(group, partitions)``: creates the group's domain, retry and dead-letter topics."""

    def create(group, partitions: int = 1) -> None:
        for topic in group.domain_topics(kafka_env):
            topic_factory(topic, partitions=partitions)
        topic_factory(group.retry_topic(kafka_env), partitions=partitions)
        topic_factory(group.dlq_topic(kafka_env), partitions=1)

    return create


@pytest.fixture
def effects_url(tmp_path):
    """A SQLite database with the sample handler's table."""

    def create(name: str = "effects") -> str:
        url = f"sqlite:///{tmp_path / (name + '.db')}"
        sample_handlers.create_tables(url)
        return url

    return create
