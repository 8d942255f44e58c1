"""Test data and the properties every acknowledged write must keep."""

from collections import defaultdict
from typing import Optional

from kafka_clients import Message


def make_message(index, timestamp, tag="m"):
    headers = (("index", str(index).encode()),)
    if index % 2:
        headers += (("bin", bytes([index % 256, 0, 255])),)
    filler = b"payload-%d " % (index % 97) * (index % 7 + 3)  # compressible, varied sizes
    return Message(f"{tag}-key-{index:08d}".encode(), f"{tag}-value-{index:08d}-".encode() + filler, headers, timestamp)


def make_messages(count, base_timestamp, tag="m"):
    # Pairs share a timestamp and pairs are 10 ms apart, so timestamp lookups
    # meet ties as well as targets falling between two timestamps.
    return [make_message(i, base_timestamp + (i // 2) * 10, tag) for i in range(count)]


def acked_log(messages, acks, start_offsets=None):
    """-> {partition: {offset: Message}}, after checking that each partition
    handed out offsets densely, in produce order, from its start offset."""
    log = defaultdict(dict)
    next_offset = dict(start_offsets or {})
    for index, (message, (partition, offset)) in enumerate(zip(messages, acks, strict=True)):
        expected = next_offset.get(partition, 0)
        assert offset == expected, (
            f"message {index} acked at partition {partition} offset {offset}; "
            f"the previous ack there in produce order makes {expected} the next offset"
        )
        next_offset[partition] = offset + 1
        log[partition][offset] = message
    return dict(log)


def end_offsets_of(log):
    return {p: max(by_offset) + 1 for p, by_offset in log.items()}


def assert_log(records, acked, end_offsets, only_acked=True):
    """records: what was read back, {partition: [Record]}; acked: {partition:
    {offset: Message}}. Every partition must hold offsets 0..end-1 exactly once,
    in order, each acked offset holding exactly what was acked. With
    only_acked, no other record may exist."""
    for partition, end in end_offsets.items():
        got = records.get(partition, [])
        want = acked.get(partition, {})
        assert not want or max(want) < end, (
            f"partition {partition}: acked offset {max(want)} is beyond the log end {end}"
        )
        offsets = [r.offset for r in got]
        if offsets != list(range(end)):
            at = next((i for i, o in enumerate(offsets) if o != i), len(offsets))
            raise AssertionError(
                f"partition {partition}: expected offsets 0..{end - 1} once each, in order; "
                f"read {len(offsets)} records, position {at} holds {offsets[at:at + 5] or 'nothing'}"
            )
        for record in got:
            message = want.get(record.offset)
            if message is None:
                assert not only_acked, f"partition {partition}: offset {record.offset} was never acked: {record}"
                continue
            assert record.message == message and record.timestamp_type == "create", (
                f"partition {partition} offset {record.offset}: read {record}, acked {message} (CreateTime)"
            )


def assert_high_watermarks(client, topic, ends):
    got = client.end_offsets(topic, sorted(ends))
    assert got == ends, f"high watermarks {got}, but the acks end at {ends}"


def first_offset_at_or_after(records, timestamp) -> Optional[int]:
    return next((r.offset for r in records if r.message.timestamp >= timestamp), None)


def assert_log_range(records, acked, start_offsets, end_offsets):
    """Like assert_log for a log that no longer starts at 0: every partition must
    hold offsets start..end-1 exactly once, in order, each holding exactly what
    was acked there (CreateTime)."""
    for partition, end in end_offsets.items():
        start = start_offsets[partition]
        got = records.get(partition, [])
        want = acked.get(partition, {})
        offsets = [r.offset for r in got]
        if offsets != list(range(start, end)):
            at = next((i for i, o in enumerate(offsets) if o != start + i), len(offsets))
            raise AssertionError(
                f"partition {partition}: expected offsets {start}..{end - 1} once each, in order; "
                f"read {len(offsets)} records, position {at} holds {offsets[at:at + 5] or 'nothing'}"
            )
        for record in got:
            message = want.get(record.offset)
            assert record.message == message and record.timestamp_type == "create", (
                f"partition {partition} offset {record.offset}: read {record}, acked {message} (CreateTime)"
            )
