"""Malformed and unsupported requests over raw sockets. After each, the
broker must still serve other connections and every acknowledged record."""

import struct
import time
from dataclasses import dataclass

import pytest

import kafka_wire as wire
from kafka_clients import ConfluentClient
from log_checks import acked_log, assert_high_watermarks, assert_log, end_offsets_of, make_messages

TOPIC = "seed"
PARTITIONS = 2
MAX_REQUEST_BYTES = 100 * 1024 * 1024
KAFKA_APIS = {
    "Produce": 0,
    "Fetch": 1,
    "ListOffsets": 2,
    "Metadata": 3,
    "DescribeConfigs": 32,
    "ApiVersions": 18,
    "CreateTopics": 19,
    "DeleteTopics": 20,
}


def now_ms():
    return int(time.time() * 1000)


@dataclass
class Seeded:
    acked: dict  # {partition: {offset: Message}}
    bystander: wire.Connection  # opened before the bad input, must outlive it


def connect(broker):
    return wire.Connection(broker.host, broker.port)


@pytest.fixture
def seeded(broker):
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(TOPIC, PARTITIONS)
    messages = make_messages(1_000, now_ms(), tag="seed")
    acked = acked_log(messages, client.produce(TOPIC, messages))
    bystander = connect(broker)
    assert bystander.api_versions_v0()[0] == wire.ERROR_NONE
    yield Seeded(acked, bystander)
    bystander.close()


def assert_still_healthy(broker, seeded):
    assert broker.proc.poll() is None, f"odradek exited with code {broker.proc.returncode}"
    assert seeded.bystander.api_versions_v0()[0] == wire.ERROR_NONE, "an unrelated connection stopped working"
    client = ConfluentClient(broker.bootstrap)
    more = make_messages(200, now_ms(), tag="after")
    new_acks = acked_log(more, client.produce(TOPIC, more), start_offsets=end_offsets_of(seeded.acked))
    acked = {p: {**seeded.acked.get(p, {}), **new_acks.get(p, {})} for p in range(PARTITIONS)}
    ends = end_offsets_of(acked)
    assert_high_watermarks(client, TOPIC, ends)
    assert_log(client.consume(TOPIC, ends), acked, ends)


def assert_closed_by_broker(conn):
    got = conn.next_bytes()
    assert got is not None, f"broker neither answered nor closed the connection within {conn.timeout}s"
    assert got == b"", f"broker should have closed the connection, but answered {got[:64]!r}"


def raw_produce(conn, topic, partition, records_bytes):
    """-> (error_code, base_offset) of the one partition produced to."""
    body = wire.produce_v3_body(topic, partition, records_bytes)
    response = wire.parse_produce_v3(conn.request(wire.API_PRODUCE, 3, body))
    assert list(response) == [(topic, partition)], f"response for the wrong partitions: {response}"
    return response[(topic, partition)]


def test_crc32c_check_value():
    assert wire.crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("length", [MAX_REQUEST_BYTES + 1, 2**31 - 1, -1, -(2**31)])
def test_bad_length_prefix_closes_connection(broker, seeded, length):
    conn = connect(broker)
    conn.send(struct.pack(">i", length) + wire.request_header(wire.API_METADATA, 1, 1))
    assert_closed_by_broker(conn)
    assert_still_healthy(broker, seeded)


