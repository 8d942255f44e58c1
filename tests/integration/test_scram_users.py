"""SCRAM credentials (KIP-554): AlterUserScramCredentials and DescribeUserScramCredentials
from a real client (confluent-kafka's AdminClient over librdkafka), the `odradek users`
command, and credentials replicated through the metadata log to every node."""

import os
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from conftest import ODRADEK_BIN, _free_port

SHA256 = ScramMechanism.SCRAM_SHA_256
SHA512 = ScramMechanism.SCRAM_SHA_512
TIMEOUT = 30


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "log_level": 2})


def upsert(user, mechanism, iterations, password="secret"):
    return UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, iterations), password.encode())


def alter(client, alterations):
    """-> {user: None, or the KafkaError code it failed with}"""
    outcome = {}
    for user, future in client.alter_user_scram_credentials(alterations).items():
        try:
            outcome[user] = future.result(timeout=TIMEOUT)
        except KafkaException as e:
            outcome[user] = e.args[0].code()
    return outcome


def infos(description):
    return sorted((i.mechanism, i.iterations) for i in description.scram_credential_infos)


def describe(client, users):
    """-> {user: [(mechanism, iterations)], or the KafkaError code it failed with}"""
    outcome = {}
    for user, future in client.describe_user_scram_credentials(users).items():
        try:
            outcome[user] = infos(future.result(timeout=TIMEOUT))
        except KafkaException as e:
            outcome[user] = e.args[0].code()
    return outcome


def describe_all(client):
    described = client.describe_user_scram_credentials().result(timeout=TIMEOUT)
    return {user: infos(d) for user, d in described.items()}


def test_upsert_describe_and_delete_through_the_admin_client(broker):
    client = admin(broker.bootstrap)
    assert alter(client, [upsert("alice", SHA256, 4096), upsert("bob", SHA512, 8192)]) == {"alice": None, "bob": None}
    assert describe(client, ["alice", "bob"]) == {"alice": [(SHA256, 4096)], "bob": [(SHA512, 8192)]}
    assert describe_all(client) == {"alice": [(SHA256, 4096)], "bob": [(SHA512, 8192)]}

    # A second mechanism, then a replacement of the first: one credential per mechanism.
    assert alter(client, [upsert("alice", SHA512, 10000)]) == {"alice": None}
    assert alter(client, [upsert("alice", SHA256, 16384, "changed")]) == {"alice": None}
    assert describe(client, ["alice"]) == {"alice": [(SHA256, 16384), (SHA512, 10000)]}

    assert alter(client, [UserScramCredentialDeletion("bob", SHA512)]) == {"bob": None}
    assert describe(client, ["bob"]) == {"bob": KafkaError.RESOURCE_NOT_FOUND}
    assert describe_all(client) == {"alice": [(SHA256, 16384), (SHA512, 10000)]}


def test_refused_alterations_carry_kafkas_error_codes(broker):
    client = admin(broker.bootstrap)
    assert alter(client, [upsert("alice", SHA256, 4096)]) == {"alice": None}
    # Deleting what does not exist: an unknown user, or a mechanism the user lacks.
    assert alter(client, [UserScramCredentialDeletion("nobody", SHA256)]) == {"nobody": KafkaError.RESOURCE_NOT_FOUND}
    assert alter(client, [UserScramCredentialDeletion("alice", SHA512)]) == {"alice": KafkaError.RESOURCE_NOT_FOUND}
    # Below ScramMechanism's minimum of 4096 and above Kafka's maximum of 16384.
    assert alter(client, [upsert("carol", SHA256, 100)]) == {"carol": KafkaError.UNACCEPTABLE_CREDENTIAL}
    assert alter(client, [upsert("carol", SHA512, 16385)]) == {"carol": KafkaError.UNACCEPTABLE_CREDENTIAL}
    assert describe(client, ["carol"]) == {"carol": KafkaError.RESOURCE_NOT_FOUND}
    # A user altered twice in one request fails whole (Kafka's controller counts users, not
    # mechanisms); the other user of the request goes through.
    outcome = alter(client, [upsert("dave", SHA256, 4096), upsert("dave", SHA512, 4096), upsert("erin", SHA512, 4096)])
    assert outcome == {"dave": KafkaError.DUPLICATE_RESOURCE, "erin": None}
    assert describe(client, ["dave", "erin"]) == {"dave": KafkaError.RESOURCE_NOT_FOUND, "erin": [(SHA512, 4096)]}
    # Nothing refused was stored.
    assert describe_all(client) == {"alice": [(SHA256, 4096)], "erin": [(SHA512, 4096)]}


