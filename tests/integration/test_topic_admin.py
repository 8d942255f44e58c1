"""Topic administration through both clients' admin APIs: config validation,
replication factor, duplicates, DescribeConfigs, delete and re-create, auto
creation, and LogAppendTime topics."""

import time

import confluent_kafka
import kafka
import kafka.admin
import kafka.errors
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

import kafka_wire as wire
from kafka_clients import CLIENTS, ConfluentClient, KafkaPythonClient
from log_checks import (
    acked_log,
    assert_high_watermarks,
    assert_log,
    end_offsets_of,
    first_offset_at_or_after,
    make_messages,
)

INVALID_CONFIG = 40
INVALID_REPLICATION_FACTOR = 38
TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
LEADER_NOT_AVAILABLE = 5
DYNAMIC_TOPIC_CONFIG = 1
TOPIC_CONFIG_NAMES = {
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "index.interval.bytes",
    "min.insync.replicas",
}


def now_ms():
    return int(time.time() * 1000)


def restart(broker):
    broker.restart()
    wire.wait_until_serving(broker.host, broker.port)


class ConfluentAdmin:
    name = "confluent-kafka"

    def __init__(self, bootstrap):
        self.admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})

    @staticmethod
    def _code(future):
        try:
            future.result(timeout=60)
            return 0
        except confluent_kafka.KafkaException as e:
            return e.args[0].code()

    def create(self, topic, partitions=1, replication_factor=1, config=None):
        """-> the topic's error code, 0 when created"""
        new = NewTopic(
            topic, num_partitions=partitions, replication_factor=replication_factor, config=dict(config or {})
        )
        return self._code(self.admin.create_topics([new], operation_timeout=30)[topic])

    def delete(self, topic):
        return self._code(self.admin.delete_topics([topic], operation_timeout=30)[topic])

    def describe(self, topic):
        """-> {name: (value, source)}"""
        resource = ConfigResource(confluent_kafka.admin.ResourceType.TOPIC, topic)
        entries = self.admin.describe_configs([resource])[resource].result(timeout=60)
        return {name: (entry.value, int(entry.source)) for name, entry in entries.items()}


class KafkaPythonAdmin:
    name = "kafka-python"

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def _call(self, method, *args):
        admin = kafka.admin.KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            return getattr(admin, method)(*args)
        finally:
            admin.close()

    def create(self, topic, partitions=1, replication_factor=1, config=None):
        new = kafka.admin.NewTopic(topic, partitions, replication_factor, topic_configs=dict(config or {}))
        try:
            self._call("create_topics", [new])
            return 0
        except kafka.errors.KafkaError as e:
            return e.errno

    def delete(self, topic):
        try:
            self._call("delete_topics", [topic])
            return 0
        except kafka.errors.KafkaError as e:
            return e.errno

    def describe(self, topic):
        resource = kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.TOPIC, topic)
        (response,) = self._call("describe_configs", [resource])
        (result,) = response.to_object()["resources"]
        assert result["error_code"] == 0, f"DescribeConfigs {topic}: {result}"
        return {e["config_names"]: (e["config_value"], e["config_source"]) for e in result["config_entries"]}


ADMINS = [ConfluentAdmin, KafkaPythonAdmin]
CLIENT_FOR = {ConfluentAdmin: ConfluentClient, KafkaPythonAdmin: KafkaPythonClient}


def all_topics(broker):
    conn = wire.Connection(broker.host, broker.port)
    try:
        return wire.metadata(conn, None)
    finally:
        conn.close()


def topic_metadata(broker, topic):
    """Metadata v1 for one topic (which lets the broker auto-create it)."""
    conn = wire.Connection(broker.host, broker.port)
    try:
        return wire.metadata(conn, [topic])[topic]
    finally:
        conn.close()


def partition_dirs(broker, topic):
    if not broker.data_dir.exists():
        return []
    return sorted(p.name for p in broker.data_dir.iterdir() if p.is_dir() and p.name.rsplit("-", 1)[0] == topic)


