#!/usr/bin/env bash
# Starts a local 3-node odradek cluster on loopback (every node broker + controller) and waits
# until Ctrl-C, then stops the nodes. Clients bootstrap from 127.0.0.1:19092,127.0.0.1:29092,
# 127.0.0.1:39092. Node N listens for clients on N9092 and for the quorum on N9093; its data
# is in $DATA/node-N and its log in $DATA/node-N.log.
#
#   scripts/dev-cluster.sh [extra serve flags...]     e.g. --min-insync-replicas 2
# Environment: ODRADEK_BIN (default: target/release/odradek), DATA (default: ./data-cluster).
set -euo pipefail
BIN=${ODRADEK_BIN:-${CARGO_TARGET_DIR:-target}/release/odradek}
DATA=${DATA:-data-cluster}
VOTERS=1@127.0.0.1:19093,2@127.0.0.1:29093,3@127.0.0.1:39093
mkdir -p "$DATA"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for n in 1 2 3; do
    "$BIN" serve --node-id "$n" --listen "127.0.0.1:${n}9092" --controller-listen "127.0.0.1:${n}9093" \
        --controller-quorum-voters "$VOTERS" --default-replication-factor 3 --data-dir "$DATA/node-$n" \
        --cores 1 "$@" >>"$DATA/node-$n.log" 2>&1 &
    pids+=($!)
    echo "node $n: pid $! clients 127.0.0.1:${n}9092 quorum 127.0.0.1:${n}9093 log $DATA/node-$n.log"
done
echo "bootstrap: 127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092  (Ctrl-C stops the cluster)"
wait
