"""odradek-jepsen's clients: confluent-kafka (librdkafka) processes that write one JSON line per
history event on stdout. odradek-jepsen starts one per role inside the clients' network
namespace, collects the lines into history.jsonl and checks them (docs/jepsen.md).

Every event: {"time": wall ms, "process": id, "type": "invoke"|"ok"|"fail"|"info", "f": ...}.
  send      {"partition", "value", "offset" (ok)}; a producer sends one record at a time and
            waits for its delivery report, so its sends are sequential
  poll      {"records": [[partition, offset, value], ...], "committed": bool}
  seek      {"partitions": [...]}: the consumer was re-positioned (start, rebalance, restart)
  txn       {"values": [[partition, value], ...], "outcome": "commit"|"abort"}; type ok means
            the outcome was acknowledged, info that it is unknown
  transform {"pairs": [[partition, input offset, input value, output value], ...]}: one consume-transform-
            produce transaction; ok means its commit was acknowledged, info that its fate is
            unknown
  committed {"offsets": [[partition, offset], ...]}: the transform group's committed offsets
  final     {"records": [[partition, offset, value], ...], "committed": bool}
  admin     setup and metadata answers
"""

import faulthandler
import json
import os
import random
import sys
import threading
import time

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

VALUES_PER_PROCESS = 1_000_000_000


def emit(process, type_, f, **fields):
    line = {"time": int(time.time() * 1000), "process": process, "type": type_, "f": f, **fields}
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def base_config(args):
    return {
        "bootstrap.servers": args["bootstrap"],
        "broker.address.family": "v4",
        # Faults make brokers vanish: find the new leaders quickly.
        "topic.metadata.refresh.interval.ms": 2000,
        "reconnect.backoff.max.ms": 1000,
        "socket.connection.setup.timeout.ms": 5000,
        # A request to a paused or cut-off broker fails after this, not the default minute.
        "socket.timeout.ms": 10000,
        "log_level": 3,
    }


def retire(client):
    """Destroys a librdkafka client on a thread of its own: a producer dropped mid-transaction
    or a consumer leaving its group can block on a broker that does not answer, and the
    worker must go on (and stop on time)."""
    box = [client]

    def drop():
        close = getattr(box[0], "close", None)
        if close is not None:
            close()
        box.clear()

    threading.Thread(target=drop, daemon=True).start()


def stopped(args):
    return time.monotonic() >= args["deadline"]


def setup(args):
    admin = AdminClient(base_config(args))
    config = {
        "min.insync.replicas": str(args["min_isr"]),
        "unclean.leader.election.enable": "true" if args["unclean"] else "false",
    }
    topics = [NewTopic(t, num_partitions=args["partitions"], replication_factor=args["rf"], config=config) for t in args["topics"]]
    deadline = time.monotonic() + 60
    while True:
        futures = admin.create_topics(topics, operation_timeout=20)
        errors = []
        for topic, future in futures.items():
            try:
                future.result(timeout=30)
            except KafkaException as e:
                if e.args[0].code() != confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                    errors.append(f"{topic}: {e}")
        if not errors:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"creating topics: {errors}")
        time.sleep(1)
        topics = [t for t in topics if any(e.startswith(t.topic + ":") for e in errors)]
    # Wait until every partition has a leader, so the workload starts on a settled cluster.
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        if all(t in md.topics and len(md.topics[t].partitions) == args["partitions"]
               and all(p.leader >= 0 for p in md.topics[t].partitions.values()) for t in args["topics"]):
            emit(0, "ok", "admin", what="setup")
            return
        time.sleep(0.5)
    raise SystemExit("partitions without a leader after 60 s")


def leaders(args):
    """The controller and every partition leader, for the nemesis's targeted partitions."""
    admin = AdminClient(base_config(args))
    md = admin.list_topics(timeout=5)
    out = {"controller": md.controller_id, "leaders": {}}
    for t in args["topics"]:
        if t in md.topics:
            out["leaders"][t] = {str(p): m.leader for p, m in md.topics[t].partitions.items()}
    print(json.dumps(out))


