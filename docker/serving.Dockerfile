# TorchServe image for the textrec line model: Java 17 + TorchServe + textrec + the handler.
#
#   docker build -f docker/serving.Dockerfile -t textrec-serving .       (or: make images)
#
# Build args: BASE_IMAGE (any Debian-based image with python3 >= 3.11 and the venv module),
# TORCH_INDEX (extra pip index for torch; the default gives the CPU build, a CUDA index such as
# .../whl/cu128 gives a GPU build; empty = only PyPI). Optional extras come from docker/local/
# (a CA bundle for pip, local wheels); they stay in the build stage. The image runs as uid 1000 with
# tini as PID 1; it expects the archive at /home/model-server/model-store/<TEXTREC_MODEL_NAME>.mar
# and reads the client token from TEXTREC_TOKEN_FILE (or TEXTREC_TOKEN).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
COPY docker/local/ /tmp/local/
# Dependencies first, from the pins alone: editing the sources does not reinstall them.
COPY docker/requirements.py pyproject.toml /src/
RUN set -eu; \
    if [ -f /tmp/local/ca.crt ]; then export PIP_CERT=/tmp/local/ca.crt; fi; \
    mkdir -p /tmp/local/wheels; \
    python3 -m venv /opt/venv; \
    python3 /src/requirements.py serving /src/pyproject.toml > /tmp/requirements.txt; \
    /opt/venv/bin/pip install --find-links /tmp/local/wheels ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
      -r /tmp/requirements.txt
COPY README.md /src/
COPY textrec /src/textrec
COPY cluster /src/cluster
COPY serving /src/serving
RUN set -eu; \
    if [ -f /tmp/local/ca.crt ]; then export PIP_CERT=/tmp/local/ca.crt; fi; \
    /opt/venv/bin/pip install --no-deps /src; \
    /opt/venv/bin/python -c "import textrec, serving, ts, torch, PIL, yaml, boto3"

FROM ${BASE_IMAGE}
# Java 17 runs the TorchServe frontend; tini reaps children and forwards signals to the entrypoint.
RUN set -eu; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless tini; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid 1000 model-server; \
    useradd --uid 1000 --gid 1000 --home-dir /home/model-server --create-home --shell /usr/sbin/nologin model-server; \
    install -d -o 1000 -g 1000 /home/model-server/model-store /home/model-server/logs /home/model-server/run
COPY --from=build /opt/venv /opt/venv
COPY docker/serving/entrypoint.sh docker/serving/gateway.py docker/serving/fetch_model.py /opt/textrec/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    TEXTREC_MODEL_NAME=textrec-line \
    XDG_CACHE_HOME=/tmp/cache TORCH_HOME=/tmp/torch
USER 1000:1000
WORKDIR /home/model-server
EXPOSE 8080 8082
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/textrec/entrypoint.sh"]
