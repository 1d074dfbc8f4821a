{{/* Names and labels, in the shape `helm create` uses. */}}
{{- define "textrec-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "textrec-serving.fullname" -}}
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

{{- define "textrec-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "textrec-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "textrec-serving.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "textrec-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: textrec
{{- end }}

{{/* global.imageRegistry (set by the platform chart) prefixes the repository. */}}
{{- define "textrec-serving.image" -}}
{{- $registry := (default dict .Values.global).imageRegistry }}
{{- $repo := .Values.image.repository }}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end }}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "textrec-serving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "textrec-serving.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret that holds the client token: the user's, or the one this chart generates. */}}
{{- define "textrec-serving.tokenSecretName" -}}
{{- default (printf "%s-token" (include "textrec-serving.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* Security contexts of every pod and container in the chart (hardened defaults in values.yaml;
keys set to null there are left out). */}}
{{- define "textrec-serving.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{- define "textrec-serving.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{/* GPUs requested in resources.limits; TorchServe is told the same number. */}}
{{- define "textrec-serving.gpus" -}}
{{- $limits := .Values.resources.limits | default dict }}
{{- index $limits "nvidia.com/gpu" | default 0 }}
{{- end }}

{{/* The TorchServe pods only (the helm test pod shares the release labels, not this one). */}}
{{- define "textrec-serving.serverSelectorLabels" -}}
{{ include "textrec-serving.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}