def test_a_tls_client_on_the_plaintext_listener_is_closed_and_told_why(broker, seeded):
    import socket
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((broker.host, broker.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            context.wrap_socket(raw, server_hostname="localhost")
    deadline = time.monotonic() + 10
    while "TLS handshake on a PLAINTEXT listener" not in broker.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no log line naming the TLS handshake:\n{broker.log_tail()}"
        time.sleep(0.05)
    assert_still_healthy(broker, seeded)


@pytest.mark.parametrize("api_key", [1000, 32767, -1])
def test_unknown_api_key_closes_connection(broker, seeded, api_key):
    conn = connect(broker)
    conn.send(wire.frame(wire.request_header(api_key, 0, 1) + b"\x00" * 16))
    assert_closed_by_broker(conn)
    assert_still_healthy(broker, seeded)


def test_api_versions_above_max_answers_unsupported_version(broker, seeded):
    conn = connect(broker)
    # What a client from the future sends: a flexible v3+ style request.
    body = wire.compact_string("future-client") + wire.compact_string("9.9") + b"\x00"
    error_code, api_keys = wire.parse_api_versions_v0(conn.request(wire.API_VERSIONS, 127, body, flexible_header=True))
    assert error_code == wire.ERROR_UNSUPPORTED_VERSION
    missing = {name for name, key in KAFKA_APIS.items() if key not in api_keys}
    assert not missing, f"ApiVersions error response lacks {missing}: {api_keys}"
    assert api_keys[wire.API_VERSIONS][0] == 0 and api_keys[wire.API_VERSIONS][1] >= 3
    # Clients retry on the same connection with a version from that list.
    error_code, api_keys_v0 = conn.api_versions_v0()
    assert (error_code, api_keys_v0) == (wire.ERROR_NONE, api_keys)
    assert_still_healthy(broker, seeded)


def _fetch_v3_body():
    return struct.pack(">iiii", -1, 100, 1, 1) + wire.string(TOPIC) + struct.pack(">iiqi", 1, 0, 0, 1 << 20)


def _produce_v2_body():
    body = wire.produce_v3_body(TOPIC, 0, wire.record_batch(make_messages(1, now_ms())))
    return body[2:]  # v2 has no transactional id: drop the null string


@pytest.mark.parametrize(
    "api_key, version, flexible, body",
    [
        pytest.param(wire.API_METADATA, 127, True, b"\x01\x00\x00", id="Metadata v127"),
        pytest.param(wire.API_PRODUCE, 2, False, _produce_v2_body(), id="Produce v2"),
        pytest.param(wire.API_FETCH, 3, False, _fetch_v3_body(), id="Fetch v3"),
    ],
)
def test_unsupported_version_closes_connection(broker, seeded, api_key, version, flexible, body):
    conn = connect(broker)
    conn.send(wire.frame(wire.request_header(api_key, version, 1, flexible) + body))
    assert_closed_by_broker(conn)
    assert_still_healthy(broker, seeded)


def _truncated_produce():
    request = wire.request_header(wire.API_PRODUCE, 3, 1) + wire.produce_v3_body(
        TOPIC, 0, wire.record_batch(make_messages(10, now_ms()))
    )
    return request[:-20]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x00\x03\x00", id="shorter than a request header"),
        pytest.param(
            wire.request_header(wire.API_METADATA, 1, 1) + struct.pack(">ih", 1, 1000) + b"abc",
            id="Metadata topic name runs past the frame",
        ),
        pytest.param(
            wire.request_header(wire.API_METADATA, 1, 1) + struct.pack(">i", 2**31 - 1) + b"\x00" * 8,
            id="Metadata topic count far beyond the frame",
        ),
        pytest.param(
            wire.request_header(wire.API_PRODUCE, 3, 1)
            + wire.string(None)
            + struct.pack(">hii", -1, 1000, 2**31 - 1)
            + b"\x00" * 8,
            id="Produce topic count far beyond the frame",
        ),
        pytest.param(_truncated_produce(), id="Produce records cut short"),
    ],
)
def test_undecodable_request_closes_connection(broker, seeded, payload):
    conn = connect(broker)
    conn.send(wire.frame(payload))
    assert_closed_by_broker(conn)
    assert_still_healthy(broker, seeded)


def test_hand_encoded_batch_is_stored(broker, seeded):
    """Shows the raw encoder is right, so its rejections below mean something."""
    partition = 0
    messages = make_messages(5, now_ms(), tag="raw")
    conn = connect(broker)
    error_code, base_offset = raw_produce(conn, TOPIC, partition, wire.record_batch(messages))
    end = end_offsets_of(seeded.acked)[partition]
    assert (error_code, base_offset) == (wire.ERROR_NONE, end)
    for i, message in enumerate(messages):
        seeded.acked[partition][end + i] = message
    assert_still_healthy(broker, seeded)


