{{/* Labels of the objects this chart makes itself (the subcharts label their own). */}}
{{- define "textrec-platform.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: textrec
app.kubernetes.io/component: pipeline
{{- end }}

{{/* The Deployment the pipeline's deploy step rolls: the serving chart's, unless named. */}}
{{- define "textrec-platform.servingDeployment" -}}
{{- default .Values.serving.fullnameOverride .Values.pipeline.servingDeployment }}
{{- end }}
