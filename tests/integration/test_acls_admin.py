"""ACL administration (KIP-140): CreateAcls, DescribeAcls and DeleteAcls from a real client
(confluent-kafka's AdminClient over librdkafka) and from the `odradek acls` command, stored in
the replicated metadata log so that every node describes what any node created. The brokers
run Kafka's authorizer settings; the PLAINTEXT test client is User:ANONYMOUS, a super user."""

import json
import os
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from conftest import ODRADEK_BIN

TIMEOUT = 30
AUTHORIZER = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": "User:ANONYMOUS",
}

LITERAL = ResourcePatternType.LITERAL
PREFIXED = ResourcePatternType.PREFIXED
ALLOW = AclPermissionType.ALLOW
DENY = AclPermissionType.DENY


def authorizer_args(tmp_path):
    path = tmp_path / "authorizer.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in AUTHORIZER.items()))
    return ("--config", str(path))


@pytest.fixture
def secured(broker_factory, tmp_path):
    return broker_factory(*authorizer_args(tmp_path))


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "log_level": 2})


def binding(restype, name, pattern, principal, operation, permission=ALLOW, host="*"):
    return AclBinding(restype, name, pattern, principal, host, operation, permission)


def acl_filter(restype=ResourceType.ANY, name=None, pattern=ResourcePatternType.ANY, principal=None,
               host=None, operation=AclOperation.ANY, permission=AclPermissionType.ANY):
    return AclBindingFilter(restype, name, pattern, principal, host, operation, permission)


def key(b):
    """A binding as comparable plain values."""
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)


def create(client, bindings):
    """-> [None, or the KafkaError code each creation failed with], in order"""
    futures = client.create_acls(bindings)
    outcome = []
    for b in bindings:
        try:
            outcome.append(futures[b].result(timeout=TIMEOUT))
        except KafkaException as e:
            outcome.append(e.args[0].code())
    return outcome


def describe(client, f):
    return sorted(key(b) for b in client.describe_acls(f).result(timeout=TIMEOUT))


def delete(client, filters):
    """-> [sorted bindings each filter deleted], in order"""
    futures = client.delete_acls(filters)
    return [sorted(key(b) for b in futures[f].result(timeout=TIMEOUT)) for f in filters]


ORDERS = binding(ResourceType.TOPIC, "orders", LITERAL, "User:alice", AclOperation.READ)
PAY = binding(ResourceType.TOPIC, "pay", PREFIXED, "User:alice", AclOperation.WRITE)
BOB_DENIED = binding(ResourceType.TOPIC, "payments", LITERAL, "User:bob", AclOperation.ALL, DENY, host="10.0.0.9")
GROUP = binding(ResourceType.GROUP, "billing", LITERAL, "User:alice", AclOperation.READ)
CLUSTER = binding(ResourceType.BROKER, "kafka-cluster", LITERAL, "User:ops", AclOperation.ALTER)


def test_create_describe_and_delete_through_the_admin_client(secured):
    client = admin(secured.bootstrap)
    everything = [ORDERS, PAY, BOB_DENIED, GROUP, CLUSTER]
    assert create(client, everything) == [None] * 5
    assert describe(client, acl_filter()) == sorted(map(key, everything))
    # Creating an ACL that exists succeeds and stores it once.
    assert create(client, [ORDERS]) == [None]
    assert describe(client, acl_filter()) == sorted(map(key, everything))

    # Filters: by resource (LITERAL only the name itself; MATCH every pattern that applies),
    # by principal, by permission, by host.
    assert describe(client, acl_filter(ResourceType.TOPIC, "payments", LITERAL)) == [key(BOB_DENIED)]
    assert describe(client, acl_filter(ResourceType.TOPIC, "payments", ResourcePatternType.MATCH)) == sorted(
        [key(PAY), key(BOB_DENIED)]
    )
    assert describe(client, acl_filter(pattern=PREFIXED)) == [key(PAY)]
    assert describe(client, acl_filter(principal="User:alice")) == sorted(map(key, [ORDERS, PAY, GROUP]))
    assert describe(client, acl_filter(permission=DENY)) == [key(BOB_DENIED)]
    assert describe(client, acl_filter(host="10.0.0.9")) == [key(BOB_DENIED)]
    assert describe(client, acl_filter(ResourceType.BROKER)) == [key(CLUSTER)]
    assert describe(client, acl_filter(ResourceType.TOPIC, "nothing", LITERAL)) == []

    # Delete: each filter lists what it matched; a binding two filters match is in both.
    alice_topics = acl_filter(ResourceType.TOPIC, principal="User:alice")
    prefixed = acl_filter(pattern=PREFIXED)
    nobody = acl_filter(principal="User:nobody")
    assert delete(client, [alice_topics, prefixed, nobody]) == [sorted([key(ORDERS), key(PAY)]), [key(PAY)], []]
    assert describe(client, acl_filter()) == sorted(map(key, [BOB_DENIED, GROUP, CLUSTER]))
    assert delete(client, [acl_filter()]) == [sorted(map(key, [BOB_DENIED, GROUP, CLUSTER]))]
    assert describe(client, acl_filter()) == []


