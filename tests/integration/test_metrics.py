"""The Prometheus endpoint (`--metrics-listen`, `metrics.listen`; docs/metrics.md).

The counters are checked against what clients saw, not against themselves: the broker's
messages-in for a topic must equal what the real bench tool counted as acknowledged, its
bytes-in the bytes the topic's logs hold, and a consumer's reading must move bytes-out. Every
core counts on its own and a scrape sums them, so the broker runs on two cores.
"""
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import confluent_kafka
import pytest

from conftest import _free_port

BENCH_BIN = Path(os.environ.get("ODRADEK_BENCH_BIN", "~/.cache/odradek-target/release/odradek-bench")).expanduser()
CORES = ("--cores", "2")
PARTITIONS = 4
MESSAGE_BYTES = 1024
OFFSETS_PARTITIONS = 1
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def get(port, path="/metrics", method="GET"):
    """(status, content type, body) of one HTTP request to the metrics port."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type"), response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def parse(text):
    """{(name, ((label, value), ...)): value} of every sample; also checks the page's shape."""
    samples = {}
    typed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in typed, f"{name} announced twice"
            typed.add(name)
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.groups()
        assert re.sub(r"_(bucket|sum|count)$", "", name) in typed or name in typed, f"{name} has no # TYPE"
        key = (name, tuple(sorted(LABEL.findall(labels or ""))))
        assert key not in samples, f"{line!r} repeats a series"
        samples[key] = float(value)
    return samples


def scrape(port):
    status, content_type, body = get(port)
    assert status == 200, body
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return parse(body)


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def series(samples, name, **labels):
    """{labels dict: value} of the samples of `name` whose labels include `labels`."""
    out = {}
    for (n, ls), v in samples.items():
        d = dict(ls)
        if n == name and all(d.get(k) == str(v2) for k, v2 in labels.items()):
            out[ls] = v
    return out


