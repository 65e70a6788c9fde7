#!/usr/bin/env bash
# The FROM scratch spawner image of the Kubernetes-mode Docker tests (sidecar, sweeper).
exec bash "$(dirname "$0")/../build-spawner-image.sh"
