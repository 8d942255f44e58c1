#!/usr/bin/env bash
# Long Jepsen-style runs (docs/jepsen.md): odradek-jepsen runs one after another, seeds FIRST,
# FIRST+1, ..., each RUN_SECONDS of workload under faults, until MINUTES have passed; the
# flags after the four arguments go to every run. Every run's directory is kept under
# target/jepsen/soak-NAME/, and one line per run is appended to target/jepsen/soak-NAME.tsv.
#
#   scripts/jepsen-soak.sh NAME MINUTES RUN_SECONDS FIRST_SEED [odradek-jepsen run flags...]
#   e.g. scripts/jepsen-soak.sh all 60 600 1 --slot 0
#
# Runs in different --slot values can go side by side. Exits non-zero if any run did.
set -uo pipefail
cd "$(dirname "$0")/.."
name="$1" minutes="$2" run_seconds="$3" seed="$4"
shift 4
out="target/jepsen/soak-$name"
table="target/jepsen/soak-$name.tsv"
mkdir -p "$out"
[ -s "$table" ] || printf 'seed\texit\trun dir\tsettings\tfaults\tsends ok/info\ttxns ok/info\tunexpected\tanomaly classes\texpected losses\tduplicates\n' >"$table"
end=$(( $(date +%s) + minutes * 60 ))
status=0
while [ "$(date +%s)" -lt "$end" ]; do
  before=$(ls "$out" | sort | tail -n 1)
  scripts/jepsen.sh --seed "$seed" --duration "$run_seconds" --out "$out" "$@" >"$out/seed-$seed.out" 2>&1
  code=$?
  [ "$code" -eq 0 ] || status=1
  dir=$(ls -d "$out"/*-seed"$seed" 2>/dev/null | sort | tail -n 1)
  if [ -n "$dir" ] && [ -f "$dir/summary.json" ] && [ "$(basename "$dir")" != "$before" ]; then
    python3 - "$dir/summary.json" "$seed" "$code" "$dir" >>"$table" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
faults = ",".join(f"{k} {v}" for k, v in s["faults"].items())
print("\t".join(map(str, [sys.argv[2], sys.argv[3], sys.argv[4], s["settings"], faults,
    f'{s["sends"]["ok"]}/{s["sends"]["info"]}', f'{s["txns"]["ok"]}/{s["txns"]["info"]}',
    s["unexpected"], ",".join(s["anomalies"]) or "-", s["expected_losses"], s["duplicates"]])))
PY
  else
    printf '%s\t%s\t-\tthe run failed before its report: see %s\n' "$seed" "$code" "$out/seed-$seed.out" >>"$table"
  fi
  tail -n 1 "$table"
  seed=$((seed + 1))
done
exit "$status"
