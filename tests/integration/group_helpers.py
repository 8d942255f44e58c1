"""Consumer-group test helpers: member processes (group_worker.py) driven from the
test, waiting for a settled assignment, committed offsets through either client,
and the group APIs over a raw socket (kafka-python's protocol classes for the
encodings, kafka_wire.Connection for the socket)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import confluent_kafka
import kafka
from kafka.protocol import admin as kp_admin
from kafka.protocol import commit as kp_commit
from kafka.protocol import find_coordinator as kp_find
from kafka.protocol import group as kp_group

import kafka_wire

WORKER = Path(__file__).with_name("group_worker.py")
GROUP_BROKER_ARGS = ("--group-initial-rebalance-delay-ms", "0")

ERROR_NONE = 0
ERROR_ILLEGAL_GENERATION = 22
ERROR_INCONSISTENT_GROUP_PROTOCOL = 23
ERROR_UNKNOWN_MEMBER_ID = 25
ERROR_INVALID_SESSION_TIMEOUT = 26
ERROR_REBALANCE_IN_PROGRESS = 27
ERROR_NON_EMPTY_GROUP = 68
ERROR_MEMBER_ID_REQUIRED = 79


def start_group_broker(broker_factory, *extra):
    """A broker for group tests: no initial rebalance delay, so joins are fast."""
    return broker_factory(*GROUP_BROKER_ARGS, *extra)


# ---------------------------------------------------------------- member processes


class Worker:
    """One group member in its own process (group_worker.py)."""

    def __init__(
        self,
        workdir,
        name,
        client,
        bootstrap,
        group,
        topic,
        strategy="range",
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        max_poll_interval_ms=30_000,
        instance_id=None,
        rate=0,
        extra=None,
    ):
        self.name = name
        self.records_path = Path(workdir) / f"{name}.records"
        self.stderr_path = Path(workdir) / f"{name}.stderr"
        config = {
            "client": client,
            "name": name,
            "bootstrap": bootstrap,
            "group": group,
            "topic": topic,
            "strategy": strategy,
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "max_poll_interval_ms": max_poll_interval_ms,
            "instance_id": instance_id,
            "rate": rate,
            "records": str(self.records_path),
            "extra": extra or {},
        }
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            cwd=Path(__file__).parent,
        )
        self.events = []
        self._lock = threading.Lock()
        self.killed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        with open(self.records_path.with_suffix(".events"), "a") as log:  # kept for post-mortems
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"e": "garbage", "line": line}
                event["seen"] = time.monotonic()
                with self._lock:
                    self.events.append(event)

    # ---- what it reported

    def snapshot(self):
        with self._lock:
            return list(self.events)

    def of(self, kind, since=0):
        return [e for e in self.snapshot()[since:] if e["e"] == kind]

    def mark(self):
        """An index into the events, for of(kind, since=mark)."""
        with self._lock:
            return len(self.events)

    def current(self):
        """The partitions it owns now, per its last assign/revoke/lost callback."""
        owned = set()
        for e in self.snapshot():
            if e["e"] in ("assigned", "revoked", "lost"):
                owned = set(e["current"])
        return frozenset(owned)

    def processed(self):
        progress = self.of("progress")
        return progress[-1]["n"] if progress else 0

    def positions(self):
        progress = self.of("progress")
        return {int(p): o for p, o in progress[-1]["pos"].items()} if progress else {}

    def reached(self):
        """{partition: highest next-offset it ever reported}, over all its progress
        (a partition it gave away drops out of later progress reports)."""
        out = {}
        for e in self.snapshot():
            if e["e"] in ("progress", "committed"):
                for p, o in (e["pos"] if e["e"] == "progress" else e["offsets"]).items():
                    out[int(p)] = max(out.get(int(p), 0), o)
        return out

    def errors(self):
        return [e for e in self.snapshot() if e["e"] in ("error", "garbage")]

    def alive(self):
        return self.proc.poll() is None

    def wait_event(self, kind, timeout, since=0):
        deadline = time.monotonic() + timeout
        while True:
            found = self.of(kind, since)
            if found:
                return found[0]
            if not self.alive() and not self._reader.is_alive():
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before {kind!r}: {self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {kind!r} within {timeout}s: {self.describe()}")
            time.sleep(0.02)

    def describe(self, last=12):
        interesting = [e for e in self.snapshot() if e["e"] != "progress"]
        stderr = self.stderr_path.read_text(errors="replace")[-2000:] if self.stderr_path.exists() else ""
        return f"events {interesting[-last:]}, stderr tail {stderr!r}"

    # ---- telling it what to do

    def send(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def quiesce(self, timeout=30):
        """Stop processing and commit all processed; -> the committed positions."""
        mark = self.mark()
        self.send("quiesce")
        return self.wait_event("quiesced", timeout, since=mark)["pos"]

    def kill9(self):
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self, timeout=30):
        """Commit, close the consumer (leaving the group), wait for the exit; -> seconds taken."""
        started = time.monotonic()
        self.send("close")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not close within {timeout}s: {self.describe()}") from None
        assert self.proc.returncode == 0, f"{self.name} exited {self.proc.returncode}: {self.describe()}"
        self._reader.join(5)
        return time.monotonic() - started

    def stop(self):
        """Teardown: whatever state it is in."""
        if self.alive():
            try:
                self.send("close")
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    def records(self):
        """-> [(partition, offset, key)] it processed, in order."""
        if not self.records_path.exists():
            return []
        out = []
        for line in self.records_path.read_text().splitlines():
            p, o, key = line.split(" ", 2)
            out.append((int(p), int(o), key))
        return out


def wait_for_assignment(members, partitions, timeout, settle=1.0):
    """Waits until every member owns a non-empty set of partitions, the sets are
    disjoint and together cover `partitions`, unchanged for `settle` seconds.
    -> ({name: frozenset}, monotonic time the condition first held)."""
    wanted = frozenset(partitions)
    deadline = time.monotonic() + timeout
    held_since, held = None, None
    while True:
        now = time.monotonic()
        owned = {m.name: m.current() for m in members}
        sets = list(owned.values())
        good = (
            all(sets)
            and sum(len(s) for s in sets) == len(frozenset().union(*sets))
            and frozenset().union(*sets) == wanted
        )
        if good and owned == held:
            if now - held_since >= settle:
                return owned, held_since
        elif good:
            held_since, held = now, owned
        else:
            held_since, held = None, None
        dead = [m.name for m in members if not m.alive()]
        if dead or now > deadline:
            details = "; ".join(f"{m.name}: {m.describe(6)}" for m in members)
            problem = f"members {dead} exited" if dead else f"no settled assignment after {timeout}s"
            raise AssertionError(f"{problem}; owned {fmt(owned)} (want disjoint cover of {sorted(wanted)}); {details}")
        time.sleep(0.05)


def assert_partitioned(owned, partitions, context):
    sets = list(owned.values())
    union = frozenset().union(*sets)
    assert all(sets), f"{context}: a member owns nothing: {fmt(owned)}"
    assert sum(len(s) for s in sets) == len(union), f"{context}: overlapping assignments {fmt(owned)}"
    assert union == frozenset(partitions), f"{context}: {fmt(owned)} do not cover {sorted(partitions)}"


def fmt(owned):
    return {name: sorted(s) for name, s in owned.items()}


def stop_all(workers):
    for w in workers:
        w.stop()


# ---------------------------------------------------------------- committed offsets through the clients


def confluent_group_consumer(bootstrap, group, **extra):
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            **extra,
        }
    )


def kafka_python_group_consumer(bootstrap, group, **extra):
    return kafka.KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **extra,
    )


def committed(client_name, bootstrap, group, topic, partitions):
    """-> {partition: (offset, metadata)} for the partitions with a committed offset,
    asked with a consumer of `client_name` that does not join the group."""
    if client_name == "confluent-kafka":
        consumer = confluent_group_consumer(bootstrap, group)
        try:
            found = consumer.committed([confluent_kafka.TopicPartition(topic, p) for p in partitions], timeout=30)
        finally:
            consumer.close()
        for tp in found:
            assert tp.error is None, f"committed() partition {tp.partition}: {tp.error}"
        return {tp.partition: (tp.offset, tp.metadata or "") for tp in found if tp.offset >= 0}
    consumer = kafka_python_group_consumer(bootstrap, group)
    try:
        out = {}
        for p in partitions:
            got = consumer.committed(kafka.TopicPartition(topic, p), metadata=True, timeout_ms=30_000)
            if got is not None and got.offset >= 0:
                out[p] = (got.offset, got.metadata or "")
        return out
    finally:
        consumer.close(autocommit=False)


def commit_standalone(client_name, bootstrap, group, topic, offsets):
    """Commits {partition: (offset, metadata)} for a group nobody has joined
    (generation -1, no member id), as assign()-based consumers do."""
    if client_name == "confluent-kafka":
        consumer = confluent_group_consumer(bootstrap, group)
        try:
            result = consumer.commit(
                offsets=[confluent_kafka.TopicPartition(topic, p, o, metadata=m) for p, (o, m) in offsets.items()],
                asynchronous=False,
            )
        finally:
            consumer.close()
        failed = {tp.partition: str(tp.error) for tp in result if tp.error is not None}
        assert not failed, f"standalone commit failed: {failed}"
        return
    consumer = kafka_python_group_consumer(bootstrap, group)
    try:
        consumer.assign([kafka.TopicPartition(topic, p) for p in offsets])
        consumer.commit(
            {kafka.TopicPartition(topic, p): kafka.structs.OffsetAndMetadata(o, m, -1) for p, (o, m) in offsets.items()}
        )
    finally:
        consumer.close(autocommit=False)


def commit_as_member(client_name, bootstrap, group, topic, partitions, offsets, timeout=60):
    """Joins `group` (subscribe), waits until this only member owns all of
    `partitions`, commits {partition: (offset, metadata)} with its generation and
    member id, and closes."""
    deadline = time.monotonic() + timeout
    if client_name == "confluent-kafka":
        consumer = confluent_group_consumer(bootstrap, group, **{"session.timeout.ms": 6000})
        try:
            consumer.subscribe([topic])
            while {tp.partition for tp in consumer.assignment()} != set(partitions):
                assert time.monotonic() < deadline, f"never assigned {sorted(partitions)}: {consumer.assignment()}"
                consumer.poll(0.2)  # messages, if any, are ignored: only the commit matters
            result = consumer.commit(
                offsets=[confluent_kafka.TopicPartition(topic, p, o, metadata=m) for p, (o, m) in offsets.items()],
                asynchronous=False,
            )
            failed = {tp.partition: str(tp.error) for tp in result if tp.error is not None}
            assert not failed, f"member commit failed: {failed}"
        finally:
            consumer.close()
        return
    consumer = kafka_python_group_consumer(bootstrap, group, session_timeout_ms=6000)
    try:
        consumer.subscribe([topic])
        while {tp.partition for tp in consumer.assignment()} != set(partitions):
            assert time.monotonic() < deadline, f"never assigned {sorted(partitions)}: {consumer.assignment()}"
            consumer.poll(timeout_ms=200)
        consumer.commit(
            {kafka.TopicPartition(topic, p): kafka.structs.OffsetAndMetadata(o, m, -1) for p, (o, m) in offsets.items()}
        )
    finally:
        consumer.close(autocommit=False)


# ---------------------------------------------------------------- raw wire


class GroupConnection(kafka_wire.Connection):
    """A raw connection speaking group APIs through kafka-python's encoders
    (all versions used here have non-flexible headers)."""

    def call(self, request):
        body = self.request(request.API_KEY, request.API_VERSION, request.encode())
        return request.RESPONSE_TYPE.decode(body)

    def send_only(self, request):
        """Sends without waiting; -> a function reading that response (the
        caller must read responses in the order it sent requests)."""
        correlation_id = self.next_correlation_id
        self.next_correlation_id += 1
        self.send(
            kafka_wire.frame(
                kafka_wire.request_header(request.API_KEY, request.API_VERSION, correlation_id) + request.encode()
            )
        )

        def receive():
            response = self.read_frame()
            got = int.from_bytes(response[:4], "big", signed=True)
            assert got == correlation_id, f"correlation id {got}, expected {correlation_id}"
            return request.RESPONSE_TYPE.decode(response[4:])

        return receive


def consumer_metadata(topics):
    return kp_group.ProtocolMetadata.encode([0, list(topics), b""])  # the class method: no temporary


def member_assignment(topic, partitions):
    return kp_group.MemberAssignment.encode([0, [(topic, list(partitions))], b""])


def decode_assignment(data):
    decoded = kp_group.MemberAssignment.decode(data)
    return {topic: sorted(parts) for topic, parts in decoded.assignment}


def find_coordinator(conn, group):
    return conn.call(kp_find.FindCoordinatorRequest_v1(group, 0))


def join_group(
    conn,
    group,
    member_id="",
    session_timeout_ms=30_000,
    rebalance_timeout_ms=30_000,
    protocol_type="consumer",
    protocols=(("range", None),),
    topics=("t",),
    instance_id=None,
):
    """JoinGroup v5 -> response (fields error_code, generation_id, group_protocol,
    leader_id, member_id, members)."""
    return conn.call(
        kp_group.JoinGroupRequest_v5(
            group,
            session_timeout_ms,
            rebalance_timeout_ms,
            member_id,
            instance_id,
            protocol_type,
            [(name, meta if meta is not None else consumer_metadata(topics)) for name, meta in protocols],
        )
    )


def join_group_request(group, member_id, protocol_type="consumer", protocol="range", topics=("t",), timeout_ms=30_000):
    return kp_group.JoinGroupRequest_v5(
        group, timeout_ms, timeout_ms, member_id, None, protocol_type, [(protocol, consumer_metadata(topics))]
    )


def join_dynamic(conn, group, **kwargs):
    """JoinGroup as a new dynamic member, answering MEMBER_ID_REQUIRED (KIP-394)
    the way clients do by joining again with the given id."""
    response = join_group(conn, group, **kwargs)
    if response.error_code == ERROR_MEMBER_ID_REQUIRED:
        assert response.member_id, f"MEMBER_ID_REQUIRED without a member id: {response}"
        response = join_group(conn, group, member_id=response.member_id, **kwargs)
    return response


def sync_group(conn, group, generation, member_id, assignments=()):
    """SyncGroup v3; assignments: [(member_id, bytes)] (the leader's)."""
    return conn.call(kp_group.SyncGroupRequest_v3(group, generation, member_id, None, list(assignments)))


def heartbeat(conn, group, generation, member_id, instance_id=None):
    return conn.call(kp_group.HeartbeatRequest_v3(group, generation, member_id, instance_id)).error_code


def leave_group(conn, group, member_id):
    """LeaveGroup v3 -> (top-level error, {member_id: error})"""
    response = conn.call(kp_group.LeaveGroupRequest_v3(group, [(member_id, None)]))
    return response.error_code, {m: e for m, _instance, e in response.members}


def offset_commit(conn, group, generation, member_id, topic, offsets):
    """OffsetCommit v7; offsets {partition: (offset, metadata)} -> {partition: error}"""
    response = conn.call(
        kp_commit.OffsetCommitRequest_v7(
            group, generation, member_id, None, [(topic, [(p, o, -1, m) for p, (o, m) in sorted(offsets.items())])]
        )
    )
    return {p: e for _t, parts in response.topics for p, e in parts}


def offset_fetch(conn, group, topic, partitions):
    """OffsetFetch v5 -> (top-level error, {partition: (offset, metadata, error)})"""
    response = conn.call(kp_commit.OffsetFetchRequest_v5(group, [(topic, list(partitions))]))
    found = {p: (o, m, e) for _t, parts in response.topics for p, o, _epoch, m, e in parts}
    return response.error_code, found


def describe_group(conn, group):
    """DescribeGroups v1 -> (error, state, protocol_type, protocol, [(member_id, client_id, assignment bytes)])"""
    response = conn.call(kp_admin.DescribeGroupsRequest_v1([group]))
    (g,) = response.groups
    error, _gid, state, protocol_type, protocol, members = g
    return error, state, protocol_type, protocol, [(m[0], m[1], m[4]) for m in members]


def list_groups(conn):
    """ListGroups v1 -> (error, {group: protocol_type})"""
    response = conn.call(kp_admin.ListGroupsRequest_v1())
    return response.error_code, dict(response.groups)


def supported_versions(conn):
    error, versions = conn.api_versions_v0()
    assert error == 0, f"ApiVersions error {error}"
    return versions


# ---------------------------------------------------------------- admin CLI


def odradek_bin():
    from conftest import ODRADEK_BIN

    return ODRADEK_BIN


def group_cli_available():
    try:
        result = subprocess.run(
            [str(odradek_bin()), "group", "--help"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return False
    return result.returncode == 0


def run_group_cli(*args, timeout=60):
    """-> CompletedProcess of `odradek group ARGS` (text)."""
    return subprocess.run(
        [str(odradek_bin()), "group", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
    )


# ---------------------------------------------------------------- admin clients

_CONFLUENT_STATES = {
    "STABLE": "Stable",
    "EMPTY": "Empty",
    "PREPARING_REBALANCING": "PreparingRebalance",
    "COMPLETING_REBALANCING": "CompletingRebalance",
    "DEAD": "Dead",
    "UNKNOWN": "Unknown",
}


def _confluent_admin(bootstrap):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})


def _kafka_python_admin(bootstrap):
    return kafka.admin.KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)


def admin_list_groups(client_name, bootstrap):
    """-> {group: what the listing says}: the state ("Stable", "Empty", ...) for
    confluent-kafka, the protocol type for kafka-python (whose ListGroups has no state)."""
    if client_name == "confluent-kafka":
        admin = _confluent_admin(bootstrap)  # must outlive the future
        result = admin.list_consumer_groups(request_timeout=30).result(timeout=60)
        assert not result.errors, f"list_consumer_groups errors: {result.errors}"
        return {g.group_id: _CONFLUENT_STATES.get(g.state.name, g.state.name) for g in result.valid}
    admin = _kafka_python_admin(bootstrap)
    try:
        return {group: protocol_type for group, protocol_type in admin.list_consumer_groups()}
    finally:
        admin.close()


def admin_describe_group(client_name, bootstrap, group):
    """-> {"state", "protocol", "protocol_type" (kafka-python only), "members":
    [{"member_id", "client_id", "instance_id", "partitions": {topic: set}}]}"""
    if client_name == "confluent-kafka":
        admin = _confluent_admin(bootstrap)
        d = admin.describe_consumer_groups([group], request_timeout=30)[group].result(timeout=60)
        members = []
        for m in d.members:
            partitions = {}
            for tp in m.assignment.topic_partitions:
                partitions.setdefault(tp.topic, set()).add(tp.partition)
            members.append(
                {"member_id": m.member_id, "client_id": m.client_id, "instance_id": m.group_instance_id,
                 "partitions": partitions}
            )
        return {
            "state": _CONFLUENT_STATES.get(d.state.name, d.state.name),
            "protocol": d.partition_assignor,
            "members": members,
        }
    admin = _kafka_python_admin(bootstrap)
    try:
        (d,) = admin.describe_consumer_groups([group])
    finally:
        admin.close()
    members = []
    for m in d.members:
        partitions = {}
        if m.member_assignment:
            for topic, parts in m.member_assignment.assignment:
                partitions.setdefault(topic, set()).update(parts)
        members.append({"member_id": m.member_id, "client_id": m.client_id, "instance_id": None,
                        "partitions": partitions})
    return {"state": d.state, "protocol": d.protocol, "protocol_type": d.protocol_type, "members": members}


def admin_delete_group(client_name, bootstrap, group):
    """DeleteGroups -> the error code (0 on success)."""
    if client_name == "confluent-kafka":
        admin = _confluent_admin(bootstrap)  # must outlive the future
        future = admin.delete_consumer_groups([group], request_timeout=30)[group]
        try:
            future.result(timeout=60)
            return 0
        except confluent_kafka.KafkaException as e:
            return e.args[0].code()
    admin = _kafka_python_admin(bootstrap)
    try:
        ((gid, error),) = admin.delete_consumer_groups([group])
    finally:
        admin.close()
    assert gid == group
    return error.errno
