"""Declarative topics: the topics file, and a plan/apply over confluent_kafka's AdminClient.

``plan`` compares the topics the file declares (one per domain of the catalogue, plus each
consumer group's dead-letter and retry topics) with the cluster and says, per topic: ``create``,
``alter`` (configuration keys to set, partitions to add) or ``ok``. ``apply`` carries a plan out.
Run twice, the second run finds everything ``ok``. ``create_missing`` only creates what is missing
(a consumer group's runner uses it for its own topics, from ``group_topics``). ``configure_share_group``
sets the file's ``share_group`` configuration on a share group (KIP-932), which Kafka keeps per group.

What apply never does, and reports instead: lower a partition count (Kafka cannot; a new count
also moves keys to other partitions, breaking per-key order), change a replication factor (that
is a partition reassignment), or touch configuration keys the file does not name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .errors import TopicsError
from .settings import Settings, get_settings, librdkafka_value

TOPICS_FILE = Path(__file__).with_name("topics.yaml")
Role = Literal["domain", "dead-letter", "retry"]
_SET_ON_TOPIC = ConfigSource.DYNAMIC_TOPIC_CONFIG.value  # describe_configs gives sources as ints
_TOPIC_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


# -- the file ---------------------------------------------------------------------------------
def _config_mapping(value: Any) -> Any:
    """A mapping of configuration keys with its values as Kafka's text (``true``, ``a,b``)."""
    if isinstance(value, Mapping):
        return {str(k): librdkafka_value(v) for k, v in value.items()}
    return value


ConfigMapping = Annotated[dict[str, str], BeforeValidator(_config_mapping)]


class TopicTemplate(BaseModel):
    """Overrides for one topic or kind of topic; unset values come from the defaults."""

    model_config = ConfigDict(extra="forbid")

    partitions: int | None = Field(default=None, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)
    config: ConfigMapping = Field(default_factory=dict)



class TopicDefaults(TopicTemplate):
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=3, ge=1)


class TopicsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: TopicDefaults = Field(default_factory=TopicDefaults)
    domains: dict[str, TopicTemplate] = Field(default_factory=dict)
    dead_letter: TopicTemplate = Field(default_factory=TopicTemplate)
    retry: TopicTemplate = Field(default_factory=TopicTemplate)
    # a shared group's retry topic: ``retry`` with these overrides (a file without it still gets 1 partition)
    shared_retry: TopicTemplate = Field(default_factory=lambda: TopicTemplate(partitions=1))
    share_group: ConfigMapping = Field(default_factory=dict)

    def retry_template(self, shared: bool) -> TopicTemplate:
        """The template of a group's retry topic; a shared group's takes ``shared_retry``'s overrides."""
        if not shared:
            return self.retry
        return TopicTemplate(
            partitions=self.shared_retry.partitions or self.retry.partitions,
            replication_factor=self.shared_retry.replication_factor or self.retry.replication_factor,
            config={**self.retry.config, **self.shared_retry.config},
        )

    def resolve(self, name: str, role: Role, template: TopicTemplate | None) -> TopicSpec:
        template = template or TopicTemplate()
        return TopicSpec(
            name=name, role=role,
            partitions=template.partitions or self.defaults.partitions,
            replication_factor=template.replication_factor or self.defaults.replication_factor,
            config={**self.defaults.config, **template.config},
        )


def load_topics_file(path: Path | str = TOPICS_FILE) -> TopicsFile:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TopicsError(f"cannot read the topics file {path}: {exc}") from exc
    try:
        return TopicsFile.model_validate(data)
    except ValidationError as exc:
        raise TopicsError(f"the topics file {path} is not valid: {exc}") from exc


@dataclass(frozen=True)
class TopicSpec:
    """One topic as declared."""

    name: str
    role: Role
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


def _check_name(name: str) -> str:
    if not name or len(name) > 249 or not set(name) <= _TOPIC_NAME_CHARS or name in (".", ".."):
        raise TopicsError(f"{name!r} is not a valid topic name (letters, digits, '.', '_', '-'; at most 249)")
    return name


