#!/usr/bin/env bash
# Checks the events as a published contract, from outside and with other people's tools: a
# stranger holding only the AsyncAPI documents and a CloudEvents SDK must be able to read every
# event the services publish. Both services run as processes on fresh databases in a NATS
# namespace of their own, as a deployment mid-upgrade: product-service with the legacy `Es-`
# headers switched off (EVENTS_LEGACY_HEADERS=false), order-service with its defaults. Commands
# make every event type the services write (products created, repriced, restocked; orders
# confirmed, rejected for want of stock, cancelled with their stock released), and the saga
# must settle across the mixed headers. Then:
#   - the AsyncAPI CLI validates both documents (`GET /asyncapi.json`, which must be what the
#     `asyncapi` subcommand prints): errors fail, warnings are shown;
#   - a Python subscriber (scripts/contract/subscriber.py: nats-py, the CloudEvents SDK,
#     jsonschema) reads every message of both streams and checks each is a CloudEvent in the
#     NATS binding's binary mode whose payload and headers validate against the message of the
#     producer's document its dataschema names, and that a value the binding must
#     percent-encode arrives intact;
#   - docs/examples/subscriber.py, the example README quotes, prints the product events;
#   - every golden fixture's stored payload validates against its producer's document.
#
#   DATABASE_URL   Postgres server the services create their databases on (local default)
#   NATS_URL       NATS with JetStream (default: nats://127.0.0.1:4222)
#
# Postgres and NATS must be up: scripts/test.sh starts them on a fresh machine. Node.js and
# npm must be installed (for the AsyncAPI CLI), and Python 3.10 or newer.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ beside the scripts in the work tree
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
started=$SECONDS

tools="$PWD/target/tools"
# The AsyncAPI CLI and every package under it, as scripts/contract/asyncapi-cli/package-lock.json
# pins them: 4.1.1, the last release for Node.js 20 that the registry serves (5.0 needs 24).
cli_spec=scripts/contract/asyncapi-cli
cli_version=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["dependencies"]["@asyncapi/cli"])' \
  "$cli_spec/package.json")
cli_dir="$tools/asyncapi-cli-$cli_version"
cli_lock=$(sha256sum "$cli_spec/package-lock.json" | cut -c1-12)
asyncapi="$cli_dir/node_modules/.bin/asyncapi"
if [ "$(cat "$cli_dir/.installed" 2>/dev/null)" != "$cli_lock" ]; then
  command -v npm >/dev/null || die "npm is needed for the AsyncAPI CLI (Debian: apt-get install npm)"
  log "installing @asyncapi/cli $cli_version from the npm registry into target/tools (npm ci)"
  rm -rf "$cli_dir"
  mkdir -p "$cli_dir"
  cp "$cli_spec/package.json" "$cli_spec/package-lock.json" "$cli_dir/"
  # --ignore-scripts: the CLI's postinstall would add shell completion to ~/.bashrc.
  npm ci --prefix "$cli_dir" --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
  echo "$cli_lock" >"$cli_dir/.installed"
fi

# Every package pinned, so the venv is named by the list's hash.
requirements=scripts/contract/requirements.txt
venv="$tools/contract-py-$(sha256sum "$requirements" | cut -c1-12)"
if [ ! -f "$venv/.installed" ]; then
  log "installing $(grep -Eo '^(nats-py|cloudevents|jsonschema)==[^ ]+' "$requirements" | xargs) from PyPI into target/tools"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  touch "$venv/.installed"
fi
py="$venv/bin/python"

bin_dir="$(build_binaries)"
require_postgres_and_nats

run_id="contract_$(date +%Y%m%d_%H%M%S)_$$"
run_dir="$PWD/target/contract/$run_id"
mkdir -p "$run_dir"
databases=("${run_id}_products" "${run_id}_orders")
pids=()
products_url="" orders_url=""

# shellcheck disable=SC2317 # run by the trap
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for db in "${databases[@]}"; do
    psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  "$py" - "$NATS_URL" "$run_id" <<'EOF' >/dev/null 2>&1 || true
import asyncio, sys, nats
async def main(url, ns):
    nc = await nats.connect(url, allow_reconnect=False)
    for label in ("product", "order"):
        await nc.jetstream().delete_stream(f"{ns}_{label}_events")
    await nc.close()
