"""A data directory that fills up: the broker stops with a clear log line rather than carry on
with a log it could not write, no write it acknowledged is lost, and once there is room again
it starts and serves."""

import subprocess
import time

import pytest

from conftest import Broker
from kafka_clients import ConfluentClient
from log_checks import assert_log, make_message

TOPIC = "full"
LOG_DIR_FAILED_EXIT = 3
OFFLINE_LINE = "the log directory is offline and the broker stops"


def _mount_tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"a small filesystem is needed and tmpfs cannot be mounted here: {result.stderr.strip()}")


@pytest.fixture
def small_disk_broker(tmp_path):
    broker = Broker(tmp_path)
    _mount_tmpfs(broker.data_dir, "12m")
    try:
        yield broker
    finally:
        broker.stop()
        subprocess.run(["umount", "-l", str(broker.data_dir)], check=False)


def test_a_full_disk_stops_the_broker_and_loses_no_acknowledged_write(small_disk_broker):
    broker = small_disk_broker
    broker.start()
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(TOPIC, 1)
    producer = client.producer(**{"linger.ms": 2, "message.timeout.ms": 10_000, "batch.size": 64_000})
    acked = {}
    failed = []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.offset()] = msg.value()
        else:
            failed.append(str(err))

    messages = []
    deadline = time.monotonic() + 60
    index = 0
    while broker.proc.poll() is None and time.monotonic() < deadline:
        # 8 KiB of incompressible-enough bytes per record: the 12 MiB disk fills in seconds.
        m = make_message(index, int(time.time() * 1000), tag="full")
        value = m.value + bytes((index * 31 + i) % 251 for i in range(8192))
        messages.append(value)
        try:
            producer.produce(TOPIC, key=m.key, value=value, partition=0, on_delivery=on_delivery)
        except BufferError:
            producer.poll(0.05)
            continue
        index += 1
        producer.poll(0)
    producer.flush(30)
    assert broker.proc.poll() is not None, f"the broker still runs after {index} records of 8 KiB on a 12 MiB disk"
    assert broker.proc.returncode == LOG_DIR_FAILED_EXIT, broker.log_tail()
    broker._stopped_on_purpose = True
    assert OFFLINE_LINE in broker.log.read_text(errors="replace"), broker.log_tail()
    assert acked, "nothing was acknowledged before the disk filled"
    assert failed, "every record was acknowledged although the broker stopped"

    subprocess.run(["mount", "-o", "remount,size=512m", str(broker.data_dir)], check=True)
    broker.start()
    end = client.end_offsets(TOPIC, [0])[0]
    assert end >= max(acked) + 1, f"log end {end} is below the last acknowledged offset {max(acked)}"
    records = client.consume(TOPIC, {0: end})
    by_offset = {r.offset: r.message.value for r in records[0]}
    lost = [o for o in acked if by_offset.get(o) != acked[o]]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged records lost or changed, first offsets {lost[:5]}"
    assert_log(records, {0: {}}, {0: end}, only_acked=False)

    # And it serves again.
    later = [make_message(i, int(time.time() * 1000), tag="after") for i in range(10)]
    acks = client.produce(TOPIC, later, partition=0)
    assert [o for _, o in acks] == list(range(end, end + 10))
