"""TLS, mTLS and SASL listeners with real clients and certificates made in the test (trustme):
confluent-kafka over SASL_SSL with SCRAM-SHA-512, kafka-python over SSL with client
certificates, kcat over SASL_PLAINTEXT with PLAIN. Every broker also keeps a PLAINTEXT listener
on its bootstrap port, for start-up checks and for creating SCRAM users."""

import contextlib
import re
import shutil
import socket
import ssl
import struct
import subprocess
import time
import uuid

import confluent_kafka
import kafka
import pytest
import trustme
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

import kafka_wire
from conftest import _free_port

KCAT = shutil.which("kcat")
PLAIN = "PLAINTEXT://127.0.0.1:0"
COUNT = 200


@pytest.fixture
def pki(tmp_path):
    """A CA, a broker certificate for 127.0.0.1, a client certificate for alice, as PEM files."""
    ca = trustme.CA(organization_name="odradek tests")
    broker = ca.issue_cert("127.0.0.1", "localhost", common_name="broker")
    alice = ca.issue_cert("alice@example.com", common_name="alice", organization_name="Acme", organization_unit_name="eng")
    files = {
        "ca": tmp_path / "ca.pem",
        "broker": tmp_path / "broker.pem",
        "client_cert": tmp_path / "alice.crt",
        "client_key": tmp_path / "alice.key",
    }
    ca.cert_pem.write_to_path(files["ca"])
    broker.private_key_and_cert_chain_pem.write_to_path(files["broker"])
    alice.cert_chain_pems[0].write_to_path(files["client_cert"])
    alice.private_key_pem.write_to_path(files["client_key"])
    return files


def settings_file(tmp_path, settings):
    path = tmp_path / "security.properties"
    path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    return ("--config", str(path))


def start_with(broker_factory, tmp_path, name, protocol, settings):
    """A broker with its PLAINTEXT bootstrap listener and one more, `name` of `protocol`."""
    port = _free_port()
    settings = {"listener.security.protocol.map": f"PLAINTEXT:PLAINTEXT,{name}:{protocol}", **settings}
    broker = broker_factory(
        *settings_file(tmp_path, settings),
        listeners=lambda bootstrap: f"PLAINTEXT://{bootstrap},{name}://127.0.0.1:{port}",
    )
    broker.secure = f"127.0.0.1:{port}"
    broker.secure_port = port
    return broker


def log_text(broker):
    return broker.log.read_text(errors="replace")


def wait_for_log(broker, pattern, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log_text(broker))
        if match:
            return match
        time.sleep(0.1)
    pytest.fail(f"no log line matching {pattern!r}:\n{broker.log_tail()}")


def confluent_round_trip(config, topic):
    """Produces COUNT numbered messages through `config` and reads them all back, in order."""
    producer = confluent_kafka.Producer({**config, "acks": "all", "enable.idempotence": True})
    delivered = []
    for i in range(COUNT):
        producer.produce(topic, value=f"m{i}".encode(), on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(30) == 0, "messages left undelivered"
    assert delivered == [None] * COUNT
    consumer = confluent_kafka.Consumer({**config, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < COUNT and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None:
            assert msg.error() is None, msg.error()
            seen.append(msg.value().decode())
    consumer.close()
    assert seen == [f"m{i}" for i in range(COUNT)]


def test_confluent_kafka_over_sasl_ssl_with_scram_sha_512(broker_factory, tmp_path, pki):
    broker = start_with(
        broker_factory, tmp_path, "SASL_SSL", "SASL_SSL",
        {
            "listener.name.sasl_ssl.ssl.keystore.location": pki["broker"],
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        },
    )
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    upsert = UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"alice-secret")
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)

    secure = {
        "bootstrap.servers": broker.secure,
        "broker.address.family": "v4",
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(pki["ca"]),
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "alice-secret",
    }
    # Metadata over this listener names this listener's port: were it the PLAINTEXT one, the
    # client's TLS handshake there would fail and nothing would be delivered.
    confluent_round_trip(secure, "scram-orders")
    wait_for_log(broker, r"authenticated.*mechanism=\"?SCRAM-SHA-512.*user=\"?alice")

    errors = []
    wrong = confluent_kafka.Producer({**secure, "sasl.password": "not-her-password", "error_cb": errors.append})
    wrong.produce("scram-orders", b"never")
    wrong.flush(5)
    assert any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors), errors
    line = wait_for_log(broker, r".*authentication failed.*").group(0)
    assert "alice" in line and "127.0.0.1" in line, line
    assert "not-her-password" not in log_text(broker)

    # SCRAM-SHA-256 is not enabled on this listener: refused, with the enabled list.
    errors.clear()
    other = confluent_kafka.Producer({**secure, "sasl.mechanisms": "SCRAM-SHA-256", "error_cb": errors.append})
    other.produce("scram-orders", b"never")
    other.flush(5)
    assert errors, "a disabled mechanism was accepted"
    wait_for_log(broker, r"SCRAM-SHA-256.* is not enabled on listener SASL_SSL \(enabled: SCRAM-SHA-512\)")


