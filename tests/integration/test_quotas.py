"""Client quotas (KIP-13 byte rates, KIP-124 request time, KIP-219 throttling, KIP-546 APIs).

Quotas are set with AlterClientQuotas and read back with DescribeClientQuotas, encoded by
kafka-python's protocol types; the throttling is measured from what real clients achieve:
a librdkafka producer and consumer held to a byte rate must average it within 10%, while a
client without a quota on the same broker goes much faster. The broker runs one core (quotas
are per core) and measures over 3 one-second windows (`quota.window.num`), so the burst a
fresh client may send before the first throttle is two seconds' worth; rates are measured
after it.
"""
import threading
import time

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.admin import KafkaAdminClient
from kafka.protocol.admin import DescribeClientQuotasRequest_v0
from kafka.protocol.api import Request, Response
from kafka.protocol.metadata import MetadataRequest
from kafka.protocol.types import Array, Boolean, Float64, Int16, Int32, Schema, String

INVALID_REQUEST = 42
MATCH_EXACT, MATCH_DEFAULT, MATCH_ANY = 0, 1, 2
VALUE_BYTES = 1000


class AlterClientQuotasResponse_v0(Response):
    API_KEY = 49
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("entries", Array(
            ("error_code", Int16),
            ("error_message", String("utf-8")),
            ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))))),
    )


class AlterClientQuotasRequest_v0(Request):
    API_KEY = 49
    API_VERSION = 0
    RESPONSE_TYPE = AlterClientQuotasResponse_v0
    SCHEMA = Schema(
        ("entries", Array(
            ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
            ("ops", Array(("key", String("utf-8")), ("value", Float64), ("remove", Boolean))))),
        ("validate_only", Boolean),
    )


def send(admin, request):
    # The one broker, by its id (not the bootstrap entry, which kafka-python drops).
    node = next(iter(admin._client.cluster.brokers())).nodeId
    # kafka-python holds a throttled connection back itself (KIP-219) until its time is up.
    deadline = time.monotonic() + 30
    while not admin._client.ready(node):
        assert time.monotonic() < deadline, "the connection stayed throttled"
        admin._client.poll(timeout_ms=50)
    future = admin._send_request_to_node(node, request)
    admin._wait_for_futures([future])
    return future.value


def alter(admin, entries, validate_only=False):
    """entries: [({type: name or None}, {key: value or None to remove})] -> [(code, message)]."""
    wire = [
        ([(t, n) for t, n in entity.items()], [(k, v or 0.0, v is None) for k, v in ops.items()])
        for entity, ops in entries
    ]
    response = send(admin, AlterClientQuotasRequest_v0(entries=wire, validate_only=validate_only))
    return [(code, message) for code, message, _ in response.entries]


def describe(admin, components, strict=False):
    """-> {((type, name), ...): {key: value}} of the entities the filter selects."""
    response = send(admin, DescribeClientQuotasRequest_v0(components=components, strict=strict))
    assert response.error_code == 0, response.error_message
    return {tuple(sorted(entity)): dict(values) for entity, values in response.entries}


@pytest.fixture
def quota_broker(broker_factory, tmp_path):
    props = tmp_path / "quotas.properties"
    props.write_text("quota.window.num=3\nquota.window.size.seconds=1\n")
    return broker_factory("--cores", "1", "--config", str(props))


def test_quotas_are_set_described_and_removed_as_kafka_does(quota_broker):
    admin = KafkaAdminClient(bootstrap_servers=quota_broker.bootstrap)
    try:
        results = alter(admin, [
            ({"user": "alice"}, {"producer_byte_rate": 1024.0, "request_percentage": 12.5}),
            ({"user": "alice", "client-id": "app"}, {"consumer_byte_rate": 2048.0}),
            ({"user": None}, {"producer_byte_rate": 4096.0}),
            ({"client-id": None}, {"consumer_byte_rate": 8192.0}),
            ({"user": "bob"}, {"bytes_per_fortnight": 1.0}),
            ({"user": "bob"}, {"producer_byte_rate": 10.5}),
            ({"ip": "10.0.0.1", "user": "bob"}, {"producer_byte_rate": 1.0}),
        ])
        assert [code for code, _ in results] == [0, 0, 0, 0] + [INVALID_REQUEST] * 3, results
        assert "bytes_per_fortnight" in results[4][1]

        everything = describe(admin, [])
        assert everything == {
            (("user", "alice"),): {"producer_byte_rate": 1024.0, "request_percentage": 12.5},
            (("client-id", "app"), ("user", "alice")): {"consumer_byte_rate": 2048.0},
            (("user", None),): {"producer_byte_rate": 4096.0},
            (("client-id", None),): {"consumer_byte_rate": 8192.0},
        }
        assert set(describe(admin, [("user", MATCH_EXACT, "alice")], strict=True)) == {(("user", "alice"),)}
        assert set(describe(admin, [("user", MATCH_EXACT, "alice")])) == {
            (("user", "alice"),), (("client-id", "app"), ("user", "alice"))}
        assert set(describe(admin, [("user", MATCH_DEFAULT, None)])) == {(("user", None),)}
        assert len(describe(admin, [("client-id", MATCH_ANY, None)])) == 2

        # validate_only checks and keeps nothing; removing the last key removes the entity.
        assert alter(admin, [({"user": "carol"}, {"producer_byte_rate": 1.0})], validate_only=True) == [(0, None)]
        assert (("user", "carol"),) not in describe(admin, [])
        assert alter(admin, [({"user": "alice", "client-id": "app"}, {"consumer_byte_rate": None})]) == [(0, None)]
        assert (("client-id", "app"), ("user", "alice")) not in describe(admin, [])

        # Committed to the metadata log: they survive a restart.
        quota_broker.restart()
    finally:
        admin.close()
    admin = KafkaAdminClient(bootstrap_servers=quota_broker.bootstrap)
    try:
        assert describe(admin, [("user", MATCH_EXACT, "alice")], strict=True) == {
            (("user", "alice"),): {"producer_byte_rate": 1024.0, "request_percentage": 12.5}}
    finally:
        admin.close()


