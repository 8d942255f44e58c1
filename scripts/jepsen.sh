#!/usr/bin/env bash
# Runs odradek-jepsen (docs/jepsen.md): builds the broker and the harness, installs what a run
# needs (Debian's faketime for clock faults if missing; confluent-kafka into target/venv), then
# starts one run with the flags given, e.g.
#
#   scripts/jepsen.sh --duration 600 --seed 7            # every fault kind, 3 nodes
#   scripts/jepsen.sh --faults power --no-fsync          # what fsync off loses
#
# Needs root (network namespaces, FUSE and tmpfs mounts). The run's directory (history,
# nemesis log, broker logs, report.md, plots) is printed at the start and the end; the exit
# status is 0 for a valid history, 1 for an unexpected anomaly, 2 if the run itself failed.
# Environment: ODRADEK_BIN to test another broker build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

cargo build --release --bin odradek
cargo build --release -p odradek-jepsen

if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
  echo "== installing libfaketime (Debian package faketime)"
  if [ "$(id -u)" -eq 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
  "${apt_get[@]}" install -y faketime >/dev/null 2>&1 \
    || { "${apt_get[@]}" update >/dev/null && "${apt_get[@]}" install -y faketime >/dev/null; }
fi

venv=target/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/integration/requirements.txt

exec "$CARGO_TARGET_DIR/release/odradek-jepsen" run \
  --odradek "${ODRADEK_BIN:-$CARGO_TARGET_DIR/release/odradek}" --python "$venv/bin/python" "$@"
