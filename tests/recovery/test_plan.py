"""Planning replays and re-drives without a broker: the rules that decide what is read again."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from dify_events.consumers.group import ConsumerGroup
from dify_events.consumers.pipeline import dead_letters as DL
from dify_events.consumers.recovery import plan as P
from dify_events.consumers.recovery.dead_letters import DeadLetter, Selection, header_text, parse_position
from dify_events.consumers.recovery.errors import BadSelection, GroupActive, NotReplaySafe
from dify_events.consumers.recovery.kafka import Member
from dify_events.consumers.recovery.positions import Position
from dify_events.consumers.recovery.redrive import REDRIVEN_FROM, redrive_headers
from dify_events.consumers.recovery.replay import REPLAYED_FROM, RUN, check_replay_safe, copy_headers
from dify_events.schemas import headers as H
from dify_events.schemas.events import AppWasCreated, TenantWasCreated

T = datetime(2025, 3, 1, 12, tzinfo=UTC)


def facts(start, committed, *, low=0, high=100, stop=None, note=""):
    return P.PartitionFacts("p.app", 0, low, high, committed, start, stop, note)


# -- rewind ----------------------------------------------------------------------------------
def test_a_rewind_sets_the_group_back_from_the_start_to_where_it_had_read():
    # Given a group that read up to 80, and a start at 50  # When planned  # Then 50..80 is re-read
    r = P.plan_range(P.REWIND, facts(50, 80))
    assert (r.start, r.end, r.messages) == (50, 80, 30)


def test_a_rewind_never_moves_a_group_forward():
    # Given a group behind the start (it read up to 40, the start is 50)  # When planned
    r = P.plan_range(P.REWIND, facts(50, 40))
    # Then nothing changes: moving it to 50 would skip 40..49
    assert r.messages == 0 and "not got this far" in r.note


def test_a_partition_without_a_committed_offset_is_left_alone():
    # Given a partition the group never committed  # When planned either way  # Then nothing: it reads it all anyway
    assert P.plan_range(P.REWIND, facts(10, None)).messages == 0
    assert P.plan_range(P.COPY, facts(10, None)).messages == 0


# -- copy ------------------------------------------------------------------------------------
def test_a_copy_ends_at_until_when_it_is_before_the_groups_offset():
    # Given a group at 90 and --until at offset 70  # When planned  # Then 50..70
    r = P.plan_range(P.COPY, facts(50, 90, stop=70))
    assert (r.start, r.end, r.messages) == (50, 70, 20)


def test_a_copy_stops_at_the_groups_offset_what_lies_beyond_it_reads_itself():
    # Given a group at 60 in a partition that ends at 100  # When planned without --until
    r = P.plan_range(P.COPY, facts(50, 60))
    # Then 50..60 only, and the note says why
    assert (r.start, r.end) == (50, 60) and "group's offset" in r.note


def test_a_copy_of_an_empty_time_range_copies_nothing():
    # Given --since and --until that resolve to the same offset  # Then nothing to copy
    r = P.plan_range(P.COPY, facts(50, 90, stop=50))
    assert r.messages == 0 and "no messages" in r.note


def test_a_partition_the_request_does_not_name_is_not_selected():
    assert P.plan_range(P.COPY, facts(None, 90)).note == "not selected"


# -- which mode --------------------------------------------------------------------------------
MEMBER = Member("events-g-host-1", "/10.0.0.7", "m-1")


def choose(copy=None, *, reprocess=False, until=False, members=()):
    return P.choose_mode(copy=copy, reprocess=reprocess, until=until, members=list(members), group_id="p.g")


def test_a_stopped_group_is_rewound():
    # Given a group without members  # When neither --copy nor --rewind is given  # Then it is rewound
    mode, why = choose()
    assert mode == P.REWIND and "stopped" in why


def test_a_running_group_gets_the_range_copied_without_being_asked():
    # Given a group with a member  # When neither --copy nor --rewind is given
    mode, why = choose(members=[MEMBER])
    # Then the range is copied, and the reason says the group is running
    assert mode == P.COPY and "running, with 1 member(s)" in why and "live traffic" in why


def test_until_on_a_stopped_group_copies_because_a_rewind_cannot_stop_at_an_end():
    mode, why = choose(until=True)
    assert mode == P.COPY and "--until" in why and "cannot stop at an end" in why


def test_copy_and_reprocess_copy_whether_the_group_runs_or_not():
    for members in ([], [MEMBER]):
        assert choose(True, members=members)[0] == P.COPY
        assert choose(True, until=True, members=members)[0] == P.COPY
        mode, why = choose(reprocess=True, members=members)
        assert mode == P.COPY and "events-reprocess" in why
        assert choose(True, reprocess=True, members=members)[0] == P.COPY
    # And a copy of a running group says that it keeps serving live traffic
    assert "keeps serving live traffic" in choose(True, members=[MEMBER])[1]


def test_rewind_on_a_stopped_group_rewinds():
    assert choose(False)[0] == P.REWIND


def test_rewind_on_a_running_group_is_refused_and_the_error_names_its_members():
    # Given a group with a member  # When --rewind is asked  # Then refused, naming the member, offering a copy
    with pytest.raises(GroupActive) as caught:
        choose(False, members=[MEMBER])
    message = str(caught.value)
    assert "p.g has 1 active member(s): events-g-host-1 on 10.0.0.7" in message and "drop --rewind" in message


def test_rewind_refuses_until_and_reprocess():
    with pytest.raises(BadSelection, match="--until cannot end a rewind"):
        choose(False, until=True)
    with pytest.raises(BadSelection, match="events-reprocess"):
        choose(False, reprocess=True)


def test_a_request_has_exactly_one_start_and_ends_after_it_starts():
    with pytest.raises(BadSelection, match="exactly one start"):
        P.Request()
    with pytest.raises(BadSelection, match="exactly one start"):
        P.Request(since=T, from_beginning=True)
    with pytest.raises(BadSelection, match="later than"):
        P.Request(since=T, until=T)
    assert P.Request(positions=(Position("p.app", 0, 1),)).describe() == "from the given offsets"


# -- the group's side --------------------------------------------------------------------------
def group(**options) -> ConsumerGroup:
    g = ConsumerGroup("g1")
    g.handler(AppWasCreated, **options)(lambda e, c: None)
    g.handler(TenantWasCreated)(lambda e, c: None)
    return g


def test_the_group_replays_its_domain_topics_and_its_retry_topic_or_the_one_named():
    g = group()
    assert P.select_topics(g, "p", None) == ["p.app", "p.tenant", "p.retry.g1"]
    assert P.select_topics(g, "p", "app") == ["p.app"]
    assert P.select_topics(g, "p", "p.retry.g1") == ["p.retry.g1"]
    with pytest.raises(BadSelection, match="does not read"):
        P.select_topics(g, "p", "dataset")


def test_a_group_with_a_handler_not_replay_safe_needs_force():
    # Given a handler declared replay_safe=False (an option the group owns)
    g = group(replay_safe=False)
    unsafe = sorted(h.name for h in g.handlers.values() if not h.option("replay_safe"))
    plan = P.ReplayPlan("g1", "p.g1", P.COPY, "", P.Request(since=T), "p.retry.g1", False, "EMPTY", [], unsafe)
    # When checked without --force  # Then refused, naming it; with --force it passes
    with pytest.raises(NotReplaySafe, match="replay_safe=False"):
        check_replay_safe(plan, force=False)
    check_replay_safe(plan, force=True)


# -- headers of copies ---------------------------------------------------------------------------
def test_a_replay_copy_keeps_the_headers_says_where_it_came_from_and_sets_reprocess_only_when_asked():
    original = [(H.EVENT_TYPE, b"app_was_created"), (H.EVENT_ID, b"e1"), (H.REPROCESS, b"1"), ("x", b"y")]
    plain = dict(copy_headers(original, source="p.app:0:7", run="r1", reprocess=False))
    assert plain[H.EVENT_ID] == b"e1" and plain["x"] == b"y"
    assert plain[REPLAYED_FROM] == b"p.app:0:7" and plain[RUN] == b"r1"
    assert H.REPROCESS not in plain  # never inherited from an earlier replay
    assert dict(copy_headers(original, source="p.app:0:7", run="r1", reprocess=True))[H.REPROCESS] == b"1"


def letter(headers, *, partition=0, offset=3, timestamp=1_740_830_400_000) -> DeadLetter:
    headers = tuple(headers)
    return DeadLetter(partition, offset, timestamp, b"k", b"v", headers, dict(headers))


DEAD = [
    (H.EVENT_TYPE, b"app_was_created"), (H.EVENT_ID, b"e1"), (H.ATTEMPT, b"2"),
    (DL.ORIGIN_TOPIC, b"p.app"), (DL.ORIGIN_PARTITION, b"1"), (DL.ORIGIN_OFFSET, b"42"),
    (DL.DLT_ORIGINAL_TOPIC, b"p.app"), (DL.DLT_ORIGINAL_PARTITION, struct.pack(">i", 1)),
    (DL.DLT_ORIGINAL_OFFSET, struct.pack(">q", 42)),
    (DL.GROUP, b"g1"), (DL.HANDLER, b"m.h"), (DL.ERROR_CLASS, b"myapp.errors.BugError"),
    (DL.ERROR_MESSAGE, b"boom"), (DL.ATTEMPTS, b"5"), (DL.DLT_EXCEPTION_FQCN, b"myapp.errors.BugError"),
]


def test_a_redrive_copy_keeps_origin_headers_and_the_attempt_count_and_drops_the_failure():
    # Given a dead letter after 5 attempts
    out = redrive_headers(letter(DEAD), dlq_topic="p.dlq.g1", run="r2")
    named = dict(out)
    # Then the origin is kept, the attempts carry on, the failure's own headers are gone
    assert named[DL.ORIGIN_OFFSET] == b"42" and named[DL.DLT_ORIGINAL_OFFSET] == struct.pack(">q", 42)
    assert named[H.ATTEMPT] == b"5" and [k for k, _ in out].count(H.ATTEMPT) == 1
    assert not {DL.ERROR_CLASS, DL.ATTEMPTS, DL.HANDLER, DL.DLT_EXCEPTION_FQCN} & named.keys()
    assert named[REDRIVEN_FROM] == b"p.dlq.g1:0:3" and named[RUN] == b"r2"


def test_a_dead_letter_reads_our_headers_and_falls_back_to_springs():
    ours = letter(DEAD)
    assert (ours.error_class, ours.attempts, ours.origin) == ("myapp.errors.BugError", 5, "p.app[1]@42")
    spring = letter([(DL.DLT_ORIGINAL_TOPIC, b"orders"), (DL.DLT_ORIGINAL_PARTITION, struct.pack(">i", 2)),
                     (DL.DLT_ORIGINAL_OFFSET, struct.pack(">q", 9)), (DL.DLT_EXCEPTION_FQCN, b"java.lang.Oops")])
    assert (spring.error_class, spring.origin, spring.attempts) == ("java.lang.Oops", "orders[2]@9", None)
    assert header_text(DL.DLT_ORIGINAL_OFFSET, struct.pack(">q", 9)) == "9"


def test_a_selection_matches_class_names_short_or_full_event_types_and_times():
    dead = letter(DEAD)
    assert Selection(error_classes=("BugError",)).matches(dead)
    assert Selection(error_classes=("myapp.errors.BugError",)).matches(dead)
    assert not Selection(error_classes=("Error",)).matches(dead)
    assert not Selection(event_types=("tenant_was_created",)).matches(dead)
    assert Selection(since=datetime(2025, 3, 1, 12, tzinfo=UTC)).matches(dead)   # exactly at since
    assert not Selection(until=datetime(2025, 3, 1, 12, tzinfo=UTC)).matches(dead)
    assert Selection(positions=((0, 3),)).matches(dead) and not Selection(positions=((0, 4),)).matches(dead)


def test_a_dead_letters_position_is_partition_offset_or_offset_alone_on_one_partition():
    assert parse_position("2:17", 3) == (2, 17)
    assert parse_position("17", 1) == (0, 17)
    with pytest.raises(BadSelection, match="partition:offset"):
        parse_position("17", 3)
    with pytest.raises(BadSelection, match="no partition 5"):
        parse_position("5:1", 3)
