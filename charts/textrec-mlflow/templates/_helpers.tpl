{{/* Names and labels, in the shape `helm create` uses. */}}
{{- define "textrec-mlflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "textrec-mlflow.fullname" -}}
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

{{- define "textrec-mlflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "textrec-mlflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "textrec-mlflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "textrec-mlflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: textrec
{{- end }}

{{/* global.imageRegistry (set by the platform chart) prefixes the repository. */}}
{{- define "textrec-mlflow.image" -}}
{{- $registry := (default dict .Values.global).imageRegistry }}
{{- $repo := .Values.image.repository }}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end }}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "textrec-mlflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "textrec-mlflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Hardened settings shared by every container in the chart. */}}
{{- define "textrec-mlflow.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "textrec-mlflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "textrec-mlflow.serverSelectorLabels" -}}
{{ include "textrec-mlflow.selectorLabels" . }}
app.kubernetes.io/component: tracking-server
{{- end }}

{{- define "textrec-mlflow.dbSelectorLabels" -}}
{{ include "textrec-mlflow.selectorLabels" . }}
app.kubernetes.io/component: database
{{- end }}

{{- define "textrec-mlflow.dbName" -}}
{{- printf "%s-postgresql" (include "textrec-mlflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "textrec-mlflow.dbSecretName" -}}
{{- default (include "textrec-mlflow.dbName" .) .Values.postgresql.existingSecret }}
{{- end }}

{{/* Host headers the server accepts: every in-cluster name of its Service, and localhost for
port-forwarding. MLflow drops its private-IP defaults once the flag is set; kubelet probes hit
/health, which skips the check. */}}
{{- define "textrec-mlflow.allowedHosts" -}}
{{- $svc := include "textrec-mlflow.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $hosts := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) "localhost" "127.0.0.1" }}
{{- $all := list }}
{{- range $hosts }}
{{- $all = append (append $all .) (printf "%s:*" .) }}
{{- end }}
{{- concat $all .Values.mlflow.allowedHosts | join "," }}
{{- end }}

{{/* MLFLOW_BACKEND_STORE_URI (read by `mlflow server`), from the bundled database's password or the
external URI Secret; the password never appears in the manifest. */}}
{{- define "textrec-mlflow.dbEnv" -}}
{{- if .Values.postgresql.enabled -}}
- name: DB_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "textrec-mlflow.dbSecretName" . }}, key: password}}
- name: MLFLOW_BACKEND_STORE_URI
  value: "postgresql://{{ .Values.postgresql.username }}:$(DB_PASSWORD)@{{ include "textrec-mlflow.dbName" . }}:5432/{{ .Values.postgresql.database }}"
{{- else -}}
- name: MLFLOW_BACKEND_STORE_URI
  valueFrom: {secretKeyRef: {name: {{ .Values.externalDatabase.existingSecret }}, key: {{ .Values.externalDatabase.secretKey }}}}
{{- end }}
{{- end }}
