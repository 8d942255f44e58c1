//! One simulated broker + controller process: a driver that pumps the real core state
//! machines (Raft, Controller, Replica) and turns their actions into disk operations and
//! messages. It holds no replication logic of its own.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    ApiKey, CreateTopicsRequest as KafkaCreateTopics, FetchRequest as KafkaFetch, FindCoordinatorRequest, InitProducerIdRequest,
    MetadataRequest, ProduceRequest, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use odradek_core::broker::txn::{self as txn_api, Routed as TxnRouted, Target as TxnTarget, TxnResponse, WriteMarkersCall};
use odradek_core::txn::{self, TxnConfig, TXN_TOPIC};
use odradek_core::broker::producer_ids::{self, ProducerIdBlock};
use odradek_core::controller::{
    self, AllocateProducerIdsRequest, AlterPartitionRequest, Controller,
    ControllerConfig, CreatableTopic, CreateTopicsRequest, Response,
};
use odradek_core::ids::{LeaderEpoch, NodeId, Offset};
use odradek_core::fetcher::{self, TopicPartition, FOLLOWER_FETCH_VERSION};
use odradek_core::controller_rpc::ControllerRequest;
use odradek_core::lifecycle::{self, BrokerLifecycle};
use odradek_core::quorum::{self, Quorum};
use odradek_core::raft::{self, Raft, RaftConfig};
use odradek_core::replica::{self, Completion, EpochEndOffset, FetchAnswer, FetchRequest, Replica, ReplicaConfig, Role};
use odradek_core::{broker, wire, ErrorCode};
use odradek_core::broker::groups::{GroupResponse, Merge};
use odradek_core::broker::groups::{GroupRequest, Target};
use odradek_core::broker::partitions::{FetchCall, FetchPart, ProduceCall};
use odradek_core::shard::shard_for;
use odradek_core::group::{GroupConfig, GroupCoordinator, OFFSETS_TOPIC};

use crate::disk::{Clock, Disk};

pub const TOPIC: &str = "t";

/// Everything that travels between endpoints (nodes and clients).
#[derive(Debug, Clone)]
pub enum Payload {
    /// A Raft message in core's own encoding (decoded by the receiver).
    Raft(Bytes),
    CtrlRequest { rpc_id: u64, request: ControllerRequest },
    CtrlResponse { rpc_id: u64, response: Response },
    /// A follower's Fetch v12 frame from its replica fetcher (`core::fetcher`), and the
    /// leader's answer frame. The wire id carries the sender's incarnation.
    ReplicaFetch { wire_id: u64, frame: Bytes },
    ReplicaFetchAnswer { wire_id: u64, frame: Bytes },
    EpochQuery { request_id: u64, partition: TopicPartition, current: LeaderEpoch, epoch: LeaderEpoch },
    EpochAnswer { request_id: u64, result: Result<EpochEndOffset, ErrorCode> },
    /// A Kafka request frame (size prefix, header, body) from a client.
    Kafka { frame: Bytes },
    /// A node's Kafka response frame to a client (size prefix, header, body).
    KafkaResponse { frame: Bytes },
    /// A transaction coordinator's WriteTxnMarkers to a partition leader, and its answer.
    Markers { rpc_id: u64, request: WriteTxnMarkersRequest },
    MarkersAnswer { rpc_id: u64, response: WriteTxnMarkersResponse },
    /// A partition leader's AddPartitionsToTxn v4 (verify only) to a coordinator, and its
    /// answer.
    Verify { rpc_id: u64, request: AddPartitionsToTxnRequest },
    VerifyAnswer { rpc_id: u64, response: AddPartitionsToTxnResponse },
    /// An ACL client's CreateAcls or DeleteAcls, as the controller request a broker forwards
    /// (the `acls` scenario checks the metadata log, not the Kafka framing), and the answer
    /// the node relays: `None` when no controller answered within the node's RPC timeout.
    AclRequest { corr: i32, request: ControllerRequest },
    AclAnswer { corr: i32, response: Option<Response> },
}


/// A disk operation whose completion is scheduled by the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskOp {
    Vote { term: odradek_core::ids::Term, voted_for: Option<NodeId> },
    RaftSync { through: raft::Index, term: odradek_core::ids::Term },
    LogSync { id: u64, partition: TopicPartition, generation: u64 },
    /// A partition log's write ending at `end` (in the page cache from the start; its
    /// completion, `Appended`, comes later, so appends are in flight as in the broker).
    LogAppend { partition: TopicPartition, end: Offset, generation: u64 },
}

/// What a pump produced for the simulator to schedule.
#[derive(Debug)]
pub enum Output {
    Send { to: NodeId, payload: Payload },
    Disk(DiskOp),
    /// A committed metadata entry applied here (for the cross-node Raft check).
    Applied { index: raft::Index, term: odradek_core::ids::Term, data: Bytes },
    /// An acks=all produce answered OK: `end` offsets, checked against the HW at once.
    AckedAll { end: Offset, high_watermark: Offset },
    /// A driver-visible breach of a replica rule (the simulator fails the run).
    Violation(String),
    /// A transaction coordinator sent a decision's markers (the simulator may crash it now).
    MarkersSent,
    /// The process stops itself (a failed fsync): the simulator crashes it.
    Halt,
    /// A controlled shutdown ended (`timed_out`: before the controller moved every
    /// leadership): the process exits.
    Stopped { timed_out: bool },
    /// Notices between the node's cores are queued: deliver them later
    /// ([`Node::deliver_core_mail`]), as the broker's cores hear of each other's partitions
    /// over their channels.
    CoreMail,
}

/// A controlled shutdown under way: first the waiting produces drain, then the lifecycle
/// asks the controller to move this broker's leaderships, as the broker's core 0 does.
struct Stopping {
    drain_until: i64,
    deadline: i64,
    asked: bool,
}

/// The broker's bounds on a controlled shutdown (`io/src/cluster.rs`).
const CONTROLLED_SHUTDOWN_TIMEOUT_MS: i64 = 30_000;
const PRODUCE_DRAIN_TIMEOUT_MS: i64 = 10_000;

enum Rpc {
    /// A registration or heartbeat of the broker's lifecycle, by its id there.
    Lifecycle { id: u64 },
    Alter { partition: TopicPartition, request_id: u64, generation: u64 },
    /// `__consumer_offsets`, asked for by a FindCoordinator that found none.
    CreateOffsets,
    /// A client's CreateTopics, forwarded.
    CreateTopics { client: NodeId, corr: i32, version: i16, request: KafkaCreateTopics },
    /// A block of producer ids for a client's InitProducerId.
    ProducerIds { client: NodeId, corr: i32, version: i16 },
    /// `__transaction_state`, asked for by a FindCoordinator that found none.
    CreateTxnState,
    /// A block of producer ids for the transaction coordinator on `core`.
    TxnProducerId { core: usize, token: u64 },
    /// Markers sent to another node for the coordinator's round `agg`.
    Markers { agg: u64, partitions: Vec<(String, i32)> },
    /// A leader's verification of a transactional batch, asked of another node's coordinator
    /// for the produce `token` on `core`.
    Verify { core: usize, token: u64, partition: (String, i32) },
    /// An ACL client's CreateAcls or DeleteAcls, forwarded.
    Acls { client: NodeId, corr: i32 },
}

/// A client's transaction request, split into coordinator calls (`core::broker::txn`).
struct TxnCall {
    reply: TxnReply,
    routed: TxnRouted,
    answers: Vec<Option<txn::Response>>,
}

/// Who hears a transaction call's answer.
enum TxnReply {
    /// A client's request.
    Client { client: NodeId, corr: i32, version: i16 },
    /// This node's leader verifying the produce `token` on `core` (KIP-890).
    Verify { core: usize, token: u64, partition: (String, i32) },
    /// Another node's leader verifying.
    Remote { to: NodeId, rpc_id: u64 },
}

/// One coordinator's WriteMarkers output, spread over the leaders it names.
struct MarkerRound {
    core: usize,
    token: u64,
    results: Vec<((String, i32), Option<ErrorCode>)>,
    pending: usize,
}

/// A WriteTxnMarkers this node runs on its cores, and who hears its answer.
struct MarkerCall {
    reply: MarkerReply,
    call: WriteMarkersCall,
    answers: Vec<(usize, Option<ErrorCode>)>,
    pending: usize,
}

enum MarkerReply {
    /// This node's coordinator round, for these partitions.
    Local { round: u64, partitions: Vec<(String, i32)> },
    /// Another node's coordinator.
    Remote { to: NodeId, rpc_id: u64 },
}

/// A client's group request, split into coordinator calls (`core::broker::groups`), whose
/// answers merge into one Kafka response.
struct GroupCall {
    client: NodeId,
    corr: i32,
    version: i16,
    merge: Merge,
    answers: Vec<Option<GroupResponse>>,
}

/// A Fetch, a follower's or a client's, that the node holds in its shard's purgatory until it
/// has something to answer or its `max_wait_ms` passes, as the broker's Fetch handler does.
struct Parked {
    /// The core whose connection took the request: it parks the fetch in its purgatory and
    /// reads every part on the owning cores.
    core: usize,
    from: NodeId,
    /// A follower's fetch is answered under its wire id, a client's as a Kafka response.
    wire_id: Option<u64>,
    version: i16,
    correlation_id: i32,
    call: FetchCall,
}

