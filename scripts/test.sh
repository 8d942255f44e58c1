#!/usr/bin/env bash
# Runs every odradek test: core and broker unit tests, then the integration suite against the
# real broker binary with real Kafka clients (confluent-kafka/librdkafka, kafka-python, kcat).
# Also runs seeded simulator runs (sim/, docs/testing.md) and each fuzz target briefly
# (scripts/fuzz.sh; ODRADEK_FUZZ_SECONDS per target, 20 by default), and ends with a Jepsen-style
# smoke run: a 3-node cluster in network namespaces under one fault of each kind
# (scripts/jepsen.sh, docs/jepsen.md; needs root).
# Installs what it needs: Python packages into target/venv, Debian's kcat if it is missing,
# Debian's g++ (to build libFuzzer) if there is no C++ compiler, Debian's faketime (clock faults).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

# --workspace includes sim/, which turns on core's invariants for every package's tests.
echo "== unit tests (release profile, core's invariants on)"
cargo nextest run --release --workspace
# The vendored kafka-protocol is no workspace member; its tests cover the bounds odradek added.
cargo nextest run --release -p kafka-protocol --lib

echo "== simulator: a few dozen seeds per scenario under --cfg madsim (own target dir)"
sim_target="$CARGO_TARGET_DIR/sim-madsim"
RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR="$sim_target" cargo build --release -p odradek-sim
sim_bin="$sim_target/release/odradek-sim"
for scenario in swarm kip101 double-crash fast-leader-changes zombie-leader power-loss isr-churn \
    last-replica-standing isr-expansion-race acks-matrix power-loss-no-fsync stale-messages fsync-failure idempotent-failover \
    transactions zombie-transactions late-transactional-writes acls; do
  "$sim_bin" swarm --seeds "${ODRADEK_SIM_SEEDS:-100}" --scenario "$scenario"
done
echo "== simulator: madsim determinism check (each seed run twice, every trace checkpoint compared)"
MADSIM_TEST_CHECK_DETERMINISM=1 "$sim_bin" swarm --seeds 36 --all-scenarios

echo "== fuzzing: each libFuzzer target briefly (scripts/fuzz.sh, own target dir)"
scripts/fuzz.sh all "${ODRADEK_FUZZ_SECONDS:-20}"

# Without sim/ selected, core and the crates above it are rebuilt once more: the broker the
# integration tests run is the one that ships, without the invariants.
echo "== broker and benchmark binaries"
cargo build --release --bin odradek --bin odradek-bench
export ODRADEK_BIN="$CARGO_TARGET_DIR/release/odradek"
export ODRADEK_BENCH_BIN="$CARGO_TARGET_DIR/release/odradek-bench"

if ! command -v kcat >/dev/null; then
  echo "== installing kcat (Debian package)"
  if [ "$(id -u)" -eq 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
  "${apt_get[@]}" install -y kcat >/dev/null 2>&1 \
    || { "${apt_get[@]}" update >/dev/null && "${apt_get[@]}" install -y kcat >/dev/null; }
fi

echo "== python venv"
venv=target/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/integration/requirements.txt
venv3=target/venv-kafka-python3
[ -x "$venv3/bin/python" ] || python3 -m venv "$venv3"
"$venv3/bin/pip" install --quiet --disable-pip-version-check -r tests/integration/requirements-kafka-python3.txt
export ODRADEK_KAFKA_PYTHON3="$PWD/$venv3/bin/python"
venvqx=target/venv-quixstreams
[ -x "$venvqx/bin/python" ] || python3 -m venv "$venvqx"
"$venvqx/bin/pip" install --quiet --disable-pip-version-check -r tests/integration/requirements-quixstreams.txt
export ODRADEK_QUIXSTREAMS_PYTHON="$PWD/$venvqx/bin/python"

echo "== integration tests"
"$venv/bin/python" -m pytest tests/integration "$@"

echo "== jepsen smoke run (scripts/jepsen.sh: 3 nodes, every fault kind once, about 3 minutes)"
scripts/jepsen.sh --duration 110 --seed "${ODRADEK_JEPSEN_SEED:-1}" --out target/jepsen/smoke
