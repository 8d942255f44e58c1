"""Just enough of the Kafka wire protocol, encoded by hand, to send the broker
requests that no well-behaved client library would ever produce."""

import socket
import struct

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


def record_batch(messages, corrupt_crc=False):
    """Uncompressed record batch v2 of messages (anything with .key, .value,
    .headers and .timestamp), optionally with a wrong CRC."""
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
            0,  # attributes: no compression, CreateTime, not transactional
            len(messages) - 1,  # last offset delta
            base_timestamp,
            max(m.timestamp for m in messages),
            -1,  # producer id: not idempotent
            -1,  # producer epoch
            -1,  # base sequence
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
