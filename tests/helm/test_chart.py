"""The Helm chart, checked with the real helm binary: lint, render, validate every manifest
against the Kubernetes OpenAPI schemas (offline, kubernetes-validate), and assert what the
rendered manifests promise (autoscaling, secrets by reference, security, the hook Job)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helm.conftest import CHART, EXAMPLES, KUBE_VERSION, NAMESPACE, RELEASE, REPO, Rendered

VALUE_SETS = {"defaults": (), **{name: (path,) for name, path in EXAMPLES.items()}}
DEFAULT_GROUPS = [
    "installed-app-provisioner", "site-provisioner", "app-dataset-joins", "tool-cache-cleaner",
    "plugin-trigger-sync", "webhook-sync", "workflow-schedule-sync", "app-trigger-sync",
    "dataset-cleaner", "document-cleaner", "document-indexer", "provider-usage", "feedback-telemetry",
    "app-telemetry", "credential-sync", "tenant-provisioner",
]
# The oldest cluster the chart's kubeVersion admits, and the newest kubernetes-validate knows.
VALIDATE_AGAINST = ["1.25.0", "1.37.0"]
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
SECRET_ENV = re.compile(r"PASSWORD|USERNAME|DATABASE_URL|SECRET|TOKEN")
# kubeconform's JSON schemas of the custom resources (see its SOURCES), by kind
CRD_SCHEMAS = {kind: json.loads((REPO / "tests" / "helm" / "crd-schemas" / f"{file}.json").read_text())
               for kind, file in (("ScaledObject", "scaledobject_v1alpha1"),
                                  ("TriggerAuthentication", "triggerauthentication_v1alpha1"),
                                  ("PrometheusRule", "prometheusrule_v1"))}


def values_of(name: str) -> dict:
    return yaml.safe_load(EXAMPLES[name].read_text())


def pod_templates(rendered: Rendered) -> list[tuple[str, dict]]:
    """(owner name, pod template) of every Deployment and Job."""
    return [(doc["metadata"]["name"], doc["spec"]["template"])
            for doc in rendered.kind("Deployment") + rendered.kind("Job")]


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(deployment: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container(deployment).get("env", [])}


def config_file_of(rendered: Rendered, pod_owner: dict) -> dict:
    """The runtime's config file a Deployment's or Job's pods read: the ConfigMap key their
    `config` volume mounts as events.yaml (the only key, when the volume names no items)."""
    volume = next(v for v in pod_owner["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    data = rendered.one("ConfigMap", volume["configMap"]["name"])["data"]
    items = volume["configMap"].get("items")
    if items:
        (item,) = items
        assert item["path"] == "events.yaml"
        key = item["key"]
    else:
        (key,) = data
    return yaml.safe_load(data[key])


def group_of(deployment: dict) -> str:
    args = container(deployment)["args"]
    assert args[:2] == ["run", "--group"], args
    return args[2]


def component_of(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def group_deployments(rendered: Rendered) -> list[dict]:
    """The consumer groups' Deployments (not the outbox relay's)."""
    return [doc for doc in rendered.kind("Deployment") if component_of(doc) == "consumer"]


def relay_deployments(rendered: Rendered) -> list[dict]:
    return [doc for doc in rendered.kind("Deployment") if component_of(doc) == "relay"]


def deployments_by_group(rendered: Rendered) -> dict[str, dict]:
    return {group_of(doc): doc for doc in group_deployments(rendered)}


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, and matchExpressions with In) matches."""
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return selector.get("matchLabels", {}).items() <= labels.items()


def fails_with(result, *fragments: str) -> None:
    assert result.returncode != 0, f"helm {result.args[0]} accepted the values:\n{result.output[:2000]}"
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in helm's error:\n{result.output[:2000]}"


# -- lint, render, validate -------------------------------------------------------------------
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_strict_passes(lint, values):
    # When
    result = lint(*values)

    # Then
    assert result.returncode == 0, result.output
    assert "0 chart(s) failed" in result.output


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_manifest_is_valid_kubernetes(render, values):
    # When
    rendered = render(*values)

    # Then
    assert rendered.documents
    for doc in rendered.documents:
        kind, name = doc["kind"], doc["metadata"]["name"]
        assert DNS_SUBDOMAIN.match(name) and len(name) <= 63, f"{kind} name {name!r}"
        for key, value in doc["metadata"].get("labels", {}).items():
            assert isinstance(value, str) and len(value) <= 63, f"{kind}/{name} label {key}={value!r}"
        if kind in CUSTOM_RESOURCES:
            if kind in CRD_SCHEMAS:
                valid_by_crd_schema(doc)
            CUSTOM_RESOURCES[kind](doc, rendered)
            continue
        for version in VALIDATE_AGAINST:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{kind}/{name} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_kube_version_floor_is_enforced(template):
    # When
    result = template(extra=["--kube-version", "1.24.0"])

    # Then
    fails_with(result, "kubeVersion", ">=1.25.0-0")


# -- custom resources kubernetes-validate does not know: their structure, checked here ---------
def valid_by_crd_schema(doc: dict) -> None:
    """What kubeconform checks: the document against its CRD's schema (tests/helm/crd-schemas)."""
    errors = sorted(jsonschema.Draft7Validator(CRD_SCHEMAS[doc["kind"]]).iter_errors(doc), key=str)
    assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: " + "; ".join(
        f"{e.message} at {list(e.path)}" for e in errors)


def check_scaled_object(doc: dict, rendered: Rendered) -> None:
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    spec = doc["spec"]
    target = spec["scaleTargetRef"]["name"]
    assert target in {d["metadata"]["name"] for d in rendered.kind("Deployment")}, target
    assert set(spec) <= {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "idleReplicaCount",
                         "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
    for key in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        assert isinstance(spec[key], int) and spec[key] >= 0, key
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["triggers"], "a ScaledObject needs a trigger"
    auths = {d["metadata"]["name"] for d in rendered.kind("TriggerAuthentication")}
    for trigger in spec["triggers"]:
        assert trigger["type"] in ("kafka", "prometheus")
        if trigger["type"] == "kafka":
            assert {"bootstrapServers", "consumerGroup"} <= set(trigger["metadata"])
        else:  # a shared group's: KEDA's prometheus scaler, which never reads the Kafka Secrets
            assert set(trigger["metadata"]) == {"serverAddress", "query", "threshold"}
            assert trigger["metricType"] == "Value" and "authenticationRef" not in trigger
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), "trigger metadata must be strings"
        if "authenticationRef" in trigger:
            assert trigger["authenticationRef"]["name"] in auths


