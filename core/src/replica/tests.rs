//! In-memory stepper tests: several [`Replica`]s, each with a simulated disk, joined by a
//! message queue, with virtual time. The harness is only a driver: it performs actions, models
//! crashes (the unsynced suffix is lost, or part of it survives) and plays the controller in
//! the simplest way. All replication logic is the `Replica` under test.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::Compression;

use super::*;
use crate::batch::tests::{encode_batch, encode_idempotent_batch};

const STEPS_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredBatch {
    base: i64,
    end: i64,
    epoch: i32,
    /// The batch's base timestamp, unique per produced batch: the test's record identity.
    id: i64,
    bytes: Bytes,
}

#[derive(Debug, Default)]
struct Disk {
    log_start: i64,
    batches: Vec<StoredBatch>,
    durable_end: i64,
    epoch_checkpoint: Option<Vec<u8>>,
    hw_checkpoint: i64,
}

impl Disk {
    fn end(&self) -> i64 {
        self.batches.last().map_or(self.log_start, |b| b.end)
    }

    fn read(&self, from: i64, to: i64) -> Bytes {
        let mut out = BytesMut::new();
        // From the batch holding `from`, as a segment read does: DeleteRecords may put the log
        // start inside a batch.
        for b in self
            .batches
            .iter()
            .filter(|b| b.end > from && b.end <= to)
        {
            out.extend_from_slice(&b.bytes);
        }
        out.freeze()
    }
}

struct Node {
    replica: Option<Replica>,
    disk: Disk,
    /// While set, `Sync` actions wait in `held_syncs` (data stays unsynced).
    hold_syncs: bool,
    held_syncs: Vec<Offset>,
}

#[derive(Debug, Clone)]
enum Payload {
    Fetch {
        fetch_id: u64,
        request: FetchRequest,
    },
    FetchResponse {
        fetch_id: u64,
        response: FetchResponse,
    },
    EpochQuery {
        request_id: u64,
        current: LeaderEpoch,
        epoch: LeaderEpoch,
    },
    EpochAnswer {
        request_id: u64,
        result: Result<EpochEndOffset, ErrorCode>,
    },
}

#[derive(Debug, Clone)]
struct Message {
    from: NodeId,
    to: NodeId,
    payload: Payload,
}

struct Parked {
    leader: NodeId,
    from: NodeId,
    fetch_id: u64,
    request: FetchRequest,
    deadline_ms: i64,
}

struct Controller {
    leader: NodeId,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    isr: Vec<NodeId>,
    replicas: Vec<NodeId>,
}

impl Controller {
    fn state(&self) -> LeaderAndIsr {
        LeaderAndIsr {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr: self.isr.clone(),
            replicas: self.replicas.clone(),
        }
    }
}

struct Cluster {
    now_ms: i64,
    config: ReplicaConfig,
    nodes: BTreeMap<NodeId, Node>,
    network: VecDeque<Message>,
    parked: Vec<Parked>,
    alter_requests: VecDeque<(NodeId, u64, AlterPartitionRequest)>,
    /// Committed AlterPartition answers held back (the controller applied them).
    held_alter_responses: Vec<(NodeId, u64, Result<LeaderAndIsr, ErrorCode>)>,
    hold_alter_responses: bool,
    controller: Controller,
    /// Nodes that cannot reach or be reached by the given other nodes.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes whose AlterPartition requests the controller does not receive.
    controller_cut: BTreeSet<NodeId>,
    replies: BTreeMap<RequestId, Result<ProduceAck, ErrorCode>>,
    /// DeleteRecords answers: request, low watermark, the start the disk recorded by then.
    records_deleted: Vec<(RequestId, Result<Offset, ErrorCode>, i64)>,
    produced: BTreeMap<RequestId, i64>,
    next_request: u64,
}

fn n(id: i32) -> NodeId {
    NodeId(id)
}

fn test_config(min_insync_replicas: usize) -> ReplicaConfig {
    ReplicaConfig {
        min_insync_replicas,
        replica_lag_time_max_ms: 10_000,
        replica_fetch_backoff_ms: 100,
        replica_fetch_response_timeout_ms: 5_000,
        high_watermark_checkpoint_interval_ms: 1_000,
        ..ReplicaConfig::default()
    }
}

impl Cluster {
    /// Replicas `1..=count`, node 1 leading epoch 0 with every replica in the ISR.
    fn new(count: i32, config: ReplicaConfig) -> Cluster {
        let replicas: Vec<NodeId> = (1..=count).map(n).collect();
        let mut cluster = Cluster::unsettled(config, replicas.clone(), replicas);
        cluster.settle();
        cluster
    }

    /// The cluster before any message moved, so a test can cut links first.
    fn unsettled(config: ReplicaConfig, replicas: Vec<NodeId>, isr: Vec<NodeId>) -> Cluster {
        let mut cluster = Cluster {
            now_ms: 0,
            config,
            nodes: BTreeMap::new(),
            network: VecDeque::new(),
            parked: Vec::new(),
            alter_requests: VecDeque::new(),
            held_alter_responses: Vec::new(),
            hold_alter_responses: false,
            controller: Controller {
                leader: replicas[0],
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
                isr,
                replicas: replicas.clone(),
            },
            cut: BTreeSet::new(),
            controller_cut: BTreeSet::new(),
            replies: BTreeMap::new(),
            records_deleted: Vec::new(),
            produced: BTreeMap::new(),
            next_request: 0,
        };
        for &id in &replicas {
            cluster.nodes.insert(
                id,
                Node {
                    replica: None,
                    disk: Disk::default(),
                    hold_syncs: false,
                    held_syncs: Vec::new(),
                },
            );
            cluster.start_replica(id);
            cluster.announce_to(id);
        }
        cluster
    }

    fn replica(&self, id: NodeId) -> &Replica {
        self.nodes[&id].replica.as_ref().expect("node is up")
    }

    fn replica_mut(&mut self, id: NodeId) -> &mut Replica {
        self.nodes
            .get_mut(&id)
            .unwrap()
            .replica
            .as_mut()
            .expect("node is up")
    }

    fn is_up(&self, id: NodeId) -> bool {
        self.nodes[&id].replica.is_some()
    }

    // ---- the driver: recovery and actions ----

    /// Builds the replica from the node's disk, as the io driver does after recovery.
    fn start_replica(&mut self, id: NodeId) {
        let config = self.config.clone();
        let node = self.nodes.get_mut(&id).unwrap();
        let disk = &mut node.disk;
        let mut cache = match &disk.epoch_checkpoint {
            Some(bytes) => EpochCache::decode(bytes).expect("checkpoint we wrote"),
            None => EpochCache::new(),
        };
        cache.truncate_from_end(Offset(disk.end()));
        // Rule 6: the recovered tail's epochs, from the checkpoint's latest entry on.
        let from = cache.latest().map_or(disk.log_start, |e| e.start_offset.0);
        for b in disk.batches.iter().filter(|b| b.base >= from) {
            cache.assign(LeaderEpoch(b.epoch), Offset(b.base));
        }
        disk.durable_end = disk.end(); // recovery fsyncs what it keeps
        let persisted = PersistedState {
            log_start_offset: Offset(disk.log_start),
            log_end_offset: Offset(disk.end()),
            durable_offset: Offset(disk.end()),
            epoch_cache: cache,
            high_watermark: Offset(disk.hw_checkpoint),
            producers: Default::default(),
        };
        node.replica = Some(Replica::new(id, config, persisted));
    }

    /// Tells `id` the controller's current decision.
    fn announce_to(&mut self, id: NodeId) {
        let now = self.now_ms;
        let c = &self.controller;
        let (leader, epoch, partition_epoch, state) =
            (c.leader, c.leader_epoch, c.partition_epoch, c.state());
        if !self.is_up(id) {
            return;
        }
        let result = if leader == id {
            self.replica_mut(id).become_leader(now, state)
        } else {
            self.replica_mut(id)
                .become_follower(now, leader, epoch, partition_epoch)
        };
        result.expect("controller decisions are fresh");
        self.perform(id);
    }