def dead_letter_topic(prefix: str, group: str) -> str:
    return f"{prefix}.dlq.{group}"


def retry_topic(prefix: str, group: str) -> str:
    return f"{prefix}.retry.{group}"


def desired_topics(prefix: str, *, groups: Iterable[str] = (), shared_groups: Collection[str] = (),
                   domains: Iterable[str] | None = None, topics_file: TopicsFile | None = None,
                   extra: Iterable[TopicSpec] = ()) -> list[TopicSpec]:
    """Every topic the file declares for this prefix: the domains' (default: the catalogue's),
    each group's dead-letter and retry topics (see ``group_topics``), then ``extra`` specs as given."""
    if domains is None:
        from .catalogue import CATALOGUE

        domains = CATALOGUE.domains()
    topics_file = topics_file or load_topics_file()
    domains = list(domains)
    unknown = sorted(set(topics_file.domains) - set(domains))
    if unknown:
        raise TopicsError(f"the topics file names domains the catalogue does not have: {', '.join(unknown)}")
    specs = [topics_file.resolve(f"{prefix}.{d}", "domain", topics_file.domains.get(d)) for d in domains]
    specs.extend(group_topics(prefix, groups, shared_groups=shared_groups, topics_file=topics_file))
    specs.extend(extra)
    seen: set[str] = set()
    for spec in specs:
        _check_name(spec.name)
        if spec.name in seen:
            raise TopicsError(f"the topic {spec.name} is declared twice")
        seen.add(spec.name)
    return specs


def group_topics(prefix: str, groups: Iterable[str], *, shared_groups: Collection[str] = (),
                 topics_file: TopicsFile | None = None) -> list[TopicSpec]:
    """Each group's dead-letter and retry topics as the file's ``dead_letter`` and ``retry``
    templates declare them (a group named twice counts once). The retry topic of a group named in
    ``shared_groups`` (``delivery="shared"``) takes the ``shared_retry`` overrides: a share group
    hands a partition to several members only once it has more members than partitions, so each
    partition of its retry topic takes a member away from its domain topics."""
    topics_file = topics_file or load_topics_file()
    specs = []
    for group in dict.fromkeys(groups):
        specs.append(topics_file.resolve(_check_name(dead_letter_topic(prefix, group)), "dead-letter",
                                         topics_file.dead_letter))
        specs.append(topics_file.resolve(_check_name(retry_topic(prefix, group)), "retry",
                                         topics_file.retry_template(group in shared_groups)))
    return specs


# -- the cluster ------------------------------------------------------------------------------
def is_refusal(error: KafkaError) -> bool:
    """The cluster refused us (credentials, or a certificate we do not trust): retrying will not
    help. Not any TLS error: a handshake cut short by a restarting broker is worth another try."""
    text = error.str()
    return (error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)
            or "uthenticat" in text or "certificate verify failed" in text)


class Admin(AdminClient):
    """An ``AdminClient`` that remembers the cluster's refusal (``refusal``), which librdkafka
    reports only to the error callback, so that a wait for metadata ends at once with the reason."""

    def __init__(self, conf: dict[str, Any]):
        # The callback must not refer to the client: a client in a reference cycle lives until the
        # cycle collector runs, possibly past exit, where its threads crash OpenSSL's exit handlers.
        latest: list[KafkaError] = []

        def on_error(error: KafkaError) -> None:
            if is_refusal(error):
                latest[:] = [error]

        self._refusal = latest
        # ignore: confluent-kafka's stub allows only str/int/float/bool values, but librdkafka's config takes callbacks
        super().__init__({**conf, "error_cb": on_error})  # type: ignore[dict-item]

    @property
    def refusal(self) -> KafkaError | None:
        return self._refusal[0] if self._refusal else None


def admin_client(settings: Settings | None = None, *, logger: logging.Logger | None = None) -> Admin:
    """An ``Admin`` on the settings' cluster; librdkafka's log lines go to ``logger``."""
    settings = settings or get_settings()
    return Admin({"bootstrap.servers": settings.bootstrap(), **settings.kafka_properties(),
                  "logger": logger or logging.getLogger("schemas.librdkafka")})


