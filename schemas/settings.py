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
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

KAFKA_ENV_PREFIX = "EVENTS_KAFKA_"
BOOTSTRAP_ENV = ("EVENTS_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS")
SECRET_MARKERS = ("password", "secret", "key.password", "key.pem", "sasl.oauthbearer.config", "token")


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


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the file named by ``EVENTS_CONFIG_FILE`` (or ``./events.yaml`` when present)."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("EVENTS_CONFIG_FILE") or ("events.yaml" if Path("events.yaml").is_file() else None)
        if not path:
            return {}
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read the config file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"the config file {path} must hold a YAML mapping, not {type(data).__name__}")
        if any(os.environ.get(name) for name in BOOTSTRAP_ENV):
            data.pop("bootstrap_servers", None)  # the environment wins (both at once would be an "extra" input)
        return data


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
    drain_timeout_s: float = Field(default=30.0, gt=0)
    health_port: int = Field(default=8080, ge=0, le=65535)
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    idempotency_retention_days: float = Field(default=7.0, gt=0, description="How long processed keys are kept.")
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

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
    return Settings()
