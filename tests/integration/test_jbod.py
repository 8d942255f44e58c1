"""Several log directories (`log.dirs`, JBOD) against the real broker: partitions are spread
over them (a new one goes to the directory holding the fewest), each survives a restart in the
directory that holds it, DescribeLogDirs lists every directory with its own partitions, and a
directory that fails (at start, or under the running broker) takes only its own partitions
offline: they answer KAFKA_STORAGE_ERROR while the other directory's keep serving and the
broker keeps running; on a cluster the controller, told in the broker's heartbeats, moves their
leaderships and ISR places to the other brokers."""

import json
import shutil
import socket
import time
import urllib.request

import kafka_wire as wire
from kafka_clients import ConfluentClient, Message
from test_admin_cli import KAFKA_PYTHON_LOG_DIRS, kafka_python3, ok

KAFKA_STORAGE_ERROR = 56
TIMEOUT = 60
RECORDS = 30


def messages(tag, partition, count=RECORDS):
    return [Message(b"k%d" % i, b"%s-%d-%d" % (tag.encode(), partition, i), (), 1_700_000_000_000 + i) for i in range(count)]


def start_with_two_dirs(broker_factory, tmp_path, *extra):
    second = tmp_path / "second-dir"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics = f"127.0.0.1:{s.getsockname()[1]}"
    broker = broker_factory("--data-dir", str(second), "--metrics-listen", metrics, *extra)
    broker.metrics = metrics
    return broker, broker.data_dir, second


def held(log_dir, topic):
    """-> the partitions of `topic` whose directories `log_dir` holds."""
    if not log_dir.is_dir():
        return set()
    found = set()
    for entry in log_dir.iterdir():
        name, _, index = entry.name.rpartition("-")
        if entry.is_dir() and name == topic and index.isdigit():
            found.add(int(index))
    return found


def produce_each(bootstrap, topic, partitions, tag):
    """RECORDS records to each partition; -> {partition: [values]}."""
    client = ConfluentClient(bootstrap)
    written = {}
    for p in partitions:
        sent = messages(tag, p)
        acks = client.produce(topic, sent, partition=p)
        assert [partition for partition, _ in acks] == [p] * len(sent)
        written[p] = [m.value for m in sent]
    return written


def consumed_values(bootstrap, topic, partitions):
    client = ConfluentClient(bootstrap)
    ends = client.end_offsets(topic, partitions)
    records = client.consume(topic, ends, timeout=TIMEOUT)
    return {p: [r.message.value for r in records[p]] for p in partitions}


def described_dirs(bootstrap, topic):
    """-> {resolved log dir: (error, {partition: size})} from `odradek log-dirs`."""
    dirs = json.loads(ok("log-dirs", "--bootstrap-server", bootstrap, "--describe", "--topic-list", topic).stdout)
    [entry] = dirs["brokers"]
    out = {}
    for d in entry["logDirs"]:
        partitions = {int(p["partition"].rpartition("-")[2]): p["size"] for p in d["partitions"]}
        out[d["logDir"]] = (d["error"], partitions)
    return out


def raw_produce(broker, topic, partition, value=b"x", count=1):
    """-> the error code of one acks=all produce of `count` records, sent without a client's retries."""
    batch = wire.record_batch([Message(b"k", value, (), int(time.time() * 1000))] * count)
    conn = wire.Connection(broker.host, broker.port)
    try:
        answer = wire.parse_produce_v3(conn.request(wire.API_PRODUCE, 3, wire.produce_v3_body(topic, partition, batch)))
    finally:
        conn.close()
    return answer[(topic, partition)][0]


def raw_fetch_errors(broker, topic, partitions):
    """-> {partition: error code} of one Fetch from offset 0."""
    conn = wire.Connection(broker.host, broker.port)
    try:
        body = wire.fetch_v5_body([(topic, p, 0) for p in partitions], max_wait_ms=0, min_bytes=0)
        fetched = wire.parse_fetch_v5(conn.request(wire.API_FETCH, 5, body))
    finally:
        conn.close()
    return {p: fetched[(topic, p)].error_code for p in partitions}