def listening_ports(pid):
    """TCP ports the process listens on, from /proc (no ss or lsof needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def workload(tmp_path):
    path = tmp_path / "metrics-workload.json"
    path.write_text(json.dumps({
        "name": "metrics: 1 topic / 4 partitions / 1 KiB / acks=all / 3k msg/s",
        "topics": 1,
        "partitionsPerTopic": PARTITIONS,
        "messageSize": MESSAGE_BYTES,
        "keyDistributor": "NO_KEY",
        "subscriptionsPerTopic": 0,
        "consumerPerSubscription": 0,
        "producersPerTopic": 2,
        "producerRate": 3000,
        "warmupDurationSeconds": 1,
        "testDurationSeconds": 3,
        "producerConfig": {"acks": "all", "linger.ms": 1, "batch.size": 16384},
    }))
    return path


def consume_all(bootstrap, topic, count, group):
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    read = 0
    deadline = time.monotonic() + 60
    try:
        while read < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=1):
                assert message.error() is None, message.error()
                read += 1
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return read


@pytest.mark.timeout(240)
def test_metrics_count_what_the_bench_saw_acknowledged_and_a_consumer_read(broker_factory, tmp_path):
    if not BENCH_BIN.is_file():
        pytest.fail(f"odradek-bench not found at {BENCH_BIN} (build it or set ODRADEK_BENCH_BIN)")
    port = _free_port()
    broker = broker_factory(*CORES, "--metrics-listen", f"127.0.0.1:{port}",
                            "--offsets-topic-num-partitions", str(OFFSETS_PARTITIONS))
    assert listening_ports(broker.proc.pid) == {broker.port, port}

    before = scrape(port)
    assert value(before, "odradek_active_controller") == 1
    # A node creates __consumer_offsets (one partition here) as it starts, and leads it.
    assert value(before, "odradek_leader_partitions") == OFFSETS_PARTITIONS
    assert value(before, "odradek_connections", listener="PLAINTEXT") == 0
    assert get(port, "/")[0] == 404
    assert get(port, "/metrics/other")[0] == 404
    assert get(port, "/metrics", method="POST")[0] == 405

    prefix = f"metrics-{int(time.time())}"
    topic = f"{prefix}-0"
    out = tmp_path / "result.json"
    bench = subprocess.Popen(
        [str(BENCH_BIN), "run", str(workload(tmp_path)), "--bootstrap", broker.bootstrap, "--topic-prefix", prefix,
         "--out", str(out), "--no-progress", "--no-plots", "--drain-timeout-seconds", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Scraped while the bench runs: counters only grow, connections are counted.
    during = []
    while bench.poll() is None:
        during.append(scrape(port))
        time.sleep(0.5)
    stdout, stderr = bench.communicate()
    assert bench.returncode == 0, f"odradek-bench failed:\n{stdout}\n{stderr}"
    counts = json.loads(out.read_text())["counts"]
    assert counts["errors"] == 0 and counts["sent_msgs"] == counts["acked_msgs"] > 0, counts

    messages_in = [value(s, "odradek_messages_in_total", topic=topic) for s in during]
    assert messages_in == sorted(messages_in), messages_in
    assert any(0 < m < counts["acked_msgs"] for m in messages_in), f"no scrape saw the run under way: {messages_in}"
    assert max(value(s, "odradek_connections", listener="PLAINTEXT") for s in during) >= 1

    after = scrape(port)
    # Exactly what the bench was told it wrote.
    assert value(after, "odradek_messages_in_total", topic=topic) == counts["acked_per_topic"][topic]
    logs = series(after, "odradek_log_size_bytes", topic=topic)
    assert len(logs) == PARTITIONS
    bytes_in = value(after, "odradek_bytes_in_total", topic=topic)
    # Batches are appended as received: the logs hold exactly the bytes taken in, which are
    # the values the bench counted plus the batch and record framing.
    assert bytes_in == sum(logs.values())
    assert bytes_in >= counts["acked_per_topic"][topic] * MESSAGE_BYTES
    assert sum(series(after, "odradek_log_segments", topic=topic).values()) >= PARTITIONS
    ends = series(after, "odradek_log_end_offset", topic=topic)
    assert sum(ends.values()) == counts["acked_per_topic"][topic]

    produces = value(after, "odradek_requests_total", api="Produce")
    assert produces > 0
    # Every Produce was answered, so each has its latency.
    assert value(after, "odradek_request_latency_seconds_count", api="Produce") == produces
    assert value(after, "odradek_request_latency_seconds_bucket", api="Produce", le="+Inf") == produces
    assert value(after, "odradek_request_latency_seconds_sum", api="Produce") > 0
    assert value(after, "odradek_requests_total", api="Metadata") > 0
    assert value(after, "odradek_fsync_latency_seconds_count") > 0
    assert value(after, "odradek_fsync_latency_seconds_bucket", le="+Inf") == value(after, "odradek_fsync_latency_seconds_count")
    assert value(after, "odradek_leader_partitions") == PARTITIONS + OFFSETS_PARTITIONS
    assert value(after, "odradek_partitions") == PARTITIONS + OFFSETS_PARTITIONS
    assert value(after, "odradek_under_replicated_partitions") == 0
    assert value(after, "odradek_under_min_isr_partitions") == 0
    assert value(after, "odradek_offline_partitions") == 0
    assert value(after, "odradek_produce_purgatory_size") == 0
    assert series(after, "odradek_errors_total") == {}

    # A consumer group reads everything back and commits: bytes go out, the group shows, and
    # its lag is nothing.
    acked = counts["acked_per_topic"][topic]
    assert consume_all(broker.bootstrap, topic, acked, "metrics-group") == acked
    read = scrape(port)
    assert value(read, "odradek_bytes_out_total", topic=topic) >= bytes_in
    assert value(read, "odradek_replication_bytes_out_total", topic=topic) == 0
    assert value(read, "odradek_requests_total", api="Fetch") > 0
    assert value(read, "odradek_requests_total", api="JoinGroup") > 0
    assert sum(series(read, "odradek_groups").values()) == 1
    lags = series(read, "odradek_consumer_group_lag", group="metrics-group", topic=topic)
    assert sorted(lags.values()) == [0] * PARTITIONS, lags
    # The clients are gone: their connections are no longer counted.
    deadline = time.monotonic() + 10
    while value(scrape(port), "odradek_connections", listener="PLAINTEXT") != 0:
        assert time.monotonic() < deadline, "connections still counted after the clients closed"
        time.sleep(0.2)


def test_metrics_listen_from_the_properties_file_and_keep_alive(broker_factory, tmp_path):
    port = _free_port()
    config = tmp_path / "server.properties"
    config.write_text(f"metrics.listen=127.0.0.1:{port}\n")
    broker = broker_factory(*CORES, "--config", str(config))
    assert listening_ports(broker.proc.pid) == {broker.port, port}
    # Two requests on one connection (Prometheus keeps its connection), then a HEAD.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        reader = s.makefile("rb")
        for _ in range(2):
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert reader.readline() == b"HTTP/1.1 200 OK\r\n"
            headers = {}
            while (line := reader.readline()) != b"\r\n":
                name, _, v = line.decode().partition(":")
                headers[name.lower()] = v.strip()
            body = reader.read(int(headers["content-length"])).decode()
            assert headers["connection"] == "keep-alive"
            assert "odradek_active_controller 1" in body.splitlines()
        s.sendall(b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        head = reader.read()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n"), head


def test_without_the_flag_no_metrics_port_opens(broker_factory):
    broker = broker_factory(*CORES)
    assert listening_ports(broker.proc.pid) == {broker.port}
