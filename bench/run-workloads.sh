#!/usr/bin/env bash
# Runs shipped workloads, each against a fresh odradek broker and with the machine's ceilings
# measured in the same run, and writes results, plots and broker logs to OUT_DIR.
#   bench/run-workloads.sh OUT_DIR PORT [workload.json ...]   (default: every shipped workload)
# Extra odradek-bench flags go in BENCH_FLAGS, extra broker flags in BROKER_FLAGS.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUT_DIR}
port=${2:?PORT}
shift 2
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$CARGO_TARGET_DIR/release"
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(bench/workloads/1-topic-*.json)
mkdir -p "$out"
broker=
data=
stop_broker() {
  [ -n "$broker" ] && { kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null; }
  [ -n "$data" ] && rm -rf "$data"
  broker=
  data=
}
trap stop_broker EXIT
for w in "${workloads[@]}"; do
  name=$(basename "$w" .json)
  data=$(mktemp -d /tmp/odradek-bench-data.XXXXXX)
  NO_COLOR=1 "$bin/odradek" serve --data-dir "$data" --listen "127.0.0.1:$port" ${BROKER_FLAGS:-} \
    >"$out/$name.broker.log" 2>&1 &
  broker=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
  echo "== $name (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$bin/odradek-bench" run "$w" --bootstrap "127.0.0.1:$port" --broker-pid "$broker" \
    --with-ceilings "$data" --out "$out/$name.json" --no-progress ${BENCH_FLAGS:-} | tee "$out/$name.txt"
  kill -0 "$broker" 2>/dev/null || echo "!! the broker died during $name: see $out/$name.broker.log"
  stop_broker
done
