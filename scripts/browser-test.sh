#!/usr/bin/env bash
# The event viewer's browser test: Debian's chromium driven by playwright-core, against both
# services, the viewer and a private nats-server, all as processes (event-viewer/browser-test).
# Installs chromium and the npm package when absent, builds the binaries, runs the test.
# Needs Postgres as scripts/test.sh does (DATABASE_URL, default
# postgres://postgres@127.0.0.1:5432/postgres: the run creates its databases on that server)
# and nats-server on the PATH (or NATS_SERVER_BIN). Screenshots: target/browser-test/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || apt_install chromium
command -v node >/dev/null || apt_install nodejs npm
if [ ! -d event-viewer/browser-test/node_modules/playwright-core ]; then
  log "npm ci in event-viewer/browser-test (playwright-core; it downloads no browser)"
  (cd event-viewer/browser-test && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
log "cargo build (services and viewer)"
cargo build --locked -p product-service -p order-service -p event-viewer --bins
log "browser test"
node event-viewer/browser-test/test.mjs
