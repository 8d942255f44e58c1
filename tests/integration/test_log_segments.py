"""Segmented logs on disk: many small segments across clean and unclean restarts,
retention by size and by time, and Fetch long polls.

Segment files are checked against Kafka's layout: <20-digit base offset>.log
holding record batches v2 with contiguous offsets, and for every sealed segment
an .index (4-byte relative offset, 4-byte position) and a .timeindex (8-byte
timestamp, 4-byte relative offset)."""

import itertools
import random
import re
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import confluent_kafka
import pytest

import kafka_wire as wire
from kafka_clients import ConfluentClient, KafkaPythonClient
from log_checks import (
    acked_log,
    assert_high_watermarks,
    assert_log,
    assert_log_range,
    end_offsets_of,
    first_offset_at_or_after,
    make_message,
)

SEGMENT_BYTES = 16_384
RETENTION_BYTES = 65_536
RETENTION_MS = 60_000
CHECK_INTERVAL_MS = 200
# A segment's files; `.snapshot` is the idempotent producers' state below the segment's base.
SEGMENT_NAME = re.compile(r"^(\d{20})\.(log|index|timeindex|snapshot)$")
# Small batches, so that a 16 KiB segment holds several of them.
SMALL_BATCHES = {"batch.size": 4096, "linger.ms": 5}


def now_ms():
    return int(time.time() * 1000)


