"""TimeLimit: a handler past its time limit is interrupted, and the attempt counts as failed."""

from __future__ import annotations

from tests.consumers import sample_handlers
from tests.consumers.support import app_event, publish, read_messages, running, wait_until


def test_a_handler_past_its_time_limit_is_interrupted_and_retried(kafka_env, app_topic, group_topics,
                                                                  producer_factory, sqlite_db, dlq_reader):
    # Given a handler limited to 0.2 s that takes 5 s on app-slow, with 2 attempts
    topic = app_topic()
    group, behaviour = sample_handlers.recording_group(
        database_url=sqlite_db, handler_options={"time_limit_s": 0.2, "max_attempts": 2, "min_backoff_s": 0.01})
    group_topics(group.name)
    behaviour.delay_s["app-slow"] = 5.0
    publish(producer_factory(), topic, [app_event("app-slow", 1), app_event("app-ok", 2)])
    # When the group runs
    with running(group) as runner:
        wait_until(lambda: runner.stats()["dead_lettered"] == 1 and runner.stats()["handled"] == 1, 10)
    # Then both attempts were interrupted, and the dead letter says why
    assert behaviour.calls["app-slow"] == 2
    [dead] = read_messages(dlq_reader(group.name), 1)
    assert dict(dead.headers())["dlq-error-class"] == b"dify_events.consumers.errors.TimeLimitExceeded"
    assert [e[1] for e in sample_handlers.effects(sqlite_db)] == ["app-ok"]