    fn perform(&mut self, id: NodeId) {
        loop {
            let now = self.now_ms;
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            let Some(replica) = node.replica.as_mut() else {
                return;
            };
            let Some(action) = replica.poll_action() else {
                return;
            };
            match action {
                Action::Append {
                    base_offset,
                    end_offset,
                    records,
                } => {
                    assert_eq!(
                        base_offset.0,
                        node.disk.end(),
                        "node {id}: append not at the log end"
                    );
                    let mut next = base_offset.0;
                    for part in &records {
                        for (position, header) in batch::scan_headers(part) {
                            assert_eq!(header.base_offset, next);
                            node.disk.batches.push(StoredBatch {
                                base: header.base_offset,
                                end: header.next_offset(),
                                epoch: header.partition_leader_epoch,
                                id: header.base_timestamp,
                                bytes: part.slice(position..position + header.total_len()),
                            });
                            next = header.next_offset();
                        }
                    }
                    assert_eq!(next, end_offset.0);
                    replica.handle_completion(now, Completion::Appended { end_offset });
                }
                Action::Sync { through } => {
                    if node.hold_syncs {
                        node.held_syncs.push(through);
                    } else {
                        let through = through.0.min(node.disk.end());
                        node.disk.durable_end = node.disk.durable_end.max(through);
                        replica.handle_completion(
                            now,
                            Completion::Synced {
                                through: Offset(through),
                            },
                        );
                    }
                }
                Action::Truncate { to } => {
                    assert!(
                        node.disk
                            .batches
                            .iter()
                            .all(|b| b.end <= to.0 || b.base >= to.0),
                        "mid-batch cut"
                    );
                    node.disk.batches.retain(|b| b.end <= to.0);
                    node.disk.durable_end = node.disk.durable_end.min(to.0);
                    replica.handle_completion(now, Completion::Truncated { to });
                }
                Action::ResetLog { start_offset } => {
                    node.disk.batches.clear();
                    node.disk.log_start = start_offset.0;
                    node.disk.durable_end = start_offset.0;
                    replica.handle_completion(now, Completion::Truncated { to: start_offset });
                }
                Action::PersistEpochCache { cache } => {
                    node.disk.epoch_checkpoint = Some(cache.encode())
                }
                Action::PersistHighWatermark { high_watermark } => {
                    node.disk.hw_checkpoint = high_watermark.0
                }
                Action::AdvanceLogStart { start_offset } => {
                    // Retention drops whole batches below the start, as segments would go.
                    node.disk.log_start = node.disk.log_start.max(start_offset.0);
                    node.disk.batches.retain(|b| b.end > start_offset.0);
                }
                Action::SendFetch {
                    to,
                    fetch_id,
                    request,
                } => self.network.push_back(Message {
                    from: id,
                    to,
                    payload: Payload::Fetch { fetch_id, request },
                }),
                Action::SendOffsetForLeaderEpoch {
                    to,
                    request_id,
                    current_leader_epoch,
                    leader_epoch,
                } => self.network.push_back(Message {
                    from: id,
                    to,
                    payload: Payload::EpochQuery {
                        request_id,
                        current: current_leader_epoch,
                        epoch: leader_epoch,
                    },
                }),
                Action::SendAlterPartition {
                    request_id,
                    request,
                } => self.alter_requests.push_back((id, request_id, request)),
                Action::ReplyProduce { request_id, result } => {
                    let previous = self.replies.insert(request_id, result);
                    assert!(previous.is_none(), "produce {request_id} answered twice");
                }
                Action::ReplyDeleteRecords { request_id, result } => {
                    self.records_deleted.push((request_id, result, node.disk.log_start));
                }
            }
        }
    }

    #[allow(dead_code)]
    fn release_syncs(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.hold_syncs = false;
        let held = std::mem::take(&mut node.held_syncs);
        for through in held {
            let now = self.now_ms;
            let node = self.nodes.get_mut(&id).unwrap();
            let through = through.0.min(node.disk.end());
            node.disk.durable_end = node.disk.durable_end.max(through);
            if let Some(r) = node.replica.as_mut() {
                r.handle_completion(
                    now,
                    Completion::Synced {
                        through: Offset(through),
                    },
                );
            }
        }
        self.perform(id);
    }

    // ---- network ----

    fn linked(&self, a: NodeId, b: NodeId) -> bool {
        !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id, other));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
        self.controller_cut.clear();
    }

    fn deliver(&mut self, message: Message) {
        let now = self.now_ms;
        let Message { from, to, payload } = message;
        if !self.linked(from, to) || !self.is_up(to) {
            return;
        }
        match payload {
            Payload::Fetch { fetch_id, request } => {
                let answer = self.replica_mut(to).handle_fetch(now, &request);
                self.perform(to);
                let empty = matches!(answer, FetchAnswer::Read { read_to, .. } if read_to == request.fetch_offset);
                if empty && request.max_wait_ms > 0 {
                    let deadline_ms = now + i64::from(request.max_wait_ms);
                    self.parked.push(Parked {
                        leader: to,
                        from,
                        fetch_id,
                        request,
                        deadline_ms,
                    });
                } else {
                    self.respond_fetch(to, from, fetch_id, &request, answer);
                }
            }
            Payload::FetchResponse { fetch_id, response } => {
                self.replica_mut(to)
                    .handle_fetch_response(now, fetch_id, response);
                self.perform(to);
            }
            Payload::EpochQuery {
                request_id,
                current,
                epoch,
            } => {
                let result = self
                    .replica(to)
                    .handle_offset_for_leader_epoch(current, epoch);
                self.network.push_back(Message {
                    from: to,
                    to: from,
                    payload: Payload::EpochAnswer { request_id, result },
                });
            }
            Payload::EpochAnswer { request_id, result } => {
                self.replica_mut(to)
                    .handle_offset_for_leader_epoch_response(now, request_id, result);
                self.perform(to);
            }
        }
    }

    fn respond_fetch(
        &mut self,
        leader: NodeId,
        to: NodeId,
        fetch_id: u64,
        request: &FetchRequest,
        answer: FetchAnswer,
    ) {
        let disk = &self.nodes[&leader].disk;
        let records = answer
            .read_to()
            .map_or_else(Bytes::new, |to| disk.read(request.fetch_offset.0, to.0));
        let response = answer.into_response(records, Offset(disk.log_start));
        self.network.push_back(Message {
            from: leader,
            to,
            payload: Payload::FetchResponse { fetch_id, response },
        });
    }

    /// Re-runs parked fetches (rule 8); answers those with data, an error, or a passed deadline.
    fn poll_parked(&mut self) -> bool {
        let mut progressed = false;
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            if !self.is_up(p.leader) || !self.linked(p.leader, p.from) {
                progressed = true;
                continue;
            }
            let now = self.now_ms;
            let answer = self.replica_mut(p.leader).handle_fetch(now, &p.request);
            self.perform(p.leader);
            let empty = matches!(answer, FetchAnswer::Read { read_to, .. } if read_to == p.request.fetch_offset);
            if empty && p.deadline_ms > now {
                self.parked.push(p);
            } else {
                self.respond_fetch(p.leader, p.from, p.fetch_id, &p.request, answer);
                progressed = true;
            }
        }
        progressed
    }

    // ---- controller ----

    fn handle_alter_requests(&mut self) -> bool {
        let mut progressed = false;
        let mut kept = VecDeque::new();
        while let Some((from, request_id, request)) = self.alter_requests.pop_front() {
            if self.controller_cut.contains(&from) {
                kept.push_back((from, request_id, request));
                continue;
            }
            progressed = true;
            let c = &mut self.controller;
            let result = if request.leader_epoch != c.leader_epoch || from != c.leader {
                Err(ErrorCode::FencedLeaderEpoch)
            } else if request.partition_epoch != c.partition_epoch {
                Err(ErrorCode::InvalidUpdateVersion)
            } else {
                c.isr = request.new_isr.clone();
                c.partition_epoch = PartitionEpoch(c.partition_epoch.0 + 1);
                Ok(c.state())
            };
            if self.hold_alter_responses && result.is_ok() {
                self.held_alter_responses.push((from, request_id, result));
            } else {
                self.answer_alter(from, request_id, result);
            }
        }
        self.alter_requests = kept;
        progressed
    }

    fn answer_alter(
        &mut self,
        to: NodeId,
        request_id: u64,
        result: Result<LeaderAndIsr, ErrorCode>,
    ) {
        if self.is_up(to) {
            let now = self.now_ms;
            self.replica_mut(to)
                .handle_alter_partition_response(now, request_id, result);
            self.perform(to);
        }
    }

    fn release_alter_responses(&mut self) {
        self.hold_alter_responses = false;
        for (to, request_id, result) in std::mem::take(&mut self.held_alter_responses) {
            self.answer_alter(to, request_id, result);
        }
    }

    /// Elects `leader` (it must be in the ISR: elections are clean), dropping down nodes from
    /// the ISR as KRaft fences them, and tells every live replica.
    fn elect(&mut self, leader: NodeId) {
        assert!(
            self.controller.isr.contains(&leader),
            "unclean election of {leader}"
        );
        let down: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|&id| !self.is_up(id))
            .collect();
        let c = &mut self.controller;
        c.leader = leader;
        c.leader_epoch = c.leader_epoch.next();
        c.partition_epoch = PartitionEpoch(c.partition_epoch.0 + 1);
        c.isr.retain(|r| !down.contains(r) || *r == leader);
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.announce_to(id);
        }
    }

    // ---- faults ----

    /// Power loss: the unsynced suffix is lost except its first `survivors` batches.
    fn crash(&mut self, id: NodeId, survivors: usize) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.replica = None;
        node.hold_syncs = false;
        node.held_syncs.clear();
        let durable = node.disk.durable_end;
        let keep = node
            .disk
            .batches
            .iter()
            .filter(|b| b.end <= durable)
            .count()
            + survivors;
        node.disk.batches.truncate(keep);
        self.network.retain(|m| m.from != id && m.to != id);
        self.parked.retain(|p| p.from != id && p.leader != id);
        self.alter_requests.retain(|(from, ..)| *from != id);
    }

    fn restart(&mut self, id: NodeId) {
        assert!(!self.is_up(id));
        self.start_replica(id);
    }

    // ---- clients ----

    fn produce_to(&mut self, id: NodeId, acks: i16) -> RequestId {
        self.next_request += 1;
        let request_id = self.next_request;
        let batch_id = 1_000 + request_id as i64;
        let records = Bytes::from(encode_batch(1, batch_id, Compression::None));
        self.produced.insert(request_id, batch_id);
        let now = self.now_ms;
        self.replica_mut(id)
            .handle_produce(now, request_id, records, acks, 30_000)
            .expect("valid records");
        self.perform(id);
        request_id
    }

    fn produce_bytes(&mut self, id: NodeId, records: Bytes, acks: i16) -> RequestId {
        self.next_request += 1;
        let request_id = self.next_request;
        let now = self.now_ms;
        self.replica_mut(id).handle_produce(now, request_id, records, acks, 30_000).expect("valid records");
        self.perform(id);
        request_id
    }

    fn produce(&mut self, acks: i16) -> RequestId {
        let leader = self.controller.leader;
        self.produce_to(leader, acks)
    }

    fn acked(&self, request_id: RequestId) -> Option<Offset> {
        match self.replies.get(&request_id) {
            Some(Ok(ack)) => Some(ack.base_offset),
            _ => None,
        }
    }

    // ---- stepping ----

    /// Delivers everything that can move without time passing.
    fn settle(&mut self) {
        for _ in 0..STEPS_MAX {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for &id in &ids {
                self.perform(id);
            }
            let mut progressed = self.handle_alter_requests();
            progressed |= self.poll_parked();
            while let Some(message) = self.network.pop_front() {
                progressed = true;
                self.deliver(message);
            }
            if !progressed {
                return;
            }
        }
        panic!("cluster did not settle");
    }

    /// Lets `ms` of virtual time pass, firing timers and long-poll deadlines on the way.
    fn advance(&mut self, ms: i64) {
        let target = self.now_ms + ms;
        for _ in 0..STEPS_MAX {
            self.settle();
            let timers = self
                .nodes
                .values()
                .filter_map(|node| node.replica.as_ref()?.poll_timeout());
            let deadlines = self.parked.iter().map(|p| p.deadline_ms);
            let next = timers.chain(deadlines).min();
            match next {
                Some(next) if next <= target => {
                    self.now_ms = self.now_ms.max(next);
                    let now = self.now_ms;
                    let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                    for id in ids {
                        if let Some(r) = self.nodes.get_mut(&id).unwrap().replica.as_mut() {
                            if r.poll_timeout().is_some_and(|t| t <= now) {
                                r.handle_timeout(now);
                            }
                        }
                    }
                }
                _ => {
                    self.now_ms = target;
                    self.settle();
                    return;
                }
            }
        }
        panic!("time did not advance");
    }

    // ---- checks ----

    fn log(&self, id: NodeId) -> Vec<(i64, i32, i64)> {
        self.nodes[&id]
            .disk
            .batches
            .iter()
            .map(|b| (b.base, b.epoch, b.id))
            .collect()
    }

    fn has_record(&self, id: NodeId, request_id: RequestId, offset: Offset) -> bool {
        let batch_id = self.produced[&request_id];
        self.nodes[&id]
            .disk
            .batches
            .iter()
            .any(|b| b.base == offset.0 && b.id == batch_id)
    }

    fn holds_batch(&self, id: NodeId, request_id: RequestId) -> bool {
        let batch_id = self.produced[&request_id];
        self.nodes[&id]
            .disk
            .batches
            .iter()
            .any(|b| b.id == batch_id)
    }

    fn assert_converged(&self) {
        let live: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|&id| self.is_up(id))
            .collect();
        let first = self.log(live[0]);
        for &id in &live[1..] {
            assert_eq!(self.log(id), first, "logs of {} and {id} differ", live[0]);
        }
    }

    /// Every acknowledged acks=all write is in `id`'s log at its offset.
    fn assert_acked_present(&self, id: NodeId, acks_all: &[RequestId]) {
        for &request_id in acks_all {
            if let Some(offset) = self.acked(request_id) {
                assert!(
                    self.has_record(id, request_id, offset),
                    "acked produce {request_id} at {offset} lost on {id}"
                );
            }
        }
    }
}

