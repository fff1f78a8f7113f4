#!/usr/bin/env bash
# Installs the Azure Storage emulator the Azure Blob tests start (sandbox/object_stores.py): the
# npm package azurite (Microsoft's emulator; its blob endpoint only is used), at the version
# sandbox/azurite/package-lock.json pins.
set -euo pipefail
exec bash "$(dirname "$0")/install_npm_lock.sh" sandbox/azurite azurite
