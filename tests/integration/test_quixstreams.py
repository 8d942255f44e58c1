"""quixstreams with processing_guarantee="exactly-once": a stateful application (a running count
and total per key, kept in a state store backed by a compacted changelog topic) whose output,
changelog writes and consumer offsets go in one transaction per checkpoint. It is killed with
SIGKILL twice midway and restarted, the second time with an empty state directory so that its
state comes back from the changelog alone; a read_committed consumer must then read exactly one
output per input, with each key's totals exactly the running sums of its inputs, in order.
quixstreams runs from its own venv (scripts/test.sh sets ODRADEK_QUIXSTREAMS_PYTHON)."""

import json
import os
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import confluent_kafka
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from test_transactions import (
    ABORT_CHECK,
    READ_COMMITTED,
    READ_UNCOMMITTED,
    client_config,
    create_topic,
    settings_args,
    watermarks,
)

INPUT, OUTPUT, GROUP = "qx-input", "qx-running-totals", "qx-app"
RECORDS, KEYS, INPUT_PARTITIONS = 2_000, 20, 2
# Each input record takes the application at least this long: the whole input takes seconds,
# long enough to kill it midway.
DELAY_S = 0.003
# Small segments and a busy cleaner: the changelogs (transactional, with aborted records and
# markers) are compacted while the application runs, so the last restart may well restore its
# state from a compacted changelog.
BROKER_ARGS = (
    "--log-segment-bytes", "16384",
    "--log-cleaner-backoff-ms", "200",
    "--group-initial-rebalance-delay-ms", "0",
)
APP = Path(__file__).with_name("quixstreams_app.py")


def key_of(i):
    return "key-%02d" % (i % KEYS)


def produce_input(bootstrap):
    """RECORDS records {"n": i}, key i % KEYS; each key on one partition. -> {key: [n, ...]} in
    production order."""
    producer = confluent_kafka.Producer(client_config(bootstrap, **{"linger.ms": 5, "log_level": 2}))
    errors = []
    sent = defaultdict(list)
    for i in range(1, RECORDS + 1):
        key = key_of(i)
        producer.produce(
            INPUT,
            key=key.encode(),
            value=json.dumps({"n": i}).encode(),
            partition=(i % KEYS) % INPUT_PARTITIONS,
            on_delivery=lambda err, msg: err and errors.append(err),
        )
        sent[key].append(i)
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors[:3]
    return sent


def read_all(bootstrap, topic, partitions, isolation, timeout=60):
    """Every record a consumer at this isolation level reads from the start of each partition
    until its position reaches the high watermark; read_committed gets there once no
    transaction is open on the partition. -> messages in (partition, offset) order."""
    ends = watermarks(bootstrap, topic, partitions)
    consumer = confluent_kafka.Consumer(
        client_config(
            bootstrap,
            **{
                "group.id": "qx-tests-reader",
                "isolation.level": isolation,
                "enable.auto.commit": False,
                "auto.offset.reset": "error",
                "log_level": 2,
            },
        )
    )
    read = []
    try:
        consumer.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout
        while True:
            for msg in consumer.consume(num_messages=10_000, timeout=0.2):
                assert msg.error() is None, f"{isolation} consumer of {topic}: {msg.error()}"
                read.append(msg)
            at = {tp.partition: tp.offset for tp in consumer.position([TopicPartition(topic, p) for p in partitions])}
            if all(at[p] >= end for p, end in ends.items() if end > 0):
                return sorted(read, key=lambda m: (m.partition(), m.offset()))
            assert time.monotonic() < deadline, (
                f"{isolation} consumer of {topic} at {at} after {timeout}s; high watermarks {ends}, "
                f"last stable offsets {watermarks(bootstrap, topic, partitions, READ_COMMITTED)}"
            )
    finally:
        consumer.close()