@dataclass(frozen=True)
class TopicState:
    """One topic as the cluster has it; ``config`` holds the keys set on the topic itself."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


def cluster_metadata(admin: AdminClient, timeout: float):
    """The cluster's metadata, asked for a second at a time, so that a refusal ends the wait."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            admin.poll(0)  # serves the error callback
            refusal = getattr(admin, "refusal", None)
            if refusal is not None:
                raise TopicsError(f"cannot read the cluster's metadata: {refusal.str()}") from KafkaException(refusal)
            if time.monotonic() >= deadline:
                error = exc.args[0] if exc.args else exc
                raise TopicsError(f"cannot read the cluster's metadata: "
                                  f"{error.str() if isinstance(error, KafkaError) else error}") from exc


def _describe_configs(admin: AdminClient, names: Sequence[str], timeout: float, only_set: bool = False,
                      kind: ResourceType = ResourceType.TOPIC) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource(kind, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    result: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=timeout)
        except KafkaException as exc:
            raise TopicsError(f"cannot read the configuration of {resource.name}: {exc.args[0]}") from exc
        except TimeoutError as exc:  # the future's own wait ended before librdkafka's request timed out
            raise TopicsError(f"cannot read the configuration of {resource.name}: no answer within "
                              f"{timeout:.0f}s") from exc
        result[resource.name] = {
            k: e.value for k, e in entries.items()
            if e.value is not None and (not only_set or e.source == _SET_ON_TOPIC)
        }
    return result


# ListOffsets answers that mean the admin client's view of a partition's leader is out of date: after a
# broker restart librdkafka goes on asking with the leader epoch it cached (FENCED_LEADER_EPOCH) until
# its metadata is refreshed
_STALE_LEADER = frozenset({KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH,
                           KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._NOENT})

# Kafka's admin API has nothing to wait on for "the cluster shows it now" (no watch on metadata, configs or
# leadership): the loops below ask again at this interval until their caller's deadline.
ASK_AGAIN_S = 0.2

# what a new partition's leader answers until it has loaded the partition (``await_served`` asks again)
_NOT_LOADED_YET = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION})


def list_offsets(admin: AdminClient, wanted: Mapping[tuple[str, int], Any], *,
                 timeout: float = 30.0) -> dict[tuple[str, int], int]:
    """The offset of each ``(topic, partition)`` for its ``OffsetSpec``. A partition whose answer
    says the client's metadata is stale, or is retriable, is asked again after a metadata refresh,
    until ``timeout``; other errors raise ``KafkaException``, as librdkafka's futures do."""
    deadline = time.monotonic() + timeout
    pending, found = dict(wanted), {}
    while pending:
        left = max(1.0, deadline - time.monotonic())
        futures = admin.list_offsets({TopicPartition(t, p): spec for (t, p), spec in pending.items()},
                                     request_timeout=left)
        again = {}
        for tp, future in futures.items():
            key = (tp.topic, tp.partition)
            try:
                found[key] = future.result(timeout=left).offset
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"no offsets within {timeout:.0f}s")) \
                        from None
                again[key] = pending[key]
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                stale = isinstance(error, KafkaError) and (error.code() in _STALE_LEADER or error.retriable())
                if not stale or time.monotonic() >= deadline:
                    raise
                again[key] = pending[key]
        pending = again
        if pending:
            try:
                admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))  # refreshes leaders and epochs
            except KafkaException:
                time.sleep(ASK_AGAIN_S)  # the cluster is on its way back: ask again
    return found


def topic_config(admin: AdminClient, topic: str, *, timeout: float = 10.0) -> dict[str, str]:
    """Every configuration value of ``topic`` (set on it, or the broker's default)."""
    return _describe_configs(admin, [topic], timeout).get(topic, {})


