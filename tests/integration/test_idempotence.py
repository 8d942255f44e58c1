"""Idempotent producers (KIP-98, KIP-360): InitProducerId, the leader's dedup of retried
batches, sequence and epoch checks, producer state rebuilt after a restart and carried to a
new leader. Real clients with their default (idempotent) settings, plus raw requests where
exact error codes and offsets matter."""

import json
import os
import subprocess
import time
from pathlib import Path

import confluent_kafka

import kafka_wire as wire
from kafka_clients import ConfluentClient
from log_checks import make_messages
from test_replication import FAST, ContinuousProducer, create_topic, partition_state, stored_records, wait_for

API_INIT_PRODUCER_ID = 22
API_DESCRIBE_PRODUCERS = 61
ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER = 45
ERROR_INVALID_PRODUCER_EPOCH = 47
ERROR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
ERROR_INVALID_RECORD = 87


def now_ms():
    return int(time.time() * 1000)


def init_producer_id(conn, transactional_id=None):
    body = wire.init_producer_id_v0_body(transactional_id)
    return wire.parse_init_producer_id_v0(conn.request(API_INIT_PRODUCER_ID, 0, body))


def raw_produce(conn, topic, records_bytes, partition=0):
    response = wire.parse_produce_v3(conn.request(wire.API_PRODUCE, 3, wire.produce_v3_body(topic, partition, records_bytes)))
    return response[(topic, partition)]


def idempotent_batch(producer_id, epoch, sequence, count, tag):
    return wire.record_batch(
        make_messages(count, now_ms(), tag=tag), producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence
    )


def test_init_producer_id_never_hands_out_an_id_twice_across_restarts(broker):
    conn = wire.Connection(broker.host, broker.port)
    first = [init_producer_id(conn) for _ in range(3)]
    assert all(error == wire.ERROR_NONE and epoch == 0 for error, _, epoch in first), first
    ids = [pid for _, pid, _ in first]
    assert len(set(ids)) == 3 and min(ids) >= 0, ids
    conn.close()
    broker.restart()
    conn = wire.Connection(broker.host, broker.port)
    error, pid, _ = init_producer_id(conn)
    conn.close()
    # The block handed out before the restart is committed in the metadata log; the next
    # block starts past it.
    assert error == wire.ERROR_NONE and pid > max(ids), (error, pid, ids)


def test_a_retried_batch_is_written_once_and_gaps_old_epochs_and_control_batches_are_refused(broker):
    ConfluentClient(broker.bootstrap).create_topic("dedup", 1)
    conn = wire.Connection(broker.host, broker.port)
    error, pid, epoch = init_producer_id(conn)
    assert error == wire.ERROR_NONE
    first = idempotent_batch(pid, epoch, 0, 3, "a")
    assert raw_produce(conn, "dedup", first) == (wire.ERROR_NONE, 0)
    assert raw_produce(conn, "dedup", idempotent_batch(pid, epoch, 3, 2, "b")) == (wire.ERROR_NONE, 3)
    # The retry of the first batch gets its first offset back and is not written again.
    assert raw_produce(conn, "dedup", first) == (wire.ERROR_NONE, 0)
    # Sequence 5 is next: 6 leaves a gap.
    assert raw_produce(conn, "dedup", idempotent_batch(pid, epoch, 6, 1, "gap"))[0] == ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER
    # A newer epoch starts at 0 and fences the older one.
    assert raw_produce(conn, "dedup", idempotent_batch(pid, epoch + 1, 0, 1, "c")) == (wire.ERROR_NONE, 5)
    assert raw_produce(conn, "dedup", idempotent_batch(pid, epoch, 5, 1, "old"))[0] == ERROR_INVALID_PRODUCER_EPOCH
    # Clients may not write control batches, nor transactional ones without a transactional id.
    control = wire.record_batch(make_messages(1, now_ms(), tag="ctl"), attributes=0x20)
    assert raw_produce(conn, "dedup", control)[0] == ERROR_INVALID_RECORD
    transactional = wire.record_batch(
        make_messages(1, now_ms(), tag="txn"), producer_id=pid, producer_epoch=epoch + 1, base_sequence=1, attributes=0x10
    )
    assert raw_produce(conn, "dedup", transactional)[0] == ERROR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    described = wire.parse_describe_producers_v0(
        conn.request(API_DESCRIBE_PRODUCERS, 0, wire.describe_producers_v0_body({"dedup": [0, 7]}), flexible_header=True)
    )
    # The producer's epoch and last sequence; a partition that does not exist is reported so.
    assert described[("dedup", 0)] == (wire.ERROR_NONE, [(pid, epoch + 1, 0)]), described
    assert described[("dedup", 7)][0] == wire.ERROR_UNKNOWN_TOPIC_OR_PARTITION, described
    conn.close()
    stored = stored_records(broker, "dedup")
    assert sorted(stored) == list(range(6)), f"six records, each once: {stored}"


