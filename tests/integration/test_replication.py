"""Replication across real odradek processes: leader failover under a running acks=all
producer, min.insync.replicas, controller failover, OffsetForLeaderEpoch (KIP-320 position
validation), retention and compaction on every replica. Clients are confluent-kafka, plus raw
protocol requests where exact error codes matter."""

import logging
import signal
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


def create_topic(cluster, topic, replication_factor, min_isr, config=None):
    client = admin(cluster)
    configs = {"min.insync.replicas": str(min_isr), **(config or {})}
    futures = client.create_topics([NewTopic(topic, 1, replication_factor, config=configs)], operation_timeout=30)
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
    """Produces numbered messages with acks=all until stopped, recording each acknowledged
    (value, offset) and each failure: without retries, or as an idempotent producer, which
    retries until its deliveries succeed."""

    def __init__(self, bootstrap, topic, acks="all", idempotent=False):
        retries = {"enable.idempotence": True, "message.timeout.ms": 60_000} if idempotent else {
            "enable.idempotence": False,
            "retries": 0,
            "message.timeout.ms": 10_000,
        }
        self.producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": bootstrap,
                "broker.address.family": "v4",
                "acks": acks,
                **retries,
                "linger.ms": 5,
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
        for batch in kafka_wire.parse_batches(kafka_wire.without_padding(segment.read_bytes())):
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



# ---- OffsetForLeaderEpoch (API 23) ----


def epoch_end(broker, topic, current_leader_epoch, leader_epoch):
    """One partition-0 OffsetForLeaderEpoch v3 -> (error_code, leader_epoch, end_offset)."""
    conn = kafka_wire.Connection(broker.host, broker.port)
    try:
        return kafka_wire.offset_for_leader_epoch(conn, [(topic, 0, current_leader_epoch, leader_epoch)])[(topic, 0)]
    finally:
        conn.close()


def current_epoch(broker, topic):
    """The leader epoch `broker` leads partition 0 in: the only current_leader_epoch it does
    not fence (older: FENCED_LEADER_EPOCH) or refuse as unknown (newer)."""
    for epoch in range(20):
        error, *_ = epoch_end(broker, topic, epoch, epoch)
        if error == 0:
            return epoch
        assert error == kafka_wire.ERROR_FENCED_LEADER_EPOCH, (epoch, error)
    raise AssertionError("no current leader epoch found")


