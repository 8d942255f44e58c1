"""Transactions (KIP-98): the transaction coordinator on `__transaction_state`, commit and
abort markers, the last stable offset, read_committed Fetch and ListOffsets, zombie fencing,
the coordinator aborting timed-out transactions, a transaction left open across a kill -9,
a leader kill -9 under a stream of transactions on a 3-node cluster, and exactly-once
consume-transform-produce. Real clients (confluent-kafka transactional producers and
read_committed consumers) check the end-to-end property: every committed record is read
exactly once, in order, and nothing aborted is; raw requests check the offsets, markers and
states the clients hide."""

import threading
import time
from collections import Counter

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire as wire
from test_replication import FAST, wait_for

API_DESCRIBE_PRODUCERS = 61
READ_COMMITTED = "read_committed"
READ_UNCOMMITTED = "read_uncommitted"
# What a zombie producer may be told, by the broker or by librdkafka once it knows.
FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
# Timed-out transactions are looked for every 500 ms instead of Kafka's 10 s.
ABORT_CHECK = {"transaction.abort.timed.out.transaction.cleanup.interval.ms": "500"}
# Fewer internal partitions than Kafka's 50 keep three single-core nodes quick.
CLUSTER_SETTINGS = {**ABORT_CHECK, "transaction.state.log.num.partitions": "6"}
CLUSTER_ARGS = (*FAST, "--offsets-topic-num-partitions", "6")
RECORDS = 4  # per partition and transaction


def settings_args(tmp_path, settings):
    """`serve` arguments for broker settings (Kafka's names) in a server.properties file."""
    path = tmp_path / "server.properties"
    path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    return ("--config", str(path))


def client_config(bootstrap, **overrides):
    return {"bootstrap.servers": bootstrap, "broker.address.family": "v4", **overrides}


def create_topic(bootstrap, topic, partitions, replication_factor=1, config=None):
    admin = AdminClient(client_config(bootstrap, log_level=2))  # must outlive the future
    futures = admin.create_topics(
        [NewTopic(topic, partitions, replication_factor, config=dict(config or {}))], operation_timeout=30
    )
    futures[topic].result(timeout=60)


def txn_values(tag, partitions, count=RECORDS):
    """{partition: [value, ...]}, values unique to the tag."""
    return {p: [b"%s-p%d-%03d" % (tag.encode(), p, i) for i in range(count)] for p in partitions}


class TxnProducer:
    """A confluent-kafka transactional producer that records each delivery."""

    def __init__(self, bootstrap, transactional_id, **overrides):
        self.producer = confluent_kafka.Producer(
            client_config(
                bootstrap, **{"transactional.id": transactional_id, "linger.ms": 5, "log_level": 2, **overrides}
            )
        )
        self.acked = {}  # value -> (partition, offset)
        self.failed = {}  # value -> KafkaError

    def _on_delivery(self, err, msg):
        if err is None:
            self.acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            self.failed[msg.value()] = err

    def send(self, topic, values_by_partition):
        """Produces the values round-robin over the partitions (each partition's in order)."""
        rounds = max(len(v) for v in values_by_partition.values())
        for i in range(rounds):
            for partition, values in values_by_partition.items():
                if i < len(values):
                    self.producer.produce(topic, value=values[i], partition=partition, on_delivery=self._on_delivery)

    def flush(self, values_by_partition):
        """Waits until every value is written: librdkafka's abort_transaction purges what is
        not, and a test that aborts wants the aborted records in the log."""
        remaining = self.producer.flush(30)
        assert remaining == 0, f"{remaining} messages undelivered after 30 s"
        values = [v for vs in values_by_partition.values() for v in vs]
        failed = {v: self.failed[v] for v in values if v in self.failed}
        assert not failed, f"{len(failed)} deliveries failed, first: {list(failed.items())[:3]}"
        assert all(v in self.acked for v in values)

    def offsets(self, values):
        return [self.acked[v][1] for v in values]

    def init(self):
        self.producer.init_transactions(30)
        return self

    def open(self, topic, values_by_partition):
        """Begins a transaction and writes the values in it, leaving it open."""
        self.producer.begin_transaction()
        self.send(topic, values_by_partition)
        self.flush(values_by_partition)
        return values_by_partition

    def commit(self, topic, values_by_partition):
        """One transaction of the values, committed."""
        self.open(topic, values_by_partition)
        self.producer.commit_transaction(30)
        return values_by_partition

    def abort(self, topic, values_by_partition):
        """One transaction of the values, written, then aborted."""
        self.open(topic, values_by_partition)
        self.producer.abort_transaction(30)
        return values_by_partition


def watermarks(bootstrap, topic, partitions, isolation=READ_UNCOMMITTED):
    """{partition: ListOffsets latest}: the high watermark, or with read_committed the last
    stable offset."""
    consumer = confluent_kafka.Consumer(
        client_config(bootstrap, **{"group.id": "txn-tests-unused", "isolation.level": isolation, "log_level": 2})
    )
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in partitions
        }
    finally:
        consumer.close()


