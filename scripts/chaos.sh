#!/usr/bin/env bash
# Chaos against the docker compose system: a small order load with curl while containers are
# killed (SIGKILL) and started again, then the invariants checked through the HTTP APIs:
#   - every acknowledged order (201) is present exactly once and has settled (not pending);
#   - per product, stock_reserved equals the quantities of its confirmed orders, and
#     stock_available + stock_reserved equals the stock it was created with;
#   - order-service's catalogue shows the same stock_available as product-service;
#   - no order's stock was reserved twice (StockReserved events per order, per product).
#
#   scripts/chaos.sh [run]   the whole thing: compose up, setup, load + kills, check
#   scripts/chaos.sh up      compose up --build, then wait until every container is healthy
#   scripts/chaos.sh healthy wait until every container is healthy
#   scripts/chaos.sh setup   create the products the load orders from
#   scripts/chaos.sh load    place orders, recording the acknowledged ones
#   scripts/chaos.sh check   check the invariants for what setup and load recorded
#
# setup, load and check work against any deployment: they only need the two base URLs.
#
# CHAOS_MODE=ha: the same against docker-compose.ha.yml (docs/ha-compose.md): the victims are a
# NATS node, one replica of each service and the balancer in turn (one at a time: each is
# started again and back to healthy before the next), and the load is a patient user: each
# order carries an Idempotency-Key, and a request that timed out, was reset or answered 5xx
# (or 409: the same key still in flight) is sent again with the same key for up to
# CHAOS_RETRY_FOR seconds. The summary then also counts failed_after_retries= (orders the user
# gave up on), retries= (requests sent again) and doubled= (orders of the run nobody was
# acknowledged for: a retry that placed a second order), and any of failed_after_retries, lost,
# duplicates or doubled that is not 0 fails the run.
#
#   ORDERS_URL     order-service   (default http://localhost:8081)
#   PRODUCTS_URL   product-service (default http://localhost:8082)
#   CHAOS_DIR      where setup/load/check keep their state (default target/chaos)
#   CHAOS_ORDERS   orders the load places (default 150; at most 200, one listing page)
#   CHAOS_WORKERS  concurrent clients (default 4);  CHAOS_PAUSE  seconds between a client's orders
#   CHAOS_ROUNDS   kill rounds of run (default 2);  CHAOS_VICTIMS  services killed in each round
#   CHAOS_SETTLE   seconds to wait for everything to settle (default 120)
#   CHAOS_MODE     single (default) or ha;  CHAOS_RETRY_FOR  seconds a user retries (ha, default 60)
#   COMPOSE_FILE, COMPOSE_PROJECT_NAME   as docker compose reads them (CHAOS_MODE=ha defaults
#                  COMPOSE_FILE to docker-compose.yml:docker-compose.ha.yml)
#
# Needs bash, curl and jq (Debian: apt-get install curl jq); run and up also need docker with
# `docker compose` (v2) or `docker-compose` (1.29, which has no `up --wait`: the health of
# every container is then awaited here).
set -euo pipefail
cd "$(dirname "$0")/.."

ORDERS_URL="${ORDERS_URL:-http://localhost:8081}"
PRODUCTS_URL="${PRODUCTS_URL:-http://localhost:8082}"
CHAOS_DIR="${CHAOS_DIR:-target/chaos}"
ORDERS="${CHAOS_ORDERS:-150}"
WORKERS="${CHAOS_WORKERS:-4}"
PAUSE="${CHAOS_PAUSE:-0.5}"
ROUNDS="${CHAOS_ROUNDS:-2}"
CHAOS_MODE="${CHAOS_MODE:-single}"
RETRY_FOR="${CHAOS_RETRY_FOR:-60}"
case $CHAOS_MODE in
  single) VICTIMS="${CHAOS_VICTIMS:-product-service order-service nats postgres}" ;;
  ha)
    VICTIMS="${CHAOS_VICTIMS:-nats-1 order-service-1 product-service-2 nats-2 lb order-service-2 product-service-1 nats-3}"
    export COMPOSE_FILE="${COMPOSE_FILE:-docker-compose.yml:docker-compose.ha.yml}"
    ;;
  *) printf 'chaos: CHAOS_MODE is single or ha, not %s\n' "$CHAOS_MODE" >&2; exit 1 ;;
esac
SETTLE="${CHAOS_SETTLE:-120}"
PRODUCT_COUNT=3
INITIAL_STOCK=40

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

for tool in curl jq; do
  command -v "$tool" >/dev/null || die "$tool is needed (Debian: apt-get install $tool)"
