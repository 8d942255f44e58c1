#!/usr/bin/env bash
# Two brokers side by side: each workload run on a fresh broker of each side in turn, the side
# that goes first alternating by round, with one odradek-bench binary for both.
#
#   bench/run-ab.sh BEFORE_ODRADEK AFTER_ODRADEK OUT_DIR [ROUNDS] [WORKLOAD ...]
#
# Workloads default to the four fixed-rate ones (the 100-partition acks=all workload at a
# fixed ACKS_ALL_RATE, default 20000 msgs/s; ACKS_ALL_RATE= runs its max-rate search). BENCH (default: target's odradek-bench) and BENCH_FLAGS (default:
# --warmup-seconds 5 --duration-seconds 20) can be set. Results: OUT_DIR/<workload>-<side>-<round>.{json,txt},
# summarised by bench/ab-summary.py OUT_DIR.
set -euo pipefail
before=$1 after=$2 out=$3 rounds=${4:-5}
shift $(( $# < 4 ? $# : 4 ))
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(1-topic-16-partitions-1kb-acks1-fixed 1-topic-16-partitions-100b
  1-topic-16-partitions-1kb-keyed 1-topic-100-partitions-1kb-acks-all)
cd "$(dirname "$0")/.."
bench=${BENCH:-${CARGO_TARGET_DIR:-target}/release/odradek-bench}
flags=${BENCH_FLAGS:---warmup-seconds 5 --duration-seconds 20}
port=${PORT:-19710}
acks_all_rate=${ACKS_ALL_RATE-20000}
mkdir -p "$out"
for round in $(seq "$rounds"); do
  for w in "${workloads[@]}"; do
    sides="before after"; [ $((round % 2)) = 0 ] && sides="after before"
    for side in $sides; do
      bin=$before; [ "$side" = after ] && bin=$after
      data=$(mktemp -d /tmp/odradek-ab.XXXXXX)
      NO_COLOR=1 "$bin" serve --data-dir "$data/data" --listen "127.0.0.1:$port" > "$out/$w-$side-$round.broker.log" 2>&1 &
      pid=$!
      for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
      sleep 1
      extra=()
      [ "$w" = 1-topic-100-partitions-1kb-acks-all ] && [ -n "$acks_all_rate" ] && extra=(--rate "$acks_all_rate")
      # shellcheck disable=SC2086
      "$bench" run "bench/workloads/$w.json" --bootstrap "127.0.0.1:$port" --broker-pid "$pid" $flags \
        --no-plots --no-progress "${extra[@]}" --out "$out/$w-$side-$round.json" > "$out/$w-$side-$round.txt" 2>&1 || true
      kill "$pid"; wait "$pid" 2>/dev/null || true
      rm -rf "$data"
      echo "$w $side $round: $(grep -E 'CPU' "$out/$w-$side-$round.txt" | tr -s ' ')"
    done
  done
done
