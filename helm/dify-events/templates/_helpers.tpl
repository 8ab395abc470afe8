{{/*
Expand the name of the chart.
*/}}
{{- define "dify-events.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "dify-events.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "dify-events.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "dify-events.labels" -}}
helm.sh/chart: {{ include "dify-events.chart" . }}
{{ include "dify-events.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "dify-events.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dify-events.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of every consumer pod of the release.
*/}}
{{- define "dify-events.consumerSelectorLabels" -}}
{{ include "dify-events.selectorLabels" . }}
app.kubernetes.io/component: consumer
{{- end }}

{{/*
Selector labels of one group's pods. Call with (dict "root" $ "group" $group).
*/}}
{{- define "dify-events.groupSelectorLabels" -}}
{{ include "dify-events.consumerSelectorLabels" .root }}
dify-events/consumer-group: {{ .group.name }}
{{- end }}

{{/*
Labels of one group's resources. Call with (dict "root" $ "group" $group).
*/}}
{{- define "dify-events.groupLabels" -}}
{{ include "dify-events.labels" .root }}
app.kubernetes.io/component: consumer
dify-events/consumer-group: {{ .group.name }}
{{- end }}

{{/*
Name of one group's resources (Deployment, PDB, ScaledObject or HPA).
Call with (dict "root" $ "group" $group).
*/}}
{{- define "dify-events.groupFullname" -}}
{{- printf "%s-%s" (include "dify-events.fullname" .root) .group.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the outbox relay's resources (Deployment, PDB); the validation keeps a group from taking it.
*/}}
{{- define "dify-events.relayFullname" -}}
{{- printf "%s-outbox-relay" (include "dify-events.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of the outbox relay's pods.
*/}}
{{- define "dify-events.relaySelectorLabels" -}}
{{ include "dify-events.selectorLabels" . }}
app.kubernetes.io/component: relay
{{- end }}

{{/*
Labels of the outbox relay's resources.
*/}}
{{- define "dify-events.relayLabels" -}}
{{ include "dify-events.labels" . }}
app.kubernetes.io/component: relay
{{- end }}

{{/*
Label selector of every pod (or metrics Service) serving /metrics: the consumers' and the outbox
relay's, not the topics Job's. What the PodMonitor and the ServiceMonitor select.
*/}}
{{- define "dify-events.metricsSelector" -}}
matchLabels:
  {{- include "dify-events.selectorLabels" . | nindent 2 }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: [consumer, relay]
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "dify-events.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dify-events.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository:tag, or repository@digest when a digest is set.
*/}}
{{- define "dify-events.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Merge `src` into `dst` in place: maps are merged key by key, everything else (lists too)
replaces. Unlike mergeOverwrite, a `false` or `0` in `src` wins.
Call with (dict "dst" $dst "src" $src).
*/}}
{{- define "dify-events.deepMerge" -}}
{{- $dst := .dst }}
{{- range $key, $value := .src }}
{{- if and (kindIs "map" $value) (kindIs "map" (get $dst $key)) }}
{{- include "dify-events.deepMerge" (dict "dst" (get $dst $key) "src" $value) }}
{{- else }}
{{- $_ := set $dst $key (deepCopy $value) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The consumer groups, each merged over `defaults` and checked, as YAML: `groups: [...]`.
Every template that renders per-group resources ranges over
  (include "dify-events.groups" . | fromYaml).groups
Rules that JSON Schema cannot say are checked here, with a message naming the fix.
*/}}
{{- define "dify-events.groups" -}}
{{- $groups := list }}
{{- $seen := dict }}
{{- range $entry := .Values.groups }}
{{- $g := deepCopy $.Values.defaults }}
{{- include "dify-events.deepMerge" (dict "dst" $g "src" $entry) }}
{{- $name := $g.name }}
{{- if hasKey $seen $name }}
{{- fail (printf "groups: %q is listed twice; each consumer group gets one Deployment" $name) }}
{{- end }}
{{- $_ := set $seen $name true }}
{{- $delivery := toString $g.delivery }}
{{- if not (has $delivery (list "ordered" "shared")) }}
{{- fail (printf "group %q: delivery %q is not one of ordered (a consumer group) or shared (a share group)" $name $delivery) }}
{{- end }}
{{- /* a share group's members all take work, however many partitions there are: no cap */}}
{{- $ordered := eq $delivery "ordered" }}
{{- $partitions := int $g.partitions }}
{{- $drain := int $g.drainTimeoutSeconds }}
{{- $grace := int (default (add $drain 15) (get $g "terminationGracePeriodSeconds")) }}
{{- if le $grace $drain }}
{{- fail (printf "group %q: terminationGracePeriodSeconds (%d) must exceed drainTimeoutSeconds (%d), or the pod is killed while it drains" $name $grace $drain) }}
{{- end }}
{{- $_ := set $g "terminationGracePeriodSeconds" $grace }}
{{- $keda := $g.autoscaling.keda }}
{{- $hpa := $g.autoscaling.hpa }}
{{- if and $keda.enabled $hpa.enabled }}
{{- fail (printf "group %q: autoscaling.keda and autoscaling.hpa are both enabled; enable one of them, as both would scale the same Deployment" $name) }}
{{- end }}
{{- if $keda.enabled }}
{{- if and $ordered (gt (int $keda.maxReplicaCount) $partitions) }}
{{- fail (printf "group %q: autoscaling.keda.maxReplicaCount (%d) exceeds partitions (%d); consumers beyond the partition count sit idle" $name (int $keda.maxReplicaCount) $partitions) }}
{{- end }}
{{- if gt (int $keda.minReplicaCount) (int $keda.maxReplicaCount) }}
{{- fail (printf "group %q: autoscaling.keda.minReplicaCount (%d) exceeds maxReplicaCount (%d)" $name (int $keda.minReplicaCount) (int $keda.maxReplicaCount)) }}
{{- end }}
{{- if not $ordered }}
{{- if lt (int $keda.minReplicaCount) 1 }}
{{- fail (printf "group %q: autoscaling.keda.minReplicaCount is 0, but a shared group scales on its pods' busy ratio, which no pod reports at zero; set it to 1 or more" $name) }}
{{- end }}
{{- if not $keda.prometheus.serverAddress }}
{{- fail (printf "group %q: a shared group scales with KEDA's prometheus trigger (its kafka trigger reads no share group); set autoscaling.keda.prometheus.serverAddress" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $hpa.enabled }}
{{- if and $ordered (gt (int $hpa.maxReplicas) $partitions) }}
{{- fail (printf "group %q: autoscaling.hpa.maxReplicas (%d) exceeds partitions (%d); consumers beyond the partition count sit idle" $name (int $hpa.maxReplicas) $partitions) }}
{{- end }}
{{- if gt (int $hpa.minReplicas) (int $hpa.maxReplicas) }}
{{- fail (printf "group %q: autoscaling.hpa.minReplicas (%d) exceeds maxReplicas (%d)" $name (int $hpa.minReplicas) (int $hpa.maxReplicas)) }}
{{- end }}
{{- $requests := dig "resources" "requests" dict $g }}
{{- if and (get $hpa "targetCPUUtilizationPercentage") (not (get $requests "cpu")) }}
{{- fail (printf "group %q: autoscaling.hpa.targetCPUUtilizationPercentage needs resources.requests.cpu, the base of the utilization" $name) }}
{{- end }}
{{- if and (get $hpa "targetMemoryUtilizationPercentage") (not (get $requests "memory")) }}
{{- fail (printf "group %q: autoscaling.hpa.targetMemoryUtilizationPercentage needs resources.requests.memory, the base of the utilization" $name) }}
{{- end }}
{{- if not (or (get $hpa "targetCPUUtilizationPercentage") (get $hpa "targetMemoryUtilizationPercentage")) }}
{{- fail (printf "group %q: autoscaling.hpa needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" $name) }}
{{- end }}
{{- end }}
{{- $groups = append $groups $g }}
{{- end }}
{{- toYaml (dict "groups" $groups) }}
{{- end }}

{{/*
Checks on the release-wide values that JSON Schema cannot say.
*/}}
{{- define "dify-events.validate" -}}
{{- with .Values.kafka.sasl }}
{{- if and .enabled (not .existingSecret) }}
{{- fail "kafka.sasl.enabled needs kafka.sasl.existingSecret: the name of an existing Secret with the SASL username and password" }}
{{- end }}
{{- end }}
{{- with .Values.kafka.tls }}
{{- if and .existingSecret (not .enabled) }}
{{- fail "kafka.tls.existingSecret is set but kafka.tls.enabled is false; enable TLS or drop the Secret" }}
{{- end }}
{{- if ne (empty .certKey) (empty .keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together: mutual TLS needs both the client certificate and its key" }}
{{- end }}
{{- if and (or .certKey .keyPasswordKey) (not .existingSecret) }}
{{- fail "kafka.tls.certKey, keyKey and keyPasswordKey name keys of kafka.tls.existingSecret, which is empty" }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.podMonitor.enabled .Values.metrics.serviceMonitor.enabled }}
{{- fail "metrics.podMonitor and metrics.serviceMonitor are both enabled; enable one of them, or every pod is scraped twice" }}
{{- end }}
{{- if .Values.relay.enabled }}
{{- if not .Values.database.existingSecret }}
{{- fail "relay.enabled needs database.existingSecret: the Secret with the URL of the application's database, whose outbox the relay publishes" }}
{{- end }}
{{- range .Values.groups }}
{{- if eq .name "outbox-relay" }}
{{- fail "groups: \"outbox-relay\" is the name of the relay's Deployment when relay.enabled; rename the group" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The librdkafka properties the chart derives from `kafka.sasl` and `kafka.tls`, with
`kafka.config` over them, as a map of strings (the runtime wants strings; YAML numbers
would otherwise print as floats like 1e+06).
*/}}
{{- define "dify-events.kafkaProperties" -}}
{{- $props := dict }}
{{- $sasl := .Values.kafka.sasl }}
{{- $tls := .Values.kafka.tls }}
{{- if and $sasl.enabled $tls.enabled }}
{{- $_ := set $props "security.protocol" "SASL_SSL" }}
{{- else if $sasl.enabled }}
{{- $_ := set $props "security.protocol" "SASL_PLAINTEXT" }}
{{- else if $tls.enabled }}
{{- $_ := set $props "security.protocol" "SSL" }}
{{- end }}
{{- if $sasl.enabled }}
{{- $_ := set $props "sasl.mechanism" $sasl.mechanism }}
{{- end }}
{{- if and $tls.enabled $tls.existingSecret }}
{{- if $tls.caKey }}
{{- $_ := set $props "ssl.ca.location" (printf "%s/%s" (include "dify-events.tlsDir" .) $tls.caKey) }}
{{- end }}
{{- if $tls.certKey }}
{{- $_ := set $props "ssl.certificate.location" (printf "%s/%s" (include "dify-events.tlsDir" .) $tls.certKey) }}
{{- $_ := set $props "ssl.key.location" (printf "%s/%s" (include "dify-events.tlsDir" .) $tls.keyKey) }}
{{- end }}
{{- end }}
{{- range $key, $value := .Values.kafka.config }}
{{- if regexMatch "password|secret|token|sasl\\.username|sasl\\.oauthbearer\\.config|ssl\\.key\\.pem" $key }}
{{- fail (printf "kafka.config.%s looks like a secret, and values are no place for one: use kafka.sasl / kafka.tls with an existing Secret, or an env entry with valueFrom.secretKeyRef (EVENTS_KAFKA_%s)" $key ($key | upper | replace "." "_")) }}
{{- end }}
{{- if kindIs "string" $value }}
{{- $_ := set $props $key $value }}
{{- else if kindIs "bool" $value }}
{{- $_ := set $props $key (toString $value) }}
{{- else }}
{{- $_ := set $props $key (toString (int64 $value)) }}
{{- end }}
{{- end }}
{{- toYaml $props }}
{{- end }}

{{/*
The release-wide settings of the runtime's config file (EVENTS_CONFIG_FILE), as a map keyed
by the runtime's setting names (schemas/settings.py): what the consumers, the outbox relay and
the topics Job share. Environment variables win over the file, so a group's (or the relay's)
`env` can still override any of them (e.g. EVENTS_LOG_LEVEL for one group).
*/}}
{{- define "dify-events.releaseConfig" -}}
{{- toYaml (dict
  "bootstrap_servers" .Values.kafka.bootstrapServers
  "topic_prefix" .Values.kafka.topicPrefix
  "log_format" .Values.runtime.logFormat
  "log_level" .Values.runtime.logLevel
  "kafka" (include "dify-events.kafkaProperties" . | fromYaml)) }}
{{- end }}

{{/*
The config file of the topics Job and the outbox relay: the release-wide settings only (the
relay takes its ports as arguments, not from the file).
*/}}
{{- define "dify-events.configFile" -}}
{{- include "dify-events.releaseConfig" . }}
{{- end }}

{{/*
The config file of one group's consumers: the release-wide settings, with the group's
concurrency, batch size and inline (when set) and drain timeout and the pods' ports. Call with (dict "root" $ "group" $group).
*/}}
{{- define "dify-events.groupConfigFile" -}}
{{- $config := include "dify-events.releaseConfig" .root | fromYaml }}
{{- $_ := set $config "concurrency" (int .group.concurrency) }}
{{- if .group.batchMax }}
{{- $_ := set $config "batch_max" (int .group.batchMax) }}
{{- end }}
{{- if hasKey .group "inline" }}
{{- $_ := set $config "inline" .group.inline }}
{{- end }}
{{- $_ := set $config "drain_timeout_s" (int .group.drainTimeoutSeconds) }}
{{- $_ := set $config "health_port" (int .root.Values.runtime.healthPort) }}
{{- $_ := set $config "metrics_port" (int .root.Values.runtime.metricsPort) }}
{{- toYaml $config }}
{{- end }}

{{/*
Key of the outbox relay's config file (the release-wide settings) in the release's ConfigMap.
*/}}
{{- define "dify-events.relayConfigKey" -}}outbox-relay.yaml{{- end }}
{{- define "dify-events.consoleConfigKey" -}}console.yaml{{- end }}

{{/*
Key of one group's config file in the release's ConfigMap. Call with the group.
*/}}
{{- define "dify-events.groupConfigKey" -}}
{{- printf "%s.yaml" .name }}
{{- end }}

{{- define "dify-events.configDir" -}}/etc/events/config{{- end }}
{{- define "dify-events.tlsDir" -}}/etc/events/tls{{- end }}

{{/*
Environment shared by the consumers, the outbox relay and the topics Job: where the config file
is (every non-secret setting is in it, from a ConfigMap), the pod's name as client.id, and the
secrets, only by reference.
*/}}
{{- define "dify-events.env" -}}
- name: EVENTS_CONFIG_FILE
  value: {{ include "dify-events.configDir" . }}/events.yaml
- name: EVENTS_HOME
  value: /tmp/events
- name: EVENTS_KAFKA_CLIENT_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- with .Values.kafka.sasl }}
{{- if .enabled }}
- name: EVENTS_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .usernameKey }}
- name: EVENTS_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- with .Values.kafka.tls }}
{{- if and .enabled .keyPasswordKey }}
- name: EVENTS_KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .keyPasswordKey }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The database URL (EVENTS_DATABASE_URL), from database.existingSecret, for the consumers and the relay.
*/}}
{{- define "dify-events.databaseEnv" -}}
- name: EVENTS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.urlKey }}
{{- end }}

