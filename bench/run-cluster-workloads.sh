#!/usr/bin/env bash
# Runs workloads against a fresh local 3-node cluster each (every node broker + controller,
# replication factor 3, one core per node, as scripts/dev-cluster.sh), and writes results and
# node logs to OUT_DIR.
#   bench/run-cluster-workloads.sh OUT_DIR BASE_PORT [workload.json ...]
#     (default: the 100-partition acks=all workload)
# Node N serves clients on BASE_PORT+N and its quorum on BASE_PORT+10+N. Extra odradek-bench
# flags go in BENCH_FLAGS, extra serve flags in BROKER_FLAGS; binaries come from
# $CARGO_TARGET_DIR/release.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUT_DIR}
base=${2:?BASE_PORT}
shift 2
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$CARGO_TARGET_DIR/release"
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(bench/workloads/1-topic-100-partitions-1kb-acks-all.json)
mkdir -p "$out"
pids=()
data=
stop_cluster() {
  [ ${#pids[@]} -gt 0 ] && { kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; }
  [ -n "$data" ] && rm -rf "$data"
  pids=()
  data=
}
trap stop_cluster EXIT
voters="1@127.0.0.1:$((base + 11)),2@127.0.0.1:$((base + 12)),3@127.0.0.1:$((base + 13))"
# The bench takes one bootstrap address and finds the other nodes from Metadata.
bootstrap="127.0.0.1:$((base + 1))"
for w in "${workloads[@]}"; do
  name=$(basename "$w" .json)
  [ -n "${CLIENT:-}" ] && name=producer-rate
  data=$(mktemp -d /tmp/odradek-cluster-bench.XXXXXX)
  for n in 1 2 3; do
    NO_COLOR=1 "$bin/odradek" serve --node-id "$n" --listen "127.0.0.1:$((base + n))" \
      --controller-listen "127.0.0.1:$((base + 10 + n))" --controller-quorum-voters "$voters" \
      --default-replication-factor 3 --cores 1 --data-dir "$data/node-$n" ${BROKER_FLAGS:-} \
      >"$out/$name.node-$n.log" 2>&1 &
    pids+=($!)
  done
  for n in 1 2 3; do
    for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/$((base + n))) 2>/dev/null && break; sleep 0.1; done
  done
  echo "== $name on 3 nodes (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  # CPU% is that of node 1; the other two carry the same share of leaders and followers.
  if [ -n "${CLIENT:-}" ]; then
    # bench/cluster-vs-single.sh's CLIENT mode: one Python producer instead of the workload.
    producer_rate "$bootstrap" 3 | tee "$out/$name.txt"
  else
    "$bin/odradek-bench" run "$w" --bootstrap "$bootstrap" --broker-pid "${pids[0]}" \
      --out "$out/$name.json" --no-progress ${BENCH_FLAGS:-} | tee "$out/$name.txt"
  fi
  for i in 0 1 2; do
    kill -0 "${pids[$i]}" 2>/dev/null || echo "!! node $((i + 1)) died during $name: see $out/$name.node-$((i + 1)).log"
  done
  stop_cluster
done