def test_kafka_python_over_ssl_with_client_certificates(broker_factory, tmp_path, pki, monkeypatch):
    monkeypatch.setenv("RUST_LOG", "info,odradek::server=debug")
    broker = start_with(
        broker_factory, tmp_path, "MTLS", "SSL",
        {
            "listener.name.mtls.ssl.keystore.location": pki["broker"],
            "listener.name.mtls.ssl.truststore.location": pki["ca"],
            "listener.name.mtls.ssl.client.auth": "required",
            # Kafka's rule syntax; it matches only if the subject reads most specific name first.
            "listener.name.mtls.ssl.principal.mapping.rules": "RULE:^CN=([^,]*),OU=eng,O=Acme$/$1@acme/U,DEFAULT",
        },
    )
    tls = dict(
        bootstrap_servers=broker.secure,
        security_protocol="SSL",
        ssl_cafile=str(pki["ca"]),
        ssl_certfile=str(pki["client_cert"]),
        ssl_keyfile=str(pki["client_key"]),
    )
    producer = kafka.KafkaProducer(acks="all", **tls)
    for i in range(COUNT):
        producer.send("mtls-events", f"e{i}".encode())
    producer.flush(30)
    producer.close()
    consumer = kafka.KafkaConsumer("mtls-events", auto_offset_reset="earliest", consumer_timeout_ms=10_000, **tls)
    seen = [m.value.decode() for m in consumer]
    consumer.close()
    assert seen == [f"e{i}" for i in range(COUNT)]
    # The principal: the certificate's subject (RFC 2253: CN=alice,OU=eng,O=Acme) through the rule.
    wait_for_log(broker, r"principal=User:ALICE@ACME")

    # A client without a certificate is refused in the handshake; only its connection closes.
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    with socket.create_connection(("127.0.0.1", broker.secure_port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_socket:
                # TLS 1.3 reports the missing certificate on the first read.
                tls_socket.sendall(kafka_wire.frame(kafka_wire.request_header(18, 0, 1)))
                if not tls_socket.recv(4):
                    raise ConnectionResetError("closed")
    wait_for_log(broker, r"TLS handshake failed")
    with contextlib.closing(kafka_wire.Connection("127.0.0.1", broker.port)) as plain:
        assert plain.api_versions_v0()


@pytest.mark.skipif(KCAT is None, reason="kcat is not on PATH (Debian package: kcat)")
def test_kcat_over_sasl_plaintext_with_plain(broker_factory, tmp_path):
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";'
    )
    broker = start_with(
        broker_factory, tmp_path, "SASL_PLAINTEXT", "SASL_PLAINTEXT",
        {"listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN", "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas},
    )

    def kcat(password, *args, stdin=None):
        auth = ["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN", "-X", "sasl.username=alice", "-X", f"sasl.password={password}"]
        return subprocess.run([KCAT, "-b", broker.secure, *auth, *args], input=stdin, capture_output=True, timeout=60)

    lines = [f"line {i}" for i in range(COUNT)]
    produced = kcat("alice-secret", "-P", "-t", "plain-lines", "-X", "acks=all", stdin="\n".join(lines).encode() + b"\n")
    assert produced.returncode == 0, produced.stderr.decode()
    consumed = kcat("alice-secret", "-C", "-t", "plain-lines", "-o", "beginning", "-c", str(COUNT), "-e")
    assert consumed.returncode == 0, consumed.stderr.decode()
    assert consumed.stdout.decode().splitlines() == lines

    refused = kcat("wrong", "-L", "-m", "5")
    assert refused.returncode != 0
    assert b"Authentication failed: Invalid username or password" in refused.stderr, refused.stderr.decode()
    line = wait_for_log(broker, r".*authentication failed.*").group(0)
    assert "alice" in line and "PLAIN" in line, line
    assert "wrong" not in line


def test_a_cluster_replicates_and_runs_its_quorum_over_mtls(cluster_factory, tmp_path, pki):
    """Inter-broker (follower fetches, transaction markers) and controller listeners over
    mTLS: with min.insync.replicas=2, an acks=all write is answered only once a follower
    fetched it over TLS, and the quorum forms only over its TLS listener."""
    mtls = {
        f"listener.name.{name}.{key}": value
        for name in ("internal", "controller")
        for key, value in {
            "ssl.keystore.location": pki["broker"],
            "ssl.truststore.location": pki["ca"],
            "ssl.client.auth": "required",
        }.items()
    }
    settings = {
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,INTERNAL:SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "INTERNAL",
        "controller.listener.names": "CONTROLLER",
        **mtls,
    }
    cluster = cluster_factory(
        extra_args=settings_file(tmp_path, settings),
        listeners=lambda bootstrap, controller_port: (
            f"PLAINTEXT://{bootstrap},INTERNAL://127.0.0.1:{_free_port()},CONTROLLER://127.0.0.1:{controller_port}"
        ),
    )
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topic = confluent_kafka.admin.NewTopic("replicated", num_partitions=1, replication_factor=3, config={"min.insync.replicas": "2"})
    admin.create_topics([topic])["replicated"].result(timeout=60)
    config = {"bootstrap.servers": cluster.bootstrap, "broker.address.family": "v4"}
    confluent_round_trip(config, "replicated")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        partitions = admin.list_topics("replicated", timeout=10).topics["replicated"].partitions.values()
        if all(len(p.isrs) == 3 for p in partitions):
            break
        time.sleep(0.5)
    assert all(len(p.isrs) == 3 for p in partitions), [p.isrs for p in partitions]

    # Without a certificate of that CA there is no way into either listener.
    node = cluster.nodes[1]
    controller_port = int(re.search(r"CONTROLLER://127.0.0.1:(\d+)", node.listen).group(1))
    internal_port = int(re.search(r"INTERNAL://127.0.0.1:(\d+)", node.listen).group(1))
    for port in (controller_port, internal_port):
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_socket:
                    tls_socket.sendall(b"\0\0\0\x04abcd")
                    if not tls_socket.recv(4):
                        raise ConnectionResetError("closed")
    wait_for_log(node, r"closing controller connection: TLS handshake failed")


def sasl_handshake(port, mechanism):
    """SaslHandshake v1 on a raw connection: (error code, enabled mechanisms, closed after)."""
    with contextlib.closing(kafka_wire.Connection("127.0.0.1", port)) as conn:
        body = kafka_wire.string(mechanism)
        reader = kafka_wire.Reader(conn.request(17, 1, body))
        code = reader.int16()
        mechanisms = reader.array(reader.string)
        conn.sock.settimeout(5)
        return code, mechanisms, conn.next_bytes() == b""


def test_sasl_listener_answers_unknown_mechanisms_and_early_requests_as_kafka_does(broker_factory, tmp_path):
    jaas = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_bob="bob-secret";'
    broker = start_with(
        broker_factory, tmp_path, "SASL_PLAINTEXT", "SASL_PLAINTEXT",
        {"sasl.enabled.mechanisms": "SCRAM-SHA-256,PLAIN", "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas},
    )
    # UNSUPPORTED_SASL_MECHANISM (33) with the enabled list, then the connection closes.
    assert sasl_handshake(broker.secure_port, "GSSAPI") == (33, ["SCRAM-SHA-256", "PLAIN"], True)
    wait_for_log(broker, r"\"GSSAPI\" is not enabled on listener SASL_PLAINTEXT")
    # Anything but ApiVersions before authentication closes the connection, and says why.
    with contextlib.closing(kafka_wire.Connection("127.0.0.1", broker.secure_port)) as conn:
        assert conn.api_versions_v0()
        conn.send(kafka_wire.frame(kafka_wire.request_header(3, 0, 7) + struct.pack(">i", 0)))
        conn.sock.settimeout(5)
        assert conn.next_bytes() == b""
    wait_for_log(broker, r"a Metadata request before SASL authentication on listener SASL_PLAINTEXT")
    # SaslHandshake v0: the token follows as a bare frame and is answered with one (Kafka's
    # framing before SaslAuthenticate); then the connection serves requests.
    with contextlib.closing(kafka_wire.Connection("127.0.0.1", broker.secure_port)) as conn:
        reader = kafka_wire.Reader(conn.request(17, 0, kafka_wire.string("PLAIN")))
        assert reader.int16() == 0
        conn.send(kafka_wire.frame(b"\0bob\0bob-secret"))
        assert conn.read_frame() == b""
        assert conn.api_versions_v0()
    wait_for_log(broker, r"authenticated.*mechanism=\"?PLAIN.*user=\"?bob")
    # A wrong bare token closes the connection: that framing has no way to say why.
    with contextlib.closing(kafka_wire.Connection("127.0.0.1", broker.secure_port)) as conn:
        conn.request(17, 0, kafka_wire.string("PLAIN"))
        conn.send(kafka_wire.frame(b"\0bob\0guess"))
        conn.sock.settimeout(5)
        assert conn.next_bytes() == b""
    # On the PLAINTEXT listener a SaslHandshake is out of place: ILLEGAL_SASL_STATE (34).
    assert sasl_handshake(broker.port, "PLAIN")[0] == 34


def server_certificate_issuer(port, cafile):
    """The issuer's common name of the certificate the broker presents, verified against `cafile`."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_socket:
            issuer = dict(item for rdn in tls_socket.getpeercert()["issuer"] for item in rdn)
            return issuer.get("organizationName")


def test_a_rotated_certificate_is_served_without_a_restart(broker_factory, tmp_path, pki):
    keystore = tmp_path / "rotating.pem"
    keystore.write_bytes(pki["broker"].read_bytes())
    broker = start_with(broker_factory, tmp_path, "SSL", "SSL", {"ssl.keystore.location": keystore})
    assert server_certificate_issuer(broker.secure_port, pki["ca"]) == "odradek tests"
    # A new CA's certificate, written beside and renamed over the old one, as rotation tools do.
    new_ca = trustme.CA(organization_name="rotated")
    new_ca_file = tmp_path / "new-ca.pem"
    new_ca.cert_pem.write_to_path(new_ca_file)
    staged = tmp_path / "staged.pem"
    new_ca.issue_cert("127.0.0.1", common_name="broker").private_key_and_cert_chain_pem.write_to_path(staged)
    staged.rename(keystore)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if server_certificate_issuer(broker.secure_port, new_ca_file) == "rotated":
                break
        except ssl.SSLError:
            time.sleep(0.3)
    assert server_certificate_issuer(broker.secure_port, new_ca_file) == "rotated"
    wait_for_log(broker, r"loaded the changed TLS certificate")
    # A broken file keeps the current certificate in use.
    keystore.write_text("not a certificate")
    time.sleep(1.5)
    assert server_certificate_issuer(broker.secure_port, new_ca_file) == "rotated"
    wait_for_log(broker, r"keeping the previous TLS certificate")


def test_sasl_logins_expire_and_clients_reauthenticate(broker_factory, tmp_path):
    """KIP-368: with connections.max.reauth.ms a login lasts that long; librdkafka logs in
    again on the same connection and keeps producing, a client that does not is closed."""
    jaas = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";'
    broker = start_with(
        broker_factory, tmp_path, "SASL_PLAINTEXT", "SASL_PLAINTEXT",
        {
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
            "connections.max.reauth.ms": "1500",
        },
    )
    config = {
        "bootstrap.servers": broker.secure, "broker.address.family": "v4", "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "PLAIN", "sasl.username": "alice", "sasl.password": "alice-secret",
    }
    producer = confluent_kafka.Producer({**config, "acks": "all"})
    delivered = []
    deadline = time.monotonic() + 5
    sent = 0
    while time.monotonic() < deadline:
        producer.produce("reauth", f"r{sent}".encode(), on_delivery=lambda err, msg: delivered.append(err))
        sent += 1
        producer.poll(0.1)
    assert producer.flush(20) == 0
    assert delivered == [None] * sent
    wait_for_log(broker, r"re-authenticated.*user=\"?alice")

    # A client that logs in once and goes on after its session ends is closed.
    with contextlib.closing(kafka_wire.Connection("127.0.0.1", broker.secure_port)) as conn:
        assert kafka_wire.Reader(conn.request(17, 1, kafka_wire.string("PLAIN"))).int16() == 0
        token = b"\0alice\0alice-secret"
        reader = kafka_wire.Reader(conn.request(36, 1, struct.pack(">i", len(token)) + token))
        assert reader.int16() == 0
        reader.string()  # error message
        assert reader.int32() == 0  # no auth bytes after PLAIN
        assert reader.int64() == 1500  # session_lifetime_ms
        time.sleep(2)
        conn.send(kafka_wire.frame(kafka_wire.request_header(18, 0, 9)))
        conn.sock.settimeout(5)
        assert conn.next_bytes() == b""
    wait_for_log(broker, r"SASL session expired without re-authentication")


@pytest.mark.parametrize(
    "settings, complaint",
    [
        ({"listeners": f"{PLAIN},SSL://127.0.0.1:0"}, "ssl.keystore.location is required"),
        ({"listeners": f"{PLAIN},SSL://127.0.0.1:0", "ssl.keystore.location": "/nonexistent.pem"}, "/nonexistent.pem"),
        ({"listeners": f"{PLAIN},SSL://127.0.0.1:0", "ssl.keystore.type": "JKS", "ssl.keystore.location": "k.jks"}, "JKS is not supported"),
        ({"listeners": f"{PLAIN},SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms": "GSSAPI"}, "GSSAPI (Kerberos) is not supported"),
        ({"listeners": f"{PLAIN},X://127.0.0.1:0"}, "listener X has no security protocol"),
        ({"listeners": "SASL_PLAINTEXT://127.0.0.1:0"}, "inter-broker traffic runs over PLAINTEXT or SSL only"),
        ({"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": "/etc/hostname"}, "ssl.truststore.location is required to connect to other brokers"),
    ],
)
def test_bad_security_settings_stop_the_broker_at_start(tmp_path, settings, complaint):
    from conftest import ODRADEK_BIN

    path = tmp_path / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    result = subprocess.run(
        [str(ODRADEK_BIN), "serve", "--config", str(path), "--data-dir", str(tmp_path / "data")],
        capture_output=True, timeout=30, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert complaint in result.stderr.decode(), result.stderr.decode()
