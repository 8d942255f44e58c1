"""Consumer groups (Kafka's classic protocol) with real clients: membership changes,
commit-on-revoke without loss or duplicates, durable committed offsets,
cooperative-sticky, static membership, error codes on the wire, admin listing
and the `odradek group` CLI.

Members run as separate processes (group_worker.py) so that one can be killed
with SIGKILL; they report assignments and progress on stdout and write what they
processed to files that the test merges."""

import select
import threading
import time

import pytest

import group_helpers as gh
import kafka_wire
from kafka_clients import CLIENTS, ConfluentClient
from log_checks import make_message

PARTITIONS = 12
ALL = frozenset(range(PARTITIONS))
SESSION_MS = 6_000  # the smallest the broker accepts (group.min.session.timeout.ms)
CLIENT_IDS = {"ids": lambda c: c.name}


def produce_keyed(client, topic, first, count, tag, base_timestamp):
    """Produces messages first..first+count-1 (acks=all) -> {(partition, offset): key}"""
    messages = [make_message(i, base_timestamp + i, tag) for i in range(first, first + count)]
    return {ack: m.key.decode() for m, ack in zip(messages, client.produce(topic, messages), strict=True)}


def end_offsets(acked):
    ends = {p: 0 for p in range(PARTITIONS)}
    for p, o in acked:
        ends[p] = max(ends[p], o + 1)
    return ends


def merged_positions(workers):
    merged = {}
    for w in workers:
        for p, o in w.reached().items():
            merged[p] = max(merged.get(p, 0), o)
    return merged


def wait_processed_to(workers, ends, timeout):
    """Until, per partition, some member has processed up to its end offset."""
    deadline = time.monotonic() + timeout
    while True:
        merged = merged_positions(workers)
        behind = {p: f"{merged.get(p, 0)}/{end}" for p, end in ends.items() if merged.get(p, 0) < end}
        if not behind:
            return
        if time.monotonic() > deadline:
            details = "; ".join(f"{w.name}: {w.describe(6)}" for w in workers)
            raise AssertionError(f"not all processed after {timeout}s, behind: {behind}; {details}")
        time.sleep(0.1)


def wait_more_processed(workers, at_least, timeout=60):
    """Until the members together processed at_least more messages than now."""
    start = sum(w.processed() for w in workers)
    deadline = time.monotonic() + timeout
    while sum(w.processed() for w in workers) < start + at_least:
        assert time.monotonic() < deadline, f"processing stalled: {[(w.name, w.describe(6)) for w in workers]}"
        time.sleep(0.05)


def assert_processed_exactly_once(workers, acked):
    """Every acknowledged message was processed by exactly one member, once."""
    processed = [(w.name, p, o, key) for w in workers for p, o, key in w.records()]
    by_position = {}
    for name, p, o, key in processed:
        by_position.setdefault((p, o), []).append((name, key))
    duplicated = {pos: who for pos, who in by_position.items() if len(who) > 1}
    missing = sorted(set(acked) - set(by_position))
    unknown = sorted(set(by_position) - set(acked))
    wrong = [(pos, who, acked[pos]) for pos, who in by_position.items() if pos in acked and who[0][1] != acked[pos]]
    assert not duplicated, (
        f"{len(duplicated)} messages processed more than once, e.g. "
        f"{sorted(duplicated.items())[:5]} (partition, offset): [(member, key)]"
    )
    assert not missing, f"{len(missing)} acknowledged messages never processed, e.g. {missing[:10]}"
    assert not unknown, f"{len(unknown)} processed positions were never acknowledged, e.g. {unknown[:10]}"
    assert not wrong, f"{len(wrong)} positions held another message than acknowledged, e.g. {wrong[:3]}"
    assert len(processed) == len(acked)


def assert_no_member_errors(workers, allow_lost=()):
    for w in workers:
        errors = w.errors()
        assert not errors, f"{w.name} reported errors: {errors[:5]}"
        if w.name not in allow_lost:
            lost = w.of("lost")
            assert not lost, f"{w.name} lost its partitions (the broker dropped a live member?): {lost}"


# ---------------------------------------------------------------- 1 + 2: membership changes, no loss, no duplicates

TOTAL = 50_000
CHUNKS = 5
CHUNK = TOTAL // CHUNKS
RATE = 700  # messages/s per member, so each chunk is still being consumed when membership changes


