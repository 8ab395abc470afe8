"""Apache Kafka's own command-line tools, run from the local broker's jars: the reference for a
Kafka figure (lag, offsets, a share group's LAG) that the platform measures itself."""

from __future__ import annotations

import subprocess

from dify_events.consumers.broker.jars import classpath
from dify_events.schemas.settings import cache_dir, get_settings

CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"  # kafka-consumer-groups.sh
SHARE_GROUPS = "org.apache.kafka.tools.consumer.group.ShareGroupCommand"  # kafka-share-groups.sh


def kafka_tool(main_class: str, *args: str, bootstrap: str | None = None) -> str:
    """The standard output of the tool ``main_class`` with ``args``, against the test cluster (or
    ``bootstrap``); fails the test when it exits non-zero."""
    jars = ":".join(str(p) for p in classpath(cache_dir()))
    command = ["java", "-cp", jars, main_class, "--bootstrap-server", bootstrap or get_settings().bootstrap(), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
