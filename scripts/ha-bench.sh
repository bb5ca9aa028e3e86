#!/usr/bin/env bash
# What replication costs: the relay and consumer benches and loadgen's propagation phase at
# 100 orders/s, run back to back in one run on
#   r1       one current nats-server, default fsync (the single-node system of today),
#   r1-sync  one current nats-server with `sync_interval: always`,
#   r3-sync  a three-node cluster of them, streams with 3 replicas, `sync_interval: always`
#            (the HA compose variant),
# each a fresh set of private servers on their own ports, beside the shared Postgres. Prints
# the figures of each and their ratios to r1. Needs Postgres as scripts/test.sh does, and a
# current nats-server (NATS_CLUSTER_SERVER_BIN, or the one scripts/test.sh installs). Run it
# alone on the machine: it is a benchmark.
#
#     scripts/ha-bench.sh            # HA_BENCH_SAMPLES (500), HA_BENCH_EVENTS (5000)
set -euo pipefail
cd "$(dirname "$0")/.."

nats_bin=${NATS_CLUSTER_SERVER_BIN:-target/tools/nats-server-2.15.1/bin/nats-server}
[ -x "$nats_bin" ] || { echo "no nats-server at $nats_bin: run scripts/test.sh once, or set NATS_CLUSTER_SERVER_BIN" >&2; exit 1; }
samples=${HA_BENCH_SAMPLES:-500}
events=${HA_BENCH_EVENTS:-5000}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
out=target/ha-bench
setups=${HA_BENCH_SETUPS:-r1 r1-sync r3-sync}   # a subset adds to the last run's outputs
[ -n "${HA_BENCH_SETUPS:-}" ] || rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_servers; rm -rf "$work"' EXIT

echo "==> building (release): the benches, loadgen and both services"
cargo build --release --locked -p event-store --benches >/dev/null
cargo build --release --locked --workspace --bins >/dev/null
# The newest build of bench NAME (cargo names it NAME-<hash>, beside its NAME-<hash>.d).
bench_bin() {
  local newest="" file
  for file in target/release/deps/"$1"-*; do
    [[ $file == *.d ]] && continue
    [ -z "$newest" ] || [ "$file" -nt "$newest" ] && newest=$file
  done
  echo "$newest"
}
relay_bench=$(bench_bin relay)
consumer_bench=$(bench_bin consumer)

# start_servers <setup> <nodes> <sync>: nodes on ports 14220+n (clients), 16220+n (routes),
# 18220+n (monitoring); sets NATS_URL to all of them.
start_servers() {
  local setup=$1 nodes=$2 sync=$3 urls=() routes=()
  for n in $(seq 1 "$nodes"); do routes+=("nats-route://127.0.0.1:$((16220 + n))"); done
  for n in $(seq 1 "$nodes"); do
    local dir="$work/$setup/n$n"
    mkdir -p "$dir"
    {
      echo "server_name: $setup-n$n"
      echo "listen: 127.0.0.1:$((14220 + n))"
      echo "http: 127.0.0.1:$((18220 + n))"
      echo "jetstream { store_dir: \"$dir\"${sync:+, sync_interval: $sync} }"
      if [ "$nodes" -gt 1 ]; then
        echo "cluster { name: $setup, listen: 127.0.0.1:$((16220 + n)), routes: [$(IFS=,; echo "${routes[*]}")] }"
      fi
    } >"$dir.conf"
    "$nats_bin" -c "$dir.conf" >"$out/$setup-n$n.log" 2>&1 &
    pids+=($!)
    urls+=("nats://127.0.0.1:$((14220 + n))")
  done
  for n in $(seq 1 "$nodes"); do
    for _ in $(seq 1 100); do
      curl -fs "http://127.0.0.1:$((18220 + n))/healthz?js-enabled-only=true" >/dev/null && break
      sleep 0.2
    done
  done
  NATS_URL=$(IFS=,; echo "${urls[*]}")
  export NATS_URL
}

run_setup() {
  local setup=$1 nodes=$2 sync=$3 replicas=$4
  echo "==> $setup: $nodes node(s), sync_interval ${sync:-default}, $replicas replica(s)"
  start_servers "$setup" "$nodes" "$sync"
  # The benches and loadgen talk to one node (the cluster announces the others); the
  # cluster places the replicas.
  NATS_URL=${NATS_URL%%,*} "$relay_bench" --events "$events" --repeat 3 --replicas "$replicas" \
    | tee "$out/$setup-relay.txt"
  NATS_URL=${NATS_URL%%,*} "$consumer_bench" --messages "$events" --repeat 3 --replicas "$replicas" \
    | tee "$out/$setup-consumer.txt"
  NATS_URL=${NATS_URL%%,*} NATS_STREAM_REPLICAS=$replicas target/release/loadgen --phases propagation \
    --light-rate 100 --heavy-rate 300 --samples "$samples" --clients 8 --pool-size 10 \
    | tee "$out/$setup-loadgen.txt"
  stop_servers
}

for setup in $setups; do
  case $setup in
    r1) run_setup r1 1 "" 1 ;;
    r1-sync) run_setup r1-sync 1 always 1 ;;
    r3-sync) run_setup r3-sync 3 always 3 ;;
  esac
done
python3 scripts/ha-bench-report.py "$out"