def test_producer_state_survives_a_kill9(broker):
    ConfluentClient(broker.bootstrap).create_topic("restart", 1)
    conn = wire.Connection(broker.host, broker.port)
    _, pid, epoch = init_producer_id(conn)
    batches = [idempotent_batch(pid, epoch, 2 * i, 2, f"r{i}") for i in range(3)]
    assert [raw_produce(conn, "restart", b) for b in batches] == [(wire.ERROR_NONE, 2 * i) for i in range(3)]
    conn.close()
    broker.kill9()
    broker.start()
    conn = wire.Connection(broker.host, broker.port)
    # Rebuilt from the log: a retry is still found, and the sequence continues at 6.
    assert raw_produce(conn, "restart", batches[1]) == (wire.ERROR_NONE, 2)
    assert raw_produce(conn, "restart", idempotent_batch(pid, epoch, 7, 1, "gap"))[0] == ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER
    assert raw_produce(conn, "restart", idempotent_batch(pid, epoch, 6, 1, "next")) == (wire.ERROR_NONE, 6)
    conn.close()


def test_kafka_python_3_with_default_settings_produces_and_consumes(broker):
    """kafka-python 3 turns idempotence on by default, as the Java client does. It runs from
    its own venv (scripts/test.sh sets ODRADEK_KAFKA_PYTHON3)."""
    python = os.environ.get("ODRADEK_KAFKA_PYTHON3")
    assert python, "set ODRADEK_KAFKA_PYTHON3 to a python with kafka-python 3 (scripts/test.sh does)"
    ConfluentClient(broker.bootstrap).create_topic("kp-default", 2)
    script = Path(__file__).with_name("kafka_python3_default_producer.py")
    run = subprocess.run(
        [python, str(script), broker.bootstrap, "kp-default", "2000"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["idempotent"], "kafka-python's default changed; this test needs another client"
    values = [b"kp-%05d" % i for i in range(2_000)]
    ends = {p: 1 + max(o for q, o in result["acks"] if q == p) for p in (0, 1)}
    records = ConfluentClient(broker.bootstrap).consume("kp-default", ends)
    read = {p: [r.message.value for r in rs] for p, rs in records.items()}
    assert read == {p: values[p::2] for p in (0, 1)}, "each value once, in send order per partition"


def test_librdkafka_idempotent_producer_writes_each_message_once_in_order(broker):
    client = ConfluentClient(broker.bootstrap)
    client.create_topic("rd-idem", 4)
    producer = confluent_kafka.Producer(
        client.config(**{"enable.idempotence": True, "linger.ms": 5, "max.in.flight.requests.per.connection": 5})
    )
    values = [b"rd-%06d" % i for i in range(20_000)]
    acks = {}

    def on_delivery(err, msg):
        assert err is None, err
        acks[msg.value()] = (msg.partition(), msg.offset())

    for i, v in enumerate(values):
        while True:
            try:
                producer.produce("rd-idem", value=v, partition=i % 4, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert len(acks) == len(values)
    ends = {p: 1 + max(o for q, o in acks.values() if q == p) for p in range(4)}
    records = client.consume("rd-idem", ends)
    for p in range(4):
        assert [r.message.value for r in records[p]] == values[p::4]


def test_an_idempotent_producer_across_a_leader_kill9_writes_every_record_once(cluster_factory):
    cluster = cluster_factory(extra_args=FAST)
    create_topic(cluster, "idem", replication_factor=3, min_isr=2)
    wait_for("a full ISR", lambda: (s := partition_state(cluster, "idem")) and len(s[2]) == 3 and s)
    producer = ContinuousProducer(cluster.bootstrap, "idem", idempotent=True).start()
    try:
        wait_for("first acks", lambda: len(producer.acked) > 200)
        old_leader, *_ = partition_state(cluster, "idem")
        cluster.nodes[old_leader].kill9()
        wait_for("a new leader", lambda: (s := partition_state(cluster, "idem")) and s[0] not in (-1, old_leader))
        acked_before = len(producer.acked)
        wait_for("acks from the new leader", lambda: len(producer.acked) > acked_before + 200)
        cluster.nodes[old_leader].start()
        wait_for("the old leader back in the ISR", lambda: (s := partition_state(cluster, "idem")) and len(s[2]) == 3)
    finally:
        producer.stop()
    assert not producer.failed, f"an idempotent producer retries until delivered: {producer.failed[:3]}"
    acked = dict(producer.acked)
    for broker in cluster.nodes.values():
        stored = stored_records(broker, "idem")
        missing = [(v, o) for v, o in acked.items() if stored.get(o) != v]
        assert not missing, f"node {broker.node_id} lacks {len(missing)} acked records, first {missing[:3]}"
        values = list(stored.values())
        assert len(values) == len(set(values)), f"node {broker.node_id} holds a record twice"
        assert values == sorted(values), f"node {broker.node_id} holds records out of send order"


def test_producer_snapshots_written_at_rolls_restore_the_state_and_a_damaged_one_is_skipped(broker):
    ConfluentClient(broker.bootstrap).create_topic("snap", 1, config={"segment.bytes": "1024"})
    conn = wire.Connection(broker.host, broker.port)
    _, pid, epoch = init_producer_id(conn)
    # Each batch is ~1.4 KiB, so every append rolls a segment and writes a snapshot.
    batches = [idempotent_batch(pid, epoch, 10 * i, 10, f"s{i}") for i in range(6)]
    assert [raw_produce(conn, "snap", b) for b in batches] == [(wire.ERROR_NONE, 10 * i) for i in range(6)]
    conn.close()
    directory = broker.data_dir / "snap-0"
    snapshots = sorted(directory.glob("*.snapshot"))
    assert len(snapshots) >= 4, f"one snapshot per roll: {[p.name for p in snapshots]}"
    broker.kill9()
    # The newest snapshot is damaged: the broker falls back to the one before and replays more.
    newest = snapshots[-1]
    newest.write_bytes(newest.read_bytes()[:-1] + bytes([newest.read_bytes()[-1] ^ 1]))
    broker.start()
    conn = wire.Connection(broker.host, broker.port)
    # The retry of the last batch but one: only the producer state restored from a snapshot
    # and the replay after it knows it (it is still among the last five).
    assert raw_produce(conn, "snap", batches[4]) == (wire.ERROR_NONE, 40)
    assert raw_produce(conn, "snap", idempotent_batch(pid, epoch, 60, 1, "next")) == (wire.ERROR_NONE, 60)
    conn.close()
    log = broker.log_tail(400)
    assert "producer snapshot unreadable" in log and "base=50" in log, "the damaged snapshot is reported"
    assert "producer state from its snapshot" in log and "base=40" in log, "the one before it is used"
