"""Run by test_idempotence.py with kafka-python 3 (its own venv): a producer with every
setting at its default, which for kafka-python 3 means idempotent. Prints one JSON line:
{"idempotent": bool, "acks": [[partition, offset], ...]} in send order."""

import json
import sys

import kafka

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
producer = kafka.KafkaProducer(bootstrap_servers=bootstrap)
try:
    futures = [producer.send(topic, value=b"kp-%05d" % i, partition=i % 2) for i in range(count)]
    producer.flush(timeout=60)
    acks = [[m.partition, m.offset] for m in (f.get(timeout=30) for f in futures)]
finally:
    producer.close(timeout=10)
print(json.dumps({"idempotent": bool(producer.config["enable_idempotence"]), "acks": acks}))