def jittered_messages(count, base_timestamp, tag):
    """Timestamps rise 10 ms per pair, but every 13th message is 3 s late, so
    timestamps are not monotonic in offset order and lookups must not assume
    they are."""
    return [make_message(i, base_timestamp + (i // 2) * 10 - (3_000 if i % 13 == 0 else 0), tag) for i in range(count)]


def merge(*logs):
    merged = {}
    for log in logs:
        for partition, by_offset in log.items():
            merged.setdefault(partition, {}).update(by_offset)
    return merged


# ---- segment files ----


@dataclass
class SegmentFile:
    base: int
    path: Path
    size: int
    batches: list  # [wire.StoredBatch]
    has_index: bool
    has_timeindex: bool

    @property
    def next_offset(self):
        return self.batches[-1].last_offset + 1 if self.batches else self.base

    @property
    def records(self):
        return [r for b in self.batches for r in b.records]


def partition_dir(broker, topic, partition):
    return broker.data_dir / f"{topic}-{partition}"


def log_bases(directory):
    """Base offsets of the .log files, tolerating a retention pass in progress."""
    return sorted(
        int(m.group(1))
        for m in map(SEGMENT_NAME.match, (p.name for p in directory.iterdir()))
        if m and m.group(2) == "log"
    )


# A partition directory's own files beside its segments, as Kafka names them.
PARTITION_FILES = {"partition.metadata", "leader-epoch-checkpoint", "log-start-offset-checkpoint", "high-watermark-checkpoint"}


def _by_base(directory):
    names = sorted(p.name for p in directory.iterdir() if p.name not in PARTITION_FILES)
    strays = [n for n in names if not SEGMENT_NAME.match(n)]
    assert not strays, f"{directory.name}: files that are not segment files: {strays}"
    by_base = {}
    for name in names:
        base, extension = SEGMENT_NAME.match(name).groups()
        by_base.setdefault(int(base), set()).add(extension)
    return by_base


def orphan_index_files(directory):
    """Index files whose .log is gone: left behind, since Kafka deletes a
    segment's .log, .index and .timeindex together."""
    return sorted(
        f"{base:020d}.{ext}" for base, exts in _by_base(directory).items() if "log" not in exts for ext in exts
    )


def assert_no_orphan_index_files(directory):
    orphans = orphan_index_files(directory)
    assert not orphans, f"{directory.name}: index files without their .log: {orphans}"


def read_segments(directory, allow_orphans=False):
    """-> [SegmentFile] in base offset order, after checking that the directory
    holds nothing but segment files and (unless allow_orphans) that no index
    outlives its log."""
    if not allow_orphans:
        assert_no_orphan_index_files(directory)
    by_base = {b: exts for b, exts in _by_base(directory).items() if "log" in exts}
    segments = []
    newest = max(by_base, default=None)
    for base in sorted(by_base):
        path = directory / f"{base:020d}.log"
        data = path.read_bytes()
        if base == newest:
            data = wire.without_padding(data)
        segments.append(
            SegmentFile(
                base, path, len(data), wire.parse_batches(data), "index" in by_base[base], "timeindex" in by_base[base]
            )
        )
    return segments


def check_segment_files(directory, end_offset, segment_bytes, acked=None, allow_orphans=False):
    """Kafka's on-disk invariants for one partition; -> its [SegmentFile].
    acked: {offset: Message} to compare the stored records with."""
    segments = read_segments(directory, allow_orphans)
    assert segments, f"{directory.name}: no segment files"
    name = directory.name
    for i, seg in enumerate(segments):
        sealed = i < len(segments) - 1
        label = f"{name}/{seg.path.name}"
        whole = sum(b.total_len for b in seg.batches)
        assert whole == seg.size, f"{label}: {seg.size} bytes but whole batches cover only {whole}"
        bad_crc = [b.base_offset for b in seg.batches if not b.crc_ok]
        assert not bad_crc, f"{label}: batches with a bad CRC at offsets {bad_crc[:5]}"
        if seg.batches:
            assert seg.batches[0].base_offset == seg.base, (
                f"{label}: first batch has base offset {seg.batches[0].base_offset}, the file name says {seg.base}"
            )
        for a, b in itertools.pairwise(seg.batches):
            assert b.base_offset == a.last_offset + 1, (
                f"{label}: batch {a.base_offset}..{a.last_offset} then {b.base_offset}"
            )
        if sealed:
            following = segments[i + 1]
            assert seg.batches, f"{label}: a sealed segment is empty"
            assert seg.next_offset == following.base, (
                f"{label}: ends before offset {seg.next_offset}, but the next segment starts at {following.base}"
            )
            assert seg.has_index and seg.has_timeindex, (
                f"{label}: a sealed segment lacks its index files "
                f"(index {seg.has_index}, timeindex {seg.has_timeindex})"
            )
            assert seg.size <= segment_bytes or len(seg.batches) == 1, (
                f"{label}: {seg.size} bytes in {len(seg.batches)} batches, over segment.bytes={segment_bytes}"
            )
            if following.batches:
                # Only a full segment rolls (segment.ms is far away): the next batch did not fit.
                assert seg.size + following.batches[0].total_len > segment_bytes, (
                    f"{label}: rolled at {seg.size} bytes although the next batch "
                    f"({following.batches[0].total_len} bytes) fit under segment.bytes={segment_bytes}"
                )
            check_offset_index(label, seg, (seg.path.with_suffix(".index")).read_bytes())
            check_time_index(label, seg, (seg.path.with_suffix(".timeindex")).read_bytes())
        else:
            assert seg.next_offset == end_offset, (
                f"{label}: the newest segment ends before offset {seg.next_offset}, the log end is {end_offset}"
            )
        if acked is not None:
            for record in seg.records:
                message = acked.get(record.offset)
                stored = (record.key, record.value, record.headers, record.timestamp)
                assert message is not None and stored == (
                    message.key,
                    message.value,
                    message.headers,
                    message.timestamp,
                ), f"{label}: offset {record.offset} holds {stored}, acked {message}"
    return segments


def check_offset_index(label, seg, data):
    assert len(data) % 8 == 0, f"{label}.index: {len(data)} bytes is not a whole number of 8-byte entries"
    entries = [struct.unpack_from(">II", data, at) for at in range(0, len(data), 8)]
    by_position = {b.position: b for b in seg.batches}
    for (rel_a, pos_a), (rel_b, pos_b) in itertools.pairwise(entries):
        assert rel_a < rel_b and pos_a < pos_b, f"{label}.index: entries not increasing: {entries}"
    for rel, position in entries:
        batch = by_position.get(position)
        assert batch is not None, f"{label}.index: entry ({rel}, {position}) does not point at a batch start"
        assert batch.base_offset <= seg.base + rel <= batch.last_offset, (
            f"{label}.index: entry for offset {seg.base + rel} points at batch {batch.base_offset}..{batch.last_offset}"
        )


def check_time_index(label, seg, data):
    assert len(data) % 12 == 0, f"{label}.timeindex: {len(data)} bytes is not a whole number of 12-byte entries"
    entries = [struct.unpack_from(">qI", data, at) for at in range(0, len(data), 12)]
    records = seg.records
    assert entries, f"{label}.timeindex: empty, but the segment holds {len(records)} records"
    max_ts = max(r.timestamp for r in records)
    for (ts_a, rel_a), (ts_b, rel_b) in itertools.pairwise(entries):
        assert ts_a < ts_b and rel_a <= rel_b, f"{label}.timeindex: entries not increasing: {entries[:10]}..."
    assert entries[-1][0] == max_ts, (
        f"{label}.timeindex: last entry has timestamp {entries[-1][0]}, the segment's largest is {max_ts}"
    )
    for ts, rel in entries:
        offset = seg.base + rel
        assert seg.base <= offset < seg.next_offset, f"{label}.timeindex: entry ({ts}, {offset}) outside the segment"
        before = [r.timestamp for r in records if r.offset < offset]
        # A lookup for any t > ts starts scanning at offset: nothing earlier may reach t.
        assert not before or max(before) <= ts, (
            f"{label}.timeindex: entry ({ts}, {offset}), but an earlier record has timestamp {max(before)}"
        )


# ---- reading back ----


def timestamp_targets(messages, rng, count=10):
    timestamps = sorted({m.timestamp for m in messages})
    targets = {timestamps[0] - 1, timestamps[0], timestamps[-1], timestamps[-1] + 1}
    for ts in rng.sample(timestamps, count):
        targets.update((ts, ts + 1, ts - 1))
    return sorted(targets)


def assert_offsets_for_times(client, topic, records, targets):
    partitions = sorted(records)
    for target in targets:
        expected = {p: first_offset_at_or_after(records[p], target) for p in partitions}
        got = client.offsets_for_times(topic, partitions, target)
        assert got == expected, f"offsets_for_times({target}): got {got}, expected {expected}"


def assert_fetch_at(broker, topic, acked, offsets_by_partition):
    """A Fetch at any offset returns the batch holding it first, whole, with the
    acked record at that offset (the sparse index found the right place)."""
    conn = wire.Connection(broker.host, broker.port)
    try:
        for partition, offsets in offsets_by_partition.items():
            for offset in offsets:
                got = wire.fetch(conn, [(topic, partition, offset)], max_wait_ms=0, min_bytes=0, partition_max_bytes=1)
                fetched = got[(topic, partition)]
                assert fetched.error_code == wire.ERROR_NONE, (
                    f"fetch {topic}-{partition}@{offset}: error {fetched.error_code}"
                )
                batches = wire.parse_batches(fetched.records)
                assert batches, f"fetch {topic}-{partition}@{offset}: no whole batch in {len(fetched.records)} bytes"
                first = batches[0]
                assert first.base_offset <= offset <= first.last_offset, (
                    f"fetch {topic}-{partition}@{offset}: first batch is {first.base_offset}..{first.last_offset}"
                )
                record = next(r for r in first.records if r.offset == offset)
                message = acked[partition][offset]
                assert (record.key, record.value, record.timestamp) == (
                    message.key,
                    message.value,
                    message.timestamp,
                ), f"fetch {topic}-{partition}@{offset}: read {record}, acked {message}"
    finally:
        conn.close()


def restart(broker, kill=False):
    """Broker.restart() (after kill -9 if kill), then waits for the new process
    to answer requests (see wire.wait_until_serving)."""
    if kill:
        broker.kill9()
    broker.restart()
    wire.wait_until_serving(broker.host, broker.port)


def list_offsets(broker, topic, partitions, timestamp):
    conn = wire.Connection(broker.host, broker.port)
    try:
        answer = wire.list_offsets(conn, [(topic, p, timestamp) for p in partitions])
    finally:
        conn.close()
    for (t, p), (error_code, _, _) in answer.items():
        assert error_code == wire.ERROR_NONE, f"ListOffsets {t}-{p} at {timestamp}: error {error_code}"
    return {p: offset for (_, p), (_, _, offset) in answer.items()}


# ---- many small segments across restarts ----

TOPIC = "segmented"
PARTITIONS = 2


@pytest.mark.timeout(300)
def test_small_segments_survive_clean_and_unclean_restarts(broker_factory):
    broker = broker_factory("--log-segment-bytes", str(SEGMENT_BYTES))
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(TOPIC, PARTITIONS)
    rng = random.Random(20240611)
    base_ts = now_ms() - 7_200_000

    first = jittered_messages(20_000, base_ts, "first")
    acked = acked_log(first, client.produce(TOPIC, first, producer_config=SMALL_BATCHES))
    assert sorted(acked) == list(range(PARTITIONS)), "keyed messages should reach both partitions"
    messages = list(first)

    def verify(stage):
        ends = end_offsets_of(acked)
        assert_high_watermarks(client, TOPIC, ends)
        assert list_offsets(broker, TOPIC, range(PARTITIONS), wire.LIST_OFFSETS_EARLIEST) == dict.fromkeys(
            range(PARTITIONS), 0
        ), f"{stage}: the log start moved without retention"
        for p in range(PARTITIONS):
            check_segment_files(partition_dir(broker, TOPIC, p), ends[p], SEGMENT_BYTES, acked[p])
        records = client.consume(TOPIC, ends)
        assert_log(records, acked, ends)
        assert_offsets_for_times(client, TOPIC, records, timestamp_targets(messages, rng))
        assert_fetch_at(broker, TOPIC, acked, {p: rng.sample(range(ends[p]), 25) for p in range(PARTITIONS)})

    verify("before any restart")
    segments = {p: read_segments(partition_dir(broker, TOPIC, p)) for p in range(PARTITIONS)}
    for p, segs in segments.items():
        assert len(segs) >= 10, f"partition {p}: only {len(segs)} segments of {SEGMENT_BYTES} bytes"
    contents = {s.path.name: wire.without_padding(s.path.read_bytes()) for segs in segments.values() for s in segs}

    restart(broker)
    after_clean = {
        s.path.name: wire.without_padding(s.path.read_bytes())
        for p in range(PARTITIONS)
        for s in read_segments(partition_dir(broker, TOPIC, p))
    }
    changed = sorted(n for n in contents if after_clean.get(n) != contents[n])
    assert not changed, f"a clean restart changed or removed segment files: {changed[:5]}"
    verify("after a clean restart")

    second = jittered_messages(6_000, base_ts + 200_000, "second")
    acked = merge(
        acked, acked_log(second, client.produce(TOPIC, second, producer_config=SMALL_BATCHES), end_offsets_of(acked))
    )
    messages += second

    restart(broker, kill=True)
    verify("after kill -9")

    third = jittered_messages(500, base_ts + 300_000, "third")
    acked = merge(
        acked, acked_log(third, client.produce(TOPIC, third, producer_config=SMALL_BATCHES), end_offsets_of(acked))
    )
    messages += third
    verify("after producing past the recovered log end")


# ---- retention ----


def wait_for(condition, timeout, describe, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {describe()}")
        time.sleep(interval)


def settled(read, quiet_seconds=1.0, timeout=30):
    """Waits until read() returns the same value twice, quiet_seconds apart (at
    least five retention checks), and returns it."""
    deadline = time.monotonic() + timeout
    previous = read()
    while True:
        time.sleep(quiet_seconds)
        current = read()
        if current == previous:
            return current
        assert time.monotonic() < deadline, f"still changing after {timeout}s: {previous} then {current}"
        previous = current


def assert_out_of_range_below(broker, topic, partition, log_start):
    conn = wire.Connection(broker.host, broker.port)
    try:
        for offset in sorted({0, log_start // 2, log_start - 1}):
            fetched = wire.fetch(conn, [(topic, partition, offset)], max_wait_ms=0, min_bytes=0)[(topic, partition)]
            assert fetched.error_code == wire.ERROR_OFFSET_OUT_OF_RANGE and not fetched.records, (
                f"fetch {topic}-{partition}@{offset}, below the log start {log_start}: "
                f"error {fetched.error_code} with {len(fetched.records)} bytes"
            )
            assert fetched.log_start_offset == log_start, (
                f"fetch {topic}-{partition}@{offset}: response says log start {fetched.log_start_offset}, "
                f"ListOffsets said {log_start}"
            )
        fetched = wire.fetch(conn, [(topic, partition, log_start)], max_wait_ms=0, min_bytes=0)[(topic, partition)]
        assert fetched.error_code == wire.ERROR_NONE, (
            f"fetch {topic}-{partition}@{log_start} (the log start): error {fetched.error_code}"
        )
        batches = wire.parse_batches(fetched.records)
        assert batches and batches[0].base_offset == log_start, (
            f"fetch {topic}-{partition}@{log_start}: "
            f"first batch starts at {batches[0].base_offset if batches else None}"
        )
    finally:
        conn.close()


def assert_consumer_sees_out_of_range(broker, topic, partition):
    """A librdkafka consumer told to start at offset 0 with auto.offset.reset=error
    must report the out-of-range position, not read from elsewhere."""
    consumer = ConfluentClient(broker.bootstrap).consumer()
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, partition, 0)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                error = msg.error()
                assert error is not None, f"consumer at offset 0 read offset {msg.offset()} instead of failing"
                assert error.code() in (
                    confluent_kafka.KafkaError._AUTO_OFFSET_RESET,
                    confluent_kafka.KafkaError.OFFSET_OUT_OF_RANGE,
                ), f"consumer at offset 0: unexpected error {error}"
                return
        raise AssertionError("consumer at offset 0, below the log start, got neither records nor an error in 30s")
    finally:
        consumer.close()


@pytest.mark.timeout(180)
def test_retention_by_bytes(broker_factory):
    broker = broker_factory("--log-retention-check-interval-ms", str(CHECK_INTERVAL_MS))
    topic = "size-capped"
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(
        topic, PARTITIONS, {"segment.bytes": str(SEGMENT_BYTES), "retention.bytes": str(RETENTION_BYTES)}
    )
    messages = jittered_messages(10_000, now_ms() - 60_000, "sized")
    acked = acked_log(messages, client.produce(topic, messages, producer_config=SMALL_BATCHES))
    ends = end_offsets_of(acked)
    partitions = range(PARTITIONS)

    def starts():
        return list_offsets(broker, topic, partitions, wire.LIST_OFFSETS_EARLIEST)

    wait_for(lambda: all(o > 0 for o in starts().values()), 30, lambda: f"log start offsets still {starts()}")
    log_start = settled(starts)

    for p in partitions:
        segs = check_segment_files(
            partition_dir(broker, topic, p), ends[p], SEGMENT_BYTES, acked[p], allow_orphans=True
        )
        assert log_start[p] == segs[0].base, (
            f"partition {p}: ListOffsets earliest is {log_start[p]}, the first segment file starts at {segs[0].base}"
        )
        total = sum(s.size for s in segs)
        sizes = [s.size for s in segs]
        assert total <= RETENTION_BYTES + SEGMENT_BYTES, f"partition {p}: {total} bytes left in segments {sizes}"
        assert total - segs[0].size < RETENTION_BYTES, (
            f"partition {p}: {total} bytes left in segments {sizes}; without the oldest it would still "
            f"be within retention.bytes={RETENTION_BYTES}, so it should have gone"
        )
        assert total >= RETENTION_BYTES, (
            f"partition {p}: only {total} bytes left in segments {sizes}: retention deleted more than "
            f"retention.bytes={RETENTION_BYTES} required"
        )
    assert_high_watermarks(client, topic, ends)
    for client_class in (ConfluentClient, KafkaPythonClient):
        reader = client_class(broker.bootstrap)
        # From the beginning, which is now the log start ...
        assert_log_range(reader.consume(topic, ends), acked, log_start, ends)
        # ... and from the log start named explicitly.
        assert_log_range(reader.consume(topic, ends, start_offsets=log_start), acked, log_start, ends)
    # Timestamp lookups answer from what is left: before everything is the log start.
    records = client.consume(topic, ends)
    remaining = [r.message for p in partitions for r in records[p]]
    targets = timestamp_targets(remaining, random.Random(5)) + [messages[0].timestamp - 10_000]
    assert_offsets_for_times(client, topic, records, targets)
    assert client.offsets_for_times(topic, partitions, messages[0].timestamp - 10_000) == log_start
    for p in partitions:
        assert_out_of_range_below(broker, topic, p, log_start[p])
    assert_consumer_sees_out_of_range(broker, topic, 0)

    restart(broker)
    assert starts() == log_start, "the log start offsets changed across a restart"
    assert_high_watermarks(client, topic, ends)
    assert_log_range(client.consume(topic, ends), acked, log_start, ends)
    for p in partitions:
        check_segment_files(partition_dir(broker, topic, p), ends[p], SEGMENT_BYTES, acked[p], allow_orphans=True)
        assert_out_of_range_below(broker, topic, p, log_start[p])
    for p in partitions:
        assert_no_orphan_index_files(partition_dir(broker, topic, p))


@pytest.mark.timeout(180)
def test_retention_by_time(broker_factory):
    broker = broker_factory("--log-retention-check-interval-ms", str(CHECK_INTERVAL_MS))
    topic = "aged"
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(topic, 2, {"segment.bytes": str(SEGMENT_BYTES), "retention.ms": str(RETENTION_MS)})
    day_ago = now_ms() - 86_400_000
    # Partition 0 holds only day-old records; partition 1 day-old ones, then current ones.
    old_only = jittered_messages(15_000, day_ago, "old-only")
    old = jittered_messages(15_000, day_ago, "old")
    acked = acked_log(old_only, client.produce(topic, old_only, partition=0, producer_config=SMALL_BATCHES))
    acked = merge(acked, acked_log(old, client.produce(topic, old, partition=1, producer_config=SMALL_BATCHES)))
    first_recent = len(old)
    recent = jittered_messages(1_500, now_ms(), "recent")
    acked = merge(
        acked,
        acked_log(recent, client.produce(topic, recent, partition=1, producer_config=SMALL_BATCHES), {1: first_recent}),
    )
    ends = end_offsets_of(acked)

    def segment_bases():
        return {p: log_bases(partition_dir(broker, topic, p)) for p in (0, 1)}

    wait_for(
        lambda: len(segment_bases()[0]) == 1 and segment_bases()[1][0] > 0,
        30,
        lambda: f"segments still {segment_bases()}",
    )
    bases = settled(segment_bases)
    log_start = list_offsets(broker, topic, (0, 1), wire.LIST_OFFSETS_EARLIEST)
    cutoff = now_ms() - RETENTION_MS

    # Partition 0: every sealed segment expired; the active one stays, records and all.
    segs = check_segment_files(partition_dir(broker, topic, 0), ends[0], SEGMENT_BYTES, acked[0], allow_orphans=True)
    assert len(segs) == 1 and segs[0].records, (
        f"partition 0: segments {bases[0]}, the active one should remain with its records"
    )
    assert log_start[0] == segs[0].base > 0, f"partition 0: log start {log_start[0]}, active segment at {segs[0].base}"

    # Partition 1: exactly the segments holding nothing newer than retention.ms went.
    segs = check_segment_files(partition_dir(broker, topic, 1), ends[1], SEGMENT_BYTES, acked[1], allow_orphans=True)
    assert log_start[1] == segs[0].base, f"partition 1: log start {log_start[1]}, first segment at {segs[0].base}"
    assert segs[0].base <= first_recent < segs[0].next_offset, (
        f"partition 1: the first remaining segment covers {segs[0].base}..{segs[0].next_offset - 1}; "
        f"it should be the one holding offset {first_recent}, the first recent record"
    )
    for seg in segs:
        assert max(r.timestamp for r in seg.records) >= cutoff, (
            f"partition 1: {seg.path.name} expired but is still here"
        )

    assert_high_watermarks(client, topic, ends)
    assert_log_range(client.consume(topic, ends), acked, log_start, ends)
    for p in (0, 1):
        assert_out_of_range_below(broker, topic, p, log_start[p])
    # Last, so that everything above is checked even when this fails: a segment
    # deleted while it was being sealed must not leave its index files behind.
    for p in (0, 1):
        assert_no_orphan_index_files(partition_dir(broker, topic, p))


@pytest.mark.timeout(120)
def test_retention_by_time_uses_log_append_time(broker_factory):
    """With LogAppendTime the stored timestamps are the broker's, so day-old
    producer timestamps must not make fresh segments expire."""
    broker = broker_factory("--log-retention-check-interval-ms", str(CHECK_INTERVAL_MS))
    topic = "append-aged"
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(
        topic,
        1,
        {
            "segment.bytes": str(SEGMENT_BYTES),
            "retention.ms": str(RETENTION_MS),
            "message.timestamp.type": "LogAppendTime",
        },
    )
    messages = jittered_messages(2_000, now_ms() - 86_400_000, "appended")
    acked = acked_log(messages, client.produce(topic, messages, producer_config=SMALL_BATCHES))
    ends = end_offsets_of(acked)
    time.sleep(20 * CHECK_INTERVAL_MS / 1000)
    segs = read_segments(partition_dir(broker, topic, 0))
    assert len(segs) > 3, f"expected several segments, found {[s.base for s in segs]}"
    assert segs[0].base == 0, f"retention deleted segments up to {segs[0].base} of records appended seconds ago"
    assert list_offsets(broker, topic, [0], wire.LIST_OFFSETS_EARLIEST) == {0: 0}
    assert_high_watermarks(client, topic, ends)


# ---- Fetch long poll ----


def produce_one(client, topic, partition, tag):
    message = make_message(0, now_ms(), tag)
    acks = client.produce(topic, [message], partition=partition, producer_config={"linger.ms": 0})
    return message, acks[0]


@pytest.mark.timeout(120)
def test_consumer_long_poll_receives_message_produced_later(broker):
    topic = "long-poll"
    partitions = 4
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(topic, partitions)
    consumer = confluent_kafka.Consumer(
        client.config(
            **{
                "group.id": "odradek-tests-unused",
                "enable.auto.commit": False,
                "auto.offset.reset": "error",
                # Far longer than the bound below: only a broker that answers when data
                # arrives, not when the wait expires, delivers in time.
                "fetch.wait.max.ms": 30_000,
                "fetch.min.bytes": 1,
            }
        )
    )
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions)])
        assert not consumer.consume(num_messages=10, timeout=1.0), "read from an empty topic"
        for partition in range(partitions):
            sent = {}

            def later(partition=partition, sent=sent):
                time.sleep(1.0)
                sent["message"], sent["ack"] = produce_one(client, topic, partition, f"late-{partition}")
                sent["acked_at"] = time.monotonic()

            producer = threading.Thread(target=later, daemon=True)
            producer.start()
            got = []
            deadline = time.monotonic() + 25
            while not got and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=10, timeout=0.2):
                    assert msg.error() is None, f"consume error: {msg.error()}"
                    got.append((msg, time.monotonic()))
            producer.join(30)
            assert "ack" in sent, "the late produce did not complete"
            assert got, f"partition {partition}: message produced 1 s later never arrived within 25 s"
            (msg, received_at), *rest = got
            assert not rest, f"partition {partition}: {len(got)} messages for one produced"
            assert (msg.partition(), msg.offset()) == sent["ack"] and msg.value() == sent["message"].value
            delay = received_at - sent["acked_at"]
            assert delay < 10, (
                f"partition {partition}: arrived {delay:.1f}s after its ack; the fetch waited for "
                "fetch.wait.max.ms instead of answering when data arrived"
            )
    finally:
        consumer.close()


@pytest.mark.timeout(60)
def test_fetch_on_empty_partition_waits_max_wait(broker):
    topic = "idle"
    ConfluentClient(broker.bootstrap).create_topic(topic, 4)
    conn = wire.Connection(broker.host, broker.port, timeout=30)
    try:
        for partitions in ([0], [1], [0, 1, 2, 3]):
            started = time.monotonic()
            got = wire.fetch(conn, [(topic, p, 0) for p in partitions], max_wait_ms=500, min_bytes=1)
            elapsed = time.monotonic() - started
            assert 0.3 <= elapsed <= 10, (
                f"fetch of empty partitions {partitions} with max_wait_ms=500 took {elapsed:.2f}s"
            )
            for p in partitions:
                assert got[(topic, p)] == (wire.ERROR_NONE, 0, 0, b""), f"partition {p}: {got[(topic, p)]}"
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_fetch_min_bytes_waits_for_enough_data(broker):
    """A Fetch whose min_bytes one small message does not reach returns at
    max_wait, with the message."""
    topic = "min-bytes"
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(topic, 1)
    conn = wire.Connection(broker.host, broker.port, timeout=30)
    try:
        producer = threading.Timer(0.2, produce_one, (client, topic, 0, "small"))
        producer.start()
        started = time.monotonic()
        got = wire.fetch(conn, [(topic, 0, 0)], max_wait_ms=2_000, min_bytes=1_000_000)
        elapsed = time.monotonic() - started
        producer.join(30)
        fetched = got[(topic, 0)]
        assert fetched.error_code == wire.ERROR_NONE
        assert 1.2 <= elapsed <= 10, f"fetch with min_bytes=1000000 and max_wait_ms=2000 returned after {elapsed:.2f}s"
        batches = wire.parse_batches(fetched.records)
        assert [r.offset for b in batches for r in b.records] == [0], f"expected the one message, got {batches}"
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_fetch_long_polls_on_every_connection_wake_on_produce(broker):
    """Long polls parked on several connections (SO_REUSEPORT spreads them over
    the cores) all wake when any partition, on any core, gets data."""
    topic = "wake"
    partitions = 4
    connections = 6
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(topic, partitions)
    conns = [wire.Connection(broker.host, broker.port, timeout=60) for _ in range(connections)]
    next_offsets = dict.fromkeys(range(partitions), 0)
    try:
        for partition in range(partitions):
            results = [None] * connections
            wanted = [(topic, p, next_offsets[p]) for p in range(partitions)]

            def poll(i, wanted=wanted, results=results):
                got = wire.fetch(conns[i], wanted, max_wait_ms=30_000, min_bytes=1)
                results[i] = (got, time.monotonic())

            threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(connections)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            assert not any(results), f"a fetch returned before anything was produced: {results}"
            message, ack = produce_one(client, topic, partition, f"wake-{partition}")
            acked_at = time.monotonic()
            for t in threads:
                t.join(45)
            assert ack == (partition, next_offsets[partition])
            for i, result in enumerate(results):
                assert result is not None, (
                    f"connection {i}: fetch still parked 45 s after a produce to partition {partition}"
                )
                got, returned_at = result
                fetched = got[(topic, partition)]
                records = [r for b in wire.parse_batches(fetched.records) for r in b.records]
                assert fetched.error_code == wire.ERROR_NONE and [(r.offset, r.value) for r in records] == [
                    (ack[1], message.value)
                ], f"connection {i}: partition {partition} answered {fetched}"
                assert returned_at - acked_at < 10, (
                    f"connection {i}: returned {returned_at - acked_at:.1f}s after the produce to partition "
                    f"{partition}; it waited for max_wait_ms instead of waking"
                )
            next_offsets[partition] += 1
    finally:
        for conn in conns:
            conn.close()
