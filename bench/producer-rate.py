#!/usr/bin/env python3
"""The acks=all rate one confluent-kafka (librdkafka) producer gets from a broker or cluster:
1 KiB values, 16 partitions, linger 1 ms, batches up to 128 KiB, produced as fast as the
client's queue takes them; counted from delivery reports over the measured seconds, after a
2-second warm-up. The client is Python, so it is the bottleneck against a broker that keeps
up: what this compares is how much of a client's rate a topology leaves it (issue 15's
cluster/single ratio is stated for this client). Prints one line, `<rate> msgs/s`.

    target/venv/bin/python bench/producer-rate.py BOOTSTRAP REPLICATION_FACTOR SECONDS
"""
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

WARMUP_SECONDS = 2


def main():
    bootstrap, replication_factor, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    topic = f"producer-rate-{time.time_ns()}"
    min_isr = "2" if replication_factor >= 3 else "1"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 16, replication_factor, config={"min.insync.replicas": min_isr})])[topic].result()
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 1,
        "batch.size": 131072,
        "queue.buffering.max.messages": 1_000_000,
    })
    # Leaders may still be settling right after creation: produce until every partition has
    # taken a record, so the warm-up does not start against an unknown topic.
    acked = [0]
    failed = [0]

    def delivered(err, _msg):
        if err is None:
            acked[0] += 1
        else:
            failed[0] += 1

    value = b"x" * 1024

    def produce_until(deadline):
        while time.monotonic() < deadline:
            try:
                producer.produce(topic, value, on_delivery=delivered)
            except BufferError:
                producer.poll(0.001)
            producer.poll(0)

    produce_until(time.monotonic() + WARMUP_SECONDS)
    start, start_acked = time.monotonic(), acked[0]
    produce_until(start + seconds)
    rate = (acked[0] - start_acked) / (time.monotonic() - start)
    left = producer.flush(60)
    if failed[0] or left:
        sys.exit(f"{failed[0]} records failed and {left} were not delivered: the rate does not count")
    print(f"{rate:.0f} msgs/s")


if __name__ == "__main__":
    main()