asyncio.run(main(*sys.argv[1:]))
EOF
  if [ "$status" -ne 0 ]; then
    echo "contract: failed; service logs, documents and outputs are in ${run_dir#"$PWD"/}" >&2
  else
    rm -rf "$run_dir"
  fi
  exit "$status"
}
trap cleanup EXIT

# start NAME DATABASE VAR [SETTING=VALUE...]: runs a service in the background and sets VAR to
# its base URL. EVENTS_LEGACY_HEADERS is whatever the call says, never the caller's.
start() {
  local name=$1 database=$2 var=$3 port
  shift 3
  port=$(free_port)
  printf -v "$var" 'http://127.0.0.1:%s' "$port"
  env -u EVENTS_LEGACY_HEADERS DATABASE_URL="${DATABASE_URL%/*}/$database" \
    HTTP_ADDR="127.0.0.1:$port" EVENTS_NAMESPACE="$run_id" RUST_LOG="${RUST_LOG:-info}" \
    PRODUCT_SERVICE_URL="${products_url:-}" LOG_FORMAT=json "$@" \
    "$bin_dir/$name" serve >"$run_dir/$name.log" 2>&1 &
  pids+=($!)
}

wait_ready() {
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$1/health/ready" 2>/dev/null && return
    sleep 0.2
  done
  die "$1 did not become ready"
}

# post URL JSON [CURL_ARGS...]: prints the response body; fails on anything but 2xx.
post() {
  local url=$1 body=$2
  shift 2
  curl -fsS -X POST "$url" -H 'content-type: application/json' -d "$body" "$@"
}
# get URL: prints the response body; fails on anything but 2xx.
get() { curl -fsS --max-time 15 "$1"; }
# field NAME: a top-level field of the JSON on stdin.
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# expect WHAT ACTUAL WANTED
expect() { [ "$2" = "$3" ] || die "$1 is '$2', expected '$3'"; }

log "starting product-service with EVENTS_LEGACY_HEADERS=false and order-service with its defaults (namespace $run_id)"
start product-service "${databases[0]}" products_url EVENTS_LEGACY_HEADERS=false
start order-service "${databases[1]}" orders_url
wait_ready "$products_url"
wait_ready "$orders_url"

# Values the NATS binding must percent-encode (`"` and `%`; a `%41` decoded twice is an `A`),
# which the subscriber must read back exactly.
request_id='contract-"50%41"'
idempotency_key='restock-%41"1"'
# And a trace context, which travels as ce-traceparent (and plain traceparent).
traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01

