#!/usr/bin/env bash
# The Python the client and example tests run (tests/clients.rs, tests/examples.rs): a
# virtualenv with pinned httpx, pytest, FastAPI and uvicorn, and clients/python installed
# into it the way its README says (pip install ./clients/python), which proves it installs.
# The tests import the working tree's clients/python (PYTHONPATH), not this copy.
# Cached under $SPAWNER_PY_VENV (default ~/.cache/spawner-clients/venv), rebuilt when the
# pins or the package's pyproject.toml change.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${SPAWNER_PY_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/spawner-clients/venv}
pins=(httpx==0.28.1 pytest==8.3.4 anyio==4.8.0 fastapi==0.115.6 uvicorn==0.34.0 mypy==1.14.1)
stamp=$( (printf '%s\n' "${pins[@]}"; cat "$root/clients/python/pyproject.toml") | sha256sum | cut -c1-16)

if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.spawner-stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "python-clients: $venv is current"
  exit 0
fi
echo "python-clients: building $venv"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"
# From a copy: setuptools leaves build/ and *.egg-info in the directory it builds.
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cp -r "$root/clients/python" "$copy/"
rm -rf "$copy/python/build" "$copy/python/"*.egg-info
"$venv/bin/pip" install -q --disable-pip-version-check "$copy/python"
"$venv/bin/python" -c 'import spawner_client, fastapi, uvicorn, pytest'
echo "$stamp" >"$venv/.spawner-stamp"
