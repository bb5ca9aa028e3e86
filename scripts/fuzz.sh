#!/usr/bin/env bash
# Fuzzes both HTTP APIs from their own OpenAPI documents with schemathesis: each operation gets
# schema examples, boundary values, random valid and invalid input, and stateful sequences, and
# every response must be no 5xx and match the document (status code, content type, headers,
# schema); schema-valid requests must be accepted and schema-invalid ones refused. Both services
# run as processes on fresh databases, seeded with products and orders, with ADMIN_TOKEN set so
# that the admin routes are fuzzed with and without the token.
#
#   DATABASE_URL        Postgres server the services create their databases on (local default)
#   NATS_URL            NATS with JetStream (default: nats://127.0.0.1:4222)
#   FUZZ_SEED           seed (fixed by default, so that a failure reproduces)
#   FUZZ_MAX_EXAMPLES   test cases per operation and phase (default 30)
#
# Postgres and NATS must be up: scripts/test.sh starts them on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION="4.32.5"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
seed="${FUZZ_SEED:-5}"
max_examples="${FUZZ_MAX_EXAMPLES:-30}"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

venv="$PWD/target/tools/schemathesis-$SCHEMATHESIS_VERSION"
if [ ! -x "$venv/bin/schemathesis" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION from PyPI into target/tools"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

bin_dir="$(build_binaries)"
require_postgres_and_nats

run_id="fuzz_$(date +%Y%m%d_%H%M%S)_$$"
run_dir="$PWD/target/fuzz/$run_id"
mkdir -p "$run_dir"
admin_token="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
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
  if [ "$status" -ne 0 ]; then
    echo "fuzz: failed; service logs and reports are in ${run_dir#"$PWD"/}" >&2
  fi
  exit "$status"
}
trap cleanup EXIT

# start NAME DATABASE VAR: runs a service in the background and sets VAR to its base URL.
start() {
  local name=$1 database=$2 port
  port=$(free_port)
  printf -v "$3" 'http://127.0.0.1:%s' "$port"
  DATABASE_URL="${DATABASE_URL%/*}/$database" HTTP_ADDR="127.0.0.1:$port" \
    EVENTS_NAMESPACE="$run_id" ADMIN_TOKEN="$admin_token" RUST_LOG="${RUST_LOG:-info}" \
    PRODUCT_SERVICE_URL="${products_url:-}" LOG_FORMAT=json "$bin_dir/$name" serve >"$run_dir/$name.log" 2>&1 &
  pids+=($!)
}

wait_ready() {
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$1/health/ready" 2>/dev/null && return
    sleep 0.2
  done
  die "$1 did not become ready"
}

# post URL JSON: prints the response body; fails on anything but 2xx.
post() { curl -fsS -X POST "$1" -H 'content-type: application/json' -d "$2"; }
id_of() { python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }

log "starting both services (namespace $run_id)"
start product-service "${databases[0]}" products_url
start order-service "${databases[1]}" orders_url
wait_ready "$products_url"
wait_ready "$orders_url"

