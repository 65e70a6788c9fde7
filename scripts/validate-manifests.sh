#!/usr/bin/env bash
# Validates what Spawner installs on Kubernetes, without a cluster:
#   1. deploy/kubernetes renders with kustomize (`kubectl kustomize`);
#   2. every rendered object passes `kubernetes-validate --strict` (the Kubernetes OpenAPI
#      schemas, unknown fields refused) for Kubernetes $K8S_VERSION;
#   3. the committed CRD equals `spawner print-crd`;
#   4. the Pod and Service the controller generates (`spawner print-slab --children`) pass
#      the same validation;
#   5. deploy/nginx/spawner.conf passes `nginx -t`.
# It installs what it needs: kubectl and nginx from Debian (when missing, as root), and
# kubernetes-validate from PyPI into a virtualenv under $SPAWNER_VALIDATE_CACHE.
# SPAWNER_BIN: a built `spawner` binary to use instead of building one with cargo.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
K8S_VERSION=1.33.0
KV_VERSION=1.37.0
cache=${SPAWNER_VALIDATE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/spawner-validate}
passed=0

step() { printf 'validate-manifests: %s\n' "$*"; }
ok() { passed=$((passed + 1)); step "ok: $*"; }

missing=()
command -v kubectl >/dev/null || missing+=(kubectl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "installing ${missing[*]} from Debian"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "validate-manifests: needs ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

if [ ! -x "$cache/venv/bin/kubernetes-validate" ] ||
    ! "$cache/venv/bin/pip" show kubernetes-validate 2>/dev/null | grep -qx "Version: $KV_VERSION"; then
    step "installing kubernetes-validate $KV_VERSION into $cache/venv"
    mkdir -p "$cache"
    python3 -m venv "$cache/venv"
    "$cache/venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi
kv() { "$cache/venv/bin/kubernetes-validate" --strict -k "$K8S_VERSION" --quiet "$@"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

kubectl kustomize "$root/deploy/kubernetes" >"$tmp/all.yaml"
ok "kubectl kustomize deploy/kubernetes ($(grep -c '^kind:' "$tmp/all.yaml") objects)"

kv "$tmp/all.yaml"
ok "kubernetes-validate --strict ($K8S_VERSION): deploy/kubernetes"

bin=${SPAWNER_BIN:-}
if [ -z "$bin" ]; then
    (cd "$root" && cargo build -q -p spawner)
    bin=${CARGO_TARGET_DIR:-$root/target}/debug/spawner
fi

"$bin" print-crd >"$tmp/crd.yaml"
diff -u "$root/deploy/kubernetes/crd.yaml" "$tmp/crd.yaml"
ok "deploy/kubernetes/crd.yaml is what print-crd prints"

"$bin" print-slab --children --image registry.example/app:1 --command 'serve --base $(SPAWNER_BASE_PATH)' \
    --env MODE=collab --label owner=user-7 --key doc-42 --key-secret validate --grace 60 --port 8000 >"$tmp/children.yaml"
kv --no-warn "$tmp/children.yaml"
ok "kubernetes-validate --strict ($K8S_VERSION): the generated Pod and Service"

mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx/nginx.conf" <<CONF
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log;
events {}
http {
    access_log off;
    include $root/deploy/nginx/spawner.conf;
}
CONF
"$nginx_bin" -t -q -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf"
ok "nginx -t deploy/nginx/spawner.conf"

echo "validate-manifests: $passed passed, 0 failed"
