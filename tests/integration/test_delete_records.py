"""DeleteRecords (KIP-107) against real brokers: confluent-kafka's and kafka-python's
`delete_records` move a partition's log start inside its log, consumers from the beginning start
there, the low watermark holds across a restart, an offset past the high watermark is refused,
and on a 3-node cluster the followers follow the start, so a new leader keeps it."""

import signal

import confluent_kafka
import kafka
import kafka.errors
import pytest
from confluent_kafka.admin import AdminClient

from kafka_clients import ConfluentClient, Message
from test_replication import FAST, create_topic, partition_state, wait_for

TIMEOUT = 60
RECORDS = 100
DELETE_BEFORE = 40


def produce(bootstrap, topic, partition):
    """RECORDS records to one partition; -> their offsets."""
    messages = [Message(b"k%d" % i, b"v%d" % i, (), 1_700_000_000_000 + i) for i in range(RECORDS)]
    acks = ConfluentClient(bootstrap).produce(topic, messages, partition=partition)
    return [offset for _, offset in acks]


def delete_with_confluent(bootstrap, topic, partition, offset):
    """-> the low watermark the broker answered."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    futures = admin.delete_records([confluent_kafka.TopicPartition(topic, partition, offset)], operation_timeout=30)
    [future] = futures.values()
    return future.result(timeout=TIMEOUT).low_watermark


def delete_with_kafka_python(bootstrap, topic, partition, offset, to_node=None):
    """-> the low watermark the broker answered (`to_node`: sent there, leader or not)."""
    admin = kafka.KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        answered = admin.delete_records(
            {kafka.TopicPartition(topic, partition): offset}, timeout_ms=30_000, partition_leader_id=to_node
        )
    finally:
        admin.close()
    [result] = answered.values()
    return result["low_watermark"]


def watermarks(bootstrap, topic, partition):
    consumer = ConfluentClient(bootstrap).consumer()
    try:
        return consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, partition), timeout=TIMEOUT)
    finally:
        consumer.close()


def offsets_from_the_beginning(bootstrap, topic, partition):
    records = ConfluentClient(bootstrap).consume(topic, {partition: RECORDS})
    return [r.offset for r in records[partition]]


def assert_deleted_before(bootstrap, topic, partition, start):
    assert watermarks(bootstrap, topic, partition) == (start, RECORDS)
    assert offsets_from_the_beginning(bootstrap, topic, partition) == list(range(start, RECORDS))


def test_delete_records_with_both_clients_and_across_a_restart(broker):
    b = broker.bootstrap
    ConfluentClient(b).create_topic("trim", 2)
    for partition in (0, 1):
        assert produce(b, "trim", partition) == list(range(RECORDS))

    assert delete_with_confluent(b, "trim", 0, DELETE_BEFORE) == DELETE_BEFORE
    assert delete_with_kafka_python(b, "trim", 1, DELETE_BEFORE) == DELETE_BEFORE
    for partition in (0, 1):
        assert_deleted_before(b, "trim", partition, DELETE_BEFORE)

    # An offset below the start moves nothing and answers the start.
    assert delete_with_confluent(b, "trim", 0, 10) == DELETE_BEFORE
    assert delete_with_kafka_python(b, "trim", 1, 10) == DELETE_BEFORE

    # Past the high watermark: OFFSET_OUT_OF_RANGE, and the start stays.
    with pytest.raises(confluent_kafka.KafkaException) as refused:
        delete_with_confluent(b, "trim", 0, RECORDS + 1)
    assert refused.value.args[0].code() == confluent_kafka.KafkaError.OFFSET_OUT_OF_RANGE
    with pytest.raises(kafka.errors.OffsetOutOfRangeError):
        delete_with_kafka_python(b, "trim", 1, RECORDS + 1)

    # The start is recorded before the answer: a restart keeps the deleted records deleted,
    # though the segment that held them is still there.
    broker.restart()
    for partition in (0, 1):
        assert_deleted_before(b, "trim", partition, DELETE_BEFORE)


def test_delete_records_to_the_high_watermark_and_of_unknown_partitions(broker):
    b = broker.bootstrap
    ConfluentClient(b).create_topic("empty-it", 1)
    produce(b, "empty-it", 0)
    assert delete_with_confluent(b, "empty-it", 0, confluent_kafka.OFFSET_END) == RECORDS
    assert watermarks(b, "empty-it", 0) == (RECORDS, RECORDS)
    # librdkafka refuses a partition without a leader itself: ask the broker directly.
    [node] = AdminClient({"bootstrap.servers": b}).list_topics(timeout=TIMEOUT).brokers
    with pytest.raises(kafka.errors.UnknownTopicOrPartitionError):
        delete_with_kafka_python(b, "empty-it", 5, 1, to_node=node)


def test_followers_follow_the_log_start_and_a_new_leader_keeps_it(cluster_factory):
    cluster = cluster_factory(extra_args=FAST)
    create_topic(cluster, "trim-rf3", 3, 2)
    produce(cluster.bootstrap, "trim-rf3", 0)
    leader, replicas, isr, _ = wait_for("a full ISR", lambda: (s := partition_state(cluster, "trim-rf3")) and len(s[2]) == 3 and s)
    assert sorted(replicas) == [1, 2, 3]

    assert delete_with_confluent(cluster.bootstrap, "trim-rf3", 0, DELETE_BEFORE) == DELETE_BEFORE

    # Every replica records the start it took from its leader's fetch answers.
    def recorded_starts():
        starts = {}
        for node, broker in cluster.nodes.items():
            checkpoint = broker.data_dir / "trim-rf3-0" / "log-start-offset-checkpoint"
            starts[node] = int(checkpoint.read_text()) if checkpoint.exists() else None
        return starts

    wait_for("every replica's start at 40", lambda: set(recorded_starts().values()) == {DELETE_BEFORE} or None)

    # ListOffsets earliest is answered by the leader alone: a new one must answer the same.
    cluster.nodes[leader].kill9()
    wait_for("a new leader", lambda: (s := partition_state(cluster, "trim-rf3")) and s[0] not in (-1, leader))
    low, high = watermarks(cluster.bootstrap, "trim-rf3", 0)
    assert low >= DELETE_BEFORE and high == RECORDS
    assert offsets_from_the_beginning(cluster.bootstrap, "trim-rf3", 0) == list(range(DELETE_BEFORE, RECORDS))


def test_delete_records_waits_for_a_live_follower_and_not_for_a_fenced_one(cluster_factory):
    """Kafka's DelayedDeleteRecords: the answer waits until every replica whose broker is up has
    taken the new start. A follower that is up but stopped holds it until the request's
    timeout (REQUEST_TIMED_OUT); once the controller has fenced it, it no longer counts."""
    cluster = cluster_factory(extra_args=FAST)
    create_topic(cluster, "trim-wait", 3, 2)
    produce(cluster.bootstrap, "trim-wait", 0)
    leader, replicas, _, _ = wait_for("a full ISR", lambda: (s := partition_state(cluster, "trim-wait")) and len(s[2]) == 3 and s)
    follower = next(n for n in replicas if n != leader)
    stopped = cluster.nodes[follower].proc
    stopped.send_signal(signal.SIGSTOP)
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4"})
        futures = admin.delete_records([confluent_kafka.TopicPartition("trim-wait", 0, 10)], operation_timeout=1, request_timeout=20)
        [future] = futures.values()
        with pytest.raises(confluent_kafka.KafkaException) as refused:
            future.result(timeout=TIMEOUT)
        assert refused.value.args[0].code() == confluent_kafka.KafkaError.REQUEST_TIMED_OUT, refused.value
        # The leader moved its start all the same, as Kafka's does.
        assert watermarks(cluster.bootstrap, "trim-wait", 0) == (10, RECORDS)

        wait_for("the stopped follower fenced and out of the ISR", lambda: follower not in partition_state(cluster, "trim-wait")[2] or None)
        assert delete_with_confluent(cluster.bootstrap, "trim-wait", 0, 20) == 20
    finally:
        stopped.send_signal(signal.SIGCONT)

    def recorded_start(node):
        checkpoint = cluster.nodes[node].data_dir / "trim-wait-0" / "log-start-offset-checkpoint"
        return int(checkpoint.read_text()) if checkpoint.exists() else None

    wait_for("the resumed follower takes the start", lambda: recorded_start(follower) == 20 or None)