# Seeded so that lists have rows, and orders exist in every state (rejected ones carry a reason).
log "seeding products and orders"
product_ids=()
for product in '"Teapot",2500,10' '"Cup",900,100' '"Spoon",300,0'; do
  IFS=, read -r name price stock <<<"$product"
  product_ids+=("$(post "$products_url/products" \
    "{\"name\":$name,\"price_cents\":$price,\"stock\":$stock}" | id_of)")
done
for id in "${product_ids[@]}"; do
  curl -fsS -o /dev/null "$orders_url/catalog/products/$id?min_version=1"
done
place() { post "$orders_url/orders" "{\"customer_id\":\"$1\",\"lines\":[$2]}" | id_of; }
line() { echo "{\"product_id\":\"$1\",\"quantity\":$2}"; }
order_ids=(
  "$(place alice "$(line "${product_ids[0]}" 2)")" # confirmed
  "$(place bob "$(line "${product_ids[2]}" 1)")"   # rejected: no stock
  "$(place carol "$(line "${product_ids[1]}" 3)")" # cancelled below
)
for id in "${order_ids[@]}"; do
  curl -fsS -o /dev/null "$orders_url/orders/$id?min_version=2"
done
post "$orders_url/orders/${order_ids[2]}/cancel" '' >/dev/null

toml_strings() { printf '"%s",' "$@" | sed 's/,$//; s/^/[/; s/$/]/'; }

# What every config shares: the token for the bearer scheme the admin routes declare; path ids
# and projection names that often name seeded things rather than random ones; and small
# `min_version`s, since one beyond the entity's version makes a read wait its full 5 s (as
# documented), which would make most of the run's time.
common_config() {
  cat <<EOF
[auth.openapi.admin_token]
bearer = "$admin_token"

[dictionaries.products]
values = $(toml_strings "${product_ids[@]}")

[dictionaries.orders]
values = $(toml_strings "${order_ids[@]}")

[dictionaries.projections]
values = ["products", "orders", "catalog"]

[dictionaries.versions]
values = [0, 1, 2]

[parameters]
"path.name" = { dictionary = "projections", probability = 0.3 }
"query.min_version" = { dictionary = "versions", probability = 0.9 }
EOF
}

# Two findings configured away, for operations that state decides and no schema can describe:
#
# GET PATH is served from a read model, which trails the write it reflects by milliseconds: a
# read right after a 201 may be a 404 unless it passes `?min_version=` (the API's
# read-your-writes), so the check that a created resource is at once readable does not apply.
read_model() {
  printf '\n[[operations]]\ninclude-path = "%s"\ninclude-method = "GET"\n' "$1"
  echo 'checks.ensure_resource_availability.enabled = false'
}
# METHOD PATH may refuse a schema-valid request with 422 for a reason that depends on state (as
# its documented 422 says), so that check accepts 422 there besides its default statuses.
state_refusals() {
  printf '\n[[operations]]\ninclude-path = "%s"\ninclude-method = "%s"\n' "$2" "$1"
  echo 'checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]'
}

{
  common_config
  cat <<EOF

[[operations]]
include-path-regex = "^/products/"
parameters = { "path.id" = { dictionary = "products", probability = 0.5 } }
EOF
  read_model "/products/{id}"
  state_refusals POST "/products/{id}/restock" # stock beyond i64
} >"$run_dir/product-service.toml"

{
  common_config
  cat <<EOF

[[operations]]
include-path-regex = "^/orders/"
parameters = { "path.id" = { dictionary = "orders", probability = 0.5 } }

[[operations]]
include-path-regex = "^/catalog/products/"
parameters = { "path.id" = { dictionary = "products", probability = 0.5 } }

# Positive fuzzing orders catalogue products; the other phases send any uuid.
[[operations]]
include-path = "/orders"
include-method = "POST"
parameters = { "body.lines[*].product_id" = { dictionary = "products", probability = 1.0 } }
EOF
  read_model "/orders/{id}"
  state_refusals POST /orders # unknown_product: not in the catalogue
} >"$run_dir/order-service.toml"

# fuzz NAME URL: runs schemathesis against one service, its output in NAME.out.
fuzz() {
  local name=$1 url=$2
  mkdir -p "$run_dir/$name"
  # In its own directory: schemathesis keeps state (.hypothesis, .schemathesis) in the working
  # directory. One worker: several threads crash hypothesis on Python 3.11 ("AST constructor
  # recursion depth mismatch"); the two services are fuzzed at once instead.
  (cd "$run_dir/$name" && "$venv/bin/schemathesis" --config-file "$run_dir/$name.toml" \
    run "$url/openapi.json" \
    --checks all \
    --max-examples "$max_examples" \
    --seed "$seed" \
    --workers 1 \
    --generation-database none \
    --report junit --report-dir "$run_dir/$name" \
    --no-color) >"$run_dir/$name.out" 2>&1
}

log "schemathesis $SCHEMATHESIS_VERSION on both services: seed $seed, $max_examples examples per operation"
started=$SECONDS
fuzz product-service "$products_url" &
product_fuzz=$!
fuzz order-service "$orders_url" &
order_fuzz=$!
status=0
wait "$product_fuzz" || status=1
wait "$order_fuzz" || status=1
for name in product-service order-service; do
  log "schemathesis: $name"
  cat "$run_dir/$name.out"
done
log "fuzzing took $((SECONDS - started)) s; seed $seed (FUZZ_SEED=$seed reproduces it)"
exit "$status"
