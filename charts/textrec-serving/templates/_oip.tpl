{{/* The model checks both runtimes share, and the Open Inference Protocol v2 server (serving/oip.py)
as one container, used by the Deployment (runtime: kserve) and by the KServe InferenceService. */}}

{{- define "textrec-serving.checkModel" -}}
{{- $s3 := hasPrefix "s3://" .Values.model.uri }}
{{- if and (not $s3) (not .Values.model.existingClaim) }}
{{- fail (printf "model.uri=%q: expected an s3://bucket/key.mar URI, or set model.existingClaim to read it from a PVC" .Values.model.uri) }}
{{- end }}
{{- if and (eq .Values.runtime "kserve") (hasSuffix ".mar" .Values.model.uri) }}
{{- fail (printf "model.uri=%q: runtime kserve serves a model.pt (the OIP server loads it directly), not a TorchServe .mar archive" .Values.model.uri) }}
{{- end }}
{{- if and .Values.inferenceService.enabled (ne .Values.runtime "kserve") }}
{{- fail "inferenceService.enabled: needs runtime: kserve (the InferenceService runs the OIP server)" }}
{{- end }}
{{- end }}

{{- define "textrec-serving.oipPort" -}}8090{{- end }}

{{/* An exec probe: every OIP endpoint, the health ones included, needs the bearer token, which an
httpGet probe cannot send without writing it into the manifest. */}}
{{- define "textrec-serving.oipProbe" -}}
exec:
  command:
    - python
    - -c
    - "import os, urllib.request as r; r.urlopen(r.Request('http://127.0.0.1:{{ include "textrec-serving.oipPort" . }}{{ .path }}', headers={'Authorization': 'Bearer ' + open(os.environ['TEXTREC_TOKEN_FILE']).read().strip()}), timeout=4)"
{{- end }}