@pytest.mark.timeout(300)
@pytest.mark.parametrize("client_class", CLIENTS, **CLIENT_IDS)
def test_membership_changes_process_every_message_once(broker_factory, tmp_path, client_class):
    """Three members split 12 partitions; a fourth joins; one is SIGKILLed (its
    partitions move only once the broker expires it after session.timeout.ms); one
    leaves cleanly (its partitions move at once). 50,000 messages, produced in
    chunks while this goes on, are each processed exactly once.

    Exactly-once holds because every member commits, synchronously, exactly what it
    has processed whenever partitions are revoked from it and before it closes, so
    a partition's next owner starts right after the last processed message. The one
    exception Kafka's protocol leaves is a member that dies between processing and
    committing: its successor re-processes those messages, legitimately. So before
    the SIGKILL the victim is quiesced: it stops processing, commits everything it
    processed and reports back; it keeps its membership (the client heartbeats from
    its own thread) until the kill, and messages it had fetched but not processed are
    neither processed nor committed, so its successor must start exactly there."""
    broker = gh.start_group_broker(broker_factory)
    client = client_class(broker.bootstrap)
    topic, group = "members", f"members-{client.name}"
    client.create_topic(topic, PARTITIONS)
    base_timestamp = int(time.time() * 1000) - 3_600_000
    acked = {}
    chunks_done = 0

    def produce_chunk():
        nonlocal chunks_done
        acked.update(produce_keyed(client, topic, chunks_done * CHUNK, CHUNK, "grp", base_timestamp))
        chunks_done += 1

    workers = []

    def start(name):
        w = gh.Worker(tmp_path, name, client.name, broker.bootstrap, group, topic, session_timeout_ms=SESSION_MS, rate=RATE)
        workers.append(w)
        return w

    try:
        # Three members.
        produce_chunk()
        w1, w2, w3 = start("w1"), start("w2"), start("w3")
        owned, _ = gh.wait_for_assignment([w1, w2, w3], ALL, timeout=60)
        gh.assert_partitioned(owned, ALL, "three members")

        # A fourth joins: four disjoint sets covering all partitions.
        produce_chunk()
        wait_more_processed([w1, w2, w3], 500)
        w4 = start("w4")
        owned, _ = gh.wait_for_assignment([w1, w2, w3, w4], ALL, timeout=60)
        gh.assert_partitioned(owned, ALL, "after a fourth member joined")
        assert len(owned) == 4

        # kill -9: the victim's partitions move after the session timeout, not before.
        produce_chunk()
        wait_more_processed([w1, w2, w3, w4], 500)
        survivors = [w1, w3, w4]
        victim_partitions = owned["w2"]
        w2.quiesce()
        marks = {w.name: w.mark() for w in survivors}
        killed_at = time.monotonic()
        w2.kill9()
        owned, settled_at = gh.wait_for_assignment(survivors, ALL, timeout=SESSION_MS / 1000 + 30)
        gh.assert_partitioned(owned, ALL, "after a member was killed")
        noticed = min(
            e["t"] for w in survivors for e in w.snapshot()[marks[w.name]:] if e["e"] in ("revoked", "assigned")
        )
        assert noticed - killed_at >= 3.0, (
            f"the survivors were rebalanced {noticed - killed_at:.1f}s after the kill, before the "
            f"{SESSION_MS / 1000:.0f}s session timeout (heartbeats every 1s) could have expired the victim"
        )
        print(f"kill -9: rebalance noticed after {noticed - killed_at:.1f}s, settled after {settled_at - killed_at:.1f}s")
        assert settled_at - killed_at <= SESSION_MS / 1000 + 20, (
            f"the killed member's partitions {sorted(victim_partitions)} took {settled_at - killed_at:.1f}s to move"
        )

        # A clean leave: reassignment right away, well before a session timeout.
        produce_chunk()
        wait_more_processed(survivors, 500)
        leaving_at = time.monotonic()
        w3.close()
        owned, settled_at = gh.wait_for_assignment([w1, w4], ALL, timeout=60)
        gh.assert_partitioned(owned, ALL, "after a member left")
        print(f"clean leave: partitions moved after {settled_at - leaving_at:.1f}s")
        assert settled_at - leaving_at < SESSION_MS / 1000, (
            f"after a clean leave the partitions took {settled_at - leaving_at:.1f}s to move; "
            f"LeaveGroup should rebalance at once, not after the {SESSION_MS / 1000:.0f}s session timeout"
        )

        # The rest, then everyone closes (committing first).
        produce_chunk()
        assert len(acked) == TOTAL
        ends = end_offsets(acked)
        wait_processed_to(workers, ends, timeout=180)
        for w in (w1, w4):
            w.close()
    finally:
        gh.stop_all(workers)

    assert_processed_exactly_once(workers, acked)
    assert_no_member_errors(workers)
    for w in workers:
        assert w.processed() > 0, f"{w.name} never processed anything: {w.describe()}"
    committed = gh.committed(client.name, broker.bootstrap, group, topic, range(PARTITIONS))
    assert {p: o for p, (o, _m) in committed.items()} == ends, "committed offsets after everyone closed"


# ---------------------------------------------------------------- 3: committed offsets are durable