done

# curl_json METHOD URL [BODY]: prints "<status> <body>"; status 000 when nothing answered.
curl_json() {
  local method=$1 url=$2 body=${3:-} out status
  out=$(mktemp)
  status=$(curl -s -o "$out" -w '%{http_code}' --max-time 10 -X "$method" \
    -H 'Content-Type: application/json' ${body:+--data "$body"} "$url") || status=${status:-000}
  printf '%s %s\n' "$status" "$(tr -d '\n' <"$out")"
  rm -f "$out"
}

# until_json URL JQ_FILTER: waits (up to SETTLE) until GET URL is 200 and the filter is true;
# prints the last body; fails when the time runs out.
until_json() {
  local url=$1 filter=$2 deadline=$((SECONDS + SETTLE)) answer status body
  while :; do
    answer=$(curl_json GET "$url")
    status=${answer%% *} body=${answer#* }
    if [ "$status" = 200 ] && jq -e "$filter" >/dev/null 2>&1 <<<"$body"; then
      printf '%s\n' "$body"
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf '%s\n' "$body"
      return 1
    fi
    sleep 0.5
  done
}

# The compose command: `docker compose` (v2) when there is one, else `docker-compose`.
compose() {
  if [ -z "${compose_cmd:-}" ]; then
    if docker compose version >/dev/null 2>&1; then
      compose_cmd="docker compose"
    elif command -v docker-compose >/dev/null; then
      compose_cmd="docker-compose"
    else
      die "docker compose (or docker-compose) is needed"
    fi
  fi
  $compose_cmd "$@"
}

# Waits (up to SETTLE) until every container of the project is healthy (running, for one
# without a healthcheck); fails at once on an unhealthy or exited one.
wait_healthy() {
  local deadline=$((SECONDS + SETTLE)) ids id state
  local -a waiting
  while :; do
    ids=$(compose ps -q)
    [ -n "$ids" ] || die "no containers are running"
    waiting=()
    for id in $ids; do
      state=$(docker inspect -f \
        '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
      case ${state#* } in
        healthy | running) ;;
        starting) waiting+=("${state% *}") ;;
        *) die "container ${state% *} is ${state#* }" ;;
      esac
    done
    [ "${#waiting[@]}" -eq 0 ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || die "not healthy after ${SETTLE}s: ${waiting[*]}"
    sleep 0.5
  done
}

# wait_healthy_one SERVICE: waits (up to SETTLE) until the service's container is healthy.
wait_healthy_one() {
  local deadline=$((SECONDS + SETTLE)) id state
  id=$(compose ps -q "$1")
  while :; do
    state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
    case $state in healthy | running) return 0 ;; esac
    [ "$SECONDS" -lt "$deadline" ] || die "$1 not healthy ${SETTLE}s after its restart: $state"
    sleep 0.5
  done
}

up() {
  log "starting the system"
  if compose up --help 2>/dev/null | grep -q -- '--wait'; then
    compose up -d --build --wait
  else
    compose up -d --build
    wait_healthy
  fi
  log "every container is healthy"
}

wait_ready() {
  local url
  for url in "$ORDERS_URL" "$PRODUCTS_URL"; do
    until_json "$url/health/ready" '.status == "ready"' >/dev/null ||
      die "$url did not become ready in ${SETTLE}s"
  done
}

setup() {
  mkdir -p "$CHAOS_DIR"
  : >"$CHAOS_DIR/products"
  : >"$CHAOS_DIR/acknowledged"
  : >"$CHAOS_DIR/retries"
  : >"$CHAOS_DIR/failed"
  echo 0 >"$CHAOS_DIR/injected"
  printf 'chaos-%s-%s\n' "$(date +%s)" "$RANDOM" >"$CHAOS_DIR/customer"
  local i answer id
  for i in $(seq 1 "$PRODUCT_COUNT"); do
    answer=$(curl_json POST "$PRODUCTS_URL/products" \
      "{\"name\":\"Chaos item $i\",\"price_cents\":$((1000 + i)),\"stock\":$INITIAL_STOCK}")
    [ "${answer%% *}" = 201 ] || die "creating a product failed: $answer"
    id=$(jq -r .id <<<"${answer#* }")
    echo "$id" >>"$CHAOS_DIR/products"
    until_json "$ORDERS_URL/catalog/products/$id" '.version >= 1' >/dev/null ||
      die "order-service's catalogue never learnt of product $id"
  done
  log "created $PRODUCT_COUNT products with stock $INITIAL_STOCK; state in $CHAOS_DIR"
}

