"""Replication across real odradek processes: leader failover under a running acks=all
producer, min.insync.replicas, and controller failover. Clients are confluent-kafka."""

import threading
import time

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire

# Fast failure detection, so the tests spend seconds, not the defaults' tens of seconds.
FAST = ("--broker-session-timeout-ms", "3000", "--replica-lag-time-max-ms", "3000")


def admin(cluster):
    return AdminClient({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "log_level": 2})


def create_topic(cluster, topic, replication_factor, min_isr):
    client = admin(cluster)
    futures = client.create_topics(
        [NewTopic(topic, 1, replication_factor, config={"min.insync.replicas": str(min_isr)})], operation_timeout=30
    )
    futures[topic].result(timeout=60)


def partition_state(cluster, topic):
    """-> (leader, replicas, isr, controller) from a running broker's Metadata."""
    for broker in cluster.running():
        try:
            md = AdminClient({"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4", "log_level": 2}).list_topics(
                topic, timeout=5
            )
        except confluent_kafka.KafkaException:
            continue
        t = md.topics.get(topic)
        if t is None or t.error is not None or 0 not in t.partitions:
            continue
        p = t.partitions[0]
        return p.leader, list(p.replicas), sorted(p.isrs), md.controller_id
    return None


def wait_for(describe, condition, timeout=40):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {describe}; last: {last!r}")


class ContinuousProducer:
    """Produces numbered messages with acks=all and no retries until stopped, recording each
    acknowledged (value, offset) and each failure."""

    def __init__(self, bootstrap, topic, acks="all"):
        self.producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": bootstrap,
                "broker.address.family": "v4",
                "acks": acks,
                "enable.idempotence": False,
                "retries": 0,
                "linger.ms": 5,
                "message.timeout.ms": 10_000,
                "request.timeout.ms": 5_000,
                "topic.metadata.refresh.interval.ms": 500,
                # Brokers are killed on purpose: their connection errors are expected noise.
                "log_level": 2,
            }
        )
        self.topic = topic
        self.acked = {}
        self.failed = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err, msg):
        if err is None:
            self.acked[msg.value()] = msg.offset()
        else:
            self.failed.append(err)

    def _run(self):
        i = 0
        while not self._stop.is_set():
            try:
                self.producer.produce(self.topic, value=b"v-%08d" % i, partition=0, on_delivery=self._on_delivery)
                i += 1
            except BufferError:
                pass
            self.producer.poll(0.005)
        self.producer.flush(30)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(60)


def stored_records(broker, topic):
    """{offset: value} of every record in the broker's segment files of partition 0."""
    records = {}
    directory = broker.data_dir / f"{topic}-0"
    for segment in sorted(directory.glob("*.log")):
        for batch in kafka_wire.parse_batches(segment.read_bytes()):
            assert batch.crc_ok, f"{segment}: bad CRC at byte {batch.position}"
            for r in batch.records:
                records[r.offset] = r.value
    return records


def test_acked_writes_survive_leader_kill9_and_the_old_leader_rejoins(cluster_factory):
    cluster = cluster_factory(extra_args=FAST)
    create_topic(cluster, "orders", replication_factor=3, min_isr=2)
    wait_for("a full ISR", lambda: (s := partition_state(cluster, "orders")) and len(s[2]) == 3 and s)
    producer = ContinuousProducer(cluster.bootstrap, "orders").start()
    try:
        wait_for("first acks", lambda: len(producer.acked) > 50)
        old_leader, *_ = partition_state(cluster, "orders")
        cluster.nodes[old_leader].kill9()
        new_leader = wait_for(
            "a new leader",
            lambda: (s := partition_state(cluster, "orders")) and s[0] not in (-1, old_leader) and s[0],
        )
        acked_before = len(producer.acked)
        wait_for("acks from the new leader", lambda: len(producer.acked) > acked_before + 50)
        cluster.nodes[old_leader].start()
        wait_for("the old leader back in the ISR", lambda: (s := partition_state(cluster, "orders")) and len(s[2]) == 3)
        acked_rejoined = len(producer.acked)
        wait_for("acks with the full ISR", lambda: len(producer.acked) > acked_rejoined + 50)
    finally:
        producer.stop()
    assert new_leader != old_leader
    acked = dict(producer.acked)
    assert len(acked) > 150
    # Every acknowledged message sits at its acknowledged offset on every replica, once.
    for broker in cluster.nodes.values():
        stored = stored_records(broker, "orders")
        missing = [(v, o) for v, o in acked.items() if stored.get(o) != v]
        assert not missing, f"node {broker.node_id} lacks {len(missing)} acked records, first {missing[:3]}"
        values = [v for v in stored.values() if v in acked]
        assert len(values) == len(set(values)), f"node {broker.node_id} holds an acked record twice"
    # And consumers read them back from whichever broker leads now.
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": cluster.bootstrap, "group.id": "check", "enable.auto.commit": False,
         "broker.address.family": "v4", "log_level": 2}
    )
    consumer.assign([confluent_kafka.TopicPartition("orders", 0, 0)])
    seen = {}
    deadline = time.monotonic() + 30
    # Unacknowledged sends may also be in the log, so wait for every acked value, not a count.
    while any(v not in seen for v in acked) and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            seen[m.value()] = m.offset()
    consumer.close()
    wrong = [(v, o, seen.get(v)) for v, o in acked.items() if seen.get(v) != o]
    assert not wrong, f"{len(wrong)} of {len(acked)} acked records not read back (value, acked, read): {wrong[:5]}"