def _offsets(ends, fraction, tag):
    """{partition: (offset, metadata)} for partitions 0..10 (11 is never committed)."""
    out = {}
    for p in range(PARTITIONS - 1):
        metadata = {0: "", 1: f"{tag}-ünïcødé-✓", 2: f"{tag}-" + "x" * 1000}.get(p, f"{tag}-p{p}")
        out[p] = (ends[p] * fraction // 10 + p % 3, metadata)
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("client_class", CLIENTS, **CLIENT_IDS)
def test_committed_offsets_and_metadata_survive_restarts(broker_factory, client_class):
    broker = gh.start_group_broker(broker_factory)
    client = client_class(broker.bootstrap)
    topic = "durable-offsets"
    client.create_topic(topic, PARTITIONS)
    acked = produce_keyed(client, topic, 0, 6_000, "dur", int(time.time() * 1000))
    ends = end_offsets(acked)
    member_group, standalone_group = f"durable-member-{client.name}", f"durable-standalone-{client.name}"

    def check(expected, when):
        for group, want in expected.items():
            got = gh.committed(client.name, broker.bootstrap, group, topic, range(PARTITIONS))
            assert got == want, f"{when}: group {group} committed {got}, expected {want}"

    def restart(kill):
        if kill:
            broker.kill9()
        broker.restart()
        kafka_wire.wait_until_serving(broker.host, broker.port)

    first_member, first_standalone = _offsets(ends, 3, "m1"), _offsets(ends, 4, "s1")
    gh.commit_as_member(client.name, broker.bootstrap, member_group, topic, ALL, first_member)
    gh.commit_standalone(client.name, broker.bootstrap, standalone_group, topic, first_standalone)
    expected = {member_group: first_member, standalone_group: first_standalone}
    check(expected, "before any restart")

    restart(kill=False)
    check(expected, "after a clean restart")

    # Overwrite half the partitions; the last commit must win after replay.
    second_member = {p: v for p, v in _offsets(ends, 8, "m2").items() if p % 2 == 0}
    second_standalone = {p: v for p, v in _offsets(ends, 1, "s2").items() if p % 2 == 1}
    gh.commit_as_member(client.name, broker.bootstrap, member_group, topic, ALL, second_member)
    gh.commit_standalone(client.name, broker.bootstrap, standalone_group, topic, second_standalone)
    expected = {member_group: {**first_member, **second_member}, standalone_group: {**first_standalone, **second_standalone}}
    restart(kill=True)
    check(expected, "after kill -9 right after the second commits")
    restart(kill=True)
    check(expected, "after a second kill -9 with no commits in between")

    listed = gh.admin_list_groups(client.name, broker.bootstrap)
    assert member_group in listed and standalone_group in listed, (
        f"groups with committed offsets are missing from ListGroups after restarts: {listed}"
    )


@pytest.mark.timeout(120)
def test_acknowledged_commit_survives_kill9_mid_stream(broker_factory):
    """Commits stream in one after another; the broker is killed mid-stream. The
    offset committed afterwards is the last acknowledged one or (if its answer was
    lost in the crash) the one in flight, never an older one."""
    broker = gh.start_group_broker(broker_factory)
    topic, group = "commit-stream", "commit-stream"
    ConfluentClient(broker.bootstrap).create_topic(topic, 1)
    state = {"acked": -1, "sent": -1, "error": None}

    def commit_forever():
        try:
            conn = gh.GroupConnection(broker.host, broker.port, timeout=10)
            n = 0
            while True:
                state["sent"] = n
                errors = gh.offset_commit(conn, group, -1, "", topic, {0: (n, f"n={n}")})
                if errors != {0: 0}:
                    state["error"] = errors
                    return
                state["acked"] = n
                n += 1
        except (OSError, ConnectionError, AssertionError, ValueError, EOFError) as e:
            state["end"] = repr(e)  # the broker went away

    thread = threading.Thread(target=commit_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while state["acked"] < 200 and state["error"] is None:
        assert time.monotonic() < deadline, f"commits too slow: {state}"
        time.sleep(0.01)
    broker.kill9()
    thread.join(15)
    assert state["error"] is None, f"a standalone commit failed: {state}"
    assert state["acked"] >= 200
    broker.restart()
    kafka_wire.wait_until_serving(broker.host, broker.port)
    conn = gh.GroupConnection(broker.host, broker.port, timeout=30)
    error, found = _offset_fetch_when_loaded(conn, group, topic)
    assert error == 0, f"OffsetFetch error {error}"
    offset, metadata, perr = found[0]
    assert perr == 0
    assert state["acked"] <= offset <= state["sent"], (
        f"after kill -9 the committed offset is {offset}, but {state['acked']} had been acknowledged "
        f"(and {state['sent']} was the last sent)"
    )
    assert metadata == f"n={offset}"


def _offset_fetch_when_loaded(conn, group, topic, timeout=30):
    """OffsetFetch, retrying COORDINATOR_LOAD_IN_PROGRESS (14) as clients do."""
    deadline = time.monotonic() + timeout
    while True:
        error, found = gh.offset_fetch(conn, group, topic, [0])
        if error != 14 and found.get(0, (0, "", 0))[2] != 14:
            return error, found
        assert time.monotonic() < deadline, "coordinator still loading"
        time.sleep(0.1)


# ---------------------------------------------------------------- 4: cooperative-sticky (librdkafka only)


def _moves(worker, mark):
    events = worker.snapshot()[mark:]
    revoked = set().union(*[set(e["partitions"]) for e in events if e["e"] == "revoked"])
    assigned = set().union(*[set(e["partitions"]) for e in events if e["e"] == "assigned"])
    emptied = any(e["e"] in ("revoked", "lost") and not e["current"] for e in events)
    return revoked, assigned, emptied


@pytest.mark.timeout(300)
def test_cooperative_sticky_rebalances_incrementally(broker_factory, tmp_path):
    """kafka-python has no cooperative assignor; librdkafka's cooperative-sticky."""
    broker = gh.start_group_broker(broker_factory)
    client = ConfluentClient(broker.bootstrap)
    topic, group = "cooperative", "cooperative"
    client.create_topic(topic, PARTITIONS)
    acked = produce_keyed(client, topic, 0, 12_000, "coop", int(time.time() * 1000))
    workers = []

    def start(name):
        w = gh.Worker(
            tmp_path, name, client.name, broker.bootstrap, group, topic,
            strategy="cooperative-sticky", session_timeout_ms=SESSION_MS, rate=600,
        )
        workers.append(w)
        return w

    try:
        c1 = start("c1")
        owned, _ = gh.wait_for_assignment([c1], ALL, timeout=60)
        for newcomer_name, size in (("c2", 6), ("c3", 4)):
            before = owned
            marks = {w.name: w.mark() for w in workers}
            newcomer = start(newcomer_name)
            members = list(workers)
            owned, _ = gh.wait_for_assignment(members, ALL, timeout=60)
            gh.assert_partitioned(owned, ALL, f"after {newcomer_name} joined")
            assert sorted(len(s) for s in owned.values()) == [size] * len(members), f"unbalanced: {gh.fmt(owned)}"
            for w in members:
                if w is newcomer:
                    continue
                revoked, assigned, emptied = _moves(w, marks[w.name])
                assert not emptied, f"{w.name} had everything revoked: an eager rebalance, not an incremental one"
                assert not assigned, f"{w.name} was given {sorted(assigned)} when {newcomer_name} joined"
                assert owned[w.name] == before[w.name] - revoked, (
                    f"{w.name} owned {sorted(before[w.name])}, gave up {sorted(revoked)}, now owns {sorted(owned[w.name])}"
                )
                assert revoked <= owned[newcomer_name], f"{w.name} gave up {sorted(revoked)} not taken by {newcomer_name}"
            wait_more_processed(workers, 300)

        # A member closes: it must not hang; the others only gain partitions.
        c1, c2, c3 = workers
        before = owned
        marks = {w.name: w.mark() for w in (c1, c3)}
        took = c2.close(timeout=30)
        assert took < 15, f"closing a cooperative member took {took:.1f}s"
        owned, _ = gh.wait_for_assignment([c1, c3], ALL, timeout=30)
        gh.assert_partitioned(owned, ALL, "after c2 closed")
        for w in (c1, c3):
            revoked, _assigned, _emptied = _moves(w, marks[w.name])
            assert not revoked, f"{w.name} had {sorted(revoked)} revoked when c2 left"
            assert before[w.name] <= owned[w.name], f"{w.name} lost partitions when c2 left: {gh.fmt(owned)}"
        assert sorted(len(s) for s in owned.values()) == [6, 6], f"unbalanced: {gh.fmt(owned)}"

        wait_processed_to(workers, end_offsets(acked), timeout=120)
        for w in (c1, c3):
            took = w.close(timeout=30)
            assert took < 15, f"closing {w.name} took {took:.1f}s"
    finally:
        gh.stop_all(workers)
    assert_processed_exactly_once(workers, acked)
    assert_no_member_errors(workers)


# ---------------------------------------------------------------- 5: static membership


@pytest.mark.timeout(180)
@pytest.mark.parametrize("client_class", CLIENTS, **CLIENT_IDS)
def test_static_member_restart_gets_its_partitions_back(broker_factory, tmp_path, client_class):
    """A static member (group.instance.id) SIGKILLed and restarted within its session
    timeout takes its old place: same partitions, and the other member is not
    rebalanced. The restarted one is not the group leader (the first joiner is)."""
    session_ms = 20_000
    broker = gh.start_group_broker(broker_factory)
    client = client_class(broker.bootstrap)
    topic, group = "static", f"static-{client.name}"
    client.create_topic(topic, PARTITIONS)
    workers = []

    def start(name, instance_id):
        w = gh.Worker(
            tmp_path, name, client.name, broker.bootstrap, group, topic,
            session_timeout_ms=session_ms, heartbeat_interval_ms=1_000, instance_id=instance_id,
        )
        workers.append(w)
        return w

    try:
        leader = start("leader", "static-leader")
        gh.wait_for_assignment([leader], ALL, timeout=60)
        a = start("a", "static-a")
        owned, _ = gh.wait_for_assignment([leader, a], ALL, timeout=60)
        gh.assert_partitioned(owned, ALL, "two static members")
        mark = leader.mark()
        a.kill9()
        restarted_at = time.monotonic()
        again = start("a-again", "static-a")
        owned_after, settled_at = gh.wait_for_assignment([leader, again], ALL, timeout=session_ms / 1000 + 40)
        assert owned_after["a-again"] == owned["a"], (
            f"restarted static member got {sorted(owned_after['a-again'])}, it had {sorted(owned['a'])}"
        )
        assert settled_at - restarted_at < session_ms / 1000, (
            f"the restarted static member waited {settled_at - restarted_at:.1f}s, as long as its old "
            f"session ({session_ms / 1000:.0f}s) lasting: it was not recognised by its group.instance.id"
        )
        moved = [e for e in leader.snapshot()[mark:] if e["e"] in ("revoked", "assigned", "lost")]
        assert not moved, f"the other member was rebalanced when the static member came back: {moved}"
        assert_no_member_errors([leader, again])
    finally:
        gh.stop_all(workers)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("client_class", CLIENTS, **CLIENT_IDS)
def test_a_stable_group_survives_a_coordinator_restart_without_a_rebalance(broker_factory, tmp_path, client_class):
    """The coordinator stores a Stable generation's members with their assignments (as
    Kafka's GroupMetadata record does), so a broker killed and restarted within the session
    timeout resumes the generation: the members keep their partitions, nobody is revoked."""
    session_ms = 20_000
    broker = gh.start_group_broker(broker_factory)
    client = client_class(broker.bootstrap)
    topic, group = "resume", f"resume-{client.name}"
    client.create_topic(topic, PARTITIONS)
    workers = [
        gh.Worker(tmp_path, name, client.name, broker.bootstrap, group, topic,
                  session_timeout_ms=session_ms, heartbeat_interval_ms=500)
        for name in ("a", "b")
    ]
    try:
        owned, _ = gh.wait_for_assignment(workers, ALL, timeout=60)
        marks = {w.name: w.mark() for w in workers}
        broker.kill9()
        broker.start()
        # Several heartbeat intervals against the restarted coordinator.
        time.sleep(6)
        conn = gh.GroupConnection(broker.host, broker.port, timeout=30)
        error, state, _, _, members = gh.describe_group(conn, group)
        assert (error, state, len(members)) == (0, "Stable", 2), (error, state, members)
        for w in workers:
            moved = [e for e in w.snapshot()[marks[w.name]:] if e["e"] in ("revoked", "assigned", "lost")]
            assert not moved, f"{w.name} was rebalanced by the coordinator restart: {moved}"
        assert {w.name: w.current() for w in workers} == owned
    finally:
        gh.stop_all(workers)


# ---------------------------------------------------------------- 6: error codes on the wire


def _readable(sock, timeout):
    return bool(select.select([sock], [], [], timeout)[0])


@pytest.mark.timeout(120)
def test_group_error_codes_and_the_broker_keeps_serving(broker_factory):
    broker = gh.start_group_broker(broker_factory)
    topic, group = "wire", "wire-group"
    ConfluentClient(broker.bootstrap).create_topic(topic, 3)
    conn = gh.GroupConnection(broker.host, broker.port, timeout=40)

    def still_serving(context):
        error, _ = conn.api_versions_v0()
        assert error == 0, f"{context}: ApiVersions on the same connection answered {error}"
        fresh = kafka_wire.Connection(broker.host, broker.port)
        try:
            assert fresh.api_versions_v0()[0] == 0, f"{context}: a new connection is not served"
        finally:
            fresh.close()

    versions = gh.supported_versions(conn)
    needed = {10: 1, 11: 5, 14: 3, 12: 3, 13: 3, 8: 7, 9: 5, 15: 1, 16: 1}
    unsupported = {k: versions.get(k) for k, v in needed.items() if not (k in versions and versions[k][0] <= v <= versions[k][1])}
    assert not unsupported, f"ApiVersions lacks these group API versions (key: advertised range): {unsupported}"

    found = gh.find_coordinator(conn, group)
    assert (found.error_code, f"{found.host}:{found.port}") == (0, broker.bootstrap), f"FindCoordinator: {found}"

    for timeout_ms in (1_000, 5_999, 1_800_001):
        response = gh.join_group(conn, group, session_timeout_ms=timeout_ms, topics=(topic,))
        assert response.error_code == gh.ERROR_INVALID_SESSION_TIMEOUT, (
            f"JoinGroup with session timeout {timeout_ms}: error {response.error_code}, expected 26"
        )
        still_serving(f"after session timeout {timeout_ms}")

    # One member, Stable.
    metadata = gh.consumer_metadata([topic])
    joined = gh.join_dynamic(conn, group, topics=(topic,))
    assert joined.error_code == 0, f"JoinGroup: {joined}"
    m1, g1 = joined.member_id, joined.generation_id
    assert joined.leader_id == m1 and joined.group_protocol == "range", joined
    assert [(m, meta) for m, _inst, meta in joined.members] == [(m1, metadata)], f"leader's member list: {joined.members}"
    synced = gh.sync_group(conn, group, g1, m1, [(m1, gh.member_assignment(topic, [0, 1, 2]))])
    assert synced.error_code == 0 and gh.decode_assignment(synced.member_assignment) == {topic: [0, 1, 2]}, synced
    assert gh.heartbeat(conn, group, g1, m1) == 0

    assert gh.heartbeat(conn, group, g1, "no-such-member") == gh.ERROR_UNKNOWN_MEMBER_ID
    still_serving("after a heartbeat from an unknown member")
    for generation in (g1 - 1, g1 + 1):
        assert gh.heartbeat(conn, group, generation, m1) == gh.ERROR_ILLEGAL_GENERATION, f"generation {generation}"
    still_serving("after heartbeats with the wrong generation")

    for protocol_type, protocol in (("connect", "range"), ("consumer", "no-such-assignor")):
        response = gh.join_group(conn, group, protocol_type=protocol_type, protocols=((protocol, None),), topics=(topic,))
        assert response.error_code == gh.ERROR_INCONSISTENT_GROUP_PROTOCOL, (
            f"JoinGroup as {protocol_type}/{protocol} into a consumer/range group: {response.error_code}"
        )
        still_serving(f"after JoinGroup as {protocol_type}/{protocol}")
    assert gh.heartbeat(conn, group, g1, m1) == 0, "the member should be untouched by the refused joins"

    # Commits against a non-empty group.
    standalone = gh.offset_commit(conn, group, -1, "", topic, {0: (5, "standalone")})
    assert standalone[0] in (gh.ERROR_UNKNOWN_MEMBER_ID, gh.ERROR_ILLEGAL_GENERATION), (
        f"standalone commit into a group with members: {standalone}"
    )
    assert gh.offset_commit(conn, group, g1 + 1, m1, topic, {0: (5, "")}) == {0: gh.ERROR_ILLEGAL_GENERATION}
    assert gh.offset_commit(conn, group, g1, "no-such-member", topic, {0: (5, "")}) == {0: gh.ERROR_UNKNOWN_MEMBER_ID}
    assert gh.offset_commit(conn, group, g1, m1, topic, {0: (7, "by m1"), 1: (3, "")}) == {0: 0, 1: 0}
    error, fetched = gh.offset_fetch(conn, group, topic, [0, 1, 2])
    assert error == 0 and fetched[0] == (7, "by m1", 0) and fetched[1] == (3, "", 0), fetched
    assert fetched[2][0] == -1 and fetched[2][1] in ("", None) and fetched[2][2] == 0, f"never committed: {fetched[2]}"
    still_serving("after the commits")

    # A second member: the first is told to rejoin; the old generation becomes stale.
    conn2 = gh.GroupConnection(broker.host, broker.port, timeout=40)
    pending = conn2.send_only(gh.join_group_request(group, "", topics=(topic,)))
    if _readable(conn2.sock, 2):  # KIP-394: a new member first gets its id
        first = pending()
        assert first.error_code == gh.ERROR_MEMBER_ID_REQUIRED and first.member_id, first
        pending = conn2.send_only(gh.join_group_request(group, first.member_id, topics=(topic,)))
    deadline = time.monotonic() + 10
    while (code := gh.heartbeat(conn, group, g1, m1)) == 0:
        assert time.monotonic() < deadline, "the first member was never told to rejoin"
        time.sleep(0.1)
    assert code == gh.ERROR_REBALANCE_IN_PROGRESS, f"heartbeat during the rebalance: {code}"
    rejoined = gh.join_group(conn, group, member_id=m1, topics=(topic,))
    second = pending()
    assert rejoined.error_code == 0 and second.error_code == 0, (rejoined, second)
    m2, g2 = second.member_id, rejoined.generation_id
    assert second.generation_id == g2 > g1, (g1, rejoined, second)
    assert rejoined.leader_id == second.leader_id and rejoined.leader_id in (m1, m2)
    assert {m for m, _i, _meta in (rejoined if rejoined.leader_id == m1 else second).members} == {m1, m2}
    assert gh.heartbeat(conn, group, g1, m1) == gh.ERROR_ILLEGAL_GENERATION, "heartbeat with the stale generation"
    assert gh.offset_commit(conn, group, g1, m1, topic, {0: (9, "")}) == {0: gh.ERROR_ILLEGAL_GENERATION}

    leader_conn, follower_conn = (conn, conn2) if rejoined.leader_id == m1 else (conn2, conn)
    leader_id, follower_id = (m1, m2) if rejoined.leader_id == m1 else (m2, m1)
    follower_sync = follower_conn.send_only(gh.kp_group.SyncGroupRequest_v3(group, g2, follower_id, None, []))
    plan = {leader_id: [0, 1], follower_id: [2]}
    leader_sync = gh.sync_group(
        leader_conn, group, g2, leader_id, [(m, gh.member_assignment(topic, parts)) for m, parts in plan.items()]
    )
    follower_got = follower_sync()
    assert leader_sync.error_code == 0 and follower_got.error_code == 0, (leader_sync, follower_got)
    assert gh.decode_assignment(leader_sync.member_assignment) == {topic: plan[leader_id]}
    assert gh.decode_assignment(follower_got.member_assignment) == {topic: plan[follower_id]}
    assert gh.heartbeat(conn, group, g2, m1) == 0 and gh.heartbeat(conn2, group, g2, m2) == 0

    error, state, protocol_type, protocol, members = gh.describe_group(conn, group)
    assert (error, state, protocol_type, protocol) == (0, "Stable", "consumer", "range")
    assert {m for m, _c, _a in members} == {m1, m2}

    # Leaving: an unknown member is refused; the real ones leave, the group is Empty.
    top, per_member = gh.leave_group(conn, group, "no-such-member")
    assert per_member.get("no-such-member") == gh.ERROR_UNKNOWN_MEMBER_ID or top == gh.ERROR_UNKNOWN_MEMBER_ID, (
        top, per_member,
    )
    still_serving("after LeaveGroup for an unknown member")
    for conn_x, member in ((conn, m1), (conn2, m2)):
        top, per_member = gh.leave_group(conn_x, group, member)
        assert top == 0 and per_member.get(member, 0) == 0, (member, top, per_member)
    assert gh.heartbeat(conn, group, g2, m1) == gh.ERROR_UNKNOWN_MEMBER_ID, "heartbeat after leaving"
    error, state, _pt, _p, members = gh.describe_group(conn, group)
    assert (error, state, members) == (0, "Empty", []), (error, state, members)

    # Standalone commit into the now empty group works.
    assert gh.offset_commit(conn, group, -1, "", topic, {2: (11, "standalone")}) == {2: 0}
    assert gh.offset_fetch(conn, group, topic, [0, 2]) == (0, {0: (7, "by m1", 0), 2: (11, "standalone", 0)})
    error, groups = gh.list_groups(conn)
    assert error == 0 and groups.get(group) == "consumer", f"ListGroups: {groups}"
    still_serving("at the end")
    conn.close()
    conn2.close()


@pytest.mark.timeout(120)
def test_commit_accepted_while_a_rebalance_is_preparing(broker_factory):
    """Commit-on-revoke depends on this: once a rebalance starts (PreparingRebalance),
    members of the current generation still commit what they processed before
    rejoining. Kafka accepts those commits; only a member that already rejoined and
    waits for its assignment (CompletingRebalance) is told REBALANCE_IN_PROGRESS."""
    broker = gh.start_group_broker(broker_factory)
    topic, group = "wire-prepare", "wire-prepare"
    ConfluentClient(broker.bootstrap).create_topic(topic, 2)
    conn = gh.GroupConnection(broker.host, broker.port, timeout=40)
    joined = gh.join_dynamic(conn, group, topics=(topic,))
    m1, g1 = joined.member_id, joined.generation_id
    assert gh.sync_group(conn, group, g1, m1, [(m1, gh.member_assignment(topic, [0, 1]))]).error_code == 0

    conn2 = gh.GroupConnection(broker.host, broker.port, timeout=40)
    pending = conn2.send_only(gh.join_group_request(group, "", topics=(topic,)))
    if _readable(conn2.sock, 2):
        first = pending()
        assert first.error_code == gh.ERROR_MEMBER_ID_REQUIRED, first
        pending = conn2.send_only(gh.join_group_request(group, first.member_id, topics=(topic,)))
    deadline = time.monotonic() + 10
    while gh.heartbeat(conn, group, g1, m1) == 0:
        assert time.monotonic() < deadline, "the rebalance never started"
        time.sleep(0.1)
    # m1 has not rejoined yet: the group is PreparingRebalance, generation g1 is current.
    errors = gh.offset_commit(conn, group, g1, m1, topic, {0: (42, "on revoke"), 1: (43, "")})
    assert errors == {0: 0, 1: 0}, (
        f"OffsetCommit from member {m1} of the current generation {g1} while the group is "
        f"PreparingRebalance answered {errors}; Kafka accepts it (27 is for CompletingRebalance)"
    )
    rejoined = gh.join_group(conn, group, member_id=m1, topics=(topic,))
    assert rejoined.error_code == 0 and pending().error_code == 0
    assert gh.offset_fetch(conn, group, topic, [0, 1]) == (0, {0: (42, "on revoke", 0), 1: (43, "", 0)})


@pytest.mark.timeout(60)
def test_describe_groups_fills_authorized_operations_when_asked(broker_factory):
    """DescribeGroups v3+ with include_authorized_operations: Kafka (no authorizer)
    answers the group's operations (READ, DELETE, DESCRIBE = bits 3, 6, 8); the
    "not provided" value -2^31 is for requests that did not ask. kafka-python's
    admin describe_consumer_groups asks, and fails on -2^31 (bit 31 is no operation)."""
    broker = gh.start_group_broker(broker_factory)
    ConfluentClient(broker.bootstrap).create_topic("wire-ops", 1)
    conn = gh.GroupConnection(broker.host, broker.port, timeout=40)
    assert gh.offset_commit(conn, "wire-ops", -1, "", "wire-ops", {0: (1, "")}) == {0: 0}
    response = conn.call(gh.kp_admin.DescribeGroupsRequest_v3(["wire-ops"], True))
    (group,) = response.groups
    operations = group[-1]  # kafka-python decodes the bitfield into the set of bits
    assert group[0] == 0, f"DescribeGroups error {group[0]}"
    assert operations and max(operations) < 15, (
        f"authorized_operations bits {sorted(operations)} when asked for ({{31}} is -2^31, 'not provided'); "
        f"Kafka answers ACL operation bits (without an authorizer READ, DELETE, DESCRIBE = {{3, 6, 8}})"
    )


# ---------------------------------------------------------------- 7: admin clients


@pytest.mark.timeout(180)
@pytest.mark.parametrize("client_class", CLIENTS, **CLIENT_IDS)
def test_admin_lists_describes_and_deletes_groups(broker_factory, tmp_path, client_class):
    broker = gh.start_group_broker(broker_factory)
    client = client_class(broker.bootstrap)
    topic, group = "admin", f"admin-{client.name}"
    client.create_topic(topic, PARTITIONS)
    acked = produce_keyed(client, topic, 0, 1_200, "adm", int(time.time() * 1000))
    workers = [gh.Worker(tmp_path, name, client.name, broker.bootstrap, group, topic) for name in ("adm-1", "adm-2")]
    try:
        owned, _ = gh.wait_for_assignment(workers, ALL, timeout=60)
        described = gh.admin_describe_group(client.name, broker.bootstrap, group)
        assert described["state"] == "Stable" and described["protocol"] == "range", described
        assert described.get("protocol_type", "consumer") == "consumer", described
        by_client = {m["client_id"]: m["partitions"] for m in described["members"]}
        assert by_client == {w.name: {topic: set(owned[w.name])} for w in workers}, (
            f"described members {by_client}, the members themselves own {gh.fmt(owned)}"
        )
        listed = gh.admin_list_groups(client.name, broker.bootstrap)
        assert listed.get(group) == ("Stable" if client.name == "confluent-kafka" else "consumer"), listed
        assert gh.admin_delete_group(client.name, broker.bootstrap, group) == gh.ERROR_NON_EMPTY_GROUP

        wait_processed_to(workers, end_offsets(acked), timeout=60)
        for w in workers:
            w.close()
    finally:
        gh.stop_all(workers)

    assert_no_member_errors(workers)
    described = gh.admin_describe_group(client.name, broker.bootstrap, group)
    assert described["state"] == "Empty" and described["members"] == [], described
    listed = gh.admin_list_groups(client.name, broker.bootstrap)
    assert listed.get(group) == ("Empty" if client.name == "confluent-kafka" else "consumer"), listed
    assert gh.committed(client.name, broker.bootstrap, group, topic, range(PARTITIONS)) == {
        p: (end, "") for p, end in end_offsets(acked).items()
    }

    assert gh.admin_delete_group(client.name, broker.bootstrap, group) == 0
    assert group not in gh.admin_list_groups(client.name, broker.bootstrap)
    assert gh.committed(client.name, broker.bootstrap, group, topic, range(PARTITIONS)) == {}
    broker.kill9()
    broker.restart()
    kafka_wire.wait_until_serving(broker.host, broker.port)
    assert group not in gh.admin_list_groups(client.name, broker.bootstrap), "a deleted group came back after kill -9"
    assert gh.committed(client.name, broker.bootstrap, group, topic, range(PARTITIONS)) == {}, (
        "a deleted group's offsets came back after kill -9"
    )


# ---------------------------------------------------------------- 8: the `odradek group` CLI


def _tokens_lines(text):
    return [set(line.replace(",", " ").replace("|", " ").split()) for line in text.splitlines()]


@pytest.mark.timeout(180)
def test_group_cli_list_describe_reset(broker_factory, tmp_path):
    if not gh.group_cli_available():
        pytest.skip("`odradek group` is not in this binary yet")
    broker = gh.start_group_broker(broker_factory)
    client = ConfluentClient(broker.bootstrap)
    topic, group = "cli-topic", "cli-group"
    client.create_topic(topic, PARTITIONS)
    base_timestamp = int(time.time() * 1000) - 600_000
    messages = [make_message(i, base_timestamp + i * 10, "cli") for i in range(2_400)]
    acks = client.produce(topic, messages)
    ends = end_offsets({ack: None for ack in acks})
    half = {p: (end // 2, f"half-{p}") for p, end in ends.items()}
    gh.commit_standalone(client.name, broker.bootstrap, group, topic, half)
    server = ("--bootstrap-server", broker.bootstrap)

    def cli(*args):
        return gh.run_group_cli(*args, *server)

    def committed_now():
        return {p: o for p, (o, _m) in gh.committed(client.name, broker.bootstrap, group, topic, range(PARTITIONS)).items()}

    listed = cli("list")
    assert listed.returncode == 0, f"group list: {listed.stderr}"
    assert group in listed.stdout.split(), f"group list does not name {group}:\n{listed.stdout}"

    described = cli("describe", group)
    assert described.returncode == 0, f"group describe: {described.stderr}"
    assert group in described.stdout and topic in described.stdout, described.stdout
    lines = _tokens_lines(described.stdout)
    for p, end in ends.items():
        offset, lag = end // 2, end - end // 2
        assert any({str(p), str(offset), str(lag)} <= line for line in lines), (
            f"describe shows no line with partition {p}, committed offset {offset} and lag {lag}:\n{described.stdout}"
        )

    member = gh.Worker(tmp_path, "cli-member", client.name, broker.bootstrap, group, topic)
    try:
        gh.wait_for_assignment([member], ALL, timeout=60)
        described = cli("describe", group)
        assert described.returncode == 0, described.stderr
        assert "cli-member" in described.stdout, f"describe does not show the member:\n{described.stdout}"
        before = committed_now()
        refused = cli("reset-offsets", group, "--topic", topic, "--to-earliest")
        assert refused.returncode != 0, f"reset-offsets on a group with a member succeeded:\n{refused.stdout}"
        assert (refused.stderr + refused.stdout).strip(), "reset-offsets refused without saying why"
        assert committed_now() == before, "a refused reset-offsets changed the committed offsets"
        wait_processed_to([member], ends, timeout=60)
        member.close()
    finally:
        member.stop()
    assert committed_now() == ends

    def reset(*how):
        result = cli("reset-offsets", group, "--topic", topic, *how)
        assert result.returncode == 0, f"reset-offsets {how}: exit {result.returncode}: {result.stderr}{result.stdout}"
        return committed_now()

    assert reset("--to-earliest") == {p: 0 for p in range(PARTITIONS)}
    assert reset("--to-latest") == ends
    target = min(ends.values()) // 3
    assert reset("--to-offset", str(target)) == {p: target for p in range(PARTITIONS)}
    at = base_timestamp + 1_200 * 10 + 5  # between two messages' timestamps
    by_partition = {}
    for m, (p, o) in zip(messages, acks):
        if m.timestamp >= at:
            by_partition.setdefault(p, o)
    expected = {p: by_partition.get(p, ends[p]) for p in range(PARTITIONS)}
    assert reset("--to-datetime", str(at)) == expected


def test_offset_commit_for_a_partition_that_does_not_exist_is_refused(broker_factory):
    """Kafka answers UNKNOWN_TOPIC_OR_PARTITION per partition and stores nothing for it; the
    partitions that exist in the same commit are stored."""
    import confluent_kafka
    from confluent_kafka.admin import AdminClient, NewTopic

    broker = broker_factory("--no-auto-create-topics")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("real", 2, 1)])["real"].result(timeout=60)
    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "ghosts", "enable.auto.commit": False})
    try:
        offsets = [
            confluent_kafka.TopicPartition("real", 0, 5),
            confluent_kafka.TopicPartition("missing", 0, 7),
            confluent_kafka.TopicPartition("real", 9, 3),
        ]
        with pytest.raises(confluent_kafka.KafkaException) as refused:
            consumer.commit(offsets=offsets, asynchronous=False)
        assert refused.value.args[0].code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART
        committed = consumer.committed(
            [confluent_kafka.TopicPartition("real", 0), confluent_kafka.TopicPartition("missing", 0), confluent_kafka.TopicPartition("real", 9)],
            timeout=30)
        assert [(tp.topic, tp.partition, tp.offset) for tp in committed] == [
            ("real", 0, 5), ("missing", 0, confluent_kafka.OFFSET_INVALID), ("real", 9, confluent_kafka.OFFSET_INVALID)]
    finally:
        consumer.close()
