#!/usr/bin/env bash
# The event viewer's browser test: Debian's chromium driven by playwright-core, against both
# services, the viewer and a private nats-server, all as processes (event-viewer/browser-test).
# Installs chromium and the npm package when absent, builds the binaries, runs the test.
# Needs Postgres as scripts/test.sh does (POSTGRES_URL, default postgres://postgres@127.0.0.1:5432)
# and nats-server on the PATH (or NATS_SERVER_BIN). Screenshots: target/browser-test/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "==> installing chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
command -v node >/dev/null || {
  echo "==> installing nodejs and npm"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
}
if [ ! -d event-viewer/browser-test/node_modules/playwright-core ]; then
  echo "==> npm ci (playwright-core; it downloads no browser)"
  (cd event-viewer/browser-test && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
echo "==> cargo build (services and viewer)"
cargo build --locked -p product-service -p order-service -p event-viewer --bins
echo "==> browser test"
node event-viewer/browser-test/test.mjs
