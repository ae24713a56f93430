{{/* Names and labels. */}}
{{- define "edgefleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgefleet.fullname" -}}
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

{{- define "edgefleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgefleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: coordinator
{{- end }}

{{- define "edgefleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "edgefleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgefleet
{{- end }}

{{- define "edgefleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edgefleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the tokens: the operator's, or the chart's own. */}}
{{- define "edgefleet.authSecretName" -}}
{{- default (printf "%s-auth" (include "edgefleet.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* The Secret holding the database URL, or "" for SQLite in the data directory. */}}
{{- define "edgefleet.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.database.url }}
{{- printf "%s-database" (include "edgefleet.fullname" .) }}
{{- end }}
{{- end }}

{{- define "edgefleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* A token kept across upgrades: the given one, the one in the release's Secret, or a new one. */}}
{{- define "edgefleet.token" -}}
{{- $given := index .root.Values.auth .field }}
{{- if $given }}
{{- $given }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace (include "edgefleet.authSecretName" .root) }}
{{- if and $existing (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Native gRPC probes on the health service; plaintext only, so TCP under TLS. */}}
{{- define "edgefleet.probeAction" -}}
{{- if .Values.tls.enabled }}
tcpSocket:
  port: grpc
{{- else }}
grpc:
  port: {{ .Values.config.listen.port }}
{{- end }}
{{- end }}

{{/*
The coordinator's config file: CoordinatorConfig's field names, from the chart's values.
*/}}
{{- define "edgefleet.coordinatorConfig" -}}
listen: {{ printf "%s:%v" .Values.config.listen.host .Values.config.listen.port | quote }}
data_dir: {{ .Values.config.dataDir | quote }}
{{- if .Values.config.metricsPort }}
metrics_port: {{ int .Values.config.metricsPort }}
{{- end }}
{{- if .Values.tls.enabled }}
tls_cert: /etc/edgefleet/tls/tls.crt
tls_key: /etc/edgefleet/tls/tls.key
{{- if .Values.tls.mutual }}
client_ca: {{ printf "/etc/edgefleet/client-ca/%s" .Values.tls.clientCaKey | quote }}
{{- end }}
{{- end }}
chunk_bytes: {{ int .Values.config.chunkBytes }}
heartbeat_timeout_s: {{ .Values.config.heartbeatTimeoutS }}
idle_pull_interval_s: {{ .Values.config.idlePullIntervalS }}
profile_timeout_s: {{ .Values.config.profileTimeoutS }}
ram_fraction: {{ .Values.config.ramFraction }}
default_overhead_fraction: {{ .Values.config.defaultOverheadFraction }}
tick_s: {{ .Values.config.tickS }}
fsync: {{ .Values.config.fsync }}
handler_threads: {{ int .Values.config.handlerThreads }}
upload_concurrency: {{ int .Values.config.uploadConcurrency }}
http2_bdp_probe: {{ .Values.config.http2BdpProbe }}
{{- if not (kindIs "invalid" .Values.config.selectionSeed) }}
selection_seed: {{ int .Values.config.selectionSeed }}
{{- end }}
{{- end }}