def list_topics(admin: AdminClient, prefix: str | None, *, timeout: float = 10.0) -> list[TopicState]:
    """The cluster's topics under ``<prefix>.`` (every non-internal topic when prefix is None)."""
    metadata = cluster_metadata(admin, timeout)
    names = sorted(n for n in metadata.topics
                   if not n.startswith("__") and (prefix is None or n.startswith(f"{prefix}.")))
    configs = _describe_configs(admin, names, timeout, only_set=True)
    states = []
    for name in names:
        partitions = metadata.topics[name].partitions
        rf = len(partitions[0].replicas) if partitions else 0
        states.append(TopicState(name, len(partitions), rf, configs.get(name, {})))
    return states


# -- plan and apply ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TopicAction:
    """What ``apply`` will do (or did) to one topic."""

    spec: TopicSpec                    # as declared, replication clamped to the cluster
    action: Literal["create", "alter", "ok"]
    config_changes: Mapping[str, tuple[str | None, str]] = field(default_factory=dict)  # key -> (now, wanted)
    partitions_from: int | None = None  # an increase: from this count to spec.partitions
    notes: tuple[str, ...] = ()         # what differs and is left alone

    @property
    def topic(self) -> str:
        return self.spec.name

    def details(self) -> str:
        parts: list[str] = []
        if self.action == "create":
            cfg = ", ".join(f"{k}={v}" for k, v in sorted(self.spec.config.items()))
            parts.append(f"{self.spec.partitions} partitions, replication {self.spec.replication_factor}"
                         + (f", {cfg}" if cfg else ""))
        if self.partitions_from is not None:
            parts.append(f"partitions {self.partitions_from} -> {self.spec.partitions}")
        parts += [f"{k}: {old if old is not None else '(unset)'} -> {new}"
                  for k, (old, new) in sorted(self.config_changes.items())]
        parts += list(self.notes)
        return "; ".join(parts) or "as declared"


@dataclass(frozen=True)
class Plan:
    actions: tuple[TopicAction, ...]
    brokers: int
    warnings: tuple[str, ...] = ()

    @property
    def changes(self) -> tuple[TopicAction, ...]:
        return tuple(a for a in self.actions if a.action != "ok")


def _clamp(specs: Sequence[TopicSpec], brokers: int) -> tuple[list[TopicSpec], list[str]]:
    clamped, lowered = [], []
    for spec in specs:
        if spec.replication_factor > brokers:
            config = dict(spec.config)
            if int(config.get("min.insync.replicas", "1")) > brokers:
                config["min.insync.replicas"] = str(brokers)
            lowered.append(spec.name)
            spec = TopicSpec(spec.name, spec.role, spec.partitions, brokers, config)
        clamped.append(spec)
    warnings = []
    if lowered:
        warnings.append(f"the cluster has {brokers} broker(s): replication factor (and min.insync.replicas) "
                        f"lowered to {brokers} for {len(lowered)} topic(s); fine for development, "
                        "not for production")
    return clamped, warnings


def plan(admin: AdminClient, prefix: str, *, groups: Iterable[str] = (), shared_groups: Collection[str] = (),
         extra: Iterable[TopicSpec] = (), topics_file: TopicsFile | None = None,
         domains: Iterable[str] | None = None, timeout: float = 10.0) -> Plan:
    """Compares the declared topics with the cluster; changes nothing."""
    specs = desired_topics(prefix, groups=groups, shared_groups=shared_groups, domains=domains,
                           topics_file=topics_file, extra=extra)
    metadata = cluster_metadata(admin, timeout)
    brokers = len(metadata.brokers)
    if brokers < 1:
        raise TopicsError("the cluster reports no brokers")
    specs, warnings = _clamp(specs, brokers)
    existing = [s.name for s in specs if s.name in metadata.topics]
    configs = _describe_configs(admin, existing, timeout)
    actions = []
    for spec in specs:
        topic = metadata.topics.get(spec.name)
        if topic is None:
            actions.append(TopicAction(spec, "create"))
            continue
        partitions = len(topic.partitions)
        rf = len(topic.partitions[0].replicas) if topic.partitions else 0
        notes = []
        partitions_from = None
        if partitions < spec.partitions:
            partitions_from = partitions
        elif partitions > spec.partitions:
            notes.append(f"has {partitions} partitions, the file asks {spec.partitions}: "
                         "partitions are never decreased")
        if rf != spec.replication_factor:
            notes.append(f"replication factor is {rf}, the file asks {spec.replication_factor}: "
                         "change it by partition reassignment")
        current = configs.get(spec.name, {})
        changes = {k: (current.get(k), v) for k, v in spec.config.items() if current.get(k) != v}
        action: Literal["alter", "ok"] = "alter" if changes or partitions_from is not None else "ok"
        actions.append(TopicAction(spec, action, changes, partitions_from, tuple(notes)))
    return Plan(tuple(actions), brokers, tuple(warnings))


