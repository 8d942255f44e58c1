"""Log compaction (cleanup.policy=compact) with real clients: after the cleaner has run,
a consumer reading from the beginning sees the latest value of every key, at the offset it
was acknowledged at, and nothing is lost across kill -9. __consumer_offsets is compacted
the same way, and committed offsets survive it."""

import time
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from kafka_clients import ConfluentClient, KafkaPythonClient, Message

CLEANER_ARGS = ("--log-cleaner-backoff-ms", "200")
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": "16384",
    "min.cleanable.dirty.ratio": "0.01",
}
KEYS = 150
ROUNDS = 25
DELETED_KEYS = range(0, KEYS, 10)


def updates(round_, tombstones=False):
    """One value for every key; in the tombstone round, every tenth key is deleted."""
    out = []
    for k in range(KEYS):
        value = None if tombstones and k in DELETED_KEYS else f"value-{k}-round-{round_}".encode() * 3
        out.append(Message(f"key-{k:04d}".encode(), value, (), int(time.time() * 1000)))
    return out


def produce_rounds(client, topic):
    """Produces ROUNDS rounds plus a tombstone round; -> (latest value per (partition, key),
    {(partition, offset): message} of every acknowledged write)."""
    latest, acked = {}, {}
    for r in range(ROUNDS + 1):
        messages = updates(r, tombstones=(r == ROUNDS))
        for m, (partition, offset) in zip(messages, client.produce(topic, messages)):
            latest[(partition, m.key)] = m.value
            acked[(partition, offset)] = m
    return latest, acked


def read_all(bootstrap, topic, end_offsets):
    return ConfluentClient(bootstrap).consume(topic, end_offsets, timeout=60)


def check_compacted(records_by_partition, latest, acked):
    """The properties a compacted log must have, whatever the cleaner managed to remove."""
    seen = {}
    for partition, records in records_by_partition.items():
        offsets = [r.offset for r in records]
        assert offsets == sorted(set(offsets)), f"partition {partition}: offsets not strictly increasing"
        for r in records:
            sent = acked.get((partition, r.offset))
            assert sent is not None, f"partition {partition} offset {r.offset} was never acknowledged"
            assert (r.message.key, r.message.value) == (sent.key, sent.value), f"wrong record at {partition}/{r.offset}"
            seen[(partition, r.message.key)] = r.message.value
    assert seen == latest, "the last record of every key must be its latest acknowledged value"


def record_count(records_by_partition):
    return sum(len(r) for r in records_by_partition.values())


