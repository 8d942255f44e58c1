#!/usr/bin/env bash
# Issue 15's replication target: one workload against a fresh single node (every core), then
# against a fresh 3-node cluster (bench/run-cluster-workloads.sh: one core per node, replication
# factor 3, min.insync.replicas 2), ROUNDS times, with the cluster/single ratio of each round.
#   bench/cluster-vs-single.sh OUT_DIR ROUNDS [workload.json]
#     (default: the 1 KiB acks=all overload); extra odradek-bench flags in BENCH_FLAGS.
# CLIENT=confluent-kafka runs bench/producer-rate.py (one Python librdkafka producer, acks=all,
# 1 KiB, SECONDS=15 measured) instead of the workload: the client the ratio was first stated
# for, which the broker outruns, where odradek-bench's overload makes the shared disk the limit.
# Binaries come from $CARGO_TARGET_DIR/release. Ports 19600 and 19611-19623.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUT_DIR}
rounds=${2:?ROUNDS}
workload=${3:-bench/workloads/1-topic-16-partitions-1kb-acks-all-overload.json}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$CARGO_TARGET_DIR/release"
name=$(basename "$workload" .json)
mkdir -p "$out"
rate() { sed -n 's/^  publish *\([0-9]*\) msgs\/s.*/\1/p; s/^\([0-9]*\) msgs\/s$/\1/p' "$1" | head -1; }
producer_rate() { "${PYTHON:-target/venv/bin/python}" bench/producer-rate.py "$1" "$2" "${SECONDS_MEASURED:-15}"; }
export -f producer_rate
case "${CLIENT:-}" in
  ''|confluent-kafka) ;;
  *) echo "CLIENT is confluent-kafka or unset" >&2; exit 2 ;;
esac
[ -n "${CLIENT:-}" ] && name=producer-rate
pid=
data=
stop_single() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  [ -n "$data" ] && rm -rf "$data"
  pid=
  data=
}
trap stop_single EXIT
for r in $(seq "$rounds"); do
  data=$(mktemp -d "${TMPDIR:-/tmp}/odradek-single-bench.XXXXXX")
  NO_COLOR=1 "$bin/odradek" serve --data-dir "$data" --listen 127.0.0.1:19600 >"$out/single-$r.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/19600) 2>/dev/null && break; sleep 0.1; done
  if [ -n "${CLIENT:-}" ]; then
    producer_rate 127.0.0.1:19600 1 >"$out/single-$r.txt"
  else
    "$bin/odradek-bench" run "$workload" --bootstrap 127.0.0.1:19600 --broker-pid "$pid" --no-progress \
      --no-plots --out "$out/single-$r.json" ${BENCH_FLAGS:-} >"$out/single-$r.txt"
  fi
  stop_single
  BENCH_FLAGS="--replication-factor 3 --topic-config min.insync.replicas=2 --no-plots ${BENCH_FLAGS:-}" \
    bench/run-cluster-workloads.sh "$out/cluster-$r" 19610 "$workload" >/dev/null
  single=$(rate "$out/single-$r.txt")
  cluster=$(rate "$out/cluster-$r/$name.txt")
  echo "round $r: single ${single:-?} msgs/s, cluster ${cluster:-?} msgs/s, cluster/single $(awk -v c="${cluster:-0}" -v s="${single:-0}" 'BEGIN { if (s > 0) printf "%.2f", c / s; else print "?" }')"
done
