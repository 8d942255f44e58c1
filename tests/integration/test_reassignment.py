"""Partition reassignment (KIP-455) on a 3-node cluster with `odradek reassign`, the tool in the
shape of kafka-reassign-partitions.sh: a partition moves from broker 1 to broker 3 under a
running idempotent acks=all producer with nothing lost, and broker 1 is decommissioned (its
replicas moved away, then it stops) while the cluster keeps serving."""

import json
import subprocess
import time

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import ODRADEK_BIN
from test_replication import FAST, ContinuousProducer, wait_for


def odradek(cluster, *args, check=True):
    result = subprocess.run(
        [str(ODRADEK_BIN), *args, "--bootstrap-server", cluster.bootstrap.split(",")[1]],
        capture_output=True, text=True, timeout=60,
    )
    if check:
        assert result.returncode == 0, f"odradek {' '.join(args)}: {result.stderr}{result.stdout}"
    return result


def replicas(cluster, topic):
    """{partition: (replicas, leader)} from a broker's Metadata."""
    md = AdminClient({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "log_level": 2}).list_topics(topic, timeout=10)
    return {p: (list(m.replicas), m.leader) for p, m in md.topics[topic].partitions.items()}


def reassign_and_wait(cluster, tmp_path, plan, name):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(plan))
    odradek(cluster, "reassign", "--execute", "--reassignment-json-file", str(path))
    wait_for(f"{name} to complete", lambda: odradek(cluster, "reassign", "--verify", "--reassignment-json-file", str(path), check=False).returncode == 0, timeout=60)
    assert "No partition reassignments found" in odradek(cluster, "reassign", "--list").stdout


def read_all(cluster, topic, expected):
    consumer = confluent_kafka.Consumer({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "group.id": f"check-{topic}",
                                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 2})
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < expected and time.monotonic() < deadline:
        m = consumer.poll(1)
        if m is not None and m.error() is None:
            got.append((m.partition(), m.offset(), m.value()))
    consumer.close()
    return got


def test_a_partition_moves_from_broker_1_to_broker_3_under_load_and_broker_1_is_decommissioned(cluster_factory, tmp_path):
    cluster = cluster_factory(extra_args=FAST + ("--offsets-topic-replication-factor", "2"))
    a = AdminClient({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "log_level": 2})
    a.create_topics([NewTopic("moving", num_partitions=1, replica_assignment=[[1]])])["moving"].result(timeout=60)
    wait_for("moving led by 1", lambda: replicas(cluster, "moving") == {0: ([1], 1)})

    producer = ContinuousProducer(cluster.bootstrap, "moving", idempotent=True).start()
    wait_for("acks before the move", lambda: len(producer.acked) > 200)
    reassign_and_wait(cluster, tmp_path, {"version": 1, "partitions": [{"topic": "moving", "partition": 0, "replicas": [3]}]}, "to-3")
    assert replicas(cluster, "moving") == {0: ([3], 3)}
    before = len(producer.acked)
    wait_for("acks after the move", lambda: len(producer.acked) > before + 200)
    producer.stop()
    assert not producer.failed, producer.failed[:5]
    # Broker 1 dropped its copy.
    wait_for("broker 1's log of moving-0 deleted", lambda: not (cluster.nodes[1].data_dir / "moving-0").exists())

    # Every acknowledged record is on broker 3, once, at the offset it was acknowledged at.
    got = read_all(cluster, "moving", len(producer.acked))
    assert len(got) == len(producer.acked)
    assert {value: offset for _, offset, value in got} == producer.acked
    assert [o for _, o, _ in got] == sorted(o for _, o, _ in got)

    # Decommission broker 1: everything it holds moves to 2 and 3 (kafka-reassign-partitions.sh
    # --generate), then it stops, and the cluster serves on without it.
    topics = tmp_path / "topics.json"
    topics.write_text(json.dumps({"version": 1, "topics": [{"topic": "moving"}, {"topic": "__consumer_offsets"}]}))
    generated = odradek(cluster, "reassign", "--generate", "--topics-to-move-json-file", str(topics), "--broker-list", "2,3").stdout
    proposed = json.loads(generated.split("Proposed partition reassignment configuration\n")[1])
    assert all(1 not in p["replicas"] for p in proposed["partitions"])
    reassign_and_wait(cluster, tmp_path, proposed, "off-1")
    for topic in ["moving", "__consumer_offsets"]:
        assert all(1 not in r for r, _ in replicas(cluster, topic).values()), topic
    cluster.nodes[1].stop()

    producer = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "acks": "all", "log_level": 2})
    for i in range(50):
        producer.produce("moving", value=b"after-%d" % i)
    assert producer.flush(30) == 0
    tail = [v for _, _, v in read_all(cluster, "moving", len(got) + 50)]
    assert tail[-50:] == [b"after-%d" % i for i in range(50)]


