import time

import pytest

from kafka_clients import CLIENTS
from log_checks import (
    acked_log,
    assert_high_watermarks,
    assert_log,
    end_offsets_of,
    first_offset_at_or_after,
    make_messages,
)

MESSAGES = 100_000
PARTITIONS = 8
COMPRESSIONS = ["none", "gzip", "snappy", "lz4", "zstd"]


def timestamp_targets(messages):
    timestamps = [m.timestamp for m in messages]
    first, last, middle = timestamps[0], timestamps[-1], timestamps[len(timestamps) // 2]
    return {
        "before all": first - 1_000,
        "first": first,
        "middle, exact": middle,
        "middle, between two timestamps": middle + 1,
        "late, exact": timestamps[len(timestamps) * 7 // 8],
        "last": last,
        "after all": last + 1,
    }


@pytest.mark.timeout(600)
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("client_class", CLIENTS, ids=lambda c: c.name)
def test_produce_consume_and_lookup_by_timestamp(broker, client_class, compression):
    client = client_class(broker.bootstrap)
    topic = f"roundtrip-{compression}"
    client.create_topic(topic, PARTITIONS)
    # An hour in the past: nothing is near "now", so a broker substituting its
    # own clock for CreateTime cannot pass by accident.
    messages = make_messages(MESSAGES, int(time.time() * 1000) - 3_600_000)

    acked = acked_log(messages, client.produce(topic, messages, compression))
    assert sorted(acked) == list(range(PARTITIONS)), "keyed messages should have reached every partition"
    ends = end_offsets_of(acked)

    assert_high_watermarks(client, topic, ends)
    records = client.consume(topic, ends)
    assert_log(records, acked, ends)

    for name, target in timestamp_targets(messages).items():
        expected = {p: first_offset_at_or_after(records[p], target) for p in range(PARTITIONS)}
        got = client.offsets_for_times(topic, range(PARTITIONS), target)
        assert got == expected, f"offsets_for_times({name} = {target}): got {got}, expected {expected}"
