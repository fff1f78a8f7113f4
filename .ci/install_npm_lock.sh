#!/usr/bin/env bash
# Installs the npm packages a sandbox folder's package-lock.json pins into <folder>/node_modules/
# (git-ignored), without running their install scripts. Does nothing when that lock is installed.
# Usage: bash .ci/install_npm_lock.sh sandbox/<folder> <what it is, for messages>
set -euo pipefail
cd "$(dirname "$0")/../$1"
if [[ -f node_modules/.package-lock.json && node_modules/.package-lock.json -nt package-lock.json ]]; then
    echo "$2 already installed"
    exit 0
fi
command -v npm >/dev/null || { echo "npm is needed to install $2 (apt-get install npm)" >&2; exit 1; }
npm ci --no-audit --no-fund --ignore-scripts