def users_cli(*args, env=None, timeout=60):
    return subprocess.run(
        [str(ODRADEK_BIN), "users", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def rows(result):
    """The rows a successful `users list` printed, split into cells, without the header."""
    assert result.returncode == 0, (result.returncode, result.stderr)
    return [line.split() for line in result.stdout.splitlines()[1:]]


def assert_fails(result, status):
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""


def test_users_command_adds_lists_and_removes(broker):
    b = ("--bootstrap-server", broker.bootstrap)
    added = users_cli("scram-add", *b, "--user", "alice", "--password", "alice-secret")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "Set the SCRAM-SHA-512 credential of user 'alice' (8192 iterations).\n"
    # The password can come from the environment, out of the process list.
    added = users_cli(
        "scram-add", *b, "--user", "alice", "--mechanism", "SCRAM-SHA-256", "--iterations", "4096",
        env={"ODRADEK_SCRAM_PASSWORD": "other-secret"},
    )
    assert added.returncode == 0, added.stderr
    assert users_cli("scram-add", *b, "--user", "bob", "--password", "pw", "--iterations", "16384").returncode == 0

    listed = users_cli("list", *b)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "USER  MECHANISM     ITERATIONS",
        "alice SCRAM-SHA-256 4096",
        "alice SCRAM-SHA-512 8192",
        "bob   SCRAM-SHA-512 16384",
    ]
    # What the command stored is what a Kafka client reads back.
    assert describe(admin(broker.bootstrap), ["alice"]) == {"alice": [(SHA256, 4096), (SHA512, 8192)]}
    only_bob = users_cli("list", *b, "--user", "bob")
    assert rows(only_bob) == [["bob", "SCRAM-SHA-512", "16384"]]

    removed = users_cli("scram-remove", *b, "--user", "alice", "--mechanism", "SCRAM-SHA-512")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "Removed the SCRAM-SHA-512 credential of user 'alice'.\n"
    assert rows(users_cli("list", *b, "--user", "alice")) == [["alice", "SCRAM-SHA-256", "4096"]]

    # Exit statuses a script can tell apart: 3 missing, 2 bad arguments, 1 failure.
    assert_fails(users_cli("scram-remove", *b, "--user", "alice", "--mechanism", "SCRAM-SHA-512"), 3)
    assert_fails(users_cli("list", *b, "--user", "nobody"), 3)
    assert_fails(users_cli("scram-add", *b, "--user", "carol", "--password", "pw", "--iterations", "100"), 2)
    unreachable = ("--bootstrap-server", f"127.0.0.1:{_free_port()}", "--timeout-ms", "2000")
    assert_fails(users_cli("list", *unreachable), 1)
    assert users_cli("scram-add", *b, "--user", "carol").returncode == 2  # no password: clap's usage error


def test_users_added_by_the_command_log_in_with_scram(broker_factory, tmp_path):
    """The command's salting and the broker's key derivation agree with librdkafka's SCRAM."""
    port = _free_port()
    settings = tmp_path / "sasl.properties"
    settings.write_text("listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT\n")
    broker = broker_factory(
        "--config", str(settings), listeners=lambda bootstrap: f"PLAINTEXT://{bootstrap},SASL_PLAINTEXT://127.0.0.1:{port}"
    )
    b = ("--bootstrap-server", broker.bootstrap)
    for mechanism, iterations in (("SCRAM-SHA-256", "4096"), ("SCRAM-SHA-512", "16384")):
        added = users_cli("scram-add", *b, "--user", "alice", "--password", "alice-secret", "--mechanism", mechanism, "--iterations", iterations)
        assert added.returncode == 0, added.stderr

    def login(mechanism, password):
        """-> whether a metadata request over SCRAM succeeds"""
        client = AdminClient({
            "bootstrap.servers": f"127.0.0.1:{port}",
            "broker.address.family": "v4",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": mechanism,
            "sasl.username": "alice",
            "sasl.password": password,
            "log_level": 0,
        })
        try:
            client.list_topics(timeout=5)
            return True
        except KafkaException:
            return False

    def failed_logins():
        lines = broker.log.read_text(errors="replace").splitlines()
        return sum("authentication failed" in line and "SCRAM-SHA-512" in line for line in lines)

    assert login("SCRAM-SHA-256", "alice-secret")
    assert login("SCRAM-SHA-512", "alice-secret")
    assert failed_logins() == 0
    assert not login("SCRAM-SHA-512", "wrong")
    refused = failed_logins()
    assert refused > 0
    assert users_cli("scram-remove", *b, "--user", "alice", "--mechanism", "SCRAM-SHA-512").returncode == 0
    assert not login("SCRAM-SHA-512", "alice-secret")
    assert failed_logins() > refused
    assert login("SCRAM-SHA-256", "alice-secret")


def wait_for(what, condition, timeout=30):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_credentials_replicate_to_every_node(cluster_factory):
    cluster = cluster_factory(voters=3)
    node1, node2, node3 = (cluster.nodes[n] for n in (1, 2, 3))
    # The command talks to the first bootstrap server only: added through node 1, described by
    # node 3 from its own metadata image, removed through node 2.
    added = users_cli("scram-add", "--bootstrap-server", node1.bootstrap, "--user", "alice", "--password", "pw")
    assert added.returncode == 0, added.stderr

    def listed_by_node3():
        result = users_cli("list", "--bootstrap-server", node3.bootstrap, "--user", "alice")
        return result.returncode == 0 and rows(result)

    assert wait_for("node 3 to describe alice", listed_by_node3) == [["alice", "SCRAM-SHA-512", "8192"]]
    removed = users_cli("scram-remove", "--bootstrap-server", node2.bootstrap, "--user", "alice", "--mechanism", "SCRAM-SHA-512")
    assert removed.returncode == 0, removed.stderr

    def gone_from_node3():
        result = users_cli("list", "--bootstrap-server", node3.bootstrap, "--user", "alice")
        return result.returncode == 3

    wait_for("node 3 to forget alice", gone_from_node3)
    # And a Kafka client sees the same through the whole cluster.
    client = admin(cluster.bootstrap)
    assert alter(client, [upsert("bob", SHA256, 4096)]) == {"bob": None}
    wait_for(
        "node 3 to describe bob",
        lambda: rows(users_cli("list", "--bootstrap-server", node3.bootstrap)) == [["bob", "SCRAM-SHA-256", "4096"]],
    )