# place_patiently BODY KEY RETRIES_FILE: POST /orders with the Idempotency-Key KEY, sent again
# (same key, same body) after a time-out, a reset, a 5xx or a 409 (the key still in flight: an
# attempt cut off by a kill holds it until its lease lapses) for up to RETRY_FOR seconds.
# Prints the final "<status> <body>"; appends a line to RETRIES_FILE per resend.
place_patiently() {
  local body=$1 key=$2 retries_file=$3 deadline=$((SECONDS + RETRY_FOR)) out status
  out=$(mktemp)
  while :; do
    status=$(curl -s -o "$out" -w '%{http_code}' --max-time 10 -X POST \
      -H 'Content-Type: application/json' -H "Idempotency-Key: $key" --data "$body" \
      "$ORDERS_URL/orders") || status=${status:-000}
    case $status in
      000 | 409 | 5??) [ "$SECONDS" -lt "$deadline" ] || break ;;
      *) break ;;
    esac
    echo "$key $status" >>"$retries_file"
    sleep 1
  done
  printf '%s %s\n' "$status" "$(tr -d '\n' <"$out")"
  rm -f "$out"
}

# One client: orders number first, first + WORKERS, ... below ORDERS.
load_worker() {
  local first=$1 out=$2 i product answer
  local -a products
  mapfile -t products <"$CHAOS_DIR/products"
  local customer
  customer=$(cat "$CHAOS_DIR/customer")
  local worker=$((first % WORKERS)) body
  for ((i = first; i < ORDERS; i += WORKERS)); do
    product=${products[i % ${#products[@]}]}
    body="{\"customer_id\":\"$customer\",\"lines\":[{\"product_id\":\"$product\",\"quantity\":$((1 + i % 3))}]}"
    if [ "$CHAOS_MODE" = ha ]; then
      answer=$(place_patiently "$body" "$customer-$i" "$CHAOS_DIR/retries.$worker")
      case ${answer%% *} in
        201) jq -r .id <<<"${answer#* }" >>"$out" ;;
        *)
          printf 'order %s given up: %s\n' "$customer-$i" "$answer" >&2
          echo "$customer-$i ${answer%% *}" >>"$CHAOS_DIR/failed.$worker"
          ;;
      esac
      sleep "$PAUSE"
      continue
    fi
    answer=$(curl_json POST "$ORDERS_URL/orders" "$body")
    case ${answer%% *} in
      201) jq -r .id <<<"${answer#* }" >>"$out" ;;
      # A 5xx other than 503, or a 4xx, is a bug whatever is down.
      000 | 503) ;;
      *) printf 'unexpected answer to an order: %s\n' "$answer" >&2 ;;
    esac
    sleep "$PAUSE"
  done
}

load() {
  [ -s "$CHAOS_DIR/products" ] || die "run setup first"
  [ "$ORDERS" -le 200 ] || die "CHAOS_ORDERS must be at most 200 (the check reads one page of orders)"
  local w
  local -a pids=()
  for ((w = 0; w < WORKERS; w++)); do
    : >"$CHAOS_DIR/acknowledged.$w"
    : >"$CHAOS_DIR/retries.$w"
    : >"$CHAOS_DIR/failed.$w"
    load_worker "$w" "$CHAOS_DIR/acknowledged.$w" &
    pids+=("$!")
  done
  wait "${pids[@]}"
  cat "$CHAOS_DIR"/acknowledged.* >>"$CHAOS_DIR/acknowledged"
  cat "$CHAOS_DIR"/retries.* >>"$CHAOS_DIR/retries"
  cat "$CHAOS_DIR"/failed.* >>"$CHAOS_DIR/failed"
  rm -f "$CHAOS_DIR"/acknowledged.* "$CHAOS_DIR"/retries.* "$CHAOS_DIR"/failed.*
  log "load done: $(wc -l <"$CHAOS_DIR/acknowledged") orders acknowledged"
}

