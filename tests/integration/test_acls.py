"""ACLs enforced, deny by default, with real clients over SASL PLAIN: a principal without rights
gets Kafka's error on produce, fetch, group join, topic creation and describe; one with rights
is served. Admin calls go over the PLAINTEXT listener as User:ANONYMOUS, a super user here."""

import time
import uuid

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from conftest import _free_port

JAAS = (
    "org.apache.kafka.common.security.plain.PlainLoginModule required "
    'user_alice="alice-secret" user_bob="bob-secret";'
)


@pytest.fixture
def secured(broker_factory, tmp_path):
    port = _free_port()
    settings = {
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": JAAS,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:ANONYMOUS",
    }
    path = tmp_path / "acl.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    broker = broker_factory(
        "--config", str(path), "--no-auto-create-topics",
        listeners=lambda bootstrap: f"PLAINTEXT://{bootstrap},SASL_PLAINTEXT://127.0.0.1:{port}",
    )
    broker.sasl = f"127.0.0.1:{port}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for topic in ("orders", "secrets"):
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    return broker, admin


def as_user(broker, user, **extra):
    return {
        "bootstrap.servers": broker.sasl,
        "broker.address.family": "v4",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": user,
        "sasl.password": f"{user}-secret",
        **extra,
    }


def grant(admin, resource_type, name, operation, principal="User:alice"):
    binding = AclBinding(resource_type, name, ResourcePatternType.LITERAL, principal, "*", operation, AclPermissionType.ALLOW)
    for future in admin.create_acls([binding]).values():
        future.result(timeout=30)


def produce_one(config, topic):
    """The error a produce of one record ends with (None when delivered)."""
    results = []
    producer = confluent_kafka.Producer({**config, "message.timeout.ms": 10_000, "enable.idempotence": False})
    producer.produce(topic, b"x", on_delivery=lambda err, msg: results.append(err))
    producer.flush(20)
    assert results, "no delivery report"
    return results[0]


def consume_first(config, topic, group):
    """The first message value or error a consumer of the topic's partition 0 sees."""
    consumer = confluent_kafka.Consumer({**config, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            return msg.error() or msg.value()
        return None
    finally:
        consumer.close()


def test_a_principal_without_acls_is_refused_everything(secured):
    broker, admin = secured
    bob = as_user(broker, "bob")
    assert produce_one(bob, "orders").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # Group join: the coordinator lookup already needs DESCRIBE on the group.
    errors = []
    consumer = confluent_kafka.Consumer({**bob, "group.id": "g-bob", "error_cb": errors.append})
    consumer.subscribe(["orders"])
    deadline = time.monotonic() + 20
    polled = []
    while time.monotonic() < deadline and not any(e.code() == KafkaError.GROUP_AUTHORIZATION_FAILED for e in errors + polled):
        msg = consumer.poll(0.5)
        if msg is not None and msg.error():
            polled.append(msg.error())
    consumer.close()
    assert any(e.code() == KafkaError.GROUP_AUTHORIZATION_FAILED for e in errors + polled), errors + polled

    bob_admin = AdminClient(bob)
    with pytest.raises(confluent_kafka.KafkaException) as created:
        bob_admin.create_topics([NewTopic("bobs", num_partitions=1, replication_factor=1)])["bobs"].result(timeout=30)
    assert created.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Describe: every topic is hidden from a listing, and named ones are refused.
    assert set(bob_admin.list_topics(timeout=10).topics) == set()
    named = bob_admin.list_topics("orders", timeout=10).topics["orders"]
    assert named.error is not None and named.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # Fetch: with READ on its group (librdkafka asks for the group's coordinator first) and
    # DESCRIBE on the topic (Metadata names its leader), the fetch itself is refused.
    grant(admin, ResourceType.GROUP, "g-bob-fetch", AclOperation.READ, principal="User:bob")
    grant(admin, ResourceType.TOPIC, "orders", AclOperation.DESCRIBE, principal="User:bob")
    assert consume_first(bob, "orders", "g-bob-fetch").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_granted_rights_are_exactly_what_is_served(secured):
    broker, admin = secured
    grant(admin, ResourceType.TOPIC, "orders", AclOperation.WRITE)
    grant(admin, ResourceType.TOPIC, "orders", AclOperation.READ)
    grant(admin, ResourceType.GROUP, "g-alice", AclOperation.READ)
    alice = as_user(broker, "alice")
    assert produce_one(alice, "orders") is None
    assert consume_first(alice, "orders", "g-alice") == b"x"
    # WRITE and READ imply DESCRIBE: alice sees orders, not secrets.
    assert set(AdminClient(alice).list_topics(timeout=10).topics) == {"orders"}
    assert produce_one(alice, "secrets").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # A group she has no ACL for, and topic creation without CREATE, stay refused.
    consumer = confluent_kafka.Consumer({**alice, "group.id": f"other-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe(["orders"])
    errors = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not errors:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error():
            errors.append(msg.error())
    consumer.close()
    assert errors and errors[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED, errors
    with pytest.raises(confluent_kafka.KafkaException):
        alice_admin = AdminClient(alice)
        alice_admin.create_topics([NewTopic("alices", num_partitions=1, replication_factor=1)])["alices"].result(timeout=30)

    # CREATE on the cluster lets her create topics.
    grant(admin, ResourceType.BROKER, "kafka-cluster", AclOperation.CREATE)
    alice_admin = AdminClient(alice)
    alice_admin.create_topics([NewTopic("alices", num_partitions=1, replication_factor=1)])["alices"].result(timeout=30)

    # WRITE on every topic, and a DENY on a prefix: the DENY wins there.
    grant(admin, ResourceType.TOPIC, "*", AclOperation.WRITE)
    assert produce_one(alice, "secrets") is None
    deny = AclBinding(ResourceType.TOPIC, "secr", ResourcePatternType.PREFIXED, "User:alice", "*", AclOperation.WRITE, AclPermissionType.DENY)
    for future in admin.create_acls([deny]).values():
        future.result(timeout=30)
    assert produce_one(alice, "secrets").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_one(alice, "orders") is None


def test_acl_apis_need_alter_and_describe_on_the_cluster(secured):
    broker, _ = secured
    alice = AdminClient(as_user(broker, "alice"))
    binding = AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.ALL, AclPermissionType.ALLOW)
    with pytest.raises(confluent_kafka.KafkaException) as refused:
        for future in alice.create_acls([binding]).values():
            future.result(timeout=30)
    assert refused.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
