#!/usr/bin/env bash
# Installs the OpenID Connect provider the OAuth2 login tests start (sandbox/oidc/server.mjs): the
# npm package oidc-provider, a certified implementation, at the version package-lock.json pins, into
# sandbox/oidc/node_modules/ (git-ignored). Does nothing when that lock is already installed.
set -euo pipefail
cd "$(dirname "$0")/../sandbox/oidc"
if [[ -f node_modules/.package-lock.json && node_modules/.package-lock.json -nt package-lock.json ]]; then
    echo "oidc-provider already installed"
    exit 0
fi
command -v npm >/dev/null || { echo "npm is needed to install oidc-provider (apt-get install npm)" >&2; exit 1; }
npm ci --no-audit --no-fund
