#!/usr/bin/env bash
# Runs under tini (PID 1). Starts TorchServe in the foreground and the token gateway beside it, and
# stops both cleanly: SIGTERM to `torchserve --foreground` would only end the Python launcher and
# orphan the Java server, so on SIGTERM we let the gateway finish its requests, then ask TorchServe
# to stop with `torchserve --stop`. If either process dies on its own the container exits non-zero,
# so the kubelet restarts it instead of leaving a half-working pod.
set -euo pipefail

# The one default of the model name outside Python (it equals textrec.tracking.MODEL_NAME; a test checks).
MODEL_NAME=${TEXTREC_MODEL_NAME:-textrec-line}
export TEXTREC_MODEL_NAME=$MODEL_NAME  # the model the gateway checks for readiness
MODEL_STORE=${TEXTREC_MODEL_STORE:-/home/model-server/model-store}
RUN_DIR=${TEXTREC_RUN_DIR:-/home/model-server/run}
HOME_DIR=${TEXTREC_HOME:-/opt/textrec}  # where gateway.py and fetch_model.py live

# TorchServe's config.properties is rendered from serving/config.py, the one source of its settings
# (the local server renders the same template): the image's layout (--pod) plus any TEXTREC_TS_*
# variables, e.g. TEXTREC_TS_JOB_QUEUE_SIZE, which the Helm chart sets from its values. First, so a
# bad setting stops the container at once, with its name.
mkdir -p "$RUN_DIR"
export TS_CONFIG_FILE="$RUN_DIR/config.properties"  # the gateway reads TorchServe's addresses from it
python -m serving.config --pod --model-store "$MODEL_STORE" --out "$TS_CONFIG_FILE" >/dev/null

# TEXTREC_MODEL_ARCHIVE (s3://... or a mounted path) is fetched into the store first; without it the
# archive must already be there (a mounted model store, or `docker run -v`).
if [ -n "${TEXTREC_MODEL_ARCHIVE:-}" ]; then
  python "$HOME_DIR/fetch_model.py" "$TEXTREC_MODEL_ARCHIVE" "$MODEL_STORE" "$MODEL_NAME"
fi
if [ -f "$MODEL_STORE/$MODEL_NAME.mar" ]; then
  model="$MODEL_NAME=$MODEL_NAME.mar"
elif [ -d "$MODEL_STORE/$MODEL_NAME" ]; then
  model="$MODEL_NAME=$MODEL_NAME"  # an unpacked archive (torch-model-archiver --archive-format no-archive)
else
  echo "entrypoint: no model archive: expected $MODEL_STORE/$MODEL_NAME.mar (or an unpacked" \
       "$MODEL_STORE/$MODEL_NAME/); set TEXTREC_MODEL_ARCHIVE, or mount the archive there" >&2
  exit 2
fi

# TorchServe writes key_file.json into its working directory; the gateway reads it from there.
cd "$RUN_DIR"
export TS_KEY_FILE="$RUN_DIR/key_file.json"
export LOG_LOCATION=${LOG_LOCATION:-/home/model-server/logs}
export METRICS_LOCATION=${METRICS_LOCATION:-$LOG_LOCATION}
rm -f "$TS_KEY_FILE"  # a stale file from a restarted container holds keys TorchServe no longer knows

torchserve --start --foreground --ncs --model-store "$MODEL_STORE" --models "$model" \
  --ts-config "$TS_CONFIG_FILE" &
ts_pid=$!
python "$HOME_DIR/gateway.py" &
gw_pid=$!

stopping=0
stop() {
  stopping=1
  kill -TERM "$gw_pid" 2>/dev/null || true
  wait "$gw_pid" 2>/dev/null || true
  torchserve --stop >/dev/null 2>&1 || true
  wait "$ts_pid" 2>/dev/null || true
}
trap 'stop; exit 0' TERM INT

# `wait -n` returns when either child ends (or a trapped signal arrives and the trap exits).
set +e
wait -n "$ts_pid" "$gw_pid"
status=$?
set -e
if [ "$stopping" = 0 ]; then
  echo "entrypoint: a serving process exited ($status); stopping the container" >&2
  stop
  exit $(( status == 0 ? 1 : status ))
fi