log "driving every event type: products created, repriced, restocked; orders confirmed, rejected, cancelled"
product_ids=()
for product in '"Teapot",2500,10' '"Cup",900,100' '"Spoon",300,0'; do
  IFS=, read -r name price stock <<<"$product"
  product_ids+=("$(post "$products_url/products" \
    "{\"name\":$name,\"price_cents\":$price,\"stock\":$stock}" | field id)")
done
teapot=${product_ids[0]} cup=${product_ids[1]} spoon=${product_ids[2]}
post "$products_url/products/$teapot/price" '{"price_cents":2700}' \
  -H "X-Request-Id: $request_id" >/dev/null
post "$products_url/products/$cup/restock" '{"quantity":5}' \
  -H "Idempotency-Key: $idempotency_key" >/dev/null
# order-service's catalogue has each product at its latest version before it prices an order.
for id_version in "$teapot 2" "$cup 2" "$spoon 1"; do
  read -r id version <<<"$id_version"
  get "$orders_url/catalog/products/$id?min_version=$version" >/dev/null
done
place() {
  post "$orders_url/orders" \
    "{\"customer_id\":\"$1\",\"lines\":[{\"product_id\":\"$2\",\"quantity\":$3}]}" \
    -H "traceparent: $traceparent" | field id
}
confirmed=$(place alice "$teapot" 2)
rejected=$(place bob "$spoon" 1) # no stock
cancelled=$(place carol "$cup" 3)
expect "alice's order" "$(get "$orders_url/orders/$confirmed?min_version=2" | field status)" confirmed
expect "bob's order" "$(get "$orders_url/orders/$rejected?min_version=2" | field status)" rejected
expect "carol's order" "$(get "$orders_url/orders/$cancelled?min_version=2" | field status)" confirmed
post "$orders_url/orders/$cancelled/cancel" '' >/dev/null
expect "carol's order" "$(get "$orders_url/orders/$cancelled?min_version=3" | field status)" cancelled
# Created, restocked, reserved, released: the stock is back.
cup_json=$(get "$products_url/products/$cup?min_version=4")
expect "the cup's available stock" "$(field stock_available <<<"$cup_json")" 105
expect "the cup's reserved stock" "$(field stock_reserved <<<"$cup_json")" 0
events() { psql -Atq "${DATABASE_URL%/*}/$1" -c 'SELECT count(*) FROM events'; }
product_events=$(events "${databases[0]}")
order_events=$(events "${databases[1]}")
log "settled: orders confirmed, rejected and cancelled; $product_events product-service and $order_events order-service events stored"

log "fetching both AsyncAPI documents (GET /asyncapi.json, and the asyncapi subcommand)"
for service in product-service order-service; do
  url=$products_url
  [ "$service" = order-service ] && url=$orders_url
  get "$url/asyncapi.json" >"$run_dir/$service.asyncapi.json"
  env -u EVENTS_LEGACY_HEADERS EVENTS_NAMESPACE="$run_id" "$bin_dir/$service" asyncapi \
    >"$run_dir/$service.printed.json"
  python3 - "$run_dir/$service.asyncapi.json" "$run_dir/$service.printed.json" <<'EOF' ||
import json, sys
served, printed = (json.load(open(p)) for p in sys.argv[1:])
sys.exit(served != printed)
EOF
    die "$service: GET /asyncapi.json and \`$service asyncapi\` differ (both are in ${run_dir#"$PWD"/})"
done

# validate SERVICE: the AsyncAPI CLI on the service's document. It runs with a home of its own
# in the run directory, analytics off and no update check, so it neither phones home nor asks;
# --fail-severity error: errors fail, warnings are printed.
validate() {
  mkdir -p "$run_dir/asyncapi-home"
  echo '{"analyticsEnabled":"false","infoMessageShown":"true","userID":"contract"}' \
    >"$run_dir/asyncapi-home/.asyncapi-analytics"
  (cd "$run_dir" && HOME="$run_dir/asyncapi-home" CI=true FORCE_COLOR=0 NO_COLOR=1 \
    ASYNCAPI_METRICS_CONFIG_PATH="$run_dir/asyncapi-home/.asyncapi-analytics" \
    ASYNCAPI_SKIP_NEW_VERSION_CHECK=true \
    "$asyncapi" validate "$1.asyncapi.json" --fail-severity error --diagnostics-format stylish)
}
status=0
for service in product-service order-service; do
  log "asyncapi validate (@asyncapi/cli $cli_version): $service"
  validate "$service" 2>&1 | sed '/^$/d' || status=1
done
[ "$status" -eq 0 ] || die "the AsyncAPI CLI found errors"

log "foreign subscriber (nats-py, cloudevents, jsonschema) on both streams"
"$py" scripts/contract/subscriber.py --nats-url "$NATS_URL" --namespace "$run_id" \
  --document "product-service=$run_dir/product-service.asyncapi.json" \
  --document "order-service=$run_dir/order-service.asyncapi.json" \
  --expect "product=$product_events" --expect "order=$order_events" \
  --legacy-headers product=absent --legacy-headers order=present \
  --expect-attribute "correlationid=$request_id" \
  --expect-attribute "idempotencykey=$idempotency_key" \
  --expect-attribute "traceparent=$traceparent"

log "docs/examples/subscriber.py --max $product_events"
NATS_URL="$NATS_URL" EVENTS_NAMESPACE="$run_id" timeout 30 \
  "$py" docs/examples/subscriber.py --max "$product_events" >"$run_dir/example.out" ||
  die "the example subscriber failed or hung (output in ${run_dir#"$PWD"/}/example.out)"
printed=$(grep -c '^eventsourced\.product-service\.[A-Za-z]* [a-z]*-' "$run_dir/example.out" || true)
head -n 3 "$run_dir/example.out"
expect "events the example printed" "$printed" "$product_events"
log "the example printed all $printed product events"

log "golden fixtures against their producer's document"
"$py" scripts/contract/fixtures.py \
  --document "product-service=$run_dir/product-service.asyncapi.json" \
  --document "order-service=$run_dir/order-service.asyncapi.json" \
  product-service/tests/fixtures/events order-service/tests/fixtures/events

log "contract checks passed in $((SECONDS - started)) s"
