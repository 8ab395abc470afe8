"""The demo's verdicts: which dead letters are expected, and the digest of the domain tables."""

from __future__ import annotations

from sqlalchemy import create_engine, delete, insert

from dify_events.consumers import idempotency, registry
from dify_events.consumers.demo.checks import digest, every_event_claimed_once, match_dead_letters
from dify_events.consumers.demo.progress import GroupProgress
from dify_events.consumers.demo.run import Snapshot, groups_settled, twice_check
from dify_events.consumers.demo.workload import SIZES, ExpectedDeadLetter, build
from dify_events.consumers.domain import Tenant, create_all, utcnow
from dify_events.consumers.pipeline import dead_letters as DL
from dify_events.consumers.recovery.dead_letters import DeadLetter

POISON = ExpectedDeadLetter("provider-usage", "BadHeader", "garbage bytes without headers")


def letter(error_class: str, message: str, offset: int = 0) -> DeadLetter:
    headers = ((DL.ERROR_CLASS, error_class.encode()), (DL.ERROR_MESSAGE, message.encode()))
    return DeadLetter(0, offset, 0, None, b"x", headers, dict(headers))


def test_a_dead_letter_of_the_expected_group_and_error_is_the_poison():
    # Given the poison's dead letter and one nobody expected
    letters = {"provider-usage": [letter("dify_events.consumers.errors.BadHeader", "no event-type header")],
               "site-provisioner": [letter("RuntimeError", "boom")]}
    # When they are matched against the workload's expectations
    rows, missing = match_dead_letters(letters, [POISON])
    # Then the first is the poison, the second is unexpected, and nothing is missing
    assert [(r.group, r.error_class, r.expected) for r in rows] == [
        ("provider-usage", "BadHeader", POISON.what), ("site-provisioner", "RuntimeError", None)]
    assert missing == []


def test_poison_published_twice_is_expected_twice_and_missing_once_if_it_appears_once():
    rows, missing = match_dead_letters({"provider-usage": [letter("dify_events.consumers.errors.BadHeader", "m")]},
                                       [POISON],
                                       passes=2)
    assert rows[0].count == 1 and rows[0].expected == POISON.what
    assert missing == [POISON]


def test_the_same_error_of_another_group_is_not_the_poison():
    rows, missing = match_dead_letters({"document-indexer": [letter("dify_events.consumers.errors.BadHeader", "m")]},
                                       [POISON])
    assert rows[0].expected is None and missing == [POISON]


def test_the_digest_changes_with_the_data_and_only_with_it(tmp_path):
    # Given a domain database
    engine = create_engine(f"sqlite:///{tmp_path / 'd.db'}")
    create_all(engine)
    empty, counts = digest(engine)
    # Then its digest is stable, and a row changes it
    assert digest(engine)[0] == empty and set(counts.values()) == {0}
    with engine.begin() as conn:
        conn.execute(insert(Tenant), dict(id="t1", name="Acme", plan="basic", created_at=utcnow(),
                                          updated_at=utcnow()))
    changed, counts = digest(engine)
    assert changed != empty and counts["tenants"] == 1
    engine.dispose()


class Measurements:
    """A monitor's ``measurement_after`` answering with the given measurements in turn."""

    def __init__(self, *measurements):
        self.left = list(measurements)

    def measurement_after(self, instant, timeout_s):
        return self.left.pop(0) if self.left else None


def progress(handled: int = 5, lag: int = 0, in_flight: int | None = 0) -> dict[str, GroupProgress]:
    return {"document-indexer": GroupProgress("document-indexer", handled, lag, 0, 0, True, None, in_flight)}


def test_the_groups_are_settled_only_when_two_measurements_in_a_row_find_them_idle_and_agree():
    # an idle group measured twice alike
    assert groups_settled(Measurements(progress(), progress()), 0.0)
    # behind, busy, or still finishing messages between the two measurements: not settled
    assert not groups_settled(Measurements(progress(lag=1), progress()), 0.0)
    assert not groups_settled(Measurements(progress(in_flight=1), progress()), 0.0)
    assert not groups_settled(Measurements(progress(), progress(in_flight=2)), 0.0)
    assert not groups_settled(Measurements(progress(handled=5), progress(handled=6)), 0.0)
    assert not groups_settled(Measurements(progress()), 0.0)
    # a process whose health endpoint did not answer is judged by its lag and counts alone
    assert groups_settled(Measurements(progress(in_flight=None), progress()), 0.0)


def test_a_second_pass_that_changed_the_tables_says_which_and_which_groups_handled_events_anew():
    before = Snapshot("a", {"documents": 57, "document_segments": 300}, {"document-indexer": 20, "site-provisioner": 9})
    after = Snapshot("b", {"documents": 57, "document_segments": 312}, {"document-indexer": 21, "site-provisioner": 9})
    check = twice_check(before, after)
    assert not check.ok
    assert "document_segments 300 -> 312" in check.detail and "documents 57" not in check.detail
    assert "events handled anew in it: document-indexer +1" in check.detail
    assert twice_check(before, before).ok


def test_a_group_missing_the_claim_of_an_event_it_takes_or_holding_a_foreign_one_fails_the_claims_check(tmp_path):
    # Given the small workload and a database where every group claimed exactly the events it takes
    engine = create_engine(f"sqlite:///{tmp_path / 'claims.db'}")
    idempotency.create_table(engine)
    workload, groups = build(SIZES["small"]), registry.discover()
    rejected = {e.event_id for e in workload.expected_dead_letters if e.event_id}
    claims = [dict(group_name=g.name, idempotency_key=e.event_id, event_id=e.event_id, processed_at=utcnow())
              for g in groups for e in workload.events() if e.event_type in g.handlers and e.event_id not in rejected]
    with engine.begin() as conn:
        conn.execute(insert(idempotency.processed_events), claims)
    check = every_event_claimed_once(engine, workload, groups)
    assert check.ok, check.detail
    assert f"{len(claims):,} claims over {len(groups)} groups" in check.detail
    # When one claim goes missing and a claim of no such event appears
    lost = claims[len(claims) // 2]
    with engine.begin() as conn:
        conn.execute(delete(idempotency.processed_events).where(
            idempotency.processed_events.c.idempotency_key == lost["idempotency_key"],
            idempotency.processed_events.c.group_name == lost["group_name"]))
        conn.execute(insert(idempotency.processed_events), [dict(lost, idempotency_key="x", event_id="no-such-event")])
    # Then the check fails, naming the group and the event of each
    check = every_event_claimed_once(engine, workload, groups)
    assert not check.ok
    assert f"1 never handled ({lost['group_name']}: " in check.detail and lost["event_id"] in check.detail
    assert f"1 claims of no such event ({lost['group_name']}: no-such-event)" in check.detail
    engine.dispose()
