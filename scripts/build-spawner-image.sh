#!/usr/bin/env bash
# Builds spawner-node-test:latest, the image the Kubernetes-mode Docker tests run (the
# application and the sidecar as two containers sharing one network namespace, as in a
# Pod): FROM scratch holding one statically linked `spawner` binary, so no registry and no
# base image are needed.
#
# Idempotent and fast when nothing changed: cargo rebuilds only what changed, and the image
# is rebuilt only when the label dev.spawner.binary-hash differs from the binary's hash.
#
# Environment:
#   SPAWNER_NODE_IMAGE   image tag (default spawner-node-test:latest)
#   SPAWNER_BINARY       use this static binary instead of building one
#   CARGO_TARGET_DIR     cargo's target directory (default: target)
#   SPAWNER_SKIP_DOCKER  1: exit 0 when no Docker engine answers
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '  [spawner-image] %s\n' "$*"; }
image=${SPAWNER_NODE_IMAGE:-spawner-node-test:latest}
target=x86_64-unknown-linux-gnu

if ! command -v docker >/dev/null 2>&1 || ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  if [ "${SPAWNER_SKIP_DOCKER:-}" = "1" ]; then
    log "no Docker engine and SPAWNER_SKIP_DOCKER=1: not building $image"
    exit 0
  fi
  echo "build-spawner-image: no Docker engine answers (is dockerd running? DOCKER_HOST=${DOCKER_HOST:-unset})." >&2
  echo "Set SPAWNER_SKIP_DOCKER=1 to skip the Docker tests on a machine without Docker." >&2
  exit 1
fi

binary=${SPAWNER_BINARY:-}
if [ -z "$binary" ]; then
  # Profile image-test (Cargo.toml): unoptimised like the debug build, which the tests do
  # not mind and which builds in half a release build's time.
  log "building a static spawner (cargo, profile image-test, +crt-static)"
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --profile image-test --target "$target" -p spawner
  binary="${CARGO_TARGET_DIR:-target}/$target/image-test/spawner"
fi
if ! [ -x "$binary" ]; then
  echo "build-spawner-image: $binary is not an executable" >&2
  exit 1
fi
if ldd "$binary" 2>&1 | grep -q "=>"; then
  echo "build-spawner-image: $binary is dynamically linked; a FROM scratch image needs a static one" >&2
  exit 1
fi

hash=$(sha256sum "$binary" | cut -c1-16)
have=$(docker image inspect --format '{{index .Config.Labels "dev.spawner.binary-hash"}}' "$image" 2>/dev/null || true)
if [ "$have" = "$hash" ]; then
  log "$image is up to date"
  exit 0
fi

log "building $image"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# Debug info stays out of the image (the binary keeps it for local debugging).
if command -v strip >/dev/null 2>&1; then
  strip -o "$context/spawner" "$binary"
else
  cp "$binary" "$context/spawner"
fi
mkdir -p "$context/tmp"
chmod 1777 "$context/tmp"
cat >"$context/Dockerfile" <<DOCKERFILE
FROM scratch
COPY spawner /usr/local/bin/spawner
COPY tmp /tmp
ENV PATH=/usr/local/bin
LABEL dev.spawner.binary-hash=$hash
USER 65532:65532
ENTRYPOINT []
CMD ["spawner", "--help"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build --quiet -t "$image" "$context" >/dev/null
log "built $image"
