"""Declarative topics: `events topics apply` against the real broker, with a unique prefix."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from dify_events.consumers.cli import main
from dify_events.consumers.recovery.kafka import watermarks
from dify_events.consumers.runner import GroupRunner
from dify_events.producers.config import producer_config
from dify_events.schemas.catalogue import CATALOGUE
from dify_events.schemas.errors import TopicsError
from dify_events.schemas.topics import (
    TOPICS_FILE,
    Admin,
    TopicsFile,
    TopicSpec,
    apply,
    create_missing,
    desired_topics,
    group_topics,
    list_topics,
    load_topics_file,
    plan,
    topic_config,
)
from tests.consumers import sample_handlers
from tests.support.kafka import set_topic_config
from tests.support.waiting import wait_until


@pytest.fixture
def prefix(kafka_env, admin) -> Iterator[str]:
    """The test's unique prefix; every topic under it is deleted afterwards."""
    yield kafka_env
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{kafka_env}.")]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result(timeout=30)
            except Exception:  # noqa: BLE001 - already gone is fine
                pass




@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    """Tables are printed in full, not wrapped at 80 columns."""
    monkeypatch.setenv("COLUMNS", "250")


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result


def write_file(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_dry_run_changes_nothing(prefix, admin):
    # Given no topics under the prefix
    assert list_topics(admin, prefix) == []
    # When `events topics apply --dry-run` runs, with a consumer group
    result = cli("topics", "apply", "--dry-run", "--group", "provider-usage")
    # Then it says what it would create ...
    assert result.exit_code == 0, result.output
    assert result.output.count("would create") == 7
    assert f"{prefix}.dlq.provider-usage" in result.output and "nothing changed" in result.output
    # ... and the cluster still has no topic under the prefix
    assert list_topics(admin, prefix) == []


def test_apply_twice_changes_nothing_the_second_time(prefix, admin):
    # Given an empty prefix
    # When `events topics apply` runs twice
    first = cli("topics", "apply", "--group", "dataset-cleaner")
    second = cli("topics", "apply", "--group", "dataset-cleaner")
    # Then the first creates the domain topics and the group's dead-letter and retry topics
    assert first.exit_code == 0, first.output
    assert first.output.count("create") == 7 and "7 topic(s) changed" in first.output
    states = {s.name: s for s in list_topics(admin, prefix)}
    assert sorted(states) == sorted(CATALOGUE.topics(prefix) + [f"{prefix}.dlq.dataset-cleaner",
                                                                f"{prefix}.retry.dataset-cleaner"])
    declared = load_topics_file()
    assert states[f"{prefix}.message"].partitions == 12 and states[f"{prefix}.app"].partitions == 6
    assert states[f"{prefix}.dlq.dataset-cleaner"].config["retention.ms"] == declared.dead_letter.config["retention.ms"]
    assert states[f"{prefix}.document"].config["retention.ms"] == "1209600000"
    # And the second finds everything as declared and changes nothing
    assert second.exit_code == 0, second.output
    assert "0 topic(s) changed, 7 as declared" in second.output
    assert all(a.action == "ok" for a in plan(admin, prefix, groups=["dataset-cleaner"]).actions)


def test_a_single_broker_lowers_replication_with_a_warning(prefix, admin):
    # Given the development cluster (one broker) and a file asking for replication 3
    assert load_topics_file().defaults.replication_factor == 3
    # When planned
    the_plan = plan(admin, prefix)
    # Then replication and min.insync.replicas are lowered to the broker count, with a warning
    assert the_plan.brokers == 1
    assert all(a.spec.replication_factor == 1 and a.spec.config["min.insync.replicas"] == "1"
               for a in the_plan.actions)
    assert any("lowered to 1" in w for w in the_plan.warnings)
    result = cli("topics", "apply", "--dry-run")
    assert "warning:" in result.output and "lowered to 1" in result.output


def test_drifted_configuration_is_set_back_and_other_keys_are_left_alone(prefix, admin):
    # Given the declared topics, then someone changes retention.ms and sets segment.ms by hand
    apply(admin, plan(admin, prefix))
    topic = f"{prefix}.app"
    set_topic_config(admin, topic, {"retention.ms": "1000", "segment.ms": "3600000"})
    # When planned
    the_plan = plan(admin, prefix)
    (drifted,) = the_plan.changes
    # Then only that topic is to alter, and only the key the file names
    assert drifted.topic == topic and drifted.action == "alter"
    assert dict(drifted.config_changes) == {"retention.ms": ("1000", "604800000")}
    assert "retention.ms: 1000 -> 604800000" in drifted.details()
    # When applied / Then the file's value is back, the hand-set key kept, and nothing is left to do
    apply(admin, the_plan)
    state = {s.name: s for s in list_topics(admin, prefix)}[topic]
    assert state.config["retention.ms"] == "604800000" and state.config["segment.ms"] == "3600000"
    assert plan(admin, prefix).changes == ()


def test_partitions_are_increased_but_never_decreased(prefix, admin, tmp_path):
    # Given the declared topics
    apply(admin, plan(admin, prefix))
    # When the file asks for more partitions of the tenant topic
    more = write_file(tmp_path, {"domains": {"tenant": {"partitions": 5}}})
    result = cli("topics", "apply", "--file", str(more))
    # Then they are added
    assert result.exit_code == 0, result.output
    assert "partitions 3 -> 5" in result.output
    assert {s.name: s.partitions for s in list_topics(admin, prefix)}[f"{prefix}.tenant"] == 5
    # When the file asks for fewer
    fewer = TopicsFile.model_validate({"domains": {"tenant": {"partitions": 2}}})
    the_plan = plan(admin, prefix, topics_file=fewer)
    tenant = next(a for a in the_plan.actions if a.topic == f"{prefix}.tenant")
    # Then nothing is done to it, and the plan says why
    assert tenant.action == "ok" and "never decreased" in tenant.details()
    apply(admin, the_plan)
    assert {s.name: s.partitions for s in list_topics(admin, prefix)}[f"{prefix}.tenant"] == 5


def test_topics_list_shows_partitions_replication_and_configuration(prefix, admin):
    # Given the declared topics
    cli("topics", "apply", "--group", "document-indexer")
    # When listed
    result = cli("topics", "list")
    # Then each topic is there with its partition count and the keys set on it
    assert result.exit_code == 0, result.output
    assert f"{prefix}.retry.document-indexer" in result.output
    assert "retention.ms=259200000" in result.output and "12" in result.output


def test_extra_specs_are_created_as_given(prefix, admin):
    # Given a spec the consumers layer passes in (e.g. a topic of its own)
    extra = TopicSpec(f"{prefix}.replay.scratch", "retry", 2, 1, {"retention.ms": "3600000"})
    # When planned and applied
    apply(admin, plan(admin, prefix, extra=[extra]))
    # Then it exists as given
    state = {s.name: s for s in list_topics(admin, prefix)}[extra.name]
    assert (state.partitions, state.config["retention.ms"]) == (2, "3600000")


def served_at_once(admin, topics: list[str]) -> list[str]:
    """The partitions of ``topics`` whose leader does not answer a ListOffsets request now (asked once,
    no retry: what a producer's first batch meets)."""
    metadata = admin.list_topics(timeout=10)
    wanted = {TopicPartition(t, p): OffsetSpec.latest() for t in topics for p in metadata.topics[t].partitions}
    refused = []
    for tp, future in admin.list_offsets(wanted, request_timeout=10).items():
        try:
            future.result(timeout=10)
        except KafkaException as exc:
            refused.append(f"{tp.topic}[{tp.partition}]: {exc.args[0].name()}")
    return refused


def test_apply_and_create_missing_return_once_every_new_partition_is_served(prefix, admin):
    # Given many fresh topics (each of their partitions answers NOT_LEADER for a moment after the
    # metadata shows it: the moment librdkafka's idempotent producer can lose a first batch in)
    for round_ in range(3):
        specs = [TopicSpec(f"{prefix}.served{round_}.{i}", "retry", 12, 1, {}) for i in range(4)]
        # When `apply` creates some and `create_missing` the others
        apply(admin, plan(admin, prefix, extra=specs[:2]))
        create_missing(admin, specs[2:])
        # Then each of their partitions answers at once when they return
        assert served_at_once(admin, [s.name for s in specs]) == []


@pytest.mark.parametrize(("code", "asked"), [(KafkaError.UNKNOWN_TOPIC_OR_PART, 3),
                                             (KafkaError.TOPIC_AUTHORIZATION_FAILED, 1)])
def test_await_served_asks_again_while_a_new_partitions_leader_has_not_loaded_it(monkeypatch, code, asked):
    # Given a cluster whose metadata shows the new topic, and whose leader answers `code` twice, then serves it
    from dify_events.schemas import topics

    metadata = SimpleNamespace(topics={"t": SimpleNamespace(error=None, partitions={0: None, 1: None})})
    answers = [KafkaException(KafkaError(code)), KafkaException(KafkaError(code)), None]
    monkeypatch.setattr(topics, "cluster_metadata", lambda admin, timeout: metadata)

    def list_offsets(admin, wanted, timeout):
        assert set(wanted) == {("t", 0), ("t", 1)}
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return dict.fromkeys(wanted, 0)

    monkeypatch.setattr(topics, "list_offsets", list_offsets)
    # When await_served waits for it
    if asked == 1:
        with pytest.raises(TopicsError, match="did not serve them within 30s"):
            topics.await_served(None, {"t": 2})
    else:
        topics.await_served(None, {"t": 2})
    # Then a partition not loaded yet is asked for again until it is served; any other error ends the wait at once
    assert len(answers) == 3 - asked


def test_the_platforms_producer_writing_right_after_apply_loses_nothing(prefix, admin, kafka_client_config):
    # Given topics `apply` has just created, and a producer with the platform's settings but five requests
    # in flight (librdkafka's default, which loses a refused first batch when the next one is accepted)
    specs = [TopicSpec(f"{prefix}.fresh.{i}", "retry", 12, 1, {}) for i in range(5)]
    apply(admin, plan(admin, prefix, extra=specs))
    producer = Producer(producer_config({**kafka_client_config, "max.in.flight.requests.per.connection": 5,
                                         "logger": logging.getLogger("test.producer")}))
    acked: Counter[tuple[str, int]] = Counter()

    def delivered(err, msg):
        assert err is None, err
        acked[(msg.topic(), msg.partition())] += 1

    # When it writes to every partition at once, in waves a few milliseconds apart (batches in flight together)
    for wave in range(8):
        for spec in specs:
            for partition in range(12):
                producer.produce(spec.name, f"{wave}".encode(), partition=partition, on_delivery=delivered)
        producer.poll(0)
        time.sleep(0.007)
    assert producer.flush(30) == 0
    # Then every record acknowledged is in its partition's log
    in_log = {tp: high - low for tp, (low, high) in watermarks(admin, list(acked)).items()}
    assert in_log == dict(acked)
    assert sum(acked.values()) == 8 * 12 * len(specs)


def test_apply_manages_every_registered_group_unless_told_otherwise(prefix, admin, monkeypatch):
    # Given the platform's groups (and a handler module's, as `events run` finds them)
    monkeypatch.setenv("EVENTS_HANDLER_MODULES", "dify_events.consumers.handlers,tests.consumers.sample_handlers")
    from dify_events.consumers import registry

    names = [g.name for g in registry.discover()]
    assert {"provider-usage", "document-indexer", "tenant-provisioner"} <= set(names)
    domains = len(CATALOGUE.domains())
    # When `events topics apply --dry-run` runs without --group
    result = cli("topics", "apply", "--dry-run")
    # Then it would create the domain topics and every registered group's dead-letter and retry topics
    assert result.exit_code == 0, result.output
    for name in names:
        assert f"{prefix}.dlq.{name} " in result.output and f"{prefix}.retry.{name} " in result.output
    assert result.output.count("would create") == domains + 2 * len(names)
    # When --group names one / Then only that group's topics come with the domain topics
    narrowed = cli("topics", "apply", "--dry-run", "--group", "provider-usage")
    assert narrowed.exit_code == 0, narrowed.output
    assert narrowed.output.count("would create") == domains + 2 and ".dlq.document-indexer" not in narrowed.output
    # When --no-groups / Then the domain topics only
    bare = cli("topics", "apply", "--dry-run", "--no-groups")
    assert bare.exit_code == 0, bare.output
    assert bare.output.count("would create") == domains and ".dlq." not in bare.output
    # And both at once is a usage error; nothing was created by any of it
    both = cli("topics", "apply", "--dry-run", "--no-groups", "--group", "provider-usage")
    assert both.exit_code == 2 and "not both" in both.output
    assert list_topics(admin, prefix) == []


def _states(admin, prefix):
    return {s.name: s for s in list_topics(admin, prefix)}


def test_create_missing_creates_what_is_missing_as_declared_and_alters_nothing(prefix, admin, topic_factory):
    # Given a group's retry topic made by hand (1 partition, a short retention), its dead-letter topic missing
    retry, dlq = f"{prefix}.retry.g1", f"{prefix}.dlq.g1"
    topic_factory(retry, partitions=1, config={"retention.ms": "1000"})
    specs = group_topics(prefix, ["g1"])
    # When the missing ones are created
    created = create_missing(admin, specs)
    # Then only the dead-letter topic is, from the file's dead_letter template (replication clamped)
    declared = load_topics_file()
    assert [a.topic for a in created.actions] == [dlq] and created.brokers == 1
    assert any("lowered to 1" in w for w in created.warnings)
    wait_until(lambda: _states(admin, prefix)[dlq].config.get("retention.ms")
               == declared.dead_letter.config["retention.ms"], what="the dead-letter topic's configuration")
    state = _states(admin, prefix)[dlq]
    assert (state.partitions, state.replication_factor) == (declared.dead_letter.partitions, 1)
    assert state.config["min.insync.replicas"] == "1" and state.config["cleanup.policy"] == "delete"
    # And the existing retry topic is left as it was, though it differs from the file
    kept = _states(admin, prefix)[retry]
    assert (kept.partitions, kept.config["retention.ms"]) == (1, "1000")
    # And a second run creates nothing
    assert create_missing(admin, specs).actions == ()


def test_the_runner_creates_its_group_topics_from_the_topics_file(prefix, admin, caplog):
    # Given a group whose domain topic and own topics do not exist
    group, _ = sample_handlers.recording_group("topics-runner")
    runner = GroupRunner(group, health_port=0)
    # When the runner ensures its topics
    with caplog.at_level(logging.INFO, logger="consumers.runner"):
        runner._ensure_topics(runner._admin())
    # Then it warns about the domain topic, which is `events topics apply`'s to create ...
    assert f"subscribes to {prefix}.app, which does not exist yet" in caplog.text
    assert f"{prefix}.app" not in _states(admin, prefix)
    # ... and creates its retry and dead-letter topics as the file's templates declare them
    declared = load_topics_file()
    retry, dlq = group.retry_topic(prefix), group.dlq_topic(prefix)
    wait_until(lambda: all(_states(admin, prefix).get(t) is not None
                           and "retention.ms" in _states(admin, prefix)[t].config for t in (retry, dlq)),
               what="the group's topics with their configuration")
    states = _states(admin, prefix)
    assert states[retry].partitions == declared.retry.partitions
    assert states[retry].config["retention.ms"] == declared.retry.config["retention.ms"]
    assert states[dlq].partitions == declared.dead_letter.partitions
    assert states[dlq].config["retention.ms"] == declared.dead_letter.config["retention.ms"]
    assert states[dlq].config["message.timestamp.type"] == declared.defaults.config["message.timestamp.type"]
    assert f"created {dlq}" in caplog.text
    # When someone changes one by hand and the runner starts again
    set_topic_config(admin, retry, {"retention.ms": "1000"})
    runner._ensure_topics(runner._admin())
    # Then the runner leaves it alone (aligning is `events topics apply`'s job)
    assert _states(admin, prefix)[retry].config["retention.ms"] == "1000"


def _rows(output: str, prefix: str) -> dict[str, str]:
    """The lines of `events topics apply`'s table by topic."""
    return {line.split()[1]: line for line in output.splitlines() if f" {prefix}." in line}


def test_apply_declares_a_shared_groups_retry_topic_with_1_partition(prefix, admin, monkeypatch):
    # Given a registered shared group beside an ordered one
    monkeypatch.setenv("EVENTS_HANDLER_MODULES", "tests.consumers.sample_handlers,tests.consumers.shared_handlers")
    # When `events topics apply --dry-run` runs, for every group or for the shared one by name
    for args in ((), ("--group", "sample-shared")):
        result = cli("topics", "apply", "--dry-run", *args)
        assert result.exit_code == 0, result.output
        rows = _rows(result.output, prefix)
        # Then the shared group's retry topic would be made with 1 partition, the retry template's retention
        assert "1 partitions" in rows[f"{prefix}.retry.sample-shared"]
        assert "retention.ms=604800000" in rows[f"{prefix}.retry.sample-shared"]
        assert f"{prefix}.dlq.sample-shared" in rows
    # And the ordered group's retry topic with the retry template's 3; nothing was created
    every = _rows(cli("topics", "apply", "--dry-run").output, prefix)
    assert "3 partitions" in every[f"{prefix}.retry.sample-recorder"]
    assert list_topics(admin, prefix) == []


# -- the file, without a cluster --------------------------------------------------------------
def test_group_topics_follow_the_dead_letter_and_retry_templates():
    declared = load_topics_file()
    specs = {s.name: s for s in group_topics("p", ["a", "a"])}
    assert sorted(specs) == ["p.dlq.a", "p.retry.a"]
    dlq, retry = specs["p.dlq.a"], specs["p.retry.a"]
    assert (dlq.role, dlq.partitions, dlq.config["retention.ms"]) == (
        "dead-letter", declared.dead_letter.partitions, declared.dead_letter.config["retention.ms"])
    assert (retry.role, retry.partitions, retry.config["retention.ms"]) == (
        "retry", declared.retry.partitions, declared.retry.config["retention.ms"])
    assert dlq.replication_factor == declared.defaults.replication_factor
    assert dlq.config["min.insync.replicas"] == declared.defaults.config["min.insync.replicas"]
    assert [s for s in desired_topics("p", groups=["a"]) if s.role != "domain"] == list(specs.values())
    with pytest.raises(TopicsError, match="not a valid topic name"):
        group_topics("p", ["bad group"])


def test_a_shared_groups_retry_topic_is_the_retry_template_with_shared_retrys_overrides():
    declared = load_topics_file()
    specs = {s.name: s for s in group_topics("p", ["o", "s"], shared_groups=["s"])}
    assert (specs["p.retry.o"].partitions, specs["p.retry.s"].partitions) == (3, 1)
    assert specs["p.retry.s"].config == specs["p.retry.o"].config  # retention and the rest from `retry`
    assert (specs["p.dlq.s"].partitions, specs["p.dlq.s"].config) == (specs["p.dlq.o"].partitions,
                                                                       specs["p.dlq.o"].config)
    planned = {s.name: s for s in desired_topics("p", groups=["o", "s"], shared_groups=["s"])}
    assert planned["p.retry.s"] == specs["p.retry.s"]
    # A topics file without `shared_retry` still gives a shared group's retry topic 1 partition
    bare = TopicsFile.model_validate({"retry": {"partitions": 4, "config": {"retention.ms": 60000}}})
    spec = group_topics("p", ["s"], shared_groups={"s"}, topics_file=bare)[1]
    assert (spec.partitions, spec.config["retention.ms"]) == (1, "60000")
    assert declared.shared_retry.partitions == 1


def test_the_file_declares_every_catalogue_domain_and_group_topics():
    specs = {s.name: s for s in desired_topics("p", groups=["a", "b", "a"])}
    assert sorted(specs) == sorted(CATALOGUE.topics("p") + ["p.dlq.a", "p.retry.a", "p.dlq.b", "p.retry.b"])
    assert specs["p.dlq.a"].role == "dead-letter" and specs["p.retry.b"].role == "retry"
    assert specs["p.app"].config["min.insync.replicas"] == "2" and specs["p.app"].replication_factor == 3
    assert load_topics_file(TOPICS_FILE) == load_topics_file()


def test_yaml_numbers_and_booleans_become_config_text():
    parsed = TopicsFile.model_validate(yaml.safe_load(
        "defaults: {config: {retention.ms: 1000, unclean.leader.election.enable: false}}"))
    assert parsed.defaults.config == {"retention.ms": "1000", "unclean.leader.election.enable": "false"}


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"groups": ["bad group"]}, "not a valid topic name"),
    ({"topics_file": TopicsFile.model_validate({"domains": {"billing": {}}})}, "domains the catalogue does not have"),
    ({"extra": [TopicSpec("p.app", "domain", 1, 1)]}, "declared twice"),
])
def test_bad_declarations_are_refused(kwargs, words):
    with pytest.raises(TopicsError, match=words):
        desired_topics("p", **kwargs)


def test_a_bad_topics_file_is_one_clear_error(tmp_path):
    path = write_file(tmp_path, {"defaults": {"partitions": 0}, "domain": {}})
    with pytest.raises(TopicsError, match="is not valid") as caught:
        load_topics_file(path)
    assert "partitions" in str(caught.value) and "domain" in str(caught.value)


@pytest.fixture
def silent_cluster() -> Iterator[str]:
    """An address that accepts connections and never answers (a broker hung, a proxy black hole)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed when the test ended
            while True:
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone would not, on Linux)
    listener.close()
    thread.join(10)
    for conn in accepted:
        conn.close()


def test_a_cluster_that_never_answers_gives_a_topics_error_not_a_timeout_traceback(silent_cluster):
    # (a group process starting during a cluster fault died of `TimeoutError` from its dead-letter
    # topic's configuration read, which `_dead_letter_limit` handles as a TopicsError)
    admin = Admin({"bootstrap.servers": silent_cluster})
    with pytest.raises(TopicsError, match="cannot read the configuration of t1"):  # whichever wait ends first
        topic_config(admin, "t1", timeout=1.0)
