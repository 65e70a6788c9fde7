#!/usr/bin/env bash
# The real Kubernetes API server the Kubernetes tests run against (see docs/kubernetes.md,
# "What was verified here, and how"): etcd, kube-apiserver and kube-controller-manager
# v1.28.7 on loopback, started by ../shared/k8s/apiserver, with Spawner's CRD applied from
# deploy/kubernetes and one Node object (`node-a`) that test Pods are bound to.
#
#   scripts/k8s-test-apiserver.sh start DIR   start fresh in DIR (~7 s); prints DIR last
#   scripts/k8s-test-apiserver.sh stop DIR    stop it
#
# The tests find it through SPAWNER_TEST_APISERVER=DIR (scripts/test sets it, starts the
# server before the tests and stops it after them). Each test makes its own namespace with
# the RBAC of deploy/kubernetes in it, so one server serves the whole suite.
# SPAWNER_APISERVER_SCRIPT: the `apiserver` script (default ../shared/k8s/apiserver).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
apiserver=${SPAWNER_APISERVER_SCRIPT:-$root/../shared/k8s/apiserver}
[ $# -eq 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
cmd=$1; dir=$2

[ -x "$apiserver" ] || { echo "k8s-test-apiserver: $apiserver not found: the Kubernetes tests need it (set SPAWNER_APISERVER_SCRIPT)" >&2; exit 1; }

case "$cmd" in
  stop) exec "$apiserver" stop "$dir" ;;
  start) ;;
  *) echo "k8s-test-apiserver: unknown command $cmd (start|stop)" >&2; exit 2 ;;
esac

if ! command -v kubectl >/dev/null; then
  echo "k8s-test-apiserver: installing kubectl from Debian" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null
fi

# A fresh store each time: namespaces of earlier runs are not carried over.
"$apiserver" stop "$dir" >/dev/null 2>&1 || true
rm -rf "$dir/etcd"
"$apiserver" start "$dir" >/dev/null
export KUBECONFIG=$dir/kubeconfig
kubectl apply -f "$root/deploy/kubernetes/crd.yaml" >/dev/null
kubectl wait --for condition=established --timeout=60s crd/sessionlivedbackends.spawner.dev crd/sessionlivedbackendpools.spawner.dev >/dev/null
# Test Pods are bound to this Node; without the object the Pod garbage collector would
# delete them as orphans. No kubelet runs for it.
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Node
metadata: {name: node-a}
YAML
echo "$dir"