def wait_for_compaction(bootstrap, topic, end_offsets, produced, timeout=60):
    """Reads from the beginning until the cleaner has removed most superseded records."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_all(bootstrap, topic, end_offsets)
        if record_count(records) < produced // 3:
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"still {record_count(records)} of {produced} records after {timeout}s")
        time.sleep(0.5)


def test_compacted_topic_keeps_the_latest_value_of_every_key_across_kill9(broker_factory):
    broker = broker_factory(*CLEANER_ARGS)
    client = ConfluentClient(broker.bootstrap)
    client.create_topic("changelog", 2, TOPIC_CONFIG)
    latest, acked = produce_rounds(client, "changelog")
    end_offsets = client.end_offsets("changelog", [0, 1])
    produced = sum(end_offsets.values())
    assert produced == KEYS * (ROUNDS + 1)

    compacted = wait_for_compaction(broker.bootstrap, "changelog", end_offsets, produced)
    check_compacted(compacted, latest, acked)
    tombstones = sum(1 for rs in compacted.values() for r in rs if r.message.value is None)
    assert tombstones == len(DELETED_KEYS), "tombstones stay for delete.retention.ms (a day by default)"

    broker.kill9()
    broker.start()
    assert client.end_offsets("changelog", [0, 1]) == end_offsets, "compaction never moves the log end"
    after = read_all(broker.bootstrap, "changelog", end_offsets)
    check_compacted(after, latest, acked)
    assert record_count(after) == record_count(compacted)

    # The log goes on: new writes land after the old end and are compacted in turn.
    more_latest, more_acked = produce_rounds(client, "changelog")
    latest.update(more_latest)
    acked.update(more_acked)
    new_end = client.end_offsets("changelog", [0, 1])
    assert all(new_end[p] > end_offsets[p] for p in end_offsets)
    check_compacted(
        wait_for_compaction(broker.bootstrap, "changelog", new_end, sum(new_end.values())), latest, acked
    )
    # kafka-python reads the compacted log the same way (offset gaps inside and between batches).
    check_compacted(KafkaPythonClient(broker.bootstrap).consume("changelog", new_end, timeout=60), latest, acked)


def test_kill9_while_the_cleaner_runs_loses_no_latest_value(broker_factory):
    """Cleaning passes rewrite and swap segment files; a crash at any moment must leave either
    the old segments or the cleaned one. Kill the broker at varying moments after writes that
    make every segment dirty, and check the properties after each restart."""
    broker = broker_factory("--log-cleaner-backoff-ms", "20")
    client = ConfluentClient(broker.bootstrap)
    client.create_topic("crashy", 1, TOPIC_CONFIG)
    latest, acked = {}, {}
    for attempt in range(6):
        round_latest, round_acked = produce_rounds(client, "crashy")
        latest.update(round_latest)
        acked.update(round_acked)
        time.sleep(0.05 * attempt)
        broker.kill9()
        broker.start()
        end_offsets = client.end_offsets("crashy", [0])
        assert end_offsets[0] == (attempt + 1) * KEYS * (ROUNDS + 1)
        check_compacted(read_all(broker.bootstrap, "crashy", end_offsets), latest, acked)
    assert "cleaned log" in broker.log.read_text(errors="replace"), "the cleaner ran during the test"


def test_a_record_without_a_key_is_refused_on_a_compacted_topic(broker):
    client = ConfluentClient(broker.bootstrap)
    client.create_topic("keyed-only", 1, {"cleanup.policy": "compact"})
    producer = client.producer()
    errors = []
    producer.produce("keyed-only", value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(30)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == confluent_kafka.KafkaError.INVALID_RECORD, errors[0]
    # Keyed records are fine, and the refused one left nothing behind.
    client.produce("keyed-only", [Message(b"k", b"v", (), int(time.time() * 1000))])
    assert client.end_offsets("keyed-only", [0]) == {0: 1}


def test_invalid_cleanup_policy_is_refused(broker):
    with pytest.raises(Exception, match="INVALID_CONFIG|cleanup.policy"):
        ConfluentClient(broker.bootstrap).create_topic("bad-policy", 1, {"cleanup.policy": "shred"})


def partition_bytes(data_dir: Path, name: str) -> int:
    total = 0
    for f in (data_dir / name).glob("*.log"):
        try:
            total += f.stat().st_size
        except FileNotFoundError:
            # The cleaner swapped the segment out between the listing and the stat.
            pass
    return total


def test_consumer_offsets_is_compacted_and_commits_survive_it(broker_factory):
    broker = broker_factory(
        *CLEANER_ARGS,
        "--offsets-topic-num-partitions", "1",
        "--offsets-topic-segment-bytes", "8192",
        "--group-initial-rebalance-delay-ms", "0",
    )
    client = ConfluentClient(broker.bootstrap)
    client.create_topic("events", 4)

    admin = AdminClient(client.config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets")
    described = admin.describe_configs([resource])[resource].result(timeout=30)
    assert described["cleanup.policy"].value == "compact"

    consumer = confluent_kafka.Consumer(client.config(**{"group.id": "committer", "enable.auto.commit": False}))
    consumer.assign([confluent_kafka.TopicPartition("events", p) for p in range(4)])
    commits = 600
    for i in range(1, commits + 1):
        offsets = [confluent_kafka.TopicPartition("events", p, i * 10 + p) for p in range(4)]
        consumer.commit(offsets=offsets, asynchronous=False)
    consumer.close()

    # 2,400 offset records of ~60 bytes each would be ~150 KB uncompacted; the cleaner keeps
    # four keys' worth plus the active segment.
    deadline = time.monotonic() + 60
    while partition_bytes(broker.data_dir, "__consumer_offsets-0") > 3 * 8192:
        assert time.monotonic() < deadline, f"__consumer_offsets still {partition_bytes(broker.data_dir, '__consumer_offsets-0')} bytes"
        time.sleep(0.5)

    broker.kill9()
    broker.start()
    consumer = confluent_kafka.Consumer(client.config(**{"group.id": "committer", "enable.auto.commit": False}))
    try:
        committed = consumer.committed([confluent_kafka.TopicPartition("events", p) for p in range(4)], timeout=30)
    finally:
        consumer.close()
    assert {tp.partition: tp.offset for tp in committed} == {p: commits * 10 + p for p in range(4)}