def test_wrong_crc_is_rejected(broker, seeded):
    conn = connect(broker)
    batch = wire.record_batch(make_messages(5, now_ms(), tag="corrupt"), corrupt_crc=True)
    assert raw_produce(conn, TOPIC, 0, batch)[0] == wire.ERROR_CORRUPT_MESSAGE
    # A per-partition error, not a broken connection.
    assert conn.api_versions_v0()[0] == wire.ERROR_NONE
    assert_still_healthy(broker, seeded)  # also proves nothing of the batch was stored


@pytest.mark.parametrize("topic, partition", [(TOPIC, PARTITIONS), (TOPIC, -1), ("no-such-topic", 0)])
def test_produce_to_missing_partition_is_rejected(broker, seeded, topic, partition):
    conn = connect(broker)
    batch = wire.record_batch(make_messages(5, now_ms(), tag="nowhere"))
    assert raw_produce(conn, topic, partition, batch)[0] == wire.ERROR_UNKNOWN_TOPIC_OR_PARTITION
    assert conn.api_versions_v0()[0] == wire.ERROR_NONE
    assert_still_healthy(broker, seeded)


# ---- batches Kafka's LogValidator refuses ----

ERROR_MESSAGE_TOO_LARGE = 10
ERROR_INVALID_TIMESTAMP = 32
ERROR_INVALID_RECORD = 87


