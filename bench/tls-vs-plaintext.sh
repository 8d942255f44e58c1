#!/usr/bin/env bash
# What TLS costs: one workload against a fresh broker over its PLAINTEXT listener, then against
# a fresh broker over its SSL listener (same broker settings, a P-256 certificate made here with
# openssl), ROUNDS times, with the SSL/PLAINTEXT rate ratio of each round.
#   bench/tls-vs-plaintext.sh OUT_DIR ROUNDS [workload.json]
#     (default: the 1 KiB acks=all overload); extra odradek-bench flags in BENCH_FLAGS.
# Binaries come from $CARGO_TARGET_DIR/release. Ports 19650 (PLAINTEXT) and 19651 (SSL).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUT_DIR}
rounds=${2:?ROUNDS}
workload=${3:-bench/workloads/1-topic-16-partitions-1kb-acks-all-overload.json}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$CARGO_TARGET_DIR/release"
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ ! -f "$out/broker.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=bench-ca \
    -keyout "$out/ca.key" -out "$out/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=broker \
    -keyout "$out/broker.key" -out "$out/broker.csr" 2>/dev/null
  openssl x509 -req -in "$out/broker.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial -days 30 \
    -extfile <(printf "subjectAltName=IP:127.0.0.1") -out "$out/broker.crt" 2>/dev/null
  cat "$out/broker.key" "$out/broker.crt" >"$out/broker.pem"
fi
printf 'listeners=PLAINTEXT://127.0.0.1:19650,SSL://127.0.0.1:19651\nssl.keystore.location=%s\n' \
  "$out/broker.pem" >"$out/broker.properties"
rate() { sed -n 's/^  publish *\([0-9]*\) msgs\/s.*/\1/p' "$1" | head -1; }
pid=
data=
stop() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  [ -n "$data" ] && rm -rf "$data"
  pid=
  data=
}
trap stop EXIT
run() { # protocol port flags...
  local protocol=$1 port=$2
  shift 2
  data=$(mktemp -d "${TMPDIR:-/tmp}/odradek-tls-bench.XXXXXX")
  NO_COLOR=1 "$bin/odradek" serve --config "$out/broker.properties" --data-dir "$data" >"$out/$protocol-$r.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/19650) 2>/dev/null && break; sleep 0.1; done
  "$bin/odradek-bench" run "$workload" --bootstrap "127.0.0.1:$port" --broker-pid "$pid" --no-progress \
    --no-plots --out "$out/$protocol-$r.json" "$@" ${BENCH_FLAGS:-} >"$out/$protocol-$r.txt"
  stop
}
for r in $(seq "$rounds"); do
  run PLAINTEXT 19650
  run SSL 19651 --security-protocol SSL --ssl-ca "$out/ca.pem"
  plain=$(rate "$out/PLAINTEXT-$r.txt")
  tls=$(rate "$out/SSL-$r.txt")
  echo "round $r: PLAINTEXT ${plain:-?} msgs/s, SSL ${tls:-?} msgs/s, SSL/PLAINTEXT $(awk -v t="${tls:-0}" -v p="${plain:-0}" 'BEGIN { if (p > 0) printf "%.2f", t / p; else print "?" }')"
done