def read_values(bootstrap, topic, partitions, isolation, timeout=30):
    """{partition: [(offset, value)]}: what a consumer at this isolation level reads from the
    start of each partition until its position reaches the high watermark. read_committed gets
    there only once no transaction is open on the partition."""
    ends = watermarks(bootstrap, topic, partitions)
    consumer = confluent_kafka.Consumer(
        client_config(
            bootstrap,
            **{
                "group.id": "txn-tests-reader",
                "isolation.level": isolation,
                "enable.auto.commit": False,
                "auto.offset.reset": "error",  # never silently skip
                "log_level": 2,
            },
        )
    )
    read = {p: [] for p in partitions}
    try:
        consumer.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout
        while True:
            for msg in consumer.consume(num_messages=10_000, timeout=0.2):
                assert msg.error() is None, f"{isolation} consumer of {topic}: {msg.error()}"
                read[msg.partition()].append((msg.offset(), msg.value()))
            at = {tp.partition: tp.offset for tp in consumer.position([TopicPartition(topic, p) for p in partitions])}
            if all(at[p] >= end for p, end in ends.items() if end > 0):
                return read
            assert time.monotonic() < deadline, (
                f"{isolation} consumer of {topic} at positions {at} after {timeout}s; high watermarks {ends}"
                + (", last stable offsets %s" % watermarks(bootstrap, topic, partitions, READ_COMMITTED)
                   if isolation == READ_COMMITTED else "")
            )
    finally:
        consumer.close()


def assert_read_exactly(read, expected, what):
    """read: {partition: [(offset, value)]}; expected: {partition: [value]} in production order.
    Each expected value once, in that order, and nothing else."""
    for partition in sorted(set(read) | set(expected)):
        got = [v for _, v in read.get(partition, [])]
        want = list(expected.get(partition, []))
        if got == want:
            continue
        counts = Counter(got)
        wanted = set(want)
        twice = [v for v, n in counts.items() if n > 1]
        missing = [v for v in want if v not in counts]
        extra = [v for v in got if v not in wanted]
        detail = "same records, another order" if not (twice or missing or extra) else (
            f"missing {len(missing)} (first {missing[:3]}), not expected {len(extra)} (first {extra[:3]}), "
            f"read twice {len(twice)} (first {twice[:3]})"
        )
        raise AssertionError(f"{what}, partition {partition}: read {len(got)} records, expected {len(want)}: {detail}")


def concat(batches, partitions):
    """[{partition: [value]}] -> {partition: [value]} in batch order."""
    return {p: [v for b in batches for v in b.get(p, [])] for p in partitions}


def batch_ranges(records):
    return [(b.base_offset, b.last_offset) for b in wire.parse_batches(records)]


def raw(broker):
    return wire.Connection(broker.host, broker.port)


def stable_offsets(conn, topic, partitions):
    """{partition: (last stable offset, high watermark)} from raw ListOffsets v2."""
    requested = [(topic, p, wire.LIST_OFFSETS_LATEST) for p in partitions]
    by_level = {}
    for level in (wire.READ_COMMITTED, wire.READ_UNCOMMITTED):
        answer = wire.list_offsets_isolated(conn, requested, level)
        assert all(answer[(topic, p)][0] == wire.ERROR_NONE for p in partitions), answer
        by_level[level] = {p: answer[(topic, p)][2] for p in partitions}
    return {p: (by_level[wire.READ_COMMITTED][p], by_level[wire.READ_UNCOMMITTED][p]) for p in partitions}


