"""Rack awareness (KIP-36): brokers register their `broker.rack`, Metadata and DescribeCluster
report it, and the controller places each partition's replicas on distinct racks
(Kafka's rack-aware assignment); with racks on only some brokers it refuses to place, as Kafka
does ("Not all brokers have rack information")."""

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

RACKS = {1: "rack-a", 2: "rack-b", 3: "rack-c", 4: "rack-a", 5: "rack-b", 6: "rack-c"}


def admin(cluster):
    return AdminClient({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "log_level": 2})


def wait_for(describe, condition, timeout=30):
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {describe}; last: {last!r}")


def test_replicas_of_each_partition_sit_on_distinct_racks(cluster_factory):
    # Three voters and three broker-only nodes, two per rack: a rack-unaware placement would
    # put two replicas of some partition in one rack.
    cluster = cluster_factory(
        voters=3, observers=3, node_args={n: ("--broker-rack", rack) for n, rack in RACKS.items()}
    )
    client = admin(cluster)

    def all_brokers():
        described = client.describe_cluster(request_timeout=10).result(timeout=15)
        return len(described.nodes) == 6 and described

    described = wait_for("all six brokers registered", all_brokers)
    assert {node.id: node.rack for node in described.nodes} == RACKS

    futures = client.create_topics([NewTopic("racked", 12, 3)], operation_timeout=30)
    futures["racked"].result(timeout=60)

    def placed():
        md = client.list_topics("racked", timeout=10)
        topic = md.topics["racked"]
        return topic.error is None and len(topic.partitions) == 12 and topic

    topic = wait_for("the topic's metadata", placed)
    leaders = {}
    for p in topic.partitions.values():
        racks = [RACKS[r] for r in p.replicas]
        assert len(p.replicas) == 3 and len(set(racks)) == 3, f"partition {p.id}: replicas {p.replicas} on racks {racks}"
        leaders[p.leader] = leaders.get(p.leader, 0) + 1
    # Leaders spread: 12 partitions over 6 brokers, two each.
    assert sorted(leaders.values()) == [2] * 6, leaders

    # Metadata's broker list names the racks too (the replicas' Node objects of DescribeTopics
    # come from it).
    from confluent_kafka import TopicCollection

    info = client.describe_topics(TopicCollection(["racked"]))["racked"].result(timeout=15)
    for p in info.partitions:
        assert {node.rack for node in p.replicas} == {"rack-a", "rack-b", "rack-c"}, p


def test_topic_creation_is_refused_when_only_some_brokers_have_racks(cluster_factory):
    cluster = cluster_factory(voters=3, node_args={1: ("--broker-rack", "rack-a"), 2: ("--broker-rack", "rack-b")})
    client = admin(cluster)
    wait_for("three brokers", lambda: len(client.list_topics(timeout=10).brokers) == 3)
    futures = client.create_topics([NewTopic("half-racked", 3, 2)], operation_timeout=30)
    with pytest.raises(Exception) as refused:
        futures["half-racked"].result(timeout=60)
    error = refused.value.args[0]
    assert error.name() == "INVALID_REPLICA_ASSIGNMENT", error
    assert "Not all brokers have rack information" in error.str()

    # A manual assignment is the way around it, as with Kafka's --disable-rack-aware.
    futures = client.create_topics([NewTopic("half-racked", num_partitions=2, replica_assignment=[[1, 3], [2, 3]])], operation_timeout=30)
    futures["half-racked"].result(timeout=60)
