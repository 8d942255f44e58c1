"""CreatePartitions and manual replica assignments through both clients' admin APIs: a topic
grows while a producer writes, the producer spreads over the new partitions after its metadata
refresh, and every acknowledged record is read back; a manual assignment places replicas where
asked on a 3-node cluster."""

import time

import confluent_kafka
import kafka.admin
import kafka.errors
import pytest
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

INVALID_PARTITIONS = 37
INVALID_REPLICA_ASSIGNMENT = 39
UNKNOWN_TOPIC_OR_PARTITION = 3


def partitions_of(a, topic):
    return a.list_topics(topic, timeout=30).topics[topic].partitions


def test_added_partitions_are_used_by_a_live_producer_and_nothing_is_lost(broker_factory):
    broker = broker_factory()
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic("growing", 2, 1)])["growing"].result(timeout=60)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5, "topic.metadata.refresh.interval.ms": 500}
    )
    acked = []

    def on_delivery(err, msg):
        assert err is None, err
        acked.append((msg.partition(), msg.value()))

    for i in range(200):
        producer.produce("growing", key=str(i).encode(), value=f"before {i}".encode(), on_delivery=on_delivery)
    producer.flush(30)

    a.create_partitions([NewPartitions("growing", 6)])["growing"].result(timeout=60)
    assert len(partitions_of(a, "growing")) == 6
    time.sleep(1.5)  # the producer's metadata refresh
    producer.poll(0)
    for i in range(600):
        producer.produce("growing", key=f"after-{i}".encode(), value=f"after {i}".encode(), on_delivery=on_delivery)
    assert producer.flush(30) == 0
    used = {p for p, v in acked if v.startswith(b"after")}
    assert used & {2, 3, 4, 5}, f"the producer never wrote to a new partition: {sorted(used)}"

    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "grown", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe(["growing"])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < len(acked) and time.monotonic() < deadline:
        m = consumer.poll(1)
        if m is not None and m.error() is None:
            got.append((m.partition(), m.value()))
    consumer.close()
    assert sorted(got) == sorted(acked)

    # Fewer or as many partitions, or an unknown topic: Kafka's errors.
    for count, code in [(3, INVALID_PARTITIONS), (6, INVALID_PARTITIONS)]:
        with pytest.raises(confluent_kafka.KafkaException) as refused:
            a.create_partitions([NewPartitions("growing", count)])["growing"].result(timeout=60)
        assert refused.value.args[0].code() == code
    with pytest.raises(confluent_kafka.KafkaException) as refused:
        a.create_partitions([NewPartitions("nope", 3)])["nope"].result(timeout=60)
    assert refused.value.args[0].code() == UNKNOWN_TOPIC_OR_PARTITION
    # validate_only changes nothing.
    a.create_partitions([NewPartitions("growing", 9)], validate_only=True)["growing"].result(timeout=60)
    assert len(partitions_of(a, "growing")) == 6


def test_kafka_python_create_partitions(broker_factory):
    broker = broker_factory()
    client = kafka.admin.KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        client.create_topics([kafka.admin.NewTopic("kp", 1, 1)])
        client.create_partitions({"kp": kafka.admin.NewPartitions(total_count=4)})
        assert len(client.describe_topics(["kp"])[0]["partitions"]) == 4
        with pytest.raises(kafka.errors.InvalidPartitionsError):
            client.create_partitions({"kp": kafka.admin.NewPartitions(total_count=2)})
    finally:
        client.close()


def test_manual_replica_assignments_on_a_cluster(cluster_factory):
    cluster = cluster_factory()
    a = AdminClient({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4"})
    a.create_topics([NewTopic("placed", num_partitions=3, replica_assignment=[[1, 2], [2, 3], [3, 1]])])["placed"].result(timeout=60)
    a.create_partitions([NewPartitions("placed", 5, replica_assignment=[[3, 2], [1, 3]])])["placed"].result(timeout=60)
    deadline = time.monotonic() + 30
    while True:
        parts = partitions_of(a, "placed")
        replicas = {p: list(m.replicas) for p, m in parts.items()}
        leaders = {p: m.leader for p, m in parts.items()}
        if len(parts) == 5 and all(leaders[p] == replicas[p][0] for p in parts) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert replicas == {0: [1, 2], 1: [2, 3], 2: [3, 1], 3: [3, 2], 4: [1, 3]}
    assert leaders == {p: r[0] for p, r in replicas.items()}

    producer = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "broker.address.family": "v4"})
    for p in range(5):
        producer.produce("placed", value=f"to {p}".encode(), partition=p)
    assert producer.flush(30) == 0

    for bad, why in [([[1, 1], [2, 3]], "duplicate"), ([[1, 9], [2, 3]], "unregistered broker"), ([[1], [2, 3]], "uneven")]:
        with pytest.raises(confluent_kafka.KafkaException) as refused:
            a.create_topics([NewTopic(f"bad-{why.replace(' ', '-')}", num_partitions=len(bad), replica_assignment=bad)])[f"bad-{why.replace(' ', '-')}"].result(timeout=60)
        assert refused.value.args[0].code() == INVALID_REPLICA_ASSIGNMENT, why
    with pytest.raises(confluent_kafka.KafkaException) as refused:
        a.create_partitions([NewPartitions("placed", 7, replica_assignment=[[1, 2]])])["placed"].result(timeout=60)
    assert refused.value.args[0].code() == INVALID_REPLICA_ASSIGNMENT
