"""Just enough of the Kafka wire protocol, encoded by hand, to send the broker
requests that no well-behaved client library would ever produce."""

import socket
import struct
from typing import NamedTuple

API_PRODUCE = 0
API_FETCH = 1
API_METADATA = 3
API_VERSIONS = 18

ERROR_NONE = 0
ERROR_CORRUPT_MESSAGE = 2
ERROR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERROR_UNSUPPORTED_VERSION = 35


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of record batch v2."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _varbytes(data):
    return varint(-1) if data is None else varint(len(data)) + data


def string(value) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def compact_string(value: str) -> bytes:
    raw = value.encode()
    return bytes([len(raw) + 1]) + raw  # unsigned varint; short strings only


def record_batch(messages, corrupt_crc=False, producer_id=-1, producer_epoch=-1, base_sequence=-1, attributes=0):
    """Uncompressed record batch v2 of messages (anything with .key, .value,
    .headers and .timestamp), optionally with a wrong CRC, an idempotent producer's id,
    epoch and sequence, or other attributes (0x10 transactional, 0x20 control)."""
    base_timestamp = messages[0].timestamp
    body = b""
    for delta, m in enumerate(messages):
        record = (
            b"\x00"  # attributes
            + varint(m.timestamp - base_timestamp)
            + varint(delta)  # offset delta
            + _varbytes(m.key)
            + _varbytes(m.value)
            + varint(len(m.headers))
            + b"".join(_varbytes(k.encode()) + _varbytes(v) for k, v in m.headers)
        )
        body += varint(len(record)) + record
    after_crc = (
        struct.pack(
            ">hiqqqhii",
            attributes,  # 0: no compression, CreateTime, not transactional
            len(messages) - 1,  # last offset delta
            base_timestamp,
            max(m.timestamp for m in messages),
            producer_id,  # -1: not idempotent
            producer_epoch,
            base_sequence,
            len(messages),
        )
        + body
    )
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0x1
    after_length = struct.pack(">ibI", -1, 2, crc) + after_crc  # leader epoch, magic
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_v3_body(topic, partition, records_bytes, acks=-1, timeout_ms=10_000):
    return (
        string(None)  # transactional id
        + struct.pack(">hii", acks, timeout_ms, 1)
        + string(topic)
        + struct.pack(">ii", 1, partition)
        + struct.pack(">i", len(records_bytes))
        + records_bytes
    )


def uvarint(value: int) -> bytes:
    out = b""
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def describe_producers_v0_body(partitions_by_topic):
    """DescribeProducers v0 (flexible): {topic: [partition, ...]}."""
    body = uvarint(len(partitions_by_topic) + 1)
    for topic, partitions in partitions_by_topic.items():
        body += compact_string(topic) + uvarint(len(partitions) + 1)
        body += b"".join(struct.pack(">i", p) for p in partitions) + b"\x00"
    return body + b"\x00"


def parse_describe_producers_v0(body: bytes):
    """-> {(topic, partition): (error_code, [(producer_id, epoch, last_sequence), ...])}"""
    reader = Reader(body)
    reader.pos += 1  # response header v1: no tagged fields
    reader.int32()  # throttle time
    result = {}
    for _ in range(reader.uvarint() - 1):
        topic = reader.compact_string()
        for _ in range(reader.uvarint() - 1):
            partition, error_code = reader.int32(), reader.int16()
            reader.compact_string()  # error message
            producers = []
            for _ in range(reader.uvarint() - 1):
                pid, epoch, last_seq = reader.int64(), reader.int32(), reader.int32()
                reader.int64(), reader.int32(), reader.int64()  # last timestamp, coordinator epoch, txn start
                reader.pos += 1  # tagged fields
                producers.append((pid, epoch, last_seq))
            reader.pos += 1
            result[(topic, partition)] = (error_code, producers)
        reader.pos += 1
    return result


def init_producer_id_v0_body(transactional_id=None, transaction_timeout_ms=60_000):
    return string(transactional_id) + struct.pack(">i", transaction_timeout_ms)


