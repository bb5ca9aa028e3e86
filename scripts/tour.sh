#!/usr/bin/env bash
# README's tour with curl, run as a check: each step prints its command, runs it and compares
# the answer with what README says it is; the first mismatch fails. It runs against docker
# compose (scripts/compose-check.sh) and, in the test suite, against both services started as
# processes (tests/tests/tour.rs), so README and the code cannot drift apart.
#
#   ORDERS_URL     order-service   (default http://localhost:8081)
#   PRODUCTS_URL   product-service (default http://localhost:8082)
#
# Needs bash, curl and jq.
set -euo pipefail
O_URL="${ORDERS_URL:-http://localhost:8081}"
P_URL="${PRODUCTS_URL:-http://localhost:8082}"

for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "tour: $tool is needed" >&2; exit 1; }
done

# step DESCRIPTION JQ_CHECK CURL_ARGS...: runs curl, prints the answer, and fails unless it
# is 2xx JSON for which the jq expression is true. The answer is left in $answer.
step() {
  local what=$1 check=$2
  shift 2
  printf '\n# %s\n$ curl -s %s\n' "$what" "$*"
  answer=$(curl -sS --fail-with-body --max-time 15 "$@") || {
    printf 'tour: the request failed: %s\n' "$answer" >&2
    exit 1
  }
  printf '%s\n' "$answer"
  jq -e "$check" >/dev/null <<<"$answer" || {
    printf 'tour: MISMATCH in "%s": expected %s\n' "$what" "$check" >&2
    exit 1
  }
}

step "Create a product in product-service" \
  '.name == "Teapot" and .price_cents == 2500 and .currency == "USD" and .stock_available == 10 and .version == 1' \
  -X POST "$P_URL/products" -H 'content-type: application/json' \
  -d '{"name":"Teapot","price_cents":2500,"stock":10}'
P=$(jq -r .id <<<"$answer")
export P

# shellcheck disable=SC2016 # $ENV.P is jq's, not the shell's
step "order-service's catalogue learns of it over NATS (waiting up to 5 s for version 1)" \
  '.id == $ENV.P and .price_cents == 2500 and .currency == "USD" and .stock_available == 10 and .available and .version == 1' \
  "$O_URL/catalog/products/$P?min_version=1"

step "Place an order: priced from the catalogue, pending at once" \
  '.status == "pending" and .total_cents == 7500 and .version == 1' \
  -X POST "$O_URL/orders" -H 'content-type: application/json' \
  -d "{\"customer_id\":\"alice\",\"lines\":[{\"product_id\":\"$P\",\"quantity\":3}]}"
O=$(jq -r .id <<<"$answer")

step "product-service reserves the stock; the order confirms (version 2)" \
  '.status == "confirmed" and .customer_id == "alice" and .total_cents == 7500 and .currency == "USD" and .version == 2' \
  "$O_URL/orders/$O?min_version=2"

step "The stock is reserved" \
  '.stock_available == 7 and .stock_reserved == 3 and .version == 2' \
  "$P_URL/products/$P"

step "Cancel the order" \
  '.status == "cancelled"' \
  -X POST "$O_URL/orders/$O/cancel"

step "The stock comes back (waiting for version 3)" \
  '.stock_available == 10 and .stock_reserved == 0 and .version == 3' \
  "$P_URL/products/$P?min_version=3"

step "What event sourcing stored for the product" \
  '[.[] | .type] == ["ProductCreated", "StockReserved", "StockReleased"]
     and .[1].payload.quantity == 3 and .[2].payload.quantity == 3' \
  "$P_URL/products/$P/events"

printf '\nTOUR OK product=%s order=%s\n' "$P" "$O"