def wait_until(describe, probe, accept, timeout=30):
    """probe() until accept(its value); -> that value. Fails with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {describe}; last: {value!r}"
        time.sleep(0.05)


def wait_for_markers(conn, topic, ends):
    """Waits until each partition's high watermark is at its end in ends, {partition: offset}
    (the markers are written: the client is answered once the coordinator has persisted its
    decision, and the markers follow) and the last stable offset has caught up with it."""
    return wait_until(
        f"(last stable offset, high watermark) of {topic} at {ends}",
        lambda: stable_offsets(conn, topic, list(ends)),
        lambda offsets: offsets == {p: (end, end) for p, end in ends.items()},
    )


def marker_ends(producer, values_by_partition):
    """{partition: the log end once the marker follows the transaction's last record}"""
    return {p: producer.acked[values[-1]][1] + 2 for p, values in values_by_partition.items()}


def describe(conn, transactional_id):
    return wire.describe_transactions(conn, [transactional_id])[transactional_id]


def commit_error(producer):
    """Commits; -> the KafkaError it fails with, None if it commits."""
    try:
        producer.commit_transaction(30)
    except KafkaException as e:
        return e.args[0]
    return None


# ---------------------------------------------------------------- a single broker


def test_read_committed_reads_each_committed_record_once_and_read_uncommitted_also_the_aborted(broker):
    topic, partitions = "txn-mixed", range(3)
    create_topic(broker.bootstrap, topic, 3)
    producer = TxnProducer(broker.bootstrap, "mixed").init()
    outcomes = ["commit", "abort", "commit", "commit", "abort", "abort", "commit", "commit"]
    transactions = []
    for n, outcome in enumerate(outcomes):
        values = txn_values(f"mixed{n}-{outcome}", partitions)
        # Written before the abort, so the aborted records are in the log.
        (producer.commit if outcome == "commit" else producer.abort)(topic, values)
        transactions.append((outcome, values))
    committed = concat([v for o, v in transactions if o == "commit"], partitions)
    everything = concat([v for _, v in transactions], partitions)

    # Each transaction wrote its records, then one marker, on each partition.
    conn = raw(broker)
    span = RECORDS + 1
    wait_for_markers(conn, topic, {p: len(outcomes) * span for p in partitions})
    for p in partitions:
        for n, (outcome, values) in enumerate(transactions):
            assert producer.offsets(values[p]) == list(range(n * span, n * span + RECORDS)), (
                f"partition {p}: transaction {n}'s records acked at {producer.offsets(values[p])}"
            )
        fetched = wire.fetch_isolated(conn, [(topic, p, 0)], wire.READ_UNCOMMITTED)[(topic, p)]
        want = [(n * span + RECORDS, wire.CONTROL_COMMIT if o == "commit" else wire.CONTROL_ABORT)
                for n, (o, _) in enumerate(transactions)]
        assert wire.control_markers(fetched.records) == want, f"partition {p}: markers (offset, type) in the log"
        # read_committed Fetch v4+: one aborted transaction per aborted one, at its first offset.
        fetched = wire.fetch_isolated(conn, [(topic, p, 0)], wire.READ_COMMITTED)[(topic, p)]
        producer_ids = {pid for _, pid, _ in wire.batch_producer_ids(fetched.records)}
        assert len(producer_ids) == 1, f"partition {p}: batches of producers {producer_ids}, one producer wrote them"
        pid = producer_ids.pop()
        aborted = sorted(fetched.aborted_transactions or [])
        assert aborted == [(pid, n * span) for n, (o, _) in enumerate(transactions) if o == "abort"], (
            f"partition {p}: aborted_transactions {aborted}"
        )
    conn.close()

    assert_read_exactly(read_values(broker.bootstrap, topic, partitions, READ_COMMITTED), committed,
                        "read_committed: each committed record once, in production order, nothing aborted")
    read = read_values(broker.bootstrap, topic, partitions, READ_UNCOMMITTED)
    assert_read_exactly(read, everything, "read_uncommitted: every record written, committed or aborted")
    for p in partitions:
        assert [o for o, _ in read[p]] == producer.offsets(everything[p]), f"partition {p}: read at the acked offsets"


def test_the_last_stable_offset_holds_read_committed_at_an_open_transaction(broker):
    topic = "txn-lso"
    create_topic(broker.bootstrap, topic, 1)
    producer = TxnProducer(broker.bootstrap, "lso").init()
    conn = raw(broker)
    first = producer.commit(topic, txn_values("first", [0], 3))
    wait_for_markers(conn, topic, marker_ends(producer, first))

    open_values = producer.open(topic, txn_values("open", [0], 3))
    open_offsets = producer.offsets(open_values[0])
    first_open, high_watermark = open_offsets[0], open_offsets[-1] + 1
    assert first_open == producer.offsets(first[0])[-1] + 2, "right after the first transaction's marker"
    assert stable_offsets(conn, topic, [0]) == {0: (first_open, high_watermark)}, (
        "ListOffsets latest: read_committed at the open transaction's first record (the last stable offset), "
        "read_uncommitted at the high watermark"
    )
    fetched = wire.fetch_isolated(conn, [(topic, 0, 0)], wire.READ_COMMITTED)[(topic, 0)]
    assert (fetched.error_code, fetched.high_watermark, fetched.last_stable_offset) == (
        wire.ERROR_NONE, high_watermark, first_open), fetched[:5]
    batches = wire.parse_batches(fetched.records)
    assert batches and max(b.last_offset for b in batches) == first_open - 1, (
        f"read_committed Fetch returns the committed records and their marker and nothing at or past the last "
        f"stable offset {first_open}: batches {batch_ranges(fetched.records)}"
    )
    fetched = wire.fetch_isolated(conn, [(topic, 0, first_open)], wire.READ_COMMITTED)[(topic, 0)]
    assert (fetched.error_code, fetched.records) == (wire.ERROR_NONE, b""), "nothing to read at the last stable offset"
    fetched = wire.fetch_isolated(conn, [(topic, 0, 0)], wire.READ_UNCOMMITTED)[(topic, 0)]
    read = [r.value for b in wire.parse_batches(fetched.records) for r in b.records]
    assert read == first[0] + open_values[0], "read_uncommitted reads the open transaction's records"

    producer.producer.commit_transaction(30)
    # The marker goes at the old high watermark. Until it is below the high watermark (durable
    # and, on a cluster, replicated) the transaction is still unstable (Kafka's
    # "unreplicatedTxns"): the last stable offset stays at its first record. Every read_committed
    # Fetch until then is kept, and checked at the end of the test.
    marker = high_watermark
    while_committing = []

    def fetch_committing():
        fetched = wire.fetch_isolated(conn, [(topic, 0, first_open)], wire.READ_COMMITTED)[(topic, 0)]
        while_committing.append(fetched)
        return fetched

    wait_until(f"the commit marker at {marker} below the high watermark, the last stable offset past it",
               fetch_committing, lambda f: (f.high_watermark, f.last_stable_offset) == (marker + 1,) * 2)
    fetched = wire.fetch_isolated(conn, [(topic, 0, 0)], wire.READ_COMMITTED)[(topic, 0)]
    assert (fetched.high_watermark, fetched.last_stable_offset) == (high_watermark + 1,) * 2, fetched[:5]
    read = [r.value for b in wire.parse_batches(fetched.records) for r in b.records]
    assert read == first[0] + open_values[0], "after the commit read_committed reads its records"

    aborted = producer.abort(topic, txn_values("aborted", [0], 3))
    end = wait_for_markers(conn, topic, marker_ends(producer, aborted))[0][0]
    aborted_offsets = producer.offsets(aborted[0])
    pid = describe(conn, "lso").producer_id
    for fetch_from in (0, aborted_offsets[0]):
        fetched = wire.fetch_isolated(conn, [(topic, 0, fetch_from)], wire.READ_COMMITTED)[(topic, 0)]
        assert fetched.last_stable_offset == end, fetched[:5]
        assert fetched.aborted_transactions == [(pid, aborted_offsets[0])], (
            f"read_committed Fetch from {fetch_from}: aborted_transactions {fetched.aborted_transactions}, "
            f"expected producer {pid} from offset {aborted_offsets[0]}"
        )
        assert {p for _, p, _ in wire.batch_producer_ids(fetched.records)} == {pid}
    conn.close()
    assert_read_exactly(read_values(broker.bootstrap, topic, [0], READ_COMMITTED), {0: first[0] + open_values[0]},
                        "read_committed consumer")
    early = [
        (f.high_watermark, f.last_stable_offset, batch_ranges(f.records))
        for f in while_committing
        if f.high_watermark <= marker and f.last_stable_offset > first_open
    ]
    assert not early, (
        f"read_committed Fetch from {first_open} while the commit marker at {marker} was not yet below the high "
        f"watermark answered (high watermark, last stable offset, batches) {early[:3]}: the last stable offset "
        f"passed the transaction's first record {first_open} before its marker was durable"
    )


def test_a_second_producer_with_the_same_transactional_id_fences_the_first(broker):
    topic, partitions = "txn-fence", range(2)
    create_topic(broker.bootstrap, topic, 2)
    zombie = TxnProducer(broker.bootstrap, "fenced").init()
    zombie_open = zombie.open(topic, txn_values("zombie-open", partitions))
    # The same transactional id again: aborts the zombie's transaction and bumps the epoch.
    successor = TxnProducer(broker.bootstrap, "fenced").init()
    successor_values = successor.commit(topic, txn_values("successor", partitions))

    errors = []
    try:
        zombie.send(topic, txn_values("zombie-late", partitions, 1))
    except KafkaException as e:
        errors.append(e.args[0])
    error = commit_error(zombie.producer)
    assert error is not None, "the fenced producer's commit succeeded"
    errors += [error, *zombie.failed.values()]
    assert any(e.code() in FENCED for e in errors) and error.fatal(), (
        f"the fenced producer is told so (PRODUCER_FENCED or INVALID_PRODUCER_EPOCH, fatal): {errors}"
    )

    conn = raw(broker)
    wait_for_markers(conn, topic, marker_ends(successor, successor_values))
    conn.close()
    assert_read_exactly(read_values(broker.bootstrap, topic, partitions, READ_COMMITTED), successor_values,
                        "read_committed: the successor's transaction, none of the zombie's records")
    assert_read_exactly(read_values(broker.bootstrap, topic, partitions, READ_UNCOMMITTED),
                        concat([zombie_open, successor_values], partitions),
                        "read_uncommitted: the zombie's aborted records and the successor's, nothing the zombie "
                        "sent after it was fenced")


def test_the_coordinator_aborts_a_transaction_past_its_timeout(broker_factory, tmp_path):
    broker = broker_factory(*settings_args(tmp_path, ABORT_CHECK))
    topic, partitions = "txn-timeout", range(2)
    create_topic(broker.bootstrap, topic, 2)
    producer = TxnProducer(broker.bootstrap, "slow", **{"transaction.timeout.ms": 2000}).init()
    conn = raw(broker)
    committed = producer.commit(topic, txn_values("committed", partitions))
    wait_for_markers(conn, topic, marker_ends(producer, committed))
    forgotten = producer.open(topic, txn_values("forgotten", partitions))
    ongoing = describe(conn, "slow")
    assert (ongoing.error_code, ongoing.state, ongoing.timeout_ms) == (wire.ERROR_NONE, "Ongoing", 2000), ongoing

    # The producer does nothing more: within its 2 s plus a few 500 ms checks the coordinator
    # aborts the transaction.
    ends = marker_ends(producer, forgotten)
    after = wait_until(
        f"the coordinator to abort the timed-out transaction (markers at {ends})",
        lambda: (describe(conn, "slow"), stable_offsets(conn, topic, partitions)),
        lambda got: got[0].state == "CompleteAbort" and got[1] == {p: (end, end) for p, end in ends.items()},
        timeout=20,
    )[0]
    assert after.producer_id == ongoing.producer_id and after.producer_epoch > ongoing.producer_epoch, (
        f"the abort bumps the epoch, fencing the timed-out producer: before {ongoing}, after {after}"
    )
    error = commit_error(producer.producer)
    assert error is not None, "the timed-out transaction was committed after the coordinator aborted it"
    assert stable_offsets(conn, topic, partitions) == {p: (end, end) for p, end in ends.items()}, (
        f"the failed commit ({error}) wrote nothing"
    )
    conn.close()
    assert_read_exactly(read_values(broker.bootstrap, topic, partitions, READ_COMMITTED), committed,
                        f"read_committed: nothing of the timed-out transaction (its commit failed with {error})")
    assert_read_exactly(read_values(broker.bootstrap, topic, partitions, READ_UNCOMMITTED),
                        concat([committed, forgotten], partitions), "read_uncommitted")


def test_describe_and_list_transactions_show_the_coordinator_state(broker):
    topic = "txn-describe"
    create_topic(broker.bootstrap, topic, 3)
    producer = TxnProducer(broker.bootstrap, "described", **{"transaction.timeout.ms": 45_000}).init()
    conn = raw(broker)
    error, _node, host, port = wire.find_coordinator(conn, "described", wire.COORDINATOR_TRANSACTION)
    assert (error, host, port) == (wire.ERROR_NONE, broker.host, broker.port), "FindCoordinator key type 1"

    before = int(time.time() * 1000)
    producer.open(topic, txn_values("described", [0, 2]))
    after = int(time.time() * 1000)
    d = describe(conn, "described")
    producers = wire.parse_describe_producers_v0(
        conn.request(API_DESCRIBE_PRODUCERS, 0, wire.describe_producers_v0_body({topic: [0]}), flexible_header=True)
    )
    (pid, epoch, _last_sequence), = producers[(topic, 0)][1]
    assert (d.error_code, d.state, d.producer_id, d.producer_epoch, d.timeout_ms, d.partitions) == (
        wire.ERROR_NONE, "Ongoing", pid, epoch, 45_000, {(topic, 0), (topic, 2)}
    ), f"an open transaction on partitions 0 and 2 of the producer writing them ({pid}, epoch {epoch}): {d}"
    assert before - 1000 <= d.start_time_ms <= after + 1000, (before, d.start_time_ms, after)

    _, _, listed = wire.list_transactions(conn)
    assert listed.get("described") == (pid, "Ongoing"), listed
    assert "described" in wire.list_transactions(conn, states=["Ongoing"])[2]
    assert "described" not in wire.list_transactions(conn, states=["CompleteCommit"])[2]
    assert "described" in wire.list_transactions(conn, producer_ids=[pid])[2]
    assert "described" not in wire.list_transactions(conn, producer_ids=[pid + 1000])[2]

    producer.producer.commit_transaction(30)
    d = wait_until("CompleteCommit", lambda: describe(conn, "described"), lambda d: d.state == "CompleteCommit")
    assert (d.error_code, d.producer_id) == (wire.ERROR_NONE, pid), d
    assert wire.list_transactions(conn, states=["CompleteCommit"])[2].get("described") == (pid, "CompleteCommit")
    unknown = describe(conn, "never-used")
    assert unknown.error_code == wire.ERROR_TRANSACTIONAL_ID_NOT_FOUND, unknown
    # Kafka names the state filters it does not know in unknown_state_filters.
    error, unknown_filters, listed = wire.list_transactions(conn, states=["NoSuchState"])
    conn.close()
    assert (error, unknown_filters, listed) == (wire.ERROR_NONE, ["NoSuchState"], {}), (
        f"ListTransactions with an unknown state filter: error {error}, unknown_state_filters {unknown_filters}, "
        f"listed {listed}"
    )


def test_a_transaction_open_at_a_kill9_is_aborted_after_the_restart(broker_factory, tmp_path):
    broker = broker_factory(*settings_args(tmp_path, ABORT_CHECK))
    topic, partitions = "txn-restart", range(2)
    create_topic(broker.bootstrap, topic, 2)
    producer = TxnProducer(broker.bootstrap, "restarted", **{"transaction.timeout.ms": 3000}).init()
    committed = producer.commit(topic, txn_values("committed", partitions))
    conn = raw(broker)
    wait_for_markers(conn, topic, marker_ends(producer, committed))
    conn.close()
    left_open = producer.open(topic, txn_values("left-open", partitions))

    broker.kill9()
    broker.start()
    conn = raw(broker)
    ends = marker_ends(producer, left_open)
    wait_until(
        f"the restarted coordinator to abort the transaction left open (markers at {ends})",
        lambda: (describe(conn, "restarted"), stable_offsets(conn, topic, partitions)),
        lambda got: got[0].state == "CompleteAbort" and got[1] == {p: (end, end) for p, end in ends.items()},
    )
    assert_read_exactly(read_values(broker.bootstrap, topic, partitions, READ_COMMITTED), committed,
                        "read_committed after the restart: the committed transaction once, nothing left open")
    assert_read_exactly(read_values(broker.bootstrap, topic, partitions, READ_UNCOMMITTED),
                        concat([committed, left_open], partitions),
                        "read_uncommitted after the restart: the acknowledged records of both")

    successor = TxnProducer(broker.bootstrap, "restarted").init()
    later = successor.commit(topic, txn_values("later", partitions))
    wait_for_markers(conn, topic, marker_ends(successor, later))
    conn.close()
    assert_read_exactly(read_values(broker.bootstrap, topic, partitions, READ_COMMITTED),
                        concat([committed, later], partitions), "read_committed after a new producer's commit")


# ---------------------------------------------------------------- three nodes


def partition_leaders(cluster, topic):
    """{partition: (leader, isr)} from a running node's Metadata, or None."""
    for broker in cluster.running():
        try:
            md = AdminClient(client_config(broker.bootstrap, log_level=2)).list_topics(topic, timeout=5)
        except KafkaException:
            continue
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            continue
        return {p: (m.leader, sorted(m.isrs)) for p, m in t.partitions.items()}
    return None


def full_isr(cluster, topic):
    leaders = partition_leaders(cluster, topic)
    return leaders if leaders and all(leader > 0 and len(isr) == 3 for leader, isr in leaders.values()) else False


def transaction_coordinator(cluster, transactional_id):
    """The node FindCoordinator (key type 1) names, asked of the running nodes, or None."""
    for broker in cluster.running():
        try:
            conn = wire.Connection(broker.host, broker.port, timeout=5)
            try:
                error, node, _, _ = wire.find_coordinator(conn, transactional_id, wire.COORDINATOR_TRANSACTION)
            finally:
                conn.close()
        except OSError:
            continue
        if error == wire.ERROR_NONE:
            return node
    return None


def pick_victim(cluster, topic, transactional_id):
    """The leader of one of the topic's partitions to kill: the transaction coordinator's node
    if it leads one (markers and the coordinator fail over together), else partition 0's."""
    leaders = {leader for leader, _ in partition_leaders(cluster, topic).values()}
    coordinator = transaction_coordinator(cluster, transactional_id)
    if coordinator in leaders:
        return coordinator, f"node {coordinator}, the transaction coordinator and a leader of {topic}"
    leader = partition_leaders(cluster, topic)[0][0]
    return leader, f"node {leader}, leader of {topic}-0 (the coordinator is node {coordinator})"


def wait_for_leaders_other_than(cluster, topic, victim):
    def moved():
        leaders = partition_leaders(cluster, topic)
        return leaders and all(leader not in (-1, victim) for leader, _ in leaders.values()) and leaders

    wait_for(f"{topic}'s partitions led by nodes other than {victim}", moved)


class TransactionStream(threading.Thread):
    """Commits transactions of RECORDS values per partition until stopped. An attempt failing
    with an abortable error is aborted and done again with new values; a retriable commit error
    is retried. Anything else (a fatal error) ends the stream and is kept in `fatal`. Once
    `kill_after` transactions have committed, the next one calls `kill` between producing its
    records and committing."""

    def __init__(self, bootstrap, topic, partitions, transactional_id, kill_after, kill):
        super().__init__(daemon=True)
        self.kill_after, self.kill, self.killed = kill_after, kill, threading.Event()
        self.producer = confluent_kafka.Producer(
            client_config(
                bootstrap,
                **{
                    "transactional.id": transactional_id,
                    "transaction.timeout.ms": 30_000,
                    "linger.ms": 5,
                    "request.timeout.ms": 5_000,
                    "topic.metadata.refresh.interval.ms": 500,
                    # Nodes are killed on purpose: their connection errors are expected noise.
                    "log_level": 2,
                },
            )
        )
        self.topic, self.partitions = topic, list(partitions)
        self.committed = []  # {partition: [value]} of every attempt whose commit returned, in order
        self.aborted = []  # the same of every attempt aborted
        self.errors = []  # (transaction, attempt, KafkaError) handled
        self.fatal = None
        self.stopping = threading.Event()

    def run(self):
        try:
            self.producer.init_transactions(60)
            n = 0
            while not self.stopping.is_set():
                attempt = 0
                while not self._attempt(n, attempt, txn_values(f"s{n:04d}-a{attempt}", self.partitions)):
                    attempt += 1
                n += 1
        except BaseException as e:  # noqa: B036 -- the test thread reports it
            self.fatal = e

    def _attempt(self, n, attempt, values):
        try:
            self.producer.begin_transaction()
            for i in range(RECORDS):
                for p in self.partitions:
                    while True:
                        try:
                            self.producer.produce(self.topic, value=values[p][i], partition=p)
                            break
                        except BufferError:
                            self.producer.poll(0.05)
            if self.kill is not None and len(self.committed) >= self.kill_after:
                kill, self.kill = self.kill, None
                kill()
                self.killed.set()
            for retry in range(30):
                try:
                    self.producer.commit_transaction(30)
                    self.committed.append(values)
                    return True
                except KafkaException as e:
                    err = e.args[0]
                    if not err.retriable() or err.txn_requires_abort() or err.fatal():
                        raise
                    self.errors.append((n, attempt, err))
            raise AssertionError(f"transaction {n} attempt {attempt}: commit still retriable after 30 tries")
        except KafkaException as e:
            err = e.args[0]
            self.errors.append((n, attempt, err))
            if not err.txn_requires_abort():
                raise
        for retry in range(30):
            try:
                self.producer.abort_transaction(30)
                self.aborted.append(values)
                return False
            except KafkaException as e:
                err = e.args[0]
                self.errors.append((n, attempt, err))
                if not err.retriable() or err.fatal():
                    raise
        raise AssertionError(f"transaction {n} attempt {attempt}: abort still retriable after 30 tries")

    def stop(self):
        self.stopping.set()
        self.join(120)
        assert not self.is_alive(), f"the transaction stream did not finish; errors {self.errors[-5:]}"


def test_transactions_across_a_leader_kill9_commit_exactly_once(cluster_factory, tmp_path):
    cluster = cluster_factory(extra_args=(*CLUSTER_ARGS, *settings_args(tmp_path, CLUSTER_SETTINGS)))
    topic, partitions = "txn-stream", range(3)
    create_topic(cluster.bootstrap, topic, 3, replication_factor=3, config={"min.insync.replicas": "2"})
    wait_for("a full ISR", lambda: full_isr(cluster, topic))
    # The coordinator's node is known once the first producer asks for it.
    TxnProducer(cluster.bootstrap, "stream").init()
    victim, killed = pick_victim(cluster, topic, "stream")
    stream = TransactionStream(cluster.bootstrap, topic, partitions, "stream", 10, cluster.nodes[victim].kill9)
    stream.start()
    try:
        wait_for(f"killing {killed} in the middle of the eleventh transaction",
                 lambda: stream.killed.is_set() or stream.fatal, timeout=60)
        assert stream.fatal is None
        wait_for_leaders_other_than(cluster, topic, victim)
        at_kill = len(stream.committed)
        wait_for(f"ten commits after killing {killed}",
                 lambda: len(stream.committed) >= at_kill + 10 or stream.fatal, timeout=60)
        assert stream.fatal is None
        cluster.nodes[victim].start()
        wait_for("the killed node back in the ISR", lambda: full_isr(cluster, topic))
        at_restart = len(stream.committed)
        wait_for("five commits after the restart",
                 lambda: len(stream.committed) >= at_restart + 5 or stream.fatal, timeout=60)
    finally:
        stream.stop()
    assert stream.fatal is None, (
        f"the stream ended with {stream.fatal!r} after killing {killed}; errors handled before: {stream.errors[-5:]}"
    )
    wait_for("no transaction holding the last stable offset back",
             lambda: watermarks(cluster.bootstrap, topic, partitions, READ_COMMITTED)
             == watermarks(cluster.bootstrap, topic, partitions))
    expected = concat(stream.committed, partitions)
    read = read_values(cluster.bootstrap, topic, partitions, READ_COMMITTED)
    aborted = {v for values in stream.aborted for vs in values.values() for v in vs}
    read_aborted = [v for rs in read.values() for _, v in rs if v in aborted]
    assert not read_aborted, (
        f"read_committed read {len(read_aborted)} records of aborted attempts (first {read_aborted[:3]}); "
        f"killed {killed}; errors {stream.errors[:5]}"
    )
    assert_read_exactly(read, expected,
                        f"read_committed after killing {killed} ({len(stream.committed)} commits, "
                        f"{len(stream.aborted)} aborts)")


class ApplicationCrash(Exception):
    pass


class ConsumeTransformProduce(threading.Thread):
    """Copies `src` to `dst` exactly once: consumes read_committed, produces each value with an
    "out-" prefix to the same partition, and commits the consumed positions in the same
    transaction (send_offsets_to_transaction). After an abortable error it aborts and starts
    again from the committed offsets; after a fatal one it makes a new producer and consumer.
    Once `kill_at` input records are committed, the next transaction calls `kill` after sending
    its records and offsets and then "crashes": it is left open, and a new producer and consumer
    go on from the committed offsets."""

    def __init__(self, bootstrap, src, dst, partitions, ends, kill_at, kill, group="ctp", transactional_id="ctp"):
        super().__init__(daemon=True)
        self.kill_at, self.kill, self.killed = kill_at, kill, threading.Event()
        self.bootstrap, self.src, self.dst, self.partitions = bootstrap, src, dst, list(partitions)
        self.ends, self.group, self.transactional_id = ends, group, transactional_id
        self.committed_positions = {p: 0 for p in self.partitions}
        self.commits = 0
        self.errors = []  # (stage, KafkaError or exception)
        self.failure = None
        self.stopping = threading.Event()

    def _consumer(self):
        consumer = confluent_kafka.Consumer(
            client_config(
                self.bootstrap,
                **{
                    "group.id": self.group,
                    "isolation.level": READ_COMMITTED,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "log_level": 2,
                },
            )
        )
        # Starts at the group's committed offsets, or the beginning.
        consumer.assign([TopicPartition(self.src, p) for p in self.partitions])
        return consumer

    def _producer(self):
        producer = confluent_kafka.Producer(
            client_config(
                self.bootstrap,
                **{
                    "transactional.id": self.transactional_id,
                    "transaction.timeout.ms": 30_000,
                    "linger.ms": 5,
                    "request.timeout.ms": 5_000,
                    "topic.metadata.refresh.interval.ms": 500,
                    "log_level": 2,
                },
            )
        )
        producer.init_transactions(60)
        return producer

    def done(self):
        return all(self.committed_positions[p] >= self.ends[p] for p in self.partitions)

    def run(self):
        consumer = producer = None
        failures_in_a_row = 0
        try:
            while not self.done() and not self.stopping.is_set():
                if failures_in_a_row > 8:
                    raise AssertionError(f"no commit after {failures_in_a_row} failures in a row")
                try:
                    if producer is None:
                        producer = self._producer()
                    if consumer is None:
                        consumer = self._consumer()
                    if self._one_transaction(consumer, producer):
                        failures_in_a_row = 0
                    continue
                except ApplicationCrash:
                    producer = None  # its transaction left open, for the next producer to abort
                except KafkaException as e:
                    err = e.args[0]
                    self.errors.append(("transaction", err))
                    failures_in_a_row += 1
                    if err.txn_requires_abort() and not err.fatal():
                        try:
                            producer.abort_transaction(30)
                        except KafkaException as e2:
                            self.errors.append(("abort", e2.args[0]))
                            producer = None  # start over with a new producer
                    else:
                        producer = None
                # Start again from the committed offsets.
                if consumer is not None:
                    consumer.close()
                    consumer = None
        except BaseException as e:  # noqa: B036 -- the test thread reports it
            self.failure = e
        finally:
            if consumer is not None:
                consumer.close()

    def _one_transaction(self, consumer, producer):
        """-> True once a transaction commits, False when nothing was there to consume."""
        msgs = consumer.consume(num_messages=20, timeout=0.5)
        if not msgs:
            return False
        producer.begin_transaction()
        for msg in msgs:
            if msg.error():  # a consumer error (a broker went away): it skips no record
                if msg.error().fatal():
                    raise KafkaException(msg.error())
                self.errors.append(("consume", msg.error()))
                continue
            producer.produce(self.dst, value=b"out-" + msg.value(), partition=msg.partition())
        positions = consumer.position([TopicPartition(self.src, p) for p in self.partitions])
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
        if self.kill is not None and self.progress() >= self.kill_at:
            kill, self.kill = self.kill, None
            kill()
            self.killed.set()
            raise ApplicationCrash()
        for retry in range(30):
            try:
                producer.commit_transaction(30)
                break
            except KafkaException as e:
                err = e.args[0]
                if not err.retriable() or err.txn_requires_abort() or err.fatal():
                    raise
                self.errors.append(("commit", err))
        else:
            raise AssertionError("commit still retriable after 30 tries")
        for tp in positions:
            if tp.offset >= 0:
                self.committed_positions[tp.partition] = tp.offset
        self.commits += 1
        return True

    def progress(self):
        return sum(self.committed_positions.values())

    def stop(self):
        self.stopping.set()
        self.join(120)
        assert not self.is_alive(), f"the consume-transform-produce loop did not stop; errors {self.errors[-5:]}"


def test_consume_transform_produce_with_offsets_in_the_transaction_copies_each_record_once(cluster_factory, tmp_path):
    cluster = cluster_factory(extra_args=(*CLUSTER_ARGS, *settings_args(tmp_path, CLUSTER_SETTINGS)))
    src, dst, partitions = "ctp-in", "ctp-out", range(3)
    for topic in (src, dst):
        create_topic(cluster.bootstrap, topic, 3, replication_factor=3, config={"min.insync.replicas": "2"})
        wait_for(f"a full ISR of {topic}", lambda: full_isr(cluster, topic))
    inputs = {p: [b"in-p%d-%05d" % (p, i) for i in range(300)] for p in partitions}
    loader = confluent_kafka.Producer(client_config(cluster.bootstrap, **{"acks": "all", "linger.ms": 5}))
    for p, values in inputs.items():
        for v in values:
            loader.produce(src, value=v, partition=p)
    assert loader.flush(60) == 0
    ends = watermarks(cluster.bootstrap, src, partitions)
    assert ends == {p: 300 for p in partitions}, ends

    TxnProducer(cluster.bootstrap, "ctp").init()  # the coordinator's node is known once asked for
    victim, killed = pick_victim(cluster, dst, "ctp")
    # Once a third of the input is copied, the node dies in the middle of a transaction, after
    # its records and offsets are sent, and the application with it.
    loop = ConsumeTransformProduce(cluster.bootstrap, src, dst, partitions, ends, 300, cluster.nodes[victim].kill9)
    loop.start()
    try:
        wait_for(f"killing {killed} a third of the way",
                 lambda: loop.killed.is_set() or loop.failure or not loop.is_alive(), timeout=60)
        assert loop.failure is None and loop.killed.is_set(), f"{loop.failure!r}; errors {loop.errors[:3]}"
        wait_for_leaders_other_than(cluster, dst, victim)
        at_kill = loop.progress()
        wait_for(f"progress after killing {killed}",
                 lambda: loop.progress() >= at_kill + 60 or loop.failure or not loop.is_alive(), timeout=60)
        cluster.nodes[victim].start()
        wait_for("every input copied", lambda: loop.done() or loop.failure or not loop.is_alive(), timeout=90)
    finally:
        loop.stop()
    assert loop.failure is None, (
        f"the consume-transform-produce loop failed: {loop.failure!r} (killed {killed}); "
        f"errors: {loop.errors[:3]} ... {loop.errors[-3:]}"
    )
    assert loop.done(), f"committed positions {loop.committed_positions}, input ends {ends}"
    group = confluent_kafka.Consumer(client_config(cluster.bootstrap, **{"group.id": "ctp", "log_level": 2}))
    try:
        offsets = group.committed([TopicPartition(src, p) for p in partitions], timeout=30)
    finally:
        group.close()
    assert {tp.partition: tp.offset for tp in offsets} == ends, f"the group's committed offsets {offsets}"
    read = read_values(cluster.bootstrap, dst, partitions, READ_COMMITTED)
    assert_read_exactly(read, {p: [b"out-" + v for v in values] for p, values in inputs.items()},
                        f"read_committed output after killing {killed}: each input once, in input order")
