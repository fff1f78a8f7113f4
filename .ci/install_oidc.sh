#!/usr/bin/env bash
# Installs the OpenID Connect provider the OAuth2 login tests start (sandbox/oidc/server.mjs): the
# npm package oidc-provider, a certified implementation, at the version
# sandbox/oidc/package-lock.json pins.
set -euo pipefail
exec bash "$(dirname "$0")/install_npm_lock.sh" sandbox/oidc oidc-provider
