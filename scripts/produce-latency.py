#!/usr/bin/env python3
"""Sequential acks=all produce latency (one message in flight) next to this disk's raw
append + fdatasync latency, measured in the same run.

    target/venv/bin/python scripts/produce-latency.py 127.0.0.1:9092 500
"""
import os
import statistics
import sys
import tempfile
import time

from confluent_kafka import Producer


def summary(name, samples_us):
    samples_us = sorted(samples_us[20:])  # drop connection set-up and warm-up
    p99 = samples_us[int(len(samples_us) * 0.99)]
    print(f"{name}: n={len(samples_us)} p50={statistics.median(samples_us):.0f}us p99={p99:.0f}us")


def produce_latencies(bootstrap, n):
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "acks": "all", "linger.ms": 0})
    out = []
    for _ in range(n):
        start = time.perf_counter()
        producer.produce("latency", value=b"x" * 100)
        producer.flush()
        out.append((time.perf_counter() - start) * 1e6)
    return out


def fdatasync_latencies(n, directory):
    with tempfile.NamedTemporaryFile(dir=directory) as f:
        out = []
        for _ in range(n):
            start = time.perf_counter()
            os.write(f.fileno(), b"x" * 170)  # about one 100-byte record batch
            os.fdatasync(f.fileno())
            out.append((time.perf_counter() - start) * 1e6)
        return out


if __name__ == "__main__":
    bootstrap, n = sys.argv[1], int(sys.argv[2])
    data_dir = sys.argv[3] if len(sys.argv) > 3 else "."
    summary("raw append+fdatasync", fdatasync_latencies(n, data_dir))
    summary("odradek acks=all produce", produce_latencies(bootstrap, n))
