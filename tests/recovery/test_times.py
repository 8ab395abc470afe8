"""Times and offsets as the operator types them: --since/--until and --from-offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dify_events.consumers.recovery.errors import BadOffsets, BadTime
from dify_events.consumers.recovery.positions import Position, parse_positions
from dify_events.consumers.recovery.times import parse_duration, parse_time, show, to_millis

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "before"), [
    ("2h", timedelta(hours=2)), ("30m", timedelta(minutes=30)), ("90s", timedelta(seconds=90)),
    ("1d", timedelta(days=1)), ("1w", timedelta(weeks=1)), ("1h30m", timedelta(minutes=90)),
    ("2h ago", timedelta(hours=2)), ("1.5h", timedelta(minutes=90)), (" 2H ", timedelta(hours=2)),
])
def test_a_relative_time_is_that_long_before_now(text, before):
    # Given a relative time  # When it is parsed  # Then it is that long before now
    assert parse_time(text, now=NOW) == NOW - before


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-03-01T10:00:00Z", datetime(2025, 3, 1, 10, tzinfo=UTC)),
    ("2025-03-01T10:00:00+02:00", datetime(2025, 3, 1, 8, tzinfo=UTC)),
    ("2025-03-01T10:00:00.250Z", datetime(2025, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)),
    ("1740823200000", datetime(2025, 3, 1, 10, tzinfo=UTC)),
    ("now", NOW),
])
def test_an_absolute_time_is_read_as_utc(text, expected):
    # Given ISO 8601 with a zone, epoch milliseconds, or "now"  # When parsed  # Then the UTC instant
    parsed = parse_time(text, now=NOW)
    assert parsed == expected and parsed.tzinfo is not None


def test_an_iso_time_without_a_zone_is_local_time_as_in_kafkas_own_tools():
    # Given a zoneless time  # When parsed
    parsed = parse_time("2025-03-01T10:00:00")
    # Then it is that wall-clock time in the machine's zone
    assert parsed == datetime(2025, 3, 1, 10).astimezone().astimezone(UTC)
    assert parse_time("2025-03-01") == datetime(2025, 3, 1).astimezone().astimezone(UTC)


@pytest.mark.parametrize("text", ["", "yesterday", "2", "2x", "h2", "12:00", "2025-13-01", "-2h"])
def test_what_is_not_a_time_is_refused_with_the_accepted_forms(text):
    # Given something that is not a time  # When parsed  # Then the error lists what would be
    with pytest.raises(BadTime) as caught:
        parse_time(text, now=NOW)
    assert "ISO 8601" in str(caught.value) or "epoch" in str(caught.value)


def test_durations_combine_units_and_refuse_junk():
    # Given durations  # Then they add up, and junk is refused
    assert parse_duration("1d2h") == timedelta(hours=26)
    with pytest.raises(BadTime):
        parse_duration("2 hours")


def test_times_print_in_utc_to_the_millisecond():
    # Given an instant in another zone  # When shown  # Then UTC with a Z, milliseconds kept
    moment = datetime(2025, 3, 1, 13, 0, 0, 123000, tzinfo=timezone(timedelta(hours=1)))
    assert show(moment) == "2025-03-01 12:00:00.123Z"
    assert show(to_millis(moment)) == "2025-03-01 12:00:00.123Z"
    assert show(None) == "-"


def test_offsets_are_read_from_a_list_with_dotted_topic_names():
    # Given a list naming partitions of dotted topics  # When parsed  # Then one position each, in order
    assert parse_positions("prod.app:0:10, prod.app:1:0,prod.retry.g-1:2:7") == [
        Position("prod.app", 0, 10), Position("prod.app", 1, 0), Position("prod.retry.g-1", 2, 7)]


def test_offsets_are_read_from_a_file_with_comments(tmp_path):
    # Given a file of offsets, one per line, with comments
    path = tmp_path / "offsets.txt"
    path.write_text("# taken before the deploy\nprod.app:0:10\nprod.app:1:12  # second\n\n")
    # When it is named with @ or by its path  # Then both read it
    expected = [Position("prod.app", 0, 10), Position("prod.app", 1, 12)]
    assert parse_positions(f"@{path}") == expected
    assert parse_positions(str(path)) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("prod.app:0", "topic:partition:offset"), ("prod.app:x:1", "topic:partition:offset"),
    (":0:1", "topic:partition:offset"), ("prod.app:0:-1", "topic:partition:offset"),
    ("prod.app:0:1,prod.app:0:2", "twice"), ("", "lists no offsets"), ("@/no/such/file", "cannot read"),
])
def test_bad_offsets_are_refused_saying_what_is_wrong(text, says):
    # Given a malformed list  # When parsed  # Then the error says what is wrong
    with pytest.raises(BadOffsets, match=says):
        parse_positions(text)
