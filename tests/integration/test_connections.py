"""Connection hygiene, against clients that hold connections rather than use them: a
connection's memory follows the bytes it sent, not the frame size it announced;
`connections.max.idle.ms` closes idle connections and requests that stall (slow loris);
`max.connections`, `max.connections.per.ip` and its overrides refuse connections beyond them at
once, with a log line. Raw sockets play those clients (from other loopback addresses
where a test needs several); ordinary clients check that everyone else is still served."""

import os
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

import kafka_wire as wire
from conftest import ODRADEK_BIN
from kafka_clients import ConfluentClient
from log_checks import acked_log, assert_log, end_offsets_of, make_messages

# socket.request.max.bytes, the largest frame a client may announce.
MAX_REQUEST_BYTES = 100 * 1024 * 1024
# Two cores: connections land on both listeners (SO_REUSEPORT), so counts must be node-wide.
CORES = ("--cores", "2")
IDLE_MS = 1500


def settings_args(tmp_path, settings):
    """`serve` arguments for broker settings (Kafka's names) in a server.properties file."""
    path = tmp_path / "server.properties"
    path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    return ("--config", str(path))


class Conn(wire.Connection):
    """A raw connection from a chosen loopback address (all of 127/8 is local on Linux)."""

    def __init__(self, broker, source="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((broker.host, broker.port), timeout=timeout, source_address=(source, 0))
        self.timeout = timeout
        self.next_correlation_id = 1


def announce_huge_frame(conn):
    """The largest frame allowed announced, and its first bytes: a request header."""
    conn.send(struct.pack(">i", MAX_REQUEST_BYTES) + wire.request_header(wire.API_PRODUCE, 3, 1))


def proc_status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def closed_by_broker_within(conn, seconds):
    """Seconds until the broker closed conn, or None if it did not within `seconds`."""
    start = time.monotonic()
    conn.sock.settimeout(seconds)
    try:
        got = conn.sock.recv(4096)
    except ConnectionResetError:
        got = b""
    except socket.timeout:
        return None
    assert got == b"", f"expected the connection closed, the broker sent {got[:64]!r}"
    return time.monotonic() - start


def is_closed_now(conn):
    readable, _, _ = select.select([conn.sock], [], [], 0)
    if not readable:
        return False
    try:
        return conn.sock.recv(4096, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def assert_produces_and_consumes(broker, topic, tag):
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(topic, 2)
    messages = make_messages(200, int(time.time() * 1000), tag=tag)
    acked = acked_log(messages, client.produce(topic, messages))
    ends = end_offsets_of(acked)
    assert_log(client.consume(topic, ends), acked, ends)


def log_text(broker):
    return broker.log.read_text(errors="replace")


def wait_for_log(broker, needle, timeout=5.0):
    deadline = time.monotonic() + timeout
    while needle not in log_text(broker):
        assert time.monotonic() < deadline, f"no {needle!r} in the broker log within {timeout}s"
        time.sleep(0.05)


# The issue this guards against: a 4-byte prefix made the broker zero-fill a buffer of the
# announced size at once, so a few hundred idle connections announcing 100 MiB frames pinned
# tens of GiB. The check runs after every ten connections, so a broker that does that fails
# at about a GiB instead of taking the machine's memory.
def test_connections_announcing_huge_frames_hold_little_memory(broker_factory):
    broker = broker_factory(*CORES)
    pid = broker.proc.pid
    connections, growth_max_mib = 200, 40
    bystander = Conn(broker)
    assert bystander.api_versions_v0()[0] == wire.ERROR_NONE
    rss_before = proc_status_kib(pid, "VmRSS")
    held = []
    try:
        while len(held) < connections:
            for _ in range(10):
                conn = Conn(broker)
                announce_huge_frame(conn)
                held.append(conn)
            # A moment for the broker to read them, or zero-fill for them.
            assert bystander.api_versions_v0()[0] == wire.ERROR_NONE
            time.sleep(0.1)
            grown_mib = (proc_status_kib(pid, "VmRSS") - rss_before) / 1024
            assert grown_mib < growth_max_mib, (
                f"the broker's RSS grew {grown_mib:.0f} MiB with {len(held)} connections that each "
                f"announced a {MAX_REQUEST_BYTES >> 20} MiB frame and sent {len(wire.request_header(0, 3, 1))} bytes of it"
            )
        time.sleep(0.5)
        grown_mib = (proc_status_kib(pid, "VmRSS") - rss_before) / 1024
        assert grown_mib < growth_max_mib, f"RSS grew {grown_mib:.0f} MiB with {connections} such connections"
        # Held, not closed: they are within every limit, and not idle for long.
        assert not any(is_closed_now(c) for c in held)
        assert_produces_and_consumes(broker, "beside-huge-frames", "huge")
    finally:
        for conn in held:
            conn.close()


# Kafka's connections.max.idle.ms closes a connection nothing has gone through for that long;
# a connection that asks for something at least that often, or waits on an answer the broker
# takes longer to give (a long-poll fetch), is not idle.
def test_idle_connections_are_closed_and_active_ones_kept(broker_factory, tmp_path):
    broker = broker_factory(*CORES, *settings_args(tmp_path, {"connections.max.idle.ms": IDLE_MS}))
    topic = "idle-test"
    ConfluentClient(broker.bootstrap).create_topic(topic, 1)
    silent = Conn(broker)  # never sends anything
    answered = Conn(broker)  # one request, then silence
    assert answered.api_versions_v0()[0] == wire.ERROR_NONE
    active = Conn(broker)
    long_poll = Conn(broker)
    opened = time.monotonic()
    polled = {}

    def fetch_longer_than_idle():
        polled["fetched"] = wire.fetch(long_poll, [(topic, 0, 0)], max_wait_ms=2 * IDLE_MS, min_bytes=1)
        polled["waited"] = time.monotonic() - opened
        polled["then"] = long_poll.api_versions_v0()[0]

    # A fetch waiting for data longer than the idle bound is answered, and its connection
    # serves on.
    poller = threading.Thread(target=fetch_longer_than_idle)
    poller.start()
    closed_after = {}
    while time.monotonic() - opened < 4.5:
        assert active.api_versions_v0()[0] == wire.ERROR_NONE, "a connection in use was closed"
        for name, conn in (("silent", silent), ("answered", answered)):
            if name not in closed_after and is_closed_now(conn):
                closed_after[name] = time.monotonic() - opened
        time.sleep(0.3)
    poller.join(timeout=10)
    assert polled.get("then") == wire.ERROR_NONE, f"the long-polling connection: {polled}"
    assert polled["fetched"][(topic, 0)].error_code == wire.ERROR_NONE
    assert polled["waited"] >= 2 * IDLE_MS / 1000 * 0.9, f"the long poll came back after {polled['waited']:.1f}s"
    assert set(closed_after) == {"silent", "answered"}, f"idle connections still open after 4.5 s: {closed_after}"
    for name, after in closed_after.items():
        # Loose: not before the bound (less the test's own slack), not long after it.
        assert IDLE_MS / 1000 * 0.8 <= after <= IDLE_MS / 1000 + 2.5, f"{name} closed after {after:.1f}s"


# A slow-loris client sends a byte of a request now and then: Kafka's idle check restarts at
# every byte and never closes it. Here the request must arrive whole within
# connections.max.idle.ms of the last answer; meanwhile nobody else waits, and the trickling
# connections cost no CPU to speak of (reads wait on io_uring, nothing polls).
def test_slow_loris_requests_are_closed_and_others_served_meanwhile(broker_factory, tmp_path):
    broker = broker_factory(*CORES, *settings_args(tmp_path, {"connections.max.idle.ms": IDLE_MS}))
    bystander = Conn(broker)
    # Longer than the test can trickle: without a bound the request never completes.
    request = wire.frame(wire.request_header(wire.API_METADATA, 1, 1) + bytes(1000))
    lorises = [Conn(broker) for _ in range(20)]
    cpu_before = cpu_seconds(broker.proc.pid)
    started = time.monotonic()
    closed_after = {}
    sent = 0
    while len(closed_after) < len(lorises) and time.monotonic() - started < 6:
        for i, conn in enumerate(lorises):
            if i in closed_after:
                continue
            try:
                conn.send(request[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_after[i] = time.monotonic() - started
                continue
            if is_closed_now(conn):
                closed_after[i] = time.monotonic() - started
        sent += 1
        asked = time.monotonic()
        assert bystander.api_versions_v0()[0] == wire.ERROR_NONE
        assert time.monotonic() - asked < 1.0, "a bystander's request waited on the slow clients"
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(broker.proc.pid) - cpu_before
    assert len(closed_after) == len(lorises), (
        f"{len(lorises) - len(closed_after)} of {len(lorises)} connections sending a byte every 0.2 s "
        f"still open after {elapsed:.1f}s (connections.max.idle.ms={IDLE_MS})"
    )
    assert sent < len(request), "the test sent a whole request: it must only trickle"
    assert max(closed_after.values()) <= IDLE_MS / 1000 + 2.5, f"closed after {closed_after}"
    assert cpu < 0.5 * elapsed, f"the broker used {cpu:.2f} s of CPU in {elapsed:.1f} s of slow clients"
    wait_for_log(broker, "a request stalled")
    assert bystander.api_versions_v0()[0] == wire.ERROR_NONE


def assert_refused_at_once(conn):
    after = closed_by_broker_within(conn, 2.0)
    assert after is not None, "the broker kept a connection beyond its limit"


def assert_serves(conn):
    assert conn.api_versions_v0()[0] == wire.ERROR_NONE


def connect_when_a_place_is_free(broker, source, timeout=5.0):
    """A closed connection's place frees once the broker has seen it close: retry until then."""
    deadline = time.monotonic() + timeout
    while True:
        conn = Conn(broker, source)
        try:
            assert_serves(conn)
            return conn
        except (ConnectionError, AssertionError, struct.error):
            conn.close()
            assert time.monotonic() < deadline, f"no connection from {source} served within {timeout}s of a place freeing"
            time.sleep(0.05)


# Kafka's max.connections.per.ip and its overrides: one address cannot take every connection
# the broker will hold. Counted over both cores' listeners.
def test_connections_beyond_the_per_ip_limit_are_refused(broker_factory, tmp_path):
    settings = {"max.connections.per.ip": 2, "max.connections.per.ip.overrides": "127.0.0.3:3,127.0.0.1:100"}
    broker = broker_factory(*CORES, *settings_args(tmp_path, settings))
    first = [Conn(broker, "127.0.0.2") for _ in range(2)]
    for conn in first:
        assert_serves(conn)
    refused = Conn(broker, "127.0.0.2")
    assert_refused_at_once(refused)
    wait_for_log(broker, "max.connections.per.ip=2")
    # Other addresses are not held back, and an override raises an address's limit.
    overridden = [Conn(broker, "127.0.0.3") for _ in range(3)]
    for conn in overridden:
        assert_serves(conn)
    assert_refused_at_once(Conn(broker, "127.0.0.3"))
    assert_produces_and_consumes(broker, "beside-per-ip-limit", "per-ip")
    # A closed connection gives its place back.
    first[0].close()
    again = connect_when_a_place_is_free(broker, "127.0.0.2")
    assert_serves(first[1])
    for conn in [again, first[1], refused, *overridden]:
        conn.close()


# Kafka's max.connections: the node as a whole holds no more, whatever the addresses.
def test_connections_beyond_the_node_limit_are_refused(broker_factory, tmp_path):
    broker = broker_factory(*CORES, *settings_args(tmp_path, {"max.connections": 4}))
    # The start-up checks' connections may not be seen closed yet.
    held = [connect_when_a_place_is_free(broker, f"127.0.0.{n}") for n in range(2, 6)]
    refused = Conn(broker, "127.0.0.6")
    assert_refused_at_once(refused)
    wait_for_log(broker, "max.connections=4")
    held[0].close()
    replacement = connect_when_a_place_is_free(broker, "127.0.0.6")
    for conn in held[1:]:
        assert_serves(conn)
    for conn in [replacement, refused, *held[1:]]:
        conn.close()


@pytest.mark.parametrize(
    "settings, complaint",
    [
        ({"connections.max.idle.ms": 0}, "connections.max.idle.ms"),
        ({"max.connections": -1}, "max.connections"),
        ({"max.connections.per.ip": 0}, "max.connections.per.ip.overrides"),
        ({"max.connections.per.ip.overrides": "127.0.0.1"}, "max.connections.per.ip.overrides"),
    ],
)
def test_bad_connection_settings_stop_the_broker_at_start(tmp_path, settings, complaint):
    result = subprocess.run(
        [str(ODRADEK_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         *settings_args(tmp_path, settings)],
        capture_output=True, text=True, timeout=30, env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode != 0, f"started with {settings}"
    assert complaint in result.stderr, result.stderr


# A connection's requests are pipelined: librdkafka and the Java client send up to 5 at once,
# and the broker starts the next while earlier produces wait for their fsync. Answers still
# leave in request order, an idempotent producer's batches reach each partition in the order
# they were sent (or their sequences would be refused), and a long poll does not hold back
# the produces sent after it on the same connection.
def test_pipelined_requests_keep_their_order_and_a_long_poll_holds_back_no_produce(broker_factory):
    broker = broker_factory(*CORES)
    topic = "pipelined"
    partitions = 4
    ConfluentClient(broker.bootstrap).create_topic(topic, partitions)
    conn = Conn(broker, timeout=30.0)
    error, producer_id, epoch = wire.parse_init_producer_id_v0(conn.request(22, 0, wire.init_producer_id_v0_body()))
    assert error == wire.ERROR_NONE

    # Nothing in partition 0 yet: the fetch waits up to 20 s for a byte.
    requests = [(wire.API_FETCH, 5, wire.fetch_v5_body([(topic, 0, 0)], max_wait_ms=20_000, min_bytes=1))]
    sent = {p: [] for p in range(partitions)}
    sequence = {p: 0 for p in range(partitions)}
    for i in range(40):
        p = i % partitions
        messages = make_messages(3, int(time.time() * 1000), tag=f"pipe{i}")
        batch = wire.record_batch(messages, producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence[p])
        sequence[p] += len(messages)
        sent[p].extend(m.value for m in messages)
        requests.append((wire.API_PRODUCE, 3, wire.produce_v3_body(topic, p, batch)))
    first_id = conn.next_correlation_id
    frames = (wire.frame(wire.request_header(key, version, first_id + i) + body) for i, (key, version, body) in enumerate(requests))
    conn.send(b"".join(frames))
    responses = [conn.read_frame() for _ in requests]

    ids = [struct.unpack_from(">i", r)[0] for r in responses]
    assert ids == [first_id + i for i in range(len(requests))], "answers out of request order"
    fetched = wire.parse_fetch_v5(responses[0][4:])[(topic, 0)]
    assert fetched.error_code == wire.ERROR_NONE
    assert fetched.records, "the long poll came back empty: the produces behind it waited for it"
    next_offset = {p: 0 for p in range(partitions)}
    for i, response in enumerate(responses[1:]):
        p = i % partitions
        error_code, base_offset = wire.parse_produce_v3(response[4:])[(topic, p)]
        assert (error_code, base_offset) == (wire.ERROR_NONE, next_offset[p]), f"produce {i} to partition {p}"
        next_offset[p] += 3
    for p in range(partitions):
        got = wire.fetch(conn, [(topic, p, 0)], max_wait_ms=0, min_bytes=0)[(topic, p)]
        values = [r.value for b in wire.parse_batches(got.records) for r in b.records]
        assert values == sent[p], f"partition {p} holds its records out of the order they were sent"
