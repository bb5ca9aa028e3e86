# shellcheck shell=bash
# Sourced by the scripts: one way to log, fail, run as root and install Debian packages.
# Whatever a script installs or starts, it says so on stderr.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# Runs a command as root: directly when root already, else through sudo (which may ask).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs Debian packages (as root, see as_root), saying which.
apt_install() {
  log "installing Debian packages: $*"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Whether something listens on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Builds the workspace's binaries (nothing to do when scripts/test.sh has just built them; a
# fresh clone builds here) and prints the directory they are in.
build_binaries() {
  cargo build --workspace --bins --locked >&2 || return
  local target
  target="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" || return
  printf '%s/debug\n' "$target"
}

# Fails unless Postgres answers at $DATABASE_URL and NATS at $NATS_URL.
require_postgres_and_nats() {
  pg_isready -q -d "$DATABASE_URL" || die "Postgres at $DATABASE_URL is down"
  local nats_address="${NATS_URL#nats://}"
  (exec 3<>"/dev/tcp/${nats_address%:*}/${nats_address##*:}") 2>/dev/null ||
    die "NATS at $NATS_URL is down"
}
