#!/usr/bin/env bash
# `docker compose up`, run for real, on this machine only (CI runs it from .ci/run):
#   1. installs Docker Engine and docker-compose from Debian's packages when missing, and starts
#      dockerd when none runs (and stops it at the end);
#   2. builds the local base images (scripts/compose-base-images.sh; kept between runs), so
#      the real Dockerfile builds unchanged without pulling anything;
#   3. builds and starts the real docker-compose.yml (with docker/compose.local-images.yml for
#      the two third-party images only) and waits for every healthcheck;
#   4. checks that ports are published on 127.0.0.1 only and that each service's Postgres
#      role is its own, runs README's tour (scripts/tour.sh) and scripts/chaos.sh run;
#   5. the HA variant (docker-compose.ha.yml, docs/ha-compose.md) with the same image: down
#      the single-node system, up the three-node NATS cluster, two replicas of each service and
#      the balancer, print HA-HEALTHY seconds=<from up to every container healthy>, check the
#      ports again and run scripts/chaos.sh run with CHAOS_MODE=ha (a patient user retrying
#      under the same Idempotency-Key while nodes, replicas and the balancer are killed);
#   6. removes the run's containers, networks and volumes, also when a step fails.
# Fails on any error, unhealthy container, tour mismatch, lost or doubled order, or (HA) an
# order still failing after a minute of retries. Needs root.
#
#   CHAOS_ORDERS (default 80), CHAOS_ROUNDS (default 1): the size of the chaos run.
#   CHAOS_HA_ORDERS (default 160), CHAOS_HA_ROUNDS (default 1): the size of the HA chaos run.
#   COMPOSE_CHECK_HA=0: skip the HA round.  COMPOSE_CHECK_SINGLE=0: skip the single-node round
#   (build, then the HA round only).
#   COMPOSE_CHECK_KEEP=1: leave the system up at the end (for a look around).
set -euo pipefail
cd "$(dirname "$0")/.."

export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-escomposecheck}"
export COMPOSE_FILE="docker-compose.yml:docker/compose.local-images.yml"
HA_COMPOSE_FILE="$COMPOSE_FILE:docker-compose.ha.yml:docker/compose.ha.local-images.yml"
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
out=target/compose-check
mkdir -p "$out"
started_dockerd=""
started=$SECONDS

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# The seconds since the start in every line.
log() { printf '==> [%4ss] %s\n' "$((SECONDS - started))" "$*" >&2; }

finish() {
  local status=$?
  trap - EXIT
  if [ "$status" -ne 0 ] && docker info >/dev/null 2>&1; then
    echo "compose-check FAILED (exit $status); the last log lines of each container:" >&2
    docker-compose logs --no-color --tail=40 >&2 || true
  fi
  if [ "${COMPOSE_CHECK_KEEP:-}" = 1 ] && [ "$status" -eq 0 ]; then
    log "left running (COMPOSE_CHECK_KEEP=1): docker-compose down -v to remove it"
  elif docker info >/dev/null 2>&1; then
    log "removing the run's containers, networks and volumes"
    docker-compose down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
    leftovers=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    leftovers+=$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    [ -z "$leftovers" ] || { echo "compose-check: left behind: $leftovers" >&2; status=1; }
  fi
  if [ -n "$started_dockerd" ]; then
    log "stopping the dockerd this check started"
    kill "$started_dockerd" 2>/dev/null || true
    wait "$started_dockerd" 2>/dev/null || true
  fi
  log "compose-check took $((SECONDS - started)) s (exit $status)"
  exit "$status"
}
trap finish EXIT

[ "$(id -u)" = 0 ] || die "run it as root (it installs and starts Docker Engine)"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
[ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: $out/dockerd.log)"
  dockerd >"$out/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$started_dockerd" 2>/dev/null || die "dockerd exited: see $out/dockerd.log"
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || die "dockerd did not start: see $out/dockerd.log"
fi
# docker-compose 1.29 builds through the docker CLI (BuildKit: RUN --mount); a newer CLI
# without its buildx plugin cannot, Debian's docker.io CLI can.
if ! docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then
  mkdir -p "$out/bin"
  ln -sf /usr/bin/docker "$out/bin/docker"
  export PATH="$PWD/$out/bin:$PATH"
fi
log "Docker Engine $(docker version -f '{{.Server.Version}}'), $(docker-compose version --short 2>/dev/null || echo compose)"

# Whatever an interrupted earlier run left (of either variant).
COMPOSE_FILE=$HA_COMPOSE_FILE docker-compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
docker-compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true