def test_invalid_bindings_are_refused_and_the_others_created(secured):
    client = admin(secured.bootstrap)
    wrong_cluster = binding(ResourceType.BROKER, "my-cluster", LITERAL, "User:ops", AclOperation.ALTER)
    no_type = binding(ResourceType.TOPIC, "orders", LITERAL, "alice", AclOperation.READ)
    assert create(client, [wrong_cluster, ORDERS, no_type]) == [KafkaError.INVALID_REQUEST, None, KafkaError.INVALID_REQUEST]
    assert describe(client, acl_filter()) == [key(ORDERS)]
    with pytest.raises(KafkaException) as refused:
        client.create_acls([wrong_cluster])[wrong_cluster].result(timeout=TIMEOUT)
    assert "kafka-cluster" in refused.value.args[0].str()


def test_acl_apis_without_an_authorizer_are_security_disabled(broker):
    client = admin(broker.bootstrap)
    assert create(client, [ORDERS]) == [KafkaError.SECURITY_DISABLED]
    # librdkafka drops DescribeAcls' top-level error (it hands back an empty list), so the
    # describe is checked with kafka-python, which raises it.
    from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, KafkaAdminClient
    from kafka.admin import ResourcePatternFilter, ResourceType as KResourceType
    from kafka.errors import SecurityDisabledError

    any_acl = ACLFilter(
        principal=None, host=None, operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(KResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    python_client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        with pytest.raises(SecurityDisabledError, match="No Authorizer is configured."):
            python_client.describe_acls(any_acl)
    finally:
        python_client.close()
    everything = acl_filter()
    with pytest.raises(KafkaException) as refused:
        client.delete_acls([everything])[everything].result(timeout=TIMEOUT)
    assert refused.value.args[0].code() == KafkaError.SECURITY_DISABLED


def acls_cli(*args, timeout=60):
    return subprocess.run([str(ODRADEK_BIN), "acls", *args], capture_output=True, text=True, timeout=timeout, env=os.environ)


def listed(bootstrap, *args):
    result = acls_cli("list", "--bootstrap-server", bootstrap, "--output", "json", *args)
    assert result.returncode == 0, (result.returncode, result.stderr)
    return json.loads(result.stdout)


def test_acls_command_adds_lists_and_removes(secured):
    b = ("--bootstrap-server", secured.bootstrap)
    added = acls_cli("add", *b, "--allow-principal", "User:alice", "--operation", "Read", "--operation", "Describe",
                     "--topic", "orders")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == [
        "Added (pattern=ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL), "
        "entry=(principal=User:alice, host=*, operation=READ, permissionType=ALLOW))",
        "Added (pattern=ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL), "
        "entry=(principal=User:alice, host=*, operation=DESCRIBE, permissionType=ALLOW))",
    ]
    consumer = acls_cli("add", *b, "--allow-principal", "User:bob", "--consumer", "--topic", "logs-",
                        "--group", "readers", "--resource-pattern-type", "prefixed")
    assert consumer.returncode == 0, consumer.stderr

    human = acls_cli("list", *b, "--topic", "orders")
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines() == [
        "RESOURCE_TYPE NAME   PATTERN_TYPE PRINCIPAL  HOST OPERATION PERMISSION",
        "TOPIC         orders LITERAL      User:alice *    READ      ALLOW",
        "TOPIC         orders LITERAL      User:alice *    DESCRIBE  ALLOW",
    ]
    everything = listed(secured.bootstrap)
    assert [(a["resource_type"], a["resource_name"], a["pattern_type"], a["principal"], a["operation"]) for a in everything] == [
        ("TOPIC", "logs-", "PREFIXED", "User:bob", "READ"),
        ("TOPIC", "logs-", "PREFIXED", "User:bob", "DESCRIBE"),
        ("TOPIC", "orders", "LITERAL", "User:alice", "READ"),
        ("TOPIC", "orders", "LITERAL", "User:alice", "DESCRIBE"),
        ("GROUP", "readers", "PREFIXED", "User:bob", "READ"),
    ]
    # What the command stored is what a Kafka client reads back.
    assert key(ORDERS) in describe(admin(secured.bootstrap), acl_filter(ResourceType.TOPIC, "orders", LITERAL))
    # MATCH lists every ACL that applies to a topic name.
    matched = listed(secured.bootstrap, "--topic", "logs-app", "--resource-pattern-type", "match")
    assert {a["resource_name"] for a in matched} == {"logs-"}

    removed = acls_cli("remove", *b, "--topic", "orders", "--allow-principal", "User:alice", "--operation", "Read")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.count("Removed ") == 1 and "operation=READ" in removed.stdout
    assert [a["operation"] for a in listed(secured.bootstrap, "--topic", "orders")] == ["DESCRIBE"]
    gone = acls_cli("remove", *b, "--topic", "orders")
    assert gone.returncode == 0 and "operation=DESCRIBE" in gone.stdout
    assert listed(secured.bootstrap, "--topic", "orders") == []

    # Bad arguments are refused before any request (exit 2), a broker refusal is exit 1.
    assert acls_cli("add", *b, "--allow-principal", "alice", "--topic", "t").returncode == 2
    assert acls_cli("add", *b, "--allow-principal", "User:a", "--cluster", "--operation", "Read").returncode == 2
    assert acls_cli("remove", *b).returncode == 2


def test_acls_command_against_a_broker_without_authorizer_fails(broker):
    result = acls_cli("list", "--bootstrap-server", broker.bootstrap)
    assert result.returncode == 1
    assert "SECURITY_DISABLED" in result.stderr and "No Authorizer is configured." in result.stderr


def wait_listed(bootstrap, want, *args):
    deadline = time.monotonic() + TIMEOUT
    while True:
        got = listed(bootstrap, *args)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_acl_created_through_one_node_is_described_by_another(cluster_factory, tmp_path):
    cluster = cluster_factory(voters=3, extra_args=authorizer_args(tmp_path))
    node1, node3 = cluster.nodes[1].bootstrap, cluster.nodes[3].bootstrap
    added = acls_cli("add", "--bootstrap-server", node1, "--allow-principal", "User:alice", "--operation", "Write",
                     "--topic", "orders")
    assert added.returncode == 0, added.stderr
    want = [{
        "resource_type": "TOPIC", "resource_name": "orders", "pattern_type": "LITERAL", "principal": "User:alice",
        "host": "*", "operation": "WRITE", "permission": "ALLOW",
    }]
    # The command asks only the node it is given: this is node 3's own image.
    assert wait_listed(node3, want) == want
    # And a removal through node 3 reaches node 1.
    removed = acls_cli("remove", "--bootstrap-server", node3, "--topic", "orders")
    assert removed.returncode == 0, removed.stderr
    assert wait_listed(node1, []) == []
    # A Kafka client bootstrapped from any node sees the same.
    assert describe(admin(cluster.nodes[2].bootstrap), acl_filter()) == []
