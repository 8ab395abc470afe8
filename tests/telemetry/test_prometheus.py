"""`events run` serves its metrics on /metrics in Prometheus text format."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from dify_events.consumers.broker.local import free_port
from dify_events.producers.outbox import add_to_outbox, create_outbox_table
from dify_events.schemas import headers as H
from tests.consumers.support import app_event, publish, wait_until
from tests.consumers.test_lifecycle import start_events_run, stop
from tests.helm.test_dashboard import DASHBOARD, queried_metrics


def scrape(port: int) -> tuple[str, dict[tuple[str, frozenset], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if not k.startswith("otel_scope_")}
            samples[(sample.name, frozenset(labels.items()))] = sample.value
    return content_type, samples


def sample(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape_when_ready(port: int, proc) -> dict:
    """The samples once the endpoint answers (the process may still be starting)."""
    def attempt():
        assert proc.poll() is None, proc.communicate()[0]
        try:
            return scrape(port)
        except OSError:
            return None
    return wait_until(attempt, 60, "/metrics to answer")


def test_events_run_serves_its_metrics_in_prometheus_text_format(kafka_env, topic_factory, producer_factory,
                                                                 tmp_path, monkeypatch):
    from tests.consumers import sample_handlers

    # Given an `events run` process of the sample group with its metrics on a free port
    db = f"sqlite:///{tmp_path / 'effects.db'}"
    sample_handlers.create_tables(db)
    topic = topic_factory(f"{kafka_env}.app", partitions=2)
    topic_factory(f"{kafka_env}.retry.sample-recorder", partitions=2)
    topic_factory(f"{kafka_env}.dlq.sample-recorder", partitions=2)
    port = free_port()
    monkeypatch.setenv("EVENTS_METRICS_PORT", str(port))
    proc = start_events_run(db, delay_s=0)
    try:
        # When three good events and one that does not decode are published
        events = [app_event(f"app-{i}", i) for i in range(3)]
        publish(producer_factory(), topic, events)
        producer = producer_factory()
        producer.produce(topic, value=b"\xc3\x01 not avro", key=b"app-y",
                         headers=[(H.EVENT_TYPE, b"app_was_created"), (H.EVENT_ID, b"evt-broken")])
        assert producer.flush(30) == 0
        scrape_when_ready(port, proc)
        group = {"group": "sample-recorder", "event_type": "app_was_created"}

        def settled():
            content_type, samples = scrape(port)
            lags = {k: v for k, v in samples.items() if k[0] == "events_consumer_lag"
                    and ("topic", topic) in k[1]}
            done = (sample(samples, "events_messages_handled_total", **group) == 3
                    and sample(samples, "events_messages_dead_lettered_total", **group) == 1
                    and len(lags) == 2 and not any(lags.values()))
            return (content_type, samples) if done else None

        # Then a scrape shows them, named as the chart's alerts expect, with the lag back to zero
        content_type, samples = wait_until(settled, 60, "the metrics to show the workload")
    finally:
        output = stop(proc)
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    assert sample(samples, "events_consumer_lag", group="sample-recorder", topic=topic, partition="0") == 0
    assert sample(samples, "events_consumer_lag", group="sample-recorder", topic=topic, partition="1") == 0
    assert sample(samples, "events_messages_retried_total", **group) is None  # nothing was retried
    assert sample(samples, "events_messages_in_flight", group="sample-recorder") == 0
    assert sample(samples, "events_handler_duration_seconds_count", outcome="ok", **group) == 3
    assert sample(samples, "events_end_to_end_latency_seconds_count", **group) == 3
    assert sample(samples, "events_messages_dead_lettered_total", **group) == 1
    assert f"Prometheus metrics on :{port}/metrics" in output, output
    # and the Grafana dashboard of the chart queries these very names
    exposed = {name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for name, _ in samples}
    queried = queried_metrics(json.loads(DASHBOARD.read_text()))
    assert {"events_consumer_lag", "events_messages_handled_total", "events_messages_dead_lettered_total",
            "events_messages_in_flight", "events_handler_duration_seconds",
            "events_end_to_end_latency_seconds"} <= exposed & queried


def test_the_outbox_relay_serves_its_published_events_on_metrics_when_asked(kafka_env, topic_factory, tmp_path):
    # Given an outbox holding two committed events, and their domain topic
    topic_factory(f"{kafka_env}.app")
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(url)
    create_outbox_table(engine)
    with Session(engine) as session, session.begin():
        for i in range(2):
            add_to_outbox(session, app_event(f"app-{i}", i), topic_prefix=kafka_env)
    engine.dispose()
    # When the relay runs with --metrics-port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dify_events.consumers", "outbox", "relay", "--database-url", url,
                             "--metrics-port", str(port), "--poll-interval", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        scrape_when_ready(port, proc)
        # Then /metrics counts both as published, by type and outcome
        wait_until(lambda: sample(scrape(port)[1], "events_published_total", event_type="app_was_created",
                                  outcome="delivered") == 2, 30, "the relay's two events on /metrics")
    finally:
        proc.terminate()
        proc.wait(30)
