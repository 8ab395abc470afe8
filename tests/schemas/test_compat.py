"""Schema evolution: `events schemas check` accepts full-transitive compatible changes and rejects,
naming the event, versions and field, each kind of incompatible one. Candidates are built in tmp
copies of the schema folder, as a person would add a new version file."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dify_events.consumers.cli import main
from dify_events.schemas.catalogue import AVRO_ROOT
from dify_events.schemas.compat import check_folder, check_versions

TENANT_V1 = json.loads((AVRO_ROOT / "tenant" / "tenant_was_created.v1.avsc").read_text())


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "avro"
    shutil.copytree(AVRO_ROOT, root)
    return root


def add_version(root: Path, change, base: dict = TENANT_V1, version: int = 2) -> None:
    """Writes tenant_was_created.v<version>.avsc: ``base`` changed by ``change``."""
    schema = copy.deepcopy(base)
    change(schema)
    (root / "tenant" / f"tenant_was_created.v{version}.avsc").write_text(json.dumps(schema, indent=2))


def field(schema: dict, name: str) -> dict:
    return next(f for f in schema["fields"] if f["name"] == name)


def drop(schema: dict, name: str) -> None:
    schema["fields"] = [f for f in schema["fields"] if f["name"] != name]


def run_check(root: Path | None = None):
    args = ["schemas", "check"] + (["--root", str(root)] if root else [])
    return CliRunner().invoke(main, args)


def test_the_repository_schemas_pass():
    # Given the schemas as committed / When checked / Then they pass (exit 0)
    result = run_check()
    assert result.exit_code == 0, result.output
    assert "13 event types, 22 schema versions" in result.output
    assert check_folder().ok


# -- incompatible changes: each rejected, naming event, versions and field --------------------
def new_field_without_default(s):
    s["fields"].append({"name": "region", "type": "string", "doc": "Where the tenant lives."})


def removed_field_without_default(s):
    drop(s, "tenant_name")


def incompatible_type_change(s):
    field(s, "tenant_name")["type"] = "long"


def renamed_field_without_alias(s):
    field(s, "tenant_name")["name"] = "name"


def renamed_field_with_alias_but_no_default(s):
    f = field(s, "tenant_name")
    f["name"], f["aliases"] = "name", ["tenant_name"]


def union_branch_added(s):
    field(s, "created_by")["type"] = ["null", "string", "long"]


def optional_made_required(s):
    f = field(s, "created_by")
    f["type"] = "string"
    del f["default"]


def logical_type_changed(s):
    field(s, "occurred_at")["type"] = {"type": "long", "logicalType": "timestamp-micros"}


def record_renamed(s):
    s["name"] = "TenantCreated"


@pytest.mark.parametrize(("change", "direction", "field_name", "words"), [
    (new_field_without_default, "backward", "region", "added in v2 without a default"),
    (removed_field_without_default, "forward", "tenant_name", "no longer writes it"),
    (incompatible_type_change, "backward", "tenant_name", "type changed from string to long"),
    (renamed_field_without_alias, "backward", "name", "if it and tenant_name are one field renamed"),
    (renamed_field_with_alias_but_no_default, "forward", "tenant_name", "v1 has it without a default"),
    (union_branch_added, "forward", "created_by", "the writer's long matches no branch"),
    (optional_made_required, "backward", "created_by", "type changed from null to string"),
    (logical_type_changed, "backward", "occurred_at", "timestamp-millis to timestamp-micros"),
])
def test_an_incompatible_change_is_rejected_naming_the_field(folder, change, direction, field_name, words):
    # Given a candidate v2 of tenant_was_created with one incompatible change
    add_version(folder, change)
    # When the folder is checked
    report = check_folder(folder)
    # Then the change is reported for that event, those versions, that field and direction
    found = [i for i in report.incompatibilities if i.path == field_name and i.direction == direction]
    assert found, [str(i) for i in report.incompatibilities]
    assert any(words in str(i) for i in found), [str(i) for i in found]
    assert all(i.event_type == "tenant_was_created" and (i.latest, i.other) == (2, 1) for i in found)
    # And `events schemas check` fails with that sentence
    result = run_check(folder)
    assert result.exit_code == 1
    assert f"tenant_was_created: v2 is not {direction} compatible with v1" in result.output
    assert f"field '{field_name}'" in result.output


def test_a_renamed_record_is_rejected():
    report = check_versions("tenant_was_created", {1: TENANT_V1, 2: {**TENANT_V1, "name": "TenantCreated"}})
    assert any("record name changed from TenantWasCreated to TenantCreated" in str(i) for i in report)


def test_widening_int_to_long_is_only_backward_compatible():
    # Given v1 with an int field and v2 with it as long
    v1 = copy.deepcopy(TENANT_V1)
    v1["fields"].append({"name": "seats", "type": "int", "default": 0, "doc": "Seats."})
    v2 = copy.deepcopy(v1)
    field(v2, "seats")["type"] = "long"
    # When checked / Then v2 reads v1 (a promotion), but v1 cannot read v2: not full
    found = check_versions("tenant_was_created", {1: v1, 2: v2})
    assert [(i.direction, i.path) for i in found] == [("forward", "seats")]
    assert "type changed from long to int" in str(found[0])


def enum_schema(symbols: list[str], default: str | None) -> dict:
    schema = copy.deepcopy(TENANT_V1)
    enum = {"type": "enum", "name": "Plan", "symbols": symbols}
    if default:
        enum["default"] = default
    schema["fields"].append({"name": "tier", "type": enum, "default": symbols[0], "doc": "The tier."})
    return schema


def test_an_enum_symbol_added_without_a_default_is_rejected():
    found = check_versions("tenant_was_created", {1: enum_schema(["basic", "team"], None),
                                                  2: enum_schema(["basic", "team", "enterprise"], None)})
    assert [(i.direction, i.path) for i in found] == [("forward", "tier")]
    assert "enum symbols enterprise are unknown to the reader" in str(found[0])


def test_an_enum_symbol_added_with_a_default_is_accepted():
    assert check_versions("tenant_was_created", {1: enum_schema(["basic", "team"], "basic"),
                                                 2: enum_schema(["basic", "team", "enterprise"], "basic")}) == []


def test_transitive_the_latest_is_checked_against_every_earlier_version(folder):
    # Given v2 that removes created_by (it had a default: fine against v1), and v3 that brings
    # created_by back as a long with a default (fine against v2, which has no such field)
    add_version(folder, lambda s: drop(s, "created_by"))
    add_version(folder, lambda s: (drop(s, "created_by"),
                                   s["fields"].append({"name": "created_by", "type": "long", "default": 0,
                                                       "doc": "Now a number."})), version=3)
    report = check_folder(folder, ["tenant_was_created"])
    pairs = {(i.latest, i.other) for i in report.incompatibilities}
    # When checked / Then v3 is compared with v1 too, and the conflict there (string vs long) is
    # found, though v2 and v3 agree
    assert pairs == {(3, 1)}
    assert all(i.path == "created_by" for i in report.incompatibilities)


# -- compatible changes: accepted -------------------------------------------------------------
def new_optional_field(s):
    s["fields"].append({"name": "region", "type": ["null", "string"], "default": None, "doc": "Region."})


def new_field_with_default(s):
    s["fields"].append({"name": "seats", "type": "long", "default": 5, "doc": "Seats."})


def removed_field_with_default(s):
    drop(s, "created_by")


def renamed_with_alias_and_default(s):
    f = field(s, "created_by")
    f["name"], f["aliases"] = "creator", ["created_by"]


def string_to_bytes(s):
    field(s, "tenant_name")["type"] = "bytes"


def docs_and_order_changed(s):
    s["doc"] = "Reworded."
    s["fields"][3:] = list(reversed(s["fields"][3:]))


def nested_record_with_defaults(s):
    s["fields"].append({"name": "owner", "type": ["null", {"type": "record", "name": "Owner", "fields": [
        {"name": "id", "type": "string", "doc": "The owner's id."}], "doc": "An owner."}],
        "default": None, "doc": "The owner."})


@pytest.mark.parametrize("change", [
    new_optional_field, new_field_with_default, removed_field_with_default, renamed_with_alias_and_default,
    string_to_bytes, docs_and_order_changed, nested_record_with_defaults,
])
def test_a_compatible_change_is_accepted(folder, change):
    # Given a candidate v2 with a change Avro resolves both ways
    add_version(folder, change)
    # When checked / Then it passes
    report = check_folder(folder)
    assert report.ok, [str(i) for i in report.incompatibilities] + report.problems
    result = run_check(folder)
    assert result.exit_code == 0, result.output


def test_a_broken_file_is_a_problem_not_a_crash(folder):
    (folder / "tenant" / "tenant_was_created.v2.avsc").write_text('{"type": "record"')
    (folder / "tenant" / "tenant_was_updated.v3.avsc").write_text(
        (folder / "tenant" / "tenant_was_updated.v1.avsc").read_text())
    result = run_check(folder)
    assert result.exit_code == 1
    assert "cannot read the schema" in result.output and "without gaps" in result.output


def test_array_items_are_checked_with_their_path(folder):
    # Given v2 of app_draft_workflow_was_synced whose tool nodes gain a required field
    base = json.loads((folder / "app" / "app_draft_workflow_was_synced.v1.avsc").read_text())
    v2 = copy.deepcopy(base)
    field(v2, "tool_nodes")["type"]["items"]["fields"].append({"name": "credential_id", "type": "string",
                                                                 "doc": "The credential."})
    (folder / "app" / "app_draft_workflow_was_synced.v2.avsc").write_text(json.dumps(v2))
    # When checked / Then the nested path is named
    report = check_folder(folder, ["app_draft_workflow_was_synced"])
    assert [(i.direction, i.path) for i in report.incompatibilities] == [("backward", "tool_nodes[].credential_id")]
