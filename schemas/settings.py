"""Configuration: environment variables, then an optional YAML file, then defaults.

librdkafka properties pass through untouched, by their own names: in the file's ``kafka:``
mapping (``sasl.mechanism: SCRAM-SHA-512``) or as ``EVENTS_KAFKA_<NAME>`` environment
variables with dots written as underscores (``EVENTS_KAFKA_SASL_PASSWORD`` -> ``sasl.password``).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import SettingsError, describe_validation_error

KAFKA_ENV_PREFIX = "EVENTS_KAFKA_"
BOOTSTRAP_ENV = ("EVENTS_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS")
SECRET_MARKERS = ("password", "secret", "key.password", "key.pem", "sasl.oauthbearer.config", "token")
MAX_RETENTION_DAYS = 36_500  # a century: beyond it, "now minus the retention" leaves the calendar
MAX_DRAIN_TIMEOUT_S = 86_400.0


def cache_dir() -> Path:
    """Per-user cache of downloaded things (Kafka's jars), shared by every home."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dify-events"


def default_home() -> Path:
    """Where the local broker's data and the embedded SQLite database live (``EVENTS_HOME``)."""
    return Path(os.environ.get("EVENTS_HOME") or cache_dir())


def local_broker_home() -> Path:
    return default_home() / "broker"


def local_cluster_home() -> Path:
    """The local three-broker cluster's (``events broker start --brokers 3``)."""
    return default_home() / "cluster"


def local_bootstrap() -> str | None:
    """The running local broker's address, else the running nodes' of the local cluster, else None."""
    for homes in ([local_broker_home()], sorted(local_cluster_home().glob("node-*"))):
        ports = []
        for home in homes:
            try:
                state = json.loads((home / "broker.json").read_text())
            except (OSError, ValueError):
                continue
            if Path(f"/proc/{state.get('pid')}").exists():
                ports.append(state["port"])
        if ports:
            return ",".join(f"127.0.0.1:{port}" for port in ports)
    return None


def config_file() -> Path | None:
    """The config file in use: ``EVENTS_CONFIG_FILE``, else ``./events.yaml`` when present."""
    named = os.environ.get("EVENTS_CONFIG_FILE")
    if named:
        return Path(named)
    return Path("events.yaml") if Path("events.yaml").is_file() else None


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the file named by ``EVENTS_CONFIG_FILE`` (or ``./events.yaml`` when present)."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_file()
        if path is None:
            return {}
        data = read_config_file(path)
        if any(os.environ.get(name) for name in BOOTSTRAP_ENV):
            data.pop("bootstrap_servers", None)  # the environment wins (both at once would be an "extra" input)
        return data


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's mapping. Its errors name the file and the place, never quote its text (it may
    hold a password): not PyYAML's snippet of the line, not the bytes that are not UTF-8."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"the config file {path} is not UTF-8 text (an undecodable byte at position "
                            f"{exc.start}): save it as UTF-8") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"the config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"the config file {path} must hold a YAML mapping, not {type(data).__name__}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's explanation with its places, without the snippet of the file it quotes."""
    parts = []
    for text, mark in ((getattr(exc, "context", None), getattr(exc, "context_mark", None)),
                       (getattr(exc, "problem", None), getattr(exc, "problem_mark", None))):
        if text:
            parts.append(f"{text} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else text)
    return ": ".join(parts) or type(exc).__name__


def librdkafka_value(value: Any) -> Any:
    """A YAML scalar as librdkafka's text (``10`` -> ``"10"``, ``true`` -> ``"true"``, a list ->
    comma-separated); anything else is returned as it is, for validation to refuse."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, bool | int | float | str) for v in value):
        return ",".join(librdkafka_value(v) for v in value)
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTS_", extra="forbid")

    bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("EVENTS_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers"),
        description="Kafka bootstrap servers; unset means the local broker (`events broker start`).",
    )
    topic_prefix: str = Field(default="events", pattern=r"^[a-zA-Z0-9._-]+$")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; unset means SQLite under EVENTS_HOME.")
    kafka: dict[str, str] = Field(default_factory=dict, description="librdkafka properties, passed through.")
    concurrency: int = Field(default=8, ge=1, le=1024)
    batch_max: int | None = Field(default=None, ge=1, le=10_000,
                                  description="Most idempotent events per transaction, over each group's batch_max; "
                                              "1 turns batches off.")
    inline: bool | None = Field(default=None,
                                description="Run handlers on the poll loop's thread, over each group's inline option "
                                            "(for handlers that do not wait: no hand-off between threads).")
    delivery: Literal["ordered", "shared"] | None = Field(
        default=None, description="Run the group with this delivery instead of the one its code declares "
                                  "(`ordered` on a cluster without share groups).")
    drain_timeout_s: float = Field(default=30.0, gt=0, le=MAX_DRAIN_TIMEOUT_S, allow_inf_nan=False)
    health_port: int = Field(default=8080, ge=0, le=65535)
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    idempotency_retention_days: float = Field(default=7.0, gt=0, le=MAX_RETENTION_DAYS, allow_inf_nan=False,
                                              description="How long processed keys are kept.")
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @field_validator("kafka", mode="before")
    @classmethod
    def _kafka_as_text(cls, value: Any) -> Any:
        """YAML writes numbers and booleans (``linger.ms: 10``); librdkafka takes every value as text."""
        if isinstance(value, dict):
            return {k: librdkafka_value(v) for k, v in value.items()}
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings, env_settings, _YamlFileSource(settings_cls), file_secret_settings)

    def kafka_properties(self) -> dict[str, str]:
        """librdkafka properties: the file's, then ``EVENTS_KAFKA_*`` over them."""
        props = {k: str(v) for k, v in self.kafka.items()}
        for name, value in os.environ.items():
            if name.startswith(KAFKA_ENV_PREFIX):
                props[name[len(KAFKA_ENV_PREFIX):].lower().replace("_", ".")] = value
        return props

    def bootstrap(self) -> str:
        """The configured cluster, else the local broker (or cluster) that `events broker start` left running."""
        if self.bootstrap_servers:
            return self.bootstrap_servers
        found = local_bootstrap()
        if not found:
            raise ValueError("no Kafka cluster is configured and no local broker is running: "
                             "set KAFKA_BOOTSTRAP_SERVERS, or run `events broker start`")
        return found

    def database(self) -> str:
        return self.database_url or f"sqlite:///{default_home() / 'events.db'}"


def is_secret(name: str) -> bool:
    return any(marker in name.lower() for marker in SECRET_MARKERS)


def masked(props: dict[str, Any]) -> dict[str, Any]:
    return {k: ("*****" if is_secret(k) and v else v) for k, v in props.items()}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings. An invalid setting is a ``SettingsError`` that names it without its
    value (pydantic's own message shows the value, which may be a password)."""
    try:
        return Settings()
    except ValidationError as exc:
        path = config_file()
        raise SettingsError(f"the configuration is not valid: {describe_validation_error(exc)} (check the EVENTS_* "
                            f"environment variables{f' and the config file {path}' if path else ''})") from None