# check_ports: the two services' and the viewer's ports published, on 127.0.0.1 only.
check_ports() {
  local id published=""
  docker ps --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --format '{{.Names}}: {{.Ports}}' >&2
  # One line a published port ("8081/tcp -> 127.0.0.1:8081"), also where docker ps shows a range.
  for id in $(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"); do
    published+=$(docker port "$id" | sed 's/.* -> //')$'\n'
  done
  published=$(grep . <<<"$published" || true)
  [ "$(grep -c . <<<"$published")" = 3 ] || die "expected the two services' and the viewer's ports published: $published"
  if grep -v '^127\.0\.0\.1:' <<<"$published"; then die "a port is published beyond 127.0.0.1"; fi
}

log "base images"
scripts/compose-base-images.sh

log "building the image (the real Dockerfile, unchanged)"
build_started=$SECONDS
docker-compose build
log "built in $((SECONDS - build_started)) s"

if [ "${COMPOSE_CHECK_SINGLE:-1}" != 0 ]; then
up_started=$SECONDS
docker-compose up -d
CHAOS_SETTLE=120 scripts/chaos.sh healthy
healthy_s=$((SECONDS - up_started))
log "every container healthy $healthy_s s after up"
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
  | grep -E '^(es-shop|es-shop-local/|debian:bookworm-slim|rust:1-bookworm)' | sed 's/^/IMAGE /' >&2

log "ports published on 127.0.0.1 only"
check_ports

log "each service's Postgres role is its own"
psql_in() { docker-compose exec -T postgres psql -v ON_ERROR_STOP=1 -tA "$@"; }
[ "$(psql_in -U postgres -d postgres -c \
  "SELECT string_agg(rolname || ':' || rolsuper, ',' ORDER BY rolname) FROM pg_roles
   WHERE rolname IN ('order_service', 'product_service')")" = "order_service:false,product_service:false" ] ||
  die "the services' roles are missing or superusers"
orders_role="postgresql://order_service:${ORDERS_DB_PASSWORD:-order-service-dev}@localhost"
[ "$(psql_in "$orders_role/orders" -c 'SELECT current_user')" = order_service ] ||
  die "order-service's role cannot log in to its own database"
if psql_in "$orders_role/products" -c 'SELECT 1' >/dev/null 2>&1; then
  die "order-service's role can connect to the products database"
fi

export ORDERS_URL=http://127.0.0.1:8081 PRODUCTS_URL=http://127.0.0.1:8082
log "README's tour"
scripts/tour.sh >"$out/tour.log" || { cat "$out/tour.log"; die "the tour does not match README"; }
tail -1 "$out/tour.log"

log "chaos"
# The load lasts about as long as the kills (5 s each), so every kill meets orders in flight.
CHAOS_ORDERS="${CHAOS_ORDERS:-80}" CHAOS_ROUNDS="${CHAOS_ROUNDS:-1}" CHAOS_PAUSE=1.2 CHAOS_SETTLE=120 \
  CHAOS_DIR="$out/chaos" scripts/chaos.sh run 2>&1 | tee "$out/chaos.log"
summary=$(grep '^CHAOS-SUMMARY' "$out/chaos.log") || die "chaos printed no summary"
echo "$summary"
CHAOS_SETTLE=60 scripts/chaos.sh healthy || die "a container is not healthy after chaos"
log "single-node round passed"
fi

if [ "${COMPOSE_CHECK_HA:-1}" != 0 ]; then
  ha_started=$SECONDS
  log "HA round: the single-node system down, docker-compose.ha.yml up (same image)"
  docker-compose down -v --remove-orphans --timeout 20 >/dev/null 2>&1
  export COMPOSE_FILE=$HA_COMPOSE_FILE
  up_started=$SECONDS
  docker-compose up -d
  CHAOS_SETTLE=180 scripts/chaos.sh healthy
  echo "HA-HEALTHY seconds=$((SECONDS - up_started))"
  log "ports published on 127.0.0.1 only (the balancer's and the viewer's)"
  check_ports
  export ORDERS_URL=http://127.0.0.1:8081 PRODUCTS_URL=http://127.0.0.1:8082
  log "HA chaos"
  CHAOS_MODE=ha CHAOS_ORDERS="${CHAOS_HA_ORDERS:-160}" CHAOS_ROUNDS="${CHAOS_HA_ROUNDS:-1}" CHAOS_PAUSE=2 \
    CHAOS_SETTLE=120 CHAOS_DIR="$out/chaos-ha" scripts/chaos.sh run 2>&1 | tee "$out/chaos-ha.log"
  summary=$(grep '^CHAOS-SUMMARY' "$out/chaos-ha.log") || die "HA chaos printed no summary"
  echo "$summary"
  for field in failed_after_retries lost duplicates doubled; do
    grep -q " $field=0\b" <<<"$summary" || die "HA chaos: $field is not 0"
  done
  CHAOS_SETTLE=60 scripts/chaos.sh healthy || die "a container is not healthy after HA chaos"
  log "HA round passed in $((SECONDS - ha_started)) s"
  echo "HA-ROUND seconds=$((SECONDS - ha_started))"
fi
log "compose-check passed"
