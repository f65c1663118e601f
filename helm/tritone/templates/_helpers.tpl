{{/*
Names, labels and small shared pieces for every template.
*/}}

{{- define "tritone.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Base name of every object: <release>-tritone, or the release name when it already contains the chart name. */}}
{{- define "tritone.fullname" -}}
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

{{/* Component object names (kept short enough for a 63-character DNS label with the suffix). */}}
{{- define "tritone.triton.fullname" -}}
{{- printf "%s-triton" (include "tritone.fullname" . | trunc 48 | trimSuffix "-") }}
{{- end }}
{{- define "tritone.triton.headlessName" -}}
{{- printf "%s-triton-headless" (include "tritone.fullname" . | trunc 46 | trimSuffix "-") }}
{{- end }}
{{- define "tritone.gateway.fullname" -}}
{{- printf "%s-gateway" (include "tritone.fullname" . | trunc 48 | trimSuffix "-") }}
{{- end }}
{{- define "tritone.mlflow.fullname" -}}
{{- printf "%s-mlflow" (include "tritone.fullname" . | trunc 48 | trimSuffix "-") }}
{{- end }}

{{- define "tritone.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "tritone.labels" -}}
helm.sh/chart: {{ include "tritone.chart" . }}
app.kubernetes.io/name: {{ include "tritone.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tritone
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "triton"). */}}
{{- define "tritone.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tritone.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects; same argument as tritone.selectorLabels. */}}
{{- define "tritone.componentLabels" -}}
{{ include "tritone.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tritone.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tritone.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag of an image block; an empty tag means the chart's appVersion. */}}
{{- define "tritone.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The MLflow tracking URI the gateway and Triton use: the in-chart server, or the external one. */}}
{{- define "tritone.mlflowUri" -}}
{{- if .Values.mlflow.enabled }}
{{- printf "http://%s.%s.svc.%s:%d" (include "tritone.mlflow.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.mlflow.port) }}
{{- else }}
{{- required "mlflow.externalTrackingUri is required when mlflow.enabled is false" .Values.mlflow.externalTrackingUri }}
{{- end }}
{{- end }}

{{/*
The gateway's Triton endpoints (TRITONE_TRITON_URLS): the headless Service's DNS name, which
resolves to one address per ready Triton pod. The gateway expands it to the pods and hashes each
voice onto one of them, so a voice's adapter stays hot in few adapter banks.
*/}}
{{- define "tritone.tritonUrls" -}}
{{- printf "%s.%s.svc.%s:%d" (include "tritone.triton.headlessName" .) .Release.Namespace .Values.clusterDomain (int .Values.triton.ports.grpc) }}
{{- end }}

{{- define "tritone.apiKeysSecretName" -}}
{{- default (printf "%s-api-keys" (include "tritone.gateway.fullname" .)) .Values.gateway.apiKeys.existingSecret }}
{{- end }}

{{/* Writable scratch space for containers with a read-only root filesystem. */}}
{{- define "tritone.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end }}