check() {
  local customer orders problems=0 lost=0 duplicates=0 id copies product expected body
  customer=$(cat "$CHAOS_DIR/customer")
  local -a acknowledged
  mapfile -t acknowledged <"$CHAOS_DIR/acknowledged"
  log "checking ${#acknowledged[@]} acknowledged orders of $customer"
  # Every acknowledged order is listed and every order has settled.
  local want
  want=$(jq -R . <"$CHAOS_DIR/acknowledged" | jq -sc .)
  if ! orders=$(until_json "$ORDERS_URL/orders?customer_id=$customer&limit=200" \
    "[.orders[].id] as \$ids | ($want - \$ids | length == 0)
       and all(.orders[]; .status != \"pending\")"); then
    echo "orders did not all appear and settle within ${SETTLE}s" >&2
    problems=$((problems + 1))
  fi
  for id in "${acknowledged[@]}"; do
    copies=$(jq --arg id "$id" '[.orders[]? | select(.id == $id)] | length' <<<"$orders")
    if [ "$copies" -eq 0 ]; then lost=$((lost + 1)); fi
    if [ "$copies" -gt 1 ]; then duplicates=$((duplicates + copies - 1)); fi
  done
  # Stock adds up, per product, and both services agree on it.
  while read -r product; do
    expected=$(jq --arg p "$product" \
      '[.orders[]? | select(.status == "confirmed") | .lines[] | select(.product_id == $p)
        | .quantity] | add // 0' <<<"$orders")
    if ! body=$(until_json "$PRODUCTS_URL/products/$product" ".stock_reserved == $expected"); then
      echo "product $product: reserved $(jq .stock_reserved <<<"$body"), confirmed orders $expected" >&2
      problems=$((problems + 1))
    fi
    if [ "$(jq '.stock_available + .stock_reserved' <<<"$body")" != "$INITIAL_STOCK" ]; then
      echo "product $product: stock does not add up to $INITIAL_STOCK: $body" >&2
      problems=$((problems + 1))
    fi
    local available
    available=$(jq .stock_available <<<"$body")
    if ! until_json "$ORDERS_URL/catalog/products/$product" \
      ".stock_available == $available" >/dev/null; then
      echo "product $product: order-service's catalogue does not show $available available" >&2
      problems=$((problems + 1))
    fi
    body=$(curl_json GET "$PRODUCTS_URL/products/$product/events")
    copies=$(jq '[.[] | select(.type == "StockReserved") | .payload.order_id]
                 | group_by(.) | map(length - 1) | add // 0' <<<"${body#* }")
    duplicates=$((duplicates + copies))
  done <"$CHAOS_DIR/products"
  local ha_fields="" failed=0 doubled=0
  if [ "$CHAOS_MODE" = ha ]; then
    # Every order of this run's customer came from one idempotency key, and every key was
    # retried until acknowledged (or counted as given up): an order nobody was acknowledged
    # for is a second order placed by a retry (or one the user gave up on, counted there).
    failed=$(grep -c . "$CHAOS_DIR/failed" || true)
    doubled=$(jq --argjson want "$want" '[.orders[]?.id] - $want | length' <<<"$orders")
    if [ "$failed" -ne 0 ]; then
      doubled=$((doubled > failed ? doubled - failed : 0))
    fi
    ha_fields=$(printf ' failed_after_retries=%s retries=%s doubled=%s mode=ha' \
      "$failed" "$(grep -c . "$CHAOS_DIR/retries" || true)" "$doubled")
  fi
  printf 'CHAOS-SUMMARY injected=%s acknowledged=%s lost=%s duplicates=%s problems=%s%s\n' \
    "$(cat "$CHAOS_DIR/injected")" "${#acknowledged[@]}" "$lost" "$duplicates" "$problems" \
    "$ha_fields"
  if [ "$lost" -ne 0 ] || [ "$duplicates" -ne 0 ] || [ "$problems" -ne 0 ] ||
    [ "$failed" -ne 0 ] || [ "$doubled" -ne 0 ]; then
    die "invariants broken"
  fi
  log "all invariants hold"
}

run() {
  command -v docker >/dev/null || die "docker (with compose) is needed for run"
  up
  setup
  load &
  local load_pid=$! round victim injected=0
  for round in $(seq 1 "$ROUNDS"); do
    for victim in $VICTIMS; do
      sleep 3
      log "round $round: kill -9 $victim"
      compose kill -s KILL "$victim"
      sleep 2
      compose start "$victim"
      injected=$((injected + 1))
      echo "$injected" >"$CHAOS_DIR/injected"
      # HA: one failure at a time; the next only once this one is back.
      if [ "$CHAOS_MODE" = ha ]; then wait_healthy_one "$victim"; fi
    done
  done
  wait "$load_pid"
  wait_healthy
  wait_ready
  check
}

case "${1:-run}" in
  run) run ;;
  up) up ;;
  healthy) wait_healthy ;;
  setup) setup ;;
  load) load ;;
  check) check ;;
  *) die "usage: $0 [run|up|healthy|setup|load|check]" ;;
esac
