#!/usr/bin/env bash
# Kubernetes mode has no cluster to test against here: validate its manifests and generated
# objects against the Kubernetes schemas instead (see docs/kubernetes.md).
set -euo pipefail
exec "$(dirname "$0")/../validate-manifests.sh"