// ---- scenarios ----

/// KIP-101, first scenario: a follower learns the leader's high watermark one fetch late. If it
/// truncated to its own (stale) high watermark on restart, it would drop a write the leader had
/// acknowledged, and lose it for good when elected. The follower must keep its log and only
/// truncate where a leader says the logs diverge.
#[test]
fn acked_write_survives_follower_restart_with_stale_high_watermark_then_election() {
    let mut c = Cluster::new(2, test_config(1));
    let m1 = c.produce(-1);
    c.settle();
    c.advance(600);
    assert_eq!(c.acked(m1), Some(Offset(0)));
    let m2 = c.produce(-1);
    c.settle();
    assert_eq!(c.acked(m2), Some(Offset(1)), "leader acknowledged m2");
    assert_eq!(c.replica(n(1)).high_watermark(), Offset(2));
    assert_eq!(
        c.replica(n(2)).high_watermark(),
        Offset(1),
        "follower learns the HW one fetch late"
    );

    c.crash(n(2), 0);
    c.restart(n(2));
    c.announce_to(n(2));
    assert_eq!(c.log(n(2)).len(), 2, "a restarted follower keeps its log");
    c.crash(n(1), 0);
    c.elect(n(2));
    c.advance(1_000);
    assert_eq!(c.replica(n(2)).role(), Role::Leader);
    c.assert_acked_present(n(2), &[m1, m2]);
    assert!(
        c.replica(n(2)).high_watermark() >= Offset(2),
        "m2 is readable on the new leader"
    );
}

/// KIP-98 across a failover: the follower builds producer state from the batches it
/// replicates, so when it leads, a producer's retry of a batch the old leader acknowledged is
/// answered with the original offsets instead of being written twice.
#[test]
fn a_new_leader_answers_a_retry_of_a_batch_its_predecessor_acknowledged() {
    let mut c = Cluster::new(2, test_config(1));
    let batch = Bytes::from(encode_idempotent_batch(2, 7, 0, 0));
    let first = c.produce_bytes(n(1), batch.clone(), -1);
    c.settle();
    c.advance(600);
    assert_eq!(c.acked(first), Some(Offset(0)));
    c.crash(n(1), 0);
    c.elect(n(2));
    c.advance(1_000);
    let retry = c.produce_bytes(n(2), batch, -1);
    c.settle();
    c.advance(600);
    assert_eq!(c.acked(retry), Some(Offset(0)), "the retry gets the first write's offset");
    assert_eq!(c.replica(n(2)).log_end_offset(), Offset(2), "and is not written again");
    let next = c.produce_bytes(n(2), Bytes::from(encode_idempotent_batch(1, 7, 0, 3)), -1);
    c.settle();
    assert!(
        matches!(c.replies.get(&next), Some(Err(ErrorCode::OutOfOrderSequenceNumber))),
        "sequence 2 is next: {:?}",
        c.replies.get(&next)
    );
}

