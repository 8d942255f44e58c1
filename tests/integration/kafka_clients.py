"""The two client libraries behind one small interface, so every test checks
the same properties whichever library talks to the broker."""

import time
from typing import NamedTuple

import confluent_kafka
import kafka
import kafka.admin
from confluent_kafka.admin import AdminClient, NewTopic


class Message(NamedTuple):
    key: bytes
    value: bytes
    headers: tuple  # ((str, bytes), ...)
    timestamp: int  # ms, CreateTime


class Record(NamedTuple):
    partition: int
    offset: int
    message: Message
    timestamp_type: str  # "create", "log_append" or "none"


def _await(condition, timeout, describe):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {describe()}")


class _Reading:
    """Progress of reading partitions up to known end offsets."""

    def __init__(self, end_offsets, start_offsets=None):
        self.end_offsets = end_offsets
        self.start_offsets = {p: o for p, o in (start_offsets or {}).items() if o >= 0}
        self.records = {p: [] for p in end_offsets}

    def add(self, record):
        self.records[record.partition].append(record)

    def done(self):
        return all(self._position(p) >= end for p, end in self.end_offsets.items())

    def _position(self, partition):
        records = self.records[partition]
        return records[-1].offset + 1 if records else self.start_offsets.get(partition, 0)

    def progress(self):
        return {p: f"{self._position(p)}/{end}" for p, end in self.end_offsets.items()}


class ConfluentClient:
    name = "confluent-kafka"

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def config(self, **overrides):
        return {"bootstrap.servers": self.bootstrap, "broker.address.family": "v4", **overrides}

    def create_topic(self, topic, partitions, config=None):
        admin = AdminClient(self.config())  # must outlive the future
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=dict(config or {}))],
            operation_timeout=30,
        )
        futures[topic].result(timeout=60)

    def producer(self, compression="none", **overrides):
        return confluent_kafka.Producer(
            self.config(
                **{
                    "acks": "all",
                    "enable.idempotence": False,
                    # A retried batch may be written twice or out of order; without
                    # retries every duplicate or reordering is the broker's doing.
                    "retries": 0,
                    "compression.type": compression,
                    "linger.ms": 20,
                    "batch.size": 1_000_000,
                    "queue.buffering.max.messages": 1_000_000,
                    **overrides,
                }
            )
        )

    def produce(self, topic, messages, compression="none", partition=None, producer_config=None):
        """Produce all messages and wait for every ack; -> [(partition, offset)].
        producer_config: librdkafka settings on top of producer()'s."""
        producer = self.producer(compression, **(producer_config or {}))
        acks = [None] * len(messages)
        errors = []

        def on_delivery(index, err, msg):
            if err is not None:
                errors.append((index, err))
            else:
                acks[index] = (msg.partition(), msg.offset())

        for index, m in enumerate(messages):
            extra = {} if partition is None else {"partition": partition}
            producer.produce(
                topic,
                key=m.key,
                value=m.value,
                headers=list(m.headers),
                timestamp=m.timestamp,
                on_delivery=lambda err, msg, index=index: on_delivery(index, err, msg),
                **extra,
            )
            producer.poll(0)
        remaining = producer.flush(120)
        assert remaining == 0, f"{remaining} messages still undelivered after flush"
        assert not errors, f"{len(errors)} deliveries failed, first: {errors[:3]}"
        return acks

    def consumer(self):
        return confluent_kafka.Consumer(
            self.config(
                **{
                    # Required by the library even though no group API is used.
                    "group.id": "odradek-tests-unused",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    # Never silently jump elsewhere in the log: surface the error.
                    "auto.offset.reset": "error",
                }
            )
        )

    def consume(self, topic, end_offsets, timeout=120, start_offsets=None):
        """Read each partition from the beginning (or its start offset) until its end offset."""
        consumer = self.consumer()
        starts = start_offsets or {}
        reading = _Reading(end_offsets, starts)
        try:
            consumer.assign(
                [
                    confluent_kafka.TopicPartition(topic, p, starts.get(p, confluent_kafka.OFFSET_BEGINNING))
                    for p in end_offsets
                ]
            )

            def poll():
                for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                    if msg.error():
                        raise AssertionError(f"consume error: {msg.error()}")
                    reading.add(_confluent_record(msg))
                return reading.done()

            _await(poll, timeout, lambda: f"consumed {reading.progress()}")
        finally:
            consumer.close()
        return reading.records

    def end_offsets(self, topic, partitions):
        consumer = self.consumer()
        try:
            return {
                p: consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=30)[1]
                for p in partitions
            }
        finally:
            consumer.close()

    def offsets_for_times(self, topic, partitions, timestamp):
        """-> {partition: first offset with timestamp >= timestamp, or None}"""
        consumer = self.consumer()
        try:
            found = consumer.offsets_for_times(
                [confluent_kafka.TopicPartition(topic, p, timestamp) for p in partitions], timeout=30
            )
        finally:
            consumer.close()
        for tp in found:
            assert tp.error is None, f"offsets_for_times partition {tp.partition}: {tp.error}"
        return {tp.partition: (None if tp.offset == -1 else tp.offset) for tp in found}