{{/* ctx: the chart's context; name: the container's name (KServe requires kserve-container). */}}
{{- define "textrec-serving.oipContainer" -}}
{{- $ := .ctx }}
{{- $s3 := hasPrefix "s3://" $.Values.model.uri }}
{{- $port := include "textrec-serving.oipPort" $ }}
- name: {{ .name }}
  image: {{ include "textrec-serving.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  # The image's entrypoint starts TorchServe; this runs serving.oip instead (`python -m serving serve
  # --runtime kserve` starts the same server on a workstation, bound to 127.0.0.1). It writes the
  # server.json serving.oip reads (bound to 0.0.0.0, the model below) and has the server take the
  # chart's token Secret as its key (--token-file), so that every replica accepts the one client token.
  command: [python, -c]
  args:
    - |
      import os, sys
      from pathlib import Path
      from serving.oip import OipConfig, main, write_state
      workdir = Path(os.environ["TEXTREC_OIP_WORKDIR"])
      model = os.environ["TEXTREC_MODEL_ARCHIVE"]
      config = OipConfig(host="0.0.0.0", port=int(os.environ["TEXTREC_OIP_PORT"]),
                         model_name=os.environ["TEXTREC_MODEL_NAME"])
      write_state(workdir, config, model, os.environ.get("TEXTREC_MODEL_VERSION") or "unversioned",
                  {"model_uri": model})
      sys.exit(main(["--workdir", str(workdir), "--token-file", os.environ["TEXTREC_TOKEN_FILE"]]))
  ports:
    - {name: http, containerPort: {{ $port }}, protocol: TCP}
  env:
    # The model.pt serving.oip loads (from S3, or from the claim); a deploy step rolls a new version
    # out by patching this variable (cluster/rollout.py), as for TorchServe.
    - name: TEXTREC_MODEL_ARCHIVE
      value: {{ ternary $.Values.model.uri (printf "/mnt/models/%s" (trimPrefix "/" $.Values.model.uri)) $s3 | quote }}
    - name: TEXTREC_MODEL_VERSION
      valueFrom: {fieldRef: {fieldPath: "metadata.annotations['textrec.io/model-version']"}}
    {{- if $s3 }}
    - {name: AWS_REGION, value: {{ $.Values.model.s3.region | quote }}}
    {{- with $.Values.model.s3.endpoint }}
    - {name: AWS_ENDPOINT_URL_S3, value: {{ . | quote }}}
    {{- end }}
    {{- with $.Values.model.s3.existingSecret }}
    - name: AWS_ACCESS_KEY_ID
      valueFrom: {secretKeyRef: {name: {{ . }}, key: AWS_ACCESS_KEY_ID}}
    - name: AWS_SECRET_ACCESS_KEY
      valueFrom: {secretKeyRef: {name: {{ . }}, key: AWS_SECRET_ACCESS_KEY}}
    {{- end }}
    {{- end }}
    - {name: TEXTREC_MODEL_NAME, value: {{ $.Values.model.name | quote }}}
    - {name: TEXTREC_OIP_PORT, value: {{ $port | quote }}}
    - {name: TEXTREC_OIP_WORKDIR, value: /home/model-server/oip}
    - {name: TEXTREC_TOKEN_FILE, value: /etc/textrec/token/token}
    # KServe reads a custom container's protocol from PROTOCOL (v1beta1 has protocolVersion only on
    # its model specs, not on predictor.containers).
    - {name: PROTOCOL, value: v2}
    - {name: OMP_NUM_THREADS, value: "1"}
    - {name: MKL_NUM_THREADS, value: "1"}
    {{- include "textrec-serving.captureEnv" $ | nindent 4 }}
  securityContext:
    {{- include "textrec-serving.containerSecurityContext" $ | nindent 4 }}
  # serving.oip loads the model before it listens, so an open port means a loaded model: the startup
  # probe only waits for the port; readiness and liveness ask /v2/health/ready and /v2/health/live.
  startupProbe:
    tcpSocket: {port: http}
    periodSeconds: 5
    timeoutSeconds: 5
    failureThreshold: 120
  readinessProbe:
    {{- include "textrec-serving.oipProbe" (dict "path" "/v2/health/ready") | nindent 4 }}
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  livenessProbe:
    {{- include "textrec-serving.oipProbe" (dict "path" "/v2/health/live") | nindent 4 }}
    periodSeconds: 20
    timeoutSeconds: 5
    failureThreshold: 3
  lifecycle:
    # Give Service endpoints time to drop the pod before uvicorn stops accepting.
    preStop:
      exec:
        command: [sleep, "5"]
  resources:
    {{- toYaml $.Values.resources | nindent 4 }}
  volumeMounts:
    - {name: token, mountPath: /etc/textrec/token, readOnly: true}
    - {name: oip, mountPath: /home/model-server/oip}
    - {name: tmp, mountPath: /tmp}
    {{- if $.Values.model.existingClaim }}
    - {name: models, mountPath: /mnt/models, readOnly: true}
    {{- end }}
    {{- include "textrec-serving.captureMount" $ | nindent 4 }}
{{- end }}

{{- define "textrec-serving.oipVolumes" -}}
- name: token
  secret:
    secretName: {{ include "textrec-serving.tokenSecretName" . }}
    defaultMode: 0440
    items:
      - {key: {{ .Values.auth.secretKey }}, path: token}
- name: oip
  emptyDir: {sizeLimit: 64Mi}
- name: tmp
  emptyDir: {sizeLimit: 4Gi}
{{- with .Values.model.existingClaim }}
- name: models
  persistentVolumeClaim: {claimName: {{ . }}, readOnly: true}
{{- end }}
{{- include "textrec-serving.captureVolume" . }}
{{- end }}

{{/* Capture for the review queue (serving/capture.py, docs/review.md), the same for both runtimes:
the TEXTREC_CAPTURE_* variables, and the queue's own S3 endpoint and keys file, which TorchServe's
workers see (it hides every AWS_* variable from them). Nothing is rendered while capture.uri is empty. */}}
{{- define "textrec-serving.captureEnv" -}}
{{- with .Values.capture }}
{{- if .uri }}
- {name: TEXTREC_CAPTURE_URI, value: {{ .uri | quote }}}
- {name: TEXTREC_CAPTURE_THRESHOLD, value: {{ .threshold | toString | quote }}}
- {name: TEXTREC_CAPTURE_SAMPLE_RATE, value: {{ .sampleRate | toString | quote }}}
- {name: TEXTREC_CAPTURE_MAX_ITEMS, value: {{ .maxItems | int64 | quote }}}
- {name: TEXTREC_CAPTURE_RETENTION_DAYS, value: {{ .retentionDays | toString | quote }}}
- {name: TEXTREC_CAPTURE_DEPLOYMENT, value: {{ .deployment | default (include "textrec-serving.fullname" $) | quote }}}
{{- if hasPrefix "s3://" .uri }}
{{- with .s3.endpoint }}
- {name: TEXTREC_QUEUE_S3_ENDPOINT, value: {{ . | quote }}}
{{- end }}
- {name: TEXTREC_QUEUE_S3_REGION, value: {{ .s3.region | quote }}}
{{- if .s3.existingSecret }}
- {name: TEXTREC_QUEUE_S3_KEYS_FILE, value: /etc/textrec/queue/keys}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "textrec-serving.captureMount" -}}
{{- if and .Values.capture.uri .Values.capture.s3.existingSecret }}
- {name: queue-keys, mountPath: /etc/textrec/queue, readOnly: true}
{{- end }}
{{- end }}

{{- define "textrec-serving.captureVolume" -}}
{{- if and .Values.capture.uri .Values.capture.s3.existingSecret }}
- name: queue-keys
  secret:
    secretName: {{ .Values.capture.s3.existingSecret }}
    defaultMode: 0440
    items:
      - {key: {{ .Values.capture.s3.secretKey }}, path: keys}
{{- end }}
{{- end }}