/// The partition the producers, consumers and the history checker use.
pub fn tp() -> TopicPartition {
    TopicPartition::new(TOPIC, 0)
}

/// `offsets.topic.num.partitions` in the simulated cluster.
pub const OFFSETS_PARTITIONS: i32 = 2;
pub const TXN_PARTITIONS: i32 = 2;

/// The transaction coordinator's settings in the simulation: few partitions, and timed-out
/// transactions found within a second.
pub fn txn_config() -> TxnConfig {
    TxnConfig { partitions: TXN_PARTITIONS, offsets_topic_partitions: OFFSETS_PARTITIONS, abort_check_interval_ms: 1_000, ..TxnConfig::default() }
}

/// A client's Produce waiting for its partitions' answers (`core::broker::partitions`).
struct ProduceWaiter {
    client: NodeId,
    corr: i32,
    version: i16,
    call: ProduceCall,
    answers: Vec<(usize, Result<replica::ProduceAck, odradek_core::validate::Refusal>)>,
    pending: usize,
}

/// One partition of a waiting Produce: its call, its place there, its partition and how many
/// records it carries (for the acks=all check).
struct ProducePending {
    call: u64,
    position: usize,
    partition: TopicPartition,
    records: i64,
    acks: i16,
}

/// The process state lost on a crash; the disk and clock survive.
pub struct Process {
    /// The metadata quorum member: Raft and the controller, joined as the broker joins them.
    pub quorum: Quorum,
    /// The broker's data plane, one state machine per core as the broker runs them: each
    /// holds the replicas `shard_for` gives its core, its replica fetchers, its waiting
    /// produces, its fetch purgatory and its group coordinator.
    pub shards: Vec<broker::Shard>,
    /// Notices for other cores (a partition's high watermark or written end moved there),
    /// waiting for [`Node::deliver_core_mail`].
    core_mail: VecDeque<(usize, TopicPartition)>,
    /// Registration, heartbeats and the serving gate, as the broker runs them.
    lifecycle: BrokerLifecycle,
    rpcs: BTreeMap<u64, (Rpc, i64)>,
    next_rpc: u64,
    /// This broker's producer ids (`core::broker::producer_ids`), as core 0 of the broker holds them.
    producer_ids: ProducerIdBlock,
    /// Controller request id → (requester, its rpc id).
    ctrl_requests: BTreeMap<u64, (NodeId, u64)>,
    next_ctrl_request: u64,
    /// Follower fetches in the shard's purgatory, by wait id.
    parked: BTreeMap<u64, Parked>,
    next_wait: u64,
    produces: BTreeMap<u64, ProduceWaiter>,
    /// Produce token → the partition's part.
    produce_parts: BTreeMap<u64, ProducePending>,
    next_produce: u64,
    /// Epoch query wire id → the partition, its generation and its replica's request id.
    epoch_queries: BTreeMap<u64, (TopicPartition, u64, u64)>,
    next_query: u64,
    /// Replica inputs produced while draining its actions (AlterPartition without a
    /// controller to send to): request id and generation.
    deferred_alter_errors: VecDeque<(TopicPartition, u64, u64)>,
    /// Group requests waiting for their parts' answers, by the id of their first part.
    group_calls: BTreeMap<u64, GroupCall>,
    /// Part id → (its call, its place in the call).
    group_parts: BTreeMap<u64, (u64, usize)>,
    next_group_part: u64,
    txn_calls: BTreeMap<u64, TxnCall>,
    /// Part id → (its call, its place in the call).
    txn_parts: BTreeMap<u64, (u64, usize)>,
    marker_rounds: BTreeMap<u64, MarkerRound>,
    marker_calls: BTreeMap<u64, MarkerCall>,
    /// Produce token of a marker → (its call, its position).
    marker_parts: BTreeMap<u64, (u64, usize)>,
    next_marker: u64,
    controller_hint: usize,
    /// The metadata image (its log index) last handed to the shard.
    image_applied: Option<raft::Index>,
    stopping: Option<Stopping>,
}

pub struct Node {
    pub id: NodeId,
    pub voters: Vec<NodeId>,
    pub disk: Disk,
    pub clock: Clock,
    pub process: Option<Process>,
    pub paused_until: Option<i64>,
    /// The partition's log dir stalls until then: its syncs hang (the metadata log, on its
    /// own dir, is unaffected).
    pub log_stall_until: Option<i64>,
    pub incarnation: u64,
    pub replica_config: ReplicaConfig,
    /// Cores of the broker process: each runs its own `broker::Shard`.
    pub cores: usize,
    /// Global time of the timer event this node has queued.
    pub timer_at: Option<i64>,
    /// Answers to an earlier incarnation's fetches and epoch queries, dropped.
    pub stale_answers: usize,
}

/// Replica request ids on the wire carry the incarnation above these bits: the replica numbers
/// its requests from 0 in every incarnation, and only the incarnation that asked may take the
/// answer (in `io` the answer comes back on the asking process's own TCP connection).
const INCARNATION_SHIFT: u32 = 40;
/// A replica fetch's wire id carries the asking core above these bits (each core's fetchers
/// number their requests from 0).
const CORE_SHIFT: u32 = 32;

pub const RPC_TIMEOUT_MS: i64 = 2_000;
pub const HEARTBEAT_INTERVAL_MS: i64 = 500;
pub const SESSION_TIMEOUT_MS: i64 = 3_000;

impl Process {
    /// The core owning `partition` (`core::shard::shard_for`, the broker's table).
    pub fn core_of(&self, partition: &TopicPartition) -> usize {
        shard_for(&partition.topic, partition.partition, self.shards.len()).0
    }

    pub fn shard_of(&mut self, partition: &TopicPartition) -> &mut broker::Shard {
        let core = self.core_of(partition);
        &mut self.shards[core]
    }

    pub fn replica_of(&self, partition: &TopicPartition) -> Option<&Replica> {
        self.shards[self.core_of(partition)].replica(partition)
    }

    pub fn replica(&self) -> Option<&Replica> {
        self.replica_of(&tp())
    }

    pub fn disk_busy(&self) -> bool {
        self.shards[self.core_of(&tp())].disk_busy(&tp())
    }

    /// Kafka's Fetch contract for a long poll: it waits only while none of its partitions has
    /// anything to answer (data past its fetch offset, or an error such as a lost
    /// leadership). -> each parked follower fetch that should have been answered by now.
    pub fn long_polls_held_with_answers(&self) -> Vec<String> {
        let mut held = Vec::new();
        for (wait, park) in &self.parked {
            for FetchPart { partition, request } in park.call.requests() {
                if self.core_mail.iter().any(|(core, p)| *core == park.core && p == partition) {
                    // News of it is on its way to the parking core.
                    continue;
                }
                let reason = match self.replica_of(partition) {
                    None => Some("the partition is not here".to_string()),
                    Some(r) if r.role() != Role::Leader || r.leader_epoch() != request.current_leader_epoch => {
                        Some(format!("the replica is {:?} in epoch {}", r.role(), r.leader_epoch().0))
                    }
                    Some(r) if r.written_offset() > request.fetch_offset => {
                        Some(format!("the leader has written up to {}", r.written_offset().0))
                    }
                    Some(_) => None,
                };
                if let Some(reason) = reason {
                    held.push(format!(
                        "long poll {wait} from node {} (epoch {}, offset {}) still parked although {reason}",
                        park.from, request.current_leader_epoch.0, request.fetch_offset.0
                    ));
                }
            }
        }
        held
    }

    /// A client read through the shard's fetch path (no purgatory: it does not wait).
    pub fn fetch(&mut self, now_ms: i64, request: &FetchRequest) -> Option<(FetchAnswer, Offset)> {
        let core = self.core_of(&tp());
        self.shards[core].fetch(now_ms, &tp(), request)
    }
}

