import threading
import time
from collections import Counter, defaultdict

import pytest

from kafka_clients import ConfluentClient
from log_checks import assert_log, make_message

TOPIC = "crash"
PARTITIONS = 4
CRASHES = 3
STREAM_SECONDS = 3
MIN_ACKS_PER_STREAM = 1_000


class ContinuousProducer(threading.Thread):
    """Produces numbered messages round-robin over the partitions until
    stopped, recording which were acknowledged where."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.producer = client.producer(
            **{
                "linger.ms": 5,
                # Messages queued while the broker is down must wait for the restart.
                "message.timeout.ms": 60_000,
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 500,
            }
        )
        self.sent = {}  # value -> (partition, Message)
        self.acked = {}  # value -> (partition, offset)
        self.failures = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def ack_count(self):
        with self.lock:
            return len(self.acked)

    def _on_delivery(self, err, msg):
        with self.lock:
            if err is None:
                self.acked[msg.value()] = (msg.partition(), msg.offset())
            else:
                self.failures[str(err)] += 1

    def run(self):
        index = 0
        while not self.stopping.is_set():
            message = make_message(index, int(time.time() * 1000), tag="crash")
            partition = index % PARTITIONS
            try:
                self.producer.produce(
                    TOPIC,
                    key=message.key,
                    value=message.value,
                    headers=list(message.headers),
                    timestamp=message.timestamp,
                    partition=partition,
                    on_delivery=self._on_delivery,
                )
            except BufferError:
                self.producer.poll(0.05)
                continue
            with self.lock:
                self.sent[message.value] = (partition, message)
            index += 1
            self.producer.poll(0)
            if index % 5 == 0:
                time.sleep(0.001)  # a steady stream, not a flood of the local queue
        self.producer.flush(60)

    def stop(self):
        self.stopping.set()
        self.join(90)
        assert not self.is_alive(), "producer did not finish flushing"


def wait_for_acks(producer, count, timeout=60):
    deadline = time.monotonic() + timeout
    while producer.ack_count() < count:
        assert time.monotonic() < deadline, (
            f"only {producer.ack_count()} of {count} acks after {timeout}s; failures {dict(producer.failures)}"
        )
        time.sleep(0.05)


@pytest.mark.timeout(600)
def test_acked_writes_survive_kill9(broker):
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(TOPIC, PARTITIONS)
    producer = ContinuousProducer(client)
    producer.start()
    try:
        for _ in range(CRASHES):
            before = producer.ack_count()
            time.sleep(STREAM_SECONDS)
            wait_for_acks(producer, before + MIN_ACKS_PER_STREAM)
            broker.kill9()
            broker.restart()
            # Acks from the restarted broker: producing resumes where the log ends.
            wait_for_acks(producer, producer.ack_count() + MIN_ACKS_PER_STREAM)
    finally:
        producer.stop()

    acked = defaultdict(dict)
    for value, (partition, offset) in producer.acked.items():
        previous = acked[partition].setdefault(offset, producer.sent[value][1])
        assert previous.value == value, f"partition {partition} offset {offset} acked for {previous.value} and {value}"

    ends = client.end_offsets(TOPIC, range(PARTITIONS))
    records = client.consume(TOPIC, ends)
    # Writes in flight at a crash may or may not have persisted; anything
    # else in the log must be a message sent once to that partition.
    assert_log(records, acked, ends, only_acked=False)
    for partition, partition_records in records.items():
        for r in partition_records:
            sent_partition, sent = producer.sent.get(r.message.value, (None, None))
            assert (sent_partition, sent) == (partition, r.message), (
                f"partition {partition} offset {r.offset} holds {r.message}, which was not sent there"
            )
    values = Counter(r.message.value for rs in records.values() for r in rs)
    duplicated = [v for v, n in values.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} values were sent once but stored twice, e.g. {duplicated[:3]}"
