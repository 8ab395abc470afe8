"""The `events` tables stay readable in an 80-column terminal: one line per row, no cell broken
into fragments (the error class stays whole), every line within 80 columns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from rich.console import Console

from dify_events.consumers.cli import main
from dify_events.consumers.cli.dlq import letters_table
from dify_events.consumers.cli.replay import plan_table
from dify_events.consumers.pipeline import dead_letters as DL
from dify_events.consumers.recovery.dead_letters import DeadLetter
from dify_events.consumers.recovery.plan import REWIND, Range, ReplayPlan, Request
from dify_events.schemas import headers as H
from dify_events.schemas.settings import get_settings

PREFIX = "demo20261206215130fe04"


def rendered(renderable) -> list[str]:
    console = Console(width=80, record=True, color_system=None, legacy_windows=False)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get().splitlines()


def letter(offset: int, error_class: str, event_type: str, message: str) -> DeadLetter:
    headers = ((H.EVENT_TYPE, event_type.encode()), (DL.ERROR_CLASS, error_class.encode()),
               (DL.ERROR_MESSAGE, message.encode()), (DL.ATTEMPTS, b"5"))
    return DeadLetter(0, offset, 1_764_000_000_000 + offset, b"key", b"value", headers, dict(headers))


def test_dead_letters_fit_80_columns_with_each_error_class_on_one_line():
    # Given dead letters with long event types, module paths and messages
    letters = [letter(0, "dify_events.schemas.errors.NotSingleObjectEncoded", "app_published_workflow_was_updated",
                      "not Avro single-object encoded: expected the marker c301 and an 8-byte fingerprint " * 3),
               letter(17, "dify_events.consumers.handlers.document_indexer.DocumentNotFound", "document_index_created",
                      "document 4f1c… of dataset 9a2b… is gone"),
               letter(123456, "RuntimeError", "message_was_created", "boom")]

    # When the table is drawn 80 columns wide
    lines = rendered(letters_table(letters, title=f"dead letters of provider-usage ({PREFIX}.dlq.provider-usage)",
                                   width=80))

    # Then every line fits, each letter is one line, and each error class is whole on its letter's line
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    body = [line for line in lines if "│" in line and "┃" not in line]
    assert len(body) == 3, "\n".join(lines)
    for line, name in zip(body, ("NotSingleObjectEncoded", "DocumentNotFound", "RuntimeError"), strict=True):
        assert name in line, f"{name} is cut or wrapped:\n" + "\n".join(lines)
    assert "123456" in body[2] and "app_published_wor…" in body[0]


def test_a_replay_plan_fits_80_columns_with_its_notes_below():
    # Given a plan over long topic names, with notes
    ranges = [Range(f"{PREFIX}.document", 0, 120, 480, 480),
              Range(f"{PREFIX}.retry.document-indexer", 11, 0, 0, None,
                    "no committed offset: the group reads this partition from its beginning anyway")]
    plan = ReplayPlan("document-indexer", f"{PREFIX}.document-indexer", REWIND, "the group is stopped",
                      Request(since=datetime(2026, 3, 1, tzinfo=UTC)), None, False, "EMPTY", [], [], ranges)

    # When it is drawn 80 columns wide
    table, notes = plan_table(plan, dry_run=True)
    lines = rendered(table)

    # Then each partition is one line within 80 columns, and the note is numbered, not squeezed in
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert [line for line in lines if "│" in line and " 480 " in line], "\n".join(lines)
    assert notes == [] or all("[1]" not in line or len(line) <= 80 for line in lines)


@pytest.fixture
def prefixed(monkeypatch) -> Iterator[str]:
    """The settings (cached per process) read afresh with this test's topic prefix."""
    monkeypatch.setenv("EVENTS_TOPIC_PREFIX", PREFIX)
    get_settings.cache_clear()
    yield PREFIX
    get_settings.cache_clear()


def test_schemas_list_fits_80_columns_and_offers_json(monkeypatch, prefixed):
    # When the catalogue is listed in an 80-column terminal, and as JSON
    monkeypatch.setenv("COLUMNS", "80")
    table = CliRunner().invoke(main, ["schemas", "list"])
    as_json = CliRunner().invoke(main, ["schemas", "list", "--output", "json"])

    # Then every event type is whole on its own line, within 80 columns
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert all(len(line) <= 80 for line in lines), table.output
    for name in ("app_published_workflow_was_updated", "message_was_created", "conversation_id"):
        assert any(name in line for line in lines), table.output
    entries = json.loads(as_json.output)
    assert {e["event_type"]: e["topic"] for e in entries}["message_was_created"] == f"{PREFIX}.message"
