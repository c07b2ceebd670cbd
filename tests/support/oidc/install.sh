#!/usr/bin/env bash
# Installs the OpenID Provider the sign-in tests run (tests/support/oidc.py): Node.js and npm
# from Debian when missing, then oidc-provider (`npm ci` here, from the committed
# package-lock.json) when node_modules is missing or older than the lock file.
#
# What cannot be installed is an error in CI (CI=true); elsewhere a warning, and the tests
# that need the provider skip saying what is missing.
set -euo pipefail
cd "$(dirname "$0")"

give_up() {
    if [ "${CI:-}" = true ]; then
        echo "error: $*" >&2
        exit 1
    fi
    echo "warning: $*; the sign-in tests that need the OpenID Provider will be skipped" >&2
    exit 0
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing Node.js and npm for the OpenID Provider" >&2
    command -v apt-get >/dev/null || give_up "Node.js is missing (install nodejs and npm)"
    { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q nodejs npm; } || give_up "Node.js is missing and could not be installed"
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || give_up "oidc-provider needs Node.js 20 or newer, not $(node --version)"

# npm ci writes node_modules/.package-lock.json: older than the lock file means stale.
if [ ! node_modules/.package-lock.json -nt package-lock.json ]; then
    npm ci --no-audit --no-fund --prefer-offline || give_up "npm ci failed in $PWD"
fi