def produce_values(bootstrap, topic, values):
    """acks=all, no retries; -> {value: offset} of every delivery (all must succeed)."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "broker.address.family": "v4", "acks": "all",
         "enable.idempotence": False, "retries": 0, "linger.ms": 5, "log_level": 2}
    )
    acked, failed = {}, []
    for v in values:
        producer.produce(topic, value=v, partition=0,
                         on_delivery=lambda err, msg: failed.append(err) if err else acked.__setitem__(msg.value(), msg.offset()))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not failed, failed[:3]
    return acked


def test_offset_for_leader_epoch_on_a_single_node(broker):
    # A broker without a quorum leads every partition in epoch 0 (its Metadata says so).
    admin_client = AdminClient({"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4"})
    admin_client.create_topics([NewTopic("solo", 1, 1)])["solo"].result(timeout=30)
    produce_values(broker.bootstrap, "solo", [b"s-%d" % i for i in range(7)])
    conn = kafka_wire.Connection(broker.host, broker.port)
    _, apis = conn.api_versions_v0()
    conn.close()
    assert apis[kafka_wire.API_OFFSET_FOR_LEADER_EPOCH] == (2, 4)
    assert epoch_end(broker, "solo", 0, 0) == (0, 0, 7)
    assert epoch_end(broker, "solo", -1, 0) == (0, 0, 7), "no fencing without a current epoch"
    assert epoch_end(broker, "solo", 0, 3) == (0, -1, -1), "an epoch above every known one is undefined"
    assert epoch_end(broker, "solo", 1, 0)[0] == kafka_wire.ERROR_UNKNOWN_LEADER_EPOCH
    assert epoch_end(broker, "missing", 0, 0)[0] == 3  # UNKNOWN_TOPIC_OR_PARTITION


def test_offset_for_leader_epoch_answers_from_the_leader_and_fences_stale_epochs(cluster_factory):
    cluster = cluster_factory(extra_args=FAST)
    create_topic(cluster, "epochs", replication_factor=3, min_isr=2)
    wait_for("a full ISR", lambda: (s := partition_state(cluster, "epochs")) and len(s[2]) == 3)
    first = produce_values(cluster.bootstrap, "epochs", [b"a-%d" % i for i in range(10)])
    assert sorted(first.values()) == list(range(10))
    leader, replicas, *_ = partition_state(cluster, "epochs")
    epoch = current_epoch(cluster.nodes[leader], "epochs")
    assert epoch_end(cluster.nodes[leader], "epochs", epoch, epoch) == (0, epoch, 10)
    assert epoch_end(cluster.nodes[leader], "epochs", epoch, epoch + 5) == (0, -1, -1)
    assert epoch_end(cluster.nodes[leader], "epochs", epoch + 1, epoch)[0] == kafka_wire.ERROR_UNKNOWN_LEADER_EPOCH
    for follower in (r for r in replicas if r != leader):
        assert epoch_end(cluster.nodes[follower], "epochs", epoch, epoch)[0] == kafka_wire.ERROR_NOT_LEADER_OR_FOLLOWER

    # A new leader: the old epoch is fenced, and ends where the new one began.
    cluster.nodes[leader].kill9()
    new_leader = wait_for(
        "a new leader", lambda: (s := partition_state(cluster, "epochs")) and s[0] not in (-1, leader) and s[0]
    )
    second = produce_values(cluster.bootstrap, "epochs", [b"b-%d" % i for i in range(5)])
    assert sorted(second.values()) == list(range(10, 15))
    new_epoch = current_epoch(cluster.nodes[new_leader], "epochs")
    assert new_epoch > epoch
    node = cluster.nodes[new_leader]
    assert epoch_end(node, "epochs", new_epoch, new_epoch) == (0, new_epoch, 15)
    assert epoch_end(node, "epochs", new_epoch, epoch) == (0, epoch, 10)
    assert epoch_end(node, "epochs", -1, epoch) == (0, epoch, 10)
    assert epoch_end(node, "epochs", epoch, epoch)[0] == kafka_wire.ERROR_FENCED_LEADER_EPOCH


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_consumer_validates_its_position_across_a_leader_kill_without_loss_or_duplicates(cluster_factory):
    # KIP-320: after a leader change librdkafka asks the new leader (OffsetForLeaderEpoch)
    # where the epoch of its last fetched record ends before fetching on.
    cluster = cluster_factory(extra_args=FAST)
    create_topic(cluster, "validated", replication_factor=3, min_isr=2)
    wait_for("a full ISR", lambda: (s := partition_state(cluster, "validated")) and len(s[2]) == 3)
    lines = _Lines()
    logger = logging.getLogger("validated-consumer")
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": cluster.bootstrap, "group.id": "validated", "enable.auto.commit": False,
         "broker.address.family": "v4", "auto.offset.reset": "error", "topic.metadata.refresh.interval.ms": 500,
         "debug": "fetch,topic"},
        logger=logger,
    )
    consumer.assign([confluent_kafka.TopicPartition("validated", 0, 0)])
    seen = []
    errors = []

    def drain():
        for m in consumer.consume(num_messages=1000, timeout=0.2):
            if m.error() is None:
                seen.append((m.offset(), m.value()))
            elif m.error().code() != confluent_kafka.KafkaError._PARTITION_EOF:
                errors.append(m.error())

    producer = ContinuousProducer(cluster.bootstrap, "validated").start()
    try:
        wait_for("first records consumed", lambda: drain() or len(seen) > 50)
        old_leader, *_ = partition_state(cluster, "validated")
        cluster.nodes[old_leader].kill9()
        wait_for(
            "a new leader",
            lambda: drain() or ((s := partition_state(cluster, "validated")) and s[0] not in (-1, old_leader)),
        )
        acked_before = len(producer.acked)
        wait_for("acks from the new leader", lambda: drain() or len(producer.acked) > acked_before + 50)
    finally:
        producer.stop()
    acked = dict(producer.acked)
    wait_for("every acked record consumed", lambda: drain() or all(v in dict((v, o) for o, v in seen) for v in acked), timeout=60)
    consumer.close()
    fatal = [e for e in errors if e.code() != confluent_kafka.KafkaError._TRANSPORT]
    assert not fatal, fatal[:3]
    offsets = [o for o, _ in seen]
    assert offsets == sorted(set(offsets)), "the consumer saw an offset twice or went backwards"
    at = dict(seen)
    wrong = [(v, o, at.get(o)) for v, o in acked.items() if at.get(o) != v]
    assert not wrong, f"{len(wrong)} acked records not consumed at their offsets: {wrong[:5]}"
    # librdkafka's own account: it asked the new leader and accepted its answer.
    validated = [line for line in lines.lines if line.startswith("OFFSETVALID")]
    assert validated and all("validation succeeded" in line for line in validated), (
        "librdkafka did not validate its position with OffsetForLeaderEpoch: "
        + "\n".join(validated or [l for l in lines.lines if "VALID" in l][-10:])
    )


# ---- retention and compaction on every replica ----

RETENTION_ARGS = FAST + ("--log-retention-check-interval-ms", "300", "--log-cleaner-backoff-ms", "300")


def segment_bases(broker, topic):
    return sorted(int(p.stem) for p in (broker.data_dir / f"{topic}-0").glob("*.log"))


def earliest(broker, topic):
    conn = kafka_wire.Connection(broker.host, broker.port)
    try:
        return kafka_wire.list_offsets(conn, [(topic, 0, kafka_wire.LIST_OFFSETS_EARLIEST)])[(topic, 0)]
    finally:
        conn.close()


def test_retention_removes_old_segments_on_every_replica(cluster_factory):
    cluster = cluster_factory(extra_args=RETENTION_ARGS)
    create_topic(cluster, "retained", replication_factor=3, min_isr=2,
                 config={"segment.bytes": "2048", "retention.bytes": "8192"})
    wait_for("a full ISR", lambda: (s := partition_state(cluster, "retained")) and len(s[2]) == 3)
    acked = {}
    for round_ in range(10):
        acked.update(produce_values(cluster.bootstrap, "retained", [b"r-%03d-%04d" % (round_, i) + b"x" * 100 for i in range(40)]))
    end = max(acked.values()) + 1
    leader, *_ = partition_state(cluster, "retained")

    def sizes(n, node_bases):
        try:
            return [(cluster.nodes[n].data_dir / "retained-0" / f"{b:020d}.log").stat().st_size for b in node_bases]
        except FileNotFoundError:
            # Retention removed a segment between the listing and the stat: look again.
            return None

    def trimmed():
        # Each pass removes what lies below the replica's high watermark at that moment, so a
        # follower may need a pass or two more than the leader.
        bases = {n: segment_bases(b, "retained") for n, b in cluster.nodes.items()}
        if not all(b and b[0] > 0 for b in bases.values()):
            return False
        per_node = [sizes(n, b) for n, b in bases.items()]
        if any(s is None for s in per_node):
            return False
        # Retention keeps a segment only while the rest would not fill retention.bytes.
        return all(sum(s) - s[0] < 8192 for s in per_node) and bases

    bases = wait_for("old segments removed on every replica, down to retention.bytes", trimmed)
    error, _, log_start = earliest(cluster.nodes[leader], "retained")
    assert error == 0 and log_start > 0
    for n, node_bases in bases.items():
        stored = stored_records(cluster.nodes[n], "retained")
        assert min(stored) >= node_bases[0]
        # What is left is the log's tail, identical to what was acknowledged.
        assert all(stored.get(o) == v for v, o in acked.items() if o >= min(stored)), f"node {n}"
    # Below the leader's log start: OFFSET_OUT_OF_RANGE; consumers read from the new start.
    conn = kafka_wire.Connection(cluster.nodes[leader].host, cluster.nodes[leader].port)
    below = kafka_wire.fetch(conn, [("retained", 0, 0)], max_wait_ms=0, min_bytes=0)[("retained", 0)]
    conn.close()
    assert below.error_code == kafka_wire.ERROR_OFFSET_OUT_OF_RANGE
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": cluster.bootstrap, "group.id": "retained", "enable.auto.commit": False,
         "broker.address.family": "v4", "auto.offset.reset": "earliest", "log_level": 2}
    )
    consumer.assign([confluent_kafka.TopicPartition("retained", 0, confluent_kafka.OFFSET_BEGINNING)])
    seen = {}
    deadline = time.monotonic() + 30
    while (not seen or max(seen) < end - 1) and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            seen[m.offset()] = m.value()
    consumer.close()
    first = min(seen)
    assert first >= log_start
    assert all(seen.get(o) == v for v, o in acked.items() if o >= first)
    assert max(seen) == end - 1


def test_compaction_keeps_the_latest_value_of_every_key_on_every_replica(cluster_factory):
    cluster = cluster_factory(extra_args=RETENTION_ARGS)
    create_topic(cluster, "compacted", replication_factor=3, min_isr=2,
                 config={"cleanup.policy": "compact", "segment.bytes": "2048", "min.cleanable.dirty.ratio": "0.01"})
    wait_for("a full ISR", lambda: (s := partition_state(cluster, "compacted")) and len(s[2]) == 3)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "acks": "all",
         "enable.idempotence": False, "retries": 0, "linger.ms": 5, "log_level": 2}
    )
    latest, failed = {}, []
    produced = 0
    for round_ in range(20):
        for k in range(20):
            key, value = b"key-%02d" % k, b"value-%02d-round-%02d" % (k, round_) + b"x" * 60
            producer.produce("compacted", key=key, value=value, partition=0,
                             on_delivery=lambda err, msg: failed.append(err) if err else None)
            latest[key] = value
            produced += 1
        assert producer.flush(60) == 0
    assert not failed, failed[:3]
    # A record without a key is refused, as on a single node.
    producer.produce("compacted", value=b"keyless", partition=0,
                     on_delivery=lambda err, msg: failed.append(err))
    producer.flush(30)
    assert failed and failed[0].code() == confluent_kafka.KafkaError.INVALID_RECORD, failed

    def stored_by_key(broker):
        out = {}
        for segment in sorted((broker.data_dir / "compacted-0").glob("*.log")):
            for batch in kafka_wire.parse_batches(kafka_wire.without_padding(segment.read_bytes())):
                for r in batch.records:
                    out.setdefault(r.key, []).append((r.offset, r.value))
        return out

    def compacted_everywhere():
        counts = {n: sum(len(v) for v in stored_by_key(b).values()) for n, b in cluster.nodes.items()}
        return all(c < produced // 2 for c in counts.values()) and counts

    wait_for("every replica compacted", compacted_everywhere, timeout=60)
    for n, broker in cluster.nodes.items():
        by_key = stored_by_key(broker)
        assert set(by_key) == set(latest), f"node {n} lost a key"
        for key, records in by_key.items():
            assert max(records)[1] == latest[key], f"node {n}: {key} ends with {max(records)}"


# ---- controlled shutdown ----


def test_sigterm_moves_leadership_before_the_leader_exits(cluster_factory):
    cluster = cluster_factory(extra_args=FAST)
    create_topic(cluster, "handover", replication_factor=3, min_isr=2)
    wait_for("a full ISR", lambda: (s := partition_state(cluster, "handover")) and len(s[2]) == 3)
    producer = ContinuousProducer(cluster.bootstrap, "handover").start()
    try:
        wait_for("first acks", lambda: len(producer.acked) > 100)
        old_leader, *_ = partition_state(cluster, "handover")
        node = cluster.nodes[old_leader]
        node._stopped_on_purpose = True
        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        code = node.proc.wait(timeout=40)
        took = time.monotonic() - started
        acked_at_exit = len(producer.acked)
        wait_for("acks from the new leader", lambda: len(producer.acked) > acked_at_exit + 100)
    finally:
        producer.stop()
    assert code == 0, f"exit status {code}"
    assert took < 35, f"shutdown took {took:.1f}s"
    log = node.log.read_text()
    assert "controlled shutdown complete" in log, node.log_tail()
    leader, _, isr, _ = partition_state(cluster, "handover")
    assert leader not in (-1, old_leader) and old_leader not in isr
    acked = dict(producer.acked)
    # Every acknowledged record is on both survivors at its offset, once.
    for broker in (b for n, b in cluster.nodes.items() if n != old_leader):
        stored = stored_records(broker, "handover")
        missing = [(v, o) for v, o in acked.items() if stored.get(o) != v]
        assert not missing, f"node {broker.node_id} lacks {len(missing)} acked records, first {missing[:3]}"
        values = [v for v in stored.values() if v in acked]
        dups = sorted((o, v) for o, v in stored.items() if v in acked and list(stored.values()).count(v) > 1)
        assert len(values) == len(set(values)), f"node {broker.node_id} holds an acked record twice: {dups[:6]} acked at {[acked[v] for _, v in dups[:6]]}"
    # A handover, not a failure: no acks=all produce saw the ISR below min.insync.replicas.
    assert not [e for e in producer.failed if e.code() == confluent_kafka.KafkaError.NOT_ENOUGH_REPLICAS], producer.failed[:3]


def test_a_lost_leader_epoch_checkpoint_is_rebuilt_from_the_log(cluster_factory):
    # A crash between appending batches of a new epoch and writing the checkpoint, or a lost
    # file, must not leave the epoch cache short: truncation and OffsetForLeaderEpoch answers
    # rely on it (KIP-101). The broker rebuilds it from the batch headers at open.
    cluster = cluster_factory(extra_args=FAST)
    create_topic(cluster, "rebuilt", replication_factor=3, min_isr=2)
    wait_for("a full ISR", lambda: (s := partition_state(cluster, "rebuilt")) and len(s[2]) == 3)
    produce_values(cluster.bootstrap, "rebuilt", [b"e0-%d" % i for i in range(10)])
    first_leader, *_ = partition_state(cluster, "rebuilt")
    cluster.nodes[first_leader].kill9()
    wait_for("a new leader", lambda: (s := partition_state(cluster, "rebuilt")) and s[0] not in (-1, first_leader))
    produce_values(cluster.bootstrap, "rebuilt", [b"e1-%d" % i for i in range(10)])
    cluster.nodes[first_leader].start()
    wait_for("a full ISR again", lambda: (s := partition_state(cluster, "rebuilt")) and len(s[2]) == 3)
    leader, *_ = partition_state(cluster, "rebuilt")
    follower = next(n for n in cluster.nodes if n != leader)
    node = cluster.nodes[follower]
    checkpoint = node.data_dir / "rebuilt-0" / "leader-epoch-checkpoint"
    expected = checkpoint.read_text()
    assert expected.splitlines()[1] == "2", f"two epochs wrote the log: {expected!r}"
    node.stop()
    checkpoint.unlink()
    node.start()
    assert checkpoint.read_text() == expected
    assert "leader epoch cache rebuilt from the log" in node.log.read_text()


def test_a_topic_recreated_while_a_replica_was_down_does_not_inherit_its_old_data(cluster_factory):
    # The node that was down while the topic was deleted and created again still has the old
    # topic's directory. It must not take that directory for its replica of the new topic
    # (same name, same epochs, other records: truncation by epoch would keep old records
    # below the new leader's end). Kafka ties a directory to its topic id the same way.
    # No auto-creation: asking for the deleted topic's metadata must not bring it back.
    cluster = cluster_factory(extra_args=(*FAST, "--no-auto-create-topics"))
    create_topic(cluster, "again", replication_factor=3, min_isr=2)
    wait_for("a full ISR", lambda: (s := partition_state(cluster, "again")) and len(s[2]) == 3)
    produce_values(cluster.bootstrap, "again", [b"old-%d" % i for i in range(50)])
    leader, _, _, controller = partition_state(cluster, "again")
    absent = next(n for n in cluster.nodes if n not in (leader, controller))
    node = cluster.nodes[absent]
    wait_for("the old records on the absent node", lambda: len(stored_records(node, "again")) == 50)
    node.kill9()
    # Within the absent node's session (3 s), so the new topic is placed on it too.
    client = admin(cluster)  # must outlive its futures
    client.delete_topics(["again"], operation_timeout=30)["again"].result(timeout=60)
    create_topic(cluster, "again", replication_factor=3, min_isr=2)
    assert absent in partition_state(cluster, "again")[1], "the new topic is placed on the absent node"
    acked = produce_values(cluster.bootstrap, "again", [b"new-%d" % i for i in range(5)])
    assert sorted(acked.values()) == list(range(5)), f"the new topic starts at offset 0: {acked}"
    node.start()
    wait_for("a full ISR of the new topic", lambda: (s := partition_state(cluster, "again")) and len(s[2]) == 3)
    wait_for("the new records on the returning node", lambda: len(stored_records(node, "again")) >= 5)
    stored = stored_records(node, "again")
    assert stored == {o: v for v, o in acked.items()}, f"the returning node holds {stored}"


def test_a_follower_shut_down_gracefully_does_not_hold_the_high_watermark(cluster_factory):
    """KIP-841: a broker shutting down is fenced and taken out of every ISR at once, but it may
    still fetch for a moment; the leader must not count it, nor propose it back into the ISR.
    It once did, on a fresh topic about two times in five: acks=1 records stayed unreadable
    (high watermark 0) until replica.lag.time.max.ms (30 s here) passed. Each round is a fresh
    topic, so each is a chance for that race."""
    cluster = cluster_factory(extra_args=("--broker-session-timeout-ms", "3000"))
    for round_ in range(3):
        topic = f"graceful-{round_}"
        create_topic(cluster, topic, replication_factor=2, min_isr=1)
        leader, replicas, _, _ = wait_for("a full ISR", lambda: (s := partition_state(cluster, topic)) and len(s[2]) == 2 and s)
        [follower] = [n for n in replicas if n != leader]
        node = cluster.nodes[follower]
        node._stopped_on_purpose = True
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=40) == 0
        producer = ContinuousProducer(cluster.bootstrap, topic, acks="1")
        for i in range(5):
            producer.producer.produce(topic, value=b"v%d" % i, partition=0, on_delivery=producer._on_delivery)
        producer.producer.flush(30)
        assert len(producer.acked) == 5 and not producer.failed, producer.failed
        consumer = confluent_kafka.Consumer({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "group.id": "hw", "log_level": 2})
        try:
            wait_for(
                "the acks=1 records readable (high watermark 5)",
                lambda: consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0), timeout=5)[1] == 5,
                timeout=10,
            )
        finally:
            consumer.close()
        node.start()
