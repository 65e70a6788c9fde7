#!/usr/bin/env bash
# Kubernetes mode's manifests and generated objects, checked against the Kubernetes schemas
# (see docs/kubernetes.md). The same CRD and RBAC also run on a real API server in the
# tests (scripts/k8s-test-apiserver.sh, tests/k8s_*.rs); this catches what the server's
# version does not check (Kubernetes 1.33 schemas, unknown fields, the nginx config).
set -euo pipefail
exec "$(dirname "$0")/../validate-manifests.sh"
