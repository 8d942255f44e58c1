#!/usr/bin/env bash
# Coverage-guided fuzzing of what odradek decodes from the network and from disk (fuzz/,
# docs/testing.md): builds the libFuzzer targets with coverage instrumentation on stable Rust,
# then runs them.
#
#   scripts/fuzz.sh <target|all> <seconds> [libFuzzer flags...]
#
# Targets: request, batch, recovery, controller; `all` runs each in turn for <seconds>.
# Extra flags go to libFuzzer (e.g. -fork=2 for two processes, -max_len=65536).
# The corpus persists in $CARGO_TARGET_DIR/fuzz/corpus/<target>, seeded on every run; a crash
# is saved in $CARGO_TARGET_DIR/fuzz/artifacts/<target>/ and makes the script fail once every
# target has run. Per target it prints executions, executions per second and coverage: `cov`
# is the instrumented edges reached out of all in the binary, `ft` libFuzzer's finer features.
# Needs a C++ compiler to build libFuzzer; installs Debian's g++ if there is none.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(request batch recovery controller)
usage="usage: scripts/fuzz.sh <$(IFS='|'; echo "${all_targets[*]}")|all> <seconds> [libFuzzer flags...]"
which="${1:?$usage}"
seconds="${2:?$usage}"
shift 2
case "$which" in
  all) targets=("${all_targets[@]}") ;;
  request|batch|recovery|controller) targets=("$which") ;;
  *) echo "$usage" >&2; exit 2 ;;
esac

if ! command -v c++ >/dev/null; then
  echo "== installing a C++ compiler for libFuzzer (Debian package g++)"
  if [ "$(id -u)" -eq 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
  "${apt_get[@]}" install -y g++ >/dev/null 2>&1 \
    || { "${apt_get[@]}" update >/dev/null && "${apt_get[@]}" install -y g++ >/dev/null; }
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
fuzz_dir="$CARGO_TARGET_DIR/fuzz"
host="$(rustc -vV | sed -n 's/^host: //p')"

# The instrumentation cargo-fuzz applies with `--sanitizer none`, the one mode stable rustc
# supports (sanitizers are nightly-only; Rust code is memory-safe, what is sought are panics,
# aborts and over-allocation, which the harnesses check themselves). `--target` keeps build
# scripts and proc macros uninstrumented; the own target dir keeps these flags from
# invalidating the ordinary build.
echo "== building fuzz targets (libFuzzer, coverage instrumentation)"
RUSTFLAGS="-Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  -Cllvm-args=-sanitizer-coverage-stack-depth \
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
  -Cdebug-assertions" \
  CARGO_TARGET_DIR="$fuzz_dir/build" \
  cargo build --release --target "$host" -p odradek-fuzz --features libfuzzer --bins
bin_dir="$fuzz_dir/build/$host/release"

# A panic prints where it happened; errors, which the code under test returns all the time,
# capture no backtrace (anyhow would on every one, which is slow and allocates).
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}" RUST_LIB_BACKTRACE=0

failed=()
for target in "${targets[@]}"; do
  corpus="$fuzz_dir/corpus/$target"
  artifacts="$fuzz_dir/artifacts/$target"
  log="$fuzz_dir/logs/$target.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  echo "== fuzzing $target for ${seconds}s (log: $log)"
  status=0
  ODRADEK_FUZZ_SEEDS="$corpus" "$bin_dir/$target" "$corpus" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" >"$log" 2>&1 || status=$?
  # libFuzzer reports the instrumented edges at start and cov/ft/corp on each status line.
  total=$(sed -n 's/^INFO: Loaded [0-9]* PC tables (\([0-9]*\) PCs).*/\1/p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+[[:space:]].* cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
  took="${took:+in ${took}s}"
  pct=$(awk -v c="${cov:-0}" -v t="${total:-0}" 'BEGIN { if (t > 0) printf "%.1f", 100 * c / t; else print "?" }')
  echo "$target: ${runs:-?} execs ${took:-until it stopped}, ${rate:-?} execs/s, cov ${cov:-?} of ${total:-?} edges (${pct}%), ft ${ft:-?}, corpus ${corp:-?} inputs, peak rss ${rss:-?} MB"
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "!! $target failed (exit $status); the end of its log:" >&2
    tail -n 40 "$log" >&2
    echo "!! replay a saved input with: $bin_dir/$target <file in $artifacts/>" >&2
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  exit 1
fi
