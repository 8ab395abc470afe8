"""The counters only a group's processes know (retries, messages in flight), read from their
Prometheus endpoints (``events run``'s ``:9464/metrics``), summed per group over the endpoints given."""

from __future__ import annotations

import logging
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("consumers.console")

# sample name in the exposition -> our name
SAMPLES = {
    "events_messages_handled_total": "handled",
    "events_messages_retried_total": "retried",
    "events_messages_dead_lettered_total": "dead_lettered",
    "events_messages_in_flight": "in_flight",
    "events_consumer_pauses_total": "pauses",
}
TIMEOUT_S = 2.0


def scrape(urls: list[str]) -> dict[str, dict[str, float]]:
    """group -> {handled, retried, dead_lettered, in_flight, pauses}, over every endpoint that answered."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                text = response.read().decode("utf-8", "replace")
        except (OSError, ValueError) as exc:
            log.debug("scraping %s: %s", url, exc)
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, group = SAMPLES.get(sample.name), sample.labels.get("group")
                if name and group:
                    totals[group][name] += sample.value
    return {group: dict(values) for group, values in totals.items()}
