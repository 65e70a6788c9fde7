#!/usr/bin/env bash
# Images for the Docker runtime's tests (see scripts/build-test-images.sh).
exec bash "$(dirname "$0")/../build-test-images.sh"
