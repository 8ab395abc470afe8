"""Structured log records: one per failed attempt, retry, dead letter and pause, with the ids."""

from __future__ import annotations

import json
import logging

from opentelemetry.trace import SpanKind

from consumers.logs import JsonFormatter
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, publish, running, wait_until
from tests.telemetry.support import points, value

FIELDS = {"group", "event_id", "event_type", "topic", "partition", "offset", "trace_id"}


def test_retries_and_dead_letters_are_json_records_with_ids_and_the_trace_id(
        kafka_env, topic_factory, group_topics, producer_factory, sqlite_db, spans, caplog):
    provider, exporter = spans
    # Given a group that always fails on app-bad (two attempts), with tracing on
    topic = topic_factory(f"{kafka_env}.app")
    group_topics("tel-logs")
    group, _ = sample_handlers.recording_group("tel-logs", sample_handlers.Behaviour(fail={"app-bad": -1}),
                                               database_url=sqlite_db, max_attempts=2, min_backoff_s=0.01)
    bad = app_event("app-bad", 7)
    publish(producer_factory(), topic, [bad])
    # When it runs until the message is dead-lettered
    caplog.set_level(logging.INFO)
    with running(group, tracer_provider=provider) as runner:
        wait_until(lambda: runner.stats()["dead_lettered"] == 1, what="the dead letter")
    # Then one retry record and one dead-letter record, each with the message's ids and trace id
    [consumer_span] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    trace_id = format(consumer_span.context.trace_id, "032x")
    records = [r for r in caplog.records if r.name in ("consumers.retries", "consumers.dead_letters")]
    assert [r.name for r in records] == ["consumers.retries", "consumers.dead_letters"]
    for record in records:
        line = json.loads(JsonFormatter().format(record))
        assert FIELDS <= set(line), line
        assert (line["group"], line["event_id"], line["event_type"]) == ("tel-logs", bad.event_id, "app_was_created")
        assert (line["topic"], line["partition"], line["offset"]) == (topic, 0, 0)
        assert line["trace_id"] == trace_id
        assert line["error_class"] == "RuntimeError"
        text = json.dumps(line)
        assert "tenant-1" not in text and bad.name not in text  # nothing of the event's body
    assert json.loads(JsonFormatter().format(records[0]))["attempt"] == 1
    assert json.loads(JsonFormatter().format(records[1]))["attempts"] == 2


def test_a_pause_is_one_record_and_one_count(kafka_env, topic_factory, group_topics, producer_factory, sqlite_db,
                                             meters, caplog):
    provider, reader = meters
    # Given a slow handler and a buffer of two messages
    topic = topic_factory(f"{kafka_env}.app")
    group_topics("tel-pause")
    group, _ = sample_handlers.recording_group("tel-pause", sample_handlers.Behaviour(default_delay_s=0.3),
                                               database_url=sqlite_db)
    publish(producer_factory(), topic, [app_event("app-1", i) for i in range(8)])
    caplog.set_level(logging.DEBUG, logger="consumers.runner")
    # When the group runs
    with running(group, meter_provider=provider, concurrency=1, max_buffered=2) as runner:
        wait_until(lambda: runner.stats()["handled"] == 8, what="eight handled")
    # Then the buffer filled and fetching paused; every pause (the one when stopping too) was one record
    pauses = [r for r in caplog.records if r.name == "consumers.runner" and hasattr(r, "reason")]
    assert len(pauses) == runner.pauses
    full = [r for r in pauses if r.reason == "buffer_full"]
    assert full and full[0].levelno == logging.INFO
    assert full[0].group == "tel-pause" and f"{topic}[0]" in full[0].partitions
    # ... and counted by reason
    collected = points(reader)
    assert value(collected, "events.consumer.pauses", group="tel-pause", reason="buffer_full") == len(full)
    assert value(collected, "events.consumer.pauses", group="tel-pause") == runner.pauses