def parse_init_producer_id_v0(body: bytes):
    """-> (error_code, producer_id, producer_epoch)"""
    reader = Reader(body)
    reader.int32()  # throttle time
    return reader.int16(), reader.int64(), reader.int16()


def request_header(api_key, api_version, correlation_id, flexible=False):
    header = struct.pack(">hhi", api_key, api_version, correlation_id) + string("odradek-tests")
    return header + b"\x00" if flexible else header  # empty tagged fields


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _unpack(self, fmt):
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def int16(self):
        return self._unpack(">h")

    def int32(self):
        return self._unpack(">i")

    def int64(self):
        return self._unpack(">q")

    def string(self):
        length = self.int16()
        if length < 0:
            return None
        value = self.data[self.pos : self.pos + length].decode()
        self.pos += length
        return value

    def uvarint(self):
        value, shift = 0, 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def compact_string(self):
        length = self.uvarint() - 1
        if length < 0:
            return None
        value = self.data[self.pos : self.pos + length].decode()
        self.pos += length
        return value

    def array(self, read_item):
        return [read_item() for _ in range(self.int32())]


def parse_api_versions_v0(body: bytes):
    """-> (error_code, {api_key: (min_version, max_version)})"""
    reader = Reader(body)
    error_code = reader.int16()
    keys = reader.array(lambda: (reader.int16(), reader.int16(), reader.int16()))
    return error_code, {key: (lo, hi) for key, lo, hi in keys}


def parse_produce_v3(body: bytes):
    """-> {(topic, partition): (error_code, base_offset)}"""
    reader = Reader(body)
    result = {}
    for _ in range(reader.int32()):
        topic = reader.string()
        for _ in range(reader.int32()):
            partition, error_code, base_offset, _append_time = (
                reader.int32(),
                reader.int16(),
                reader.int64(),
                reader.int64(),
            )
            result[(topic, partition)] = (error_code, base_offset)
    return result


