"""One consumer-group member, run as its own process so a test can SIGKILL it.

    python group_worker.py '<json config>'

The config (see group_helpers.Worker) names the client library, group, topic and
timeouts. The worker subscribes, and "processes" each message it gets by
appending "partition offset key" to its records file. It commits what it has
processed, synchronously, whenever partitions are taken from it (the revoke
callback), when told to quiesce, and before it closes; it never commits
anything else, so the committed offset of a partition is always exactly the
next offset to process.

It reports on stdout, one JSON object a line:
  {"e": "started"}
  {"e": "assigned", "partitions": [...], "current": [...], "t": monotonic}
  {"e": "revoked", ...}  {"e": "lost", ...}       (same fields)
  {"e": "committed", "offsets": {p: next}, "why": "revoke"|"quiesce"|"close"}
  {"e": "progress", "n": processed, "pos": {p: next}, "t": ...}
  {"e": "quiesced", "pos": {...}}  {"e": "closing", "t": ...}  {"e": "closed", "t": ...}
  {"e": "error", "what": ..., "detail": ...}
  {"e": "stray", ...}  a message from a partition it does not own (not processed)

and reads commands on stdin, one a line:
  quiesce  stop processing, commit everything processed, report "quiesced", then
           idle without polling (the client keeps heartbeating in its background
           thread) until killed or told to close
  close    commit everything processed, close the consumer (leaving the group), exit
"""

import json
import sys
import threading
import time

PROGRESS_EVERY = 0.25
BATCH = 100


def emit(event, **fields):
    sys.stdout.write(json.dumps({"e": event, **fields}) + "\n")
    sys.stdout.flush()


class Processing:
    """What this member has processed, and what of it is not committed yet."""

    def __init__(self, path, rate):
        self.file = open(path, "a", buffering=1 << 16)
        self.next = {}  # partition -> next offset to process (processed offset + 1)
        self.current = set()
        self.count = 0
        self.rate = rate
        self._due = time.monotonic()
        self._last_progress = 0.0

    def record(self, partition, offset, key):
        self.file.write(f"{partition} {offset} {key.decode() if key is not None else '-'}\n")
        self.next[partition] = offset + 1
        self.count += 1
        if self.rate:
            self._due = max(self._due, time.monotonic() - 0.05) + 1.0 / self.rate
            ahead = self._due - time.monotonic()
            if ahead > 0.002:
                time.sleep(ahead)

    def flush(self):
        self.file.flush()

    def positions(self, partitions=None):
        wanted = self.current if partitions is None else partitions
        return {p: o for p, o in self.next.items() if p in wanted}

    def forget(self, partitions):
        for p in partitions:
            self.next.pop(p, None)

    def progress(self, force=False):
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            self.flush()
            emit("progress", n=self.count, pos=self.next, t=now)


class Commands(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.quiesce = threading.Event()
        self.close = threading.Event()

    def run(self):
        for line in sys.stdin:
            command = line.strip()
            if command == "quiesce":
                self.quiesce.set()
            elif command == "close":
                self.close.set()
        self.close.set()  # the test went away


# ---------------------------------------------------------------- confluent-kafka


def quiesce_step(commands, work, commit, done):
    """While told to quiesce: commit and flush everything processed, once, then idle.
    Returns True while quiescing. `done` is a list used as a once-flag."""
    if not commands.quiesce.is_set():
        return False
    if not done:
        commit(work.positions(), "quiesce")
        work.flush()
        emit("quiesced", pos=work.positions())
        done.append(True)
    time.sleep(0.05)
    return True


def run_confluent(cfg, work, commands):
    import confluent_kafka
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": cfg["bootstrap"],
        "broker.address.family": "v4",
        "client.id": cfg["name"],
        "group.id": cfg["group"],
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": cfg["session_timeout_ms"],
        "heartbeat.interval.ms": cfg["heartbeat_interval_ms"],
        "max.poll.interval.ms": cfg["max_poll_interval_ms"],
        "partition.assignment.strategy": cfg["strategy"],
    }
    if cfg.get("instance_id"):
        conf["group.instance.id"] = cfg["instance_id"]
    conf.update(cfg.get("extra") or {})
    topic = cfg["topic"]
    consumer = Consumer(conf)

    def commit(positions, why):
        if not positions:
            return
        work.flush()
        try:
            result = consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in sorted(positions.items())], asynchronous=False
            )
        except KafkaException as e:
            emit("error", what=f"commit on {why}", detail=str(e), offsets=positions)
            return
        failed = {tp.partition: str(tp.error) for tp in result or [] if tp.error is not None}
        if failed:
            emit("error", what=f"commit on {why}", detail=failed, offsets=positions)
        else:
            emit("committed", offsets=positions, why=why)

    def on_assign(_consumer, partitions):
        added = sorted(tp.partition for tp in partitions)
        work.current.update(added)
        emit("assigned", partitions=added, current=sorted(work.current), t=time.monotonic())

    def on_revoke(_consumer, partitions):
        revoked = sorted(tp.partition for tp in partitions)
        commit(work.positions(revoked), "revoke")
        work.forget(revoked)
        work.current.difference_update(revoked)
        emit("revoked", partitions=revoked, current=sorted(work.current), t=time.monotonic())

    def on_lost(_consumer, partitions):
        lost = sorted(tp.partition for tp in partitions)
        work.forget(lost)
        work.current.difference_update(lost)
        emit("lost", partitions=lost, current=sorted(work.current), t=time.monotonic())

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    emit("started", library=confluent_kafka.version())
    quiesced = []
    while not commands.close.is_set():
        if quiesce_step(commands, work, commit, quiesced):
            continue
        for msg in consumer.consume(num_messages=BATCH, timeout=0.2):
            if commands.quiesce.is_set():
                break  # unprocessed and uncommitted: the next owner gets them
            if msg.error():
                emit("error", what="consume", detail=str(msg.error()))
                continue
            if msg.partition() not in work.current:
                emit("stray", partition=msg.partition(), offset=msg.offset())
                continue
            work.record(msg.partition(), msg.offset(), msg.key())
        work.progress()
    commit(work.positions(), "close")
    work.progress(force=True)
    emit("closing", t=time.monotonic())
    consumer.close()
    emit("closed", t=time.monotonic())


