"""Consumer groups on a replicated cluster: `__consumer_offsets` is replicated like any
topic, a group's coordinator is the leader of its partition, and when that node is killed
the partition's new leader rebuilds the group from the replicated records. Real clients
(confluent-kafka/librdkafka and kafka-python) find the new coordinator by themselves."""

import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import group_helpers as gh
from kafka_clients import CLIENTS
from log_checks import make_message
from test_groups import assert_no_member_errors, assert_processed_exactly_once, end_offsets, wait_processed_to
from test_replication import FAST, wait_for

PARTITIONS = 12
ALL = frozenset(range(PARTITIONS))
CLIENT_IDS = {"ids": lambda c: c.name}
CLUSTER_ARGS = (
    *FAST,
    *gh.GROUP_BROKER_ARGS,
    "--default-replication-factor", "3",
    "--min-insync-replicas", "2",
    # Fewer than Kafka's 50 keeps three single-core nodes quick; placement is the same.
    "--offsets-topic-num-partitions", "6",
)


def create_replicated_topic(cluster, topic):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "log_level": 2})
    futures = admin.create_topics([NewTopic(topic, PARTITIONS, 3)], operation_timeout=30)
    futures[topic].result(timeout=60)


def bootstrap_of(nodes):
    return ",".join(b.bootstrap for b in nodes)


def offsets_isr_complete(cluster):
    md = AdminClient({"bootstrap.servers": bootstrap_of(cluster.running()), "broker.address.family": "v4",
                      "log_level": 2}).list_topics("__consumer_offsets", timeout=5)
    t = md.topics.get("__consumer_offsets")
    return t is not None and t.error is None and t.partitions and all(len(p.isrs) == 3 for p in t.partitions.values())


def coordinator_of(cluster, group, other_than=None):
    """-> the node id FindCoordinator names for `group`, asked of the running nodes, once it
    names a running node (and not `other_than`)."""
    running = {b.node_id: b for b in cluster.running()}

    def ask():
        for b in running.values():
            try:
                conn = gh.GroupConnection(b.host, b.port, timeout=5)
                try:
                    answer = gh.find_coordinator(conn, group)
                finally:
                    conn.close()
            except OSError:
                continue
            if answer.error_code == 0 and answer.coordinator_id in running and answer.coordinator_id != other_than:
                return answer.coordinator_id
        return None

    return wait_for(f"a running coordinator for {group}", ask, timeout=60)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("client_class", CLIENTS, **CLIENT_IDS)