def producer(args):
    process = args["process"]
    config = {
        **base_config(args),
        "acks": args["acks"],
        "enable.idempotence": args["idempotent"],
        "linger.ms": 0,
        "message.timeout.ms": 10000,
        "request.timeout.ms": 5000,
    }
    if not args["idempotent"]:
        # Without idempotence a retry may write a record twice; the checker counts those
        # duplicates apart (docs/jepsen.md).
        config["retries"] = 3
    p = Producer(config)
    n = 0
    topic = args["topics"][0]
    while not stopped(args):
        n += 1
        value = process * VALUES_PER_PROCESS + n
        partition = random.randrange(args["partitions"])
        emit(process, "invoke", "send", partition=partition, value=value)
        result = {}

        def delivered(err, msg, result=result):
            result["err"] = err
            result["offset"] = msg.offset() if err is None else None

        try:
            p.produce(topic, value=str(value).encode(), partition=partition, on_delivery=delivered)
        except (BufferError, KafkaException) as e:
            emit(process, "fail", "send", partition=partition, value=value, error=str(e))
            continue
        try:
            p.flush(15)
        except KafkaException as e:
            # A fatal error (e.g. OUT_OF_ORDER_SEQUENCE_NUMBER after a leader lost what it
            # had acknowledged) ends this producer; the record's fate is unknown.
            emit(process, "info", "send", partition=partition, value=value, error=str(e.args[0].name()))
            retire(p)
            p = Producer(config)
            continue
        if "err" not in result:
            emit(process, "info", "send", partition=partition, value=value, error="no delivery report")
        elif result["err"] is None:
            emit(process, "ok", "send", partition=partition, value=value, offset=result["offset"])
        else:
            # No librdkafka error promises the record is absent (a timed-out or retried
            # request may have been appended), so every failure is indeterminate.
            emit(process, "info", "send", partition=partition, value=value, error=result["err"].name())
            if result["err"].fatal():
                retire(p)
                p = Producer(config)


def consumer(args):
    process = args["process"]
    topic = args["topics"][0]
    committed = args["committed"]
    config = {
        **base_config(args),
        "group.id": f"jepsen-{args['run']}-{'assign' if args['assign'] else 'group'}-{process}" if args["assign"] else f"jepsen-{args['run']}-group",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "isolation.level": "read_committed" if committed else "read_uncommitted",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "enable.partition.eof": False,
    }
    partitions = list(range(args["partitions"]))
    c = Consumer(config)

    def assigned(consumer, tps):
        emit(process, "ok", "seek", partitions=[tp.partition for tp in tps])

    if args["assign"]:
        c.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in partitions])
        emit(process, "ok", "seek", partitions=partitions)
    else:
        c.subscribe([topic], on_assign=assigned)
    while not stopped(args):
        try:
            messages = c.consume(num_messages=200, timeout=0.5)
        except KafkaException as e:
            emit(process, "info", "poll", error=str(e))
            continue
        records = []
        for m in messages:
            if m.error() is None:
                records.append([m.partition(), m.offset(), int(m.value())])
        if records:
            emit(process, "ok", "poll", records=records, committed=committed)
    retire(c)


def transactions(args):
    process = args["process"]
    topic = args["topics"][0]
    config = {
        **base_config(args),
        "transactional.id": f"jepsen-{args['run']}-{process}",
        "transaction.timeout.ms": 10000,
        "message.timeout.ms": 10000,
        "linger.ms": 0,
    }
    p = None
    n = 0
    while not stopped(args):
        if p is None:
            try:
                p = Producer(config)
                p.init_transactions(15)
            except KafkaException as e:
                emit(process, "info", "admin", what="init_transactions", error=str(e))
                retire(p)
                p = None
                time.sleep(1)
                continue
        values = []
        for _ in range(random.randint(1, 4)):
            n += 1
            values.append([random.randrange(args["partitions"]), process * VALUES_PER_PROCESS + n])
        outcome = "abort" if random.random() < 0.25 else "commit"
        emit(process, "invoke", "txn", values=values, outcome=outcome)
        try:
            p.begin_transaction()
            for partition, value in values:
                p.produce(topic, value=str(value).encode(), partition=partition)
            # Without a flush an abort purges records librdkafka has not sent yet, so an
            # aborted transaction would often write nothing.
            if p.flush(15) > 0:
                raise KafkaException(confluent_kafka.KafkaError(confluent_kafka.KafkaError._TIMED_OUT, "records still unsent after 15 s"))
            if outcome == "commit":
                p.commit_transaction(15)
            else:
                p.abort_transaction(15)
            emit(process, "ok", "txn", values=values, outcome=outcome)
        except KafkaException as e:
            emit(process, "info", "txn", values=values, outcome=outcome, error=str(e))
            # A new producer with the same transactional id fences this one and aborts
            # whatever it left open (or finds it already decided).
            retire(p)
            p = None