def wait_for(condition, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def metric(broker, name):
    body = urllib.request.urlopen(f"http://{broker.metrics}/metrics", timeout=10).read().decode()
    [value] = [float(line.split()[-1]) for line in body.splitlines() if line.startswith(name + " ")]
    return value


def test_partitions_spread_over_two_dirs_are_described_and_survive_a_restart(broker_factory, tmp_path):
    broker, first, second = start_with_two_dirs(broker_factory, tmp_path)
    topic, partitions = "spread", 6
    ConfluentClient(broker.bootstrap).create_topic(topic, partitions)
    wait_for(lambda: len(held(first, topic) | held(second, topic)) == partitions, "every partition's directory")
    in_first, in_second = held(first, topic), held(second, topic)
    assert not in_first & in_second, f"a partition in both dirs: {in_first & in_second}"
    assert in_first | in_second == set(range(partitions))
    # Fewest partitions first: the dirs end up within one partition of each other (the
    # metadata and __consumer_offsets, if created, count for nothing or evenly).
    assert in_first and in_second, (in_first, in_second)
    assert abs(len(in_first) - len(in_second)) <= 1, (in_first, in_second)

    written = produce_each(broker.bootstrap, topic, range(partitions), "before")
    described = described_dirs(broker.bootstrap, topic)
    assert set(described) == {str(first.resolve()), str(second.resolve())}
    for path, on_disk in ((first, in_first), (second, in_second)):
        error, sizes = described[str(path.resolve())]
        assert error is None
        assert set(sizes) == on_disk, f"{path}: described {sorted(sizes)}, on disk {sorted(on_disk)}"
        assert all(size > 0 for size in sizes.values()), sizes

    assert metric(broker, "odradek_offline_log_dirs") == 0

    # kafka-python's DescribeLogDirs sees the same two directories.
    [by_kafka_python] = kafka_python3(KAFKA_PYTHON_LOG_DIRS, broker.bootstrap)
    kp = {d["log_dir"]: d for d in by_kafka_python["log_dirs"]}
    assert set(kp) == set(described)
    for path, on_disk in ((first, in_first), (second, in_second)):
        d = kp[str(path.resolve())]
        assert d["error_code"] == 0
        listed = {p["partition_index"] for t in d["topics"] if t["name"] == topic for p in t["partitions"]}
        assert listed == on_disk

    broker.restart()
    assert (held(first, topic), held(second, topic)) == (in_first, in_second), "partitions moved on restart"
    more = produce_each(broker.bootstrap, topic, range(partitions), "after")
    got = consumed_values(broker.bootstrap, topic, range(partitions))
    for p in range(partitions):
        assert got[p] == written[p] + more[p], f"partition {p}"

    # A partition in both dirs: which copy is current cannot be told, so the start is refused,
    # naming both; without the stale copy the broker starts again with every record.
    copied = min(in_first)
    broker.stop()
    shutil.copytree(first / f"{topic}-{copied}", second / f"{topic}-{copied}")
    broker.start_process()
    assert broker.proc.wait(timeout=TIMEOUT) != 0
    broker._stopped_on_purpose = True
    line = next(l for l in broker.log.read_text(errors="replace").splitlines() if f"{topic}-{copied} has a directory in both" in l)
    assert str(first) in line and str(second) in line, line
    shutil.rmtree(second / f"{topic}-{copied}")
    broker.start()
    got = consumed_values(broker.bootstrap, topic, range(partitions))
    for p in range(partitions):
        assert got[p] == written[p] + more[p], f"partition {p}"


def test_a_dir_that_fails_at_start_takes_only_its_partitions_offline(broker_factory, tmp_path):
    broker, first, second = start_with_two_dirs(broker_factory, tmp_path)
    topic, partitions = "halves", 4
    ConfluentClient(broker.bootstrap).create_topic(topic, partitions)
    written = produce_each(broker.bootstrap, topic, range(partitions), "kept")
    in_first, in_second = held(first, topic), held(second, topic)
    assert in_first and in_second, (in_first, in_second)

    # A disk that is gone: its mount point is now a regular file, which no process, root
    # included, can list or create partitions in.
    broker.stop()
    shutil.move(second, tmp_path / "second-dir.removed")
    second.write_bytes(b"not a directory")
    broker.start()

    # The first dir's partitions serve: their records are all there and more can be written.
    got = consumed_values(broker.bootstrap, topic, sorted(in_first))
    for p in in_first:
        assert got[p] == written[p]
        assert raw_produce(broker, topic, p) == 0
    # The failed dir's answer KAFKA_STORAGE_ERROR, and are not created again elsewhere.
    for p in in_second:
        assert raw_produce(broker, topic, p) == KAFKA_STORAGE_ERROR
    assert raw_fetch_errors(broker, topic, sorted(in_second)) == {p: KAFKA_STORAGE_ERROR for p in in_second}
    assert held(first, topic) == in_first

    described = described_dirs(broker.bootstrap, topic)
    first_error, first_sizes = described[str(first.resolve())]
    assert first_error is None and set(first_sizes) == in_first
    [(second_error, second_sizes)] = [v for k, v in described.items() if k != str(first.resolve())]
    assert second_error is not None and f"({KAFKA_STORAGE_ERROR})" in second_error, second_error
    assert second_sizes == {}
    log = broker.log.read_text(errors="replace")
    assert "log directory offline at start" in log and str(second) in log
    assert metric(broker, "odradek_offline_log_dirs") == 1

    # New partitions go to the dir still online.
    ConfluentClient(broker.bootstrap).create_topic("fresh", 2)
    wait_for(lambda: held(first, "fresh") == {0, 1}, "the new topic in the online dir")
    produce_each(broker.bootstrap, "fresh", range(2), "fresh")
    assert broker.proc.poll() is None, "the broker keeps running"


def test_an_io_error_at_runtime_takes_only_its_dir_offline(broker_factory, tmp_path):
    broker, first, second = start_with_two_dirs(broker_factory, tmp_path)
    topic, partitions = "rolling", 4
    # Small segments: the next append after the disk is gone must create a segment file there.
    ConfluentClient(broker.bootstrap).create_topic(topic, partitions, {"segment.bytes": "1024"})
    produce_each(broker.bootstrap, topic, range(partitions), "first")
    in_first, in_second = held(first, topic), held(second, topic)
    assert in_first and in_second, (in_first, in_second)

    # The disk disappears under the running broker: open files stay writable, new ones fail.
    shutil.rmtree(second)
    victim = min(in_second)
    codes = []
    for _ in range(10):
        codes.append(raw_produce(broker, topic, victim, value=b"v" * 600, count=2))
        if codes[-1] == KAFKA_STORAGE_ERROR:
            break
    assert codes[-1] == KAFKA_STORAGE_ERROR, f"produce error codes after the disk went: {codes}"
    for p in in_second:
        assert raw_produce(broker, topic, p) == KAFKA_STORAGE_ERROR
    assert set(raw_fetch_errors(broker, topic, sorted(in_second)).values()) == {KAFKA_STORAGE_ERROR}

    # The other dir's partitions go on, through a real client.
    more = produce_each(broker.bootstrap, topic, sorted(in_first), "second")
    got = consumed_values(broker.bootstrap, topic, sorted(in_first))
    for p in in_first:
        assert got[p][-RECORDS:] == more[p]
    error, _ = described_dirs(broker.bootstrap, topic)[str(second)]
    assert error is not None and f"({KAFKA_STORAGE_ERROR})" in error, error
    log = broker.log.read_text(errors="replace")
    assert log.count("log directory offline: its partitions are not served") == 1, "logged once"
    assert metric(broker, "odradek_offline_log_dirs") == 1
    assert broker.proc.poll() is None, "the broker keeps running"


def cluster_metadata(cluster, topic):
    """-> {partition: (leader, isr)} from a running node's Metadata, or None."""
    import confluent_kafka
    from confluent_kafka.admin import AdminClient

    for node in cluster.running():
        try:
            md = AdminClient({"bootstrap.servers": node.bootstrap, "broker.address.family": "v4", "log_level": 2}).list_topics(topic, timeout=5)
        except confluent_kafka.KafkaException:
            continue
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            continue
        return {p: (s.leader, sorted(s.isrs)) for p, s in t.partitions.items()}
    return None


def test_a_failed_dir_moves_its_leaderships_and_isr_places_to_other_brokers(cluster_factory):
    """The broker tells the controller (KIP-858) which replicas a failed directory held: their
    leaderships move to in-sync replicas on other brokers and the broker leaves their ISRs, so
    clients find a leader that serves and acks=all produces are not held up by it."""
    import confluent_kafka
    from confluent_kafka.admin import AdminClient, NewTopic

    # Default replica.lag.time.max.ms (30 s): only the report, not the lag, may shrink the ISRs
    # within this test's waits.
    cluster = cluster_factory()
    node = cluster.nodes[3]
    second = node.data_dir.parent / "second-dir"
    node.stop()
    node.extra_args += ["--data-dir", str(second)]
    node.start()

    topic, partitions = "moved", 8
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "log_level": 2})

    def created():
        # Refused (INVALID_REPLICATION_FACTOR) until node 3 is unfenced again.
        new = NewTopic(topic, partitions, 3, config={"segment.bytes": "1024"})
        try:
            admin.create_topics([new], operation_timeout=30)[topic].result(timeout=30)
            return True
        except confluent_kafka.KafkaException as e:
            return e.args[0].code() == confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS

    wait_for(created, "the topic created over three brokers")
    wait_for(lambda: len(held(node.data_dir, topic) | held(second, topic)) == partitions, "node 3's replica directories")
    in_second = held(second, topic)
    assert in_second and held(node.data_dir, topic), "node 3's replicas all in one directory"
    before = wait_for(lambda: (lambda md: md if md and all(l >= 0 for l, _ in md.values()) else None)(cluster_metadata(cluster, topic)), "leaders")
    assert any(before[p][0] == 3 for p in in_second), f"node 3 leads none of its second dir's partitions: {before}, {in_second}"
    written = produce_each(cluster.bootstrap, topic, range(partitions), "first")

    # The disk disappears under node 3; the next segment roll of one of its replicas there
    # (as leader or follower) fails and takes the directory offline.
    shutil.rmtree(second)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4", "acks": "all", "enable.idempotence": False,
         "retries": 0, "message.timeout.ms": 20_000, "linger.ms": 5, "log_level": 2}
    )
    acked = {p: [] for p in range(partitions)}

    def on_delivery(err, msg):
        if err is None:
            acked[msg.partition()].append(msg.value())

    for p in range(partitions):
        for i in range(6):
            producer.produce(topic, value=b"roll-%d-%d-" % (p, i) + b"v" * 600, partition=p, on_delivery=on_delivery)
    assert producer.flush(40) == 0

    def moved():
        md = cluster_metadata(cluster, topic)
        if not md:
            return None
        ok_ = all(leader >= 0 for leader, _ in md.values()) and all(md[p][0] != 3 and 3 not in md[p][1] for p in in_second)
        return md if ok_ else None

    after = wait_for(moved, "the failed directory's leaderships and ISR places moved off node 3", timeout=30)
    for p in set(range(partitions)) - in_second:
        assert 3 in after[p][1], f"partition {p} in node 3's healthy directory left its ISR: {after[p]}"
    assert "log directory offline: its partitions are not served" in node.log.read_text(errors="replace")

    # Every partition takes acks=all writes (min.insync.replicas 1) and gives back everything
    # acknowledged, in order.
    more = produce_each(cluster.bootstrap, topic, range(partitions), "after")
    got = consumed_values(cluster.bootstrap, topic, range(partitions))
    for p in range(partitions):
        assert got[p][:RECORDS] == written[p], f"partition {p}"
        assert got[p][-RECORDS:] == more[p], f"partition {p}"
        middle = got[p][RECORDS:-RECORDS]
        assert [v for v in middle if v in acked[p]] == acked[p], f"partition {p}: acknowledged records missing"
    assert node.proc.poll() is None, "node 3 keeps running"
