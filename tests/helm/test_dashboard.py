"""The Grafana dashboard shipped with the chart: a well-formed dashboard, loaded by Grafana's sidecar,
whose every query names only metrics the platform exports (read from ``consumers/telemetry/metrics.py``
itself; ``tests/telemetry/test_prometheus.py`` checks them against a running group's exposition)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dify_events.consumers.telemetry import metrics
from tests.helm.conftest import CHART

DASHBOARD = CHART / "files" / "dashboard.json"
METRIC = re.compile(r"\b(events_[a-z_]+)\b")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def exported_metrics() -> set[str]:
    """The Prometheus names of the consumer runtime's instruments, as the exporter names them
    (dots to underscores, a counter gains ``_total``), and of its histogram families."""
    source = Path(metrics.__file__).read_text()
    gauges = re.findall(r'create_observable_gauge\("([a-z_.]+)"', source)
    counters = [instrument for instrument, _unit, _description in metrics.COUNTERS.values()]
    return ({c.replace(".", "_") + "_total" for c in counters} | {g.replace(".", "_") for g in gauges}
            | {family for family, _labels, _description in metrics.HISTOGRAMS.values()})


def queried_metrics(dashboard: dict) -> set[str]:
    """Metric families the dashboard's queries (and template variables) name, series suffixes removed."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    names = {name for expr in exprs for name in METRIC.findall(expr)}
    return {next((n.removesuffix(s) for s in HISTOGRAM_SERIES if n.endswith(s) and n.removesuffix(s)
                  in {f for f, _l, _d in metrics.HISTOGRAMS.values()}), n) for n in names}


def test_the_dashboard_is_a_well_formed_grafana_dashboard():
    # When
    dashboard = json.loads(DASHBOARD.read_text())

    # Then: Grafana's required fields, unique panel ids, each panel placed on the 24-column grid with queries
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"} and 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["type"] == "timeseries" and panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert 'group=~"$group"' in target["expr"], target["expr"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["group"]["type"] == "query"


def test_every_query_names_a_metric_the_platform_exports_and_the_promised_ones_are_shown():
    # Given
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_metrics()

    # When
    queried = queried_metrics(dashboard)

    # Then nothing unknown is queried, and lag, rates, durations, latency and pauses are there, and a shared
    # group's busy ratio, acknowledgements and redeliveries
    assert queried <= exported, f"not exported by the platform: {sorted(queried - exported)}"
    assert {"events_consumer_lag", "events_messages_handled_total", "events_messages_retried_total",
            "events_messages_dead_lettered_total", "events_handler_duration_seconds",
            "events_end_to_end_latency_seconds", "events_consumer_pauses_total", "events_consumer_capacity",
            "events_share_acknowledgements_total", "events_share_redelivered_total"} <= queried
    # and a misspelt metric would be caught
    assert "events_consumer_lags" not in exported


def test_the_dashboard_is_off_by_default_and_a_sidecar_configmap_when_on(render):
    # When
    off = render()
    on = render(set_values=["dashboard.enabled=true", "dashboard.annotations.grafana_folder=Kafka"])

    # Then
    assert not [c for c in off.kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    config_map = on.one("ConfigMap", "events-dify-events-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Kafka"}
    assert json.loads(config_map["data"]["dify-events.json"]) == json.loads(DASHBOARD.read_text())
