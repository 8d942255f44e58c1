"""Replication throttles (KIP-73) on a 3-node cluster: a follower far behind catches up no faster
than `leader.replication.throttled.rate` allows on its leader, then no faster than
`follower.replication.throttled.rate` allows on itself, for the partitions the topic's
`*.replication.throttled.replicas` name; removing the throttles lets it finish and rejoin the
ISR. The rates are set with IncrementalAlterConfigs on the broker resources, as
kafka-reassign-partitions.sh --throttle and kafka-configs.sh set them.

The brokers measure rates over 2 windows of 1 s (`replication.quota.window.num`, Kafka's
default is 11) so that the bound shows over seconds rather than over Kafka's 11 s window."""

import json
import subprocess
import time

import confluent_kafka
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from conftest import ODRADEK_BIN
from test_replication import FAST, partition_state, wait_for

TOPIC = "throttled"
RATE = 1 << 20
# One follower fetch of a partition (replica.fetch.max.bytes) may overshoot the bound.
FETCH_BYTES = 1 << 20
BACKLOG_BYTES = 26 << 20
PHASE_S = 8


def admin(cluster):
    return AdminClient({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "log_level": 2})


def alter(cluster, restype, name, *entries):
    """entries: (config name, value or None to delete). A new client each time: one that
    learnt the controller before a broker stopped would keep asking that one."""
    client = admin(cluster)
    changes = [
        ConfigEntry(n, v, incremental_operation=AlterConfigOpType.SET if v is not None else AlterConfigOpType.DELETE)
        for n, v in entries
    ]
    resource = ConfigResource(restype, name, incremental_configs=changes)
    client.incremental_alter_configs([resource])[resource].result(timeout=60)


def follower_size(cluster):
    """Bytes of the partition's log on broker 2, from DescribeLogDirs (`odradek log-dirs`)."""
    result = subprocess.run(
        [str(ODRADEK_BIN), "log-dirs", "--describe", "--topic-list", TOPIC, "--broker-list", "2",
         "--bootstrap-server", cluster.nodes[1].bootstrap],
        capture_output=True, text=True, timeout=30,
    )
    if result.returncode != 0:
        return None
    for broker in json.loads(result.stdout)["brokers"]:
        for log_dir in broker["logDirs"]:
            for p in log_dir["partitions"]:
                if p["partition"] == f"{TOPIC}-0":
                    return p["size"]
    return None


def measure(cluster, seconds):
    """-> (bytes the follower appended, seconds it took) over about `seconds`."""
    start, t0 = follower_size(cluster), time.monotonic()
    time.sleep(seconds)
    end, t1 = follower_size(cluster), time.monotonic()
    return end - start, t1 - t0


def test_a_throttled_follower_catches_up_at_the_throttled_rate(cluster_factory, tmp_path):
    props = tmp_path / "quota.properties"
    props.write_text("replication.quota.window.num=2\nreplication.quota.window.size.seconds=1\n")
    cluster = cluster_factory(voters=3, extra_args=FAST + ("--config", str(props)))
    client = admin(cluster)
    client.create_topics([NewTopic(TOPIC, num_partitions=1, replica_assignment=[[1]])])[TOPIC].result(timeout=60)

    # A backlog on broker 1 alone, which a new replica on broker 2 will have to fetch.
    producer = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4",
                                         "acks": "all", "linger.ms": 20, "compression.type": "none", "log_level": 2})
    value = bytes(range(256)) * 400  # ~100 KB
    failed = []

    def delivered(error, _message):
        if error is not None:
            failed.append(error)

    for _ in range(BACKLOG_BYTES // len(value)):
        while True:
            try:
                producer.produce(TOPIC, value, partition=0, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    assert not failed, failed[:3]

    # What kafka-reassign-partitions.sh --throttle sets: the existing replica throttled as a
    # leader, the moving one as a follower, and the leader's rate.
    alter(cluster, ResourceType.TOPIC, TOPIC,
          ("leader.replication.throttled.replicas", "0:1"), ("follower.replication.throttled.replicas", "0:2"))
    alter(cluster, ResourceType.BROKER, "1", ("leader.replication.throttled.rate", str(RATE)))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": TOPIC, "partition": 0, "replicas": [1, 2]}]}))
    subprocess.run([str(ODRADEK_BIN), "reassign", "--execute", "--reassignment-json-file", str(plan),
                    "--bootstrap-server", cluster.nodes[1].bootstrap], check=True, capture_output=True, timeout=60)

    # Phase 1: the leader's throttle.
    wait_for("the new replica to start fetching", lambda: (follower_size(cluster) or 0) > 0)
    moved, took = measure(cluster, PHASE_S)
    print(f"leader throttle: {moved / took / RATE:.2f} x the rate over {took:.1f} s")
    assert moved <= 1.3 * RATE * took + FETCH_BYTES, f"{moved} bytes in {took:.1f} s at {RATE} B/s"
    assert moved >= 0.4 * RATE * took, f"only {moved} bytes in {took:.1f} s: throttled to a halt"

    # Phase 2: the follower's throttle alone.
    alter(cluster, ResourceType.BROKER, "2", ("follower.replication.throttled.rate", str(RATE)))
    alter(cluster, ResourceType.BROKER, "1", ("leader.replication.throttled.rate", None))
    time.sleep(1)
    moved, took = measure(cluster, PHASE_S)
    print(f"follower throttle: {moved / took / RATE:.2f} x the rate over {took:.1f} s")
    assert moved <= 1.3 * RATE * took + FETCH_BYTES, f"{moved} bytes in {took:.1f} s at {RATE} B/s"
    assert moved >= 0.4 * RATE * took, f"only {moved} bytes in {took:.1f} s: throttled to a halt"
    assert (follower_size(cluster) or 0) < BACKLOG_BYTES * 0.9, "the backlog was meant to outlast the throttled phases"
    assert partition_state(cluster, TOPIC)[2] == [1], "a throttled replica still catching up is not in sync"

    # Unthrottled, the new replica finishes and joins the ISR; the move completes.
    alter(cluster, ResourceType.BROKER, "2", ("follower.replication.throttled.rate", None))
    wait_for("the move to complete", lambda: (s := partition_state(cluster, TOPIC)) and s[1] == [1, 2] and s[2] == [1, 2], timeout=40)
