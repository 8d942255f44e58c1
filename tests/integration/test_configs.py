"""Dynamic configs through both clients' admin APIs: IncrementalAlterConfigs (confluent-kafka)
and AlterConfigs (kafka-python) change a live topic and the brokers' defaults, the change takes
effect on the next produce without a restart, survives a restart, and DescribeConfigs reports
each value with its source and synonyms. Also: a stock Kafka server.properties starts the broker."""

import re
import time

import confluent_kafka
import kafka
import kafka.admin
import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic

import kafka_wire as wire

INVALID_CONFIG = 40
UNKNOWN_TOPIC_OR_PARTITION = 3


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(a, name, partitions=1, config=None):
    a.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(timeout=60)


def topic_resource(name):
    return ConfigResource(confluent_kafka.admin.ResourceType.TOPIC, name)


def describe(a, resource):
    """-> {name: ConfigEntry}"""
    return a.describe_configs([resource])[resource].result(timeout=60)


def alter(a, resource, *entries):
    """entries: (name, value or None for DELETE, op)"""
    changes = [ConfigEntry(n, v, incremental_operation=op) for n, v, op in entries]
    resource = ConfigResource(resource.restype, resource.name, incremental_configs=changes)
    return a.incremental_alter_configs([resource])[resource].result(timeout=60)


def log_start(broker, topic):
    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watermarks"})
    try:
        low, _high = consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0), timeout=10)
        return low
    finally:
        consumer.close()