class QuixApp:
    """The application as a subprocess of the quixstreams venv, its output in a log file."""

    def __init__(self, python, bootstrap, tmp_path):
        self.python, self.bootstrap, self.tmp_path = python, bootstrap, tmp_path
        self.proc, self.log, self.runs = None, None, 0

    def start(self, state_dir):
        self.runs += 1
        self.log = self.tmp_path / f"quixstreams-run-{self.runs}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [self.python, str(APP), self.bootstrap, INPUT, OUTPUT, GROUP, str(state_dir), str(DELAY_S)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def tail(self, lines=60):
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_running(self):
        assert self.proc.poll() is None, (
            f"quixstreams run {self.runs} exited with {self.proc.returncode}; {self.log}:\n{self.tail()}"
        )

    def kill9(self):
        self.check_running()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        """SIGTERM, as Kubernetes stops it: quixstreams commits its last checkpoint and exits."""
        self.check_running()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"quixstreams run {self.runs} ignored SIGTERM for 30s:\n{self.tail()}")
        assert code == 0, f"quixstreams run {self.runs} exited with {code} on SIGTERM:\n{self.tail()}"

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def committed_offsets(admin):
    """The group's committed input offsets, {partition: offset}, -1 for none yet."""
    request = ConsumerGroupTopicPartitions(GROUP, [TopicPartition(INPUT, p) for p in range(INPUT_PARTITIONS)])
    result = admin.list_consumer_group_offsets([request], request_timeout=10)[GROUP].result(timeout=15)
    for tp in result.topic_partitions:
        assert tp.error is None, f"OffsetFetch {GROUP} {tp.topic}/{tp.partition}: {tp.error}"
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def wait_for_progress(app, admin, done, what, timeout=60):
    """Until done(committed input records) while the application keeps running."""
    deadline = time.monotonic() + timeout
    while True:
        app.check_running()
        offsets = committed_offsets(admin)
        committed = sum(max(o, 0) for o in offsets.values())
        if done(committed):
            return committed
        assert time.monotonic() < deadline, (
            f"run {app.runs}: {what} not reached after {timeout}s; committed input offsets {offsets}:\n{app.tail()}"
        )
        time.sleep(0.1)


def test_an_exactly_once_stateful_quixstreams_application_counts_each_record_once_across_kill9s(
    broker_factory, tmp_path
):
    python = os.environ.get("ODRADEK_QUIXSTREAMS_PYTHON")
    assert python, "set ODRADEK_QUIXSTREAMS_PYTHON to a python with quixstreams (scripts/test.sh does)"
    broker = broker_factory(*BROKER_ARGS, *settings_args(tmp_path, ABORT_CHECK))
    create_topic(broker.bootstrap, INPUT, INPUT_PARTITIONS)
    sent = produce_input(broker.bootstrap)
    admin = AdminClient(client_config(broker.bootstrap, log_level=2))

    app = QuixApp(python, broker.bootstrap, tmp_path)
    try:
        # Crash with state on disk, restart on it; crash again, restart with none: the state is
        # then only what the changelog holds, committed with the offsets it matches.
        app.start(tmp_path / "state-a")
        wait_for_progress(app, admin, lambda c: c >= RECORDS // 3, f"{RECORDS // 3} records committed")
        app.kill9()
        app.start(tmp_path / "state-a")
        wait_for_progress(app, admin, lambda c: c >= 2 * RECORDS // 3, f"{2 * RECORDS // 3} records committed")
        app.kill9()
        app.start(tmp_path / "state-b")
        wait_for_progress(app, admin, lambda c: c == RECORDS, "every input record committed")
        app.stop()
    finally:
        app.close()
    assert committed_offsets(admin) == {
        p: sum(1 for i in range(1, RECORDS + 1) if (i % KEYS) % INPUT_PARTITIONS == p) for p in range(INPUT_PARTITIONS)
    }

    metadata = admin.list_topics(timeout=10).topics
    assert OUTPUT in metadata, sorted(metadata)
    output_partitions = sorted(metadata[OUTPUT].partitions)
    # Read once the killed runs' transactions are aborted by the coordinator (their
    # transactional ids are not reused) and the last stable offsets reach the ends.
    outputs = defaultdict(list)  # key -> [(count, total, n)] in offset order
    partition_of = {}
    for msg in read_all(broker.bootstrap, OUTPUT, output_partitions, READ_COMMITTED):
        key = msg.key().decode()
        assert partition_of.setdefault(key, msg.partition()) == msg.partition(), f"{key} on two partitions"
        value = json.loads(msg.value())
        outputs[key].append((value["count"], value["total"], value["n"]))

    total_read = sum(len(v) for v in outputs.values())
    assert total_read == RECORDS, f"read_committed: {total_read} output records for {RECORDS} input records"
    for key, ns in sent.items():
        expected, total = [], 0
        for count, n in enumerate(ns, 1):
            total += n
            expected.append((count, total, n))
        got = outputs.get(key, [])
        if got != expected:
            first = next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))
            raise AssertionError(
                f"{key}: {len(got)} outputs for {len(expected)} inputs; first difference at #{first}: "
                f"got {got[first:first + 3]}, expected {expected[first:first + 3]}"
            )

    # The premise of the test: the kills landed inside open transactions, whose outputs are in
    # the log but were aborted.
    written = len(read_all(broker.bootstrap, OUTPUT, output_partitions, READ_UNCOMMITTED))
    assert written > RECORDS, f"{written} output records in the log: no kill interrupted a transaction"

    changelogs = sorted(t for t in metadata if t.startswith("changelog__"))
    assert changelogs, f"no changelog topic among {sorted(metadata)}"
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in changelogs]
    for resource, future in admin.describe_configs(resources, request_timeout=10).items():
        policy = future.result(timeout=15)["cleanup.policy"].value
        assert policy == "compact", f"{resource.name}: cleanup.policy={policy}"