def crafted_batch(messages, *, count=None, last_offset_delta=None, deltas=None, attributes=0, magic=2, body=None):
    """A record batch v2 as a client could craft it, with a valid CRC over whatever it claims:
    `count` / `last_offset_delta` override the header, `deltas` the records' offset deltas,
    `body` replaces the records section (for compressed batches, with the codec in
    `attributes`)."""
    base_timestamp = messages[0].timestamp if messages else now_ms()
    if body is None:
        body = b""
        for i, m in enumerate(messages):
            record = (
                b"\x00"
                + wire.varint(m.timestamp - base_timestamp)
                + wire.varint(deltas[i] if deltas else i)
                + wire._varbytes(m.key)
                + wire._varbytes(m.value)
                + wire.varint(len(m.headers))
                + b"".join(wire._varbytes(k.encode()) + wire._varbytes(v) for k, v in m.headers)
            )
            body += wire.varint(len(record)) + record
    n = len(messages)
    after_crc = (
        struct.pack(
            ">hiqqqhii",
            attributes,
            n - 1 if last_offset_delta is None else last_offset_delta,
            base_timestamp,
            max((m.timestamp for m in messages), default=base_timestamp),
            -1,
            -1,
            -1,
            n if count is None else count,
        )
        + body
    )
    after_length = struct.pack(">ibI", -1, magic, wire.crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_v8(conn, topic, partition, records_bytes):
    """Produce v8 (record errors and an error message in the answer) ->
    (error_code, base_offset, [(batch_index, message)], error_message)."""
    body = wire.produce_v3_body(topic, partition, records_bytes)
    reader = wire.Reader(conn.request(wire.API_PRODUCE, 8, body))
    results = []
    for _ in range(reader.int32()):
        reader.string()
        for _ in range(reader.int32()):
            _partition, error_code, base_offset = reader.int32(), reader.int16(), reader.int64()
            reader.int64(), reader.int64()  # log append time, log start offset
            record_errors = [(reader.int32(), reader.string()) for _ in range(reader.int32())]
            results.append((error_code, base_offset, record_errors, reader.string()))
    assert len(results) == 1, results
    return results[0]


def _messages(count, tag, timestamp=None):
    return make_messages(count, now_ms() if timestamp is None else timestamp, tag=tag)


@pytest.mark.parametrize(
    "batch, code",
    [
        pytest.param(
            lambda: crafted_batch(_messages(1, "huge"), count=2**31 - 1, last_offset_delta=2**31 - 2),
            ERROR_INVALID_RECORD,
            id="one record claiming 2^31-1",
        ),
        pytest.param(lambda: crafted_batch(_messages(1, "three"), count=3, last_offset_delta=2), ERROR_INVALID_RECORD,
                     id="claims 3 records, holds 1"),
        pytest.param(lambda: crafted_batch(_messages(3, "fewer"), count=2, last_offset_delta=1), ERROR_INVALID_RECORD,
                     id="claims 2 records, holds 3"),
        pytest.param(lambda: crafted_batch(_messages(2, "ctl"), attributes=0x20), ERROR_INVALID_RECORD,
                     id="control batch from a client"),
        pytest.param(lambda: crafted_batch(_messages(3, "deltas"), deltas=[0, 2, 3]), ERROR_INVALID_RECORD,
                     id="offset deltas with a gap"),
        pytest.param(lambda: crafted_batch(_messages(2, "magic1"), magic=1), ERROR_INVALID_RECORD, id="magic 1"),
        pytest.param(lambda: crafted_batch(_messages(1, "a")) + crafted_batch(_messages(1, "b")), ERROR_INVALID_RECORD,
                     id="two batches"),
        pytest.param(lambda: crafted_batch(_messages(2, "junk"), body=b"\x7f" * 40), ERROR_INVALID_RECORD,
                     id="records section of junk"),
        pytest.param(lambda: crafted_batch(_messages(2, "gzjunk"), attributes=1, body=b"\x1f\x8b" + b"\x00" * 30),
                     wire.ERROR_CORRUPT_MESSAGE, id="gzip section that does not inflate"),
    ],
)
def test_batches_kafka_refuses_are_refused(broker, seeded, batch, code):
    conn = connect(broker)
    error_code, base_offset, _, message = produce_v8(conn, TOPIC, 0, batch())
    assert (error_code, base_offset) == (code, -1), message
    assert message, "the refusal says why"
    assert conn.api_versions_v0()[0] == wire.ERROR_NONE, "a per-partition error, not a broken connection"
    assert_still_healthy(broker, seeded)  # nothing of the batch was stored: offsets stay dense


def test_a_gzip_bomb_is_refused_without_inflating_it(broker, seeded):
    import gzip

    # 512 MiB of zeros in about half a MiB: what the batch would inflate to.
    bomb = gzip.compress(b"\x00" * (512 << 20), compresslevel=9)
    assert len(bomb) < 1 << 20
    conn = connect(broker)
    error_code, base_offset, _, message = produce_v8(conn, TOPIC, 0, crafted_batch(_messages(2, "bomb"), attributes=1, body=bomb))
    assert (error_code, base_offset) == (ERROR_MESSAGE_TOO_LARGE, -1), message
    status = open(f"/proc/{broker.proc.pid}/status").read()
    peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    assert peak_kib < 256 << 10, f"the broker's peak RSS reached {peak_kib} KiB"
    assert_still_healthy(broker, seeded)


def test_timestamps_out_of_range_get_record_errors(broker, seeded):
    conn = connect(broker)
    two_hours_ahead = now_ms() + 2 * 3_600_000
    error_code, _, record_errors, message = produce_v8(conn, TOPIC, 1, crafted_batch(_messages(3, "future", two_hours_ahead)))
    assert error_code == ERROR_INVALID_TIMESTAMP, message
    assert [index for index, _ in record_errors] == [0, 1, 2]
    assert all("out of range" in why for _, why in record_errors), record_errors
    # Long past is fine by default (message.timestamp.before.max.ms is unbounded).
    past = _messages(2, "past", now_ms() - 30 * 86_400_000)
    error_code, base_offset, _, _ = produce_v8(conn, TOPIC, 1, crafted_batch(past))
    end = end_offsets_of(seeded.acked)[1]
    assert (error_code, base_offset) == (wire.ERROR_NONE, end)
    for i, message in enumerate(past):
        seeded.acked[1][end + i] = message
    assert_still_healthy(broker, seeded)


def test_keyless_records_on_a_compacted_topic_are_refused(broker, seeded):
    ConfluentClient(broker.bootstrap).create_topic("compacted-keys", 1, {"cleanup.policy": "compact"})
    conn = connect(broker)
    messages = _messages(3, "keyed")
    messages[1] = messages[1]._replace(key=None)
    error_code, base_offset, record_errors, _ = produce_v8(conn, "compacted-keys", 0, crafted_batch(messages))
    assert (error_code, base_offset) == (ERROR_INVALID_RECORD, -1)
    assert record_errors == [(1, "Compacted topic cannot accept message without key")]
    keyed = _messages(3, "keyed")
    assert produce_v8(conn, "compacted-keys", 0, crafted_batch(keyed))[:2] == (wire.ERROR_NONE, 0)
    assert_still_healthy(broker, seeded)
