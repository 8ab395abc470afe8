"""`events dlq`: a handler with a bug dead-letters events; after the fix they are re-driven into
the group's retry topic and handled exactly once; a second redrive sends nothing."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from sqlalchemy import create_engine, select

from dify_events.consumers.config import group_id
from dify_events.consumers.recovery.dead_letters import Selection
from dify_events.consumers.recovery.errors import CopyFailed
from dify_events.consumers.recovery.ledger import ledger_topic
from dify_events.consumers.recovery.redrive import Redrive
from dify_events.schemas.settings import get_settings
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, codec, event_headers, publish, running, wait_until

from .support import end_offsets, wait_committed_to_end


class BugError(Exception):
    """The bug the handler has until it is fixed."""


def attempts_by_event(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(sample_handlers.sample_effects.c.event_id,
                                   sample_handlers.sample_effects.c.attempt)).all()
    engine.dispose()
    return {event_id: attempt for event_id, attempt in rows}


def test_dead_letters_are_redriven_after_the_fix_and_handled_exactly_once(
        kafka_env, admin, topics_of, producer_factory, effects_url, registered, group_name, cli):
    # Given a group whose handler has a bug for four of ten apps (two attempts each)
    url = effects_url()
    behaviour = sample_handlers.Behaviour(error=BugError)
    group, _ = sample_handlers.recording_group(group_name, behaviour, database_url=url, max_attempts=2,
                                               min_backoff_s=0.01, max_backoff_s=0.02)
    registered(group)
    topics_of(group)
    buggy = {f"app-bug-{i}" for i in range(4)}
    behaviour.fail.update({app_id: -1 for app_id in buggy})
    events = [app_event(f"app-bug-{i}" if i < 4 else f"app-ok-{i}", i) for i in range(10)]
    publish(producer_factory(), f"{kafka_env}.app", events)
    retry_topic, dlq_topic = group.retry_topic(kafka_env), group.dlq_topic(kafka_env)

    with running(group, concurrency=2) as runner:
        wait_until(lambda: runner.stats()["handled"] == 6 and runner.stats()["dead_lettered"] == 4,
                   what="6 handled and 4 dead-lettered")

        # When the operator looks at the dead letters
        listed = cli("dlq", "list", "--group", group_name)
        stats = cli("dlq", "stats", "--group", group_name)
        shown = cli("dlq", "show", "--group", group_name, "0:0")
        # Then they are listed with their error class and attempts, counted by class, and shown decoded
        assert listed.text.count("BugError") == 4
        as_json = json.loads(cli("dlq", "list", "--group", group_name, "--output", "json").output)
        assert [letter["error_class"] for letter in as_json["dead_letters"]] == [f"{__name__}.BugError"] * 4
        assert "4 of 4 dead letter(s) selected" in listed.text
        assert "BugError │ 4 │ 4 │ app_was_created (4)" in stats.text
        offset, event = next((i, e) for i, e in enumerate(events) if f'"event_id": "{e.event_id}"' in shown.output)
        assert event.app_id in buggy and f'"app_id": "{event.app_id}"' in shown.output
        assert f"origin {kafka_env}.app[0]@{offset}" in shown.text
        assert f"kafka_dlt-original-offset │ {offset} │" in shown.text  # Spring's 8-byte long, read back

        # When the bug is fixed and a dry run is asked first
        behaviour.fail.clear()
        dry = cli("dlq", "redrive", "--group", group_name, "--dry-run")
        # Then it shows the four and sends nothing
        assert "4 dead letter(s) would be re-driven of 4 held" in dry.text
        assert end_offsets(admin, retry_topic, 1) == [0]

        # When they are re-driven
        done = cli("dlq", "redrive", "--group", group_name)
        # Then each of the ten events has had its effect exactly once; the re-driven ones on their
        # third attempt (two before the dead letter, the count carried over)
        assert "re-drove 4 dead letter(s)" in done.text
        wait_until(lambda: runner.stats()["handled"] == 10, what="the re-driven events handled")
        # And the group commits its retry topic to the end, past the redrive transaction's marker:
        # Kafka's LAG is 0 there, not 1 for good
        wait_committed_to_end(admin, group_id(kafka_env, group_name), retry_topic)
        effects = sample_handlers.effects(url)
        assert Counter(e[0] for e in effects) == Counter(e.event_id for e in events)
        attempts = attempts_by_event(url)
        assert {attempts[e.event_id] for e in events if e.app_id in buggy} == {3}

        # When redrive runs again
        retry_end = end_offsets(admin, retry_topic, 1)
        again = cli("dlq", "redrive", "--group", group_name)
        # Then it sends nothing: the ledger says all four went already
        assert "0 dead letter(s) to be re-driven of 4 held; 4 selected were re-driven before" in again.text
        assert end_offsets(admin, retry_topic, 1) == retry_end
        assert "4 of 4 dead letter(s) selected" in cli("dlq", "list", "--group", group_name).text
        assert "BugError │ 4 │ 0 │" in cli("dlq", "stats", "--group", group_name).text

    # And the group handled each event once in all: no duplicates were even delivered
    assert runner.stats()["duplicates"] == 0 and runner.stats()["dead_lettered"] == 4
    assert end_offsets(admin, dlq_topic, 1) == [4]
    assert ledger_topic(kafka_env, group_name) in admin.list_topics(timeout=10).topics
    assert group_id(kafka_env, group_name)  # (the group's Kafka id is <prefix>.<group>)


def test_redrive_selects_by_error_class_limits_and_paces(
        kafka_env, admin, topics_of, producer_factory, effects_url, registered, group_name, cli):
    # Given dead letters of two error classes: 5 of BugError, 2 of KeyError (not retried: max_attempts 1)
    url = effects_url()
    behaviour = sample_handlers.Behaviour(error=BugError)
    group, _ = sample_handlers.recording_group(group_name, behaviour, database_url=url, max_attempts=1)
    registered(group)
    topics_of(group)
    behaviour.fail.update({f"app-{i}": -1 for i in range(5)})
    publish(producer_factory(), f"{kafka_env}.app", [app_event(f"app-{i}", i) for i in range(5)])
    with running(group) as runner:
        wait_until(lambda: runner.stats()["dead_lettered"] == 5, what="5 dead letters")
        behaviour.error = KeyError
        behaviour.fail.update({f"app-{i}": -1 for i in range(5, 7)})
        publish(producer_factory(), f"{kafka_env}.app", [app_event(f"app-{i}", i) for i in range(5, 7)])
        wait_until(lambda: runner.stats()["dead_lettered"] == 7, what="7 dead letters")
        behaviour.fail.clear()
        retry_topic = group.retry_topic(kafka_env)

        # When BugError's are re-driven, at most two
        first = cli("dlq", "redrive", "--group", group_name, "--error-class", "BugError", "--limit", "2")
        # Then two are sent and three left for later; KeyError's are not touched
        assert "re-drove 2 dead letter(s)" in first.text and "3 more are left for a later run" in first.text

        # When the rest of BugError's go at 10 a second
        started = time.monotonic()
        rest = cli("dlq", "redrive", "--group", group_name, "--error-class", "BugError", "--rate", "10")
        # Then the three others are sent, no faster than asked, and the first two are not sent again
        assert time.monotonic() - started >= 0.2
        assert "re-drove 3 dead letter(s)" in rest.text and "2 selected were re-driven before" in rest.text
        wait_until(lambda: runner.stats()["handled"] == 5, what="the five re-driven handled")
        assert sorted(e[1] for e in sample_handlers.effects(url)) == [f"app-{i}" for i in range(5)]

        # And one KeyError by its position, then the stats say one is left
        one = cli("dlq", "redrive", "--group", group_name, "--offset", "0:5")
        assert "re-drove 1 dead letter(s)" in one.text
        wait_until(lambda: runner.stats()["handled"] == 6, what="the sixth handled")
        stats = cli("dlq", "stats", "--group", group_name).text
        assert "KeyError │ 2 │ 1 │" in stats and "BugError │ 5 │ 0 │" in stats
    assert sum(end_offsets(admin, retry_topic, 1)) > 0


def test_a_redrive_fenced_by_a_later_one_says_another_holds_the_groups_ledger(
        kafka_env, topics_of, producer_factory, registered, group_name):
    # Given three dead letters of a group, and a redrive that has started (its transactional producer)
    group, _ = sample_handlers.recording_group(group_name)
    registered(group)
    topics_of(group)
    producer = producer_factory()
    for i in range(3):
        event = app_event(f"app-{i}", i)
        producer.produce(group.dlq_topic(kafka_env), codec.encode(event), event.app_id.encode(),
                         headers=event_headers(event) + [("dlq-attempts", b"2")])
    assert producer.flush(10) == 0
    first = Redrive(get_settings(), group)
    plan = first.prepare(Selection())
    # When a second redrive of the group starts (Kafka fences the first one's transactional id)
    second = Redrive(get_settings(), group)
    later = second.prepare(Selection())
    # Then the first, going on slowly (so that the fence reaches it between copies), stops with a
    # sentence that says why, whichever of its calls meets the fence first
    with pytest.raises(CopyFailed, match="another redrive holds the group's ledger") as lost:
        first.run(plan, advance=lambda _n: time.sleep(0.5))
    assert "Fatal error" not in str(lost.value).split("(")[0]
    # And the second re-drives all three
    assert second.run(later).sent == 3