def _wait(futures: Mapping[Any, Any], what: str, timeout: float, ok_codes: tuple[int, ...] = ()) -> None:
    failures = []
    for key, future in futures.items():
        name = getattr(key, "name", key)
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() in ok_codes:
                continue
            failures.append(f"{name}: {error.str() if isinstance(error, KafkaError) else error}")
        except TimeoutError:
            failures.append(f"{name}: no answer within {timeout:.0f}s")
    if failures:
        raise TopicsError(f"cannot {what}: " + "; ".join(failures))


def apply(admin: AdminClient, the_plan: Plan, *, timeout: float = 30.0) -> Plan:
    """Carries out a plan: creates, alters configuration, adds partitions; then waits until every
    new partition is served by its leader (``await_served``). Returns the plan."""
    creates = [a.spec for a in the_plan.actions if a.action == "create"]
    if creates:
        new = [NewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.config)) for s in creates]
        _wait(admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout), "create topics",
              timeout, ok_codes=(KafkaError.TOPIC_ALREADY_EXISTS,))
    alters = [a for a in the_plan.actions if a.action == "alter" and a.config_changes]
    if alters:
        resources = [ConfigResource(ResourceType.TOPIC, a.topic, incremental_configs=[
            ConfigEntry(k, new, incremental_operation=AlterConfigOpType.SET)
            for k, (_, new) in sorted(a.config_changes.items())]) for a in alters]
        _wait(admin.incremental_alter_configs(resources, request_timeout=timeout), "alter topic configs", timeout)
    grows = [a for a in the_plan.actions if a.partitions_from is not None]
    if grows:
        _wait(admin.create_partitions([NewPartitions(a.topic, a.spec.partitions) for a in grows],
                                      operation_timeout=timeout, request_timeout=timeout),
              "add partitions", timeout)
    if creates or grows:
        await_served(admin, {a.topic: a.spec.partitions for a in the_plan.actions
                              if a.action == "create" or a.partitions_from is not None}, timeout)
    if creates or alters:
        # brokers learn configuration changes from the metadata log a moment later: wait, so that
        # a plan made right after this apply finds nothing left to do
        wanted = {s.name: dict(s.config) for s in creates}
        wanted.update({a.topic: {k: new for k, (_, new) in a.config_changes.items()} for a in alters})
        _await_configs(admin, wanted, timeout)
    return the_plan


def create_missing(admin: AdminClient, specs: Sequence[TopicSpec], *, timeout: float = 30.0) -> Plan:
    """Creates those of ``specs`` the cluster does not have, as declared (replication clamped to
    the broker count), and waits until their leaders serve them. Existing topics are left exactly as
    they are, whatever they differ in: aligning them is ``apply``'s job. Needs only the rights to
    read metadata and create topics (no DescribeConfigs). A topic created meanwhile by someone
    else counts as created. Returns what it created, as a plan of ``create`` actions."""
    metadata = cluster_metadata(admin, timeout)
    brokers = len(metadata.brokers)
    if brokers < 1:
        raise TopicsError("the cluster reports no brokers")
    missing, warnings = _clamp([s for s in specs if s.name not in metadata.topics], brokers)
    if missing:
        new = [NewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.config)) for s in missing]
        _wait(admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout), "create topics",
              timeout, ok_codes=(KafkaError.TOPIC_ALREADY_EXISTS,))
        # existence only: a topic someone else created meanwhile may have another partition count
        await_served(admin, {s.name: 1 for s in missing}, timeout)
    return Plan(tuple(TopicAction(s, "create") for s in missing), brokers, tuple(warnings))