def set_quota(bootstrap, entity, ops):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        assert alter(admin, [(entity, ops)]) == [(0, None)]
    finally:
        admin.close()


def create_topic(bootstrap, name, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=60)


def produce_for(bootstrap, topic, client_id, seconds, throttles):
    """Sends as fast as librdkafka will for `seconds`: -> [(ack time, value bytes)]."""
    acked = []
    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "linger.ms": 5,
        # Requests small beside what the quota allows per window: a single request bigger than
        # that passes whole and the rate comes in lumps (as with Kafka's brokers).
        "batch.size": 16384,
        "queue.buffering.max.kbytes": 1024,
        "acks": "all",
        "throttle_cb": lambda event: throttles.append(event.throttle_time),
    })
    value = b"x" * VALUE_BYTES

    def delivered(err, msg):
        if err is None:
            acked.append((time.monotonic(), len(msg.value())))
        else:
            # What is still queued at the end is purged unsent; nothing else may fail.
            assert err.code() == confluent_kafka.KafkaError._PURGE_QUEUE, err

    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            producer.produce(topic, value, on_delivery=delivered)
        except BufferError:
            producer.poll(0.01)
        producer.poll(0)
    producer.purge(in_queue=True, in_flight=False)
    assert producer.flush(30) == 0
    return start, acked


def rate(start, samples, since, until):
    total = sum(n for at, n in samples if start + since <= at < start + until)
    return total / (until - since)


def test_a_producer_over_its_byte_rate_is_held_to_it_and_told_to_hold_off(quota_broker):
    quota = 200_000
    create_topic(quota_broker.bootstrap, "metered")
    set_quota(quota_broker.bootstrap, {"client-id": "metered-producer"}, {"producer_byte_rate": float(quota)})
    throttles = []
    start, acked = produce_for(quota_broker.bootstrap, "metered", "metered-producer", 15, throttles)
    # Whole windows of the quota's 3-second span, after the first.
    held = rate(start, acked, 3, 15)
    print(f"producer held to {held:.0f} B/s by a quota of {quota} B/s ({held / quota - 1:+.1%})")
    assert abs(held - quota) / quota < 0.10, f"throttled producer averaged {held:.0f} B/s against a quota of {quota}"
    # KIP-219: the answers carried the throttle time, which librdkafka reports.
    assert throttles and max(throttles) > 0

    # The same broker lets a client without a quota run free.
    start, acked = produce_for(quota_broker.bootstrap, "metered", "free-producer", 4, [])
    assert rate(start, acked, 0, 4) > 3 * quota

    # Every acknowledged record is there, throttled or not.
    consumer = confluent_kafka.Consumer({"bootstrap.servers": quota_broker.bootstrap, "group.id": "check", "auto.offset.reset": "earliest"})
    low, high = consumer.get_watermark_offsets(confluent_kafka.TopicPartition("metered", 0), timeout=10)
    consumer.close()
    assert high - low >= len(acked)


def test_a_consumer_over_its_byte_rate_is_held_to_it(quota_broker):
    quota = 400_000
    create_topic(quota_broker.bootstrap, "stocked")
    _, stocked = produce_for(quota_broker.bootstrap, "stocked", "filler", 3, [])
    set_quota(quota_broker.bootstrap, {"client-id": "metered-consumer"}, {"consumer_byte_rate": float(quota)})
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": quota_broker.bootstrap,
        "group.id": "metered",
        "client.id": "metered-consumer",
        "auto.offset.reset": "earliest",
        # Small fetches: one answer is a small part of what the quota allows per window, so
        # the rate is not lumpy (Kafka's consumers see the same with large fetches).
        "fetch.max.bytes": 64 << 10,
        "max.partition.fetch.bytes": 64 << 10,
        "message.max.bytes": 64 << 10,
    })
    consumer.subscribe(["stocked"])
    received = []
    start = None
    while start is None or time.monotonic() - start < 15:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        if start is None:
            start = time.monotonic()
        received.append((time.monotonic(), len(message.value())))
    consumer.close()
    # The consumer was held back, not starved: the topic had more than it read.
    assert sum(n for _, n in received) < sum(n for _, n in stocked)
    held = rate(start, received, 3, 15)
    print(f"consumer held to {held:.0f} B/s by a quota of {quota} B/s ({held / quota - 1:+.1%})")
    assert abs(held - quota) / quota < 0.10, f"throttled consumer averaged {held:.0f} B/s against a quota of {quota}"


def test_a_request_percentage_quota_throttles_a_chatty_client(quota_broker):
    set_quota(quota_broker.bootstrap, {"client-id": "chatty"}, {"request_percentage": 0.01})
    admin = KafkaAdminClient(bootstrap_servers=quota_broker.bootstrap, client_id="chatty")
    calm = KafkaAdminClient(bootstrap_servers=quota_broker.bootstrap, client_id="calm")
    try:
        chatty = [send(admin, MetadataRequest[5](topics=None, allow_auto_topic_creation=False)).throttle_time_ms for _ in range(50)]
        others = [send(calm, MetadataRequest[5](topics=None, allow_auto_topic_creation=False)).throttle_time_ms for _ in range(50)]
    finally:
        admin.close()
        calm.close()
    assert max(chatty) > 0, chatty
    # Capped at one quota window, as Kafka caps request-time throttles.
    assert max(chatty) <= 1000
    assert max(others) == 0