/// A retry that arrives while its first write still waits for the ISR waits with it, and both
/// are answered with the same offset.
#[test]
fn a_retry_of_a_pending_batch_waits_for_the_same_high_watermark() {
    let mut r = lone_leader(test_config(1));
    let batch = Bytes::from(encode_idempotent_batch(3, 9, 0, 0));
    r.handle_produce(0, 1, batch.clone(), -1, 30_000).unwrap();
    r.handle_produce(0, 2, batch, -1, 30_000).unwrap();
    let actions: Vec<_> = std::iter::from_fn(|| r.poll_action()).collect();
    let appends = actions.iter().filter(|a| matches!(a, Action::Append { .. })).count();
    assert_eq!(appends, 1, "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::ReplyProduce { .. })), "both wait for the follower: {actions:?}");
    assert_eq!(r.producers().get(9).map(|p| p.batches.len()), Some(1));
    r.handle_completion(1, Completion::Appended { end_offset: Offset(3) });
    r.handle_completion(1, Completion::Synced { through: Offset(3) });
    let fetch = follower_fetch(Offset(3));
    r.handle_fetch(2, &fetch);
    let answered: Vec<_> = std::iter::from_fn(|| r.poll_action())
        .filter_map(|a| match a {
            Action::ReplyProduce { request_id, result } => Some((request_id, result.map(|ack| ack.base_offset))),
            _ => None,
        })
        .collect();
    assert_eq!(answered, vec![(1, Ok(Offset(0))), (2, Ok(Offset(0)))], "both at the first write's offset");
}

/// KIP-101, second scenario: both replicas lose power with different unsynced tails (the
/// follower's OS happened to flush the batch the leader lost). Truncating to the high
/// watermark cannot repair that; truncating by leader epoch does, and the logs converge.
#[test]
fn divergent_unsynced_tails_after_two_hard_crashes_converge() {
    let mut c = Cluster::new(2, test_config(1));
    let m1 = c.produce(-1);
    c.advance(600);
    assert_eq!(c.acked(m1), Some(Offset(0)));

    c.nodes.get_mut(&n(1)).unwrap().hold_syncs = true;
    c.nodes.get_mut(&n(2)).unwrap().hold_syncs = true;
    let m2 = c.produce(-1);
    c.settle();
    assert!(
        c.holds_batch(n(2), m2),
        "follower wrote m2 without syncing it"
    );
    assert_eq!(c.acked(m2), None, "nothing acknowledges unsynced data");

    c.crash(n(1), 0);
    c.crash(n(2), 1);
    c.restart(n(1));
    c.elect(n(1));
    let m3 = c.produce(1);
    c.settle();
    assert_eq!(
        c.acked(m3),
        Some(Offset(1)),
        "the new epoch reuses offset 1"
    );
    c.restart(n(2));
    c.announce_to(n(2));
    c.advance(2_000);
    c.assert_converged();
    assert!(
        !c.holds_batch(n(2), m2),
        "the follower dropped its divergent tail"
    );
    assert_eq!(c.log(n(2)), vec![(0, 0, 1_001), (1, 1, 1_003)]);
    assert_eq!(
        c.replica(n(1)).isr(),
        vec![n(1), n(2)],
        "the follower rejoined the ISR"
    );
}

/// KIP-279: leadership moves 1 → 2 → 1 before followers catch up, each leader writing a tail
/// the other lacks. Answering OffsetForLeaderEpoch with an end offset alone would let node 2
/// keep its epoch-1 batch at an offset where the leader has an epoch-0 batch; with the epoch
/// in the answer node 2 truncates further, repeatedly if needed, and the logs converge.
fn fast_leader_changes(truncate_with_offset_for_leader_epoch: bool) {
    let config = ReplicaConfig {
        truncate_with_offset_for_leader_epoch,
        ..test_config(1)
    };
    let mut c = Cluster::new(3, config);
    let m1 = c.produce(-1);
    c.advance(600);
    assert_eq!(c.acked(m1), Some(Offset(0)));

    c.isolate(n(1));
    let m2 = c.produce_to(n(1), 1);
    c.settle();
    assert_eq!(c.acked(m2), Some(Offset(1)));
    c.elect(n(2));
    c.isolate(n(2));
    let m3 = c.produce_to(n(2), 1);
    c.settle();
    assert_eq!(c.acked(m3), Some(Offset(1)));
    // Node 3 hears of epoch 1 and epoch 2 back to back, before fetching from either leader.
    c.elect(n(1));
    c.heal();
    c.advance(3_000);
    c.assert_converged();
    assert_eq!(c.log(n(2)), vec![(0, 0, 1_001), (1, 0, 1_002)]);
    let m4 = c.produce(-1);
    c.advance(1_000);
    assert_eq!(c.acked(m4), Some(Offset(2)));
    c.assert_converged();
    assert_eq!(
        c.replica(n(2)).epoch_cache().entries(),
        c.replica(n(1)).epoch_cache().entries(),
        "follower epoch caches match the leader's"
    );
}

#[test]
fn follower_truncates_by_diverging_epoch_after_fast_leader_changes() {
    fast_leader_changes(false);
}

#[test]
fn follower_truncates_by_offset_for_leader_epoch_after_fast_leader_changes() {
    fast_leader_changes(true);
}

/// KIP-320: a partitioned leader that missed its demotion keeps accepting writes under a stale
/// epoch. It must not commit them: followers on the new epoch are fenced from it, its ISR
/// shrink is refused by the controller, so its HW is stuck; once it learns the new epoch it
/// truncates the zombie writes away.
#[test]
fn zombie_leader_with_stale_epoch_cannot_commit_and_is_truncated() {
    let mut c = Cluster::new(3, test_config(2));
    let m1 = c.produce(-1);
    c.advance(600);
    assert_eq!(c.acked(m1), Some(Offset(0)));

    c.isolate(n(1));
    c.controller_cut.insert(n(1));
    // The controller elects 2 and fences 1 out of the ISR; 1 never hears of it.
    c.controller.isr.retain(|&r| r != n(1));
    c.controller.leader = n(2);
    c.controller.leader_epoch = LeaderEpoch(1);
    c.controller.partition_epoch = PartitionEpoch(5);
    c.announce_to(n(2));
    c.announce_to(n(3));
    let zombie_write = c.produce_to(n(1), -1);
    let fresh_write = c.produce(-1);
    c.advance(600);
    assert_eq!(c.acked(fresh_write), Some(Offset(1)));
    assert_eq!(c.acked(zombie_write), None);

    // Followers and clients on the new epoch are refused by the zombie and do not count.
    let fetch = |epoch, replica_id| FetchRequest {
        replica_id,
        current_leader_epoch: LeaderEpoch(epoch),
        fetch_offset: Offset(2),
        last_fetched_epoch: LeaderEpoch(1),
        log_start_offset: Offset(0),
        max_wait_ms: 0,
        max_bytes: 1 << 20,
        read_committed: false,
        durable_offset: None,
    };
    let now = c.now_ms;
    assert_eq!(
        c.replica_mut(n(1)).handle_fetch(now, &fetch(1, n(3))),
        FetchAnswer::Error(ErrorCode::UnknownLeaderEpoch)
    );
    assert_eq!(
        c.replica_mut(n(1))
            .handle_fetch(now, &fetch(1, NodeId::NONE)),
        FetchAnswer::Error(ErrorCode::UnknownLeaderEpoch)
    );
    assert_eq!(
        c.replica_mut(n(2)).handle_fetch(now, &fetch(0, n(3))),
        FetchAnswer::Error(ErrorCode::FencedLeaderEpoch)
    );
    assert_eq!(
        c.replica(n(1))
            .handle_offset_for_leader_epoch(LeaderEpoch(1), LeaderEpoch(0)),
        Err(ErrorCode::UnknownLeaderEpoch)
    );

    // The zombie's ISR shrink reaches the controller and is refused; its HW stays put.
    c.controller_cut.clear();
    c.advance(15_000);
    assert_eq!(c.replica(n(1)).role(), Role::Leader, "still a zombie");
    assert_eq!(c.replica(n(1)).high_watermark(), Offset(1));
    assert_eq!(c.replica(n(1)).maximal_isr(), vec![n(1), n(2), n(3)]);
    assert_eq!(c.replies.get(&zombie_write), None);
    c.advance(20_000);
    assert_eq!(
        c.replies.get(&zombie_write),
        Some(&Err(ErrorCode::RequestTimedOut))
    );

    c.heal();
    c.controller.isr.push(n(1));
    c.announce_to(n(1));
    c.advance(3_000);
    c.assert_converged();
    assert!(!c.holds_batch(n(1), zombie_write), "zombie write truncated");
    c.assert_acked_present(n(1), &[m1, fresh_write]);
}

/// KIP-497's maximal ISR: the controller has committed node 3 into the ISR but the leader has
/// not heard yet. If the HW were computed over the old ISR, a write could be acknowledged
/// without node 3, and lost when node 3 — legitimately in the ISR — is elected. The leader
/// counts pending additions, so the write waits for node 3.
#[test]
fn isr_expansion_racing_with_election_counts_the_maximal_isr() {
    let mut c = Cluster::unsettled(test_config(2), vec![n(1), n(2), n(3)], vec![n(1), n(2)]);
    c.cut.insert((n(1), n(3)));
    let m1 = c.produce(-1);
    c.advance(600);
    assert_eq!(c.acked(m1), Some(Offset(0)));
    assert_eq!(c.replica(n(1)).isr(), vec![n(1), n(2)]);

    // Node 3 catches up; the controller commits the expansion; the answer is slow.
    c.hold_alter_responses = true;
    c.cut.clear();
    c.advance(6_000); // node 3's lost fetch times out and is sent again
    assert_eq!(
        c.controller.isr,
        vec![n(1), n(2), n(3)],
        "controller committed the expansion"
    );
    assert_eq!(
        c.replica(n(1)).isr(),
        vec![n(1), n(2)],
        "the leader has not heard"
    );
    assert_eq!(c.replica(n(1)).maximal_isr(), vec![n(1), n(2), n(3)]);

    c.cut.insert((n(1), n(3)));
    let m2 = c.produce(-1);
    // Past the lag time node 3 no longer counts as caught up; only its place in the maximal
    // ISR still holds the HW.
    c.advance(12_000);
    assert!(c.holds_batch(n(2), m2));
    assert_eq!(
        c.acked(m2),
        None,
        "m2 waits for node 3, which is in the maximal ISR"
    );

    c.crash(n(1), 0);
    c.elect(n(3));
    c.cut.clear();
    c.release_alter_responses();
    c.advance(3_000);
    c.assert_acked_present(n(3), &[m1, m2]);
    c.assert_converged();
    assert!(
        !c.holds_batch(n(2), m2),
        "the unacknowledged write was truncated, not lost after an ack"
    );
    let m3 = c.produce(-1);
    c.advance(600);
    assert_eq!(c.acked(m3), Some(Offset(1)));
}

/// `min.insync.replicas` (and KIP-966's rule): with the ISR below the minimum, acks=all is
/// refused up front, waiting acks=all writes fail with NOT_ENOUGH_REPLICAS_AFTER_APPEND, and
/// the HW does not move even for data the whole (too small) ISR has. It moves again, and
/// never backwards, once followers rejoin.
#[test]
fn high_watermark_stuck_while_isr_below_min_isr() {
    let mut c = Cluster::new(3, test_config(2));
    let m1 = c.produce(-1);
    c.advance(600);
    assert_eq!(c.acked(m1), Some(Offset(0)));
    let hw = c.replica(n(1)).high_watermark();
    assert_eq!(hw, Offset(1));

    c.cut.insert((n(1), n(2)));
    c.cut.insert((n(1), n(3)));
    let waiting = c.produce(-1);
    c.advance(16_000);
    assert_eq!(
        c.replica(n(1)).isr(),
        vec![n(1)],
        "lagging followers were dropped"
    );
    assert_eq!(
        c.replies.get(&waiting),
        Some(&Err(ErrorCode::NotEnoughReplicasAfterAppend))
    );
    let refused = c.produce(-1);
    assert_eq!(
        c.replies.get(&refused),
        Some(&Err(ErrorCode::NotEnoughReplicas))
    );
    let local = c.produce(1);
    c.advance(600);
    assert_eq!(
        c.acked(local),
        Some(Offset(2)),
        "acks=1 only needs the leader"
    );
    assert_eq!(
        c.replica(n(1)).high_watermark(),
        hw,
        "HW stuck below min ISR"
    );

    c.heal();
    c.advance(6_000); // fetches lost in the partition time out and are sent again
    assert_eq!(c.replica(n(1)).isr(), vec![n(1), n(2), n(3)]);
    assert_eq!(c.replica(n(1)).high_watermark(), Offset(3));
    let after = c.produce(-1);
    c.advance(600);
    assert_eq!(c.acked(after), Some(Offset(3)));
    c.assert_converged();
}

// ---- smaller unit checks ----

/// Follower 2's fetch at `fetch_offset`, in epoch 3 (`lone_leader`'s), not held.
fn follower_fetch(fetch_offset: Offset) -> FetchRequest {
    FetchRequest {
        replica_id: n(2),
        current_leader_epoch: LeaderEpoch(3),
        fetch_offset,
        last_fetched_epoch: LeaderEpoch(3),
        log_start_offset: Offset(0),
        max_wait_ms: 0,
        max_bytes: 1 << 20,
        read_committed: false,
        durable_offset: None,
    }
}

fn lone_leader(config: ReplicaConfig) -> Replica {
    let mut r = Replica::new(n(1), config, PersistedState::default());
    let state = LeaderAndIsr {
        leader_epoch: LeaderEpoch(3),
        partition_epoch: PartitionEpoch(1),
        isr: vec![n(1), n(2)],
        replicas: vec![n(1), n(2)],
    };
    r.become_leader(0, state).unwrap();
    while r.poll_action().is_some() {}
    r
}

#[test]
fn produce_stamps_offsets_and_leader_epoch_and_rejects_bad_input() {
    let mut r = lone_leader(test_config(1));
    r.handle_produce(
        0,
        1,
        Bytes::from(encode_batch(3, 0, Compression::None)),
        1,
        1000,
    ).unwrap();
    let Some(Action::Append {
        base_offset,
        end_offset,
        records,
    }) = r.poll_action()
    else {
        panic!()
    };
    assert_eq!((base_offset, end_offset), (Offset(0), Offset(3)));
    let header = batch::validate_batch(&records[0]).expect("CRC still valid");
    assert_eq!(header.partition_leader_epoch, 3);
    assert_eq!(r.poll_action(), Some(Action::Sync { through: Offset(3) }));

    let mut corrupt = encode_batch(1, 0, Compression::None);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let refused = r.handle_produce(0, 2, Bytes::from(corrupt), 1, 1000).unwrap_err();
    assert_eq!(refused.code, ErrorCode::CorruptMessage);
    r.handle_produce(0, 3, Bytes::from(encode_batch(1, 0, Compression::None)), 2, 1000).unwrap();
    let refused = r.handle_produce(0, 4, Bytes::from_static(b"garbage"), -1, 1000).unwrap_err();
    assert_eq!(refused.code, ErrorCode::CorruptMessage);
    let errors: Vec<_> = std::iter::from_fn(|| r.poll_action()).collect();
    assert_eq!(errors, vec![Action::ReplyProduce { request_id: 3, result: Err(ErrorCode::InvalidRequiredAcks) }]);
}

#[test]
fn acks_one_waits_for_fsync_and_acks_all_for_the_follower() {
    let mut r = lone_leader(test_config(1));
    r.handle_produce(
        0,
        1,
        Bytes::from(encode_batch(2, 0, Compression::None)),
        1,
        1000,
    ).unwrap();
    r.handle_produce(
        0,
        2,
        Bytes::from(encode_batch(2, 0, Compression::None)),
        -1,
        1000,
    ).unwrap();
    while r.poll_action().is_some() {}
    r.handle_completion(
        1,
        Completion::Appended {
            end_offset: Offset(2),
        },
    );
    r.handle_completion(
        1,
        Completion::Appended {
            end_offset: Offset(4),
        },
    );
    assert_eq!(
        r.poll_action(),
        None,
        "written is not enough: acks wait for fsync"
    );
    r.handle_completion(2, Completion::Synced { through: Offset(4) });
    assert!(matches!(
        r.poll_action(),
        Some(Action::ReplyProduce {
            request_id: 1,
            result: Ok(_)
        })
    ));
    assert_eq!(r.poll_action(), None, "acks=all waits for follower 2");
    assert_eq!(r.high_watermark(), Offset(0));
    let fetch = follower_fetch(Offset(4));
    let answer = r.handle_fetch(3, &fetch);
    assert!(
        matches!(
            answer,
            FetchAnswer::Read {
                read_to: Offset(4),
                high_watermark: Offset(4),
                ..
            }
        ),
        "{answer:?}"
    );
    assert!(matches!(
        r.poll_action(),
        Some(Action::ReplyProduce {
            request_id: 2,
            result: Ok(_)
        })
    ));
    // A fetch claiming an epoch this leader never wrote gets the divergence point, and does
    // not count as a position.
    let stale = FetchRequest {
        last_fetched_epoch: LeaderEpoch(2),
        fetch_offset: Offset(9),
        ..fetch
    };
    assert!(matches!(
        r.handle_fetch(4, &stale),
        FetchAnswer::Diverging { .. }
    ));
    assert_eq!(
        r.handle_offset_for_leader_epoch(LeaderEpoch(3), LeaderEpoch(3))
            .unwrap()
            .end_offset,
        Offset(4)
    );
}

#[test]
fn stale_controller_decisions_are_refused() {
    let mut r = lone_leader(test_config(1));
    let old = LeaderAndIsr {
        leader_epoch: LeaderEpoch(2),
        partition_epoch: PartitionEpoch(9),
        isr: vec![n(1)],
        replicas: vec![n(1)],
    };
    assert_eq!(r.become_leader(0, old), Err(ErrorCode::FencedLeaderEpoch));
    assert_eq!(
        r.become_follower(0, n(2), LeaderEpoch(2), PartitionEpoch(9)),
        Err(ErrorCode::FencedLeaderEpoch)
    );
    let not_in_isr = LeaderAndIsr {
        leader_epoch: LeaderEpoch(4),
        partition_epoch: PartitionEpoch(2),
        isr: vec![n(2)],
        replicas: vec![n(1), n(2)],
    };
    assert_eq!(
        r.become_leader(0, not_in_isr),
        Err(ErrorCode::InvalidRequest)
    );
    assert_eq!(r.role(), Role::Leader);
    assert_eq!(r.leader_epoch(), LeaderEpoch(3));

    // A restarted replica knows the epochs in its log: older decisions are stale.
    let mut cache = EpochCache::new();
    cache.assign(LeaderEpoch(5), Offset(0));
    let persisted = PersistedState {
        log_start_offset: Offset(0),
        log_end_offset: Offset(3),
        durable_offset: Offset(3),
        epoch_cache: cache,
        high_watermark: Offset(0),
        producers: Default::default(),
    };
    let mut restarted = Replica::new(n(1), test_config(1), persisted);
    let result = restarted.become_follower(0, n(2), LeaderEpoch(4), PartitionEpoch(0));
    assert_eq!(result, Err(ErrorCode::FencedLeaderEpoch));
    assert_eq!(restarted.role(), Role::Offline);
}

#[test]
fn a_restarted_leader_re_elected_at_its_logs_epoch_keeps_the_epochs_start() {
    let mut cache = EpochCache::new();
    cache.assign(LeaderEpoch(0), Offset(0));
    let persisted = PersistedState {
        log_start_offset: Offset(0),
        log_end_offset: Offset(5),
        durable_offset: Offset(5),
        epoch_cache: cache,
        high_watermark: Offset(5),
        producers: Default::default(),
    };
    let mut r = Replica::new(n(1), test_config(1), persisted);
    let state = LeaderAndIsr {
        leader_epoch: LeaderEpoch(0),
        partition_epoch: PartitionEpoch(0),
        isr: vec![n(1)],
        replicas: vec![n(1)],
    };
    r.become_leader(0, state).unwrap();
    assert_eq!(r.role(), Role::Leader);
    let end = r.handle_offset_for_leader_epoch(LeaderEpoch(0), LeaderEpoch(0)).unwrap();
    assert_eq!((end.epoch, end.end_offset), (LeaderEpoch(0), Offset(5)));
    assert_eq!(r.epoch_cache().latest(), Some(EpochEntry { epoch: LeaderEpoch(0), start_offset: Offset(0) }));
}

#[test]
fn follower_rejects_fetched_batches_that_do_not_follow_its_log() {
    let mut epoch_cache = EpochCache::new();
    epoch_cache.assign(LeaderEpoch(1), Offset(0));
    let persisted = PersistedState {
        log_start_offset: Offset(0),
        log_end_offset: Offset(4),
        durable_offset: Offset(4),
        epoch_cache,
        high_watermark: Offset(0),
        producers: Default::default(),
    };
    let mut r = Replica::new(n(2), test_config(1), persisted);
    r.become_follower(0, n(1), LeaderEpoch(1), PartitionEpoch(0))
        .unwrap();
    let Some(Action::SendFetch { fetch_id, .. }) = r.poll_action() else {
        panic!()
    };
    let mut buf = encode_batch(2, 0, Compression::None);
    let mut validated = batch::validate_records(&buf, 1 << 20).unwrap();
    batch::assign_offsets(&mut buf, &mut validated, 3, 1, None); // overlaps the log end
    let response = |records: Vec<u8>| FetchResponse {
        error: None,
        high_watermark: Offset(2),
        last_stable_offset: Offset(-1),
        aborted_transactions: None,
        log_start_offset: Offset(0),
        diverging_epoch: None,
        records: Bytes::from(records),
    };
    r.handle_fetch_response(0, fetch_id, response(buf));
    assert_eq!(
        r.poll_action(),
        None,
        "behind the log end: dropped, retried after backoff"
    );
    assert_eq!(r.log_end_offset(), Offset(4));
    r.handle_timeout(200);
    let Some(Action::SendFetch { fetch_id, .. }) = r.poll_action() else {
        panic!()
    };
    let mut buf = encode_batch(2, 0, Compression::None);
    let mut validated = batch::validate_records(&buf, 1 << 20).unwrap();
    batch::assign_offsets(&mut buf, &mut validated, 4, 7, None); // epoch above the leader's
    r.handle_fetch_response(200, fetch_id, response(buf.clone()));
    assert_eq!(r.poll_action(), None);
    r.handle_timeout(400);
    let Some(Action::SendFetch { fetch_id, .. }) = r.poll_action() else {
        panic!()
    };
    // A gap after the log end is what compaction leaves on the leader: accepted.
    batch::assign_offsets(&mut buf, &mut validated, 6, 1, None);
    let whole = buf.len();
    buf.extend_from_slice(&buf.clone()[..30]); // a trailing partial batch is left out
    r.handle_fetch_response(400, fetch_id, response(buf));
    let Some(Action::Append {
        end_offset,
        records,
        ..
    }) = r.poll_action()
    else {
        panic!()
    };
    assert_eq!((end_offset, records.iter().map(Bytes::len).sum::<usize>()), (Offset(8), whole));
}

/// Rule 3 on the follower: while answers bring records it fetches again as soon as they are
/// written, saying how much is durable and asking not to be held; an empty answer makes it
/// wait for its fsync, and the fetch after that reports the durable end and may be held.
#[test]
fn a_follower_fetches_ahead_of_its_fsync_only_while_records_come() {
    let persisted = PersistedState {
        log_start_offset: Offset(0),
        log_end_offset: Offset(0),
        durable_offset: Offset(0),
        epoch_cache: EpochCache::new(),
        high_watermark: Offset(0),
        producers: Default::default(),
    };
    let config = test_config(1);
    let long_poll = config.replica_fetch_wait_max_ms;
    let mut r = Replica::new(n(2), config, persisted);
    r.become_follower(0, n(1), LeaderEpoch(1), PartitionEpoch(0)).unwrap();
    let Some(Action::SendFetch { fetch_id, request, .. }) = r.poll_action() else { panic!() };
    assert_eq!((request.durable_offset, request.max_wait_ms), (None, long_poll));
    let response = |records: Vec<u8>| FetchResponse {
        error: None,
        high_watermark: Offset(0),
        last_stable_offset: Offset(-1),
        aborted_transactions: None,
        log_start_offset: Offset(0),
        diverging_epoch: None,
        records: Bytes::from(records),
    };
    let mut buf = encode_batch(2, 0, Compression::None);
    let mut validated = batch::validate_records(&buf, 1 << 20).unwrap();
    batch::assign_offsets(&mut buf, &mut validated, 0, 1, None);
    r.handle_fetch_response(1, fetch_id, response(buf));
    let actions: Vec<_> = std::iter::from_fn(|| r.poll_action()).collect();
    assert!(
        matches!(actions[..], [.., Action::Append { end_offset: Offset(2), .. }, Action::Sync { through: Offset(2) }]),
        "no fetch while the append is in flight: {actions:?}"
    );
    r.handle_completion(2, Completion::Appended { end_offset: Offset(2) });
    let Some(Action::SendFetch { fetch_id, request, .. }) = r.poll_action() else {
        panic!("the next fetch goes out before the fsync completes")
    };
    assert_eq!(
        (request.fetch_offset, request.durable_offset, request.max_wait_ms),
        (Offset(2), Some(Offset(0)), 0)
    );
    r.handle_fetch_response(3, fetch_id, response(Vec::new()));
    assert_eq!(r.poll_action(), None, "an empty answer: the next fetch waits for the fsync");
    r.handle_completion(4, Completion::Synced { through: Offset(2) });
    let Some(Action::SendFetch { request, .. }) = r.poll_action() else { panic!() };
    assert_eq!(
        (request.fetch_offset, request.durable_offset, request.max_wait_ms),
        (Offset(2), None, long_poll)
    );
}

/// Rule 3 on the leader: a follower that fetched ahead of its fsync counts only its durable
/// end toward the high watermark, so acks=all waits for the follower's fsync too.
#[test]
fn a_follower_counts_only_what_it_says_is_durable() {
    let mut r = lone_leader(test_config(1));
    r.handle_produce(0, 1, Bytes::from(encode_batch(2, 0, Compression::None)), -1, 1000).unwrap();
    r.handle_produce(0, 2, Bytes::from(encode_batch(2, 0, Compression::None)), -1, 1000).unwrap();
    while r.poll_action().is_some() {}
    r.handle_completion(1, Completion::Appended { end_offset: Offset(2) });
    r.handle_completion(1, Completion::Appended { end_offset: Offset(4) });
    r.handle_completion(2, Completion::Synced { through: Offset(4) });
    assert_eq!(r.poll_action(), None);
    let fetch = |durable_offset| FetchRequest { durable_offset, ..follower_fetch(Offset(4)) };
    r.handle_fetch(3, &fetch(Some(Offset(2))));
    assert_eq!(r.high_watermark(), Offset(2), "written on the follower is not enough");
    let replies: Vec<_> = std::iter::from_fn(|| r.poll_action())
        .filter_map(|a| match a {
            Action::ReplyProduce { request_id, .. } => Some(request_id),
            _ => None,
        })
        .collect();
    assert_eq!(replies, [1]);
    r.handle_fetch(4, &fetch(None));
    assert_eq!(r.high_watermark(), Offset(4));
    assert!(std::iter::from_fn(|| r.poll_action()).any(|a| matches!(a, Action::ReplyProduce { request_id: 2, .. })));
}

/// A leader elected at log end 10 with a lagging HW of 0 (KIP-101 / Kafka's
/// `isFollowerInSync`): a follower at the HW but short of the epoch start must not join the
/// ISR, or it could be elected without records the previous leader committed.
#[test]
fn follower_joins_isr_only_from_the_start_of_the_leader_epoch() {
    let mut cache = EpochCache::new();
    cache.assign(LeaderEpoch(0), Offset(0));
    let persisted = PersistedState {
        log_start_offset: Offset(0),
        log_end_offset: Offset(10),
        durable_offset: Offset(10),
        epoch_cache: cache,
        high_watermark: Offset(0),
        producers: Default::default(),
    };
    let mut r = Replica::new(n(1), test_config(1), persisted);
    let state = LeaderAndIsr {
        leader_epoch: LeaderEpoch(1),
        partition_epoch: PartitionEpoch(4),
        isr: vec![n(1), n(3)],
        replicas: vec![n(1), n(2), n(3)],
    };
    r.become_leader(0, state).unwrap();
    let actions: Vec<_> = std::iter::from_fn(|| r.poll_action()).collect();
    assert_eq!(actions.len(), 1, "only the epoch checkpoint: {actions:?}");
    let fetch = |offset| FetchRequest {
        replica_id: n(2),
        current_leader_epoch: LeaderEpoch(1),
        fetch_offset: Offset(offset),
        last_fetched_epoch: LeaderEpoch(0),
        log_start_offset: Offset(0),
        max_wait_ms: 0,
        max_bytes: 1 << 20,
        read_committed: false,
        durable_offset: None,
    };
    assert!(matches!(
        r.handle_fetch(1, &fetch(5)),
        FetchAnswer::Read {
            read_to: Offset(10),
            ..
        }
    ));
    assert_eq!(
        r.poll_action(),
        None,
        "at the HW but short of the epoch start"
    );
    assert_eq!(
        r.high_watermark(),
        Offset(0),
        "node 3's position is unknown in this epoch"
    );
    r.handle_fetch(2, &fetch(10));
    let Some(Action::SendAlterPartition {
        request_id,
        request,
    }) = r.poll_action()
    else {
        panic!()
    };
    assert_eq!(request.new_isr, vec![n(1), n(2), n(3)]);
    assert_eq!(r.maximal_isr(), vec![n(1), n(2), n(3)]);

    // Not attempted: back to the committed ISR, and the proposal may be made again.
    r.handle_alter_partition_response(3, request_id, Err(ErrorCode::OperationNotAttempted));
    assert_eq!(r.maximal_isr(), vec![n(1), n(3)]);
    r.handle_fetch(4, &fetch(10));
    let Some(Action::SendAlterPartition { request_id, .. }) = r.poll_action() else {
        panic!()
    };
    // Retriable: sent again after the backoff.
    r.handle_alter_partition_response(5, request_id, Err(ErrorCode::RequestTimedOut));
    assert_eq!(r.poll_action(), None);
    r.handle_timeout(5 + 100);
    let Some(Action::SendAlterPartition { request_id, .. }) = r.poll_action() else {
        panic!()
    };
    // Checked against an uncommitted change: stay pending (the HW keeps counting node 2) and
    // propose the same again after the backoff, in case that change was lost with the
    // controller's leadership and no metadata will ever come (zombie-leader seed 5724).
    r.handle_alter_partition_response(200, request_id, Err(ErrorCode::InvalidUpdateVersion));
    assert_eq!(r.maximal_isr(), vec![n(1), n(2), n(3)]);
    r.handle_timeout(10_000);
    let resent: Vec<Action> = std::iter::from_fn(|| r.poll_action()).collect();
    let proposals: Vec<_> = resent
        .iter()
        .filter_map(|a| match a {
            Action::SendAlterPartition { request, .. } => Some(request.new_isr.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(proposals, vec![vec![n(1), n(2), n(3)]]);
    assert_eq!(r.maximal_isr(), vec![n(1), n(2), n(3)]);
    // A stale view, ours or a deposed controller's: stay pending, and propose again after
    // the longer backoff if no metadata settled it (swarm seed 7033).
    let Some(request_id) = resent.iter().find_map(|a| match a {
        Action::SendAlterPartition { request_id, .. } => Some(*request_id),
        _ => None,
    }) else {
        panic!()
    };
    r.handle_alter_partition_response(10_000, request_id, Err(ErrorCode::FencedLeaderEpoch));
    r.handle_timeout(10_000 + 100);
    assert_eq!(r.poll_action(), None, "not after the ordinary backoff");
    r.handle_timeout(10_000 + 1_000);
    let Some(Action::SendAlterPartition { request, .. }) = r.poll_action() else {
        panic!("proposed again")
    };
    assert_eq!(request.new_isr, vec![n(1), n(2), n(3)]);
    let committed = LeaderAndIsr {
        leader_epoch: LeaderEpoch(1),
        partition_epoch: PartitionEpoch(6),
        isr: vec![n(1), n(2), n(3)],
        replicas: vec![n(1), n(2), n(3)],
    };
    r.become_leader(11_001, committed).unwrap();
    assert_eq!(r.isr(), vec![n(1), n(2), n(3)]);
    assert_eq!(r.partition_epoch(), PartitionEpoch(6));
}

/// A broker elected and deposed before it appended anything keeps that epoch at the end of
/// its epoch cache; the next leader never heard of it. Unless the follower drops the entry
/// when the leader reports a divergence with nothing to cut, every fetch carries the unknown
/// epoch, diverges again, and the follower never catches up (Kafka's `truncateTo` trims the
/// cache even when the log is not cut). Found by the simulator.
#[test]
fn follower_drops_an_epoch_it_led_without_appending() {
    let mut c = Cluster::new(3, test_config(1));
    let m1 = c.produce(-1);
    c.advance(600);
    assert_eq!(c.acked(m1), Some(Offset(0)));
    c.isolate(n(2));
    c.elect(n(2));
    c.elect(n(1));
    c.heal();
    c.advance(3_000);
    let m2 = c.produce(-1);
    c.advance(3_000);
    assert_eq!(c.acked(m2), Some(Offset(1)));
    assert!(c.holds_batch(n(2), m2), "the deposed leader replicates again");
    c.assert_converged();
    assert_eq!(c.replica(n(2)).epoch_cache().entries(), c.replica(n(1)).epoch_cache().entries());
}

/// Retention on a replicated partition: each replica deletes its own old segments, never above
/// its high watermark, and tells the replica (`handle_log_start_advanced`); followers follow
/// the leader's log start from fetch answers, as Kafka's do. Without this a consumer could be
/// served offsets the leader no longer has, and a replica that falls behind the leader's log
/// start would never catch up.
#[test]
fn retention_moves_the_log_start_on_leader_and_followers() {
    let mut c = Cluster::new(3, test_config(2));
    let produced: Vec<RequestId> = (0..5).map(|_| c.produce(-1)).collect();
    c.advance(1_000);
    for (i, &p) in produced.iter().enumerate() {
        assert_eq!(c.acked(p), Some(Offset(i as i64)));
    }
    assert_eq!(c.replica(n(1)).high_watermark(), Offset(5));

    // The leader's retention deleted the segments below offset 3.
    let now = c.now_ms;
    c.nodes.get_mut(&n(1)).unwrap().disk.batches.retain(|b| b.base >= 3);
    c.replica_mut(n(1)).handle_log_start_advanced(now, Offset(3));
    let leader = c.replica(n(1));
    assert_eq!(leader.log_start_offset(), Offset(3));
    assert_eq!(leader.epoch_cache().entries(), &[EpochEntry { epoch: LeaderEpoch(0), start_offset: Offset(3) }]);
    c.perform(n(1));
    assert_eq!(c.nodes[&n(1)].disk.log_start, 3);
    // A start at or below the current one changes nothing.
    c.replica_mut(n(1)).handle_log_start_advanced(now, Offset(2));
    assert_eq!(c.replica_mut(n(1)).poll_action(), None);

    // Consumers below the new start get OFFSET_OUT_OF_RANGE; from it they read.
    let consumer = |offset| FetchRequest {
        replica_id: NodeId::NONE,
        current_leader_epoch: LeaderEpoch(0),
        fetch_offset: Offset(offset),
        last_fetched_epoch: LeaderEpoch::NONE,
        log_start_offset: Offset(-1),
        max_wait_ms: 0,
        max_bytes: 1 << 20,
        read_committed: false,
        durable_offset: None,
    };
    assert_eq!(c.replica_mut(n(1)).handle_fetch(now, &consumer(2)), FetchAnswer::Error(ErrorCode::OffsetOutOfRange));
    assert!(matches!(
        c.replica_mut(n(1)).handle_fetch(now, &consumer(3)),
        FetchAnswer::Read { read_to: Offset(5), log_start_offset: Offset(3), .. }
    ));

    // Followers learn the leader's start from their next fetch answers.
    let more = c.produce(-1);
    c.advance(1_000);
    assert_eq!(c.acked(more), Some(Offset(5)));
    for id in [n(2), n(3)] {
        assert_eq!(c.replica(id).log_start_offset(), Offset(3), "follower {id}");
        assert_eq!(c.nodes[&id].disk.log_start, 3, "follower {id} recorded its start");
        assert!(c.log(id).iter().all(|&(base, ..)| base >= 3), "follower {id} kept deleted batches");
    }

    // A follower's own retention, within its high watermark.
    let now = c.now_ms;
    let hw = c.replica(n(2)).high_watermark();
    assert_eq!(hw, Offset(6));
    c.nodes.get_mut(&n(2)).unwrap().disk.batches.retain(|b| b.base >= 4);
    c.replica_mut(n(2)).handle_log_start_advanced(now, Offset(4));
    c.perform(n(2));
    assert_eq!(c.replica(n(2)).log_start_offset(), Offset(4));

    // A replica that lost its whole log restarts from the leader's start, not from 0.
    c.crash(n(3), 0);
    c.nodes.get_mut(&n(3)).unwrap().disk = Disk::default();
    c.restart(n(3));
    c.announce_to(n(3));
    c.advance(3_000);
    assert_eq!(c.replica(n(3)).log_start_offset(), Offset(3));
    assert_eq!(c.log(n(3)), c.log(n(1)));
}

// DeleteRecords (KIP-107, Kafka's `Partition.deleteRecordsOnLeader` and `DelayedDeleteRecords`):
// a client told that records are gone must not see them again, on this leader or on the next, so
// the answer waits for the recorded start and for every live follower to report a start at or
// past it (the low watermark); -1 means the high watermark; above it is OFFSET_OUT_OF_RANGE; a
// lower offset answers the current low watermark; only the leader deletes, and its followers
// follow from their fetch answers.
#[test]
fn delete_records_moves_the_log_start_on_the_leader_and_its_followers() {
    let mut c = Cluster::new(3, test_config(2));
    for _ in 0..5 {
        c.produce(-1);
    }
    c.advance(1_000);
    assert_eq!(c.replica(n(1)).high_watermark(), Offset(5));
    let now = c.now_ms;
    for refused in [Offset(6), Offset(-2)] {
        assert_eq!(c.replica_mut(n(1)).handle_delete_records(now, 100, refused, 30_000), Err(ErrorCode::OffsetOutOfRange), "{refused}");
    }
    assert_eq!(c.replica_mut(n(2)).handle_delete_records(now, 100, Offset(1), 30_000), Err(ErrorCode::NotLeaderOrFollower));
    assert_eq!(c.replica_mut(n(1)).poll_action(), None, "a refusal changes nothing");

    c.replica_mut(n(1)).handle_delete_records(now, 101, Offset(3), 30_000).unwrap();
    assert_eq!(c.replica(n(1)).log_start_offset(), Offset(3));
    c.perform(n(1));
    assert_eq!(c.records_deleted, [], "the followers have not taken the start yet");
    c.advance(1_000);
    assert_eq!(c.records_deleted, [(101, Ok(Offset(3)), 3)], "answered once every replica starts there");
    for id in [n(2), n(3)] {
        assert_eq!(c.replica(id).log_start_offset(), Offset(3), "follower {id}");
    }
    // Below the current start: nothing moves, the answer is the current low watermark.
    let now = c.now_ms;
    c.replica_mut(n(1)).handle_delete_records(now, 102, Offset(1), 30_000).unwrap();
    c.perform(n(1));
    assert_eq!(c.records_deleted[1], (102, Ok(Offset(3)), 3));
    assert_eq!(c.replica_mut(n(1)).handle_fetch(now, &consumer_fetch(2)), FetchAnswer::Error(ErrorCode::OffsetOutOfRange));

    // -1 is the high watermark.
    c.produce(-1);
    c.advance(1_000);
    let now = c.now_ms;
    c.replica_mut(n(1)).handle_delete_records(now, 103, Offset(-1), 30_000).unwrap();
    c.advance(1_000);
    assert_eq!(c.records_deleted[2], (103, Ok(Offset(6)), 6));

    // Followers took the start from their fetch answers.
    for id in [n(2), n(3)] {
        assert_eq!(c.replica(id).log_start_offset(), Offset(6), "follower {id}");
        assert_eq!(c.nodes[&id].disk.log_start, 6, "follower {id} recorded its start");
    }

    // A compact-only topic's start is the cleaner's alone.
    let config = ReplicaConfig { cleanup_delete: false, ..c.replica(n(1)).config().clone() };
    c.replica_mut(n(1)).reconfigure(now, config);
    assert_eq!(c.replica_mut(n(1)).handle_delete_records(now, 104, Offset(6), 30_000), Err(ErrorCode::PolicyViolation));
}

// DeleteRecords can leave the log start inside a batch; a follower that lost its log restarts at
// that start and is then served the whole batch holding it. It must take the batch (Kafka's
// `UnexpectedAppendOffsetException` handling), or it would refuse it on every fetch and never
// rejoin the ISR.
#[test]
fn a_follower_restarting_inside_a_batch_takes_the_whole_batch() {
    let mut c = Cluster::new(3, test_config(2));
    for id in 0..2 {
        let records = Bytes::from(encode_batch(5, 2_000 + id, Compression::None));
        c.produce_bytes(n(1), records, -1);
    }
    c.advance(1_000);
    assert_eq!(c.replica(n(1)).high_watermark(), Offset(10));
    let now = c.now_ms;
    c.replica_mut(n(1)).handle_delete_records(now, 100, Offset(7), 30_000).unwrap();
    c.advance(1_000);
    assert_eq!(c.records_deleted, [(100, Ok(Offset(7)), 7)]);

    c.crash(n(3), 0);
    c.nodes.get_mut(&n(3)).unwrap().disk = Disk::default();
    c.restart(n(3));
    c.announce_to(n(3));
    c.advance(3_000);
    assert_eq!(c.replica(n(3)).log_start_offset(), Offset(7));
    assert_eq!(c.log(n(3)), c.log(n(1)));
    assert_eq!(c.replica(n(3)).log_end_offset(), Offset(10));
    assert!(c.replica(n(1)).isr().contains(&n(3)), "caught up and back in the ISR");
}

fn consumer_fetch(offset: i64) -> FetchRequest {
    FetchRequest {
        replica_id: NodeId::NONE,
        current_leader_epoch: LeaderEpoch(0),
        fetch_offset: Offset(offset),
        last_fetched_epoch: LeaderEpoch::NONE,
        log_start_offset: Offset(-1),
        max_wait_ms: 0,
        max_bytes: 1 << 20,
        read_committed: false,
        durable_offset: None,
    }
}

// Guards KIP-841 on the leader: a follower the controller takes out of the ISR (its broker
// shut down or was fenced) stops counting for the high watermark at once, not after
// `replica.lag.time.max.ms` of having been caught up, and is not proposed back into the ISR
// for the position it had (on an empty log, as here, every position is caught up); acks=1
// data becomes readable.
#[test]
fn a_follower_the_controller_drops_from_the_isr_no_longer_holds_the_high_watermark() {
    let mut c = Cluster::new(2, test_config(1));
    c.crash(n(2), 0);
    c.controller.isr = vec![n(1)];
    c.controller.partition_epoch = PartitionEpoch(c.controller.partition_epoch.0 + 1);
    c.announce_to(n(1));
    c.settle();
    let second = c.produce(1);
    c.settle();
    assert!(c.acked(second).is_some());
    let leader = c.replica(n(1));
    assert_eq!(leader.high_watermark(), leader.log_end_offset());
}


// Guards KIP-841's eligibility check on the leader: a follower whose broker is fenced (a
// controlled shutdown fences it at once) may still fetch while it stops. The leader must not
// propose it back into the ISR for those fetches, nor let its having been caught up hold the
// high watermark, or acks=1 data stays unreadable until `replica.lag.time.max.ms` passes.
#[test]
fn a_fenced_follower_that_still_fetches_is_not_proposed_back_into_the_isr() {
    let mut c = Cluster::new(2, test_config(1));
    let first = c.produce(1);
    c.settle();
    assert!(c.acked(first).is_some());
    c.controller.isr = vec![n(1)];
    c.controller.partition_epoch = PartitionEpoch(c.controller.partition_epoch.0 + 1);
    let now = c.now_ms;
    assert!(c.replica_mut(n(1)).handle_fenced_brokers(now, &BTreeSet::from([n(2)])));
    c.announce_to(n(1));
    // The follower keeps fetching for a while, caught up, before its process stops.
    c.advance(2_000);
    assert_eq!(c.controller.isr, vec![n(1)], "a fenced broker was proposed into the ISR");
    c.isolate(n(2));
    let second = c.produce(1);
    c.advance(100);
    assert!(c.acked(second).is_some());
    let leader = c.replica(n(1));
    assert_eq!(leader.high_watermark(), leader.log_end_offset());

    // Unfenced (it registered again), its fetches make it eligible again once one gets
    // through (the one the cut lost times out first).
    c.heal();
    let now = c.now_ms;
    assert!(c.replica_mut(n(1)).handle_fenced_brokers(now, &BTreeSet::new()));
    c.advance(60_000);
    assert_eq!(c.controller.isr, vec![n(1), n(2)]);
}

// Guards DeleteRecords' wait (Kafka's `DelayedDeleteRecords`): a live follower that cannot take
// the new start (here cut off) holds the answer, which times out with REQUEST_TIMED_OUT after
// the request's timeout; a follower whose broker is fenced does not count (`hasAliveBroker`), so
// the answer comes without it; a leadership move answers NOT_LEADER_OR_FOLLOWER.
#[test]
fn delete_records_waits_for_live_followers_and_times_out_without_them() {
    let mut c = Cluster::new(3, test_config(1));
    for _ in 0..5 {
        c.produce(-1);
    }
    c.advance(1_000);
    c.isolate(n(3));
    let now = c.now_ms;
    c.replica_mut(n(1)).handle_delete_records(now, 100, Offset(2), 5_000).unwrap();
    c.advance(4_000);
    assert_eq!(c.records_deleted, [], "node 3 has not taken the start");
    c.advance(2_000);
    assert_eq!(c.records_deleted, [(100, Err(ErrorCode::RequestTimedOut), 2)]);

    let now = c.now_ms;
    c.replica_mut(n(1)).handle_delete_records(now, 101, Offset(3), 30_000).unwrap();
    c.advance(1_000);
    assert_eq!(c.records_deleted.len(), 1);
    let now = c.now_ms;
    assert!(c.replica_mut(n(1)).handle_fenced_brokers(now, &BTreeSet::from([n(3)])));
    c.perform(n(1));
    assert_eq!(c.records_deleted[1], (101, Ok(Offset(3)), 3), "a fenced follower does not hold it");

    let now = c.now_ms;
    assert!(c.replica_mut(n(1)).handle_fenced_brokers(now, &BTreeSet::new()));
    c.replica_mut(n(1)).handle_delete_records(now, 102, Offset(4), 30_000).unwrap();
    c.perform(n(1));
    c.controller.leader = n(2);
    c.controller.leader_epoch = LeaderEpoch(1);
    c.controller.partition_epoch = PartitionEpoch(c.controller.partition_epoch.0 + 1);
    c.controller.isr = vec![n(1), n(2)];
    c.announce_to(n(1));
    assert_eq!(c.records_deleted[2], (102, Err(ErrorCode::NotLeaderOrFollower), 4));
}
