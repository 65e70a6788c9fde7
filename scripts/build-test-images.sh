#!/usr/bin/env bash
# Builds the container images the Docker runtime's tests use. There is no registry to pull
# from, so each image is made locally with `docker import` from a root filesystem holding
# Debian's statically linked busybox (a shell, httpd, nc, dd: enough for tiny backends).
#
# Idempotent and fast when nothing changed: an image is rebuilt only when the label
# dev.spawner.test-image-hash differs from the hash of its inputs (the busybox binary and
# this script).
#
# Images:
#   spawner-test/busybox:1       busybox applets under /bin; CMD serves /www with httpd on $PORT.
#   spawner-test/example-app:1   only with --example-app PATH: that `spawner` binary (stripped)
#                                with its shared libraries, running `spawner example-app`
#                                (HTTP and WebSocket) on $PORT; no HOST is set, so the
#                                tests see the app find out by itself that it runs in a
#                                container and listen on 0.0.0.0.
#
# Usage: build-test-images.sh [--example-app PATH/TO/spawner]
set -euo pipefail

example_app=
if [ "${1:-}" = "--example-app" ]; then
  example_app=${2:?--example-app needs the path of a spawner binary}
fi

log() { printf '  [test-images] %s\n' "$*"; }

if ! command -v docker >/dev/null 2>&1; then
  echo "build-test-images: the docker client is missing; the Docker runtime tests need Docker" >&2
  exit 1
fi
if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  if [ "${SPAWNER_SKIP_DOCKER:-}" = "1" ]; then
    log "no Docker engine and SPAWNER_SKIP_DOCKER=1: not building test images"
    exit 0
  fi
  echo "build-test-images: no Docker engine answers (is dockerd running? DOCKER_HOST=${DOCKER_HOST:-unset})." >&2
  echo "Set SPAWNER_SKIP_DOCKER=1 to skip the Docker tests on a machine without Docker." >&2
  exit 1
fi

# Test processes may run this concurrently: one builds, the others then find it done.
exec 9>"${TMPDIR:-/tmp}/spawner-test-images.lock"
flock 9

busybox=/bin/busybox
if ! [ -x "$busybox" ] || ! dpkg -s busybox-static >/dev/null 2>&1; then
  log "installing busybox-static (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq busybox-static >/dev/null
fi

hash=$(cat "$busybox" "$0" | sha256sum | cut -c1-16)

build_busybox() {
  local tag=spawner-test/busybox:1
  local have
  have=$(docker image inspect --format '{{index .Config.Labels "dev.spawner.test-image-hash"}}' "$tag" 2>/dev/null || true)
  if [ "$have" = "$hash" ]; then
    log "$tag is up to date"
    return
  fi
  log "building $tag"
  local old root
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  mkdir -p "$root"/{bin,tmp,www,etc}
  chmod 1777 "$root/tmp"
  cp "$busybox" "$root/bin/busybox"
  local applet
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  echo 'hello from spawner-test/busybox' >"$root/www/index.html"
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/bin' \
    --change 'ENV PORT=8080' \
    --change "LABEL dev.spawner.test-image-hash=$hash" \
    --change 'CMD ["/bin/sh", "-c", "exec httpd -f -p \"$PORT\" -h /www"]' \
    - "$tag" >/dev/null
  # The image this one replaces, unless a container still uses it.
  [ -z "$old" ] || docker image rm "$old" >/dev/null 2>&1 || true
  log "built $tag"
}

build_example_app() {
  local bin=$1 tag=spawner-test/example-app:1
  # Size, time and path tell a rebuilt binary apart without hashing 100+ MB.
  local want have
  want=$( (stat -c '%s %Y' "$bin"; realpath "$bin"; cat "$0") | sha256sum | cut -c1-16)
  have=$(docker image inspect --format '{{index .Config.Labels "dev.spawner.test-image-hash"}}' "$tag" 2>/dev/null || true)
  if [ "$have" = "$want" ]; then
    log "$tag is up to date"
    return
  fi
  log "building $tag from $bin"
  local old root lib
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  mkdir -p "$root"/{app,tmp}
  chmod 1777 "$root/tmp"
  strip -o "$root/app/spawner" "$bin" 2>/dev/null || cp "$bin" "$root/app/spawner"
  # The dynamic loader and every library the binary links, at the same paths.
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  tar -C "$root" -c . | docker import \
    --change 'ENV PORT=8080' \
    --change "LABEL dev.spawner.test-image-hash=$want" \
    --change 'ENTRYPOINT ["/app/spawner", "example-app"]' \
    - "$tag" >/dev/null
  # The image this one replaces, unless a container still uses it.
  [ -z "$old" ] || docker image rm "$old" >/dev/null 2>&1 || true
  log "built $tag"
}

build_busybox
if [ -n "$example_app" ]; then
  build_example_app "$example_app"
fi