def configure_share_group(admin: AdminClient, group_id: str, *, topics_file: TopicsFile | None = None,
                          timeout: float = 30.0) -> dict[str, str]:
    """Sets the topics file's ``share_group`` configuration on the share group ``group_id`` (it may
    not exist yet: the configuration waits for it). Returns what was set, once the broker reads it
    back. Call it before the group's first member joins: ``share.auto.offset.reset`` only applies to
    a group that has no position yet."""
    config = (topics_file or load_topics_file()).share_group
    if config:
        resource = ConfigResource(ResourceType.GROUP, group_id, incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in sorted(config.items())])
        _wait(admin.incremental_alter_configs([resource], request_timeout=timeout), "configure the share group",
              timeout)
        _await_configs(admin, {group_id: config}, timeout, kind=ResourceType.GROUP)
    return dict(config)


def _await_configs(admin: AdminClient, wanted: Mapping[str, Mapping[str, str]], timeout: float,
                   kind: ResourceType = ResourceType.TOPIC) -> None:
    """Until the broker answers the ``wanted`` values: an alteration is acknowledged once the
    controller has it, before the broker's own view of the metadata shows it."""
    deadline = time.monotonic() + timeout
    pending = {name: dict(config) for name, config in wanted.items() if config}
    while pending:
        try:
            current = _describe_configs(admin, list(pending), max(1.0, deadline - time.monotonic()), kind=kind)
        except TopicsError:
            current = {}  # a topic just created may not be describable yet
        pending = {name: config for name, config in pending.items()
                   if any(current.get(name, {}).get(k) != v for k, v in config.items())}
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TopicsError(f"the cluster did not show the new configuration of {', '.join(pending)} "
                              f"within {timeout:.0f}s")
        time.sleep(ASK_AGAIN_S)


def await_served(admin: AdminClient, wanted: Mapping[str, int], timeout: float = 30.0) -> None:
    """Waits until the metadata shows each topic with at least its count of partitions, then until
    the leader of each of their partitions answers for it.

    The metadata names a new partition's leader a moment before that broker serves it (it answers
    NOT_LEADER meanwhile), and in that moment librdkafka's idempotent producer can lose a write:
    the partition's first batch fails, the next one is accepted (a producer the partition has no
    state for may start at any sequence), and the failed batch counts as delivered ("implicitly
    acked by subsequent batch success"; confluentinc/confluent-kafka-go#921)."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = cluster_metadata(admin, max(1.0, deadline - time.monotonic()))
        missing = [n for n, p in wanted.items()
                   if n not in metadata.topics or metadata.topics[n].error is not None
                   or len(metadata.topics[n].partitions) < p]
        if not missing:
            break
        if time.monotonic() >= deadline:
            raise TopicsError(f"the cluster did not show {', '.join(missing)} within {timeout:.0f}s")
        time.sleep(ASK_AGAIN_S)
    partitions = {(t, p): OffsetSpec.latest() for t in wanted for p in metadata.topics[t].partitions}
    while True:
        try:
            list_offsets(admin, partitions, timeout=max(1.0, deadline - time.monotonic()))
            return
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            # the leader the metadata names may not have loaded the new partition yet: for a moment it
            # answers UNKNOWN_TOPIC_OR_PARTITION (seen with three brokers on a busy machine)
            if error is None or error.code() not in _NOT_LOADED_YET or time.monotonic() >= deadline:
                raise TopicsError(f"the leaders of the new partitions did not serve them within {timeout:.0f}s: "
                                  f"{error.str() if error is not None else exc}") from None
        time.sleep(ASK_AGAIN_S)
