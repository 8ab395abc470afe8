"""`events run`: choosing groups, listing them, and saying clearly what is wrong."""

from __future__ import annotations

from click.testing import CliRunner

from consumers.cli import main


def test_list_shows_registered_groups_with_their_topics(monkeypatch):
    # Given the sample handler module, and a topic prefix
    monkeypatch.setenv("EVENTS_HANDLER_MODULES", "tests.consumers.sample_handlers")
    monkeypatch.setenv("EVENTS_TOPIC_PREFIX", "env1")
    from schemas.settings import get_settings
    get_settings.cache_clear()
    # When the groups are listed
    result = CliRunner().invoke(main, ["run", "--list"], env={"COLUMNS": "250"})
    get_settings.cache_clear()
    # Then the sample group is there with its subscriptions and dead-letter topic
    assert result.exit_code == 0, result.output
    assert "sample-recorder" in result.output
    assert "env1.app" in result.output and "env1.retry.sample-recorder" in result.output
    assert "env1.dlq.sample-recorder" in result.output


def test_an_unknown_group_is_one_red_line_naming_the_known_ones(monkeypatch):
    monkeypatch.setenv("EVENTS_HANDLER_MODULES", "tests.consumers.sample_handlers")
    result = CliRunner().invoke(main, ["run", "--group", "no-such-group"])
    assert result.exit_code == 1
    assert "no consumer group is named 'no-such-group'" in result.output
    assert "sample-recorder" in result.output
    assert "Traceback" not in result.output


def test_group_and_all_are_exclusive():
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 2 and "exactly one of --group NAME or --all" in result.output