{{/*
A PodDisruptionBudget. Call with (dict "name" $name "labels" $labels "selector" $selectorLabels
"budget" $podDisruptionBudget), the labels as YAML text.
*/}}
{{- define "dify-events.podDisruptionBudget" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- .labels | nindent 4 }}
spec:
  {{- if hasKey .budget "minAvailable" }}
  minAvailable: {{ .budget.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .budget.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- .selector | nindent 6 }}
{{- end }}

{{/*
Volume mounts shared by the consumers, the outbox relay and the topics Job.
*/}}
{{- define "dify-events.volumeMounts" -}}
- name: config
  mountPath: {{ include "dify-events.configDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: {{ include "dify-events.tlsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
Volumes shared by the consumers, the outbox relay and the topics Job. Call with
(dict "root" $ "configMap" $name), and "configKey" $key to mount only that key of the ConfigMap,
as events.yaml.
*/}}
{{- define "dify-events.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
    {{- with .configKey }}
    items:
      - key: {{ . }}
        path: events.yaml
    {{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.tmpSizeLimit }}
{{- with .root.Values.kafka.tls }}
{{- if and .enabled .existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}

{{/*
"true" when KEDA needs a TriggerAuthentication to reach Kafka (SASL credentials, or TLS
material from a Secret), else empty.
*/}}
{{- define "dify-events.kedaAuthentication" -}}
{{- $tls := .Values.kafka.tls }}
{{- if or .Values.kafka.sasl.enabled (and $tls.enabled $tls.existingSecret (or $tls.caKey $tls.certKey)) }}true{{- end }}
{{- end }}