class Connection:
    """One raw TCP connection to the broker."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.next_correlation_id = 1

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def request(self, api_key, api_version, body=b"", flexible_header=False):
        """Send one request; return the response body after its v0 header."""
        correlation_id = self.next_correlation_id
        self.next_correlation_id += 1
        self.send(frame(request_header(api_key, api_version, correlation_id, flexible_header) + body))
        response = self.read_frame()
        (got_id,) = struct.unpack_from(">i", response)
        assert got_id == correlation_id, f"correlation id {got_id}, expected {correlation_id}"
        return response[4:]

    def _read_exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
            data += chunk
        return data

    def read_frame(self):
        (length,) = struct.unpack(">i", self._read_exactly(4))
        return self._read_exactly(length)

    def next_bytes(self):
        """Whatever the broker sends next: b"" once it closes the connection,
        None if nothing comes within the timeout."""
        try:
            return self.sock.recv(4096)
        except ConnectionResetError:
            return b""
        except socket.timeout:
            return None

    def api_versions_v0(self):
        return parse_api_versions_v0(self.request(API_VERSIONS, 0))


# ---- Fetch, ListOffsets, Metadata and record batches, for tests that need the exact
# error codes and timings the client libraries hide ----

API_LIST_OFFSETS = 2
ERROR_OFFSET_OUT_OF_RANGE = 1
LIST_OFFSETS_EARLIEST = -2
LIST_OFFSETS_LATEST = -1


try:
    from crc32c import crc32c as _fast_crc32c  # kafka-python's dependency, in C
except ImportError:  # pragma: no cover
    _fast_crc32c = None


def _batch_crc(data: bytes) -> int:
    return _fast_crc32c(data) if _fast_crc32c else crc32c(data)


class FetchedPartition(NamedTuple):
    error_code: int
    high_watermark: int
    log_start_offset: int
    records: bytes


def fetch_v5_body(partitions, max_wait_ms, min_bytes, max_bytes=50 << 20, partition_max_bytes=1 << 20):
    """partitions: [(topic, partition, fetch_offset)], grouped by topic in order."""
    by_topic = {}
    for topic, partition, offset in partitions:
        by_topic.setdefault(topic, []).append((partition, offset))
    body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, max_bytes, 0)  # consumer, read_uncommitted
    body += struct.pack(">i", len(by_topic))
    for topic, parts in by_topic.items():
        body += string(topic) + struct.pack(">i", len(parts))
        for partition, offset in parts:
            body += struct.pack(">iqqi", partition, offset, -1, partition_max_bytes)
    return body


def parse_fetch_v5(body: bytes):
    """-> {(topic, partition): FetchedPartition}"""
    reader = Reader(body)
    reader.int32()  # throttle time
    result = {}
    for _ in range(reader.int32()):
        topic = reader.string()
        for _ in range(reader.int32()):
            partition, error_code, high_watermark = reader.int32(), reader.int16(), reader.int64()
            reader.int64()  # last stable offset
            log_start_offset = reader.int64()
            aborted = reader.int32()
            for _ in range(max(aborted, 0)):
                reader.int64(), reader.int64()
            length = reader.int32()
            records = b""
            if length > 0:
                records = reader.data[reader.pos : reader.pos + length]
                reader.pos += length
            result[(topic, partition)] = FetchedPartition(error_code, high_watermark, log_start_offset, records)
    return result


def list_offsets_v1_body(partitions):
    """partitions: [(topic, partition, timestamp)]; -2 earliest, -1 latest."""
    by_topic = {}
    for topic, partition, timestamp in partitions:
        by_topic.setdefault(topic, []).append((partition, timestamp))
    body = struct.pack(">ii", -1, len(by_topic))
    for topic, parts in by_topic.items():
        body += string(topic) + struct.pack(">i", len(parts))
        for partition, timestamp in parts:
            body += struct.pack(">iq", partition, timestamp)
    return body


def parse_list_offsets_v1(body: bytes):
    """-> {(topic, partition): (error_code, timestamp, offset)}"""
    reader = Reader(body)
    result = {}
    for _ in range(reader.int32()):
        topic = reader.string()
        for _ in range(reader.int32()):
            partition, error_code, timestamp, offset = reader.int32(), reader.int16(), reader.int64(), reader.int64()
            result[(topic, partition)] = (error_code, timestamp, offset)
    return result


def metadata_v1_body(topics):
    """topics: names, or None for every topic. v1 leaves auto-creation to the broker."""
    if topics is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(topics)) + b"".join(string(t) for t in topics)


def parse_metadata_v1(body: bytes):
    """-> {topic: (error_code, [partition indexes])}"""
    reader = Reader(body)
    for _ in range(reader.int32()):  # brokers
        reader.int32(), reader.string(), reader.int32(), reader.string()
    reader.int32()  # controller id
    result = {}
    for _ in range(reader.int32()):
        error_code, name = reader.int16(), reader.string()
        reader.pos += 1  # is_internal
        partitions = []
        for _ in range(reader.int32()):
            _partition_error, index, _leader = reader.int16(), reader.int32(), reader.int32()
            reader.array(reader.int32)  # replicas
            reader.array(reader.int32)  # isr
            partitions.append(index)
        result[name] = (error_code, sorted(partitions))
    return result


def parse_produce_v3_append_times(body: bytes):
    """-> {(topic, partition): (error_code, base_offset, log_append_time_ms)}"""
    reader = Reader(body)
    result = {}
    for _ in range(reader.int32()):
        topic = reader.string()
        for _ in range(reader.int32()):
            partition, error_code = reader.int32(), reader.int16()
            base_offset, append_time = reader.int64(), reader.int64()
            result[(topic, partition)] = (error_code, base_offset, append_time)
    return result


class StoredRecord(NamedTuple):
    offset: int
    timestamp: int
    key: bytes
    value: bytes
    headers: tuple


class StoredBatch(NamedTuple):
    position: int  # byte position in the buffer it was parsed from
    base_offset: int
    last_offset: int
    attributes: int
    base_timestamp: int
    max_timestamp: int
    total_len: int
    crc_ok: bool
    records: list  # [StoredRecord]; empty for compressed batches


def _read_varint(data, pos):
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos


def _read_varbytes(data, pos):
    length, pos = _read_varint(data, pos)
    if length < 0:
        return None, pos
    return bytes(data[pos : pos + length]), pos + length


def _decode_records(body, count, base_offset, base_timestamp):
    records, pos = [], 0
    for _ in range(count):
        length, pos = _read_varint(body, pos)
        end = pos + length
        pos += 1  # attributes
        ts_delta, pos = _read_varint(body, pos)
        offset_delta, pos = _read_varint(body, pos)
        key, pos = _read_varbytes(body, pos)
        value, pos = _read_varbytes(body, pos)
        header_count, pos = _read_varint(body, pos)
        headers = []
        for _ in range(header_count):
            name, pos = _read_varbytes(body, pos)
            header_value, pos = _read_varbytes(body, pos)
            headers.append((name.decode(), header_value))
        assert pos == end, (
            f"record at offset {base_offset + offset_delta} is {length} bytes but decodes to {pos - end + length}"
        )
        records.append(StoredRecord(base_offset + offset_delta, base_timestamp + ts_delta, key, value, tuple(headers)))
    return records


DIRECT_IO_BLOCK = 4096


def without_padding(data: bytes) -> bytes:
    """The active segment's file with direct IO ends with zeros up to the next device block
    (docs/architecture.md): cut them, and nothing else. Sealed segments carry none."""
    pos = 0
    while pos + 12 <= len(data):
        (batch_length,) = struct.unpack_from(">i", data, pos + 8)
        if batch_length <= 0 or pos + 12 + batch_length > len(data):
            break
        pos += 12 + batch_length
    rest = data[pos:]
    if rest and len(rest) < DIRECT_IO_BLOCK and not any(rest):
        return data[:pos]
    return data


def parse_batches(data: bytes):
    """Record batches v2 laid end to end (a segment file, a Fetch response's records).
    A trailing partial batch is left out, as a Fetch response may end with one."""
    batches, pos = [], 0
    while pos + 61 <= len(data):
        base_offset, batch_length = struct.unpack_from(">qi", data, pos)
        total_len = 12 + batch_length
        if pos + total_len > len(data):
            break
        _epoch, magic, crc = struct.unpack_from(">ibI", data, pos + 12)
        assert magic == 2, f"batch at byte {pos} has magic {magic}"
        attributes, last_delta, base_ts, max_ts = struct.unpack_from(">hiqq", data, pos + 21)
        (count,) = struct.unpack_from(">i", data, pos + 57)
        crc_ok = _batch_crc(bytes(data[pos + 21 : pos + total_len])) == crc
        records = []
        if attributes & 0x07 == 0 and not attributes & 0x20:  # uncompressed, not a control batch
            records = _decode_records(data[pos + 61 : pos + total_len], count, base_offset, base_ts)
        last_offset = base_offset + last_delta
        batches.append(
            StoredBatch(pos, base_offset, last_offset, attributes, base_ts, max_ts, total_len, crc_ok, records)
        )
        pos += total_len
    return batches


def fetch(conn, partitions, max_wait_ms, min_bytes, **limits):
    """Fetch v5 over conn -> {(topic, partition): FetchedPartition}"""
    return parse_fetch_v5(conn.request(API_FETCH, 5, fetch_v5_body(partitions, max_wait_ms, min_bytes, **limits)))


def list_offsets(conn, partitions):
    """ListOffsets v1 over conn -> {(topic, partition): (error_code, timestamp, offset)}"""
    return parse_list_offsets_v1(conn.request(API_LIST_OFFSETS, 1, list_offsets_v1_body(partitions)))


def metadata(conn, topics):
    """Metadata v1 over conn -> {topic: (error_code, [partition indexes])}"""
    return parse_metadata_v1(conn.request(API_METADATA, 1, metadata_v1_body(topics)))


def wait_until_serving(host, port, timeout=30.0, in_a_row=5):
    """Waits until in_a_row fresh connections in a row each get an ApiVersions
    answer. A port that merely accepts is not enough: for a few milliseconds
    after odradek exits, its io_uring teardown keeps the old listening socket
    accepting connections, which are then reset."""
    import time

    deadline = time.monotonic() + timeout
    streak, last_error = 0, None
    while streak < in_a_row:
        try:
            conn = Connection(host, port, timeout=5)
            try:
                error_code, _ = conn.api_versions_v0()
            finally:
                conn.close()
            streak = streak + 1 if error_code == ERROR_NONE else 0
        except OSError as e:
            streak, last_error = 0, e
        if streak < in_a_row:
            if time.monotonic() > deadline:
                raise AssertionError(f"{host}:{port} not answering ApiVersions after {timeout}s: {last_error!r}")
            time.sleep(0.02)


# ---- OffsetForLeaderEpoch (KIP-101/320) ----

API_OFFSET_FOR_LEADER_EPOCH = 23
ERROR_NOT_LEADER_OR_FOLLOWER = 6
ERROR_FENCED_LEADER_EPOCH = 74
ERROR_UNKNOWN_LEADER_EPOCH = 75


def offset_for_leader_epoch_v3_body(partitions, replica_id=-1):
    """partitions: [(topic, partition, current_leader_epoch, leader_epoch)], grouped by topic."""
    by_topic = {}
    for topic, partition, current, epoch in partitions:
        by_topic.setdefault(topic, []).append((partition, current, epoch))
    body = struct.pack(">ii", replica_id, len(by_topic))
    for topic, parts in by_topic.items():
        body += string(topic) + struct.pack(">i", len(parts))
        for partition, current, epoch in parts:
            body += struct.pack(">iii", partition, current, epoch)
    return body


def parse_offset_for_leader_epoch_v3(body: bytes):
    """-> {(topic, partition): (error_code, leader_epoch, end_offset)}"""
    reader = Reader(body)
    reader.int32()  # throttle time
    result = {}
    for _ in range(reader.int32()):
        topic = reader.string()
        for _ in range(reader.int32()):
            error_code, partition, epoch, end_offset = reader.int16(), reader.int32(), reader.int32(), reader.int64()
            result[(topic, partition)] = (error_code, epoch, end_offset)
    return result


def offset_for_leader_epoch(conn, partitions, replica_id=-1):
    """OffsetForLeaderEpoch v3 over conn -> {(topic, partition): (error_code, leader_epoch, end_offset)}"""
    body = offset_for_leader_epoch_v3_body(partitions, replica_id)
    return parse_offset_for_leader_epoch_v3(conn.request(API_OFFSET_FOR_LEADER_EPOCH, 3, body))


# ---- Transactions (KIP-98): isolation levels, the coordinator, DescribeTransactions and
# ListTransactions (KIP-664) ----

API_FIND_COORDINATOR = 10
API_DESCRIBE_TRANSACTIONS = 65
API_LIST_TRANSACTIONS = 66
ERROR_TRANSACTIONAL_ID_NOT_FOUND = 105
READ_UNCOMMITTED = 0
READ_COMMITTED = 1
COORDINATOR_GROUP = 0
COORDINATOR_TRANSACTION = 1


class IsolatedPartition(NamedTuple):
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    aborted_transactions: list  # [(producer_id, first_offset)]; None when the broker sent null
    records: bytes


class DescribedTransaction(NamedTuple):
    error_code: int
    transactional_id: str
    state: str
    timeout_ms: int
    start_time_ms: int
    producer_id: int
    producer_epoch: int
    partitions: frozenset  # {(topic, partition)}


def _compact_str(value: str) -> bytes:
    raw = value.encode()
    return uvarint(len(raw) + 1) + raw


def _skip_tagged_fields(reader):
    for _ in range(reader.uvarint()):
        reader.uvarint()  # tag
        reader.pos += reader.uvarint()  # size, then the field's bytes


def list_offsets_v2_body(partitions, isolation_level):
    """partitions: [(topic, partition, timestamp)]; -2 earliest, -1 latest (the high watermark,
    or the last stable offset with isolation_level 1)."""
    by_topic = {}
    for topic, partition, timestamp in partitions:
        by_topic.setdefault(topic, []).append((partition, timestamp))
    body = struct.pack(">ibi", -1, isolation_level, len(by_topic))
    for topic, parts in by_topic.items():
        body += string(topic) + struct.pack(">i", len(parts))
        for partition, timestamp in parts:
            body += struct.pack(">iq", partition, timestamp)
    return body


def parse_list_offsets_v2(body: bytes):
    """-> {(topic, partition): (error_code, timestamp, offset)}"""
    reader = Reader(body)
    reader.int32()  # throttle time
    result = {}
    for _ in range(reader.int32()):
        topic = reader.string()
        for _ in range(reader.int32()):
            partition, error_code, timestamp, offset = reader.int32(), reader.int16(), reader.int64(), reader.int64()
            result[(topic, partition)] = (error_code, timestamp, offset)
    return result


def list_offsets_isolated(conn, partitions, isolation_level):
    """ListOffsets v2 over conn -> {(topic, partition): (error_code, timestamp, offset)}"""
    body = list_offsets_v2_body(partitions, isolation_level)
    return parse_list_offsets_v2(conn.request(API_LIST_OFFSETS, 2, body))


def fetch_isolated_v5_body(partitions, isolation_level, max_wait_ms=0, min_bytes=0, max_bytes=50 << 20,
                           partition_max_bytes=1 << 20):
    """Fetch v5 with an isolation level; partitions: [(topic, partition, fetch_offset)]."""
    by_topic = {}
    for topic, partition, offset in partitions:
        by_topic.setdefault(topic, []).append((partition, offset))
    body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, max_bytes, isolation_level)
    body += struct.pack(">i", len(by_topic))
    for topic, parts in by_topic.items():
        body += string(topic) + struct.pack(">i", len(parts))
        for partition, offset in parts:
            body += struct.pack(">iqqi", partition, offset, -1, partition_max_bytes)
    return body


def parse_fetch_isolated_v5(body: bytes):
    """-> {(topic, partition): IsolatedPartition}"""
    reader = Reader(body)
    reader.int32()  # throttle time
    result = {}
    for _ in range(reader.int32()):
        topic = reader.string()
        for _ in range(reader.int32()):
            partition, error_code, high_watermark = reader.int32(), reader.int16(), reader.int64()
            last_stable_offset, log_start_offset = reader.int64(), reader.int64()
            count = reader.int32()
            aborted = None if count < 0 else [(reader.int64(), reader.int64()) for _ in range(count)]
            length = reader.int32()
            records = b""
            if length > 0:
                records = reader.data[reader.pos : reader.pos + length]
                reader.pos += length
            result[(topic, partition)] = IsolatedPartition(
                error_code, high_watermark, last_stable_offset, log_start_offset, aborted, records
            )
    return result


def fetch_isolated(conn, partitions, isolation_level, **options):
    """Fetch v5 with an isolation level over conn -> {(topic, partition): IsolatedPartition}"""
    body = fetch_isolated_v5_body(partitions, isolation_level, **options)
    return parse_fetch_isolated_v5(conn.request(API_FETCH, 5, body))


def batch_producer_ids(data: bytes):
    """[(base_offset, producer_id, attributes)] of the record batches in data."""
    return [
        (batch.base_offset, struct.unpack_from(">q", data, batch.position + 43)[0], batch.attributes)
        for batch in parse_batches(data)
    ]


def find_coordinator(conn, key, key_type):
    """FindCoordinator v1 over conn -> (error_code, node_id, host, port)"""
    body = string(key) + struct.pack(">b", key_type)
    reader = Reader(conn.request(API_FIND_COORDINATOR, 1, body))
    reader.int32()  # throttle time
    error_code = reader.int16()
    reader.string()  # error message
    return error_code, reader.int32(), reader.string(), reader.int32()


def describe_transactions_v0_body(transactional_ids):
    body = uvarint(len(transactional_ids) + 1) + b"".join(_compact_str(t) for t in transactional_ids)
    return body + b"\x00"


def parse_describe_transactions_v0(body: bytes):
    """-> {transactional_id: DescribedTransaction}"""
    reader = Reader(body)
    _skip_tagged_fields(reader)  # response header v1
    reader.int32()  # throttle time
    result = {}
    for _ in range(reader.uvarint() - 1):
        error_code, transactional_id, state = reader.int16(), reader.compact_string(), reader.compact_string()
        timeout_ms, start_time_ms = reader.int32(), reader.int64()
        producer_id, producer_epoch = reader.int64(), reader.int16()
        partitions = set()
        for _ in range(reader.uvarint() - 1):
            topic = reader.compact_string()
            for _ in range(reader.uvarint() - 1):
                partitions.add((topic, reader.int32()))
            _skip_tagged_fields(reader)
        _skip_tagged_fields(reader)
        result[transactional_id] = DescribedTransaction(
            error_code, transactional_id, state, timeout_ms, start_time_ms, producer_id, producer_epoch,
            frozenset(partitions),
        )
    return result


def describe_transactions(conn, transactional_ids):
    """DescribeTransactions v0 over conn (to the coordinator) -> {transactional_id: DescribedTransaction}"""
    body = describe_transactions_v0_body(list(transactional_ids))
    return parse_describe_transactions_v0(conn.request(API_DESCRIBE_TRANSACTIONS, 0, body, flexible_header=True))


def list_transactions_v0_body(states=(), producer_ids=()):
    body = uvarint(len(states) + 1) + b"".join(_compact_str(s) for s in states)
    body += uvarint(len(producer_ids) + 1) + b"".join(struct.pack(">q", p) for p in producer_ids)
    return body + b"\x00"


def parse_list_transactions_v0(body: bytes):
    """-> (error_code, [unknown state filters], {transactional_id: (producer_id, state)})"""
    reader = Reader(body)
    _skip_tagged_fields(reader)  # response header v1
    reader.int32()  # throttle time
    error_code = reader.int16()
    unknown = [reader.compact_string() for _ in range(reader.uvarint() - 1)]
    listed = {}
    for _ in range(reader.uvarint() - 1):
        transactional_id, producer_id, state = reader.compact_string(), reader.int64(), reader.compact_string()
        _skip_tagged_fields(reader)
        listed[transactional_id] = (producer_id, state)
    _skip_tagged_fields(reader)
    return error_code, unknown, listed


def list_transactions(conn, states=(), producer_ids=()):
    """ListTransactions v0 over conn (one broker's coordinators) -> see parse_list_transactions_v0"""
    body = list_transactions_v0_body(list(states), list(producer_ids))
    return parse_list_transactions_v0(conn.request(API_LIST_TRANSACTIONS, 0, body, flexible_header=True))


CONTROL_ABORT = 0
CONTROL_COMMIT = 1


def control_markers(data: bytes):
    """[(offset, marker type)] of the control batches in data: CONTROL_ABORT or CONTROL_COMMIT,
    from each control record's key (version i16, type i16)."""
    markers = []
    for batch in parse_batches(data):
        if not batch.attributes & 0x20:
            continue
        (count,) = struct.unpack_from(">i", data, batch.position + 57)
        body = data[batch.position + 61 : batch.position + batch.total_len]
        for record in _decode_records(body, count, batch.base_offset, batch.base_timestamp):
            _version, marker_type = struct.unpack(">hh", record.key)
            markers.append((record.offset, marker_type))
    return markers