# ---------------------------------------------------------------- kafka-python


def run_kafka_python(cfg, work, commands):
    import kafka
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.structs import OffsetAndMetadata

    assignors = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}
    topic = cfg["topic"]
    consumer = KafkaConsumer(
        bootstrap_servers=cfg["bootstrap"],
        client_id=cfg["name"],
        group_id=cfg["group"],
        group_instance_id=cfg.get("instance_id") or None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=cfg["session_timeout_ms"],
        heartbeat_interval_ms=cfg["heartbeat_interval_ms"],
        max_poll_interval_ms=cfg["max_poll_interval_ms"],
        request_timeout_ms=max(30_500, cfg["session_timeout_ms"] + 5_000),
        max_poll_records=BATCH,
        partition_assignment_strategy=[assignors[cfg["strategy"]]],
        **(cfg.get("extra") or {}),
    )

    def commit(positions, why):
        if not positions:
            return
        work.flush()
        try:
            consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in positions.items()})
        except Exception as e:  # kafka.errors.* : report, the test decides
            emit("error", what=f"commit on {why}", detail=repr(e), offsets=positions)
            return
        emit("committed", offsets=positions, why=why)

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            partitions = sorted(tp.partition for tp in revoked)
            commit(work.positions(partitions), "revoke")
            work.forget(partitions)
            work.current.difference_update(partitions)
            emit("revoked", partitions=partitions, current=sorted(work.current), t=time.monotonic())

        def on_partitions_assigned(self, assigned):
            partitions = sorted(tp.partition for tp in assigned)
            work.current.update(partitions)
            emit("assigned", partitions=partitions, current=sorted(work.current), t=time.monotonic())

        def on_partitions_lost(self, lost):  # newer kafka-python; older ones call revoked
            partitions = sorted(tp.partition for tp in lost)
            work.forget(partitions)
            work.current.difference_update(partitions)
            emit("lost", partitions=partitions, current=sorted(work.current), t=time.monotonic())

    consumer.subscribe([topic], listener=Listener())
    emit("started", library=kafka.__version__)
    quiesced = []
    while not commands.close.is_set():
        if quiesce_step(commands, work, commit, quiesced):
            continue
        batches = consumer.poll(timeout_ms=200)
        stop = False
        for tp, records in sorted(batches.items()):
            for r in records:
                if commands.quiesce.is_set():
                    stop = True
                    break
                if r.partition not in work.current:
                    emit("stray", partition=r.partition, offset=r.offset)
                    continue
                work.record(r.partition, r.offset, r.key)
            if stop:
                break
        work.progress()
    commit(work.positions(), "close")
    work.progress(force=True)
    emit("closing", t=time.monotonic())
    consumer.close(autocommit=False)
    emit("closed", t=time.monotonic())


def main():
    cfg = json.loads(sys.argv[1])
    work = Processing(cfg["records"], cfg.get("rate") or 0)
    commands = Commands()
    commands.start()
    try:
        {"confluent-kafka": run_confluent, "kafka-python": run_kafka_python}[cfg["client"]](cfg, work, commands)
    except Exception as e:
        emit("error", what="crashed", detail=repr(e))
        raise
    finally:
        work.flush()


if __name__ == "__main__":
    main()
