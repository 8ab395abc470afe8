"""The event catalogue: event types, topics, keys, versions and fingerprints; the folder's rules."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from avro.schema import _crc_64_fingerprint as avro_crc64  # the reference implementation's CRC-64-AVRO
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from dify_events.schemas.catalogue import AVRO_ROOT, CATALOGUE, Catalogue, crc64_avro, pascal_case
from dify_events.schemas.errors import CatalogueError, UnknownEventType, UnknownSchema
from dify_events.schemas.events import ALL_EVENTS, AppWasCreated, MessageWasCreated
from dify_events.schemas.samples import DATASET, sample_events

EXPECTED_KEYS = {
    "app_was_created": "app_id", "app_model_config_was_updated": "app_id",
    "app_published_workflow_was_updated": "app_id", "app_draft_workflow_was_synced": "app_id",
    "dataset_was_deleted": "dataset_id", "document_was_deleted": "dataset_id",
    "document_index_created": "dataset_id", "message_was_created": "conversation_id",
    "tenant_was_created": "tenant_id", "tenant_was_updated": "tenant_id",
    "feedback_was_created": "message_id", "app_was_deleted": "app_id", "app_was_updated": "app_id",
}


def test_every_event_type_has_its_domain_topic_and_key_field():
    # Given the catalogue loaded from schemas/avro
    # Then each seed event is there with its key field, and topics are <prefix>.<domain>
    assert {s.event_type: s.key_field for s in CATALOGUE} == EXPECTED_KEYS
    assert CATALOGUE.domains() == ["app", "dataset", "document", "message", "tenant"]
    assert CATALOGUE.topics("prod") == ["prod.app", "prod.dataset", "prod.document", "prod.message", "prod.tenant"]
    assert CATALOGUE.get("document_index_created").topic("dev") == "dev.document"


def test_look_ups_by_type_event_and_fingerprint():
    for event in sample_events():
        spec = CATALOGUE.for_event(event)
        assert spec is CATALOGUE.get(event.event_type) and spec.model is type(event)
        assert spec.key_of(event) == getattr(event, spec.key_field)
        # (a version that only adds docs or defaults shares its predecessor's fingerprint)
        found, version = CATALOGUE.by_fingerprint(spec.latest.fingerprint)
        assert found is spec and version.fingerprint == spec.latest.fingerprint
    document_events = [e for e in sample_events() if e.domain == "document"]
    assert {CATALOGUE.for_event(e).key_of(e) for e in document_events} == {DATASET}


def test_unknown_names_raise_errors_that_say_which():
    with pytest.raises(UnknownEventType, match="'app_was_archived'.*app_was_created"):
        CATALOGUE.get("app_was_archived")
    with pytest.raises(UnknownSchema, match="0102030405060708"):
        CATALOGUE.by_fingerprint(bytes(range(1, 9)))
    with pytest.raises(UnknownSchema, match="v9"):
        CATALOGUE.get("message_was_created").version(9)


def test_message_was_created_has_three_versions_with_distinct_fingerprints():
    spec = CATALOGUE.get("message_was_created")
    assert [v.version for v in spec.versions] == [1, 2, 3] and spec.latest.version == 3
    assert len({v.fingerprint for v in spec.versions}) == 3
    assert CATALOGUE.by_fingerprint(spec.versions[0].fingerprint)[1].version == 1


def test_fingerprints_are_crc64_avro_of_the_canonical_form_little_endian():
    # Given the specification's example: the canonical form "int"
    # Then its fingerprint is 0x7275d51a3f395c8f, written little-endian
    assert crc64_avro(b'"int"') == (0x7275D51A3F395C8F).to_bytes(8, "little")
    # And for every schema version, two other implementations agree with ours
    for spec in CATALOGUE:
        for version in spec.versions:
            assert version.canonical_form == to_parsing_canonical_form(version.raw)
            assert version.fingerprint == avro_crc64(version.canonical_form.encode())
            assert version.fingerprint.hex() == fastavro_fingerprint(version.canonical_form, "CRC-64-AVRO")
            assert len(version.fingerprint) == 8
            # the canonical form follows the spec: logical types stripped, primitives in simple form
            assert '"occurred_at","type":"long"' in version.canonical_form


def test_schema_files_follow_the_layout_and_carry_docs():
    for spec in CATALOGUE:
        for version in spec.versions:
            assert version.path == AVRO_ROOT / spec.domain / f"{spec.event_type}.v{version.version}.avsc"
            raw = version.raw
            assert raw["name"] == pascal_case(spec.event_type) == spec.model.__name__
            assert raw["namespace"] == f"io.dify.events.{spec.domain}"
            assert [f["name"] for f in raw["fields"][:3]] == ["event_id", "occurred_at", "tenant_id"]
            assert raw["fields"][1]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
            assert raw["doc"] and all(f["doc"] for f in raw["fields"])


# -- the folder's rules, on copies in tmp dirs ------------------------------------------------
@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "avro"
    shutil.copytree(AVRO_ROOT, root)
    return root


def edit(path: Path, change) -> None:
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def test_a_copy_of_the_folder_loads_like_the_package(folder):
    catalogue = Catalogue.load(folder)
    assert [s.event_type for s in catalogue] == [s.event_type for s in CATALOGUE]
    assert catalogue.get("app_was_created").latest.fingerprint == CATALOGUE.get("app_was_created").latest.fingerprint


@pytest.mark.parametrize(("breakage", "words"), [
    (lambda root: (root / "app/app_was_created.v1.avsc").rename(root / "app/app_was_created.avsc"),
     "named <event_type>.v<N>.avsc"),
    (lambda root: (root / "message/message_was_created.v2.avsc").rename(root / "message/message_was_created.v3.avsc"),
     "without gaps"),
    (lambda root: edit(root / "app/app_was_created.v1.avsc", lambda r: r.update(name="AppCreated")),
     "must be named 'AppWasCreated'"),
    (lambda root: edit(root / "app/app_was_created.v1.avsc", lambda r: r.update(namespace="io.dify.app")),
     "namespace 'io.dify.events.app'"),
    (lambda root: edit(root / "tenant/tenant_was_created.v1.avsc", lambda r: r["fields"].pop(0)),
     "envelope"),
    (lambda root: edit(root / "tenant/tenant_was_created.v1.avsc", lambda r: r["fields"][4].pop("doc")),
     "need a doc"),
    (lambda root: (root / "app/app_was_created.v1.avsc").write_text("{not json"), "cannot read"),
    (lambda root: edit(root / "app/app_was_created.v1.avsc", lambda r: r["fields"][3].update(type="strin")),
     "not a valid Avro schema"),
    (lambda root: shutil.move(root / "tenant", root / "account"), "in namespace 'io.dify.events.account'"),
    (lambda root: shutil.rmtree(root / "dataset"), "no schema for the event types"),
])
def test_a_folder_that_breaks_a_rule_does_not_load(folder, breakage, words):
    # Given a copy of the schema folder broken in one way
    breakage(folder)
    # When it is loaded / Then the error says what is wrong
    with pytest.raises(CatalogueError, match=re.escape(words)):
        Catalogue.load(folder)


def test_a_schema_without_a_model_does_not_load(folder):
    # Given the folder and every model but one
    models = [m for m in ALL_EVENTS if m is not AppWasCreated]
    # When loaded / Then the orphan schema is named
    with pytest.raises(CatalogueError, match="app_was_created has a schema but no model"):
        Catalogue.load(folder, models)


def test_catalogue_is_loaded_once_at_import():
    import dify_events.schemas.catalogue as module

    assert module.CATALOGUE is CATALOGUE
    assert CATALOGUE.for_event(MessageWasCreated) is CATALOGUE.get("message_was_created")