def offsets(broker, topic, partitions, timestamp):
    """-> {partition: (error_code, offset)} from ListOffsets"""
    conn = wire.Connection(broker.host, broker.port)
    try:
        got = wire.list_offsets(conn, [(topic, p, timestamp) for p in partitions])
    finally:
        conn.close()
    return {p: (error_code, offset) for (_, p), (error_code, _, offset) in got.items()}


def assert_absent(broker, topic, timeout=10.0):
    assert topic not in all_topics(broker), f"topic {topic} is listed in Metadata"
    # As in Kafka, a deleted partition's files go once the core that owns it applies the
    # deletion, which may be after DeleteTopics has answered and Metadata has dropped the topic.
    deadline = time.monotonic() + timeout
    while partition_dirs(broker, topic) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not partition_dirs(broker, topic), f"topic {topic} has partition directories {partition_dirs(broker, topic)} after {timeout}s"


# ---- CreateTopics validation ----

BAD_CONFIGS = {
    "unknown name": {"no.such.config": "1"},
    "not a number": {"retention.ms": "soon"},
    "below the minimum": {"segment.bytes": "100"},
    "unknown cleanup policy": {"cleanup.policy": "compact,shred"},
    "dirty ratio above 1": {"min.cleanable.dirty.ratio": "1.5"},
    "unknown timestamp type": {"message.timestamp.type": "Later"},
    "one bad among good ones": {"retention.ms": "60000", "segment.bytes": "20000", "cleanup.policy": "archive"},
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
@pytest.mark.parametrize("admin_class", ADMINS, ids=lambda c: c.name)
def test_invalid_config_is_refused(broker, admin_class, case):
    admin = admin_class(broker.bootstrap)
    topic = "badly-configured"
    assert admin.create(topic, 2, config=BAD_CONFIGS[case]) == INVALID_CONFIG
    assert_absent(broker, topic)
    # Nothing half-made stands in the way of a valid create under the same name.
    assert admin.create(topic, 2, config={"retention.ms": "60000"}) == 0
    assert topic_metadata(broker, topic) == (0, [0, 1])


@pytest.mark.parametrize("admin_class", ADMINS, ids=lambda c: c.name)
def test_replication_factor_beyond_one_broker_is_refused(broker, admin_class):
    admin = admin_class(broker.bootstrap)
    for factor in (3, 2):
        assert admin.create("replicated", 1, replication_factor=factor) == INVALID_REPLICATION_FACTOR, factor
        assert_absent(broker, "replicated")
    assert admin.create("replicated", 1, replication_factor=1) == 0
    assert topic_metadata(broker, "replicated") == (0, [0])


def test_replication_factor_minus_one_means_the_default(broker):
    admin = ConfluentAdmin(broker.bootstrap)
    assert admin.create("defaulted", 3, replication_factor=-1) == 0
    assert topic_metadata(broker, "defaulted") == (0, [0, 1, 2])


@pytest.mark.parametrize("admin_class", ADMINS, ids=lambda c: c.name)
def test_duplicate_create_is_refused_and_changes_nothing(broker, admin_class):
    admin = admin_class(broker.bootstrap)
    client = CLIENT_FOR[admin_class](broker.bootstrap)
    topic = "twice"
    assert admin.create(topic, 2, config={"retention.ms": "3600000"}) == 0
    messages = make_messages(300, now_ms(), tag="twice")
    acked = acked_log(messages, client.produce(topic, messages))
    ends = end_offsets_of(acked)
    before = admin.describe(topic)

    assert admin.create(topic, 2) == TOPIC_ALREADY_EXISTS
    assert admin.create(topic, 5, config={"retention.ms": "1000", "segment.bytes": "2048"}) == TOPIC_ALREADY_EXISTS

    assert topic_metadata(broker, topic) == (0, [0, 1])
    assert admin.describe(topic) == before, "a refused create changed the topic's configs"
    assert_high_watermarks(client, topic, ends)
    assert_log(client.consume(topic, ends), acked, ends)


# ---- DescribeConfigs ----


@pytest.mark.parametrize("admin_class", ADMINS, ids=lambda c: c.name)
def test_describe_configs_shows_overrides_and_broker_defaults(broker_factory, admin_class):
    broker = broker_factory("--log-segment-bytes", "1048576", "--log-retention-ms", "3600000")
    admin = admin_class(broker.bootstrap)
    overrides = {
        "retention.ms": "123456",
        "segment.bytes": "20000",
        "message.timestamp.type": "LogAppendTime",
        "max.message.bytes": "500000",
        "retention.bytes": "7777777",
    }
    defaults = {
        "cleanup.policy": "delete",
        "retention.ms": "3600000",  # --log-retention-ms
        "retention.bytes": "-1",
        "segment.bytes": "1048576",  # --log-segment-bytes
        "segment.ms": str(7 * 24 * 3600 * 1000),
        "max.message.bytes": "1048588",
        "message.timestamp.type": "CreateTime",
        "index.interval.bytes": "4096",
        "min.insync.replicas": "1",
    }
    assert admin.create("tuned", 1, config=overrides) == 0
    assert admin.create("plain", 1) == 0

    def check(stage):
        for topic, own in (("tuned", overrides), ("plain", {})):
            described = admin.describe(topic)
            assert set(described) >= TOPIC_CONFIG_NAMES, f"{stage}: {topic} lacks {TOPIC_CONFIG_NAMES - set(described)}"
            for name in TOPIC_CONFIG_NAMES:
                value, source = described[name]
                if name in own:
                    assert (value, source) == (own[name], DYNAMIC_TOPIC_CONFIG), (
                        f"{stage}: {topic} {name} described as {value!r} from source {source}; "
                        f"set on the topic to {own[name]!r}"
                    )
                else:
                    assert value == defaults[name] and source != DYNAMIC_TOPIC_CONFIG, (
                        f"{stage}: {topic} {name} described as {value!r} from source {source}; "
                        f"not set on the topic, so the broker default {defaults[name]!r}"
                    )

    check("after create")
    restart(broker)
    check("after a restart")


# ---- DeleteTopics ----


@pytest.mark.parametrize("admin_class", ADMINS, ids=lambda c: c.name)
def test_deleted_topic_comes_back_empty(broker, admin_class):
    admin = admin_class(broker.bootstrap)
    client = CLIENT_FOR[admin_class](broker.bootstrap)
    topic = "phoenix"
    assert admin.create(topic, 2, config={"retention.ms": "3600000"}) == 0
    old = make_messages(500, now_ms(), tag="old-life")
    client.produce(topic, old)

    assert admin.delete(topic) == 0
    assert_absent(broker, topic)
    assert admin.delete(topic) == UNKNOWN_TOPIC_OR_PARTITION

    assert admin.create(topic, 1) == 0
    assert topic_metadata(broker, topic) == (0, [0])
    assert partition_dirs(broker, topic) == [f"{topic}-0"]
    assert offsets(broker, topic, [0], wire.LIST_OFFSETS_EARLIEST) == {0: (0, 0)}
    assert offsets(broker, topic, [0], wire.LIST_OFFSETS_LATEST) == {0: (0, 0)}
    assert offsets(broker, topic, [1], wire.LIST_OFFSETS_LATEST)[1][0] == UNKNOWN_TOPIC_OR_PARTITION
    described = admin.describe(topic)
    assert described["retention.ms"][1] != DYNAMIC_TOPIC_CONFIG, f"the old topic's override came back: {described}"

    new = make_messages(5, now_ms(), tag="new-life")
    acked = acked_log(new, client.produce(topic, new))
    assert acked == {0: dict(enumerate(new))}, f"the re-created topic did not start at offset 0: {acked}"
    ends = {0: 5}
    assert_log(client.consume(topic, ends), acked, ends)

    restart(broker)
    assert topic_metadata(broker, topic) == (0, [0])
    assert partition_dirs(broker, topic) == [f"{topic}-0"]
    assert_high_watermarks(client, topic, ends)
    assert_log(client.consume(topic, ends), acked, ends)


# ---- auto creation ----


def test_no_auto_create_leaves_unknown_topics_unknown(broker_factory):
    broker = broker_factory("--no-auto-create-topics", "--num-partitions", "3")
    for _ in range(3):
        assert topic_metadata(broker, "ghost") == (UNKNOWN_TOPIC_OR_PARTITION, [])
    assert_absent(broker, "ghost")

    producer = ConfluentClient(broker.bootstrap).producer(**{"message.timeout.ms": 3000})
    failures = []
    producer.produce("ghost", value=b"boo", on_delivery=lambda err, msg: failures.append(err))
    assert producer.flush(30) == 0
    assert len(failures) == 1 and failures[0] is not None, f"produce to a topic that does not exist: {failures}"
    assert_absent(broker, "ghost")

    # Explicit creation still works.
    assert ConfluentAdmin(broker.bootstrap).create("ghost", 2) == 0
    assert topic_metadata(broker, "ghost") == (0, [0, 1])


def test_auto_create_uses_num_partitions(broker_factory):
    broker = broker_factory("--num-partitions", "3")
    first = topic_metadata(broker, "made-on-demand")
    assert first in ((0, [0, 1, 2]), (LEADER_NOT_AVAILABLE, [])), first
    assert topic_metadata(broker, "made-on-demand") == (0, [0, 1, 2])
    assert partition_dirs(broker, "made-on-demand") == [f"made-on-demand-{p}" for p in range(3)]
    assert topic_metadata(broker, "bad name!")[0] == INVALID_TOPIC_EXCEPTION
    assert "bad name!" not in all_topics(broker)
    messages = make_messages(100, now_ms(), tag="auto")
    client = ConfluentClient(broker.bootstrap)
    acked = acked_log(messages, client.produce("made-on-demand", messages))
    ends = {p: max(acked.get(p, {-1: None})) + 1 for p in range(3)}
    assert_log(client.consume("made-on-demand", ends), acked, ends)


# ---- LogAppendTime ----


@pytest.mark.parametrize("client_class", CLIENTS, ids=lambda c: c.name)
def test_log_append_time_topic_stamps_broker_time(broker, client_class):
    client = client_class(broker.bootstrap)
    topic = "stamped"
    assert ConfluentAdmin(broker.bootstrap).create(topic, 2, config={"message.timestamp.type": "LogAppendTime"}) == 0
    # An hour old: far from any append time.
    messages = make_messages(2_000, now_ms() - 3_600_000, tag="stamped")
    before = now_ms()
    acked = acked_log(messages, client.produce(topic, messages))
    after = now_ms()
    ends = end_offsets_of(acked)
    assert sorted(ends) == [0, 1]
    records = client.consume(topic, ends)
    for partition, got in records.items():
        assert [r.offset for r in got] == list(range(ends[partition])), f"partition {partition}: offsets"
        for r in got:
            sent = acked[partition][r.offset]
            assert (r.message.key, r.message.value, r.message.headers) == (sent.key, sent.value, sent.headers), (
                f"partition {partition} offset {r.offset}: read {r}, sent {sent}"
            )
            assert r.timestamp_type == "log_append", f"partition {partition} offset {r.offset}: {r}"
            # A second of slack each side for clock granularity; the producer's own
            # timestamps are an hour away.
            assert before - 1_000 <= r.message.timestamp <= after + 1_000, (
                f"partition {partition} offset {r.offset}: timestamp {r.message.timestamp}, "
                f"appended between {before} and {after}"
            )

    # Timestamp lookups run on the stored (append) times, not the producer's.
    stored = sorted({r.message.timestamp for got in records.values() for r in got})
    for target in [
        messages[0].timestamp,
        stored[0],
        stored[len(stored) // 2],
        stored[-1],
        stored[-1] + 1,
        after + 60_000,
    ]:
        expected = {p: first_offset_at_or_after(records[p], target) for p in (0, 1)}
        assert client.offsets_for_times(topic, [0, 1], target) == expected, f"offsets_for_times({target})"


def test_produce_response_carries_log_append_time(broker):
    """Kafka's ProduceResponse log_append_time_ms: the broker's append time for a
    LogAppendTime topic, -1 for a CreateTime one."""
    admin = ConfluentAdmin(broker.bootstrap)
    assert admin.create("append-time", 1, config={"message.timestamp.type": "LogAppendTime"}) == 0
    assert admin.create("create-time", 1) == 0
    hour_ago = now_ms() - 3_600_000
    conn = wire.Connection(broker.host, broker.port)
    try:
        answers = {}
        for topic in ("append-time", "create-time"):
            batch = wire.record_batch(make_messages(3, hour_ago, tag=topic))
            before = now_ms()
            body = conn.request(wire.API_PRODUCE, 3, wire.produce_v3_body(topic, 0, batch))
            answers[topic] = (before, now_ms(), wire.parse_produce_v3_append_times(body)[(topic, 0)])
    finally:
        conn.close()

    error_code, base_offset, append_time = answers["create-time"][2]
    assert (error_code, base_offset, append_time) == (0, 0, -1), f"CreateTime topic: {answers['create-time'][2]}"

    before, after, (error_code, base_offset, append_time) = answers["append-time"]
    assert (error_code, base_offset) == (0, 0)
    stored = ConfluentClient(broker.bootstrap).consume("append-time", {0: 3})[0]
    assert {r.message.timestamp for r in stored} == {append_time}, (
        f"LogAppendTime topic: produce response log_append_time_ms={append_time}, appended between "
        f"{before} and {after}; the stored records say {[r.message.timestamp for r in stored]}"
    )


def _delivered_timestamp(client_class, bootstrap, topic, timestamp):
    """-> (timestamp type or None, timestamp) the client reports for an acked message"""
    if client_class is ConfluentClient:
        delivered = []
        producer = ConfluentClient(bootstrap).producer()
        producer.produce(
            topic, value=b"v", timestamp=timestamp, on_delivery=lambda err, msg: delivered.append((err, msg))
        )
        assert producer.flush(30) == 0
        ((err, msg),) = delivered
        assert err is None, err
        ts_type, ts = msg.timestamp()
        names = {
            confluent_kafka.TIMESTAMP_CREATE_TIME: "create",
            confluent_kafka.TIMESTAMP_LOG_APPEND_TIME: "log_append",
        }
        return names.get(ts_type, ts_type), ts
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        metadata = producer.send(topic, value=b"v", timestamp_ms=timestamp).get(timeout=30)
    finally:
        producer.close(timeout=10)
    return None, metadata.timestamp


@pytest.mark.parametrize("client_class", CLIENTS, ids=lambda c: c.name)
def test_delivery_reports_log_append_time(broker, client_class):
    """What the ProduceResponse's log_append_time_ms is for: a producer to a
    LogAppendTime topic learns the timestamp its message was stored with."""
    assert (
        ConfluentAdmin(broker.bootstrap).create("append-time", 1, config={"message.timestamp.type": "LogAppendTime"})
        == 0
    )
    hour_ago = now_ms() - 3_600_000
    before = now_ms()
    ts_type, ts = _delivered_timestamp(client_class, broker.bootstrap, "append-time", hour_ago)
    after = now_ms()
    (stored,) = client_class(broker.bootstrap).consume("append-time", {0: 1})[0]
    assert stored.timestamp_type == "log_append" and before - 1_000 <= stored.message.timestamp <= after + 1_000
    assert ts == stored.message.timestamp and ts_type in (None, "log_append"), (
        f"{client_class.name} reports the delivered message's timestamp as {ts} (type {ts_type}); it was stored "
        f"with log-append time {stored.message.timestamp} (the producer's own timestamp was {hour_ago})"
    )
