"""A data directory of the standalone broker from before every node ran the metadata quorum
(its topics in `topics.json`) is migrated on first start: topics become metadata records, the
partition logs and committed group offsets are kept, and nothing is migrated twice."""

import shutil
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from conftest import Broker
from kafka_clients import ConfluentClient
from log_checks import make_message

FIXTURE = Path(__file__).parent / "fixtures" / "legacy-standalone"
# The fixture was written with 3 partitions of __consumer_offsets (see its README).
ARGS = ("--offsets-topic-num-partitions", "3")


def read_all(bootstrap, partitions):
    """Every record of `partitions` ({(topic, partition): end}) as (offset, key, value)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "migration-reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(t, p, 0) for (t, p) in partitions])
    got = {tp: [] for tp in partitions}
    for _ in range(300):
        if all(len(got[tp]) >= end for tp, end in partitions.items()):
            break
        msg = consumer.poll(0.1)
        if msg is not None and not msg.error():
            got[(msg.topic(), msg.partition())].append((msg.offset(), msg.key(), msg.value()))
    consumer.close()
    return got


def committed(bootstrap, group, tp):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return consumer.committed([TopicPartition(*tp)], timeout=30)[0].offset
    finally:
        consumer.close()


def check_migrated(broker):
    got = read_all(broker.bootstrap, {("legacy-events", 0): 10, ("legacy-compacted", 0): 5, ("legacy-compacted", 1): 5})
    assert got[("legacy-events", 0)][:10] == [(i, b"k%d" % i, b"v%d" % i) for i in range(10)]
    for p in (0, 1):
        assert [v for (_, _, v) in got[("legacy-compacted", p)]] == [b"c%d" % i for i in range(10) if i % 2 == p]
    assert committed(broker.bootstrap, "legacy-group", ("legacy-events", 0)) == 7
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    [(_, future)] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "legacy-compacted")]).items()
    assert future.result(timeout=30)["cleanup.policy"].value == "compact"


def test_a_standalone_data_dir_is_migrated_into_the_metadata_log(tmp_path):
    broker = Broker(tmp_path, ARGS)
    shutil.copytree(FIXTURE, broker.data_dir, ignore=shutil.ignore_patterns("README.md"))
    try:
        broker.start()
        check_migrated(broker)
        assert not (broker.data_dir / "topics.json").exists()
        assert (broker.data_dir / "topics.json.migrated").exists()
        assert (broker.data_dir / "__cluster_metadata").is_dir()

        # A restart reads the metadata log, and the log continues where it was.
        broker.restart()
        check_migrated(broker)
        acked = ConfluentClient(broker.bootstrap).produce("legacy-events", [make_message(10, int(time.time() * 1000))], partition=0)
        assert acked == [(0, 10)]

        # A crash before the table was retired leaves it in place: the next start finds every
        # topic already in the metadata log and creates nothing twice.
        broker.stop()
        shutil.copy(FIXTURE / "topics.json", broker.data_dir / "topics.json")
        broker.start()
        got = read_all(broker.bootstrap, {("legacy-events", 0): 11})
        assert [o for (o, _, _) in got[("legacy-events", 0)]] == list(range(11))
        assert not (broker.data_dir / "topics.json").exists()
        check_migrated(broker)
    finally:
        broker.stop()
        assert not broker.died_unexpectedly()