def _confluent_record(msg):
    ts_type, ts = msg.timestamp()
    types = {
        confluent_kafka.TIMESTAMP_CREATE_TIME: "create",
        confluent_kafka.TIMESTAMP_LOG_APPEND_TIME: "log_append",
    }
    return Record(
        msg.partition(),
        msg.offset(),
        Message(msg.key(), msg.value(), tuple(msg.headers() or ()), ts),
        types.get(ts_type, "none"),
    )


class KafkaPythonClient:
    name = "kafka-python"

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def create_topic(self, topic, partitions, config=None):
        admin = kafka.admin.KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            # Raises on a topic error code.
            admin.create_topics(
                [
                    kafka.admin.NewTopic(
                        topic, num_partitions=partitions, replication_factor=1, topic_configs=dict(config or {})
                    )
                ],
                timeout_ms=30_000,
            )
        finally:
            admin.close()

    def produce(self, topic, messages, compression="none", partition=None):
        producer = kafka.KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=False,
            retries=0,  # see ConfluentClient.producer
            compression_type=None if compression == "none" else compression,
            # kafka-python spends its time per batch, so make batches big.
            linger_ms=50,
            batch_size=512 * 1024,
            request_timeout_ms=60_000,
        )
        try:
            futures = [
                producer.send(
                    topic,
                    key=m.key,
                    value=m.value,
                    headers=list(m.headers),
                    timestamp_ms=m.timestamp,
                    partition=partition,
                )
                for m in messages
            ]
            producer.flush(timeout=120)
            failed = [(i, f.exception) for i, f in enumerate(futures) if not f.succeeded()]
            assert not failed, f"{len(failed)} deliveries failed, first: {failed[:3]}"
            return [(f.value.partition, f.value.offset) for f in futures]
        finally:
            producer.close(timeout=10)

    def consumer(self):
        return kafka.KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            # Never silently jump elsewhere in the log: surface the error.
            auto_offset_reset="none",
            max_poll_records=10_000,
        )

    def consume(self, topic, end_offsets, timeout=120, start_offsets=None):
        consumer = self.consumer()
        starts = start_offsets or {}
        reading = _Reading(end_offsets, starts)
        try:
            partitions = [kafka.TopicPartition(topic, p) for p in end_offsets]
            consumer.assign(partitions)
            from_beginning = [tp for tp in partitions if tp.partition not in starts]
            if from_beginning:  # no arguments would mean every assigned partition
                consumer.seek_to_beginning(*from_beginning)
            for tp in partitions:
                if tp.partition in starts:
                    consumer.seek(tp, starts[tp.partition])

            def poll():
                for records in consumer.poll(timeout_ms=500).values():
                    for r in records:
                        reading.add(
                            Record(
                                r.partition,
                                r.offset,
                                Message(r.key, r.value, tuple(r.headers), r.timestamp),
                                {0: "create", 1: "log_append"}.get(r.timestamp_type, "none"),
                            )
                        )
                return reading.done()

            _await(poll, timeout, lambda: f"consumed {reading.progress()}")
        finally:
            consumer.close()
        return reading.records

    def end_offsets(self, topic, partitions):
        consumer = self.consumer()
        try:
            found = consumer.end_offsets([kafka.TopicPartition(topic, p) for p in partitions])
        finally:
            consumer.close()
        return {tp.partition: offset for tp, offset in found.items()}

    def offsets_for_times(self, topic, partitions, timestamp):
        consumer = self.consumer()
        try:
            found = consumer.offsets_for_times({kafka.TopicPartition(topic, p): timestamp for p in partitions})
        finally:
            consumer.close()
        return {tp.partition: (None if hit is None else hit.offset) for tp, hit in found.items()}


CLIENTS = [ConfluentClient, KafkaPythonClient]
