#!/usr/bin/env bash
# Installs what tests/e2e/test_ohif.py needs, each part only when it is missing or stale:
# Debian's chromium, Node.js and npm; playwright-core (`npm ci` here, from the committed
# package-lock.json); the built OHIF viewer (fetch-viewer.mjs, into <repo>/.cache/ohif/).
# After a first run everything is local: a later run needs no network.
#
# A part that cannot be installed is an error in CI (CI=true); elsewhere a warning, and the
# test skips saying what is missing.
set -euo pipefail
cd "$(dirname "$0")"

give_up() {
    if [ "${CI:-}" = true ]; then
        echo "error: $*" >&2
        exit 1
    fi
    echo "warning: $*; the OHIF browser test will be skipped" >&2
    exit 0
}

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        return 1
    fi
}

apt_updated=""
apt_install() {
    command -v apt-get >/dev/null || return 1
    if [ -z "$apt_updated" ]; then as_root apt-get update -q || return 1; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

if ! command -v chromium >/dev/null && [ -z "${CHROMIUM:-}" ]; then
    echo "installing Debian's chromium for the OHIF browser test" >&2
    apt_install chromium || give_up "Chromium is missing and could not be installed (as root: apt-get install chromium)"
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing Node.js and npm for the OHIF browser test" >&2
    apt_install nodejs npm || give_up "Node.js is missing and could not be installed (as root: apt-get install nodejs npm)"
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || give_up "playwright-core needs Node.js 20 or newer, not $(node --version)"

# npm ci writes node_modules/.package-lock.json: older than the lock file means stale.
if [ ! node_modules/.package-lock.json -nt package-lock.json ]; then
    npm ci --no-audit --no-fund --prefer-offline || give_up "npm ci failed in $PWD"
fi

node fetch-viewer.mjs || give_up "could not fetch the OHIF viewer (npm pack @ohif/app)"
