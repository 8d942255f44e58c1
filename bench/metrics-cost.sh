#!/usr/bin/env bash
# What the metrics cost on the produce path: one workload against a fresh broker without
# --metrics-listen ("off"), with it but never scraped ("on"), and with it scraped every second
# ("scraped"), ROUNDS times, the order of the three rotating by round; then per side the median
# publish rate, broker CPU time per message and p50/p99 publish latency, each over "off".
# Counters are updated only when the endpoint is on, so "off" is the broker without them.
#   bench/metrics-cost.sh OUT_DIR ROUNDS [workload.json]
#     (default: the 1 KiB acks=all overload); extra odradek-bench flags in BENCH_FLAGS.
# Binaries come from $CARGO_TARGET_DIR/release. Ports 19660 (Kafka) and 19661 (metrics).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUT_DIR}
rounds=${2:?ROUNDS}
workload=${3:-bench/workloads/1-topic-16-partitions-1kb-acks-all-overload.json}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$CARGO_TARGET_DIR/release"
port=19660
metrics_port=19661
mkdir -p "$out"
out=$(cd "$out" && pwd)
pid=
scraper=
data=
stop() {
  [ -n "$scraper" ] && { kill "$scraper" 2>/dev/null; wait "$scraper" 2>/dev/null; }
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  [ -n "$data" ] && rm -rf "$data"
  pid=
  scraper=
  data=
}
trap stop EXIT
run() { # side round
  local side=$1 r=$2 flags=()
  [ "$side" != off ] && flags=(--metrics-listen "127.0.0.1:$metrics_port")
  data=$(mktemp -d "${TMPDIR:-/tmp}/odradek-metrics-bench.XXXXXX")
  NO_COLOR=1 "$bin/odradek" serve --listen "127.0.0.1:$port" --data-dir "$data" "${flags[@]}" >"$out/$side-$r.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  if [ "$side" = scraped ]; then
    (while :; do curl -sf "http://127.0.0.1:$metrics_port/metrics" -o "$out/scraped-$r.prom"; sleep 1; done) &
    scraper=$!
  fi
  # shellcheck disable=SC2086
  "$bin/odradek-bench" run "$workload" --bootstrap "127.0.0.1:$port" --broker-pid "$pid" --no-progress \
    --no-plots --out "$out/$side-$r.json" ${BENCH_FLAGS:-} >"$out/$side-$r.txt" 2>&1
  stop
}
sides=(off on scraped)
for r in $(seq "$rounds"); do
  for i in 0 1 2; do
    side=${sides[$(( (i + r - 1) % 3 ))]}
    run "$side" "$r"
    echo "round $r $side: $(sed -n 's/^  publish *\([0-9]*\) msgs\/s.*/\1/p' "$out/$side-$r.txt" | head -1) msgs/s"
  done
done
python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for side in ("off", "on", "scraped"):
    runs = [json.load(open(f"{out}/{side}-{r}.json"))["overall"] for r in range(1, rounds + 1)]
    # Broker CPU per message: steadier than the rate on a shared machine.
    cpu = [o["broker_cpu_pct"] / 100 * 1e6 / o["publish_msgs_per_s"] for o in runs if o.get("broker_cpu_pct")]
    rows[side] = (
        statistics.median(o["publish_msgs_per_s"] for o in runs),
        [round(o["publish_msgs_per_s"]) for o in runs],
        statistics.median(cpu) if cpu else float("nan"),
        statistics.median(o["publish_latency"]["p50_us"] for o in runs),
        statistics.median(o["publish_latency"]["p99_us"] for o in runs),
    )
print("| side | median publish msgs/s | each round | rate / off | broker CPU µs/msg (median) | CPU / off | p50 µs | p99 µs |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
base = rows["off"]
for side, (rate, each, cpu, p50, p99) in rows.items():
    print(f"| {side} | {rate:,.0f} | {each} | {rate / base[0]:.3f} | {cpu:.3f} | {cpu / base[2]:.3f} | {p50:,.0f} | {p99:,.0f} |")
EOF