def test_committed_offsets_survive_coordinator_failovers(cluster_factory, client_class):
    """Offsets committed through the coordinator are read back, unchanged, from the node
    that takes over its partition after a kill -9; then again after the first coordinator
    returns (a follower that caught up) and the second is killed."""
    cluster = cluster_factory(extra_args=CLUSTER_ARGS)
    client = client_class(cluster.bootstrap)
    topic, group = "committed", f"committed-{client.name}"
    create_replicated_topic(cluster, topic)
    # The first FindCoordinator creates __consumer_offsets; the client retries meanwhile.
    offsets = {p: (100 + p, f"m{p}") for p in range(PARTITIONS)}
    gh.commit_standalone(client.name, cluster.bootstrap, group, topic, offsets)

    first = coordinator_of(cluster, group)
    cluster.nodes[first].kill9()
    second = coordinator_of(cluster, group, other_than=first)
    survivors = bootstrap_of(cluster.running())
    assert gh.committed(client.name, survivors, group, topic, range(PARTITIONS)) == offsets, "after the first failover"

    more = {p: (200 + p, f"n{p}") for p in range(PARTITIONS)}
    gh.commit_standalone(client.name, survivors, group, topic, more)
    cluster.nodes[first].start()
    # The returning node must be back in the ISR before the next kill, or
    # min.insync.replicas=2 leaves nobody to take over with every commit.
    wait_for("every __consumer_offsets partition's ISR complete again", lambda: offsets_isr_complete(cluster))
    cluster.nodes[second].kill9()
    third = coordinator_of(cluster, group, other_than=second)
    print(f"coordinators: node {first}, then {second}, then {third}")
    assert gh.committed(client.name, bootstrap_of(cluster.running()), group, topic, range(PARTITIONS)) == more, (
        "after the second failover"
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("client_class", CLIENTS, **CLIENT_IDS)
def test_members_ride_out_a_coordinator_kill(cluster_factory, tmp_path, client_class):
    """Two members consume 12 partitions while their coordinator (a node that also leads
    data partitions) is killed with kill -9. The new coordinator resumes the stored
    generation: every acknowledged message is processed exactly once, nobody loses its
    partitions, and the final commits land on the new coordinator."""
    session_ms = 20_000  # longer than a failover, so no member is expired while it runs
    cluster = cluster_factory(extra_args=CLUSTER_ARGS)
    client = client_class(cluster.bootstrap)
    topic, group = "ride-out", f"ride-out-{client.name}"
    create_replicated_topic(cluster, topic)
    base_timestamp = int(time.time() * 1000) - 3_600_000
    messages = [make_message(i, base_timestamp + i, "ride") for i in range(6_000)]
    acked = {ack: m.key.decode() for m, ack in zip(messages, client.produce(topic, messages), strict=True)}

    workers = [
        gh.Worker(tmp_path, name, client.name, cluster.bootstrap, group, topic,
                  session_timeout_ms=session_ms, heartbeat_interval_ms=500, rate=300)
        for name in ("a", "b")
    ]
    try:
        owned, _ = gh.wait_for_assignment(workers, ALL, timeout=90)
        gh.assert_partitioned(owned, ALL, "two members")
        coordinator = coordinator_of(cluster, group)
        killed_at = time.monotonic()
        cluster.nodes[coordinator].kill9()
        new_coordinator = coordinator_of(cluster, group, other_than=coordinator)
        print(f"coordinator {coordinator} killed; node {new_coordinator} took over after {time.monotonic() - killed_at:.1f}s")
        wait_processed_to(workers, end_offsets(acked), timeout=180)
        for w in workers:
            w.close()
    finally:
        gh.stop_all(workers)

    assert_processed_exactly_once(workers, acked)
    assert_no_member_errors(workers)
    survivors = bootstrap_of(cluster.running())
    committed = gh.committed(client.name, survivors, group, topic, range(PARTITIONS))
    assert {p: o for p, (o, _m) in committed.items()} == end_offsets(acked), "committed offsets after everyone closed"


@pytest.mark.timeout(240)
def test_group_cli_on_a_cluster(cluster_factory):
    """`odradek group` against a cluster: list gathers the groups of every coordinator,
    describe and reset-offsets find each group's coordinator, including after it moved."""
    cluster = cluster_factory(extra_args=CLUSTER_ARGS)
    client = CLIENTS[0](cluster.bootstrap)
    topic = "cli"
    create_replicated_topic(cluster, topic)
    messages = [make_message(i, int(time.time() * 1000), "cli") for i in range(1_200)]
    acked = {ack: None for ack in client.produce(topic, messages)}
    # Six groups over six __consumer_offsets partitions: more than one coordinator.
    groups = [f"cli-{i}" for i in range(6)]
    for i, group in enumerate(groups):
        gh.commit_standalone(client.name, cluster.bootstrap, group, topic, {p: (10 * i + p, "") for p in range(PARTITIONS)})
    coordinators = {g: coordinator_of(cluster, g) for g in groups}
    assert len(set(coordinators.values())) > 1, f"every group on one coordinator: {coordinators}"

    def cli(*args):
        return gh.run_group_cli(*args, "--bootstrap-server", bootstrap_of(cluster.running()))

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert set(groups) <= set(listed.stdout.split()), f"group list misses groups:\n{listed.stdout}"

    moved = groups[0]
    cluster.nodes[coordinators[moved]].kill9()
    coordinator_of(cluster, moved, other_than=coordinators[moved])
    described = cli("describe", moved)
    assert described.returncode == 0, described.stderr
    assert topic in described.stdout, described.stdout
    reset = cli("reset-offsets", moved, "--topic", topic, "--to-latest")
    assert reset.returncode == 0, f"{reset.stderr}{reset.stdout}"
    after = gh.committed(client.name, bootstrap_of(cluster.running()), moved, topic, range(PARTITIONS))
    assert {p: o for p, (o, _m) in after.items()} == end_offsets(acked)
