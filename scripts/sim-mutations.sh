#!/usr/bin/env bash
# Proof that the simulator can fail: applies each realistic bug in sim/mutations/*.patch to
# core, one at a time, and runs seeds until the simulator catches it. Prints one verdict per
# mutation: CAUGHT (the first failing seed and the checker's or the panic's message), MISSED,
# or BROKEN (the patch does not apply or build). Restores core after each patch.
# Usage: scripts/sim-mutations.sh [seeds per scenario, default 80] [patch ...]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-80}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/sim-mutations"
if ! git diff --quiet -- core; then
  echo "core/ has uncommitted changes; commit or stash them first" >&2
  exit 2
fi
trap 'git checkout -q -- core' EXIT
scenarios="swarm kip101 double-crash fast-leader-changes zombie-leader power-loss isr-churn
  last-replica-standing isr-expansion-race acks-matrix power-loss-no-fsync stale-messages fsync-failure idempotent-failover
  transactions zombie-transactions late-transactional-writes acls"
if [ "$#" -gt 1 ]; then
  shift
  patches=("$@")
else
  patches=(sim/mutations/*.patch)
fi
status=0
for patch in "${patches[@]}"; do
  name=$(basename "$patch" .patch)
  # One verdict line per patch: a patch that no longer applies or builds is reported (it
  # needs regenerating against the current core) and the next patch still runs.
  if ! git apply "$patch" 2>/dev/null; then
    echo "BROKEN $name: does not apply"
    status=1
    continue
  fi
  if ! log=$(cargo build --release -q -p odradek-sim 2>&1); then
    echo "BROKEN $name: does not build: $(printf '%s\n' "$log" | grep -m1 '^error' | cut -c1-300 || true)"
    status=1
    git checkout -q -- core
    continue
  fi
  caught=""
  for scenario in $scenarios; do
    if out=$("$CARGO_TARGET_DIR/release/odradek-sim" swarm --seeds "$seeds" --scenario "$scenario" 2>&1); then
      continue
    fi
    # A failed report and a panic (core's invariants, then abort) both print `FAIL seed` and
    # the reason on the next line; the panic hook does it before the process aborts.
    caught=$(printf '%s\n' "$out" | grep -A1 '^FAIL' | head -2 | tr '\n' ' ' | cut -c1-400 || true)
    [ -n "$caught" ] || caught="$scenario exited without a FAIL line: $(printf '%s\n' "$out" | tail -1 | cut -c1-300)"
    break
  done
  if [ -n "$caught" ]; then
    echo "CAUGHT $name: $caught"
  else
    echo "MISSED $name: no failure in $seeds seeds per scenario"
    status=1
  fi
  git checkout -q -- core
done
exit $status
