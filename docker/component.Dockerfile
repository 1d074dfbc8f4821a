# The image every KFP component runs in (base_image of each component) and the MLflow tracking
# server runs from: textrec with kfp, mlflow (plus the `server` extra: the PostgreSQL driver).
#
#   docker build -f docker/component.Dockerfile -t textrec-component .   (or: make images)
#
# Build args: BASE_IMAGE (any Debian-based image with python3 >= 3.11 and the venv module),
# TORCH_INDEX (extra pip index for torch: the default gives the CPU build; .../whl/cu128 or another
# CUDA index gives a GPU build, which needs no CUDA base image since the wheels carry CUDA; empty =
# only PyPI). Optional extras come from docker/local/ (a CA bundle for pip, local wheels) and stay in
# the build stage. Components run as uid 1000; `python3` and `textrec` are on PATH.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
COPY docker/local/ /tmp/local/
# Dependencies first, from the pins alone: editing the sources does not reinstall them.
COPY docker/requirements.py pyproject.toml /src/
RUN set -eu; \
    if [ -f /tmp/local/ca.crt ]; then export PIP_CERT=/tmp/local/ca.crt; fi; \
    mkdir -p /tmp/local/wheels /tmp/local/fortunes; \
    python3 -m venv /opt/venv; \
    python3 /src/requirements.py component /src/pyproject.toml > /tmp/requirements.txt; \
    /opt/venv/bin/pip install --find-links /tmp/local/wheels ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
      -r /tmp/requirements.txt
COPY README.md /src/
COPY textrec /src/textrec
COPY cluster /src/cluster
COPY components /src/components
COPY pipelines /src/pipelines
COPY serving /src/serving
RUN set -eu; \
    if [ -f /tmp/local/ca.crt ]; then export PIP_CERT=/tmp/local/ca.crt; fi; \
    /opt/venv/bin/pip install --no-deps /src; \
    /opt/venv/bin/python -c "import textrec, components, serving, kfp, mlflow, torch, psycopg2"

FROM ${BASE_IMAGE}
RUN set -eu; \
    groupadd --gid 1000 textrec; \
    useradd --uid 1000 --gid 1000 --home-dir /home/textrec --create-home --shell /usr/sbin/nologin textrec
COPY --from=build /opt/venv /opt/venv
# The npm handwriting fonts that `make fonts` installed (none when it has not run): the synthesize
# and train components render with the same hands as a local run.
COPY fonts/ /opt/textrec-fonts/
# Debian's fortune collections that docker/build-images.sh staged (none when the host has none): the
# prose the train component's character LM reads (decode.lm_corpus), as in a local run.
COPY --from=build /tmp/local/fortunes/ /opt/textrec-fortunes/
ENV PATH=/opt/venv/bin:$PATH \
    TEXTREC_FONTSOURCE_DIR=/opt/textrec-fonts/node_modules/@fontsource \
    TEXTREC_FORTUNES_DIR=/opt/textrec-fortunes \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/tmp/cache MPLCONFIGDIR=/tmp/matplotlib
USER 1000:1000
WORKDIR /home/textrec
CMD ["textrec", "--help"]