def produce_one(broker, topic, size, acks="all"):
    """-> None, or the KafkaError the delivery report carried."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap, "acks": acks, "message.max.bytes": 10_000_000, "retries": 0}
    )
    errors = []
    producer.produce(topic, b"x" * size, on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(30) == 0
    del producer
    return errors[0]


def test_incremental_alter_configs_change_a_live_topic_and_a_restart_keeps_them(broker_factory):
    broker = broker_factory()
    a = admin(broker)
    create(a, "live")
    assert produce_one(broker, "live", 5000) is None

    alter(a, topic_resource("live"), ("max.message.bytes", "2000", AlterConfigOpType.SET),
          ("min.insync.replicas", "2", AlterConfigOpType.SET), ("compression.type", "zstd", AlterConfigOpType.SET))
    described = describe(a, topic_resource("live"))
    for name, value in [("max.message.bytes", "2000"), ("min.insync.replicas", "2"), ("compression.type", "zstd")]:
        assert (described[name].value, described[name].source) == (value, ConfigSource.DYNAMIC_TOPIC_CONFIG.value), name
    # The next produce is checked against the new values: too large, then too few in-sync replicas.
    assert produce_one(broker, "live", 5000, acks="1").code() == confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE
    assert produce_one(broker, "live", 100).code() == confluent_kafka.KafkaError.NOT_ENOUGH_REPLICAS
    assert produce_one(broker, "live", 100, acks="1") is None

    broker.restart()
    a = admin(broker)
    assert describe(a, topic_resource("live"))["min.insync.replicas"].value == "2"
    assert produce_one(broker, "live", 100).code() == confluent_kafka.KafkaError.NOT_ENOUGH_REPLICAS

    alter(a, topic_resource("live"), ("min.insync.replicas", None, AlterConfigOpType.DELETE),
          ("max.message.bytes", None, AlterConfigOpType.DELETE))
    described = describe(a, topic_resource("live"))
    assert (described["min.insync.replicas"].value, described["min.insync.replicas"].source) == (
        "1", ConfigSource.DEFAULT_CONFIG.value)
    assert produce_one(broker, "live", 5000) is None


def test_compression_type_recompresses_on_the_broker_and_changes_live(broker_factory):
    broker = broker_factory()
    a = admin(broker)
    create(a, "squeezed", config={"compression.type": "gzip"})
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "lz4", "linger.ms": 0})
    values = [f"value {i} ".encode() * 20 for i in range(30)]
    for v in values[:10]:
        producer.produce("squeezed", v)
    producer.flush(30)
    alter(a, topic_resource("squeezed"), ("compression.type", "zstd", AlterConfigOpType.SET))
    for v in values[10:20]:
        producer.produce("squeezed", v)
    producer.flush(30)
    alter(a, topic_resource("squeezed"), ("compression.type", None, AlterConfigOpType.DELETE))
    for v in values[20:]:
        producer.produce("squeezed", v)
    assert producer.flush(30) == 0
    del producer

    segment = broker.data_dir / "squeezed-0" / ("0" * 20 + ".log")
    codecs = [b.attributes & 0x07 for b in wire.parse_batches(wire.without_padding(segment.read_bytes()))]
    assert all(b.crc_ok for b in wire.parse_batches(wire.without_padding(segment.read_bytes())))
    gzip, lz4, zstd = 1, 3, 4
    # gzip while the topic asked for it, zstd after the change, the producer's lz4 once it is `producer` again.
    assert codecs[0] == gzip and codecs[-1] == lz4 and zstd in codecs, codecs
    assert codecs == sorted(codecs, key=[gzip, zstd, lz4].index), codecs

    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "squeeze", "auto.offset.reset": "earliest"})
    consumer.subscribe(["squeezed"])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < len(values) and time.monotonic() < deadline:
        m = consumer.poll(1)
        if m is not None and m.error() is None:
            got.append(m.value())
    consumer.close()
    assert got == values


def test_append_and_subtract_edit_list_configs_and_other_configs_refuse_them(broker_factory):
    broker = broker_factory()
    a = admin(broker)
    create(a, "lists")
    alter(a, topic_resource("lists"), ("cleanup.policy", "compact", AlterConfigOpType.APPEND))
    assert describe(a, topic_resource("lists"))["cleanup.policy"].value == "delete,compact"
    alter(a, topic_resource("lists"), ("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT))
    assert describe(a, topic_resource("lists"))["cleanup.policy"].value == "compact"
    with pytest.raises(confluent_kafka.KafkaException) as refused:
        alter(a, topic_resource("lists"), ("retention.ms", "5", AlterConfigOpType.APPEND))
    assert refused.value.args[0].code() == INVALID_CONFIG
    for bad in [("retention.ms", "soon"), ("no.such.config", "1"), ("compression.type", "brotli")]:
        with pytest.raises(confluent_kafka.KafkaException) as refused:
            alter(a, topic_resource("lists"), (*bad, AlterConfigOpType.SET))
        assert refused.value.args[0].code() == INVALID_CONFIG, bad
    with pytest.raises(confluent_kafka.KafkaException) as refused:
        alter(a, topic_resource("missing"), ("retention.ms", "5", AlterConfigOpType.SET))
    assert refused.value.args[0].code() == UNKNOWN_TOPIC_OR_PARTITION
    # validate_only answers without changing anything.
    resource = ConfigResource(confluent_kafka.admin.ResourceType.TOPIC, "lists",
                              incremental_configs=[ConfigEntry("retention.ms", "7", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([resource], validate_only=True)[resource].result(timeout=60)
    assert describe(a, topic_resource("lists"))["retention.ms"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def test_retention_set_on_a_live_topic_deletes_its_old_segments(broker_factory):
    broker = broker_factory("--log-retention-check-interval-ms", "200")
    a = admin(broker)
    create(a, "aging", config={"segment.ms": "100"})
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(5):
        producer.produce("aging", f"m{i}".encode())
        producer.flush(10)
        time.sleep(0.3)
    assert log_start(broker, "aging") == 0
    alter(a, topic_resource("aging"), ("retention.ms", "500", AlterConfigOpType.SET))
    deadline = time.monotonic() + 20
    while log_start(broker, "aging") == 0:
        assert time.monotonic() < deadline, "retention.ms set live never deleted a segment"
        time.sleep(0.2)


def test_broker_defaults_static_and_dynamic_with_their_sources(broker_factory):
    broker = broker_factory("--min-insync-replicas", "2")
    a = admin(broker)
    create(a, "layered")
    described = describe(a, topic_resource("layered"))
    entry = described["min.insync.replicas"]
    assert (entry.value, entry.source) == ("2", ConfigSource.STATIC_BROKER_CONFIG.value)
    # confluent-kafka keys synonyms by name, so of the static and default min.insync.replicas
    # only one shows; retention.ms shows Kafka's default under log.retention.hours.
    assert "min.insync.replicas" in entry.synonyms
    retention = described["retention.ms"]
    assert (retention.value, retention.source) == ("604800000", ConfigSource.DEFAULT_CONFIG.value)
    default = retention.synonyms["log.retention.hours"]
    assert (default.value, default.source) == ("168", ConfigSource.DEFAULT_CONFIG.value)

    # The cluster-wide default (the empty broker name), through kafka-python: librdkafka
    # refuses an empty resource name.
    client = kafka.admin.KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        cluster = kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.BROKER, "",
                                             configs={"log.retention.ms": "3600000", "min.insync.replicas": "1"})
        response = client.alter_configs([cluster])
        assert [r[0] for r in response.resources] == [0], response
        not_dynamic = kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.BROKER, "", configs={"num.partitions": "3"})
        response = client.alter_configs([not_dynamic])
        # Settings read only at start cannot change at run time.
        assert [r[0] for r in response.resources] == [INVALID_CONFIG], response
        client.alter_configs([cluster])
    finally:
        client.close()
    described = describe(a, topic_resource("layered"))
    assert (described["retention.ms"].value, described["retention.ms"].source) == (
        "3600000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    assert described["min.insync.replicas"].value == "1"
    assert produce_one(broker, "layered", 10) is None

    this_broker = ConfigResource(confluent_kafka.admin.ResourceType.BROKER, "0")
    alter(a, this_broker, ("log.retention.minutes", "2", AlterConfigOpType.SET))
    described = describe(a, topic_resource("layered"))
    assert (described["retention.ms"].value, described["retention.ms"].source) == (
        "120000", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
    broker_described = describe(a, this_broker)
    assert (broker_described["log.retention.minutes"].value, broker_described["log.retention.minutes"].source) == (
        "2", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
    assert broker_described["node.id"].is_read_only


def test_kafka_python_alter_configs_replaces_a_topics_configs(broker_factory):
    broker = broker_factory()
    client = kafka.admin.KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        client.create_topics([kafka.admin.NewTopic("legacy", 1, 1, topic_configs={"retention.ms": "1000"})])
        resource = kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.TOPIC, "legacy",
                                              configs={"segment.bytes": "1048576", "preallocate": "true"})
        response = client.alter_configs([resource])
        assert [r[0] for r in response.resources] == [0], response
        (described,) = client.describe_configs([kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.TOPIC, "legacy")])
        (result,) = described.to_object()["resources"]
        entries = {e["config_names"]: (e["config_value"], e["config_source"]) for e in result["config_entries"]}
        assert entries["segment.bytes"] == ("1048576", 1)
        assert entries["preallocate"] == ("true", 1)
        # AlterConfigs replaces the whole set: retention.ms went back to its default.
        assert entries["retention.ms"] == ("604800000", 5)
        bad = kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.TOPIC, "legacy", configs={"segment.bytes": "1"})
        response = client.alter_configs([bad])
        assert [r[0] for r in response.resources] == [INVALID_CONFIG], response
    finally:
        client.close()


# Kafka 3.7's config/kraft/server.properties with its comments dropped; ports and the log
# directory are filled in by the test.
STOCK_SERVER_PROPERTIES = """
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
inter.broker.listener.name=PLAINTEXT
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.dirs={log_dir}
num.partitions=1
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
log.retention.hours=168
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
delete.topic.enable=true
broker.rack=r1
"""


def test_a_stock_kafka_server_properties_starts_the_broker(tmp_path):
    import subprocess

    from conftest import ODRADEK_BIN, _free_port

    port, controller_port = _free_port(), _free_port()
    props = tmp_path / "server.properties"
    props.write_text(STOCK_SERVER_PROPERTIES.format(port=port, controller_port=controller_port, log_dir=tmp_path / "logs"))
    log = tmp_path / "broker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ODRADEK_BIN), "serve", "--config", str(props)], stdout=out, stderr=out,
                                env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    try:
        wire.wait_until_serving("127.0.0.1", port, timeout=30)
        bootstrap = f"127.0.0.1:{port}"
        producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        producer.produce("stock", b"hello")
        assert producer.flush(30) == 0
        del producer
        text = log.read_text()
        for key in ["num.network.threads", "num.io.threads", "transaction.state.log.min.isr", "delete.topic.enable"]:
            assert len(re.findall(rf"setting=\"?{re.escape(key)}", text)) == 1, f"{key} not named once:\n{text}"
        assert (tmp_path / "logs").is_dir()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    # An invalid value of a setting odradek uses still stops it, naming the setting.
    props.write_text(props.read_text().replace("log.retention.hours=168", "log.retention.hours=a week"))
    result = subprocess.run([str(ODRADEK_BIN), "serve", "--config", str(props)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "log.retention.hours" in result.stderr
