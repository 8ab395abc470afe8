"""Structured log records: one per failed attempt, retry, dead letter and pause, with the ids."""

from __future__ import annotations

import io
import json
import logging
from contextlib import contextmanager

import pytest
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert
from sqlalchemy.exc import IntegrityError

from dify_events.consumers.idempotency import make_engine
from dify_events.consumers.logs import JsonFormatter, RepeatedLines, TextFormatter, configure_logging
from dify_events.consumers.redact import error_message, error_traceback, redact
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


# -- text lines and redaction ---------------------------------------------------------------------

SECRET_URL = "postgresql://user:s3cret@db/x"
BODY_VALUE = "body-value-b0dy"


@contextmanager
def configured(fmt: str):
    """``configure_logging`` writing to a buffer; the root logger's handlers and level restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    configure_logging(fmt, "INFO", stream=out)
    try:
        yield out
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def record(msg: str = "dead-lettering %s", *args, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("consumers.dead_letters", logging.ERROR, __file__, 1, msg, args or ("t[0]@5",), None)
    rec.__dict__.update(extra)
    return rec


def test_a_text_line_ends_with_the_records_ids_and_json_is_unchanged():
    ids = {"group": "g", "event_id": "e-1", "event_type": "app_was_created", "topic": "t", "partition": 0,
           "offset": 5, "trace_id": "ab" * 16, "error_class": "RuntimeError"}
    # Given a record about one message, and one about none
    with_ids, without = record(**ids), record()
    # When formatted as text / Then the ids follow the message, compactly, in a fixed order
    assert TextFormatter().format(with_ids).endswith(
        f"consumers.dead_letters: dead-lettering t[0]@5 [group=g event_id=e-1 event_type=app_was_created "
        f"partition=0 offset=5 trace_id={'ab' * 16}]")
    assert TextFormatter().format(without).endswith("consumers.dead_letters: dead-lettering t[0]@5")
    # ... a field that is None is left out
    assert "event_id" not in TextFormatter().format(record(group="g", event_id=None)).split("[")[-1]
    # And JSON has every field, as before
    line = json.loads(JsonFormatter().format(with_ids))
    assert {k: line[k] for k in ids} == ids and line["message"] == "dead-lettering t[0]@5"


def _validation_error() -> ValidationError:
    class Body(BaseModel):
        mode: int

    try:
        Body(mode=BODY_VALUE)
    except ValidationError as exc:
        return exc
    raise AssertionError("no error")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_configured_logging_masks_credentials_and_event_data_in_messages_and_tracebacks(fmt):
    log = logging.getLogger("tests.telemetry.leaky")
    with configured(fmt) as out:
        # When a message and a traceback hold a password, and a traceback holds pydantic's input value
        log.info("connecting to %s", SECRET_URL, extra={"event_id": "e-1"})
        log.warning("sasl.password=hunter2 refused")
        try:
            raise RuntimeError(f"cannot reach {SECRET_URL}") from _validation_error()
        except RuntimeError:
            log.exception("the pipeline failed on %s", "t[0]@5", extra={"group": "g"})
    text = out.getvalue()
    # Then none of them is written, but what happened still is
    assert "s3cret" not in text and "hunter2" not in text and BODY_VALUE not in text, text
    assert text.count("postgresql://user:***@db/x") == 2 and "sasl.password=***" in text
    assert "RuntimeError: cannot reach" in text and "mode: Input should be a valid integer" in text
    assert "the pipeline failed on t[0]@5" in text
    if fmt == "text":
        assert "connecting to postgresql://user:***@db/x [event_id=e-1]" in text
    else:
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines[0]["message"] == "connecting to postgresql://user:***@db/x" and lines[0]["event_id"] == "e-1"
        assert "ValidationError" in lines[2]["exc"]


def test_error_text_redaction_keeps_the_error_and_drops_data():
    exc = _validation_error()
    assert error_message(exc) == "1 error: mode: Input should be a valid integer, unable to parse string as an integer"
    assert BODY_VALUE not in error_traceback(exc) and "ValidationError: 1 error: mode:" in error_traceback(exc)
    assert BODY_VALUE not in redact(str(exc))  # pydantic's own text, embedded in another message
    assert redact(f"could not connect to {SECRET_URL}") == "could not connect to postgresql://user:***@db/x"
    assert redact("host=db user=u password='p w' dbname=x") == "host=db user=u password='***' dbname=x"
    assert redact("password authentication failed for user x") == "password authentication failed for user x"


def test_sqlalchemy_errors_show_no_statement_parameters(tmp_path):
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("v", String(50)))
    # Given the runtime's engine (make_engine) and a plain one, and a statement that fails with event data
    for engine, hidden in ((make_engine(f"sqlite:///{tmp_path / 'a.db'}", pool_size=1), True),
                           (create_engine(f"sqlite:///{tmp_path / 'b.db'}"), False)):
        table.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(table).values(id=1, v="first"))
        with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
            conn.execute(insert(table).values(id=1, v=BODY_VALUE))
        engine.dispose()
        # Then the runtime's engine hides the parameters itself; redaction hides the other's
        assert (BODY_VALUE not in str(caught.value)) is hidden
        assert BODY_VALUE not in error_message(caught.value) and BODY_VALUE not in error_traceback(caught.value)
        assert "UNIQUE constraint failed" in error_message(caught.value)


class LeakyError(RuntimeError):
    def __init__(self, message: str):
        super().__init__(f"{message}: could not connect to {SECRET_URL}")


def test_a_running_group_logs_no_credentials_and_its_lines_carry_the_ids(
        kafka_env, topic_factory, group_topics, producer_factory, sqlite_db):
    # Given a group whose handler's error holds a password (two attempts), logging text at INFO
    topic = topic_factory(f"{kafka_env}.app")
    group_topics("tel-redact")
    behaviour = sample_handlers.Behaviour(fail={"app-leaky": -1}, error=LeakyError)
    group, _ = sample_handlers.recording_group("tel-redact", behaviour, database_url=sqlite_db, max_attempts=2,
                                               min_backoff_s=0.01)
    leaky = app_event("app-leaky", 3)
    publish(producer_factory(), topic, [leaky])
    with configured("text") as out:
        # When it runs until the message is dead-lettered
        with running(group) as runner:
            wait_until(lambda: runner.stats()["dead_lettered"] == 1, what="the dead letter")
    text = out.getvalue()
    # Then no line holds the password or the event's body, and the retry and dead-letter lines say
    # what failed, with the message's ids
    assert "s3cret" not in text and leaky.name not in text and "tenant-1" not in text, text
    [retry] = [line for line in text.splitlines() if "consumers.retries" in line]
    [dead] = [line for line in text.splitlines() if "consumers.dead_letters" in line]
    assert "LeakyError: told to fail on app-leaky (attempt 1): could not connect to postgresql://user:***@db/x" in retry
    assert "LeakyError: told to fail on app-leaky (attempt 2)" in dead and "user:***@db/x" in dead
    for line in (retry, dead):
        assert f"[group=tel-redact event_id={leaky.event_id} event_type=app_was_created partition=0 offset=0" in line


def test_the_record_of_an_outage_pause_names_the_message_that_tripped_it(caplog):
    from dify_events.consumers.breaker import OutageBreaker

    # Given a breaker that opens on the first dependency failure
    breaker = OutageBreaker("g", threshold=1)
    fields = {"group": "g", "event_id": "evt-1", "event_type": "app_was_created", "topic": "t.app",
              "partition": 2, "offset": 41, "trace_id": "0af7651916cd43dd8448eb211c80319c"}
    # When a message fails with a connection error whose text holds a password
    with caplog.at_level("WARNING", logger="consumers.breaker"):
        breaker.failure("h", 1, ConnectionError("postgresql://app:s3cret@db/x refused"), fields)
    # Then one WARNING record says the group pauses, with the message's ids, and no password
    [record] = [r for r in caplog.records if "outage suspected" in r.getMessage()]
    assert (record.event_id, record.partition, record.offset, record.trace_id) == \
        ("evt-1", 2, 41, "0af7651916cd43dd8448eb211c80319c")
    assert record.reason == "outage" and "s3cret" not in record.getMessage()


def test_repeated_kafka_client_lines_pass_once_per_cause_and_interval_with_a_count():
    now = [0.0]
    lines = RepeatedLines(interval_s=10.0, clock=lambda: now[0])

    def passes(message: str, logger: str = "consumers.librdkafka", level: int = logging.ERROR):
        rec = logging.LogRecord(logger, level, __file__, 1, "%s", (message,), None)
        return rec.getMessage() if lines.filter(rec) else None

    refused = ("FAIL [c#consumer-1] 127.0.0.1:9092/bootstrap: Connect failed: Connection refused "
               "(after {}ms in state CONNECT)")
    # When one cause repeats 40 times a second (its timings differing), Then its first line passes ...
    assert passes(refused.format(0)) == refused.format(0)
    held = [passes(refused.format(n % 7)) for n in range(399)]
    assert held == [None] * 399
    # ... and another cause, another client's, or another logger's line is not held back by it
    assert passes("Kafka: 1/1 brokers are down") is not None
    assert passes(refused.replace("c#consumer-1", "events-dlq-g#producer-2").format(0)) is not None
    assert all(passes("group g paused 3 partition(s): outage", logger="consumers.runner", level=logging.WARNING)
               for _ in range(5))
    # When the interval has passed, Then the next line of the cause passes, saying how many it stands for
    now[0] = 10.5
    assert passes(refused.format(3)) == refused.format(3) + " (repeated 399 times in the last 10 s)"
    assert passes(refused.format(1)) is None
