"""The Kafka-shaped admin commands (`odradek topics`, `configs`, `cluster`, `log-dirs`,
`produce`, `consume`, `delete-records`) end to end against real brokers, each checked with a
real client: confluent-kafka (librdkafka) and kafka-python 3 (run from its own venv,
ODRADEK_KAFKA_PYTHON3). Also DescribeCluster and DescribeLogDirs as those clients use them.

Every command: exit status 0 and its output on stdout on success; 1 and one line on stderr on
failure."""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

import kafka_wire as wire
from conftest import ODRADEK_BIN
from kafka_clients import ConfluentClient

TIMEOUT = 60
DESCRIBE_CLUSTER = 60
MISMATCHED_ENDPOINT_TYPE = 114
UNSUPPORTED_ENDPOINT_TYPE = 115
DYNAMIC_TOPIC_CONFIG = 1


def odradek(*args, stdin=None, timeout=TIMEOUT):
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    return subprocess.run(
        [str(ODRADEK_BIN), *map(str, args)], input=stdin, capture_output=True, text=True, timeout=timeout, env=env
    )


def ok(*args, **kwargs):
    run = odradek(*args, **kwargs)
    assert run.returncode == 0, f"odradek {' '.join(map(str, args))}: exit {run.returncode}\n{run.stderr}"
    return run


def failed(*args, **kwargs):
    """-> the one line the command printed on stderr, having checked it failed with status 1."""
    run = odradek(*args, **kwargs)
    assert run.returncode == 1, f"exit {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}"
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {run.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "log_level": 2})


def topic_partitions(bootstrap, topic):
    """-> {partition: leader} from librdkafka's Metadata, None when the topic is absent."""
    listed = admin(bootstrap).list_topics(timeout=TIMEOUT).topics
    if topic not in listed or listed[topic].error is not None:
        return None
    return {p.id: p.leader for p in listed[topic].partitions.values()}


