#!/usr/bin/env bash
# Build the component and serving images (what `make images` runs).
#
#   IMAGE_REGISTRY=registry.example.com/textrec IMAGE_TAG=v1 docker/build-images.sh [component|serving ...]
#
# Environment: IMAGE_REGISTRY (prefix, may be empty), IMAGE_TAG (default: git describe, else the
# project version), BASE_IMAGE, TORCH_INDEX (passed as build args when set), PIP_CERT (a CA bundle
# file pip must trust inside the build; copied to docker/local/ca.crt), WHEELS_DIR (a folder of
# wheels pip should prefer; copied to docker/local/wheels/), FORTUNES_DIR (Debian's fortune
# collections, default /usr/share/games/fortunes where installed: copied to docker/local/fortunes/ so
# the component image's LM corpus is the one a local run reads), DOCKER (default: docker).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
command -v "$DOCKER" >/dev/null || { echo "build-images: '$DOCKER' not found: install Docker (docker.io)" >&2; exit 1; }
"$DOCKER" info >/dev/null 2>&1 || { echo "build-images: no Docker engine answers (is dockerd running? DOCKER_HOST=${DOCKER_HOST:-unset})" >&2; exit 1; }

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1)
IMAGE_TAG=${IMAGE_TAG:-$(git describe --tags --always --dirty 2>/dev/null || echo "$version")}
prefix=${IMAGE_REGISTRY:+${IMAGE_REGISTRY%/}/}

# Stage the optional extras into the build context, and take them away again afterwards.
staged=()
cleanup() { [ ${#staged[@]} -eq 0 ] || rm -f "${staged[@]}"; }
trap cleanup EXIT
mkdir -p docker/local/wheels
if [ -n "${PIP_CERT:-}" ]; then
  [ -r "$PIP_CERT" ] || { echo "build-images: PIP_CERT=$PIP_CERT is not a readable file" >&2; exit 1; }
  [ -e docker/local/ca.crt ] || staged+=(docker/local/ca.crt)
  cp "$PIP_CERT" docker/local/ca.crt
fi
if [ -n "${WHEELS_DIR:-}" ]; then
  [ -d "$WHEELS_DIR" ] || { echo "build-images: WHEELS_DIR=$WHEELS_DIR is not a folder" >&2; exit 1; }
  for wheel in "$WHEELS_DIR"/*.whl; do
    [ -e "$wheel" ] || continue
    dest="docker/local/wheels/${wheel##*/}"
    [ -e "$dest" ] || staged+=("$dest")
    cp "$wheel" "$dest"
  done
fi

fortunes=${FORTUNES_DIR:-/usr/share/games/fortunes}
if [ -d "$fortunes" ]; then
  mkdir -p docker/local/fortunes
  for f in "$fortunes"/*; do
    name=${f##*/}
    case "$name" in *.*) continue ;; esac  # strfile indexes (.dat) and links (.u8): only the text is read
    [ -f "$f" ] || continue
    dest="docker/local/fortunes/$name"
    [ -e "$dest" ] || staged+=("$dest")
    cp "$f" "$dest"
  done
fi

args=()
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ -n "${TORCH_INDEX+set}" ] && args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(component serving)
for t in "${targets[@]}"; do
  case "$t" in component|serving) ;; *) echo "build-images: unknown image '$t' (component, serving)" >&2; exit 2 ;; esac
  image="${prefix}textrec-$t:$IMAGE_TAG"
  echo "building $image"
  "$DOCKER" build --network host -f "docker/$t.Dockerfile" ${args[@]+"${args[@]}"} -t "$image" .
done
