#!/usr/bin/env bash
# Issue 15's single-node targets against the Tansu peer, side by side in one session: for each
# round and each side (Tansu with memory storage, then odradek with fsync on), a fresh broker
# per workload, the machine's ceilings measured first in every run:
#   the 1 KiB acks=all overload, the 1 KiB acks=all 100k msgs/s latency run, the 100 B acks=1
#   overload. One summary line per run; results, reports and broker logs in OUT_DIR.
#   bench/peer-side-by-side.sh OUT_DIR ROUNDS [workload.json ...]
# Tansu's binary is $TANSU (default: tansu on the PATH, `cargo install tansu --locked
# --features dynostore`); odradek's come from $CARGO_TARGET_DIR/release. Port 19600; data
# directories under $TMPDIR, removed after each run (the overloads write ~20 GB each).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUT_DIR}
rounds=${2:?ROUNDS}
shift 2
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(
  bench/workloads/1-topic-16-partitions-1kb-acks-all-overload.json
  bench/workloads/1-topic-16-partitions-1kb-acks-all-100k.json
  bench/workloads/1-topic-16-partitions-100b-acks1-overload.json
)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$CARGO_TARGET_DIR/release"
tansu="${TANSU:-tansu}"
mkdir -p "$out"
pid=
data=
stop() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  [ -n "$data" ] && rm -rf "$data"
  pid=
  data=
}
trap stop EXIT
for r in $(seq "$rounds"); do
  for side in tansu odradek; do
    for w in "${workloads[@]}"; do
      tag="$(basename "$w" .json)-r$r-$side"
      data=$(mktemp -d "${TMPDIR:-/tmp}/peer-bench.XXXXXX")
      if [ "$side" = tansu ]; then
        "$tansu" broker --storage-engine memory://tansu/ --listener-url tcp://127.0.0.1:19600 \
          --advertised-listener-url tcp://127.0.0.1:19600 >"$out/$tag.log" 2>&1 &
      else
        NO_COLOR=1 "$bin/odradek" serve --listen 127.0.0.1:19600 --data-dir "$data/data" >"$out/$tag.log" 2>&1 &
      fi
      pid=$!
      for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/19600) 2>/dev/null && break; sleep 0.1; done
      sleep 1
      "$bin/odradek-bench" run "$w" --bootstrap 127.0.0.1:19600 --broker-pid "$pid" --no-plots --no-progress \
        --with-ceilings "$data" --out "$out/$tag.json" ${BENCH_FLAGS:-} >"$out/$tag.txt" 2>&1
      stop
      echo "$tag:$(sed -n 's/^  publish  *\([0-9]*\) msgs\/s.*/ \1 msgs\/s/p' "$out/$tag.txt" | head -1)" \
        "$(grep -o 'broker [0-9]*%' "$out/$tag.txt")" \
        "$(grep -o '[0-9]*% of loopback' "$out/$tag.txt")" \
        "$(sed -n 's/.*publish latency *p50 *\([0-9]*\) p99 *\([0-9]*\).*/p50 \1 p99 \2 µs/p' "$out/$tag.txt")" \
        "$(grep -o 'raw fdatasync p99 [0-9]* µs: publish [0-9.]*x' "$out/$tag.txt")"
    done
  done
done
