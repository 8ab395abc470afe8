"""The broker is down, or killed and restarted, around groups that start and run: a group started
while the cluster is unreachable waits for it (as a pod must after a node failure) and then runs; while
the broker is down every Kafka client's errors are held back to a line per cause and interval, and the
dead-letter producer's lines come out as they happen; the demo's measurement recovers from the
restarted broker's new leader epochs. Each on a broker of the test's own (``own_broker``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import OffsetSpec
from sqlalchemy import create_engine, select

from dify_events.consumers import registry
from dify_events.consumers.demo.cluster import LIBRDKAFKA_LOG, apply_topics
from dify_events.consumers.demo.progress import Probe
from dify_events.consumers.domain import Site
from dify_events.consumers.idempotency import make_engine
from dify_events.consumers.tables import create_tables
from dify_events.producers import EventProducer
from dify_events.schemas import headers as H
from dify_events.schemas.events import AppWasCreated
from dify_events.schemas.settings import Settings
from dify_events.schemas.topics import admin_client, list_offsets
from tests.faults.conftest import kill_broker
from tests.faults.harness import wait_for
from tests.support.waiting import wait_until

GROUP = "site-provisioner"
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (WARNING|ERROR)\s+(\S+): (.*)$", re.M)


class GroupProcess:
    """``events run --group site-provisioner`` on the test's broker and a SQLite database with its tables."""

    def __init__(self, tmp_path: Path, bootstrap: str, prefix: str):
        self.log = tmp_path / "group.log"
        self.database_url = f"sqlite:///{tmp_path / 'events.db'}"
        engine = make_engine(self.database_url, pool_size=1)
        create_tables(engine)
        engine.dispose()
        self.settings = Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, database_url=self.database_url)
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "EVENTS_TOPIC_PREFIX": prefix,
                    "EVENTS_DATABASE_URL": self.database_url, "EVENTS_HEALTH_PORT": "0", "EVENTS_METRICS_PORT": "0",
                    "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen | None = None

    def apply_topics(self) -> None:
        apply_topics(admin_client(self.settings, logger=LIBRDKAFKA_LOG), self.settings.topic_prefix, [GROUP])

    def start(self) -> GroupProcess:
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "dify_events.consumers", "run", "--group", GROUP],
                                         env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def sites(self) -> list[str]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(select(Site.app_id)).scalars())
        finally:
            engine.dispose()


def app(app_id: str) -> AppWasCreated:
    return AppWasCreated(tenant_id="t1", app_id=app_id, mode="chat", name="Support bot", created_by="u1")


def test_a_group_started_while_the_broker_is_down_waits_for_it_then_runs(kafka_env, own_broker, tmp_path):
    # Given the group's topics on a broker that is then stopped
    group = GroupProcess(tmp_path, own_broker.status().bootstrap, kafka_env)
    group.apply_topics()
    own_broker.stop()
    try:
        # When the group starts while the cluster is unreachable
        group.start()
        # Then it waits for it, saying so once per attempt, with growing pauses, and does not exit
        wait_until(lambda: group.text().count("is waiting for the Kafka cluster") >= 3 or not group.alive(), 90,
                   "three attempts to reach the cluster")
        text = group.text()
        assert group.alive(), text
        assert "Traceback" not in text and "error:" not in text, text
        waits = [float(s) for s in re.findall(r"trying again in (\d+)s", text)]
        assert waits[:3] == [1.0, 2.0, 4.0], waits
        # And once the broker is back, it joins and handles what is published
        own_broker.start(timeout_s=120)
        with EventProducer(settings=group.settings) as producer:
            producer.publish(app("app-after-outage"), wait=True, timeout=60)
        wait_until(lambda: group.sites() or not group.alive(), 120, "the group to handle the event")
        assert group.sites() == ["app-after-outage"], group.text()[-3000:]
        assert "the Kafka cluster answers now" in group.text()
    finally:
        group.stop()


def test_while_the_broker_is_down_client_errors_are_held_back_and_dead_letter_lines_come_out_as_they_happen(
        kafka_env, own_broker, tmp_path):
    # Given a running group that has dead-lettered a message (so its dead-letter producer is connected)
    group = GroupProcess(tmp_path, own_broker.status().bootstrap, kafka_env)
    group.apply_topics()
    group.start()
    try:
        wait_until(lambda: f"group {GROUP} assigned" in group.text() or not group.alive(), 90, "the group to join")
        poison = Producer({"bootstrap.servers": own_broker.status().bootstrap, "logger": LIBRDKAFKA_LOG})
        poison.produce(f"{kafka_env}.app", b"not avro", b"app-poison", headers=[(H.EVENT_TYPE, b"app_was_created")])
        assert poison.flush(30) == 0
        dlq = admin_client(group.settings, logger=LIBRDKAFKA_LOG)
        wait_until(lambda: list_offsets(dlq, {(f"{kafka_env}.dlq.{GROUP}", 0): OffsetSpec.latest()})[
            (f"{kafka_env}.dlq.{GROUP}", 0)] == 1, 60, "the dead letter, acknowledged")
        # When the broker is killed and stays down
        kill_broker(own_broker)
        killed = time.time()
        # Then the dead-letter producer's lines come out while it is down, not at shutdown
        wait_until(lambda: any(_at(t) > killed for t, _, name, m in _lines(group) if f"events-dlq-{GROUP}#" in m),
                   45, "a line of the dead-letter producer after the kill")
        # ... and every client's repeated errors are held back: one line per cause and 10 s, with a count
        wait_until(lambda: "(repeated" in group.text(), 45, "a line standing for repeated ones")
        wait_until(lambda: time.time() - killed >= 20, 30, "20 s of the outage")
        down = [line for line in _lines(group) if _at(line[0]) > killed]
        seconds = time.time() - killed
        causes = {re.sub(r"\(after \d+ms.*", "", m) for _, _, _, m in down}
        print(f"\n[faults] broker down {seconds:.0f}s: {len(down)} warning/error lines from {len(causes)} causes")
        assert len(down) <= len(causes) * (seconds / 10 + 2), "\n".join(m for *_, m in down)
        assert group.alive()
    finally:
        group.stop()


def test_the_demos_measurement_recovers_when_the_broker_is_killed_and_restarted(kafka_env, own_broker, tmp_path):
    # Given the demo's probe of a group, with its long-lived admin client, and 30 events waiting
    group = GroupProcess(tmp_path, own_broker.status().bootstrap, kafka_env)
    group.apply_topics()
    with EventProducer(settings=group.settings) as producer:
        for n in range(30):
            producer.publish(app(f"app-{n}"))
    admin = admin_client(group.settings, logger=LIBRDKAFKA_LOG)
    engine = create_engine(group.database_url)
    probe = Probe(admin, engine, group.settings, [registry.get(GROUP)], {})
    try:
        # (a fresh broker answers NOT_COORDINATOR for a while: the demo's monitor measures again, as here)
        assert wait_for(lambda: probe.measure()[GROUP], 60, "a first measurement").lag == 30
        # When the broker is killed and started again (the partitions get new leader epochs)
        kill_broker(own_broker)
        own_broker.start(timeout_s=120)
        # Then the same probe measures again, and finds the same lag
        measured = wait_for(lambda: probe.measure()[GROUP], 60, "a measurement after the restart")
        assert measured.lag == 30
    finally:
        probe.close()
        engine.dispose()


def _lines(group: GroupProcess) -> list[tuple[str, str, str, str]]:
    """(time, level, logger, message) of each WARNING and ERROR line of the group's log."""
    return LINE.findall(group.text())


def _at(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