def check_trigger_authentication(doc: dict, rendered: Rendered) -> None:
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    assert set(doc["spec"]) == {"secretTargetRef"}
    refs = doc["spec"]["secretTargetRef"]
    assert refs
    for ref in refs:
        assert set(ref) == {"parameter", "name", "key"}
        assert ref["parameter"] in {"username", "password", "ca", "cert", "key", "keyPassword"}


def check_pod_monitor(doc: dict, rendered: Rendered) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    selected = [d for d in rendered.kind("Deployment") + rendered.kind("Job")
                if selects(doc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
    assert selected == rendered.kind("Deployment"), "the PodMonitor must select every consumer and relay, no Job"
    for endpoint in doc["spec"]["podMetricsEndpoints"]:
        for deployment in selected:
            assert endpoint["port"] in {p["name"] for p in container(deployment)["ports"]}


def check_service_monitor(doc: dict, rendered: Rendered) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    services = [s for s in rendered.kind("Service") if selects(doc["spec"]["selector"], s["metadata"]["labels"])]
    assert services == rendered.kind("Service"), "the ServiceMonitor must select every metrics Service"
    for deployment in rendered.kind("Deployment"):  # each consumer and relay pod is behind one of them
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        (service,) = [s for s in services if s["spec"]["selector"].items() <= pod_labels.items()]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in {p["name"] for p in container(deployment)["ports"]}
        for endpoint in doc["spec"]["endpoints"]:
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def check_prometheus_rule(doc: dict, rendered: Rendered) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    for group in doc["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule)
            assert rule["expr"].strip()
            if "for" in rule:
                assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", rule["for"])


CUSTOM_RESOURCES = {
    "ScaledObject": check_scaled_object,
    "TriggerAuthentication": check_trigger_authentication,
    "PodMonitor": check_pod_monitor,
    "ServiceMonitor": check_service_monitor,
    "PrometheusRule": check_prometheus_rule,
}


# -- one Deployment per group -----------------------------------------------------------------
def test_defaults_run_one_deployment_per_group(render):
    # When
    rendered = render()

    # Then
    deployments = deployments_by_group(rendered)
    assert sorted(deployments) == sorted(DEFAULT_GROUPS)
    for group, deployment in deployments.items():
        assert deployment["metadata"]["name"] == f"events-dify-events-{group}"
        assert deployment["spec"]["replicas"] == 1
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["dify-events/consumer-group"] == group
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert not rendered.kind("ScaledObject") and not rendered.kind("HorizontalPodAutoscaler")


PLATFORM_GROUPS = """
import json
from dify_events.consumers import registry
from dify_events.schemas.topics import desired_topics
groups = registry.discover()
partitions = {s.name: s.partitions for s in desired_topics("events", groups=[g.name for g in groups])}
print(json.dumps({g.name: max(partitions[t] for t in g.domain_topics("events")) for g in groups}))
"""


@pytest.fixture(scope="module")
def platform_partitions() -> dict[str, int]:
    """{group: partitions of the busiest topic it reads}, of the platform's own groups, asked in
    a clean process (no test handler modules)."""
    env = {k: v for k, v in os.environ.items() if k != "EVENTS_HANDLER_MODULES"}
    proc = subprocess.run([sys.executable, "-c", PLATFORM_GROUPS], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def chart_partitions(*values_files) -> dict[str, int]:
    """{group: its effective `partitions`} for the chart's values.yaml with values files over it,
    the way Helm merges them: maps key by key, a list (`groups`) replaced as a whole."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    groups, default = values["groups"], values["defaults"]["partitions"]
    for path in values_files:
        extra = yaml.safe_load(path.read_text()) or {}
        groups = extra.get("groups", groups)
        default = extra.get("defaults", {}).get("partitions", default)
    return {g["name"]: g.get("partitions", default) for g in groups}


def test_defaults_deploy_every_group_of_the_platform_with_its_partition_count(platform_partitions):
    """The chart's default groups are the platform's registered groups, and each one's
    `partitions` is that of the busiest topic it reads (schemas/topics.yaml)."""
    # When
    chart = chart_partitions()

    # Then
    assert chart == platform_partitions


@pytest.mark.parametrize("values", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_every_example_gives_its_groups_their_partition_count(platform_partitions, values):
    """In each ci/*-values.yaml too, a group's `partitions` is that of its topic in
    schemas/topics.yaml: a larger count would let autoscaling run consumers that sit idle."""
    # When
    chart = chart_partitions(values)

    # Then
    assert set(chart) <= set(platform_partitions), "every example group is one of the platform's"
    assert chart == {name: platform_partitions[name] for name in chart}


def test_the_readme_example_gives_its_groups_their_partition_count(platform_partitions, tmp_path):
    # Given
    values = write_values(tmp_path, readme_example())

    # When
    chart = chart_partitions(values)

    # Then
    assert chart == {name: platform_partitions[name] for name in chart}


PLATFORM_DELIVERIES = """
import json
from dify_events.consumers import registry
print(json.dumps({g.name: g.delivery for g in registry.discover(builtin=True)}))
"""


def test_defaults_give_every_group_the_delivery_it_declares():
    """values.yaml runs each of the platform's groups the way its handler module declares it
    (`ConsumerGroup(..., delivery=...)`), asked in a clean process (no test handler modules)."""
    # Given
    env = {k: v for k, v in os.environ.items() if k not in ("EVENTS_HANDLER_MODULES", "EVENTS_DELIVERY")}
    proc = subprocess.run([sys.executable, "-c", PLATFORM_DELIVERIES], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    declared = json.loads(proc.stdout)

    # When
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = {g["name"]: g.get("delivery", values["defaults"]["delivery"]) for g in values["groups"]}

    # Then
    assert chart == declared
    assert chart["document-indexer"] == "shared"


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_pods_run_their_groups_delivery(render, values):
    """EVENTS_DELIVERY, which `events run` takes over the group's declared delivery, is the
    delivery the chart scales the group by."""
    # Given
    files = [yaml.safe_load(path.read_text()) for path in values]
    groups = next((f["groups"] for f in reversed(files) if "groups" in f),
                  yaml.safe_load((CHART / "values.yaml").read_text())["groups"])

    # When
    deployments = deployments_by_group(render(*values))

    # Then
    for group in groups:
        env = env_of(deployments[group["name"]])
        assert env["EVENTS_DELIVERY"] == {"name": "EVENTS_DELIVERY", "value": group.get("delivery", "ordered")}


def test_runtime_settings_follow_values(render):
    # Given
    values = values_of("three-groups")

    # When
    rendered = render(EXAMPLES["three-groups"])
    deployments = deployments_by_group(rendered)

    # Then: each group's config file holds the release's settings and its own
    for group in values["groups"]:
        config = config_file_of(rendered, deployments[group["name"]])
        assert config == {
            "bootstrap_servers": "kafka:9092", "topic_prefix": "events", "kafka": {},
            "log_format": "text", "log_level": "DEBUG", "health_port": 8080, "metrics_port": 9464,
            "concurrency": group.get("concurrency", 8), "drain_timeout_s": group.get("drainTimeoutSeconds", 30),
        }
    # and a group's env still overrides the file, for that group only
    assert env_of(deployments["dataset-cleaner"])["EVENTS_LOG_LEVEL"]["value"] == "INFO"
    assert "EVENTS_LOG_LEVEL" not in env_of(deployments["document-indexer"])
    assert deployments["installed-app-provisioner"]["spec"]["replicas"] == 2
    indexer_env = env_of(deployments["document-indexer"])
    assert indexer_env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].startswith("http://otel-collector")
    cleaner = deployments["dataset-cleaner"]["spec"]["template"]["spec"]
    assert cleaner["nodeSelector"] == {"workload": "batch"}
    assert cleaner["tolerations"][0]["key"] == "workload"


def test_batch_max_reaches_the_config_file_only_where_set(render, tmp_path):
    """Unset, a group keeps the batch_max its handlers' module gave it; set, the file overrides it."""
    # Given: a default for every group, and a group that turns batches off
    values = write_values(tmp_path, "defaults:\n  batchMax: 200\ngroups:\n  - name: busy\n"
                                    "  - name: careful\n    batchMax: 1\n")

    # When
    deployments = deployments_by_group(render(values))

    # Then
    assert config_file_of(render(values), deployments["busy"])["batch_max"] == 200
    assert config_file_of(render(values), deployments["careful"])["batch_max"] == 1
    # and without a value, the file says nothing of it
    unset = render(EXAMPLES["three-groups"])
    assert all("batch_max" not in config_file_of(unset, d) for d in deployments_by_group(unset).values())


def test_inline_reaches_the_config_file_only_where_set(render, tmp_path):
    """Unset, a group runs as its handlers' module says; set, even to false over a default of true, the file says."""
    values = write_values(tmp_path, "defaults:\n  inline: true\ngroups:\n  - name: fast\n"
                                    "  - name: waits\n    inline: false\n")
    rendered = render(values)
    deployments = deployments_by_group(rendered)
    assert config_file_of(rendered, deployments["fast"])["inline"] is True
    assert config_file_of(rendered, deployments["waits"])["inline"] is False
    unset = render(EXAMPLES["three-groups"])
    assert all("inline" not in config_file_of(unset, d) for d in deployments_by_group(unset).values())


def test_a_false_or_zero_in_a_group_overrides_the_defaults(render):
    # Given: defaults that enable the HPA and a PDB, and a group that turns both off
    values = ["defaults.autoscaling.hpa.enabled=true", "groups[0].name=quiet", "groups[0].replicas=0",
              "groups[0].autoscaling.hpa.enabled=false", "groups[0].podDisruptionBudget.enabled=false",
              "groups[1].name=busy"]

    # When
    rendered = render(set_values=values)

    # Then
    deployments = deployments_by_group(rendered)
    assert deployments["quiet"]["spec"]["replicas"] == 0
    assert "replicas" not in deployments["busy"]["spec"]
    assert [h["spec"]["scaleTargetRef"]["name"] for h in rendered.kind("HorizontalPodAutoscaler")] == [
        "events-dify-events-busy"]
    assert [p["metadata"]["name"] for p in rendered.kind("PodDisruptionBudget")] == ["events-dify-events-busy"]


def test_long_names_are_truncated_to_63_characters(render):
    # Given
    long_release_values = [f"fullnameOverride={'x' * 60}", "groups[0].name=" + "g" * 50]

    # When
    rendered = render(set_values=long_release_values)

    # Then
    for doc in rendered.documents:
        assert len(doc["metadata"]["name"]) <= 63
        assert not doc["metadata"]["name"].endswith("-")


# -- autoscaling: KEDA xor HPA, never a fixed replica count beside them ----------------------------
def test_keda_renders_a_kafka_scaled_object_per_group_and_no_replicas(render):
    # Given
    values = values_of("keda")

    # When
    rendered = render(EXAMPLES["keda"])

    # Then
    deployments = deployments_by_group(rendered)
    scaled = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in rendered.kind("ScaledObject")}
    assert len(scaled) == len(values["groups"])
    for group in values["groups"]:
        deployment = deployments[group["name"]]
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        spec = scaled[deployment["metadata"]["name"]]["spec"]
        keda = group["autoscaling"]["keda"]
        partitions = group.get("partitions", 6)
        assert spec["maxReplicaCount"] == keda["maxReplicaCount"] <= partitions
        assert spec["minReplicaCount"] == keda["minReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == f"events.{group['name']}", "the runtime's group.id"
        assert trigger["metadata"]["bootstrapServers"] == "kafka:9092"
        assert trigger["metadata"]["lagThreshold"] == str(keda["lagThreshold"])
        assert trigger["metadata"]["activationLagThreshold"] == str(keda.get("activationLagThreshold", 10))
        assert trigger["metadata"]["allowIdleConsumers"] == "false"
        assert "authenticationRef" not in trigger
    assert not rendered.kind("HorizontalPodAutoscaler")
    assert not rendered.kind("TriggerAuthentication")
    fallback = scaled["events-dify-events-provider-usage"]["spec"]["fallback"]
    assert fallback == {"failureThreshold": 3, "replicas": 2}


def test_keda_reads_the_kafka_secrets_through_a_trigger_authentication(render):
    # When
    rendered = render(EXAMPLES["tls-sasl"])

    # Then
    (scaled,) = rendered.kind("ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["consumerGroup"] == "prod.document-indexer"
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    assert trigger["metadata"]["tls"] == "enable"
    (auth,) = rendered.kind("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "username": ("kafka-sasl", "username"), "password": ("kafka-sasl", "password"),
        "ca": ("kafka-tls", "ca.crt"), "cert": ("kafka-tls", "tls.crt"), "key": ("kafka-tls", "tls.key"),
        "keyPassword": ("kafka-tls", "tls.key.password"),
    }


def test_hpa_renders_autoscalers_and_no_scaled_object(render):
    # Given
    values = values_of("hpa")

    # When
    rendered = render(EXAMPLES["hpa"])

    # Then
    deployments = deployments_by_group(rendered)
    hpas = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in rendered.kind("HorizontalPodAutoscaler")}
    assert not rendered.kind("ScaledObject")
    assert sorted(hpas) == ["events-dify-events-dataset-cleaner", "events-dify-events-document-indexer"]
    for name in ("dataset-cleaner", "document-indexer"):
        deployment = deployments[name]
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
        spec = hpas[deployment["metadata"]["name"]]["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": deployment["metadata"]["name"]}
        assert spec["maxReplicas"] == values["defaults"]["autoscaling"]["hpa"]["maxReplicas"]
        assert spec["metrics"][0]["resource"] == {"name": "cpu",
                                                  "target": {"type": "Utilization", "averageUtilization": 75}}
    memory = hpas["events-dify-events-document-indexer"]["spec"]["metrics"][1]["resource"]
    assert memory["name"] == "memory"
    assert deployments["tenant-provisioner"]["spec"]["replicas"] == 2


def test_a_shared_group_scales_on_its_busy_ratio_through_prometheus(render):
    """KEDA's kafka scaler reads consumer-group offsets only: a shared group's ScaledObject has
    the prometheus trigger on its busy ratio instead, and no Kafka credentials."""
    # When
    rendered = render(EXAMPLES["shared"])

    # Then
    scaled = {doc["spec"]["scaleTargetRef"]["name"]: doc["spec"] for doc in rendered.kind("ScaledObject")}
    shared = scaled["events-dify-events-document-indexer"]
    (trigger,) = shared["triggers"]
    selector = 'namespace="dify",group="document-indexer"'
    assert trigger == {"type": "prometheus", "metricType": "Value", "metadata": {
        "serverAddress": "http://prometheus-operated.monitoring:9090",
        "query": f"sum(events_messages_in_flight{{{selector}}}) / sum(events_consumer_capacity{{{selector}}})",
        "threshold": "0.7"}}
    assert (shared["minReplicaCount"], shared["maxReplicaCount"]) == (1, 12), "beyond its 6 partitions"
    # ... while the ordered group keeps its kafka trigger, with the Kafka Secrets
    (ordered,) = scaled["events-dify-events-provider-usage"]["triggers"]
    assert ordered["type"] == "kafka" and ordered["authenticationRef"]["name"] == "events-dify-events-kafka"
    for doc in rendered.kind("ScaledObject") + rendered.kind("TriggerAuthentication"):
        valid_by_crd_schema(doc)


def test_a_shared_groups_own_query_replaces_the_busy_ratio(render):
    # When
    rendered = render(EXAMPLES["shared"], set_values=[
        "groups[0].autoscaling.keda.prometheus.query=sum(kafka_sharegroup_lag{group=\"events.document-indexer\"})",
        "groups[0].autoscaling.keda.prometheus.busyThreshold=100"])

    # Then
    (trigger,) = rendered.one("ScaledObject", "events-dify-events-document-indexer")["spec"]["triggers"]
    assert trigger["metadata"]["query"] == 'sum(kafka_sharegroup_lag{group="events.document-indexer"})'


def test_keda_and_hpa_both_on_fails(template):
    # When
    result = template(set_values=["defaults.autoscaling.keda.enabled=true", "defaults.autoscaling.hpa.enabled=true"])

    # Then
    fails_with(result, "autoscaling.keda and autoscaling.hpa are both enabled; enable one of them")


def test_keda_max_replicas_above_partitions_fails(template):
    # When
    result = template(EXAMPLES["keda"], set_values=["groups[0].autoscaling.keda.maxReplicaCount=7"])

    # Then
    fails_with(result, 'group "document-indexer": autoscaling.keda.maxReplicaCount (7) exceeds partitions (6)')


def test_hpa_max_replicas_above_partitions_fails(template):
    # When
    result = template(set_values=["defaults.autoscaling.hpa.enabled=true", "defaults.autoscaling.hpa.maxReplicas=7"])

    # Then
    fails_with(result, "autoscaling.hpa.maxReplicas (7) exceeds partitions (6)")


@pytest.mark.parametrize("scaler, setting", [("keda", "maxReplicaCount"), ("hpa", "maxReplicas")])
def test_only_an_ordered_group_is_capped_at_its_partitions(template, render, scaler, setting):
    """A share group's members all take work, however many partitions: no cap for a shared group."""
    # Given
    values = ["groups[0].name=indexer", "groups[0].partitions=3", f"groups[0].autoscaling.{scaler}.enabled=true",
              f"groups[0].autoscaling.{scaler}.{setting}=9",
              "groups[0].autoscaling.keda.prometheus.serverAddress=http://prometheus:9090"]

    # When
    shared = render(set_values=[*values, "groups[0].delivery=shared"])
    ordered = template(set_values=[*values, "groups[0].delivery=ordered"])

    # Then
    (autoscaler,) = shared.kind("ScaledObject" if scaler == "keda" else "HorizontalPodAutoscaler")
    assert autoscaler["spec"][setting] == 9
    fails_with(ordered, f'group "indexer": autoscaling.{scaler}.{setting} (9) exceeds partitions (3)')


@pytest.mark.parametrize("values, message", [
    (["groups[0].delivery=queue"],
     'group "indexer": delivery "queue" is not one of ordered (a consumer group) or shared (a share group)'),
    (["groups[0].delivery=shared", "groups[0].autoscaling.keda.enabled=true",
      "groups[0].autoscaling.keda.prometheus.serverAddress=http://prometheus:9090",
      "groups[0].autoscaling.keda.minReplicaCount=0"],
     'group "indexer": autoscaling.keda.minReplicaCount is 0, but a shared group scales on its pods\' busy ratio, '
     "which no pod reports at zero; set it to 1 or more"),
    (["groups[0].delivery=shared", "groups[0].autoscaling.keda.enabled=true"],
     'group "indexer": a shared group scales with KEDA\'s prometheus trigger (its kafka trigger reads no share '
     "group); set autoscaling.keda.prometheus.serverAddress"),
], ids=["unknown-delivery", "shared-from-zero", "shared-without-prometheus"])
def test_what_a_shared_group_cannot_do_fails_in_one_line(template, values, message):
    # When
    result = template(set_values=["groups[0].name=indexer", *values])

    # Then
    fails_with(result, message)
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert error.endswith(message)


def test_hpa_cpu_target_without_a_cpu_request_fails(template):
    # When
    result = template(set_values=["defaults.autoscaling.hpa.enabled=true", "defaults.resources.requests=null"])

    # Then
    fails_with(result, "targetCPUUtilizationPercentage needs resources.requests.cpu")


# -- secrets only by reference ----------------------------------------------------------------------
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_secrets_are_only_referenced(render, values):
    # When
    rendered = render(*values)

    # Then
    assert not rendered.kind("Secret"), "the chart must not create Secrets"
    for name, pod in pod_templates(rendered):
        for item in pod["spec"]["containers"][0].get("env", []):
            if SECRET_ENV.search(item["name"]):
                assert "value" not in item, f"{name}: {item['name']} is written in clear"
                assert set(item["valueFrom"]) == {"secretKeyRef"}, f"{name}: {item['name']}"
    for config_map in rendered.kind("ConfigMap"):
        if config_map["metadata"]["labels"].get("grafana_dashboard"):
            continue  # the Grafana dashboard, not a config file
        for key, text in config_map["data"].items():
            config = yaml.safe_load(text)
            assert "database_url" not in config, key
            kafka = config["kafka"]
            assert not [k for k in kafka if re.search(r"password|secret|username|token", k)], kafka


def test_tls_and_sasl_come_from_existing_secrets(render):
    # When: with the outbox relay too
    rendered = render(EXAMPLES["tls-sasl"], set_values=["relay.enabled=true"])

    # Then
    assert relay_deployments(rendered)
    for name, pod in pod_templates(rendered):
        env = {item["name"]: item for item in pod["spec"]["containers"][0]["env"]}
        assert env["EVENTS_KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-sasl",
                                                                                  "key": "username"}
        assert env["EVENTS_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-sasl",
                                                                                  "key": "password"}
        assert env["EVENTS_KAFKA_SSL_KEY_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kafka-tls"
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["kafka-tls"]["secret"]["secretName"] == "kafka-tls"
        mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert mounts["kafka-tls"]["readOnly"] is True
        tls_dir = mounts["kafka-tls"]["mountPath"]
        owner = next(d for d in rendered.kind("Deployment") + rendered.kind("Job") if d["metadata"]["name"] == name)
        kafka = config_file_of(rendered, owner)["kafka"]
        assert kafka["security.protocol"] == "SASL_SSL"
        assert kafka["sasl.mechanism"] == "SCRAM-SHA-512"
        assert kafka["ssl.ca.location"] == f"{tls_dir}/ca.crt"
        assert kafka["ssl.certificate.location"] == f"{tls_dir}/tls.crt"
        assert kafka["ssl.key.location"] == f"{tls_dir}/tls.key"
        assert kafka["session.timeout.ms"] == "45000", "librdkafka properties are passed as strings"
        assert kafka["enable.ssl.certificate.verification"] == "true"
    deployments = rendered.kind("Deployment")
    for deployment in deployments:
        url = env_of(deployment)["EVENTS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert url == {"name": "events-database", "key": "url"}


def test_sasl_without_a_secret_fails(template):
    # When
    result = template(set_values=["kafka.sasl.enabled=true"])

    # Then
    fails_with(result, "kafka.sasl.enabled needs kafka.sasl.existingSecret")


@pytest.mark.parametrize("key", ["sasl.password", "sasl.username", "ssl.key.password", "ssl.key.pem"])
def test_a_secret_in_the_kafka_config_fails(template, key):
    # When
    result = template(set_values=[f"kafka.config.{key.replace('.', chr(92) + '.')}=hunter2"])

    # Then
    fails_with(result, f"kafka.config.{key} looks like a secret", "secretKeyRef")


def test_half_a_client_certificate_fails(template):
    # When
    result = template(set_values=["kafka.tls.enabled=true", "kafka.tls.existingSecret=kafka-tls",
                                  "kafka.tls.certKey=tls.crt"])

    # Then
    fails_with(result, "kafka.tls.certKey and kafka.tls.keyKey go together")


# -- pods: security, probes, shutdown ---------------------------------------------------------------
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_pods_run_restricted(render, values):
    # When
    rendered = render(*values)

    # Then
    for name, pod in pod_templates(rendered):
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            context = c["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context.get("privileged", False) is False, name
            tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"]), name


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_grace_period_exceeds_the_drain_timeout(render, values):
    # When
    rendered = render(*values)

    # Then
    for deployment in group_deployments(rendered):
        drain = config_file_of(rendered, deployment)["drain_timeout_s"]
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain


def test_grace_period_not_above_the_drain_timeout_fails(template):
    # When
    result = template(set_values=["defaults.drainTimeoutSeconds=60", "defaults.terminationGracePeriodSeconds=60"])

    # Then
    fails_with(result, "terminationGracePeriodSeconds (60) must exceed drainTimeoutSeconds (60)")


def test_probes_use_the_health_endpoints(render):
    # When
    rendered = render()

    # Then
    for deployment in rendered.kind("Deployment"):
        c = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        config = config_file_of(rendered, deployment)
        assert ports["health"] == config["health_port"] == 8080
        assert ports["metrics"] == config["metrics_port"] == 9464
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_config_file_is_mounted_where_the_runtime_reads_it(render):
    # When
    rendered = render(EXAMPLES["tls-sasl"])

    # Then
    for name, pod in pod_templates(rendered):
        c = pod["spec"]["containers"][0]
        path = next(item["value"] for item in c["env"] if item["name"] == "EVENTS_CONFIG_FILE")
        mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
        assert path == f"{mount['mountPath']}/events.yaml", name
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "config")["configMap"]
        data = rendered.one("ConfigMap", volume["name"])["data"]
        keys = [item["key"] for item in volume.get("items", [])] or list(data)
        assert len(keys) == 1 and keys[0] in data, name
        assert volume.get("items", [{"path": "events.yaml"}])[0]["path"] == "events.yaml", name


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_settings_are_in_the_config_map_not_inline(render, values):
    """Only the config file's path, the pod's own name and Secret references are environment;
    every other setting is in the ConfigMap (a group's own `env` aside)."""
    # When
    rendered = render(*values)

    # Then
    files = [yaml.safe_load(values_file.read_text()) for values_file in values]
    group_env = {g["name"]: {e["name"] for e in g.get("env", [])} for v in files for g in (v.get("groups") or [])}
    relay_env = {e["name"] for v in files for e in (v.get("relay") or {}).get("env", [])}
    console_env = {"EVENTS_CONSOLE_TOKEN"} | {e["name"] for v in files for e in (v.get("console") or {}).get("env", [])}
    for owner in rendered.kind("Deployment") + rendered.kind("Job"):
        if owner["kind"] == "Job":
            own = set()
        elif component_of(owner) in ("relay", "console"):
            own = relay_env if component_of(owner) == "relay" else console_env
        else:
            own = group_env.get(group_of(owner), set())
        for item in container(owner).get("env", []):
            if item["name"] in own:
                continue
            if "value" in item:  # EVENTS_DELIVERY: `events run`'s, no setting of the config file
                assert item["name"] in {"EVENTS_CONFIG_FILE", "EVENTS_HOME", "EVENTS_DELIVERY"}, \
                    f"{owner['metadata']['name']}: {item}"
            else:
                assert set(item["valueFrom"]) <= {"secretKeyRef", "fieldRef"}, item
        assert "envFrom" not in container(owner)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_runtime_accepts_every_config_file(render, values, tmp_path, monkeypatch):
    """Each config file the chart writes loads into the runtime's Settings (extra keys forbidden)."""
    # Given
    from dify_events.schemas.settings import Settings
    for name in list(os.environ):
        if name.startswith(("EVENTS_", "KAFKA_")):
            monkeypatch.delenv(name)
    path = tmp_path / "events.yaml"
    monkeypatch.setenv("EVENTS_CONFIG_FILE", str(path))

    # When
    rendered = render(*values)

    # Then
    for config_map in rendered.kind("ConfigMap"):
        if config_map["metadata"]["labels"].get("grafana_dashboard"):
            continue  # the Grafana dashboard, not a config file
        for key, text in config_map["data"].items():
            path.write_text(text)
            settings = Settings()
            assert settings.bootstrap_servers == yaml.safe_load(text)["bootstrap_servers"], key
            assert settings.kafka_properties() == yaml.safe_load(text)["kafka"], key


def test_config_changes_roll_the_pods(render):
    # When
    before = render()
    after = render(set_values=["kafka.config.session\\.timeout\\.ms=45000"])

    # Then
    def checksum(r):
        return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for d in r.kind("Deployment")}

    assert all(checksum(before)[name] != value for name, value in checksum(after).items())


def test_a_group_setting_rolls_only_that_group(render, tmp_path):
    # Given: the default groups, the first with more handler threads
    groups = [{"name": name} for name in DEFAULT_GROUPS]
    groups[0]["concurrency"] = 16
    values = write_values(tmp_path, yaml.safe_dump({"groups": groups}))

    # When
    before = render()
    after = render(values)

    # Then
    def checksum(r):
        return {group_of(d): d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for d in r.kind("Deployment")}

    changed = [group for group, value in checksum(after).items() if checksum(before)[group] != value]
    assert changed == [DEFAULT_GROUPS[0]]


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_group_has_a_disruption_budget(render, values):
    # When
    rendered = render(*values)

    # Then
    budgets = {tuple(sorted(p["spec"]["selector"]["matchLabels"].items())): p
               for p in rendered.kind("PodDisruptionBudget")}
    for deployment in rendered.kind("Deployment"):
        if component_of(deployment) == "console":
            continue  # one pod that keeps no state: a disruption only reloads its page
        budget = budgets[tuple(sorted(deployment["spec"]["selector"]["matchLabels"].items()))]
        assert ("maxUnavailable" in budget["spec"]) != ("minAvailable" in budget["spec"])


# -- the topics hook Job ----------------------------------------------------------------------------
def test_topics_job_is_a_pre_install_and_pre_upgrade_hook(render):
    # When
    rendered = render()

    # Then
    (job,) = rendered.kind("Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["topics", "apply"]
    assert args[2:] == [item for group in DEFAULT_GROUPS for item in ("--group", group)]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # What the Job mounts and runs as exists before it: hooks of a lower weight.
    weight = int(annotations["helm.sh/hook-weight"])
    pod = job["spec"]["template"]["spec"]
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    config_map = rendered.one("ConfigMap", config_volume["configMap"]["name"])
    account = rendered.one("ServiceAccount", pod["serviceAccountName"])
    for dependency in (config_map, account):
        assert dependency["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(dependency["metadata"]["annotations"]["helm.sh/hook-weight"]) < weight
    (job_config,) = (yaml.safe_load(text) for text in config_map["data"].values())
    for deployment in rendered.kind("Deployment"):
        group_config = config_file_of(rendered, deployment)
        assert {key: group_config[key] for key in job_config} == job_config, "the release's settings, as the pods'"


def test_topics_job_can_be_turned_off(render):
    # When
    rendered = render(EXAMPLES["three-groups"])

    # Then
    assert not rendered.kind("Job")
    assert not [d for d in rendered.documents if "helm.sh/hook" in d["metadata"].get("annotations", {})]


# -- monitoring -------------------------------------------------------------------------------------
def test_pod_monitor_and_alerts(render):
    # When
    rendered = render(EXAMPLES["keda"])

    # Then
    (monitor,) = rendered.kind("PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    (rule,) = rendered.kind("PrometheusRule")
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert "events_messages_dead_lettered_total" in rules["EventsDeadLettersGrowing"]["expr"]
    assert "events_consumer_lag" in rules["EventsConsumerLagHigh"]["expr"]
    for alert in rules.values():
        assert f'namespace="{NAMESPACE}"' in alert["expr"]
        assert "{{ $labels.group }}" in alert["annotations"]["summary"], "Prometheus templating must survive Helm"
    assert not rendered.kind("Service"), "a consumer pod serves no traffic: no Service with a PodMonitor"


def test_a_shared_group_is_alerted_on_its_busy_ratio_not_on_lag(render):
    # When
    rendered = render(EXAMPLES["shared"])

    # Then
    (rule,) = rendered.kind("PrometheusRule")
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    shared = 'namespace="dify",group=~"document-indexer"'
    assert 'events_consumer_lag{namespace="dify",group!~"document-indexer"}' in rules["EventsConsumerLagHigh"]["expr"]
    busy = rules["EventsSharedGroupBusy"]
    assert busy["expr"] == (f"sum by (group) (events_messages_in_flight{{{shared}}})"
                            f" / sum by (group) (events_consumer_capacity{{{shared}}}) >= 1")
    assert busy["for"] == "15m" and busy["labels"] == {"severity": "warning"}
    assert "{{ $labels.group }}" in busy["annotations"]["summary"]
    # ... and without a shared group there is no busy alert, and the lag alert covers every group
    ordered = {r["alert"]: r for g in render(EXAMPLES["keda"]).kind("PrometheusRule")[0]["spec"]["groups"]
               for r in g["rules"]}
    assert "EventsSharedGroupBusy" not in ordered
    assert 'events_consumer_lag{namespace="dify"}' in ordered["EventsConsumerLagHigh"]["expr"]


def test_service_monitor_scrapes_through_a_headless_service(render):
    # When
    rendered = render(EXAMPLES["hpa"])

    # Then
    (service,) = rendered.kind("Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True, "a consumer that cannot join is the one to watch"
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    assert rendered.kind("ServiceMonitor")
    assert not rendered.kind("PodMonitor")


def test_pod_monitor_and_service_monitor_both_on_fails(template):
    # When
    result = template(set_values=["metrics.podMonitor.enabled=true", "metrics.serviceMonitor.enabled=true"])

    # Then
    fails_with(result, "metrics.podMonitor and metrics.serviceMonitor are both enabled")


# -- the outbox relay -------------------------------------------------------------------------------
def test_the_relay_is_off_by_default(render):
    # When
    rendered = render()

    # Then
    assert not relay_deployments(rendered)
    assert {component_of(p) for p in rendered.kind("PodDisruptionBudget")} == {"consumer"}
    assert "outbox-relay.yaml" not in rendered.one("ConfigMap", "events-dify-events")["data"]


def test_the_relay_runs_events_outbox_relay_beside_the_groups(render):
    # Given
    from dify_events.consumers.cli.outbox import relay as relay_command
    values = values_of("relay")["relay"]

    # When
    rendered = render(EXAMPLES["relay"])

    # Then: one Deployment runs `events outbox relay` with the values' settings and probes on its health port
    (relay,) = relay_deployments(rendered)
    assert relay["metadata"]["name"] == "events-dify-events-outbox-relay"
    assert relay["spec"]["replicas"] == 2
    c = container(relay)
    assert c["args"] == ["outbox", "relay", "--batch-size", "200", "--poll-interval", "0.2", "--retention", "3d",
                         "--health-port", "8080", "--metrics-port", "9464"]
    params = relay_command.make_context("relay", c["args"][2:]).params  # parsed by the real command, not run
    assert (params["batch_size"], params["poll_interval"], params["health_port"]) == (200, 0.2, 8080)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 8080, "metrics": 9464}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["resources"] == values["resources"]
    assert relay["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    # and the groups' image, security contexts and service account
    group = group_deployments(rendered)[0]
    assert c["image"] == container(group)["image"]
    assert c["securityContext"] == container(group)["securityContext"]
    pod, group_pod = relay["spec"]["template"]["spec"], group["spec"]["template"]["spec"]
    for key in ("securityContext", "serviceAccountName", "automountServiceAccountToken"):
        assert pod[key] == group_pod[key], key
    # and the release-wide settings as its config file (the topics Job's), the database by reference
    assert config_file_of(rendered, relay) == config_file_of(rendered, rendered.kind("Job")[0])
    env = env_of(relay)
    assert env["EVENTS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "events-database", "key": "url"}
    assert env["EVENTS_LOG_LEVEL"]["value"] == "WARNING", "the relay's own env"
    # and its selector, PodDisruptionBudget and metrics Service take its pods, never a group's
    budget = next(p for p in rendered.kind("PodDisruptionBudget") if component_of(p) == "relay")
    (service,) = [s for s in rendered.kind("Service") if component_of(s) == "relay"]
    selectors = [relay["spec"]["selector"], budget["spec"]["selector"], {"matchLabels": service["spec"]["selector"]}]
    assert all(selects(selector, relay["spec"]["template"]["metadata"]["labels"]) for selector in selectors)
    for deployment in group_deployments(rendered):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert not any(selects(selector, labels) for selector in selectors)
        assert not selects(deployment["spec"]["selector"], relay["spec"]["template"]["metadata"]["labels"])


def test_the_pod_monitor_scrapes_the_relay_too(render):
    # When
    rendered = render(EXAMPLES["keda"], set_values=["relay.enabled=true"])

    # Then
    (monitor,) = rendered.kind("PodMonitor")
    (relay,) = relay_deployments(rendered)
    assert selects(monitor["spec"]["selector"], relay["spec"]["template"]["metadata"]["labels"])


def test_the_relay_without_a_database_secret_fails(template):
    # When: no Secret names the application's database, where the outbox is
    result = template(set_values=["relay.enabled=true"])

    # Then
    fails_with(result, "relay.enabled needs database.existingSecret")


def test_a_group_named_like_the_relay_fails(template):
    # When
    result = template(EXAMPLES["relay"], set_values=["groups[0].name=outbox-relay"])

    # Then
    fails_with(result, "\"outbox-relay\" is the name of the relay's Deployment")


# -- the values schema rejects wrong values, at install time ----------------------------------------
@pytest.fixture(params=["template", "lint"])
def check(request, template, lint):
    """Both ways a wrong value meets the schema: `helm template` (as install) and `helm lint`."""
    return template if request.param == "template" else lint


def readme_example() -> str:
    """The yaml values example of the chart's guide (helm/dify-events/README.md), step "3. Install"."""
    readme = (CHART / "README.md").read_text()
    section = readme[readme.index("**3. Install**"):]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example, "the chart's README has a yaml values example in its step 3. Install"
    return example[1]


def write_values(tmp_path, text: str):
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return path


def test_schema_rejects_negative_replicas(check, tmp_path):
    # Given
    values = write_values(tmp_path, "groups:\n  - name: provider-usage\n    replicas: -1\n")

    # When
    result = check(values)

    # Then
    fails_with(result, "/groups/0/replicas", "minimum: got -1, want 0")


def test_schema_rejects_negative_default_replicas(check):
    # When
    result = check(set_values=["defaults.replicas=-2"])

    # Then
    fails_with(result, "/defaults/replicas", "minimum: got -2, want 0")


def test_schema_rejects_an_unknown_top_level_key(check):
    # When
    result = check(set_values=["replicaCount=3"])

    # Then
    fails_with(result, "additional properties 'replicaCount' not allowed")


def test_schema_rejects_an_unknown_group_key(check, tmp_path):
    # Given: a typo, `replica` for `replicas`
    values = write_values(tmp_path, "groups:\n  - name: provider-usage\n    replica: 3\n")

    # When
    result = check(values)

    # Then
    fails_with(result, "/groups/0", "additional properties 'replica' not allowed")


def test_schema_rejects_a_group_without_a_name(check, tmp_path):
    """A group's command is `events run --group <name>`: without a name there is no command."""
    # Given
    values = write_values(tmp_path, "groups:\n  - replicas: 2\n    concurrency: 4\n")

    # When
    result = check(values)

    # Then
    fails_with(result, "/groups/0", "missing property 'name'")


def test_schema_rejects_a_group_name_that_is_no_kubernetes_name(check, tmp_path):
    # Given
    values = write_values(tmp_path, "groups:\n  - name: Provider_Usage\n")

    # When
    result = check(values)

    # Then
    fails_with(result, "/groups/0/name", "does not match pattern")


def test_schema_rejects_no_group_at_all(check, tmp_path):
    # Given
    values = write_values(tmp_path, "groups: []\n")

    # When
    result = check(values)

    # Then
    fails_with(result, "/groups", "minItems")


@pytest.mark.parametrize("setting, errors", [
    ("relay.replicas=-1", ("/relay/replicas", "minimum: got -1, want 0")),
    ("relay.replica=2", ("/relay", "additional properties 'replica' not allowed")),
    ("relay.batchSize=0", ("/relay/batchSize", "minimum: got 0, want 1")),
    ("relay.pollInterval=0", ("/relay/pollInterval", "exclusiveMinimum")),
    ("relay.retention=7days", ("/relay/retention", "does not match pattern")),
])
def test_schema_rejects_a_wrong_relay_value(check, setting, errors):
    # When
    result = check(set_values=["relay.enabled=true", "database.existingSecret=events-database", setting])

    # Then
    fails_with(result, *errors)


def test_schema_rejects_an_unknown_sasl_mechanism(check):
    # When
    result = check(set_values=["kafka.sasl.mechanism=GSSAPI"])

    # Then
    fails_with(result, "/kafka/sasl/mechanism", "value must be one of 'PLAIN'")


def test_schema_rejects_a_secret_written_into_values(check):
    # When: the password itself instead of a Secret's name
    result = check(set_values=["kafka.sasl.password=hunter2"])

    # Then
    fails_with(result, "/kafka/sasl", "additional properties 'password' not allowed")


def test_chart_files_are_where_helm_expects_them():
    # Then
    for name in ("Chart.yaml", "values.yaml", "values.schema.json", ".helmignore",
                 "templates/_helpers.tpl", "templates/NOTES.txt"):
        assert (CHART / name).is_file(), name
    assert set(EXAMPLES) == {"keda", "hpa", "three-groups", "tls-sasl", "relay", "console", "shared"}


def test_every_values_key_is_commented():
    """Every setting in values.yaml (a key holding a value, not a block of keys) has a comment
    right above it, or sits in a block that has one (e.g. `podSecurityContext`)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    key_line = re.compile(r"^(\s*)([A-Za-z][\w.-]*):(.*)$")
    documented: list[tuple[int, bool]] = []  # (indent, documented) of the open ancestors
    undocumented = []
    for index, line in enumerate(lines):
        match = key_line.match(line)
        if not match:
            continue
        indent, key, rest = len(match[1]), match[2], match[3].strip()
        while documented and documented[-1][0] >= indent:
            documented.pop()
        commented = index > 0 and lines[index - 1].strip().startswith("#")
        is_documented = commented or any(flag for _, flag in documented)
        following = next((later for later in lines[index + 1:]
                          if later.strip() and not later.strip().startswith("#")), "")
        is_block = not rest and len(following) - len(following.lstrip()) > indent
        if not is_block and not is_documented:
            undocumented.append(key)
        documented.append((indent, is_documented))
    assert not undocumented, f"settings without a comment in values.yaml: {undocumented}"


def test_the_readme_example_installs(lint, render, tmp_path):
    """The values example of the chart's README (step "3. Install") is a working one."""
    # Given
    values = write_values(tmp_path, readme_example())

    # When
    linted = lint(values)
    rendered = render(values)

    # Then
    assert linted.returncode == 0, linted.output
    groups = sorted(group_of(d) for d in rendered.kind("Deployment"))
    assert groups == ["document-indexer", "provider-usage"]
    assert len(rendered.kind("ScaledObject")) == 2


def notes_of(helm, tmp_path, *values_args: str) -> str:
    """NOTES.txt rendered with helm's arguments: `helm template` leaves it out, so a copy of the
    chart renders it into a ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        "  NOTES.txt: {{ include \"dify-events/templates/NOTES.txt\" . | quote }}\n")
    result = helm("template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION,
                  *values_args, "--show-only", "templates/zz-notes.yaml")
    assert result.returncode == 0, result.output
    return yaml.safe_load(result.stdout)["data"]["NOTES.txt"]


@pytest.mark.parametrize("database, warned", [("events-database", False), ("", True)])
def test_notes_list_the_groups_and_warn_without_a_database(helm, tmp_path, database, warned):
    # When
    notes = notes_of(helm, tmp_path, "--values", str(EXAMPLES["keda"]), "--set", f"database.existingSecret={database}")

    # Then
    assert "document-indexer: deployment/events-dify-events-document-indexer, KEDA on lag 1..6 pods" in notes
    assert "provider-usage: deployment/events-dify-events-provider-usage, KEDA on lag 0..6 pods" in notes
    assert ("WARNING: database.existingSecret is empty" in notes) is warned


def test_notes_name_the_relay_when_it_runs(helm, tmp_path):
    # When
    with_relay = notes_of(helm, tmp_path / "on", "--values", str(EXAMPLES["relay"]))
    without = notes_of(helm, tmp_path / "off")

    # Then
    assert "Outbox relay (`events outbox relay`)" in with_relay
    assert "deployment/events-dify-events-outbox-relay, 2 pod(s)" in with_relay
    assert "exec deployment/events-dify-events-outbox-relay -- events outbox status" in with_relay
    assert "Outbox relay" not in without


# -- the console --------------------------------------------------------------------------------------
def console_values() -> list[str]:
    return ["console.enabled=true", "console.allowActions=true", "console.tokenSecret.name=console-token",
            "console.metricsEndpoints[0]=http://events-dify-events-provider-usage:9464/metrics"]


def test_the_console_is_off_by_default(render):
    # When
    rendered = render()

    # Then
    assert not [d for d in rendered.kind("Deployment") if component_of(d) == "console"]
    assert not [s for s in rendered.kind("Service") if component_of(s) == "console"]


def test_the_console_runs_events_console_behind_a_service_with_the_token_from_a_secret(render):
    # Given
    from dify_events.consumers.cli.console import command as console_command

    # When
    rendered = render(EXAMPLES["relay"], set_values=console_values())

    # Then one Deployment runs `events console`, its arguments parsed by the real command
    (console,) = [d for d in rendered.kind("Deployment") if component_of(d) == "console"]
    c = container(console)
    assert c["args"][0] == "console"
    params = console_command.make_context("console", c["args"][1:]).params
    assert (params["host"], params["port"], params["allow_actions"]) == ("0.0.0.0", 8088, True)
    assert params["metrics_urls"] == ("http://events-dify-events-provider-usage:9464/metrics",)
    env = env_of(console)
    assert env["EVENTS_CONSOLE_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "console-token", "key": "token"}
    assert env["EVENTS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "events-database"
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["securityContext"] == container(group_deployments(rendered)[0])["securityContext"]
    # and the Service takes its pods, and no group's
    (service,) = [s for s in rendered.kind("Service") if component_of(s) == "console"]
    assert selects({"matchLabels": service["spec"]["selector"]}, console["spec"]["template"]["metadata"]["labels"])
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"][0]["targetPort"] == "http"
    for deployment in group_deployments(rendered):
        assert not selects({"matchLabels": service["spec"]["selector"]},
                           deployment["spec"]["template"]["metadata"]["labels"])


def test_console_actions_without_a_token_secret_fail(template):
    # When
    result = template(set_values=["console.enabled=true", "console.allowActions=true"])

    # Then
    fails_with(result, "console.allowActions needs console.tokenSecret.name")