def test_cancelling_puts_a_partition_back_and_bad_plans_are_refused(cluster_factory, tmp_path):
    cluster = cluster_factory(extra_args=FAST)
    a = AdminClient({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "log_level": 2})
    a.create_topics([NewTopic("stay", num_partitions=1, replica_assignment=[[2]])])["stay"].result(timeout=60)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "partitions": [{"topic": "stay", "partition": 0, "replicas": [9]}]}))
    refused = odradek(cluster, "reassign", "--execute", "--reassignment-json-file", str(bad), check=False)
    assert refused.returncode == 1 and "INVALID_REPLICA_ASSIGNMENT" in refused.stderr, refused.stderr
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"version": 1, "partitions": [{"topic": "nope", "partition": 0, "replicas": [1]}]}))
    refused = odradek(cluster, "reassign", "--execute", "--reassignment-json-file", str(missing), check=False)
    assert refused.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in refused.stderr, refused.stderr
    nothing = odradek(cluster, "reassign", "--cancel", "--reassignment-json-file", str(bad), check=False)
    assert nothing.returncode == 1 and "NO_REASSIGNMENT_IN_PROGRESS" in nothing.stderr, nothing.stderr


def test_preferred_and_unclean_elections_with_both_clients(cluster_factory):
    from confluent_kafka import TopicPartition
    import kafka.admin
    import kafka.errors
    from confluent_kafka import ElectionType

    cluster = cluster_factory(extra_args=FAST)
    a = AdminClient({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "log_level": 2})
    a.create_topics([NewTopic("pref", num_partitions=1, replica_assignment=[[1, 2]])])["pref"].result(timeout=60)
    wait_for("pref led by 1 with both in sync", lambda: replicas(cluster, "pref") == {0: ([1, 2], 1)})
    pref = TopicPartition("pref", 0)
    # Already led by its preferred replica: nothing to do.
    result = a.elect_leaders(ElectionType.PREFERRED, [pref]).result(timeout=60)
    assert result[pref] is not None and result[pref].code() == confluent_kafka.KafkaError.ELECTION_NOT_NEEDED

    # Broker 1 restarts: broker 2 leads meanwhile, and keeps leading once 1 is back in sync.
    cluster.nodes[1].stop()
    wait_for("2 leads", lambda: replicas(cluster, "pref")[0][1] == 2)
    cluster.nodes[1].start()

    def in_sync():
        md = a.list_topics("pref", timeout=10).topics["pref"].partitions[0]
        return sorted(md.isrs) == [1, 2]

    wait_for("1 back in the ISR", in_sync, timeout=60)
    assert replicas(cluster, "pref")[0][1] == 2
    result = a.elect_leaders(ElectionType.PREFERRED, [pref]).result(timeout=60)
    assert result[pref] is None, result
    wait_for("1 leads again", lambda: replicas(cluster, "pref")[0][1] == 1)

    # kafka-python: an unclean election of a partition whose only replica is down finds no one.
    # The broker stopped is not the active controller, which kafka-python sends the request to.
    controller = a.list_topics(timeout=10).controller_id
    lonely = next(n for n in (3, 2, 1) if n != controller)
    a.create_topics([NewTopic("lonely", num_partitions=1, replica_assignment=[[lonely]])])["lonely"].result(timeout=60)
    cluster.nodes[lonely].stop()
    wait_for("lonely offline", lambda: replicas(cluster, "lonely")[0][1] == -1)
    alive = next(n for n in (1, 2, 3) if n != lonely)
    client = kafka.admin.KafkaAdminClient(bootstrap_servers=cluster.nodes[alive].bootstrap, request_timeout_ms=30000)
    try:
        with pytest.raises(kafka.errors.EligibleLeadersNotAvailableError):
            client.perform_leader_election(1, {"lonely": [0]})
        # The preferred election of a partition already led by its preferred replica is no error.
        client.perform_leader_election(0, {"pref": [0]})
    finally:
        client.close()