def transform(args):
    """Consume-transform-produce, exactly once: reads the queue topic (read_committed), writes a
    new value for each record read to the same partition of the output topic, and commits the
    input offsets in the same transaction."""
    process = args["process"]
    source, sink = args["topics"]
    group = f"jepsen-{args['run']}-transform"
    consumer_config = {
        **base_config(args),
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
    }
    producer_config = {
        **base_config(args),
        "transactional.id": f"jepsen-{args['run']}-transform-{process}",
        "transaction.timeout.ms": 10000,
        "message.timeout.ms": 10000,
        "linger.ms": 5,
    }
    n = 0
    c = p = None
    while not stopped(args):
        try:
            if p is None:
                p = Producer(producer_config)
                p.init_transactions(15)
            if c is None:
                c = Consumer(consumer_config)
                c.subscribe([source])
        except KafkaException as e:
            emit(process, "info", "admin", what="transform setup", error=str(e))
            if p is not None:
                retire(p)
            p = None
            time.sleep(1)
            continue
        messages = [m for m in c.consume(num_messages=100, timeout=0.5) if m.error() is None]
        if not messages:
            continue
        pairs = []
        positions = {}
        for m in messages:
            n += 1
            pairs.append([m.partition(), m.offset(), int(m.value()), process * VALUES_PER_PROCESS + n])
            positions[m.partition()] = m.offset() + 1
        emit(process, "invoke", "transform", pairs=pairs)
        try:
            p.begin_transaction()
            for partition, _, _, out in pairs:
                p.produce(sink, value=str(out).encode(), partition=partition)
            offsets = [TopicPartition(source, partition, offset) for partition, offset in positions.items()]
            p.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), 15)
            p.commit_transaction(15)
            emit(process, "ok", "transform", pairs=pairs, outcome="commit")
        except KafkaException as e:
            emit(process, "info", "transform", pairs=pairs, error=str(e))
            # Start again from the group's committed offsets, with a producer that fences
            # this one (its transaction, if still open, is aborted).
            retire(p)
            retire(c)
            p = c = None


def committed(args):
    """The transform group's committed offsets, after healing."""
    c = Consumer({**base_config(args), "group.id": f"jepsen-{args['run']}-transform"})
    tps = c.committed([TopicPartition(args["topics"][0], p) for p in range(args["partitions"])], timeout=30)
    emit(0, "ok", "committed", offsets=[[tp.partition, tp.offset] for tp in tps])
    c.close()


def final(args):
    """Reads every partition from its start to its end after healing, retrying until done."""
    topic = args["topics"][0]
    committed = args["committed"]
    config = {
        **base_config(args),
        "group.id": f"jepsen-{args['run']}-final",
        "enable.auto.commit": False,
        "isolation.level": "read_committed" if committed else "read_uncommitted",
        "enable.partition.eof": True,
    }
    deadline = time.monotonic() + args["timeout"]
    while True:
        try:
            c = Consumer(config)
            records = []
            for p in range(args["partitions"]):
                tp = TopicPartition(topic, p)
                low, high = c.get_watermark_offsets(tp, timeout=10)
                if high <= low:
                    continue
                # The end is where the broker reports end of partition: the high watermark, or
                # under read_committed the last stable offset; both may follow markers, so the
                # position need not reach them.
                c.assign([TopicPartition(topic, p, low)])
                eof = False
                while not eof:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"final read of partition {p} did not reach its end ({high})")
                    for m in c.consume(num_messages=500, timeout=1):
                        if m.error() is not None:
                            eof = eof or m.error().code() == confluent_kafka.KafkaError._PARTITION_EOF
                            continue
                        records.append([m.partition(), m.offset(), int(m.value())])
                c.unassign()
            c.close()
            emit(0, "ok", "final", records=records, committed=committed)
            return
        except KafkaException as e:
            if time.monotonic() > deadline:
                raise
            print(f"final read: {e}; retrying", file=sys.stderr)
            time.sleep(1)


def main():
    args = json.loads(sys.argv[1])
    args["deadline"] = time.monotonic() + args.get("seconds", 0)
    random.seed(args.get("seed", 0) * 1000 + args.get("process", 0))
    if args.get("seconds"):
        # odradek-jepsen kills a client still running a minute after the workload: say where
        # it was stuck first (stderr goes to clients.log).
        faulthandler.dump_traceback_later(args["seconds"] + 50, exit=False)
    {
        "setup": setup,
        "leaders": leaders,
        "producer": producer,
        "consumer": consumer,
        "txn": transactions,
        "final": final,
        "transform": transform,
        "committed": committed,
    }[args["role"]](args)
    sys.stdout.flush()
    # What a role leaves to its clients' destructors (a consumer leaving its group, retired
    # producers) is not part of the history: exit without waiting for brokers.
    os._exit(0)


if __name__ == "__main__":
    main()