def test_acks_all_needs_min_insync_replicas_and_acks_1_does_not(cluster_factory):
    # One controller voter (node 1) and two broker-only nodes: the quorum survives the loss
    # of nodes 2 and 3, so the controller can shrink the ISR to the survivor.
    cluster = cluster_factory(voters=1, observers=2, extra_args=FAST)
    create_topic(cluster, "strict", replication_factor=3, min_isr=2)
    wait_for("a full ISR", lambda: (s := partition_state(cluster, "strict")) and len(s[2]) == 3)
    cluster.nodes[2].kill9()
    cluster.nodes[3].kill9()
    wait_for("the ISR down to node 1", lambda: (s := partition_state(cluster, "strict")) and s[2] == [1] and s[0] == 1)
    producer = ContinuousProducer(cluster.bootstrap, "strict")
    for i in range(5):
        producer.producer.produce("strict", value=b"all-%d" % i, partition=0, on_delivery=producer._on_delivery)
    producer.producer.flush(30)
    assert not producer.acked, "acks=all acknowledged with the ISR below min.insync.replicas"
    assert producer.failed and all(
        e.code() == confluent_kafka.KafkaError.NOT_ENOUGH_REPLICAS for e in producer.failed
    ), producer.failed
    leader_only = ContinuousProducer(cluster.bootstrap, "strict", acks="1")
    for i in range(5):
        leader_only.producer.produce("strict", value=b"one-%d" % i, partition=0, on_delivery=leader_only._on_delivery)
    leader_only.producer.flush(30)
    assert len(leader_only.acked) == 5 and not leader_only.failed, leader_only.failed


def test_killing_the_active_controller_elects_another_and_the_cluster_keeps_serving(cluster_factory):
    cluster = cluster_factory(extra_args=FAST)
    create_topic(cluster, "before", replication_factor=3, min_isr=2)
    state = wait_for("a full ISR", lambda: (s := partition_state(cluster, "before")) and len(s[2]) == 3 and s)
    controller = state[3]
    assert controller in cluster.nodes
    cluster.nodes[controller].kill9()
    wait_for(
        "another active controller",
        lambda: (s := partition_state(cluster, "before")) and s[3] not in (-1, controller) and s[0] != controller,
    )
    def fenced():
        md = admin(cluster).list_topics(timeout=5)
        return controller not in md.brokers and len(md.brokers) == 2

    wait_for("the dead controller fenced", fenced)
    # A new topic needs the new controller; two brokers are alive for RF 2.
    create_topic(cluster, "after", replication_factor=2, min_isr=2)
    for topic in ("before", "after"):
        producer = ContinuousProducer(cluster.bootstrap, topic)
        for i in range(20):
            producer.producer.produce(topic, value=b"%s-%d" % (topic.encode(), i), partition=0,
                                      on_delivery=producer._on_delivery)
        deadline = time.monotonic() + 30
        while len(producer.acked) < 20 and time.monotonic() < deadline:
            producer.producer.poll(0.1)
        # A metadata refresh may race the first batch; everything else must get through.
        assert len(producer.acked) >= 15, (topic, len(producer.acked), producer.failed[:1], partition_state(cluster, topic))