impl Node {
    pub fn new(id: NodeId, voters: Vec<NodeId>, clock: Clock, replica_config: ReplicaConfig) -> Node {
        Node {
            id,
            voters,
            disk: Disk::default(),
            clock,
            process: None,
            paused_until: None,
            log_stall_until: None,
            incarnation: 0,
            replica_config,
            cores: 1,
            timer_at: None,
            stale_answers: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.process.is_some()
    }

    /// Starts the process from the disk (boot or restart after a crash).
    pub fn start(&mut self, local_ms: i64, seed: u64, out: &mut Vec<Output>) {
        self.incarnation += 1;
        let mut config = RaftConfig::new(self.id, self.voters.clone(), Vec::new());
        config.election_timeout_ms = 1_000;
        config.heartbeat_interval_ms = 200;
        let raft = Raft::restore(config, seed, local_ms, self.disk.hard_durable, self.disk.raft_log.clone())
            .expect("the simulated disk holds a consistent Raft log");
        let mut cconfig = ControllerConfig::new(self.id);
        cconfig.broker_session_timeout_ms = SESSION_TIMEOUT_MS;
        cconfig.default_replication_factor = 3;
        let controller = Controller::new(cconfig, seed ^ 0xc0);
        let mut incarnation_id = [0u8; 16];
        incarnation_id[..8].copy_from_slice(&seed.to_le_bytes());
        incarnation_id[8..].copy_from_slice(&self.incarnation.to_le_bytes());
        self.process = Some(Process {
            quorum: Quorum::new(raft, controller),
            shards: (0..self.cores as u64)
                .map(|core| {
                    let groups = GroupConfig { offsets_topic_partitions: OFFSETS_PARTITIONS, ..GroupConfig::default() };
                    broker::Shard::new(
                        self.id,
                        fetcher::DEFAULT_RESPONSE_MAX_BYTES,
                        self.replica_config.replica_fetch_response_timeout_ms,
                        GroupCoordinator::new(groups, seed ^ 0x9c ^ (core << 8)),
                        odradek_core::txn::TxnCoordinator::new(txn_config()),
                    )
                })
                .collect(),
            core_mail: VecDeque::new(),
            // Where FindCoordinator sends clients (the simulated network routes by id).
            lifecycle: BrokerLifecycle::new(
                self.id,
                incarnation_id,
                vec![controller::Endpoint { name: "PLAINTEXT".into(), host: format!("node-{}", self.id.0), port: 9092 }],
                HEARTBEAT_INTERVAL_MS,
                local_ms,
            ),
            rpcs: BTreeMap::new(),
            producer_ids: ProducerIdBlock::default(),
            // Unique across restarts, so a late answer to an earlier incarnation is not taken
            // for an answer to this one.
            next_rpc: self.incarnation << 32,
            ctrl_requests: BTreeMap::new(),
            next_ctrl_request: 0,
            parked: BTreeMap::new(),
            next_wait: 0,
            produces: BTreeMap::new(),
            produce_parts: BTreeMap::new(),
            next_produce: 0,
            epoch_queries: BTreeMap::new(),
            next_query: 0,
            deferred_alter_errors: VecDeque::new(),
            group_calls: BTreeMap::new(),
            group_parts: BTreeMap::new(),
            txn_calls: BTreeMap::new(),
            txn_parts: BTreeMap::new(),
            marker_rounds: BTreeMap::new(),
            marker_calls: BTreeMap::new(),
            marker_parts: BTreeMap::new(),
            next_marker: 0,
            image_applied: None,
            stopping: None,
            next_group_part: 0,
            controller_hint: 0,
        });
        self.pump(local_ms, out);
    }

    pub fn crash(&mut self) {
        self.process = None;
        self.paused_until = None;
    }

    /// Controlled shutdown (a SIGTERM): new produces are refused at once; once the waiting
    /// ones are answered (or after a bound) the lifecycle asks the controller to move this
    /// broker's leaderships; the process exits ([`Output::Stopped`]) when it leads nothing
    /// another broker could, or at the deadline.
    pub fn begin_shutdown(&mut self, now: i64) -> bool {
        let Some(p) = self.process.as_mut().filter(|p| p.stopping.is_none()) else { return false };
        for shard in &mut p.shards {
            shard.drain();
        }
        p.stopping = Some(Stopping {
            drain_until: now + PRODUCE_DRAIN_TIMEOUT_MS,
            deadline: now + CONTROLLED_SHUTDOWN_TIMEOUT_MS,
            asked: false,
        });
        true
    }

    /// The notices the node's cores sent each other since the last delivery: each core's
    /// long polls on those partitions read again.
    pub fn deliver_core_mail(&mut self, now: i64, out: &mut Vec<Output>) {
        let Some(p) = self.process.as_mut() else { return };
        while let Some((core, partition)) = p.core_mail.pop_front() {
            p.shards[core].notify(Some(&partition));
        }
        self.pump(now, out);
    }

    /// The wake-up time (local) of every timer of this process.
    pub fn next_wake(&self) -> Option<i64> {
        let p = self.process.as_ref()?;
        let mut wake = p.lifecycle.poll_timeout().unwrap_or(i64::MAX);
        if let Some(stop) = &p.stopping {
            wake = wake.min(if stop.asked { stop.deadline } else { stop.drain_until });
        }
        if let Some(t) = p.quorum.poll_timeout() {
            wake = wake.min(t);
        }
        for t in p.shards.iter().filter_map(broker::Shard::poll_timeout) {
            wake = wake.min(t);
        }
        for (_, deadline) in p.rpcs.values() {
            wake = wake.min(*deadline);
        }
        // A timer already due (the shard says "now" with `i64::MIN`) fires at once.
        Some(wake.max(0))
    }

    pub fn handle_timeout(&mut self, now: i64, out: &mut Vec<Output>) {
        let Some(p) = self.process.as_mut() else { return };
        p.quorum.handle_timeout(now);
        for shard in &mut p.shards {
            shard.handle_timeout(now);
        }
        // Controller RPCs without an answer: a transport failure.
        let expired: Vec<u64> =
            p.rpcs.iter().filter(|(_, (_, deadline))| *deadline <= now).map(|(&id, _)| id).collect();
        for id in expired {
            let (rpc, _) = p.rpcs.remove(&id).expect("listed");
            p.controller_hint += 1;
            match rpc {
                Rpc::Alter { partition, request_id, generation } => p.deferred_alter_errors.push_back((partition, request_id, generation)),
                Rpc::CreateTopics { client, corr, version, request } => out.push(create_topics_answer(client, corr, version, &request, None)),
                Rpc::Acls { client, corr } => out.push(Output::Send { to: client, payload: Payload::AclAnswer { corr, response: None } }),
                Rpc::ProducerIds { client, corr, version } => {
                    out.push(init_producer_id_answer(client, corr, version, Err(ErrorCode::CoordinatorLoadInProgress)))
                }
                Rpc::Lifecycle { id } => {
                    p.lifecycle.handle_response(now, id, None);
                }
                Rpc::TxnProducerId { core, token } => {
                    p.shards[core].handle_txn_producer_id(now, token, Err(ErrorCode::CoordinatorLoadInProgress));
                }
                Rpc::Markers { agg, partitions } => {
                    let results = txn_api::markers_results(&partitions, Err(ErrorCode::NetworkException));
                    marker_round_answered(p, now, agg, results);
                }
                Rpc::Verify { core, token, partition } => {
                    let result = txn_api::verify_result(&partition, Err(ErrorCode::NetworkException));
                    p.shards[core].handle_txn_verified(now, token, result);
                }
                _ => {}
            }
        }
        self.pump(now, out);
    }

    pub fn handle_message(&mut self, now: i64, from: NodeId, payload: Payload, out: &mut Vec<Output>) {
        let Some(p) = self.process.as_mut() else { return };
        match payload {
            Payload::Raft(bytes) => match raft::Message::decode(&bytes) {
                Ok(message) => p.quorum.handle_message(now, from, message),
                Err(e) => panic!("node {}: undecodable Raft message from {from}: {e}", self.id),
            },
            Payload::CtrlRequest { rpc_id, request } => {
                let id = p.next_ctrl_request;
                p.next_ctrl_request += 1;
                p.ctrl_requests.insert(id, (from, rpc_id));
                p.quorum.request(now, id, request);
            }
            Payload::CtrlResponse { rpc_id, response } => {
                if let Some((rpc, _)) = p.rpcs.remove(&rpc_id) {
                    on_ctrl_response(self.id, p, now, rpc, response, out);
                }
            }
            Payload::ReplicaFetch { wire_id, frame } => {
                let mut buf = BytesMut::from(&frame[..]);
                let request = wire::split_frame(&mut buf)
                    .ok_or_else(|| "partial frame".to_owned())
                    .and_then(|f| wire::parse_request(f).map_err(|e| e.to_string()))
                    .and_then(|r| r.decode::<KafkaFetch>().map(|body| (r.version(), r.correlation_id(), body)).map_err(|e| e.to_string()));
                let (version, correlation_id, request) = match request {
                    Ok(parsed) => parsed,
                    Err(e) => panic!("node {}: undecodable replica fetch from {from}: {e}", self.id),
                };
                let call = FetchCall::new(&request, version, now, p.shards.len())
                    .unwrap_or_else(|_| panic!("node {}: a replica fetch from {from} named a fetch session", self.id));
                // The sending core's connection lands on one of this node's cores.
                let core = (from.0 as usize + (wire_id >> CORE_SHIFT) as usize) % p.shards.len();
                let park = Parked { core, from, wire_id: Some(wire_id), version, correlation_id, call };
                serve_fetch(&self.disk, p, now, None, park, out);
            }
            Payload::ReplicaFetchAnswer { wire_id, frame } => {
                if let Some(id) = own_answer(self.incarnation, wire_id, &mut self.stale_answers) {
                    let (core, request_id) = ((id >> CORE_SHIFT) as usize, id & ((1 << CORE_SHIFT) - 1));
                    let mut buf = BytesMut::from(&frame[..]);
                    let answer = wire::split_frame(&mut buf)
                        .ok_or(ErrorCode::CorruptMessage)
                        .and_then(|f| {
                            wire::decode_response(f, ApiKey::Fetch, FOLLOWER_FETCH_VERSION, request_id as i32)
                                .map_err(|_| ErrorCode::CorruptMessage)
                        });
                    p.shards[core].handle_fetch_response(now, from, request_id, answer);
                }
            }
            Payload::EpochQuery { request_id, partition, current, epoch } => {
                let result = p.shard_of(&partition).offset_for_leader_epoch(&partition, current, epoch).unwrap_or(Err(ErrorCode::NotLeaderOrFollower));
                out.push(Output::Send { to: from, payload: Payload::EpochAnswer { request_id, result } });
            }
            Payload::EpochAnswer { request_id, result } => {
                let asked = p.epoch_queries.remove(&request_id);
                if let (Some(_), Some((partition, generation, request_id))) = (own_answer(self.incarnation, request_id, &mut self.stale_answers), asked) {
                    p.shard_of(&partition).handle_epoch_answer(now, &partition, generation, request_id, result);
                }
            }
            Payload::Kafka { frame } => self.on_kafka_request(now, from, frame, out),
            Payload::KafkaResponse { .. } | Payload::AclAnswer { .. } => {}
            Payload::AclRequest { corr, request } => {
                // Forwarded as a client's CreateTopics is: to the active controller as this
                // node knows it, answered when the controller answers or the RPC times out.
                let rpc_id = p.next_rpc;
                p.next_rpc += 1;
                let to = controller_target(p, &self.voters);
                p.rpcs.insert(rpc_id, (Rpc::Acls { client: from, corr }, now + RPC_TIMEOUT_MS));
                out.push(Output::Send { to, payload: Payload::CtrlRequest { rpc_id, request } });
            }
            Payload::Markers { rpc_id, request } => {
                start_marker_call(p, now, request, MarkerReply::Remote { to: from, rpc_id }, out);
            }
            Payload::MarkersAnswer { rpc_id, response } => {
                if let Some((Rpc::Markers { agg, partitions }, _)) = p.rpcs.remove(&rpc_id) {
                    let results = txn_api::markers_results(&partitions, Ok(&response));
                    marker_round_answered(p, now, agg, results);
                }
            }
            Payload::Verify { rpc_id, request } => {
                let routed = txn_api::route_batch(&request, &txn_config());
                start_txn_call(p, now, TxnReply::Remote { to: from, rpc_id }, routed, out);
            }
            Payload::VerifyAnswer { rpc_id, response } => {
                if let Some((Rpc::Verify { core, token, partition }, _)) = p.rpcs.remove(&rpc_id) {
                    let result = txn_api::verify_result(&partition, Ok(&response));
                    p.shards[core].handle_txn_verified(now, token, result);
                }
            }
        }
        self.pump(now, out);
    }

    /// A client's Kafka request: framing and header through `core::wire`, body through the
    /// `kafka-protocol` codec, then the replica; the answer is a Kafka response frame built by
    /// the functions the broker's handlers use (`core::broker`, `core::fetcher`).
    fn on_kafka_request(&mut self, now: i64, from: NodeId, frame: Bytes, out: &mut Vec<Output>) {
        let Some(p) = self.process.as_mut() else { return };
        let mut buf = BytesMut::from(&frame[..]);
        let Some(frame) = wire::split_frame(&mut buf) else {
            panic!("client sent a partial frame");
        };
        let request = wire::parse_request(frame).expect("clients send valid requests");
        let corr = request.correlation_id();
        let version = request.version();
        match request.api_key {
            ApiKey::Metadata => {
                let body: MetadataRequest = request.decode().expect("valid metadata request");
                let names: Option<Vec<String>> =
                    body.topics.map(|topics| topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect());
                let controller_id = p.quorum.raft().leader().map_or(-1, |l| l.0);
                let answer = broker::metadata_response(p.quorum.controller().image(), names.as_deref(), version, "odradek-sim", controller_id, "PLAINTEXT");
                let frame = wire::encode_response(ApiKey::Metadata, version, corr, &answer).expect("a metadata answer encodes");
                out.push(Output::Send { to: from, payload: Payload::KafkaResponse { frame } });
            }
            ApiKey::Produce => {
                let body: ProduceRequest = request.decode().expect("valid produce");
                let acks = body.acks;
                let (call, parts) = ProduceCall::new(body, version, p.shards.len());
                let call_id = p.next_produce;
                let mut answers = Vec::new();
                let mut pending = 0;
                // Each part on its owning core (the broker's `scatter`; the hop is immediate).
                for (core, position, part) in parts.into_iter().flat_map(|(c, parts)| parts.into_iter().map(move |(i, p)| (c.0, i, p))) {
                    let partition = part.partition.clone();
                    let records: i64 =
                        odradek_core::batch::scan_headers(&part.records).map(|(_, h)| i64::from(h.record_count)).sum();
                    // Rule 7: acks=all is refused, before any append, while the committed ISR
                    // is below min.insync.replicas.
                    let before = p.shards[core].replica(&partition).map(|r| {
                        let min_isr = p_min_isr(p.quorum.controller()).unwrap_or(self.replica_config.min_insync_replicas);
                        let below_min = acks == -1 && r.role() == replica::Role::Leader && r.isr().len() < min_isr;
                        (below_min, r.isr(), r.log_end_offset())
                    });
                    let token = p.next_produce;
                    p.next_produce += 1;
                    if let Err(error) = p.shards[core].produce_part(now, part, token) {
                        answers.push((position, Err(error)));
                        continue;
                    }
                    if let Some((true, isr, end_before)) = before {
                        if p.shards[core].replica(&partition).is_some_and(|r| r.log_end_offset() != end_before) {
                            out.push(Output::Violation(format!(
                                "node {}: acks=all produce appended at {end_before} with ISR {isr:?} below min.insync.replicas",
                                self.id
                            )));
                        }
                    }
                    if acks != 0 {
                        p.produce_parts.insert(token, ProducePending { call: call_id, position, partition, records, acks });
                        pending += 1;
                    }
                }
                let waiter = ProduceWaiter { client: from, corr, version, call, answers, pending };
                if pending > 0 {
                    p.produces.insert(call_id, waiter);
                } else if acks != 0 || !waiter.answers.is_empty() {
                    // acks=0 hears back only about errors.
                    out.push(Output::Send { to: from, payload: produce_answer(waiter) });
                }
            }
            ApiKey::Fetch => {
                let body: KafkaFetch = request.decode().expect("valid fetch");
                match FetchCall::new(&body, version, now, p.shards.len()) {
                    Ok(call) => {
                        // The client's connection lands on one of the node's cores.
                        let core = from.0 as usize % p.shards.len();
                        serve_fetch(&self.disk, p, now, None, Parked { core, from, wire_id: None, version, correlation_id: corr, call }, out)
                    }
                    Err(refused) => {
                        let frame = wire::encode_response(ApiKey::Fetch, version, corr, &refused).expect("a fetch answer encodes");
                        out.push(Output::Send { to: from, payload: Payload::KafkaResponse { frame } });
                    }
                }
            }
            ApiKey::CreateTopics => {
                let body: KafkaCreateTopics = request.decode().expect("valid create topics");
                let forwarded = broker::admin::create_topics_request(&body);
                let rpc_id = p.next_rpc;
                p.next_rpc += 1;
                let to = controller_target(p, &self.voters);
                let rpc = Rpc::CreateTopics { client: from, corr, version, request: body };
                p.rpcs.insert(rpc_id, (rpc, now + RPC_TIMEOUT_MS));
                out.push(Output::Send { to, payload: Payload::CtrlRequest { rpc_id, request: ControllerRequest::CreateTopics(forwarded) } });
            }
            ApiKey::InitProducerId if txn_api::is_transactional_init(&request.decode::<InitProducerIdRequest>().expect("valid init producer id")) => {
                let body: InitProducerIdRequest = request.decode().expect("valid init producer id");
                let routed = txn_api::route_init(&body, version, &txn_config());
                start_txn_call(p, now, TxnReply::Client { client: from, corr, version }, routed, out);
            }
            key if txn_api::is_txn_api(key) => {
                let routed = txn_api::route(&request, p.quorum.controller().image(), &txn_config()).expect("a valid transaction request");
                start_txn_call(p, now, TxnReply::Client { client: from, corr, version }, routed, out);
            }
            ApiKey::InitProducerId => {
                let body: InitProducerIdRequest = request.decode().expect("valid init producer id");
                if let Some(refused) = producer_ids::init_refusal(&body) {
                    let frame = wire::encode_response(ApiKey::InitProducerId, version, corr, &refused).expect("encodes");
                    out.push(Output::Send { to: from, payload: Payload::KafkaResponse { frame } });
                } else if let Some(id) = p.producer_ids.take() {
                    out.push(init_producer_id_answer(from, corr, version, Ok(id)));
                } else if let Some(broker_epoch) = p.lifecycle.broker_epoch() {
                    // As the broker's core 0 does: a new block from the active controller.
                    let rpc_id = p.next_rpc;
                    p.next_rpc += 1;
                    p.rpcs.insert(rpc_id, (Rpc::ProducerIds { client: from, corr, version }, now + RPC_TIMEOUT_MS));
                    let request = ControllerRequest::AllocateProducerIds(AllocateProducerIdsRequest { broker_id: self.id, broker_epoch });
                    let to = controller_target(p, &self.voters);
                    out.push(Output::Send { to, payload: Payload::CtrlRequest { rpc_id, request } });
                } else {
                    out.push(init_producer_id_answer(from, corr, version, Err(ErrorCode::CoordinatorLoadInProgress)));
                }
            }
            ApiKey::FindCoordinator => {
                let body: FindCoordinatorRequest = request.decode().expect("valid find coordinator");
                let (answer, create) =
                    broker::groups::find_coordinator(p.quorum.controller().image(), &body, version, OFFSETS_PARTITIONS, TXN_PARTITIONS, "PLAINTEXT");
                let (rpc, topic) = match create {
                    Some(TXN_TOPIC) => (Rpc::CreateTxnState, txn_state_topic()),
                    _ => (Rpc::CreateOffsets, offsets_topic()),
                };
                let creating = |r: &Rpc| matches!((r, &rpc), (Rpc::CreateOffsets, Rpc::CreateOffsets) | (Rpc::CreateTxnState, Rpc::CreateTxnState));
                if create.is_some() && !p.rpcs.values().any(|(r, _)| creating(r)) {
                    let rpc_id = p.next_rpc;
                    p.next_rpc += 1;
                    p.rpcs.insert(rpc_id, (rpc, now + RPC_TIMEOUT_MS));
                    let request = ControllerRequest::CreateTopics(CreateTopicsRequest { topics: vec![topic], validate_only: false });
                    let to = controller_target(p, &self.voters);
                    out.push(Output::Send { to, payload: Payload::CtrlRequest { rpc_id, request } });
                }
                let frame = wire::encode_response(ApiKey::FindCoordinator, version, corr, &answer).expect("a coordinator answer encodes");
                out.push(Output::Send { to: from, payload: Payload::KafkaResponse { frame } });
            }
            key if broker::groups::is_group_api(key) => {
                let peer = format!("client-{}:1", from.0);
                let routed = broker::groups::route(&request, &peer, OFFSETS_PARTITIONS, p.quorum.controller().image()).expect("a valid group request");
                // Each part on the core owning its group's partition, or on every core, in the
                // order the broker's `groups::answer` merges them.
                let cores = p.shards.len();
                let calls: Vec<(usize, GroupRequest)> = routed
                    .parts
                    .into_iter()
                    .flat_map(|(target, part)| match target {
                        Target::Group(partition) => vec![(shard_for(OFFSETS_TOPIC, partition, cores).0, part)],
                        Target::EveryCore => (0..cores).map(|core| (core, part.clone())).collect(),
                    })
                    .collect();
                let call_id = p.next_group_part;
                p.group_calls.insert(call_id, GroupCall { client: from, corr, version, merge: routed.merge, answers: vec![None; calls.len()] });
                for (place, (core, part)) in calls.into_iter().enumerate() {
                    let part_id = p.next_group_part;
                    p.next_group_part += 1;
                    p.group_parts.insert(part_id, (call_id, place));
                    p.shards[core].group_request(now, part_id, part);
                }
            }
            other => panic!("client sent {other:?}"),
        }
    }

    /// Drains every state machine until none has output; then re-runs parked fetches and
    /// hands the partition state from the metadata image to the replica.
    pub fn pump(&mut self, now: i64, out: &mut Vec<Output>) {
        let id = self.id;
        let voters = self.voters.clone();
        for _ in 0..10_000 {
            let Some(p) = self.process.as_mut() else { return };
            let mut progressed = false;
            while let Some(output) = p.quorum.poll_output(now) {
                progressed = true;
                match output {
                    quorum::Output::PersistVote { term, voted_for } => {
                        self.disk.hard_written = raft::HardState { term, voted_for };
                        out.push(Output::Disk(DiskOp::Vote { term, voted_for }));
                    }
                    quorum::Output::Truncate { from } => {
                        let keep = (from.0 as usize).saturating_sub(1);
                        self.disk.raft_log.truncate(keep);
                        self.disk.raft_durable = self.disk.raft_durable.min(keep);
                    }
                    quorum::Output::Append { entries } => {
                        let last = entries.last().expect("non-empty append");
                        let (through, term) = (last.index, last.term);
                        assert_eq!(entries[0].index.0 as usize, self.disk.raft_log.len() + 1);
                        self.disk.raft_log.extend(entries);
                        out.push(Output::Disk(DiskOp::RaftSync { through, term }));
                    }
                    quorum::Output::Send { to, message } => {
                        out.push(Output::Send { to, payload: Payload::Raft(message.encode()) });
                    }
                    quorum::Output::Applied { entries } => {
                        for entry in entries {
                            out.push(Output::Applied { index: entry.index, term: entry.term, data: entry.data });
                        }
                    }
                    quorum::Output::Leader { .. } => {}
                    quorum::Output::Reply { id: request_id, response } => {
                        if let Some((to, rpc_id)) = p.ctrl_requests.remove(&request_id) {
                            out.push(Output::Send { to, payload: Payload::CtrlResponse { rpc_id, response } });
                        }
                    }
                }
            }
            // Broker: registration and heartbeats to the active controller.
            if let Some((lifecycle_id, request)) = p.lifecycle.poll_request(now, p.quorum.controller().applied_index()) {
                let rpc_id = p.next_rpc;
                p.next_rpc += 1;
                p.rpcs.insert(rpc_id, (Rpc::Lifecycle { id: lifecycle_id }, now + RPC_TIMEOUT_MS));
                let to = controller_target(p, &voters);
                out.push(Output::Send { to, payload: Payload::CtrlRequest { rpc_id, request } });
                progressed = true;
            }
            // The partition state from the committed image, to the replica, once this
            // incarnation is registered and unfenced (`BrokerLifecycle::serves`).
            let index = p.quorum.controller().applied_index();
            if p.image_applied != Some(index) && p.lifecycle.serves(p.quorum.controller().image()) {
                p.image_applied = Some(index);
                progressed = true;
                // Each core plans the partitions `shard_for` gives it, as the broker's cores do.
                let cores = p.shards.len();
                for core in 0..cores {
                    let owns = |tp: &TopicPartition| shard_for(&tp.topic, tp.partition, cores).0 == core;
                    let plan = p.shards[core].plan_image(p.quorum.controller().image(), owns);
                    for opening in &plan.open {
                        let mut config = self.replica_config.clone();
                        if let Some(min) = opening.min_insync_replicas {
                            config.min_insync_replicas = min;
                        }
                        let persisted = self.disk.log(&opening.partition).persisted_state(now);
                        p.shards[core].open(opening.partition.clone(), opening.topic_id, config, persisted);
                    }
                    p.shards[core].apply_image(now, plan);
                }
            }
            while let Some((partition, request_id, generation)) = p.deferred_alter_errors.pop_front() {
                progressed = true;
                p.shard_of(&partition).handle_alter_partition_response(now, &partition, generation, request_id, Err(ErrorCode::RequestTimedOut));
            }
            let ctrl_target = controller_target(p, &voters);
            // The broker's order (`core::broker::Shard`, its `PartitionDriver`s): one disk action
            // at a time per partition, appends queued behind a sync first and covered by it.
            for core in 0..p.shards.len() {
                while let Some(output) = p.shards[core].poll_output(now) {
                    progressed = true;
                    match output {
                        broker::Output::Disk { partition, generation, action } => {
                            let log = self.disk.log_mut(&partition);
                            let done = match action {
                                replica::Action::Append { base_offset, end_offset, records } => {
                                    log.append(base_offset, end_offset, &records);
                                    out.push(Output::Disk(DiskOp::LogAppend { partition: partition.clone(), end: end_offset, generation }));
                                    None
                                }
                                replica::Action::Truncate { to } => {
                                    log.truncate(to.0);
                                    Some(Some(Completion::Truncated { to }))
                                }
                                replica::Action::ResetLog { start_offset } => {
                                    log.reset_log(start_offset.0);
                                    Some(Some(Completion::Truncated { to: start_offset }))
                                }
                                replica::Action::Sync { .. } => {
                                    // As the broker's group commit: the round covers all written so far.
                                    let sync_id = p.next_rpc;
                                    p.next_rpc += 1;
                                    log.pending_log_syncs.push((sync_id, log.log_end()));
                                    out.push(Output::Disk(DiskOp::LogSync { id: sync_id, partition: partition.clone(), generation }));
                                    None
                                }
                                replica::Action::PersistEpochCache { cache } => {
                                    log.epoch_checkpoint = Some(cache.encode());
                                    Some(None)
                                }
                                replica::Action::PersistHighWatermark { high_watermark } => {
                                    log.hw_checkpoint = high_watermark.0;
                                    Some(None)
                                }
                                replica::Action::AdvanceLogStart { start_offset } => {
                                    // The simulated disk never deletes: only the start moves.
                                    log.log_start = log.log_start.max(start_offset.0);
                                    Some(None)
                                }
                                other => unreachable!("not a disk action: {other:?}"),
                            };
                            if let Some(completion) = done {
                                p.shards[core].finish(now, &partition, generation, completion);
                            }
                        }
                        broker::Output::Fetch(request) => {
                            let frame = wire::encode_request(
                                ApiKey::Fetch,
                                FOLLOWER_FETCH_VERSION,
                                request.request_id as i32,
                                fetcher::CLIENT_ID,
                                &request.request,
                            )
                            .expect("a follower fetch encodes");
                            let wire_id = (self.incarnation << INCARNATION_SHIFT) | ((core as u64) << CORE_SHIFT) | request.request_id;
                            out.push(Output::Send { to: request.leader, payload: Payload::ReplicaFetch { wire_id, frame } });
                        }
                        broker::Output::EpochQuery { partition, generation, to, request_id, current_leader_epoch, leader_epoch } => {
                            // Each replica numbers its queries from 0: the wire id is the node's.
                            let query = p.next_query;
                            p.next_query += 1;
                            let wire_id = (self.incarnation << INCARNATION_SHIFT) | query;
                            p.epoch_queries.insert(wire_id, (partition.clone(), generation, request_id));
                            out.push(Output::Send {
                                to,
                                payload: Payload::EpochQuery { request_id: wire_id, partition, current: current_leader_epoch, epoch: leader_epoch },
                            });
                        }
                        broker::Output::AlterPartition { partition, generation, topic_id, request_id, request } => match p.lifecycle.broker_epoch() {
                            Some(broker_epoch) => {
                                let rpc_id = p.next_rpc;
                                p.next_rpc += 1;
                                let index = partition.partition;
                                p.rpcs.insert(rpc_id, (Rpc::Alter { partition, request_id, generation }, now + RPC_TIMEOUT_MS));
                                let request = ControllerRequest::AlterPartition(AlterPartitionRequest {
                                    broker_id: id,
                                    broker_epoch,
                                    topic_id,
                                    partition: index,
                                    leader_epoch: request.leader_epoch,
                                    partition_epoch: request.partition_epoch,
                                    new_isr: request.new_isr,
                                });
                                out.push(Output::Send { to: ctrl_target, payload: Payload::CtrlRequest { rpc_id, request } });
                            }
                            None => p.deferred_alter_errors.push_back((partition, request_id, generation)),
                        },
                        broker::Output::Produced { token, result } => {
                            if let Some((call_id, position)) = p.marker_parts.remove(&token) {
                                let call = p.marker_calls.get_mut(&call_id).expect("a marker's call waits");
                                call.answers.push((position, result.err()));
                                call.pending -= 1;
                                if call.pending == 0 {
                                    finish_marker_call(p, now, call_id, out);
                                }
                                continue;
                            }
                            let Some(part) = p.produce_parts.remove(&token) else { continue };
                            if let (Ok(ack), -1) = (&result, part.acks) {
                                let high_watermark = p.replica_of(&part.partition).map_or(Offset(-1), |r| r.high_watermark());
                                out.push(Output::AckedAll { end: ack.base_offset.plus(part.records), high_watermark });
                            }
                            let waiter = p.produces.get_mut(&part.call).expect("a part's produce waits");
                            waiter.answers.push((part.position, result.map_err(Into::into)));
                            waiter.pending -= 1;
                            if waiter.pending == 0 {
                                let waiter = p.produces.remove(&part.call).expect("listed");
                                out.push(Output::Send { to: waiter.client, payload: produce_answer(waiter) });
                            }
                        }
                        // The simulated clients send no DeleteRecords.
                        broker::Output::RecordsDeleted { token, .. } => {
                            out.push(Output::Violation(format!("node {id}: a DeleteRecords answer ({token}) nobody asked for")));
                        }
                        // The other cores' long polls may wait for it: one notice each, delivered
                        // later, as over the broker's channels.
                        broker::Output::Visible { partition, .. } => {
                            if p.core_mail.is_empty() && p.shards.len() > 1 {
                                out.push(Output::CoreMail);
                            }
                            for other in (0..p.shards.len()).filter(|&c| c != core) {
                                p.core_mail.push_back((other, partition.clone()));
                            }
                        }
                        broker::Output::Woken { wait } => {
                            if let Some(park) = p.parked.remove(&wait) {
                                serve_fetch(&self.disk, p, now, Some(wait), park, out);
                            }
                        }
                        broker::Output::GroupReply { id: part, response } => {
                            let Some((call_id, place)) = p.group_parts.remove(&part) else {
                                out.push(Output::Violation(format!("node {id}: a group answer ({part}) nobody asked for")));
                                continue;
                            };
                            let call = p.group_calls.get_mut(&call_id).expect("a part's call waits");
                            call.answers[place] = Some(response);
                            if call.answers.iter().all(Option::is_some) {
                                let call = p.group_calls.remove(&call_id).expect("present");
                                let answers = call.answers.into_iter().map(|a| a.expect("all in")).collect();
                                let frame = call.merge.merge(answers).encode(call.version, call.corr).expect("a group answer encodes");
                                out.push(Output::Send { to: call.client, payload: Payload::KafkaResponse { frame } });
                            }
                        }
                        broker::Output::TxnReply { id: part, response } => {
                            let Some((call_id, place)) = p.txn_parts.remove(&part) else {
                                out.push(Output::Violation(format!("node {id}: a transaction answer ({part}) nobody asked for")));
                                continue;
                            };
                            if let Some(call) = p.txn_calls.get_mut(&call_id) {
                                call.answers[place] = Some(response);
                            }
                            finish_txn_call(p, now, call_id, out);
                        }
                        broker::Output::NewProducerId { token } => {
                            if let Some(producer_id) = p.producer_ids.take() {
                                p.shards[core].handle_txn_producer_id(now, token, Ok(producer_id));
                            } else if let Some(broker_epoch) = p.lifecycle.broker_epoch() {
                                let rpc_id = p.next_rpc;
                                p.next_rpc += 1;
                                p.rpcs.insert(rpc_id, (Rpc::TxnProducerId { core, token }, now + RPC_TIMEOUT_MS));
                                let request = ControllerRequest::AllocateProducerIds(AllocateProducerIdsRequest { broker_id: id, broker_epoch });
                                out.push(Output::Send { to: ctrl_target, payload: Payload::CtrlRequest { rpc_id, request } });
                            } else {
                                p.shards[core].handle_txn_producer_id(now, token, Err(ErrorCode::CoordinatorLoadInProgress));
                            }
                        }
                        broker::Output::WriteMarkers { token, producer_id, producer_epoch, marker, partitions } => {
                            send_markers(p, id, now, core, token, producer_id, producer_epoch, marker, partitions, out);
                            out.push(Output::MarkersSent);
                        }
                        broker::Output::VerifyTxn { token, transactional_id, producer_id, producer_epoch, partition } => {
                            let request = txn_api::verify_request(&transactional_id, producer_id, producer_epoch, &partition);
                            match txn_api::coordinator_node(p.quorum.controller().image(), &transactional_id, &txn_config()) {
                                Err(error) => {
                                    let result = txn_api::verify_result(&partition, Err(error));
                                    p.shards[core].handle_txn_verified(now, token, result);
                                }
                                Ok(node) if node == id => {
                                    let routed = txn_api::route_batch(&request, &txn_config());
                                    start_txn_call(p, now, TxnReply::Verify { core, token, partition }, routed, out);
                                }
                                Ok(node) => {
                                    let rpc_id = p.next_rpc;
                                    p.next_rpc += 1;
                                    p.rpcs.insert(rpc_id, (Rpc::Verify { core, token, partition }, now + RPC_TIMEOUT_MS));
                                    out.push(Output::Send { to: node, payload: Payload::Verify { rpc_id, request } });
                                }
                            }
                        }
                        broker::Output::ReadCoordinatorLog { partition, generation, from, upto, max_bytes } => {
                            // Whole batches, as the broker's read of the partition's segments.
                            let log = self.disk.log(&partition);
                            let mut read = log.read(from.0, upto.0);
                            if read.len() > max_bytes {
                                let mut cut = 0;
                                for (position, header) in odradek_core::batch::scan_headers(&read) {
                                    if position + header.total_len() > max_bytes && cut > 0 {
                                        break;
                                    }
                                    cut = position + header.total_len();
                                }
                                read.truncate(cut);
                            }
                            p.shards[core].handle_coordinator_read(now, &partition, generation, Ok(read));
                        }
                    }
                }
            }
            if let Some(stop) = p.stopping.as_mut() {
                let waiting: usize = p.shards.iter_mut().map(broker::Shard::drain).sum();
                if !stop.asked && (waiting == 0 || now >= stop.drain_until) {
                    stop.asked = true;
                    p.lifecycle.begin_shutdown(now);
                    progressed = true;
                } else if stop.asked {
                    let acknowledged = p.lifecycle.shutdown() == lifecycle::Shutdown::Acknowledged;
                    // As the broker's `still_leading`: a partition left with this broker as its
                    // only ISR member has nobody else to lead it.
                    let leading = p.shards.iter().flat_map(broker::Shard::partitions).any(|(_, _, r)| r.role() == Role::Leader && r.isr().len() > 1);
                    if (acknowledged && !leading) || now >= stop.deadline {
                        out.push(Output::Stopped { timed_out: !(acknowledged && !leading) });
                        return;
                    }
                }
            }
            if !progressed {
                return;
            }
        }
        panic!("node {id}: pump did not settle");
    }

    /// A disk operation failed: its fsync returned an error. The replica has no failed-sync
    /// input and needs none: Kafka takes the failed log dir offline, and a broker whose only
    /// log dir (or metadata log dir) failed halts. Retrying is not an option: after a failed
    /// fsync the kernel may drop the dirty pages and a later fsync succeeds without them, so
    /// nothing the failed sync covered may ever be counted as durable in this incarnation.
    /// The process stops; what the sync covered is lost, or survives torn, as after a power
    /// loss, and recovery decides what stays.
    pub fn fail_disk(&mut self, op: DiskOp, out: &mut Vec<Output>) {
        if self.process.is_none() {
            return;
        }
        if let DiskOp::LogSync { id, partition, .. } = op {
            self.disk.log_mut(&partition).pending_log_syncs.retain(|&(i, _)| i != id);
        }
        out.push(Output::Halt);
    }

    /// A disk operation finished.
    pub fn complete_disk(&mut self, now: i64, op: DiskOp, out: &mut Vec<Output>) {
        let Some(p) = self.process.as_mut() else { return };
        match op {
            DiskOp::Vote { term, voted_for } => {
                self.disk.hard_durable = raft::HardState { term, voted_for };
                p.quorum.handle_completion(now, raft::Completion::VotePersisted { term, voted_for });
            }
            DiskOp::RaftSync { through, term } => {
                if self.disk.complete_raft_sync(through, term) {
                    p.quorum.handle_completion(now, raft::Completion::Persisted { through, term });
                }
            }
            DiskOp::LogAppend { partition, end, generation } => {
                p.shard_of(&partition).finish(now, &partition, generation, Some(Completion::Appended { end_offset: end }));
            }
            DiskOp::LogSync { id, partition, generation } => {
                if let Some(through) = self.disk.log_mut(&partition).complete_log_sync(id) {
                    p.shard_of(&partition).finish(now, &partition, generation, Some(Completion::Synced { through: Offset(through) }));
                }
            }
        }
        self.pump(now, out);
    }
}

fn on_ctrl_response(id: NodeId, p: &mut Process, now: i64, rpc: Rpc, response: Response, out: &mut Vec<Output>) {
    match (rpc, response) {
        (Rpc::Lifecycle { id: lifecycle_id }, response @ (Response::RegisterBroker(_) | Response::Heartbeat(_))) => {
            // Asked a controller that is not (or no longer) active: try the next one.
            let refused = match &response {
                Response::RegisterBroker(r) => r.error.is_some(),
                Response::Heartbeat(r) => r.error.as_ref().is_some_and(|e| {
                    !matches!(e.code(), ErrorCode::StaleBrokerEpoch | ErrorCode::BrokerIdNotRegistered)
                }),
                _ => false,
            };
            if refused {
                p.controller_hint += 1;
            }
            p.lifecycle.handle_response(now, lifecycle_id, Some(response));
        }
        (Rpc::Alter { partition, request_id, generation }, Response::AlterPartition(r)) => {
            let result = match (r.error, r.state) {
                (None, Some(state)) => {
                    let replicas = p
                        .quorum
                        .controller()
                        .image()
                        .topic_by_name(&partition.topic)
                        .and_then(|t| t.partitions.get(partition.partition as usize))
                        .map(|s| s.replicas.clone())
                        .unwrap_or_default();
                    Ok(replica::LeaderAndIsr {
                        leader_epoch: state.leader_epoch,
                        partition_epoch: state.partition_epoch,
                        isr: state.isr,
                        replicas,
                    })
                }
                (Some(e), _) => {
                    if e.code() == ErrorCode::NotController {
                        p.controller_hint += 1;
                    }
                    Err(e.code())
                }
                (None, None) => Err(ErrorCode::UnknownServerError),
            };
            p.shard_of(&partition).handle_alter_partition_response(now, &partition, generation, request_id, result);
        }
        (Rpc::TxnProducerId { core, token }, Response::AllocateProducerIds(r)) => {
            let id = refilled_producer_id(p, &r);
            p.shards[core].handle_txn_producer_id(now, token, id);
        }
        // Failed creations are retried on the next FindCoordinator that finds no topic.
        (Rpc::CreateOffsets | Rpc::CreateTxnState, Response::CreateTopics(results)) => {
            if results.iter().any(|r| r.error.as_ref().is_some_and(|e| e.code() == ErrorCode::NotController)) {
                p.controller_hint += 1;
            }
        }
        (Rpc::CreateTopics { client, corr, version, request }, Response::CreateTopics(results)) => {
            if results.iter().any(|r| r.error.as_ref().is_some_and(|e| e.code() == ErrorCode::NotController)) {
                p.controller_hint += 1;
            }
            out.push(create_topics_answer(client, corr, version, &request, Some(results)));
        }
        (Rpc::ProducerIds { client, corr, version }, Response::AllocateProducerIds(r)) => {
            let id = refilled_producer_id(p, &r);
            out.push(init_producer_id_answer(client, corr, version, id));
        }
        (Rpc::Acls { client, corr }, response @ (Response::CreateAcls(_) | Response::DeleteAcls(_))) => {
            let not_controller = match &response {
                Response::CreateAcls(results) => results.iter().any(|r| r.error.as_ref().is_some_and(|e| e.code() == ErrorCode::NotController)),
                Response::DeleteAcls(results) => results.iter().any(|r| r.error.as_ref().is_some_and(|e| e.code() == ErrorCode::NotController)),
                _ => false,
            };
            if not_controller {
                p.controller_hint += 1;
            }
            out.push(Output::Send { to: client, payload: Payload::AclAnswer { corr, response: Some(response) } });
        }
        (rpc, response) => {
            let kind = match rpc {
                Rpc::Lifecycle { .. } => "register or heartbeat",
                Rpc::Alter { .. } => "alter",
                Rpc::CreateOffsets | Rpc::CreateTxnState | Rpc::CreateTopics { .. } => "create topics",
                Rpc::ProducerIds { .. } | Rpc::TxnProducerId { .. } => "allocate producer ids",
                Rpc::Markers { .. } => "write markers",
                Rpc::Verify { .. } => "verify a transaction",
                Rpc::Acls { .. } => "create or delete ACLs",
            };
            panic!("node {id}: {kind} answered with {response:?}");
        }
    }
}

/// The replica's id of an answer meant for this incarnation; `None` (counted) for an answer
/// to an earlier one.
fn own_answer(incarnation: u64, wire_id: u64, stale: &mut usize) -> Option<u64> {
    if wire_id >> INCARNATION_SHIFT == incarnation {
        return Some(wire_id & ((1 << INCARNATION_SHIFT) - 1));
    }
    *stale += 1;
    None
}

/// The known Raft leader, or else the voters in turn.
fn controller_target(p: &Process, voters: &[NodeId]) -> NodeId {
    match p.quorum.raft().leader() {
        Some(leader) if p.controller_hint % 3 != 2 => leader,
        _ => voters[p.controller_hint % voters.len()],
    }
}

/// The next producer id from a block the controller allocated, as core 0 of the broker takes it.
fn refilled_producer_id(p: &mut Process, r: &controller::AllocateProducerIdsResponse) -> Result<i64, ErrorCode> {
    match &r.error {
        None => {
            p.producer_ids.refill(r.first_producer_id, r.count);
            p.producer_ids.take().ok_or(ErrorCode::CoordinatorLoadInProgress)
        }
        Some(e) => {
            if e.code() == ErrorCode::NotController {
                p.controller_hint += 1;
            }
            Err(ErrorCode::CoordinatorLoadInProgress)
        }
    }
}

fn init_producer_id_answer(client: NodeId, corr: i32, version: i16, id: Result<i64, ErrorCode>) -> Output {
    let frame = wire::encode_response(ApiKey::InitProducerId, version, corr, &producer_ids::init_answer(id)).expect("encodes");
    Output::Send { to: client, payload: Payload::KafkaResponse { frame } }
}

/// The Kafka answer to a client's CreateTopics from the controller's results (`None`: no
/// controller answered), built as the broker's handler builds it. Unlike the broker, the node
/// does not wait until the new topic is served: its one shard hears of it with the image.
fn create_topics_answer(client: NodeId, corr: i32, version: i16, request: &KafkaCreateTopics, results: Option<Vec<controller::CreateTopicResult>>) -> Output {
    let answer = broker::admin::create_topics_response(request, version, results, &odradek_core::topic::BrokerLayers::default());
    let frame = wire::encode_response(ApiKey::CreateTopics, version, corr, &answer).expect("a create topics answer encodes");
    Output::Send { to: client, payload: Payload::KafkaResponse { frame } }
}

/// `__transaction_state` as the broker creates it (`ServerConfig::transaction_state_topic`).
fn txn_state_topic() -> CreatableTopic {
    CreatableTopic {
        name: TXN_TOPIC.to_owned(),
        num_partitions: TXN_PARTITIONS,
        replication_factor: 3,
        configs: [("cleanup.policy".to_owned(), "compact".to_owned()), ("min.insync.replicas".to_owned(), "2".to_owned())]
            .into_iter()
            .collect(),
        assignments: Vec::new(),
    }
}

/// A client's transaction request: each part on the core owning its id's
/// `__transaction_state` partition (or every core), answered once all are in.
fn start_txn_call(p: &mut Process, now: i64, reply: TxnReply, mut routed: TxnRouted, out: &mut Vec<Output>) {
    let cores = p.shards.len();
    let calls: Vec<(usize, txn::Call)> = std::mem::take(&mut routed.parts)
        .into_iter()
        .flat_map(|(target, call)| match target {
            TxnTarget::Partition(partition) => vec![(shard_for(TXN_TOPIC, partition, cores).0, call)],
            TxnTarget::EveryCore => (0..cores).map(|core| (core, call.clone())).collect(),
        })
        .collect();
    let call_id = p.next_group_part;
    p.next_group_part += 1;
    p.txn_calls.insert(call_id, TxnCall { reply, routed, answers: vec![None; calls.len()] });
    for (place, (core, call)) in calls.into_iter().enumerate() {
        let part_id = p.next_group_part;
        p.next_group_part += 1;
        p.txn_parts.insert(part_id, (call_id, place));
        p.shards[core].txn_request(now, part_id, call);
    }
    finish_txn_call(p, now, call_id, out);
}

/// Answers the call once every part has (a call without parts at once).
fn finish_txn_call(p: &mut Process, now: i64, call_id: u64, out: &mut Vec<Output>) {
    let Some(call) = p.txn_calls.get(&call_id) else { return };
    if !call.answers.iter().all(Option::is_some) {
        return;
    }
    let call = p.txn_calls.remove(&call_id).expect("present");
    let answers = call.answers.into_iter().map(|a| a.expect("all in")).collect();
    let response = call.routed.answer(answers);
    match call.reply {
        TxnReply::Client { client, corr, version } => {
            let frame = response.encode(version, corr).expect("a transaction answer encodes");
            out.push(Output::Send { to: client, payload: Payload::KafkaResponse { frame } });
        }
        TxnReply::Verify { core, token, partition } => {
            let result = match &response {
                TxnResponse::AddPartitionsToTxn(r) => txn_api::verify_result(&partition, Ok(r)),
                _ => Err(ErrorCode::UnknownServerError),
            };
            p.shards[core].handle_txn_verified(now, token, result);
        }
        TxnReply::Remote { to, rpc_id } => {
            let TxnResponse::AddPartitionsToTxn(response) = response else { unreachable!("a verification is answered as one") };
            out.push(Output::Send { to, payload: Payload::VerifyAnswer { rpc_id, response } });
        }
    }
}

/// A WriteTxnMarkers on this node: each partition's marker on its owning core.
fn start_marker_call(p: &mut Process, now: i64, request: WriteTxnMarkersRequest, reply: MarkerReply, out: &mut Vec<Output>) {
    let (call, parts) = WriteMarkersCall::new(&request, p.shards.len());
    let call_id = p.next_marker;
    p.next_marker += 1;
    let mut answers = Vec::new();
    let mut pending = 0;
    for (core, parts) in parts {
        for (position, part) in parts {
            let token = p.next_produce;
            p.next_produce += 1;
            match p.shards[core.0].write_marker(now, &part.partition, part.producer_id, part.producer_epoch, part.marker, 5_000, token) {
                Ok(()) => {
                    p.marker_parts.insert(token, (call_id, position));
                    pending += 1;
                }
                Err(error) => answers.push((position, Some(error))),
            }
        }
    }
    p.marker_calls.insert(call_id, MarkerCall { reply, call, answers, pending });
    if pending == 0 {
        finish_marker_call(p, now, call_id, out);
    }
}

fn finish_marker_call(p: &mut Process, now: i64, call_id: u64, out: &mut Vec<Output>) {
    let call = p.marker_calls.remove(&call_id).expect("a waiting marker call");
    let response = call.call.answer(vec![call.answers]);
    match call.reply {
        MarkerReply::Local { round, partitions } => {
            let results = txn_api::markers_results(&partitions, Ok(&response));
            marker_round_answered(p, now, round, results);
        }
        MarkerReply::Remote { to, rpc_id } => out.push(Output::Send { to, payload: Payload::MarkersAnswer { rpc_id, response } }),
    }
}

/// One leader's share of a coordinator's round answered; the coordinator hears once all are.
fn marker_round_answered(p: &mut Process, now: i64, round: u64, results: Vec<((String, i32), Option<ErrorCode>)>) {
    let Some(r) = p.marker_rounds.get_mut(&round) else { return };
    r.results.extend(results);
    r.pending -= 1;
    if r.pending == 0 {
        let r = p.marker_rounds.remove(&round).expect("present");
        p.shards[r.core].handle_markers_written(now, r.token, r.results);
    }
}

/// A coordinator's markers ([`broker::Output::WriteMarkers`]) to the leaders the image names.
#[allow(clippy::too_many_arguments)]
fn send_markers(
    p: &mut Process,
    me: NodeId,
    now: i64,
    core: usize,
    token: u64,
    producer_id: i64,
    producer_epoch: i16,
    marker: odradek_core::batch::ControlMarker,
    partitions: Vec<(String, i32)>,
    voters_out: &mut Vec<Output>,
) {
    let mut by_leader: BTreeMap<NodeId, Vec<(String, i32)>> = BTreeMap::new();
    let mut results = Vec::new();
    for (topic, partition) in partitions {
        let image = p.quorum.controller().image();
        match image.topic_by_name(&topic).and_then(|t| t.partitions.get(partition as usize)).map(|s| s.leader) {
            None => results.push(((topic, partition), Some(ErrorCode::UnknownTopicOrPartition))),
            Some(NodeId::NONE) => results.push(((topic, partition), Some(ErrorCode::LeaderNotAvailable))),
            Some(leader) => by_leader.entry(leader).or_default().push((topic, partition)),
        }
    }
    let round = p.next_marker;
    p.next_marker += 1;
    p.marker_rounds.insert(round, MarkerRound { core, token, results, pending: by_leader.len() + 1 });
    for (leader, partitions) in by_leader {
        let request = txn_api::markers_request(producer_id, producer_epoch, marker, &partitions);
        if leader == me {
            start_marker_call(p, now, request, MarkerReply::Local { round, partitions }, voters_out);
        } else {
            let rpc_id = p.next_rpc;
            p.next_rpc += 1;
            p.rpcs.insert(rpc_id, (Rpc::Markers { agg: round, partitions }, now + RPC_TIMEOUT_MS));
            voters_out.push(Output::Send { to: leader, payload: Payload::Markers { rpc_id, request } });
        }
    }
    // The round's own share: partitions that needed no leader.
    marker_round_answered(p, now, round, Vec::new());
}

/// `__consumer_offsets` as the broker creates it (`ServerConfig::offsets_topic`).
fn offsets_topic() -> CreatableTopic {
    CreatableTopic {
        name: OFFSETS_TOPIC.to_owned(),
        num_partitions: OFFSETS_PARTITIONS,
        replication_factor: 3,
        configs: [("cleanup.policy".to_owned(), "compact".to_owned())].into_iter().collect(),
        assignments: Vec::new(),
    }
}

/// The topic's `min.insync.replicas` in this node's metadata image, if set.
fn p_min_isr(c: &Controller) -> Option<usize> {
    let topic = c.image().topic_by_name(TOPIC)?;
    topic.configs.get("min.insync.replicas")?.parse().ok()
}

pub fn topic_id_opt(c: &Controller) -> Option<controller::TopicId> {
    c.image().topic_by_name(TOPIC).map(|t| t.id)
}

pub fn partition_state(c: &Controller) -> Option<controller::PartitionState> {
    let topic = c.image().topic_by_name(TOPIC)?;
    topic.partitions.first().cloned()
}

/// Reads a Fetch's partitions from the shard (`core::broker::partitions::FetchCall`, the
/// broker's Fetch handler's path) and answers it, or parks it in the shard's purgatory:
/// parked before reading, as the broker's handler does.
fn serve_fetch(disk: &Disk, p: &mut Process, now: i64, wait: Option<u64>, park: Parked, out: &mut Vec<Output>) {
    // A long poll parks under one id read after read, as the broker's handler does.
    let wait = wait.unwrap_or_else(|| {
        p.next_wait += 1;
        p.next_wait - 1
    });
    p.shards[park.core].park(wait, park.call.watched(), park.call.deadline_ms());
    // Each part read on its owning core (the broker's `scatter`; the hop is immediate).
    let answers = park
        .call
        .groups()
        .iter()
        .map(|(core, parts)| {
            parts
                .iter()
                .map(|(position, part)| {
                    let read = p.shards[core.0].fetch_part(now, part);
                    let log = disk.log(&part.partition);
                    let records = read.range().map_or_else(Bytes::new, |r| log.read_for_consumer(r.from.0, r.upto.0));
                    (*position, read.into_response(Ok(records)))
                })
                .collect()
        })
        .collect();
    let answers = park.call.merge(answers);
    if !park.call.complete(&answers, now) {
        p.parked.insert(wait, park);
        return;
    }
    p.shards[park.core].unpark(wait);
    let frame = wire::encode_response(ApiKey::Fetch, park.version, park.correlation_id, &park.call.answer(answers))
        .expect("a fetch answer encodes");
    let payload = match park.wire_id {
        Some(wire_id) => Payload::ReplicaFetchAnswer { wire_id, frame },
        None => Payload::KafkaResponse { frame },
    };
    out.push(Output::Send { to: park.from, payload });
}

/// A Produce's whole answer, as the broker's handler builds it.
fn produce_answer(waiter: ProduceWaiter) -> Payload {
    let body = waiter.call.answer(vec![waiter.answers]);
    let frame = wire::encode_response(ApiKey::Produce, waiter.version, waiter.corr, &body).expect("a produce answer encodes");
    Payload::KafkaResponse { frame }
}
