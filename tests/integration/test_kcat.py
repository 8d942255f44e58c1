import json
import shutil
import subprocess

import pytest

from kafka_clients import ConfluentClient

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not on PATH (Debian package: kcat)")

PARTITIONS = 3


def kcat(broker, *args, stdin=None):
    result = subprocess.run(
        [KCAT, "-b", broker.bootstrap, "-X", "broker.address.family=v4", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, f"kcat {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}"
    return result.stdout


def test_kcat_lists_broker_and_topic(broker):
    ConfluentClient(broker.bootstrap).create_topic("kcat-listed", PARTITIONS)
    metadata = json.loads(kcat(broker, "-L", "-J"))
    assert metadata["brokers"] == [{"id": 0, "name": broker.bootstrap}]
    topics = {t["topic"]: t for t in metadata["topics"]}
    assert "kcat-listed" in topics, f"topic missing from {sorted(topics)}"
    topic = topics["kcat-listed"]
    assert "error" not in topic, topic
    assert sorted(p["partition"] for p in topic["partitions"]) == list(range(PARTITIONS))
    assert all(p["leader"] == 0 and "error" not in p for p in topic["partitions"]), topic["partitions"]


def test_kcat_produce_then_consume_from_beginning(broker):
    topic = "kcat-lines"
    ConfluentClient(broker.bootstrap).create_topic(topic, PARTITIONS)
    lines = [f"key-{i}|line {i}, ünïcode and\ttabs {'x' * (i % 50)}" for i in range(1_000)]
    stdin = "".join(line + "\n" for line in lines).encode()
    # One partition, so the log order is the line order.
    kcat(broker, "-P", "-t", topic, "-p", "0", "-K", "|", stdin=stdin)
    # All partitions, so kcat must also see the empty ones end.
    consumed = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-K", "|")
    assert consumed.decode().splitlines() == lines