def wait_for(condition, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def kafka_python3(script, *args):
    """Runs `script` with kafka-python 3's interpreter; -> the JSON its last line prints."""
    python = os.environ.get("ODRADEK_KAFKA_PYTHON3")
    assert python, "set ODRADEK_KAFKA_PYTHON3 to a python with kafka-python 3 (scripts/test.sh does)"
    run = subprocess.run([python, "-c", script, *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def consume_all(bootstrap, topic, partitions):
    """-> {partition: [values]} read with librdkafka up to each partition's high watermark."""
    consumer = ConfluentClient(bootstrap).consumer()
    ends = {}
    for p in range(partitions):
        _, high = consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=TIMEOUT)
        ends[p] = high
    consumer.close()
    records = ConfluentClient(bootstrap).consume(topic, ends)
    return {p: [r.message.value for r in rs] for p, rs in records.items()}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- topics ----


def test_topics_create_list_describe_delete(broker):
    b = broker.bootstrap
    run = ok("topics", "--bootstrap-server", b, "--create", "--topic", "cli-t", "--partitions", "3",
             "--replication-factor", "1", "--config", "retention.ms=123456", "--config", "cleanup.policy=compact")
    assert run.stdout == "Created topic cli-t.\n"
    assert sorted(topic_partitions(b, "cli-t")) == [0, 1, 2]

    assert "cli-t" in ok("topics", "--bootstrap-server", b, "--list").stdout.splitlines()
    assert "cli-t" in json.loads(ok("topics", "--bootstrap-server", b, "--list", "--output", "json").stdout)

    described = ok("topics", "--bootstrap-server", b, "--describe", "--topic", "cli-t").stdout.splitlines()
    header = dict(field.split(": ", 1) for field in described[0].split("\t"))
    assert header["Topic"] == "cli-t" and header["PartitionCount"] == "3" and header["ReplicationFactor"] == "1"
    assert set(header["Configs"].split(",")) >= {"retention.ms=123456", "cleanup.policy=compact"}
    leaders = topic_partitions(b, "cli-t")
    for p, line in enumerate(described[1:]):
        fields = dict(field.split(": ", 1) for field in line.strip().split("\t"))
        assert fields["Partition"] == str(p)
        assert fields["Leader"] == str(leaders[p]) == fields["Replicas"] == fields["Isr"]

    [as_json] = json.loads(ok("topics", "--bootstrap-server", b, "--describe", "--topic", "cli-t", "--output", "json").stdout)
    assert as_json["partition_count"] == 3
    assert as_json["configs"]["retention.ms"] == "123456"
    assert {p["partition"]: p["leader"] for p in as_json["partitions"]} == leaders
    # Without --topic every topic is described.
    assert "cli-t" in [t["name"] for t in json.loads(ok("topics", "--bootstrap-server", b, "--describe", "--output", "json").stdout)]

    # Kafka's errors, and the options that make them no error.
    assert "TOPIC_ALREADY_EXISTS" in failed("topics", "--bootstrap-server", b, "--create", "--topic", "cli-t")
    assert ok("topics", "--bootstrap-server", b, "--create", "--topic", "cli-t", "--if-not-exists").stdout == ""

    assert ok("topics", "--bootstrap-server", b, "--delete", "--topic", "cli-t").stdout == "Deleted topic cli-t.\n"
    wait_for(lambda: topic_partitions(b, "cli-t") is None, "the deleted topic to leave the metadata")
    assert "cli-t" not in ok("topics", "--bootstrap-server", b, "--list").stdout.splitlines()


def test_topics_errors_are_one_line_and_exit_1(broker):
    b = broker.bootstrap
    assert failed("topics", "--bootstrap-server", b, "--describe", "--topic", "nope") == \
        "error: Topic 'nope' does not exist as expected"
    assert failed("topics", "--bootstrap-server", b, "--delete", "--topic", "nope") == \
        "error: Topic 'nope' does not exist as expected"
    assert ok("topics", "--bootstrap-server", b, "--delete", "--topic", "nope", "--if-exists").stdout == ""
    assert "--topic is required with --create" in failed("topics", "--bootstrap-server", b, "--create")
    # A bad topic name is refused before anything is sent.
    assert "contains characters" in failed("topics", "--bootstrap-server", b, "--create", "--topic", "bad name")


def test_commands_against_a_broker_that_is_down():
    down = f"127.0.0.1:{free_port()}"
    for args in (
        ["topics", "--list"],
        ["cluster"],
        ["log-dirs", "--describe"],
        ["configs", "--describe", "--entity-type", "topics", "--entity-name", "t"],
        ["consume", "--topic", "t", "--max-messages", "1"],
    ):
        line = failed(*args, "--bootstrap-server", down, stdin="")
        assert f"could not connect to {down}" in line, line
    assert f"could not connect to {down}" in failed("produce", "--topic", "t", "--bootstrap-server", down, stdin="x\n")


def test_topics_alter_adds_partitions(broker):
    b = broker.bootstrap
    ok("topics", "--bootstrap-server", b, "--create", "--topic", "grow", "--partitions", "2")
    ok("topics", "--bootstrap-server", b, "--alter", "--topic", "grow", "--partitions", "5")
    wait_for(lambda: len(topic_partitions(b, "grow") or {}) == 5, "5 partitions")
    # Fewer partitions than the topic has: the broker's INVALID_PARTITIONS, on one line.
    assert "INVALID_PARTITIONS" in failed("topics", "--bootstrap-server", b, "--alter", "--topic", "grow", "--partitions", "3")


def test_topics_alter_prints_the_brokers_refusal(broker):
    """Whether or not the broker serves CreatePartitions yet, the command's failure is the
    one-line kind: the broker's error, or the API it does not serve."""
    b = broker.bootstrap
    ok("topics", "--bootstrap-server", b, "--create", "--topic", "grow2", "--partitions", "2")
    line = failed("topics", "--bootstrap-server", b, "--alter", "--topic", "grow2", "--partitions", "1")
    assert "CreatePartitions" in line


# ---- produce, consume ----


def test_produce_100_lines_read_with_librdkafka(broker):
    b = broker.bootstrap
    ConfluentClient(b).create_topic("cli-produce", 3)
    lines = [f"line-{i:03d}" for i in range(100)]
    run = ok("produce", "--bootstrap-server", b, "--topic", "cli-produce", stdin="\n".join(lines) + "\n")
    assert run.stdout == ""
    read = consume_all(b, "cli-produce", 3)
    values = [v.decode() for vs in read.values() for v in vs]
    assert sorted(values) == lines, "each line once"
    for vs in read.values():
        assert vs == sorted(vs), "in order within a partition"


def test_keyed_lines_land_where_the_java_partitioner_puts_them(broker):
    """murmur2 like Kafka's default partitioner: librdkafka's murmur2_random partitioner is
    the same function, so both producers put each key on the same partition."""
    b = broker.bootstrap
    ConfluentClient(b).create_topic("cli-keys", 5)
    keys = [f"key-{i}" for i in range(40)]
    stdin = "".join(f"{k}:value-{k}\n" for k in keys)
    ok("produce", "--bootstrap-server", b, "--topic", "cli-keys", "--property", "parse.key=true",
       "--property", "key.separator=:", "--acks", "1", stdin=stdin)
    producer = confluent_kafka.Producer({"bootstrap.servers": b, "broker.address.family": "v4", "partitioner": "murmur2_random"})
    expected = {}
    for k in keys:
        producer.produce("cli-keys", key=k, value=b"librdkafka",
                         on_delivery=lambda err, msg: expected.__setitem__(msg.key().decode(), msg.partition()))
    assert producer.flush(TIMEOUT) == 0
    consumer = ConfluentClient(b).consumer()
    ends = {p: consumer.get_watermark_offsets(confluent_kafka.TopicPartition("cli-keys", p), timeout=TIMEOUT)[1] for p in range(5)}
    consumer.close()
    got = {}
    for p, records in ConfluentClient(b).consume("cli-keys", ends).items():
        for r in records:
            if r.message.value != b"librdkafka":
                got[r.message.key.decode()] = p
                assert r.message.value == f"value-{r.message.key.decode()}".encode()
    assert got == expected


def test_produce_with_acks_0_and_a_missing_key_separator(broker):
    b = broker.bootstrap
    ConfluentClient(b).create_topic("cli-acks0", 1)
    ok("produce", "--bootstrap-server", b, "--topic", "cli-acks0", "--acks", "0", stdin="a\nb\nc\n")
    wait_for(lambda: consume_all(b, "cli-acks0", 1) == {0: [b"a", b"b", b"c"]}, "the acks=0 records")
    line = failed("produce", "--bootstrap-server", b, "--topic", "cli-acks0", "--property", "parse.key=true", stdin="no-tab\n")
    assert line == "error: No key separator found on line number 1: 'no-tab'"


def test_confluent_produced_records_read_with_odradek_consume(broker):
    b = broker.bootstrap
    ConfluentClient(b).create_topic("cli-consume", 2)
    producer = confluent_kafka.Producer({"bootstrap.servers": b, "broker.address.family": "v4", "compression.type": "lz4"})
    values = [f"msg-{i:03d}" for i in range(60)]
    for i, v in enumerate(values):
        producer.produce("cli-consume", key=f"k{i}", value=v, partition=i % 2)
    assert producer.flush(TIMEOUT) == 0

    run = ok("consume", "--bootstrap-server", b, "--topic", "cli-consume", "--from-beginning", "--max-messages", "60",
             "--timeout-ms", "20000")
    out = run.stdout.splitlines()
    assert sorted(out) == values
    assert [v for v in out if int(v[4:]) % 2 == 0] == values[0::2], "partition 0 in order"
    assert run.stderr.strip().endswith("Processed a total of 60 messages")

    # One partition from an offset, with keys; --max-messages stops early.
    run = ok("consume", "--bootstrap-server", b, "--topic", "cli-consume", "--partition", "1", "--offset", "5",
             "--max-messages", "3", "--property", "print.key=true", "--property", "print.offset=true")
    assert run.stdout.splitlines() == [f"Offset:{o}\tk{2 * o + 1}\tmsg-{2 * o + 1:03d}" for o in (5, 6, 7)]

    # From the log end (the default): nothing new arrives, so --timeout-ms ends it with 0.
    run = ok("consume", "--bootstrap-server", b, "--topic", "cli-consume", "--timeout-ms", "1500")
    assert run.stdout == ""
    assert run.stderr.strip() == "Processed a total of 0 messages"


def test_produce_then_consume_with_odradek_alone(broker):
    b = broker.bootstrap
    ok("topics", "--bootstrap-server", b, "--create", "--topic", "cli-loop", "--partitions", "1")
    lines = [f"k{i}\tv{i}" for i in range(10)]
    ok("produce", "--bootstrap-server", b, "--topic", "cli-loop", "--property", "parse.key=true", stdin="\n".join(lines))
    run = ok("consume", "--bootstrap-server", b, "--topic", "cli-loop", "--from-beginning", "--max-messages", "10",
             "--property", "print.key=true")
    assert run.stdout.splitlines() == lines


def test_produce_and_consume_of_an_unknown_topic_fail_in_one_line(broker):
    b = broker.bootstrap
    assert "UNKNOWN_TOPIC_OR_PARTITION" in failed("produce", "--bootstrap-server", b, "--topic", "missing", stdin="x\n")
    assert "UNKNOWN_TOPIC_OR_PARTITION" in failed("consume", "--bootstrap-server", b, "--topic", "missing", "--max-messages", "1")


# ---- cluster ----

KAFKA_PYTHON_DESCRIBE_CLUSTER = """
import json, sys
from kafka.admin import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1])
cluster = admin.describe_cluster()
admin.close()
print(json.dumps(cluster, default=str))
"""


def check_cluster_against_clients(bootstrap):
    described = json.loads(ok("cluster", "--bootstrap-server", bootstrap, "--output", "json").stdout)
    # librdkafka's describe_cluster asks Metadata (v10+), not DescribeCluster: the same facts
    # through the other API.
    client = admin(bootstrap)  # must outlive the future
    result = client.describe_cluster(request_timeout=TIMEOUT).result(timeout=TIMEOUT)
    assert described["cluster_id"] == result.cluster_id
    assert described["controller_id"] == result.controller.id
    assert [(n["id"], n["host"], n["port"]) for n in described["brokers"]] == \
        sorted((n.id, n.host, n.port) for n in result.nodes)
    assert all(n["rack"] is None for n in described["brokers"])

    # kafka-python's asks DescribeCluster, with the cluster's authorized operations.
    by_kafka_python = kafka_python3(KAFKA_PYTHON_DESCRIBE_CLUSTER, bootstrap)
    assert by_kafka_python["cluster_id"] == described["cluster_id"]
    assert by_kafka_python["controller_id"] == described["controller_id"]
    assert sorted((n["broker_id"], n["host"], n["port"]) for n in by_kafka_python["brokers"]) == \
        [(n["id"], n["host"], n["port"]) for n in described["brokers"]]
    # No authorizer: every cluster operation (KIP-430), as Kafka answers.
    assert sorted(by_kafka_python["authorized_operations"]) == sorted(
        ["CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE"]
    )

    human = ok("cluster", "--bootstrap-server", bootstrap).stdout.splitlines()
    assert human[0] == f"Cluster ID: {described['cluster_id']}"
    assert human[1] == f"Controller: {described['controller_id']}"
    assert human[2].split() == ["ID", "HOST", "PORT", "RACK"]
    assert [line.split() for line in human[3:]] == [[str(n["id"]), n["host"], str(n["port"]), "-"] for n in described["brokers"]]
    return described


def test_describe_cluster_answers_for_brokers_only(broker):
    """DescribeCluster v1's endpoint type (KIP-919), as Kafka's brokers answer it: brokers (1)
    described, controllers (2) MISMATCHED_ENDPOINT_TYPE, anything else UNSUPPORTED_ENDPOINT_TYPE."""
    conn = wire.Connection(broker.host, broker.port)

    def describe(endpoint_type):
        # include_cluster_authorized_operations false, the type, no tagged fields.
        body = conn.request(DESCRIBE_CLUSTER, 1, bytes([0, endpoint_type, 0]), flexible_header=True)
        reader = wire.Reader(body)
        reader.uvarint()  # the response header's tagged fields
        reader.int32()  # throttle time
        error_code, message = reader.int16(), reader.compact_string()
        answered_type = body[reader.pos]
        reader.pos += 1
        cluster_id = reader.compact_string()
        return error_code, message, answered_type, cluster_id

    error_code, message, answered_type, cluster_id = describe(1)
    assert (error_code, message, answered_type) == (0, None, 1)
    assert cluster_id
    assert describe(2)[:3] == (
        MISMATCHED_ENDPOINT_TYPE,
        "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER",
        1,
    )
    assert describe(7)[:2] == (UNSUPPORTED_ENDPOINT_TYPE, "Unsupported endpoint type 7")
    conn.close()


def test_cluster_matches_what_the_admin_clients_describe(broker):
    described = check_cluster_against_clients(broker.bootstrap)
    assert [n["port"] for n in described["brokers"]] == [broker.port]


def test_cluster_and_log_dirs_of_a_three_node_cluster(cluster_factory):
    cluster = cluster_factory(voters=3)
    b = cluster.bootstrap
    wait_for(lambda: len(json.loads(odradek("cluster", "--bootstrap-server", b, "--output", "json").stdout or "{}").get("brokers", [])) == 3,
             "three registered brokers")
    described = check_cluster_against_clients(b)
    assert sorted(n["port"] for n in described["brokers"]) == sorted(node.port for node in cluster.nodes.values())

    ok("topics", "--bootstrap-server", b, "--create", "--topic", "rf3", "--partitions", "2", "--replication-factor", "3")
    ok("produce", "--bootstrap-server", b, "--topic", "rf3", stdin="".join(f"r{i}\n" for i in range(50)))
    dirs = json.loads(ok("log-dirs", "--bootstrap-server", b, "--describe", "--topic-list", "rf3").stdout)
    assert sorted(d["broker"] for d in dirs["brokers"]) == [1, 2, 3]
    for d in dirs["brokers"]:
        [log_dir] = d["logDirs"]
        node = cluster.nodes[d["broker"]]
        assert log_dir["logDir"] == str(node.data_dir.resolve())
        assert sorted(p["partition"] for p in log_dir["partitions"]) == ["rf3-0", "rf3-1"], "every node holds a replica"
    # The leaders' copies hold the records (followers may still be catching up).
    sizes = {}
    for d in dirs["brokers"]:
        for p in d["logDirs"][0]["partitions"]:
            sizes[p["partition"]] = max(sizes.get(p["partition"], 0), p["size"])
    assert sum(sizes.values()) > 0


# ---- log-dirs ----

KAFKA_PYTHON_LOG_DIRS = """
import json, sys
from kafka.admin import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1])
print(json.dumps(admin.describe_log_dirs(), default=str))
"""


def test_log_dirs_sizes_after_producing(broker):
    b = broker.bootstrap
    ConfluentClient(b).create_topic("cli-dirs", 2)
    ConfluentClient(b).create_topic("cli-empty", 1)
    ok("produce", "--bootstrap-server", b, "--topic", "cli-dirs", stdin="".join(f"{'x' * 100}-{i}\n" for i in range(200)))

    run = ok("log-dirs", "--bootstrap-server", b, "--describe", "--topic-list", "cli-dirs,cli-empty")
    assert run.stderr.splitlines()[0] == "Querying brokers for log directories information"
    dirs = json.loads(run.stdout)
    assert dirs["version"] == 1
    [entry] = dirs["brokers"]
    [log_dir] = entry["logDirs"]
    assert log_dir["logDir"] == str(broker.data_dir.resolve())
    assert log_dir["error"] is None
    sizes = {p["partition"]: p["size"] for p in log_dir["partitions"]}
    assert set(sizes) == {"cli-dirs-0", "cli-dirs-1", "cli-empty-0"}, "only the topics listed"
    assert sizes["cli-dirs-0"] + sizes["cli-dirs-1"] > 200 * 100
    assert sizes["cli-empty-0"] == 0
    assert all(p["offsetLag"] == 0 and p["isFuture"] is False for p in log_dir["partitions"])

    # Every partition without --topic-list: __consumer_offsets and the others too.
    everything = json.loads(ok("log-dirs", "--bootstrap-server", b, "--describe").stdout)
    listed = {p["partition"] for p in everything["brokers"][0]["logDirs"][0]["partitions"]}
    assert {"cli-dirs-0", "cli-dirs-1", "cli-empty-0"} <= listed

    # kafka-python's describe_log_dirs (DescribeLogDirs at the version it picks) agrees.
    [by_kafka_python] = kafka_python3(KAFKA_PYTHON_LOG_DIRS, b)
    [kp_dir] = by_kafka_python["log_dirs"]
    assert kp_dir["error_code"] == 0
    assert kp_dir["log_dir"] == log_dir["logDir"]
    kp_sizes = {f"{t['name']}-{p['partition_index']}": p["partition_size"] for t in kp_dir["topics"] for p in t["partitions"]}
    assert {k: kp_sizes[k] for k in sizes} == sizes

    human = ok("log-dirs", "--bootstrap-server", b, "--describe", "--topic-list", "cli-dirs", "--output", "human").stdout
    rows = [line.split() for line in human.splitlines()[1:]]
    assert [(r[2], r[3], int(r[4])) for r in rows] == [("cli-dirs", "0", sizes["cli-dirs-0"]), ("cli-dirs", "1", sizes["cli-dirs-1"])]


# ---- configs ----


def test_configs_describe_topics_and_brokers(broker):
    b = broker.bootstrap
    ok("topics", "--bootstrap-server", b, "--create", "--topic", "cli-cfg", "--config", "retention.ms=424242")
    out = ok("configs", "--bootstrap-server", b, "--describe", "--entity-type", "topics", "--entity-name", "cli-cfg").stdout
    lines = out.splitlines()
    assert lines[0] == "Dynamic configs for topic cli-cfg are:"
    assert "  retention.ms=424242 sensitive=false source=DYNAMIC_TOPIC_CONFIG" in lines
    [described] = json.loads(ok("configs", "--bootstrap-server", b, "--describe", "--entity-type", "topics",
                                "--entity-name", "cli-cfg", "--all", "--output", "json").stdout)
    by_name = {c["name"]: c for c in described["configs"]}
    assert by_name["retention.ms"]["value"] == "424242"
    assert "cleanup.policy" in by_name, "--all shows defaults too"

    client = admin(b)  # must outlive the future
    node_id = client.describe_cluster().result(timeout=TIMEOUT).nodes[0].id
    [broker_configs] = json.loads(ok("configs", "--bootstrap-server", b, "--describe", "--entity-type", "brokers",
                                     "--entity-name", node_id, "--all", "--output", "json").stdout)
    assert {c["name"] for c in broker_configs["configs"]} >= {"log.dirs", "num.partitions"}

    assert "UNKNOWN_TOPIC_OR_PARTITION" in failed("configs", "--bootstrap-server", b, "--describe", "--entity-type", "topics",
                                                  "--entity-name", "nope")


def test_configs_alter_sets_and_deletes_topic_configs(broker):
    b = broker.bootstrap
    ok("topics", "--bootstrap-server", b, "--create", "--topic", "cli-alter", "--config", "retention.ms=1000")
    run = ok("configs", "--bootstrap-server", b, "--alter", "--entity-type", "topics", "--entity-name", "cli-alter",
             "--add-config", "cleanup.policy=[compact,delete],max.message.bytes=2000000", "--delete-config", "retention.ms")
    assert run.stdout == "Completed updating config for topic cli-alter.\n"

    def configs():
        resource = ConfigResource(ConfigResource.Type.TOPIC, "cli-alter")
        client = admin(b)  # must outlive the future
        entries = client.describe_configs([resource])[resource].result(timeout=TIMEOUT)
        return {k: (e.value, int(e.source)) for k, e in entries.items()}

    wait_for(lambda: configs()["max.message.bytes"][0] == "2000000", "the altered config")
    now = configs()
    assert now["cleanup.policy"][0] == "compact,delete"
    assert now["retention.ms"][1] != DYNAMIC_TOPIC_CONFIG, "deleted: back to its default"
    # A value the broker refuses: its error, on one line.
    assert "INVALID_CONFIG" in failed("configs", "--bootstrap-server", b, "--alter", "--entity-type", "topics",
                                      "--entity-name", "cli-alter", "--add-config", "cleanup.policy=nonsense")


# ---- delete-records ----


def test_delete_records_moves_the_log_start(broker, tmp_path):
    b = broker.bootstrap
    ConfluentClient(b).create_topic("cli-trim", 2)
    ok("produce", "--bootstrap-server", b, "--topic", "cli-trim", stdin="".join(f"r{i}\n" for i in range(20)))
    consumer = ConfluentClient(b).consumer()
    highs = {p: consumer.get_watermark_offsets(confluent_kafka.TopicPartition("cli-trim", p), timeout=TIMEOUT)[1] for p in (0, 1)}
    consumer.close()
    full = max(highs, key=highs.get)
    offsets = tmp_path / "offsets.json"
    offsets.write_text(json.dumps({"partitions": [{"topic": "cli-trim", "partition": full, "offset": 5}], "version": 1}))
    run = ok("delete-records", "--bootstrap-server", b, "--offset-json-file", offsets)
    assert run.stdout.splitlines() == ["Records delete operation completed:", f"partition: cli-trim-{full}\tlow_watermark: 5"]
    consumer = ConfluentClient(b).consumer()
    low, _ = consumer.get_watermark_offsets(confluent_kafka.TopicPartition("cli-trim", full), timeout=TIMEOUT)
    consumer.close()
    assert low == 5


def test_delete_records_reports_each_partition(broker, tmp_path):
    """The command's own checks, and its failure as one line, whatever the broker serves."""
    b = broker.bootstrap
    offsets = tmp_path / "offsets.json"
    offsets.write_text(json.dumps({"partitions": [{"topic": "t", "partition": 0, "offset": 1},
                                                  {"topic": "t", "partition": 0, "offset": 2}]}))
    assert failed("delete-records", "--bootstrap-server", b, "--offset-json-file", offsets) == \
        "error: Offset json file contains duplicate topic partitions: t-0"
    offsets.write_text(json.dumps({"partitions": [{"topic": "missing", "partition": 0, "offset": 1}]}))
    line = failed("delete-records", "--bootstrap-server", b, "--offset-json-file", offsets)
    assert "missing-0" in line and "UNKNOWN_TOPIC_OR_PARTITION" in line


# ---- client quotas (configs --entity-type users|clients|ips) ----


def quotas_described_by_kafka_python(bootstrap):
    """-> {((type, name), ...): {key: value}} of every quota entity, as kafka-python's own
    DescribeClientQuotas v0 reads them (an empty filter, not strict, selects every entity)."""
    from kafka.admin import KafkaAdminClient
    from kafka.protocol.admin import DescribeClientQuotasRequest_v0

    client = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT * 1000)
    try:
        node = client._client.least_loaded_node()
        deadline = time.monotonic() + TIMEOUT
        while not client._client.ready(node):
            assert time.monotonic() < deadline, "kafka-python could not connect"
            client._client.poll(timeout_ms=50)
        future = client._send_request_to_node(node, DescribeClientQuotasRequest_v0(components=[], strict=False))
        client._wait_for_futures([future])
        response = future.value
    finally:
        client.close()
    assert response.error_code == 0, response.error_message
    return {tuple(sorted(entity)): dict(values) for entity, values in response.entries}


def wait_for_quotas(bootstrap, expected):
    """Waits until the broker describes exactly `expected` (its image may lag the controller)."""
    seen = {}

    def matches():
        seen["now"] = quotas_described_by_kafka_python(bootstrap)
        return seen["now"] == expected

    deadline = time.monotonic() + TIMEOUT
    while not matches() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert seen["now"] == expected


def test_configs_client_quotas_set_described_and_deleted(broker):
    b = broker.bootstrap
    cfg = ("configs", "--bootstrap-server", b)
    run = ok(*cfg, "--alter", "--entity-type", "users", "--entity-name", "alice",
             "--add-config", "producer_byte_rate=1048576,request_percentage=50,consumer_byte_rate=2048")
    assert run.stdout == "Completed updating config for user alice.\n"
    assert ok(*cfg, "--alter", "--client", "app", "--add-config", "consumer_byte_rate=4096").stdout == \
        "Completed updating config for client app.\n"
    # The combined entity, spelled as kafka-configs.sh spells it and with the shortcuts.
    ok(*cfg, "--alter", "--entity-type", "users", "--entity-name", "alice", "--entity-type", "clients", "--entity-name", "app",
       "--add-config", "request_percentage=12.5")
    ok(*cfg, "--alter", "--user", "bob", "--client-defaults", "--add-config", "producer_byte_rate=1000")
    assert ok(*cfg, "--alter", "--entity-type", "users", "--entity-default", "--add-config", "producer_byte_rate=65536").stdout == \
        "Completed updating default config for users in the cluster.\n"
    ok(*cfg, "--alter", "--ip", "10.1.2.3", "--add-config", "connection_creation_rate=100")

    alice = (("user", "alice"),)
    expected = {
        alice: {"producer_byte_rate": 1048576.0, "request_percentage": 50.0, "consumer_byte_rate": 2048.0},
        (("client-id", "app"),): {"consumer_byte_rate": 4096.0},
        (("client-id", "app"), ("user", "alice")): {"request_percentage": 12.5},
        (("client-id", None), ("user", "bob")): {"producer_byte_rate": 1000.0},
        (("user", None),): {"producer_byte_rate": 65536.0},
        (("ip", "10.1.2.3"),): {"connection_creation_rate": 100.0},
    }
    wait_for_quotas(b, expected)

    # --describe of a named entity: exactly that entity (not alice with a client id).
    alice_line = "Quota configs for user-principal 'alice' are consumer_byte_rate=2048.0, producer_byte_rate=1048576.0, " \
                 "request_percentage=50.0"
    assert ok(*cfg, "--describe", "--entity-type", "users", "--entity-name", "alice").stdout == alice_line + "\n"
    # Without a name: every entity of only that type, its default too.
    assert sorted(ok(*cfg, "--describe", "--entity-type", "users").stdout.splitlines()) == \
        sorted([alice_line, "Quota configs for the default user-principal are producer_byte_rate=65536.0"])
    assert ok(*cfg, "--describe", "--user", "alice", "--client", "app").stdout == \
        "Quota configs for user-principal 'alice', client-id 'app' are request_percentage=12.5\n"
    assert sorted(ok(*cfg, "--describe", "--entity-type", "users", "--entity-type", "clients").stdout.splitlines()) == sorted([
        "Quota configs for user-principal 'alice', client-id 'app' are request_percentage=12.5",
        "Quota configs for user-principal 'bob', the default client-id are producer_byte_rate=1000.0",
    ])
    assert ok(*cfg, "--describe", "--ip-defaults").stdout == ""
    assert ok(*cfg, "--describe", "--user", "nobody").stdout == ""

    assert json.loads(ok(*cfg, "--describe", "--entity-type", "clients", "--output", "json").stdout) == \
        [{"entity": {"client-id": "app"}, "configs": [{"name": "consumer_byte_rate", "value": 4096.0}]}]
    assert json.loads(ok(*cfg, "--describe", "--user-defaults", "--output", "json").stdout) == \
        [{"entity": {"user": None}, "configs": [{"name": "producer_byte_rate", "value": 65536.0}]}]
    [bob] = json.loads(ok(*cfg, "--describe", "--entity-type", "users", "--entity-name", "bob", "--entity-type", "clients",
                          "--entity-default", "--output", "json").stdout)
    assert bob == {"entity": {"client-id": None, "user": "bob"}, "configs": [{"name": "producer_byte_rate", "value": 1000.0}]}

    # --delete-config removes only that key.
    ok(*cfg, "--alter", "--user", "alice", "--delete-config", "consumer_byte_rate")
    del expected[alice]["consumer_byte_rate"]
    wait_for_quotas(b, expected)
    assert ok(*cfg, "--describe", "--user", "alice").stdout == \
        "Quota configs for user-principal 'alice' are producer_byte_rate=1048576.0, request_percentage=50.0\n"

    # A key the broker does not know: its refusal, one line, exit 1, and nothing of the entry set.
    line = failed(*cfg, "--alter", "--user", "alice", "--add-config", "producer_byte_rate=1,bytes_per_year=1")
    assert "AlterClientQuotas for user-principal 'alice'" in line and "INVALID_REQUEST (42)" in line and "bytes_per_year" in line, line
    line = failed(*cfg, "--alter", "--ip", "10.1.2.3", "--add-config", "producer_byte_rate=1")
    assert "INVALID_REQUEST (42)" in line and "producer_byte_rate" in line, line
    line = failed(*cfg, "--alter", "--user-defaults", "--add-config", "producer_byte_rate=-5")
    assert "INVALID_REQUEST (42)" in line and "positive" in line, line
    assert quotas_described_by_kafka_python(b) == expected
    # Checked before anything is sent.
    assert failed(*cfg, "--alter", "--user", "alice", "--add-config", "producer_byte_rate=fast") == \
        "error: Cannot parse quota configuration value for producer_byte_rate: fast"
    assert failed(*cfg, "--alter", "--entity-type", "users", "--add-config", "producer_byte_rate=1") == \
        "error: --alter needs --entity-name or --entity-default for each --entity-type"
