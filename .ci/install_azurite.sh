#!/usr/bin/env bash
# Installs the Azure Storage emulator the Azure Blob tests start (sandbox/object_stores.py): the
# npm package azurite (Microsoft's emulator), blob endpoint only, at the version package-lock.json pins, into
# sandbox/azurite/node_modules/ (git-ignored). Does nothing when that lock is already installed.
set -euo pipefail
cd "$(dirname "$0")/../sandbox/azurite"
if [[ -f node_modules/.package-lock.json && node_modules/.package-lock.json -nt package-lock.json ]]; then
    echo "azurite already installed"
    exit 0
fi
command -v npm >/dev/null || { echo "npm is needed to install azurite (apt-get install npm)" >&2; exit 1; }
npm ci --no-audit --no-fund --ignore-scripts
