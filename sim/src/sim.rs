//! The simulator: a deterministic discrete-event loop over simulated time. It owns the
//! network, the nodes (each a driver over core), the clients and the fault schedule, checks
//! invariants after every event, and hashes the trace.
//!
//! Randomness comes from separate ChaCha streams derived from the seed, one per concern
//! (options, network, disk, faults, workload, clocks), so a draw in one does not shift another.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest as KafkaFetch, FetchResponse as KafkaFetchResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, ProduceRequest, ProduceResponse as KafkaProduceResponse, TopicName,
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, ProducerId, TransactionalId,
};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic as KafkaCreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{CreateTopicsRequest as KafkaCreateTopicsRequest, CreateTopicsResponse as KafkaCreateTopicsResponse};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use odradek_core::records::Sequenced;
use odradek_core::batch::scan_headers;
use odradek_core::ids::{LeaderEpoch, NodeId, Offset};
use odradek_core::fetcher::TopicPartition;
use odradek_core::replica::{FetchAnswer, FetchRequest, ReplicaConfig, Role};
use odradek_core::acl::AclBinding;
use odradek_core::controller::Response;
use odradek_core::controller_rpc::ControllerRequest;
use odradek_core::{wire, ErrorCode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::acls::{self, AclChange, AclOp, AclOutcome};
use crate::checker::{self, Anomaly, Op, SendOutcome, TxnOutcome};
use crate::disk::Clock;
use crate::node::{self, DiskOp, Node, Output, Payload};
use crate::options::{Options, Scenario};

pub const NODES: i32 = 3;
const CLIENT_BASE: i32 = 100;
const ADMIN: NodeId = NodeId(99);
const CLIENT_TIMEOUT_MS: i64 = 5_000;
/// `transaction.timeout.ms` of the transactional producers: the coordinator aborts a
/// transaction left open this long.
const TXN_TIMEOUT_MS: i32 = 10_000;
/// Bound on events per run: a run that needs more is stuck in a loop.
const EVENTS_MAX: u64 = 20_000_000;

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Invariant(String),
    History(Vec<Anomaly>),
    Liveness(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Invariant(m) => write!(f, "invariant violated: {m}"),
            Failure::History(a) => {
                write!(f, "history checker found {} anomal{}:", a.len(), if a.len() == 1 { "y" } else { "ies" })?;
                for anomaly in a {
                    write!(f, "\n  {anomaly}")?;
                }
                Ok(())
            }
            Failure::Liveness(m) => write!(f, "liveness: {m}"),
        }
    }
}

/// The outcome of one seed.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub options: Options,
    pub trace_hash: u64,
    pub simulated_ms: i64,
    pub events: u64,
    pub acked: usize,
    pub high_watermark: i64,
    pub faults: usize,
    /// Acknowledged writes lost in a mode that allows it (acks=0/1, acks without fsync).
    pub expected_losses: usize,
    /// Trace hash every 1,024 events: what the madsim determinism check compares.
    pub checkpoints: Vec<u64>,
    pub failure: Option<Failure>,
    pub counts: FaultCounts,
}

/// How often each fault fired in a run (and a few workload events the checker relies on), so
/// a report shows that a fault does happen, not only that it is switched on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub crashes: usize,
    pub power_losses: usize,
    pub pauses: usize,
    /// Partitions started, and of those one-way ones.
    pub partitions: usize,
    pub one_way_partitions: usize,
    pub clogs: usize,
    pub stalls: usize,
    pub messages_lost: usize,
    pub duplicates: usize,
    /// Messages sent before a partition cut their link and reaching the end of it after:
    /// delivered anyway, or lost.
    pub in_flight_delivered: usize,
    pub in_flight_lost: usize,
    /// Messages that reached a crashed node and were held until it restarted.
    pub held_for_restart: usize,
    /// Messages sent to an earlier incarnation of a node, delivered to a later one.
    pub stale_deliveries: usize,
    /// Of those, answers to an earlier incarnation's replica fetches and epoch queries, which
    /// the node drops.
    pub stale_answers: usize,
    pub fsync_failures: usize,
    /// Produces answered with a definite failure (never written: see `definitely_not_written`).
    pub definite_failures: usize,
    /// Consumer polls that returned records, and random seeks.
    pub polls: usize,
    pub seeks: usize,
    /// Offset commits acknowledged, and acknowledged ones a later fetch did not find (only
    /// where acknowledged writes may be lost by design: acks before fsync).
    pub commits: usize,
    pub commits_lost: usize,
    /// Offset fetches a deposed coordinator answered from its stale cache.
    pub stale_offset_reads: usize,
    /// Controlled shutdowns begun, and of those ended by the timeout rather than with every
    /// leadership moved.
    pub graceful_stops: usize,
    pub graceful_stop_timeouts: usize,
    /// Deliveries of notices between a node's cores (runs with two cores per node).
    pub core_mail: usize,
    /// Idempotent producers: producer ids received, batches sent again after a timeout or a
    /// retriable error, retried batches acknowledged, and restarts with a new id (KIP-360).
    pub producer_ids: usize,
    pub producer_retries: usize,
    pub retries_acked: usize,
    pub producer_resets: usize,
    /// Transactions committed, aborted and of unknown outcome (as their producers were told),
    /// zombie pauses of transactional producers, coordinator crashes aimed between the
    /// decision and its markers, and read_committed polls that returned records.
    pub txn_commits: usize,
    pub txn_aborts: usize,
    pub txn_unknown: usize,
    pub zombie_pauses: usize,
    pub coordinator_strikes: usize,
    pub committed_polls: usize,
    /// Transactional batches the network held past their producer's timeout, and
    /// transactions their producer aborted after a batch timed out.
    pub late_produces: usize,
    pub timeout_aborts: usize,
    /// ACL requests (the `acls` scenario) by outcome, the forwards the network duplicated,
    /// and the bindings the nodes held at the end.
    pub acl_acked: usize,
    pub acl_refused: usize,
    pub acl_unknown: usize,
    pub acl_duplicated: usize,
    pub acl_final: usize,
    /// Bindings the history pinned at the end: ones that had to be present, ones that had to
    /// be absent (`acls::check_history`).
    pub acl_pinned_present: usize,
    pub acl_pinned_absent: usize,
}

impl FaultCounts {
    pub fn add(&mut self, o: &FaultCounts) {
        self.crashes += o.crashes;
        self.power_losses += o.power_losses;
        self.pauses += o.pauses;
        self.partitions += o.partitions;
        self.one_way_partitions += o.one_way_partitions;
        self.clogs += o.clogs;
        self.stalls += o.stalls;
        self.messages_lost += o.messages_lost;
        self.duplicates += o.duplicates;
        self.in_flight_delivered += o.in_flight_delivered;
        self.in_flight_lost += o.in_flight_lost;
        self.held_for_restart += o.held_for_restart;
        self.stale_deliveries += o.stale_deliveries;
        self.stale_answers += o.stale_answers;
        self.fsync_failures += o.fsync_failures;
        self.definite_failures += o.definite_failures;
        self.polls += o.polls;
        self.seeks += o.seeks;
        self.commits += o.commits;
        self.commits_lost += o.commits_lost;
        self.stale_offset_reads += o.stale_offset_reads;
        self.graceful_stops += o.graceful_stops;
        self.graceful_stop_timeouts += o.graceful_stop_timeouts;
        self.core_mail += o.core_mail;
        self.producer_ids += o.producer_ids;
        self.producer_retries += o.producer_retries;
        self.retries_acked += o.retries_acked;
        self.producer_resets += o.producer_resets;
        self.txn_commits += o.txn_commits;
        self.txn_aborts += o.txn_aborts;
        self.txn_unknown += o.txn_unknown;
        self.zombie_pauses += o.zombie_pauses;
        self.coordinator_strikes += o.coordinator_strikes;
        self.committed_polls += o.committed_polls;
        self.late_produces += o.late_produces;
        self.timeout_aborts += o.timeout_aborts;
        self.acl_acked += o.acl_acked;
        self.acl_refused += o.acl_refused;
        self.acl_unknown += o.acl_unknown;
        self.acl_duplicated += o.acl_duplicated;
        self.acl_final += o.acl_final;
        self.acl_pinned_present += o.acl_pinned_present;
        self.acl_pinned_absent += o.acl_pinned_absent;
    }
}

impl std::fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "crashes {} power-losses {} pauses {} partitions {} (one-way {}) clogs {} stalls {} lost {} \
             duplicated {} in-flight-across-partition {} delivered / {} lost held-for-restart {} \
             stale-deliveries {} (stale answers dropped {}) fsync-failures {} \
             definite-failures {} polls {} seeks {} commits {} (lost by design {}) stale-offset-reads {} \
             graceful-stops {} (timed out {}) core-mail {} producer-ids {} retries {} (acked {}) producer-resets {} \
             txns committed {} aborted {} unknown {} zombie-pauses {} coordinator-strikes {} committed-polls {} \
             late-produces {} timeout-aborts {} acls acked {} refused {} unknown {} (duplicated {}) held at the end {} (pinned present {} absent {})",
            self.crashes,
            self.power_losses,
            self.pauses,
            self.partitions,
            self.one_way_partitions,
            self.clogs,
            self.stalls,
            self.messages_lost,
            self.duplicates,
            self.in_flight_delivered,
            self.in_flight_lost,
            self.held_for_restart,
            self.stale_deliveries,
            self.stale_answers,
            self.fsync_failures,
            self.definite_failures,
            self.polls,
            self.seeks,
            self.commits,
            self.commits_lost,
            self.stale_offset_reads,
            self.graceful_stops,
            self.graceful_stop_timeouts,
            self.core_mail,
            self.producer_ids,
            self.producer_retries,
            self.retries_acked,
            self.producer_resets,
            self.txn_commits,
            self.txn_aborts,
            self.txn_unknown,
            self.zombie_pauses,
            self.coordinator_strikes,
            self.committed_polls,
            self.late_produces,
            self.timeout_aborts,
            self.acl_acked,
            self.acl_refused,
            self.acl_unknown,
            self.acl_duplicated,
            self.acl_final,
            self.acl_pinned_present,
            self.acl_pinned_absent
        )
    }
}

impl Report {
    pub fn replay_command(&self) -> String {
        replay_command(self.seed, self.options.scenario)
    }
}

pub fn replay_command(seed: u64, scenario: Scenario) -> String {
    format!("odradek-sim run --seed {seed} --scenario {}", scenario.name())
}

/// The options a seed runs with, drawn from their own stream of the seed.
pub fn seed_options(seed: u64, scenario: Scenario) -> Options {
    Options::draw(scenario, seed, &mut derive(seed, 1))
}

#[derive(Debug)]
enum Event {
    /// `to_incarnation`: the receiver's incarnation when the message was sent (0 for clients).
    Deliver { from: NodeId, to: NodeId, sent: i64, to_incarnation: u64, payload: Payload },
    Timer { node: usize },
    Disk { node: usize, incarnation: u64, op: DiskOp },
    Restart { node: usize },
    Resume { node: usize },
    Client { client: usize },
    FaultTick,
    /// Crash, pause or isolate this node now (aimed faults: a window a scenario waits for).
    Strike { node: usize },
    /// fsync off: the OS writes the page cache back.
    Writeback,
    /// Notices between this incarnation's cores arrive.
    CoreMail { node: usize, incarnation: u64 },
}

struct Scheduled {
    at: i64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Producer,
    Consumer,
    Admin,
    /// Commits ever larger offsets for its own group through the group APIs (a consumer
    /// that `assign`s and commits) and fetches them back: every acknowledged commit must
    /// survive coordinator failover, crashes and lost unsynced writes.
    Committer,
    /// A transactional producer (see [`Transactor`]).
    Transactor,
    /// Creates and deletes ACLs through any node (the `acls` scenario, see `crate::acls`).
    AclAdmin,
}

/// Where a transactional producer is in its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnStage {
    /// Between transactions: AddPartitionsToTxn starts the next.
    Add,
    Produce,
    End,
}

/// A transactional producer, as Kafka's client runs one: FindCoordinator (key type 1),
/// InitProducerId with its transactional id, then transactions of AddPartitionsToTxn, a few
/// transactional batches (each sent again, same sequence, until acknowledged) and EndTxn,
/// committing or aborting at random. An error that leaves the transaction's fate to the
/// coordinator (fenced, its epoch or state refused) makes its outcome unknown; the producer
/// then starts over with InitProducerId, which fences it and aborts what it left open.
#[derive(Debug)]
struct Transactor {
    id: String,
    coordinator: Option<NodeId>,
    producer: Option<(i64, i16)>,
    next_seq: i32,
    stage: TxnStage,
    /// Values of the transaction written so far (acknowledged batches).
    values: Vec<u64>,
    /// The batch being sent until acknowledged: its first sequence and values.
    batch: Option<(i32, Vec<u64>)>,
    batches_left: u32,
    commit: bool,
    /// A zombie pause: no request before then, whatever the transaction's state.
    paused_until: i64,
    /// Stopped between transactions at the end of the run.
    stopped: bool,
    /// Aborting after a batch timed out: once aborted, a new epoch (InitProducerId).
    new_epoch_after_abort: bool,
}

/// What a committer knows of its group's committed offset.
#[derive(Debug, Default)]
struct Commits {
    group: String,
    coordinator: Option<NodeId>,
    /// The next offset to commit; commits only grow.
    next: i64,
    /// The highest commit acknowledged, or -1.
    acked: i64,
    /// Commits never answered: they may still be on the wire and land after later ones.
    unanswered: BTreeSet<i64>,
    fetch_next: bool,
    /// The highest acknowledged commit when the outstanding fetch was sent.
    floor: i64,
    /// After healing: a commit sent since was acknowledged, and a fetch sent after that
    /// found it.
    acked_since_heal: bool,
    verified_since_heal: bool,
    /// Per answered request: whether the current coordinator answered it.
    answered_by_current: BTreeMap<i32, bool>,
}

struct Client {
    id: NodeId,
    kind: ClientKind,
    leader: Option<(NodeId, LeaderEpoch)>,
    /// Outstanding request: (corr, sent at, values for a produce).
    inflight: Option<(i32, i64, Vec<u64>)>,
    /// The API of the outstanding Kafka request, to decode its answer.
    inflight_api: ApiKey,
    next_corr: i32,
    position: i64,
    /// The highest high watermark a fetch answer reported: the range of random seeks.
    high_watermark_seen: i64,
    done: bool,
    commits: Commits,
    /// An idempotent producer's id, sequence and the batch it retries (`None`: a producer that
    /// never retries).
    idempotence: Option<Idempotence>,
    txn: Option<Transactor>,
    /// A consumer with `isolation.level=read_committed`.
    read_committed: bool,
}

/// An idempotent producer (enable.idempotence=true): InitProducerId first, then each batch
/// carries the next sequence, and a batch without an answer (a timeout, a retriable error)
/// is sent again, same values and sequence, until it is acknowledged. The broker must answer a
/// retry of a written batch with its first offset: a value at two offsets is a duplicate.
#[derive(Debug, Default)]
struct Idempotence {
    producer: Option<(i64, i16)>,
    next_seq: i32,
    /// The batch being sent until acknowledged: its first sequence and values.
    retry: Option<(i32, Vec<u64>)>,
    /// Sends of `retry` that got no answer or a retriable error.
    attempts: u32,
}

/// FNV-1a, stable across platforms and Rust versions.
struct TraceHash(u64);

impl TraceHash {
    fn add(&mut self, value: u64) {
        for byte in value.to_le_bytes() {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Per-replica history the invariant checks compare against.
#[derive(Default, Clone)]
struct Watch {
    incarnation: u64,
    high_watermark: i64,
    leader_epoch: i32,
    /// Batches below this offset were verified against `committed`.
    verified_to: i64,
    log_cuts: u64,
}

pub struct Sim {
    seed: u64,
    pub options: Options,
    now: i64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    rng_net: ChaCha8Rng,
    rng_disk: ChaCha8Rng,
    rng_fault: ChaCha8Rng,
    /// When notices between a node's cores arrive.
    rng_core: ChaCha8Rng,
    rng_work: ChaCha8Rng,
    /// Cut links, directed: `(from, to)` means `from`'s messages do not reach `to`.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Per directed link, the latest cut: (start, end once healed). A message sent at or
    /// before a start and arriving after it crossed the partition.
    cut_history: BTreeMap<(NodeId, NodeId), (i64, Option<i64>)>,
    /// When each crashed node restarts (for messages held until then).
    restart_at: Vec<Option<i64>>,
    /// Per node: (incarnation, its durable log end) at the first failed fsync of that
    /// incarnation; nothing past that offset may count as durable while it lives.
    sync_failed: Vec<Option<(u64, i64)>>,
    counts: FaultCounts,
    /// Links with extra delay.
    clogged: BTreeMap<(NodeId, NodeId), i64>,
    faults_on: bool,
    trace: TraceHash,
    events: u64,
    faults: usize,
    history: Vec<Op>,
    next_value: u64,
    // ---- invariant state ----
    watch: BTreeMap<usize, Watch>,
    leaders_by_epoch: BTreeMap<i32, NodeId>,
    /// Batches known committed: base offset → (end, bytes).
    committed: BTreeMap<i64, (i64, Bytes, String)>,
    /// Committed metadata entries: index → (term, data).
    metadata: BTreeMap<u64, (i32, Bytes)>,
    failure: Option<Failure>,
    /// Liveness phase: producers stop once this many writes are acknowledged in total.
    acked_stop: Option<usize>,
    /// `ODRADEK_SIM_DEBUG` set: print the cluster state every 2 simulated seconds.
    debug: bool,
    debug_node: Option<i32>,
    /// `ODRADEK_SIM_DEBUG_FROM` (ms, default 62,000): where that node's messages start printing.
    debug_from: i64,
    /// Every batch ever written, by (base offset, leader epoch): one leader writes one batch
    /// at an offset in its epoch, so a second, different one is divergence (or corruption
    /// that recovery let through).
    written: BTreeMap<(TopicPartition, i64, i32), (i64, Bytes, String)>,
    /// The highest high watermark any replica ever reported: everything below is committed.
    committed_end: i64,
    /// The partition state in the newest metadata image applied anywhere, by applied index.
    latest_image: Option<(u64, odradek_core::controller::PartitionState)>,
    /// (leader epoch, partition epoch) of the last ISR expansion an aimed fault struck.
    struck_expansion: Option<(i32, i32)>,
    /// (leader epoch, partition epoch) of the last leader struck in KIP-101's window.
    struck_window: Option<(i32, i32)>,
    /// Nodes struck in KIP-101's window, with the time: what they sent until then and had
    /// not yet delivered is lost (it was still in their socket buffers).
    lost_in_flight: BTreeMap<NodeId, i64>,
    expected_losses: usize,
    checkpoints: Vec<u64>,
    /// Every ACL request sent, and every network copy of a forwarded one.
    acl_ops: Vec<AclOp>,
    /// Bindings the ACL clients asked to create so far: what most deletions name.
    acl_created: Vec<AclBinding>,
    /// When the liveness phase began.
    healed_at: Option<i64>,
}

/// Writes the liveness phase needs acknowledged after healing before producers stop.
const LIVENESS_WRITES: usize = 5;

fn derive(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

impl Sim {
    pub fn new(seed: u64, scenario: Scenario) -> Sim {
        Sim::with_options(seed, seed_options(seed, scenario))
    }

    pub fn with_options(seed: u64, options: Options) -> Sim {
        let mut rng_clock = derive(seed, 6);
        let voters: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
        let replica_config = ReplicaConfig {
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 5_000,
            replica_fetch_backoff_ms: 100,
            replica_fetch_response_timeout_ms: 3_000,
            high_watermark_checkpoint_interval_ms: 1_000,
            truncate_with_offset_for_leader_epoch: options.truncate_with_offset_for_leader_epoch,
            ack_after_fsync: options.ack_after_fsync,
            ..ReplicaConfig::default()
        };
        let nodes = voters
            .iter()
            .map(|&id| {
                let clock = Clock {
                    skew_ms: rng_clock.gen_range(0..=options.clock_skew_ms_max),
                    drift_ppm: rng_clock.gen_range(-options.clock_drift_ppm_max..=options.clock_drift_ppm_max),
                };
                let mut node = Node::new(id, voters.clone(), clock, replica_config.clone());
                node.cores = options.cores;
                node
            })
            .collect();
        let mut clients = vec![Client::new(ADMIN, ClientKind::Admin)];
        for i in 0..options.producers {
            let mut producer = Client::new(NodeId(CLIENT_BASE + i as i32), ClientKind::Producer);
            // Kafka's idempotence needs acks=all.
            if options.idempotent_producers && options.acks == -1 {
                producer.idempotence = Some(Idempotence::default());
            }
            clients.push(producer);
        }
        for i in 0..options.consumers {
            let mut consumer = Client::new(NodeId(CLIENT_BASE + 50 + i as i32), ClientKind::Consumer);
            // With transactions, every other consumer reads committed only.
            consumer.read_committed = options.transactional_producers > 0 && i % 2 == 1;
            clients.push(consumer);
        }
        for i in 0..options.transactional_producers {
            let mut transactor = Client::new(NodeId(CLIENT_BASE + 70 + i as i32), ClientKind::Transactor);
            transactor.txn = Some(Transactor {
                id: format!("tx{i}"),
                coordinator: None,
                producer: None,
                next_seq: 0,
                stage: TxnStage::Add,
                values: Vec::new(),
                batch: None,
                batches_left: 0,
                commit: true,
                paused_until: 0,
                new_epoch_after_abort: false,
                stopped: false,
            });
            clients.push(transactor);
        }
        // One group per `__consumer_offsets` partition, so every partition has a coordinator
        // at work.
        let mut groups: Vec<String> = Vec::new();
        for k in 0.. {
            let group = format!("g{k}");
            let partition = odradek_core::group::partition_for(&group, node::OFFSETS_PARTITIONS);
            if !groups.iter().any(|g| odradek_core::group::partition_for(g, node::OFFSETS_PARTITIONS) == partition) {
                groups.push(group);
            }
            if groups.len() == node::OFFSETS_PARTITIONS as usize {
                break;
            }
        }
        for (i, group) in groups.into_iter().enumerate() {
            let mut client = Client::new(NodeId(CLIENT_BASE + 80 + i as i32), ClientKind::Committer);
            client.commits.group = group;
            clients.push(client);
        }
        for i in 0..options.acl_clients {
            clients.push(Client::new(NodeId(CLIENT_BASE + 90 + i as i32), ClientKind::AclAdmin));
        }
        Sim {
            seed,
            options,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            clients,
            rng_net: derive(seed, 2),
            rng_disk: derive(seed, 3),
            rng_fault: derive(seed, 4),
            rng_work: derive(seed, 5),
            rng_core: derive(seed, 7),
            cut: BTreeSet::new(),
            cut_history: BTreeMap::new(),
            restart_at: vec![None; NODES as usize],
            sync_failed: vec![None; NODES as usize],
            counts: FaultCounts::default(),
            clogged: BTreeMap::new(),
            faults_on: true,
            trace: TraceHash(0xcbf2_9ce4_8422_2325),
            events: 0,
            faults: 0,
            history: Vec::new(),
            next_value: 1,
            watch: BTreeMap::new(),
            leaders_by_epoch: BTreeMap::new(),
            committed: BTreeMap::new(),
            metadata: BTreeMap::new(),
            failure: None,
            acked_stop: None,
            debug: std::env::var_os("ODRADEK_SIM_DEBUG").is_some(),
            debug_node: std::env::var("ODRADEK_SIM_DEBUG_NODE").ok().and_then(|v| v.parse().ok()),
            debug_from: std::env::var("ODRADEK_SIM_DEBUG_FROM").ok().and_then(|v| v.parse().ok()).unwrap_or(62_000),
            written: BTreeMap::new(),
            committed_end: 0,
            latest_image: None,
            struck_expansion: None,
            struck_window: None,
            lost_in_flight: BTreeMap::new(),
            expected_losses: 0,
            checkpoints: Vec::new(),
            acl_ops: Vec::new(),
            acl_created: Vec::new(),
            healed_at: None,
        }
    }

    /// Runs the safety phase, then the liveness phase, then the history check.
    pub fn run(mut self) -> Report {
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
        for c in 0..self.clients.len() {
            self.schedule(0, Event::Client { client: c });
        }
        self.schedule(self.options.fault_interval_ms, Event::FaultTick);
        if !self.options.ack_after_fsync {
            self.schedule(self.options.writeback_ms, Event::Writeback);
        }
        let safety_end = self.options.safety_ms;
        self.run_until(safety_end, |_| false);
        if self.failure.is_none() {
            self.heal();
            let deadline = self.now + self.options.liveness_ms_max;
            let acked_before = self.progress();
            self.acked_stop = Some(acked_before + LIVENESS_WRITES);
            let converged = self.run_until(deadline, |sim| sim.converged(acked_before));
            if !converged && std::env::var_os("ODRADEK_SIM_DEBUG_TXN").is_some() {
                self.dump_txn_log();
            }
            if self.failure.is_none() && !converged {
                self.failure = Some(Failure::Liveness(format!(
                    "no convergence within {} ms after healing: {}",
                    self.options.liveness_ms_max,
                    self.describe()
                )));
            }
            if self.failure.is_none() {
                self.check_replicas_identical();
            }
            if self.failure.is_none() && self.options.acl_clients > 0 {
                self.check_acls();
            }
        }
        // Batches an idempotent producer was still retrying when it stopped: unknown.
        for client in &mut self.clients {
            if let Some((_, values)) = client.idempotence.as_mut().and_then(|i| i.retry.take()) {
                self.history.push(Op::Send { process: client.id.0 as u32, values, outcome: SendOutcome::Info("stopped".into()) });
            }
        }
        if self.failure.is_none() {
            self.final_read();
            let verdict = checker::check_with(&self.history, self.options.may_lose_acknowledged());
            self.expected_losses = verdict.expected_losses;
            if !verdict.anomalies.is_empty() {
                self.failure = Some(Failure::History(verdict.anomalies));
            }
        }
        let high_watermark = self.leader().map_or(-1, |i| self.replica_hw(i));
        for n in &self.nodes {
            self.counts.stale_answers += n.stale_answers;
        }
        Report {
            seed: self.seed,
            trace_hash: self.trace.0,
            simulated_ms: self.now,
            events: self.events,
            acked: self.acked(),
            high_watermark,
            faults: self.faults,
            expected_losses: self.expected_losses,
            checkpoints: std::mem::take(&mut self.checkpoints),
            failure: self.failure.clone(),
            counts: self.counts,
            options: self.options,
        }
    }

    fn acked(&self) -> usize {
        self.history
            .iter()
            .filter(|op| matches!(op, Op::Send { outcome: SendOutcome::Ok { .. }, .. }))
            .count()
    }

    /// Writes that count as done for the liveness phase: acknowledged ones, or with acks=0
    /// (never answered) every one sent.
    fn progress(&self) -> usize {
        if self.options.acks == 0 {
            self.history.iter().filter(|op| matches!(op, Op::Send { .. })).count()
        } else {
            self.acked()
        }
    }

    /// After convergence every replica holds the same log, byte for byte: whatever a mode may
    /// lose, replicas never keep diverging prefixes.
    fn check_replicas_identical(&mut self) {
        let Some(l) = self.leader() else { return };
        let leader = self.nodes[l].disk.log(&node::tp());
        let reference = leader.read(leader.log_start, leader.log_end());
        for n in &self.nodes {
            let log = n.disk.log(&node::tp());
            if log.read(log.log_start, log.log_end()) != reference {
                let message = format!(
                    "after convergence node {} holds a different log from the leader {} (ends {} and {})",
                    n.id,
                    self.nodes[l].id,
                    log.log_end(),
                    leader.log_end()
                );
                self.fail(message);
                return;
            }
        }
    }

    fn run_until(&mut self, end: i64, mut stop: impl FnMut(&Sim) -> bool) -> bool {
        while let Some(next) = self.queue.peek() {
            if next.at > end || self.failure.is_some() {
                break;
            }
            let Scheduled { at, seq, event } = self.queue.pop().expect("peeked");
            let before = self.now / 2_000;
            self.now = at;
            self.events += 1;
            assert!(self.events < EVENTS_MAX, "seed {}: more than {EVENTS_MAX} events", self.seed);
            self.trace.add(at as u64);
            self.trace.add(seq);
            self.dispatch(event);
            self.check_invariants();
            self.aim_faults();
            if self.events % 1_024 == 0 {
                self.checkpoints.push(self.trace.0);
            }
            if self.debug && self.now / 2_000 != before {
                eprintln!("t={}ms {}", self.now, self.describe());
            }
            if stop(self) {
                return true;
            }
        }
        self.now = self.now.max(end);
        false
    }

    fn schedule(&mut self, at: i64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, event });
    }

    // ---- nodes ----

    fn start_node(&mut self, i: usize) {
        let now = self.nodes[i].clock.local(self.now);
        let seed = self.seed ^ ((i as u64 + 1) << 48) ^ self.nodes[i].incarnation;
        let mut out = Vec::new();
        self.nodes[i].start(now, seed, &mut out);
        self.watch.remove(&i);
        self.outputs(i, out);
    }

    fn outputs(&mut self, i: usize, out: Vec<Output>) {
        let from = self.nodes[i].id;
        let mut strike = false;
        for o in out {
            match o {
                Output::MarkersSent => {
                    let p = self.options.crash_coordinator_on_markers;
                    strike |= self.faults_on && p > 0.0 && self.rng_fault.gen_bool(p);
                }
                Output::Send { to, payload } => {
                    if let Payload::KafkaResponse { frame } = &payload {
                        self.note_coordinator_answer(i, to, frame);
                    }
                    if let Payload::CtrlResponse { response: Response::Heartbeat(r), .. } = &payload {
                        if r.should_shutdown {
                            self.check_shutdown_acknowledged(i, to);
                        }
                    }
                    self.send(from, to, payload)
                }
                Output::Disk(op) => {
                    let (lo, hi) = self.options.disk_latency_ms;
                    let at = self.now + self.rng_disk.gen_range(lo..=hi);
                    let incarnation = self.nodes[i].incarnation;
                    self.schedule(at, Event::Disk { node: i, incarnation, op });
                }
                Output::Applied { index, term, data } => {
                    self.trace.add(index.0);
                    match self.metadata.get(&index.0) {
                        Some((t, d)) if *t != term.0 || *d != data => self.fail(format!(
                            "node {from} applied metadata entry {index} (term {term}) that differs from the committed one (term {t})"
                        )),
                        Some(_) => {}
                        None => {
                            self.metadata.insert(index.0, (term.0, data));
                        }
                    }
                }
                Output::Violation(message) => self.fail(message),
                Output::Halt => self.crash(i),
                Output::CoreMail => {
                    let at = self.now + self.rng_core.gen_range(0..=2);
                    let incarnation = self.nodes[i].incarnation;
                    self.schedule(at, Event::CoreMail { node: i, incarnation });
                }
                Output::Stopped { timed_out } => {
                    self.counts.graceful_stop_timeouts += usize::from(timed_out);
                    self.stop(i);
                }
                Output::AckedAll { end, high_watermark } => {
                    if end > high_watermark {
                        self.fail(format!(
                            "node {from} acknowledged an acks=all produce ending at {end} above its high watermark {high_watermark}"
                        ));
                    }
                }
            }
        }
        if strike && self.nodes[i].process.is_some() {
            // The coordinator dies with its decision written and its markers on their way.
            self.counts.coordinator_strikes += 1;
            self.crash(i);
        }
        self.arm_timer(i);
    }

    /// Whether node `i`, answering committer `to`, is its group's coordinator in the newest
    /// committed metadata: a deposed coordinator that has not heard yet may answer from its
    /// stale cache (so may Kafka's), the current one must not.
    fn note_coordinator_answer(&mut self, i: usize, to: NodeId, frame: &Bytes) {
        let Some(c) = self.clients.iter().position(|c| c.id == to && c.kind == ClientKind::Committer) else { return };
        let Some(corr) = frame.get(4..8).map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes"))) else { return };
        let partition = odradek_core::group::partition_for(&self.clients[c].commits.group, node::OFFSETS_PARTITIONS);
        let newest = self
            .nodes
            .iter()
            .filter_map(|n| n.process.as_ref())
            .max_by_key(|p| p.quorum.controller().applied_index())
            .and_then(|p| p.quorum.controller().image().topic_by_name(odradek_core::group::OFFSETS_TOPIC)?.partitions.get(partition as usize).cloned());
        let offsets = TopicPartition::new(odradek_core::group::OFFSETS_TOPIC, partition);
        let current = newest.is_some_and(|state| {
            state.leader == self.nodes[i].id
                && self.nodes[i].process.as_ref().and_then(|p| p.replica_of(&offsets)).is_some_and(|r| {
                    r.role() == Role::Leader && r.leader_epoch() == state.leader_epoch
                })
        });
        self.clients[c].commits.answered_by_current.insert(corr, current);
    }

    fn arm_timer(&mut self, i: usize) {
        let Some(wake) = self.nodes[i].next_wake() else { return };
        let at = self.nodes[i].clock.global(wake).max(self.now + 1);
        let at = self.nodes[i].paused_until.map_or(at, |p| at.max(p));
        if self.nodes[i].timer_at.is_none_or(|t| t > at || t < self.now) {
            self.nodes[i].timer_at = Some(at);
            self.schedule(at, Event::Timer { node: i });
        }
    }

    fn node_index(&self, id: NodeId) -> Option<usize> {
        (1..=NODES).contains(&id.0).then(|| (id.0 - 1) as usize)
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, sent, to_incarnation, payload } => {
                self.trace.add(((from.0 as u64) << 32) | to.0 as u64);
                if self.lost_in_flight.get(&from).is_some_and(|&at| sent <= at) {
                    return;
                }
                // Sent before a partition cut this link: what was past the cut arrives, what
                // was still in the sender's buffers dies with the connection.
                if let Some(&(start, end)) = self.cut_history.get(&(from, to)) {
                    if start >= sent && end.is_none_or(|e| e > start) {
                        if self.rng_net.gen_bool(self.options.inflight_delivery_probability) {
                            self.counts.in_flight_delivered += 1;
                            self.trace.add(0x1f11 + sent as u64);
                        } else {
                            self.counts.in_flight_lost += 1;
                            self.trace.add(0x1f10 + sent as u64);
                            return;
                        }
                    }
                }
                if self.debug_node.is_some_and(|n| (n == to.0 || n == from.0) && self.now > self.debug_from) && !matches!(payload, Payload::Raft(_)) {
                    eprintln!("t={} {from}->{to} {:?}", self.now, payload);
                }
                if let Some(i) = self.node_index(to) {
                    if let Some(until) = self.nodes[i].paused_until {
                        // A paused process leaves messages in its socket buffers.
                        self.schedule(until, Event::Deliver { from, to, sent, to_incarnation, payload });
                        return;
                    }
                    if !self.nodes[i].is_up() {
                        let p = self.options.hold_for_restart_probability;
                        if let (true, Some(restart)) = (self.faults_on && p > 0.0, self.restart_at[i]) {
                            if self.rng_net.gen_bool(p) {
                                // Queued somewhere until the node is back: whatever it answers
                                // or asks was meant for the previous incarnation.
                                let at = restart.max(self.now) + self.rng_net.gen_range(1..=200);
                                self.counts.held_for_restart += 1;
                                self.trace.add(0x401d + at as u64);
                                self.schedule(at, Event::Deliver { from, to, sent, to_incarnation, payload });
                            }
                        }
                        return;
                    }
                    if self.nodes[i].incarnation != to_incarnation {
                        self.counts.stale_deliveries += 1;
                        self.trace.add(0x57a1e + i as u64);
                    }
                    let now = self.nodes[i].clock.local(self.now);
                    let mut out = Vec::new();
                    self.nodes[i].handle_message(now, from, payload, &mut out);
                    self.outputs(i, out);
                } else if let Some(c) = self.clients.iter().position(|c| c.id == to) {
                    self.client_receive(c, from, payload);
                }
            }
            Event::Timer { node: i } => {
                if self.nodes[i].timer_at == Some(self.now) {
                    self.nodes[i].timer_at = None;
                }
                if self.nodes[i].paused_until.is_some() || !self.nodes[i].is_up() {
                    return;
                }
                let now = self.nodes[i].clock.local(self.now);
                let mut out = Vec::new();
                self.nodes[i].handle_timeout(now, &mut out);
                self.outputs(i, out);
            }
            Event::Disk { node: i, incarnation, op } => {
                if self.nodes[i].incarnation != incarnation || !self.nodes[i].is_up() {
                    return;
                }
                if let Some(until) = self.nodes[i].paused_until {
                    self.schedule(until, Event::Disk { node: i, incarnation, op });
                    return;
                }
                if let (DiskOp::LogSync { .. }, Some(until)) = (&op, self.nodes[i].log_stall_until) {
                    if until > self.now {
                        // A stalled log dir: the sync hangs until the stall ends.
                        self.schedule(until, Event::Disk { node: i, incarnation, op });
                        return;
                    }
                }
                let p = self.options.fsync_failure_probability;
                let mut out = Vec::new();
                if self.faults_on && p > 0.0 && self.rng_disk.gen_bool(p) {
                    self.counts.fsync_failures += 1;
                    self.faults += 1;
                    self.trace.add(0xf5f1 + i as u64);
                    // Recorded here, not by the driver: the check must hold whatever the
                    // driver does with the error.
                    let incarnation = self.nodes[i].incarnation;
                    if matches!(op, DiskOp::LogSync { .. }) && self.sync_failed[i].is_none_or(|(seen, _)| seen != incarnation) {
                        self.sync_failed[i] = Some((incarnation, self.nodes[i].disk.log(&node::tp()).log_durable));
                    }
                    self.nodes[i].fail_disk(op, &mut out);
                } else {
                    let now = self.nodes[i].clock.local(self.now);
                    self.nodes[i].complete_disk(now, op, &mut out);
                }
                self.outputs(i, out);
            }
            Event::Restart { node: i } => {
                if !self.nodes[i].is_up() {
                    self.restart_at[i] = None;
                    self.trace.add(0x5e57_a270 + i as u64);
                    self.start_node(i);
                }
            }
            Event::Strike { node: i } => self.strike(i),
            Event::Writeback => {
                // The kernel's dirty page writeback: what was written becomes durable.
                for log in self.nodes.iter_mut().flat_map(|n| n.disk.logs.values_mut()) {
                    log.log_durable = log.log_end();
                }
                self.schedule(self.now + self.options.writeback_ms, Event::Writeback);
            }
            Event::Resume { node: i } => {
                if self.nodes[i].paused_until.is_some_and(|t| t <= self.now) {
                    self.nodes[i].paused_until = None;
                    self.arm_timer(i);
                }
            }
            Event::Client { client } => self.client_tick(client),
            Event::CoreMail { node: i, incarnation } => {
                if self.nodes[i].incarnation != incarnation || !self.nodes[i].is_up() {
                    return;
                }
                if let Some(until) = self.nodes[i].paused_until {
                    self.schedule(until, Event::CoreMail { node: i, incarnation });
                    return;
                }
                self.counts.core_mail += 1;
                let now = self.nodes[i].clock.local(self.now);
                let mut out = Vec::new();
                self.nodes[i].deliver_core_mail(now, &mut out);
                self.outputs(i, out);
            }
            Event::FaultTick => {
                if self.faults_on {
                    self.inject_faults();
                    let at = self.now + self.options.fault_interval_ms;
                    self.schedule(at, Event::FaultTick);
                }
            }
        }
    }

    // ---- network ----

    fn link(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
        if a <= b {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// Cuts `from`'s messages to `to` (one direction).
    fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        if self.cut.insert((from, to)) {
            self.cut_history.insert((from, to), (self.now, None));
        }
    }

    fn cut_both_ways(&mut self, a: NodeId, b: NodeId) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    fn heal_cuts(&mut self) {
        for link in std::mem::take(&mut self.cut) {
            if let Some((_, end)) = self.cut_history.get_mut(&link) {
                *end = Some(self.now);
            }
        }
    }

    /// Cuts node `i` off from the other nodes (clients still reach it).
    fn isolate(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let others: Vec<NodeId> = self.nodes.iter().map(|n| n.id).filter(|&o| o != id).collect();
        for other in others {
            self.cut_both_ways(id, other);
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, payload: Payload) {
        if self.cut.contains(&(from, to)) {
            return;
        }
        if self.faults_on && self.options.loss_probability > 0.0 && self.rng_net.gen_bool(self.options.loss_probability) {
            self.counts.messages_lost += 1;
            return;
        }
        let (lo, hi) = self.options.delay_ms;
        let mut delay = self.rng_net.gen_range(lo..=hi);
        if let Some(extra) = self.clogged.get(&Sim::link(from, to)) {
            delay += extra;
        }
        let to_incarnation = self.node_index(to).map_or(0, |i| self.nodes[i].incarnation);
        // Clients' requests are not duplicated: a producer that does not retry sends each
        // value once, and TCP never repeats a request on its own.
        // Nor are a coordinator's WriteTxnMarkers: the broker sends one once and again only after
        // it timed out, as Kafka's marker channel does. A copy that lands after a retry
        // succeeded and the producer began its next transaction would end that one: the window
        // Kafka closes only with KIP-890's epoch bump per transaction (docs/transactions.md).
        let markers = matches!(payload, Payload::Markers { .. });
        let p = self.options.duplicate_probability;
        if self.faults_on && p > 0.0 && !markers && self.node_index(from).is_some() && self.rng_net.gen_bool(p) {
            let again = self.now + delay + self.rng_net.gen_range(0..=self.options.duplicate_delay_ms_max);
            self.counts.duplicates += 1;
            self.faults += 1;
            self.trace.add(0xd0b + again as u64);
            // A copy of a forwarded ACL request may take effect after the original's answer:
            // the history model counts it as a request of unknown outcome of its own.
            if let Payload::CtrlRequest { request: request @ (ControllerRequest::CreateAcls(_) | ControllerRequest::DeleteAcls(_)), .. } = &payload {
                let change = AclChange::of_request(request).expect("an ACL request");
                self.counts.acl_duplicated += 1;
                self.acl_ops.push(AclOp { client: from, change, sent: self.now, answered: None, outcome: AclOutcome::Unknown("duplicate") });
            }
            self.schedule(again, Event::Deliver { from, to, sent: self.now, to_incarnation, payload: payload.clone() });
        }
        self.schedule(self.now + delay, Event::Deliver { from, to, sent: self.now, to_incarnation, payload });
    }

    // ---- faults ----

    fn leader(&self) -> Option<usize> {
        // The leader of the highest epoch among live replicas.
        (0..self.nodes.len())
            .filter_map(|i| {
                let r = self.nodes[i].process.as_ref()?.replica()?;
                (r.role() == Role::Leader).then_some((r.leader_epoch(), i))
            })
            .max()
            .map(|(_, i)| i)
    }

    fn replica_hw(&self, i: usize) -> i64 {
        self.nodes[i]
            .process
            .as_ref()
            .and_then(|p| p.replica())
            .map_or(-1, |r| r.high_watermark().0)
    }

    fn target(&mut self) -> usize {
        if self.options.target_leader && self.rng_fault.gen_bool(0.7) {
            if let Some(i) = self.leader() {
                return i;
            }
        }
        self.rng_fault.gen_range(0..self.nodes.len())
    }

    fn inject_faults(&mut self) {
        let o = self.options.clone();
        if o.graceful_stop_probability > 0.0 && self.rng_fault.gen_bool(o.graceful_stop_probability) {
            let i = self.target();
            let now = self.nodes[i].clock.local(self.now);
            if self.nodes[i].paused_until.is_none() && self.nodes[i].begin_shutdown(now) {
                self.faults += 1;
                self.counts.graceful_stops += 1;
                self.trace.add(0x57_0990 + i as u64);
                let mut out = Vec::new();
                self.nodes[i].handle_timeout(now, &mut out);
                self.outputs(i, out);
            }
        }
        if o.crash_probability > 0.0 && self.rng_fault.gen_bool(o.crash_probability) {
            let i = self.target();
            self.crash(i);
        }
        if o.power_loss_probability > 0.0 && self.rng_fault.gen_bool(o.power_loss_probability) {
            self.counts.power_losses += 1;
            for i in 0..self.nodes.len() {
                self.crash(i);
            }
        }
        if o.pause_probability > 0.0 && self.rng_fault.gen_bool(o.pause_probability) {
            let i = self.target();
            if self.nodes[i].is_up() && self.nodes[i].paused_until.is_none() {
                let until = self.now + self.rng_fault.gen_range(1..=o.pause_ms_max);
                self.nodes[i].paused_until = Some(until);
                self.faults += 1;
                self.counts.pauses += 1;
                self.trace.add(0x9a05e + i as u64);
                self.schedule(until, Event::Resume { node: i });
            }
        }
        if o.partition_probability > 0.0 && self.rng_fault.gen_bool(o.partition_probability) {
            let i = self.target();
            let id = self.nodes[i].id;
            self.faults += 1;
            self.counts.partitions += 1;
            self.trace.add(0xc07 + i as u64);
            let isolate = o.scenario == Scenario::ZombieLeader || self.rng_fault.gen_bool(0.5);
            let j = if isolate { None } else { Some((i + self.rng_fault.gen_range(1..self.nodes.len())) % self.nodes.len()) };
            if o.one_way_probability > 0.0 && self.rng_fault.gen_bool(o.one_way_probability) {
                // One direction only: the node (or link end) still hears, or still speaks.
                self.counts.one_way_partitions += 1;
                let outbound = self.rng_fault.gen_bool(0.5);
                self.trace.add(0x1a7 + u64::from(outbound));
                let peers: Vec<NodeId> = match j {
                    None => self.nodes.iter().map(|n| n.id).filter(|&p| p != id).collect(),
                    Some(j) => vec![self.nodes[j].id],
                };
                for peer in peers {
                    if outbound {
                        self.cut_one_way(id, peer);
                    } else {
                        self.cut_one_way(peer, id);
                    }
                }
            } else {
                match j {
                    // Cut the node off from the other nodes; clients still reach it.
                    None => self.isolate(i),
                    // One random link between nodes.
                    Some(j) => self.cut_both_ways(id, self.nodes[j].id),
                }
            }
        }
        if !self.cut.is_empty() && self.rng_fault.gen_bool(o.heal_probability) {
            self.heal_cuts();
        }
        if o.clog_probability > 0.0 && self.rng_fault.gen_bool(o.clog_probability) {
            let i = self.rng_fault.gen_range(0..self.nodes.len());
            let j = (i + self.rng_fault.gen_range(1..self.nodes.len())) % self.nodes.len();
            let extra = self.rng_fault.gen_range(50..2_000);
            self.clogged.insert(Sim::link(self.nodes[i].id, self.nodes[j].id), extra);
            self.faults += 1;
            self.counts.clogs += 1;
        }
        if !self.clogged.is_empty() && self.rng_fault.gen_bool(o.heal_probability) {
            self.clogged.clear();
        }
        if o.stall_probability > 0.0 && self.rng_fault.gen_bool(o.stall_probability) {
            // Stall followers' log dirs: every follower at once when aiming at the last
            // replica standing, else one.
            let leader = self.leader();
            let followers: Vec<usize> = (0..self.nodes.len()).filter(|&i| Some(i) != leader).collect();
            let chosen: Vec<usize> = if o.scenario == Scenario::LastReplicaStanding {
                followers
            } else {
                vec![followers[self.rng_fault.gen_range(0..followers.len())]]
            };
            let until = self.now + self.rng_fault.gen_range(1..=o.stall_ms_max);
            for i in chosen {
                self.nodes[i].log_stall_until = Some(until);
                self.faults += 1;
                self.counts.stalls += 1;
                self.trace.add(0x57a11 + i as u64);
            }
        }
        if o.crash_last_replica > 0.0 {
            if let Some(l) = self.leader() {
                let alone = self.nodes[l].process.as_ref().and_then(|p| p.replica()).is_some_and(|r| r.isr().len() == 1);
                if alone && self.rng_fault.gen_bool(o.crash_last_replica) {
                    self.crash(l);
                }
            }
        }
    }

    /// Aimed faults, checked after every event: when the leader has an ISR expansion in
    /// flight (KIP-497's window), strike it within a few milliseconds; when a follower outside
    /// the ISR sits between the HW the leader's successor knows and the leader's own HW
    /// (KIP-101's window), crash or isolate the leader at once.
    fn aim_faults(&mut self) {
        if !self.faults_on || self.failure.is_some() {
            return;
        }
        if self.options.crash_leader_over_lagging_follower > 0.0 {
            self.aim_epoch_start_window();
        }
        if self.options.crash_leader_on_expansion <= 0.0 {
            return;
        }
        let Some(l) = self.leader() else { return };
        let Some(r) = self.nodes[l].process.as_ref().and_then(|p| p.replica()) else { return };
        if r.maximal_isr().len() <= r.isr().len() {
            return;
        }
        let key = (r.leader_epoch().0, r.partition_epoch().0);
        if self.struck_expansion == Some(key) {
            return;
        }
        self.struck_expansion = Some(key);
        if self.rng_fault.gen_bool(self.options.crash_leader_on_expansion) {
            let at = self.now + self.rng_fault.gen_range(0..50);
            self.schedule(at, Event::Strike { node: l });
        }
    }

    /// KIP-101's epoch-start window: the leader's committed ISR holds another member whose HW
    /// lags the leader's (it has not heard of the last advance yet, e.g. right after the ISR
    /// shrank), and a follower outside the ISR ends its log at or above that stale HW but below
    /// the leader's. If the leader dies now, the successor leads with an epoch that starts
    /// above its HW, and the lagging follower fetches at or above that HW without holding
    /// everything committed. Strikes once per (leader epoch, partition epoch).
    fn aim_epoch_start_window(&mut self) {
        let Some(l) = self.leader() else { return };
        let replica = |i: usize| self.nodes[i].process.as_ref().and_then(|p| p.replica());
        let Some(r) = replica(l) else { return };
        let key = (r.leader_epoch().0, r.partition_epoch().0);
        if self.struck_window == Some(key) || self.nodes[l].paused_until.is_some() {
            return;
        }
        let (hw, isr, maximal) = (r.high_watermark().0, r.isr(), r.maximal_isr());
        let stale_successor = (0..self.nodes.len())
            .filter(|&m| m != l && isr.contains(&self.nodes[m].id))
            .filter_map(|m| replica(m).map(|r| r.high_watermark().0))
            .filter(|&h| h < hw)
            .min();
        let Some(successor_hw) = stale_successor else { return };
        let lagging = (0..self.nodes.len()).find(|&f| {
            f != l
                && !maximal.contains(&self.nodes[f].id)
                && replica(f).is_some_and(|r| (successor_hw..hw).contains(&r.log_end_offset().0))
        });
        let Some(f) = lagging else { return };
        self.struck_window = Some(key);
        if self.rng_fault.gen_bool(self.options.crash_leader_over_lagging_follower) {
            // The lagging follower's log dir stalls too, past the successor's election (the
            // controller first waits out the leader's session): what it fetches from the
            // successor stays unsynced for a while.
            let until = self.now + self.rng_fault.gen_range(2_000..=8_000);
            self.nodes[f].log_stall_until = Some(self.nodes[f].log_stall_until.map_or(until, |t| t.max(until)));
            self.faults += 1;
            self.trace.add(0x57a11 + f as u64);
            // The leader dies (or loses its links) before its answers carrying the new HW
            // leave: what it had sent and not yet delivered is lost.
            self.lost_in_flight.insert(self.nodes[l].id, self.now);
            if self.rng_fault.gen_bool(0.75) {
                self.crash(l);
            } else {
                self.faults += 1;
                self.counts.partitions += 1;
                self.trace.add(0xc07 + l as u64);
                self.isolate(l);
            }
        }
    }

    fn strike(&mut self, i: usize) {
        if !self.faults_on || !self.nodes[i].is_up() {
            return;
        }
        match self.rng_fault.gen_range(0..3) {
            0 => self.crash(i),
            1 => {
                if self.nodes[i].paused_until.is_none() {
                    let until = self.now + self.rng_fault.gen_range(1..=3_000);
                    self.nodes[i].paused_until = Some(until);
                    self.faults += 1;
                    self.counts.pauses += 1;
                    self.trace.add(0x9a05e + i as u64);
                    self.schedule(until, Event::Resume { node: i });
                }
            }
            _ => {
                self.faults += 1;
                self.counts.partitions += 1;
                self.trace.add(0xc07 + i as u64);
                self.isolate(i);
            }
        }
    }

    fn crash(&mut self, i: usize) {
        if !self.nodes[i].is_up() {
            return;
        }
        self.faults += 1;
        self.counts.crashes += 1;
        self.trace.add(0xc4a54 + i as u64);
        self.nodes[i].crash();
        let torn = self.options.torn_writes;
        self.nodes[i].disk.crash(torn, &mut self.rng_disk);
        let (lo, hi) = self.options.restart_delay_ms;
        let at = self.now + self.rng_fault.gen_range(lo..=hi.max(lo));
        self.restart_at[i] = Some(at);
        self.schedule(at, Event::Restart { node: i });
    }

    /// The process exits after its controlled shutdown and starts again later. Its unsynced
    /// writes are treated as a crash would (the exit may be followed by a power loss):
    /// acknowledged data must not depend on them.
    fn stop(&mut self, i: usize) {
        if !self.nodes[i].is_up() {
            return;
        }
        self.trace.add(0x5709 + i as u64);
        self.nodes[i].crash();
        self.nodes[i].disk.crash(false, &mut self.rng_disk);
        let (lo, hi) = self.options.restart_delay_ms;
        let at = self.now + self.rng_fault.gen_range(lo..=hi.max(lo));
        self.restart_at[i] = Some(at);
        self.schedule(at, Event::Restart { node: i });
    }

    /// A controller acknowledges a controlled shutdown (`should_shutdown`) only once its
    /// committed image has moved every leadership another ISR member could take from the
    /// broker and taken the broker out of every larger ISR (KIP-631).
    fn check_shutdown_acknowledged(&mut self, i: usize, broker: NodeId) {
        let Some(p) = self.nodes[i].process.as_ref() else { return };
        let image = p.quorum.controller().image();
        let held: Vec<String> = image
            .topics()
            .values()
            .flat_map(|t| t.partitions.iter().enumerate().map(move |(index, s)| (t.name.clone(), index, s)))
            .filter(|(_, _, s)| s.isr.len() > 1 && (s.leader == broker || s.isr.contains(&broker)))
            .map(|(name, index, s)| format!("{name}-{index} (leader {}, ISR {:?})", s.leader, s.isr))
            .collect();
        if !held.is_empty() {
            let from = self.nodes[i].id;
            self.fail(format!("node {from} acknowledged the controlled shutdown of node {broker} while it still holds {held:?}"));
        }
    }

    fn heal(&mut self) {
        self.faults_on = false;
        self.healed_at = Some(self.now);
        self.heal_cuts();
        self.clogged.clear();
        for i in 0..self.nodes.len() {
            self.nodes[i].log_stall_until = None;
            if let Some(until) = self.nodes[i].paused_until {
                self.schedule(until.min(self.now), Event::Resume { node: i });
                self.nodes[i].paused_until = Some(self.now);
            }
            if !self.nodes[i].is_up() {
                self.schedule(self.now, Event::Restart { node: i });
            }
        }
    }

    /// Every replica up, one leader with the full ISR, every log equal to the leader's end,
    /// every high watermark at that end, and new writes acknowledged since healing.
    fn converged(&self, acked_before: usize) -> bool {
        let Some(l) = self.leader() else { return false };
        let Some(leader) = self.nodes[l].process.as_ref().and_then(|p| p.replica()) else {
            return false;
        };
        let end = leader.log_end_offset();
        if leader.isr().len() != self.nodes.len() || leader.high_watermark() != end {
            return false;
        }
        let all = self.nodes.iter().all(|n| {
            n.paused_until.is_none()
                && n.process.as_ref().and_then(|p| p.replica()).is_some_and(|r| {
                    r.log_end_offset() == end && r.high_watermark() == end && r.leader_epoch() == leader.leader_epoch()
                })
        });
        all && self.progress() >= acked_before + LIVENESS_WRITES
            && self.clients.iter().all(|c| c.inflight.is_none() || c.kind != ClientKind::Producer)
            // Every transactional producer stopped between transactions, and the coordinators
            // ended every transaction (the last stable offset caught up), except where a mode
            // may lose acknowledged writes: the coordinator's own records may be lost with
            // them, leaving a transaction no coordinator knows of open for ever (Kafka's
            // operators then abort it by hand).
            && self.clients.iter().filter_map(|c| c.txn.as_ref()).all(|t| t.stopped && t.stage == TxnStage::Add)
            && (leader.last_stable_offset() == leader.high_watermark() || self.options.may_lose_acknowledged())
            && self.clients.iter().filter(|c| c.kind == ClientKind::Committer).all(|c| c.commits.verified_since_heal)
            && self.acls_converged()
    }

    /// ACL clients done (one request acknowledged since healing, nothing in flight), and every
    /// node has applied the same metadata, up to the newest entry any node ever applied.
    fn acls_converged(&self) -> bool {
        if self.options.acl_clients == 0 {
            return true;
        }
        let newest = self.metadata.keys().next_back().copied().unwrap_or(0);
        self.clients.iter().filter(|c| c.kind == ClientKind::AclAdmin).all(|c| c.inflight.is_none() && self.acl_acked_since_heal(c.id))
            && self.nodes.iter().all(|n| {
                n.process.as_ref().is_some_and(|p| p.quorum.controller().applied_index().0 == newest)
            })
    }

    fn acl_acked_since_heal(&self, client: NodeId) -> bool {
        let Some(healed) = self.healed_at else { return false };
        self.acl_ops
            .iter()
            .any(|op| op.client == client && op.sent >= healed && matches!(op.outcome, AclOutcome::Acked { .. }))
    }

    /// The `acls` scenario's checks after convergence (`crate::acls`): every node's ACLs the
    /// same, in the same order, and deciding every probe alike; the ACLs agree with every
    /// acknowledged creation and deletion.
    fn check_acls(&mut self) {
        for op in &self.acl_ops {
            match op.outcome {
                AclOutcome::Acked { .. } => self.counts.acl_acked += 1,
                AclOutcome::Refused(_) => self.counts.acl_refused += 1,
                // Network copies are counted when made.
                AclOutcome::Unknown("duplicate") => {}
                AclOutcome::Unknown(_) | AclOutcome::Pending => self.counts.acl_unknown += 1,
            }
        }
        let images: Vec<(NodeId, &odradek_core::acl::Acls)> = self
            .nodes
            .iter()
            .filter_map(|n| Some((n.id, n.process.as_ref()?.quorum.controller().image().acls())))
            .collect();
        let verdict = acls::check_nodes(&images).and_then(|()| match images.first() {
            Some((_, reference)) => acls::check_history(&self.acl_ops, reference),
            None => Ok((0, 0)),
        });
        self.counts.acl_final = images.first().map_or(0, |(_, a)| a.len());
        match verdict {
            Ok((present, absent)) => {
                self.counts.acl_pinned_present = present;
                self.counts.acl_pinned_absent = absent;
            }
            Err(message) => self.fail(format!("acls: {message}")),
        }
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let state = match n.process.as_ref() {
                None => "down".to_string(),
                Some(p) => {
                    let raft = format!("raft {:?} term {} leader {:?}", p.quorum.raft().role(), p.quorum.raft().term(), p.quorum.raft().leader());
                    let replica = p.replica().map_or("no replica".to_string(), |r| {
                        format!(
                            "{:?} epoch {} leo {} hw {} lso {} isr {:?}",
                            r.role(),
                            r.leader_epoch(),
                            r.log_end_offset(),
                            r.high_watermark(),
                            r.last_stable_offset(),
                            r.isr()
                        )
                    });
                    let image = node::partition_state(p.quorum.controller())
                        .map_or("no partition".to_string(), |s| format!("image leader {} epoch {} isr {:?}", s.leader, s.leader_epoch, s.isr));
                    let busy = if p.disk_busy() { "; a disk action out" } else { "" };
                    format!("{raft}; {replica}; {image}{busy}")
                }
            };
            s.push_str(&format!("[node {}: {state}] ", n.id));
        }
        for c in self.clients.iter().filter(|c| c.kind == ClientKind::Committer) {
            let k = &c.commits;
            s.push_str(&format!(
                "[committer {} group {}: coordinator {:?}, acked {}, next {}, acked since healing {}, found since {}] ",
                c.id, k.group, k.coordinator, k.acked, k.next, k.acked_since_heal, k.verified_since_heal
            ));
        }
        for c in &self.clients {
            if let Some(t) = &c.txn {
                s.push_str(&format!(
                    "[transactor {} {}: coordinator {:?}, producer {:?}, {:?}, stopped {}, in flight {:?}] ",
                    c.id, t.id, t.coordinator, t.producer, t.stage, t.stopped, c.inflight.as_ref().map(|_| c.inflight_api)
                ));
            }
        }
        s
    }

    // ---- clients ----

    fn client_tick(&mut self, c: usize) {
        let now = self.now;
        if self.clients[c].done {
            return;
        }
        // A request without an answer: indeterminate.
        if let Some((_, sent, values)) = self.clients[c].inflight.clone() {
            if now - sent >= CLIENT_TIMEOUT_MS {
                self.clients[c].inflight = None;
                self.clients[c].leader = None;
                let client = &mut self.clients[c];
                if let Some(t) = client.txn.as_mut() {
                    // Coordinator requests go to a coordinator found again; a batch is resent,
                    // or given up with its transaction.
                    if client.inflight_api != ApiKey::Produce {
                        t.coordinator = None;
                    } else if self.options.transactor_abort_on_timeout {
                        if let Some((_, batch)) = t.batch.take() {
                            t.values.extend(batch);
                        }
                        t.commit = false;
                        t.stage = TxnStage::End;
                        t.new_epoch_after_abort = true;
                        self.counts.timeout_aborts += 1;
                    }
                }
                if client.kind == ClientKind::AclAdmin {
                    if let Some(op) = self.acl_ops.get_mut(values[0] as usize) {
                        op.outcome = AclOutcome::Unknown("timeout");
                    }
                }
                if client.kind == ClientKind::Committer {
                    client.commits.coordinator = None;
                    if client.inflight_api == ApiKey::OffsetCommit {
                        client.commits.unanswered.insert(values[0] as i64);
                    }
                }
                // An idempotent producer sends the batch again (its `retry`); one that does not
                // retry leaves the outcome unknown.
                if self.clients[c].kind == ClientKind::Producer {
                    if self.clients[c].idempotence.is_none() {
                        let process = self.clients[c].id.0 as u32;
                        self.history.push(Op::Send { process, values, outcome: SendOutcome::Info("timeout".into()) });
                    } else if self.clients[c].inflight_api == ApiKey::Produce {
                        self.counts.producer_retries += 1;
                        if let Some(idem) = self.clients[c].idempotence.as_mut() {
                            idem.attempts += 1;
                        }
                    }
                }

            }
        }
        if self.clients[c].inflight.is_none() {
            self.client_request(c);
        }
        let (lo, hi) = match self.clients[c].kind {
            ClientKind::Producer => self.options.produce_interval_ms,
            ClientKind::Consumer => (10, 100),
            ClientKind::Admin => (200, 200),
            ClientKind::Committer => (20, 200),
            ClientKind::Transactor => (5, 50),
            ClientKind::AclAdmin => self.options.acl_interval_ms,
        };
        let at = now + self.rng_work.gen_range(lo..=hi);
        self.schedule(at, Event::Client { client: c });
    }

    fn client_request(&mut self, c: usize) {
        let corr = self.clients[c].next_corr;
        self.clients[c].next_corr += 1;
        let from = self.clients[c].id;
        if self.clients[c].kind == ClientKind::Committer {
            self.committer_request(c, corr);
            return;
        }
        if self.clients[c].kind == ClientKind::AclAdmin {
            self.acl_request(c, corr);
            return;
        }
        if self.clients[c].kind == ClientKind::Transactor && self.transactor_request(c, corr) {
            return;
        }
        let Some((leader, leader_epoch)) = self.clients[c].leader else {
            // Ask a random node for the leader.
            let to = NodeId(self.rng_work.gen_range(1..=NODES));
            if self.clients[c].kind == ClientKind::Admin {
                // Through any node, as an admin client's CreateTopics goes to any broker.
                let topic = KafkaCreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(node::TOPIC)))
                    .with_num_partitions(1)
                    .with_replication_factor(NODES as i16)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str("min.insync.replicas"))
                        .with_value(Some(StrBytes::from_string(self.options.min_insync_replicas.to_string())))]);
                let body = KafkaCreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(5_000);
                let frame = encode_request(ApiKey::CreateTopics, client_version(ApiKey::CreateTopics), corr, &body);
                self.clients[c].inflight = Some((corr, self.now, Vec::new()));
                self.clients[c].inflight_api = ApiKey::CreateTopics;
                self.send(from, to, Payload::Kafka { frame });
                return;
            }
            let body = MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str(node::TOPIC))))]))
                .with_allow_auto_topic_creation(false);
            let frame = encode_request(ApiKey::Metadata, client_version(ApiKey::Metadata), corr, &body);
            self.clients[c].inflight = Some((corr, self.now, Vec::new()));
            self.clients[c].inflight_api = ApiKey::Metadata;
            self.send(from, to, Payload::Kafka { frame });
            return;
        };
        match self.clients[c].kind {
            ClientKind::Producer => {
                if self.acked_stop.is_some_and(|stop| self.progress() >= stop) {
                    self.clients[c].inflight = None;
                    return;
                }
                if let Some(idem) = &self.clients[c].idempotence {
                    if idem.producer.is_none() {
                        // InitProducerId from any node, as a producer asks its bootstrap broker.
                        let to = NodeId(self.rng_work.gen_range(1..=NODES));
                        let body = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
                        let frame = encode_request(ApiKey::InitProducerId, client_version(ApiKey::InitProducerId), corr, &body);
                        self.clients[c].inflight = Some((corr, self.now, Vec::new()));
                        self.clients[c].inflight_api = ApiKey::InitProducerId;
                        self.send(from, to, Payload::Kafka { frame });
                        return;
                    }
                }
                let (values, sequenced) = match &mut self.clients[c].idempotence {
                    Some(Idempotence { producer: Some((producer_id, epoch)), next_seq, retry, .. }) => {
                        let (first_seq, values) = retry.get_or_insert_with(|| {
                            let n = self.rng_work.gen_range(1..=self.options.records_per_batch_max);
                            let values: Vec<u64> = (0..n).map(|k| self.next_value + u64::from(k)).collect();
                            self.next_value += u64::from(n);
                            let first = *next_seq;
                            *next_seq = next_seq.wrapping_add(n as i32);
                            (first, values)
                        });
                        let sequenced = Sequenced { producer_id: *producer_id, epoch: *epoch, first_seq: *first_seq, transactional: false };
                        (values.clone(), Some(sequenced))
                    }
                    _ => {
                        let n = self.rng_work.gen_range(1..=self.options.records_per_batch_max);
                        let values: Vec<u64> = (0..n).map(|k| self.next_value + u64::from(k)).collect();
                        self.next_value += u64::from(n);
                        (values, None)
                    }
                };
                let records: Vec<(Option<Bytes>, Option<Bytes>)> = values
                    .iter()
                    .map(|v| (Some(Bytes::from(format!("p{}", from.0))), Some(Bytes::copy_from_slice(&v.to_be_bytes()))))
                    .collect();
                let batch = odradek_core::records::encode_producer_records(&records, self.now, Compression::None, sequenced);
                let acks = self.options.acks;
                let body = ProduceRequest::default()
                    .with_acks(acks)
                    .with_timeout_ms(3_000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str(node::TOPIC)))
                        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch))])]);
                let frame = encode_request(ApiKey::Produce, client_version(ApiKey::Produce), corr, &body);
                self.clients[c].inflight_api = ApiKey::Produce;
                self.send(from, leader, Payload::Kafka { frame });
                if acks == 0 {
                    // No answer will come: the outcome is unknown from the start.
                    let process = from.0 as u32;
                    self.history.push(Op::Send { process, values, outcome: SendOutcome::Info("acks=0".into()) });
                } else {
                    self.clients[c].inflight = Some((corr, self.now, values));
                }
            }
            ClientKind::Consumer => {
                // Now and then read from a random offset below what is known committed (a
                // consumer that seeks, or a new one starting from a committed position), so
                // reads start inside batches and at offsets a sequential reader passed long ago.
                if self.rng_work.gen_bool(0.05) {
                    let client = &mut self.clients[c];
                    client.position = self.rng_work.gen_range(0..=client.high_watermark_seen.max(0));
                    self.counts.seeks += 1;
                    self.history.push(Op::Seek { process: from.0 as u32 });
                }
                let body = KafkaFetch::default()
                    .with_replica_id(BrokerId(-1))
                    .with_isolation_level(i8::from(self.clients[c].read_committed))
                    .with_max_wait_ms(0)
                    .with_min_bytes(1)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_static_str(node::TOPIC)))
                        .with_partitions(vec![FetchPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(leader_epoch.0)
                            .with_fetch_offset(self.clients[c].position)
                            .with_last_fetched_epoch(-1)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(64 << 10)])]);
                let frame = encode_request(ApiKey::Fetch, client_version(ApiKey::Fetch), corr, &body);
                self.clients[c].inflight = Some((corr, self.now, Vec::new()));
                self.clients[c].inflight_api = ApiKey::Fetch;
                self.send(from, leader, Payload::Kafka { frame });
            }
            ClientKind::Transactor => self.transactor_produce(c, corr, leader),
            ClientKind::Admin | ClientKind::Committer | ClientKind::AclAdmin => {}
        }
    }

    /// An ACL client's next CreateAcls or DeleteAcls, to a random node; after healing it stops
    /// once one was acknowledged.
    fn acl_request(&mut self, c: usize, corr: i32) {
        let from = self.clients[c].id;
        if self.acl_acked_since_heal(from) {
            return;
        }
        let change = acls::draw_change(&mut self.rng_work, &self.acl_created);
        if let AclChange::Create(bindings) = &change {
            self.acl_created.extend(bindings.iter().cloned());
        }
        let request = change.request();
        let index = self.acl_ops.len();
        self.acl_ops.push(AclOp { client: from, change, sent: self.now, answered: None, outcome: AclOutcome::Pending });
        self.clients[c].inflight = Some((corr, self.now, vec![index as u64]));
        let to = NodeId(self.rng_work.gen_range(1..=NODES));
        self.send(from, to, Payload::AclRequest { corr, request });
    }

    fn acl_receive(&mut self, c: usize, corr: i32, response: Option<Response>) {
        let Some((_, _, values)) = self.clients[c].inflight.clone().filter(|(inflight, ..)| *inflight == corr) else {
            // A duplicate, or an answer to a request given up on.
            return;
        };
        self.clients[c].inflight = None;
        let op = &mut self.acl_ops[values[0] as usize];
        op.answered = Some(self.now);
        op.outcome = match response {
            Some(response) => acls::outcome_of(&response),
            None => AclOutcome::Unknown("no controller answered the node"),
        };
    }

    /// A transactional producer's next request to its coordinator; `false` when its next
    /// request is a produce (sent by the caller once the partition's leader is known).
    fn transactor_request(&mut self, c: usize, corr: i32) -> bool {
        let now = self.now;
        let stop = self.acked_stop.is_some_and(|stop| self.progress() >= stop);
        let client = &mut self.clients[c];
        let from = client.id;
        let t = client.txn.as_mut().expect("a transactor");
        if now < t.paused_until {
            return true;
        }
        let id = || TransactionalId(StrBytes::from_string(t.id.clone()));
        let (api, frame, to) = match (t.coordinator, t.producer, t.stage) {
            (None, ..) => {
                let body = FindCoordinatorRequest::default().with_key(StrBytes::from_string(t.id.clone())).with_key_type(1);
                let to = NodeId(self.rng_work.gen_range(1..=NODES));
                (ApiKey::FindCoordinator, encode_request(ApiKey::FindCoordinator, client_version(ApiKey::FindCoordinator), corr, &body), to)
            }
            (Some(coordinator), None, _) => {
                let body = InitProducerIdRequest::default()
                    .with_transactional_id(Some(id()))
                    .with_transaction_timeout_ms(TXN_TIMEOUT_MS)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1);
                (ApiKey::InitProducerId, encode_request(ApiKey::InitProducerId, client_version(ApiKey::InitProducerId), corr, &body), coordinator)
            }
            (Some(coordinator), Some((producer_id, epoch)), TxnStage::Add) => {
                if stop {
                    t.stopped = true;
                    return true;
                }
                t.stopped = false;
                let body = AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(id())
                    .with_v3_and_below_producer_id(ProducerId(producer_id))
                    .with_v3_and_below_producer_epoch(epoch)
                    .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str(node::TOPIC)))
                        .with_partitions(vec![0])]);
                (ApiKey::AddPartitionsToTxn, encode_request(ApiKey::AddPartitionsToTxn, client_version(ApiKey::AddPartitionsToTxn), corr, &body), coordinator)
            }
            (Some(_), Some(_), TxnStage::Produce) => return false,
            (Some(coordinator), Some((producer_id, epoch)), TxnStage::End) => {
                let body = EndTxnRequest::default()
                    .with_transactional_id(id())
                    .with_producer_id(ProducerId(producer_id))
                    .with_producer_epoch(epoch)
                    .with_committed(t.commit);
                (ApiKey::EndTxn, encode_request(ApiKey::EndTxn, client_version(ApiKey::EndTxn), corr, &body), coordinator)
            }
        };
        client.inflight = Some((corr, now, Vec::new()));
        client.inflight_api = api;
        self.send(from, to, Payload::Kafka { frame });
        true
    }

    /// The transaction's next batch (or the one being resent), to the partition's leader.
    fn transactor_produce(&mut self, c: usize, corr: i32, leader: NodeId) {
        let now = self.now;
        let from = self.clients[c].id;
        let t = self.clients[c].txn.as_mut().expect("a transactor");
        let (producer_id, epoch) = t.producer.expect("producing after InitProducerId");
        let (first_seq, values) = t.batch.get_or_insert_with(|| {
            let n = self.rng_work.gen_range(1..=self.options.records_per_batch_max);
            let values: Vec<u64> = (0..n).map(|k| self.next_value + u64::from(k)).collect();
            self.next_value += u64::from(n);
            let first = t.next_seq;
            t.next_seq = t.next_seq.wrapping_add(n as i32);
            (first, values)
        });
        let sequenced = Sequenced { producer_id, epoch, first_seq: *first_seq, transactional: true };
        let values = values.clone();
        let records: Vec<(Option<Bytes>, Option<Bytes>)> = values
            .iter()
            .map(|v| (Some(Bytes::from(format!("p{}", from.0))), Some(Bytes::copy_from_slice(&v.to_be_bytes()))))
            .collect();
        let batch = odradek_core::records::encode_producer_records(&records, now, Compression::None, Some(sequenced));
        let body = ProduceRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(t.id.clone()))))
            .with_acks(-1)
            .with_timeout_ms(3_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(node::TOPIC)))
                .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch))])]);
        let frame = encode_request(ApiKey::Produce, client_version(ApiKey::Produce), corr, &body);
        self.clients[c].inflight = Some((corr, now, values));
        self.clients[c].inflight_api = ApiKey::Produce;
        let late = self.options.late_produce_probability;
        if self.faults_on && late > 0.0 && self.rng_net.gen_bool(late) {
            let delay = CLIENT_TIMEOUT_MS + self.rng_net.gen_range(100..6_000);
            self.counts.late_produces += 1;
            self.send_late(from, leader, Payload::Kafka { frame }, delay);
        } else {
            self.send(from, leader, Payload::Kafka { frame });
        }
    }

    /// A message the network holds for `delay` ms (unless cut now).
    fn send_late(&mut self, from: NodeId, to: NodeId, payload: Payload, delay: i64) {
        if self.cut.contains(&(from, to)) {
            return;
        }
        let to_incarnation = self.node_index(to).map_or(0, |i| self.nodes[i].incarnation);
        self.faults += 1;
        self.trace.add(0x1a7e + (self.now + delay) as u64);
        self.schedule(self.now + delay, Event::Deliver { from, to, sent: self.now, to_incarnation, payload });
    }

    /// The transaction's fate is the coordinator's now: its outcome is unknown, and the
    /// producer starts over with InitProducerId (which fences it and aborts what it left).
    fn transactor_abandon(&mut self, c: usize, _why: ErrorCode) {
        let process = self.clients[c].id.0 as u32;
        let t = self.clients[c].txn.as_mut().expect("a transactor");
        let mut values = std::mem::take(&mut t.values);
        if let Some((_, batch)) = t.batch.take() {
            values.extend(batch);
        }
        t.producer = None;
        t.stage = TxnStage::Add;
        self.counts.producer_resets += 1;
        self.counts.txn_unknown += 1;
        self.history.push(Op::Txn { process, values, outcome: TxnOutcome::Unknown });
    }

    fn transactor_receive(&mut self, c: usize, frame: Bytes, api: ApiKey, corr: i32, values: Vec<u64>) {
        let version = client_version(api);
        let process = self.clients[c].id.0 as u32;
        // Errors that only ask for a retry, after finding the coordinator again for some.
        let retry = |e: ErrorCode| {
            matches!(e, ErrorCode::ConcurrentTransactions | ErrorCode::CoordinatorLoadInProgress)
        };
        let rediscover = |e: ErrorCode| matches!(e, ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable);
        let error = match api {
            ApiKey::FindCoordinator => {
                let answer: FindCoordinatorResponse = wire::decode_response(frame, api, version, corr).expect("a coordinator answer decodes");
                if answer.error_code == 0 && answer.node_id.0 >= 0 {
                    self.clients[c].txn.as_mut().expect("a transactor").coordinator = Some(NodeId(answer.node_id.0));
                }
                return;
            }
            ApiKey::InitProducerId => {
                let answer: InitProducerIdResponse = wire::decode_response(frame, api, version, corr).expect("an init producer id answer decodes");
                match ErrorCode::try_from_code(answer.error_code) {
                    None => {
                        let t = self.clients[c].txn.as_mut().expect("a transactor");
                        t.producer = Some((answer.producer_id.0, answer.producer_epoch));
                        t.next_seq = 0;
                        t.stage = TxnStage::Add;
                        self.counts.producer_ids += 1;
                        return;
                    }
                    Some(e) => e,
                }
            }
            ApiKey::AddPartitionsToTxn => {
                let answer: AddPartitionsToTxnResponse = wire::decode_response(frame, api, version, corr).expect("an add partitions answer decodes");
                let code = answer.results_by_topic_v3_and_below.iter().flat_map(|t| &t.results_by_partition).map(|p| p.partition_error_code).find(|&c| c != 0);
                match code.and_then(ErrorCode::try_from_code) {
                    None => {
                        let batches = self.rng_work.gen_range(1..=3);
                        let commit = self.rng_work.gen_bool(0.7);
                        let t = self.clients[c].txn.as_mut().expect("a transactor");
                        t.stage = TxnStage::Produce;
                        t.batches_left = batches;
                        t.commit = commit;
                        if self.options.transactor_pause_probability > 0.0 && self.rng_work.gen_bool(self.options.transactor_pause_probability) {
                            // A zombie: gone past the transaction timeout with its transaction
                            // open; it comes back and carries on as if nothing happened.
                            t.paused_until = self.now + i64::from(TXN_TIMEOUT_MS) + self.rng_work.gen_range(1_000..5_000);
                            self.counts.zombie_pauses += 1;
                        }
                        return;
                    }
                    Some(e) => e,
                }
            }
            ApiKey::Produce => {
                let answer: KafkaProduceResponse = wire::decode_response(frame, api, version, corr).expect("a produce answer decodes");
                let p = &answer.responses[0].partition_responses[0];
                match ErrorCode::try_from_code(p.error_code) {
                    None => {
                        let t = self.clients[c].txn.as_mut().expect("a transactor");
                        t.batch = None;
                        t.values.extend(values);
                        t.batches_left = t.batches_left.saturating_sub(1);
                        if t.batches_left == 0 {
                            t.stage = TxnStage::End;
                        }
                        return;
                    }
                    Some(
                        ErrorCode::NotLeaderOrFollower
                        | ErrorCode::NotEnoughReplicas
                        | ErrorCode::NotEnoughReplicasAfterAppend
                        | ErrorCode::RequestTimedOut
                        | ErrorCode::UnknownTopicOrPartition
                        | ErrorCode::LeaderNotAvailable
                        | ErrorCode::KafkaStorageError,
                    ) => {
                        // Sent again, same sequence: written once whatever happened.
                        self.clients[c].leader = None;
                        self.counts.producer_retries += 1;
                        return;
                    }
                    Some(e) => {
                        self.transactor_abandon(c, e);
                        return;
                    }
                }
            }
            ApiKey::EndTxn => {
                let answer: EndTxnResponse = wire::decode_response(frame, api, version, corr).expect("an end txn answer decodes");
                match ErrorCode::try_from_code(answer.error_code) {
                    None => {
                        let t = self.clients[c].txn.as_mut().expect("a transactor");
                        let values = std::mem::take(&mut t.values);
                        let outcome = if t.commit { TxnOutcome::Committed } else { TxnOutcome::Aborted };
                        if t.commit {
                            self.counts.txn_commits += 1;
                        } else {
                            self.counts.txn_aborts += 1;
                        }
                        t.stage = TxnStage::Add;
                        if std::mem::take(&mut t.new_epoch_after_abort) {
                            // librdkafka bumps the epoch after an abort that had a request
                            // time out (KIP-360): the next transaction runs under a new epoch.
                            t.producer = None;
                        }
                        self.history.push(Op::Txn { process, values, outcome });
                        return;
                    }
                    Some(e) => e,
                }
            }
            other => unreachable!("transactors send no {other:?}"),
        };
        let t = self.clients[c].txn.as_mut().expect("a transactor");
        if rediscover(error) {
            t.coordinator = None;
        } else if !retry(error) {
            if api == ApiKey::InitProducerId {
                // Nothing open yet: ask again.
                t.coordinator = None;
            } else {
                self.transactor_abandon(c, error);
            }
        }
    }

    /// A committer's next request: find the coordinator, then commit the next offset and
    /// fetch it back, in turn.
    fn committer_request(&mut self, c: usize, corr: i32) {
        let client = &mut self.clients[c];
        let from = client.id;
        let commits = &mut client.commits;
        let group = GroupId(StrBytes::from_string(commits.group.clone()));
        let topic = || TopicName(StrBytes::from_static_str(node::TOPIC));
        let (api, body, to, values): (ApiKey, Bytes, NodeId, Vec<u64>) = match commits.coordinator {
            None => {
                let body = FindCoordinatorRequest::default().with_key(StrBytes::from_string(commits.group.clone())).with_key_type(0);
                let to = NodeId(self.rng_work.gen_range(1..=NODES));
                (ApiKey::FindCoordinator, encode_request(ApiKey::FindCoordinator, client_version(ApiKey::FindCoordinator), corr, &body), to, Vec::new())
            }
            Some(coordinator) if commits.fetch_next => {
                commits.floor = commits.acked;
                let body = OffsetFetchRequest::default().with_group_id(group).with_topics(Some(vec![
                    OffsetFetchRequestTopic::default().with_name(topic()).with_partition_indexes(vec![0]),
                ]));
                (ApiKey::OffsetFetch, encode_request(ApiKey::OffsetFetch, client_version(ApiKey::OffsetFetch), corr, &body), coordinator, Vec::new())
            }
            Some(coordinator) => {
                let offset = commits.next;
                commits.next += 1;
                // A simple commit (no member, generation -1), as an `assign`ing consumer's.
                let body = OffsetCommitRequest::default()
                    .with_group_id(group)
                    .with_generation_id_or_member_epoch(-1)
                    .with_member_id(StrBytes::from_static_str(""))
                    .with_topics(vec![OffsetCommitRequestTopic::default().with_name(topic()).with_partitions(vec![
                        OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset),
                    ])]);
                (ApiKey::OffsetCommit, encode_request(ApiKey::OffsetCommit, client_version(ApiKey::OffsetCommit), corr, &body), coordinator, vec![offset as u64])
            }
        };
        client.inflight = Some((corr, self.now, values));
        client.inflight_api = api;
        self.send(from, to, Payload::Kafka { frame: body });
    }

    /// A committer's answer. A fetched offset must be at least every commit acknowledged
    /// before the fetch was sent, unless it is a commit that was never answered (it may have
    /// landed late), and never one that was not asked for.
    fn committer_receive(&mut self, c: usize, frame: Bytes, api: ApiKey, corr: i32, values: Vec<u64>) {
        let version = client_version(api);
        let may_lose = !self.options.ack_after_fsync;
        let healed = self.acked_stop.is_some();
        let id = self.clients[c].id;
        let commits = &mut self.clients[c].commits;
        let current = commits.answered_by_current.remove(&corr).unwrap_or(false);
        // Requests are answered in order: what is left below is for requests given up on.
        commits.answered_by_current.retain(|&k, _| k > corr);
        match api {
            ApiKey::FindCoordinator => {
                let answer: FindCoordinatorResponse = wire::decode_response(frame, api, version, corr).expect("a coordinator answer decodes");
                if answer.error_code == 0 && answer.node_id.0 >= 0 {
                    commits.coordinator = Some(NodeId(answer.node_id.0));
                }
            }
            ApiKey::OffsetCommit => {
                let answer: OffsetCommitResponse = wire::decode_response(frame, api, version, corr).expect("a commit answer decodes");
                let code = answer.topics.first().and_then(|t| t.partitions.first()).map_or(-1, |p| p.error_code);
                let offset = values[0] as i64;
                if code == 0 {
                    commits.acked = commits.acked.max(offset);
                    commits.fetch_next = true;
                    self.counts.commits += 1;
                    if healed {
                        commits.acked_since_heal = true;
                    }
                } else {
                    commits.coordinator = None;
                }
            }
            ApiKey::OffsetFetch => {
                let answer: OffsetFetchResponse = wire::decode_response(frame, api, version, corr).expect("an offset fetch answer decodes");
                let partition = answer.topics.first().and_then(|t| t.partitions.first());
                let Some(p) = partition.filter(|p| answer.error_code == 0 && p.error_code == 0) else {
                    commits.coordinator = None;
                    return;
                };
                commits.fetch_next = false;
                let v = p.committed_offset;
                let floor = commits.floor;
                let lost = if v >= floor {
                    None
                } else if v >= 0 && commits.unanswered.contains(&v) {
                    None
                } else if !current {
                    self.counts.stale_offset_reads += 1;
                    None
                } else {
                    Some(format!("committer {id} (group {}): an offset fetch returned {v}, below the acknowledged commit {floor}", commits.group))
                };
                if v >= commits.next {
                    let message = format!("committer {id} (group {}): an offset fetch returned {v}, never committed (next is {})", commits.group, commits.next);
                    self.fail(message);
                } else if let Some(message) = lost {
                    if may_lose {
                        self.counts.commits_lost += 1;
                    } else {
                        self.fail(message);
                    }
                } else if commits.acked_since_heal && v >= floor {
                    commits.verified_since_heal = true;
                }
            }
            other => unreachable!("committers send no {other:?}"),
        }
    }

    fn client_receive(&mut self, c: usize, _from: NodeId, payload: Payload) {
        let process = self.clients[c].id.0 as u32;
        let frame = match payload {
            Payload::KafkaResponse { frame } => frame,
            Payload::AclAnswer { corr, response } => {
                self.acl_receive(c, corr, response);
                return;
            }
            _ => return,
        };
        let mut buf = BytesMut::from(&frame[..]);
        let frame = wire::split_frame(&mut buf).expect("nodes send whole frames");
        let answered = i32::from_be_bytes(frame[..4].try_into().expect("a correlation id"));
        let Some((corr, _, values)) = self.clients[c].inflight.clone().filter(|(corr, ..)| *corr == answered) else {
            if self.options.acks == 0 && self.clients[c].kind == ClientKind::Producer {
                // acks=0 hears back only about errors (Kafka closes the connection): find
                // the leader again.
                self.clients[c].leader = None;
            }
            // Otherwise a duplicate, or an answer to a request given up on.
            return;
        };
        let api = self.clients[c].inflight_api;
        let version = client_version(api);
        self.clients[c].inflight = None;
        if self.clients[c].kind == ClientKind::Committer {
            self.committer_receive(c, frame, api, corr, values);
            return;
        }
        if self.clients[c].kind == ClientKind::Transactor && api != ApiKey::Metadata {
            self.transactor_receive(c, frame, api, corr, values);
            return;
        }
        match api {
            ApiKey::CreateTopics => {
                let answer: KafkaCreateTopicsResponse = wire::decode_response(frame, api, version, corr).expect("a create topics answer decodes");
                let code = answer.topics.first().map_or(-1, |t| t.error_code);
                if code == 0 || code == ErrorCode::TopicAlreadyExists.code() {
                    self.clients[c].done = true;
                }
            }
            ApiKey::Metadata => {
                let answer: MetadataResponse = wire::decode_response(frame, api, version, corr).expect("a metadata answer decodes");
                let partition = answer
                    .topics
                    .iter()
                    .filter(|t| t.error_code == 0 && t.name.as_ref().is_some_and(|n| n.0.as_str() == node::TOPIC))
                    .flat_map(|t| &t.partitions)
                    .find(|p| p.partition_index == 0 && p.error_code == 0 && p.leader_id.0 >= 0);
                if let Some(p) = partition {
                    self.clients[c].leader = Some((NodeId(p.leader_id.0), LeaderEpoch(p.leader_epoch)));
                }
            }
            ApiKey::InitProducerId => {
                let answer: InitProducerIdResponse = wire::decode_response(frame, api, version, corr).expect("an init producer id answer decodes");
                if answer.error_code == 0 {
                    let idem = self.clients[c].idempotence.as_mut().expect("only idempotent producers ask");
                    idem.producer = Some((answer.producer_id.0, answer.producer_epoch));
                    idem.next_seq = 0;
                    self.counts.producer_ids += 1;
                }
            }
            ApiKey::Produce if self.clients[c].idempotence.is_some() => {
                let answer: KafkaProduceResponse = wire::decode_response(frame, api, version, corr).expect("a produce answer decodes");
                let p = &answer.responses[0].partition_responses[0];
                let idem = self.clients[c].idempotence.as_mut().expect("checked");
                match ErrorCode::try_from_code(p.error_code) {
                    None => {
                        idem.retry = None;
                        if std::mem::take(&mut idem.attempts) > 0 {
                            self.counts.retries_acked += 1;
                        }
                        self.history.push(Op::Send { process, values, outcome: SendOutcome::Ok { base_offset: p.base_offset } });
                    }
                    // The producer id is no good here any more (its state expired or was lost
                    // with an unclean election, or a newer epoch exists): as Kafka's client
                    // does (KIP-360), start over with a new id; whether the batch was written
                    // is unknown.
                    Some(e @ (ErrorCode::OutOfOrderSequenceNumber | ErrorCode::InvalidProducerEpoch | ErrorCode::UnknownProducerId)) => {
                        self.counts.producer_resets += 1;
                        *idem = Idempotence::default();
                        self.history.push(Op::Send { process, values, outcome: SendOutcome::Info(format!("{e:?}")) });
                    }
                    // Anything else is retried, same batch, same sequence.
                    Some(_) => {
                        self.counts.producer_retries += 1;
                        idem.attempts += 1;
                        self.clients[c].leader = None;
                    }
                }
            }
            ApiKey::Produce => {
                let answer: KafkaProduceResponse = wire::decode_response(frame, api, version, corr).expect("a produce answer decodes");
                let p = &answer.responses[0].partition_responses[0];
                let outcome = match ErrorCode::try_from_code(p.error_code) {
                    None => SendOutcome::Ok { base_offset: p.base_offset },
                    Some(e) => {
                        self.clients[c].leader = None;
                        if definitely_not_written(e) {
                            self.counts.definite_failures += 1;
                            SendOutcome::Fail(format!("{e:?}"))
                        } else {
                            SendOutcome::Info(format!("{e:?}"))
                        }
                    }
                };
                self.history.push(Op::Send { process, values, outcome });
            }
            ApiKey::Fetch => {
                let answer: KafkaFetchResponse = wire::decode_response(frame, api, version, corr).expect("a fetch answer decodes");
                let p = &answer.responses[0].partitions[0];
                match ErrorCode::try_from_code(p.error_code) {
                    None => {
                        let high_watermark = p.high_watermark;
                        let bytes = p.records.clone().unwrap_or_default();
                        if self.clients[c].read_committed {
                            let aborted: Vec<(i64, i64)> =
                                p.aborted_transactions.iter().flatten().map(|t| (t.producer_id.0, t.first_offset)).collect();
                            let (records, next) = committed_values(&bytes, &aborted);
                            let client = &mut self.clients[c];
                            client.high_watermark_seen = client.high_watermark_seen.max(high_watermark);
                            let position = client.position;
                            let records: Vec<(i64, u64)> = records.into_iter().filter(|&(o, _)| o >= position).collect();
                            if let Some(next) = next.filter(|&n| n > position) {
                                client.position = next;
                            }
                            if !records.is_empty() {
                                self.counts.committed_polls += 1;
                                self.history.push(Op::CommittedPoll { process, records });
                            }
                            return;
                        }
                        let client = &mut self.clients[c];
                        client.high_watermark_seen = client.high_watermark_seen.max(high_watermark);
                        // A batch may start before the position: skip what precedes it.
                        let position = client.position;
                        let records: Vec<(i64, u64)> = decode_values(&bytes).into_iter().filter(|&(o, _)| o >= position).collect();
                        if let Some(&(last, _)) = records.last() {
                            client.position = last + 1;
                            self.counts.polls += 1;
                            self.history.push(Op::Poll { process, records, high_watermark });
                        }
                    }
                    Some(e) => {
                        self.clients[c].leader = None;
                        if e == ErrorCode::OffsetOutOfRange {
                            // The log was cut below our position (a mode that may lose
                            // acknowledged writes): start over from the beginning.
                            self.clients[c].position = 0;
                            self.history.push(Op::Seek { process });
                        }
                    }
                }
            }
            other => unreachable!("clients send no {other:?}"),
        }
    }

    /// `ODRADEK_SIM_DEBUG_TXN`: the leader's log, batch by batch, and the transactions.
    fn dump_txn_log(&self) {
        let Some(l) = self.leader() else { return };
        let node = &self.nodes[l];
        let Some(r) = node.process.as_ref().and_then(|p| p.replica()) else { return };
        let bytes = node.disk.log(&node::tp()).read(r.log_start_offset().0, r.log_end_offset().0);
        for (position, h) in scan_headers(&bytes) {
            let batch = bytes.slice(position..position + h.total_len());
            let marker = odradek_core::batch::control_marker(&batch);
            let values: Vec<u64> = if h.is_control() { Vec::new() } else { decode_values(&batch).into_iter().map(|(_, v)| v).collect() };
            eprintln!(
                "batch {}..={} pid {} epoch {} seq {} txn {} marker {:?} values {:?}",
                h.base_offset, h.last_offset(), h.producer_id, h.producer_epoch, h.base_sequence, h.is_transactional(), marker, values
            );
        }
        for op in &self.history {
            if let Op::Txn { .. } = op {
                eprintln!("{op:?}");
            }
        }
    }

    /// After healing: read the committed log from the leader, through its fetch path.
    fn final_read(&mut self) {
        let Some(l) = self.leader() else { return };
        let node = &mut self.nodes[l];
        let now = node.clock.local(self.now);
        let Some(p) = node.process.as_mut() else { return };
        let Some(r) = p.replica() else { return };
        let request = FetchRequest {
            replica_id: NodeId::NONE,
            current_leader_epoch: r.leader_epoch(),
            fetch_offset: r.log_start_offset(),
            last_fetched_epoch: LeaderEpoch::NONE,
            log_start_offset: Offset(-1),
            max_wait_ms: 0,
            max_bytes: i32::MAX,
            read_committed: false,
            durable_offset: None,
        };
        let Some((FetchAnswer::Read { read_to, .. }, _)) = p.fetch(now, &request) else {
            self.fail("final read refused by the leader".into());
            return;
        };
        let bytes = node.disk.log(&node::tp()).read(request.fetch_offset.0, read_to.0);
        let records = decode_values(&bytes);
        self.history.push(Op::FinalRead { records });
        // As a read_committed consumer reads it: every transaction ended by now, so the last
        // stable offset is the high watermark.
        let Some(r) = p.replica() else { return };
        let (stable, high_watermark) = (r.last_stable_offset(), r.high_watermark());
        let aborted: Vec<(i64, i64)> =
            r.producers().aborted_between(request.fetch_offset, read_to).iter().map(|t| (t.producer_id, t.first_offset.0)).collect();
        if stable != high_watermark && !self.options.may_lose_acknowledged() {
            self.fail(format!("a transaction is still open after healing: last stable offset {stable} below the high watermark {high_watermark}"));
            return;
        }
        let (records, _) = committed_values(&bytes, &aborted);
        // Only below the last stable offset (a transaction left open in a lossy mode).
        let records: Vec<(i64, u64)> = records.into_iter().filter(|&(o, _)| o < stable.0).collect();
        self.history.push(Op::FinalCommitted { records });
    }

    // ---- invariants ----

    fn fail(&mut self, message: String) {
        if self.failure.is_none() {
            self.failure = Some(Failure::Invariant(format!("t={}ms: {message}", self.now)));
        }
    }

    /// Runs after every event.
    fn check_invariants(&mut self) {
        let mut violations = Vec::new();
        // Without fsync, positions count page-cache data: a power loss may take committed
        // data away, so only the checks that hold in every mode run.
        let durable = self.options.ack_after_fsync;
        for i in 0..self.nodes.len() {
            let fresh: Vec<_> = self.nodes[i]
                .disk
                .logs
                .iter_mut()
                .flat_map(|(partition, log)| std::mem::take(&mut log.fresh).into_iter().map(move |b| (partition.clone(), b)))
                .collect();
            for (partition, b) in fresh {
                let key = (partition, b.base, b.epoch);
                match self.written.get(&key) {
                    Some((end, bytes, source)) if *end != b.end || *bytes != b.bytes => {
                        violations.push(format!(
                            "node {}: batch {}..{} of leader epoch {} of {:?} differs from the batch {}..{end} first written at that offset in that epoch ({source})",
                            self.nodes[i].id, b.base, b.end, b.epoch, key.0, b.base
                        ));
                    }
                    Some(_) => {}
                    None => {
                        let source = format!("node {} at t={}ms", self.nodes[i].id, self.now);
                        self.written.insert(key, (b.end, b.bytes, source));
                    }
                }
            }
        }
        for node in &self.nodes {
            if let Some(p) = &node.process {
                violations.extend(p.long_polls_held_with_answers().into_iter().map(|v| format!("node {}: {v}", node.id)));
            }
        }
        let mut leaders: Vec<(usize, i32, i64, Vec<NodeId>)> = Vec::new();
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            let id = node.id;
            let Some(r) = node.process.as_ref().and_then(|p| p.replica()) else { continue };
            let hw = r.high_watermark().0;
            let epoch = r.leader_epoch().0;
            self.trace.add(hw as u64 ^ ((epoch as u64) << 40) ^ ((r.log_end_offset().0 as u64) << 20));
            let w = self.watch.entry(i).or_default();
            if w.incarnation != node.incarnation {
                *w = Watch { incarnation: node.incarnation, high_watermark: hw, leader_epoch: epoch, verified_to: 0, log_cuts: node.disk.log(&node::tp()).log_cuts };
            }
            if hw < w.high_watermark && durable {
                violations.push(format!("node {id}: high watermark moved back from {} to {hw}", w.high_watermark));
            }
            if epoch < w.leader_epoch {
                violations.push(format!("node {id}: leader epoch moved back from {} to {epoch}", w.leader_epoch));
            }
            if r.role() == Role::Leader {
                let isr = r.isr();
                if hw > w.high_watermark && isr.len() < r_min_isr(node) {
                    violations.push(format!(
                        "node {id}: high watermark advanced {} -> {hw} with ISR {isr:?} below min.insync.replicas {}",
                        w.high_watermark,
                        r_min_isr(node)
                    ));
                }
                match self.leaders_by_epoch.get(&epoch) {
                    Some(&other) if other != id => {
                        violations.push(format!("two leaders in leader epoch {epoch}: nodes {other} and {id}"));
                    }
                    Some(_) => {}
                    None => {
                        self.leaders_by_epoch.insert(epoch, id);
                    }
                }
                leaders.push((i, epoch, hw, isr));
            }
            // After a failed fsync nothing this incarnation wrote past its durable end then may
            // count: not as its own durable offset, so neither in its HW nor in a leader's.
            if let Some((incarnation, durable)) = self.sync_failed[i] {
                if incarnation == node.incarnation && r.durable_offset().0 > durable {
                    violations.push(format!(
                        "node {id}: counts data up to {} as durable after an fsync failed with only {durable} durable",
                        r.durable_offset()
                    ));
                }
            }
            w.high_watermark = hw;
            w.leader_epoch = epoch;
            let log = node.disk.log(&node::tp());
            if w.log_cuts != log.log_cuts {
                w.log_cuts = log.log_cuts;
                w.verified_to = w.verified_to.min(log.log_end());
            }
        }
        // Committed prefixes: each replica's log below its own HW, and each ISR member's log
        // below its leader's HW, equals the batches first seen committed at those offsets.
        let mut targets: BTreeMap<usize, (i64, String)> = BTreeMap::new();
        for i in 0..self.nodes.len() {
            if let Some(r) = self.nodes[i].process.as_ref().and_then(|p| p.replica()) {
                targets.insert(i, (r.high_watermark().0, format!("its high watermark {}", r.high_watermark())));
            }
        }
        for (l, epoch, hw, isr) in &leaders {
            for member in isr {
                let Some(m) = self.node_index(*member) else { continue };
                if m == *l {
                    continue;
                }
                let disk = self.nodes[m].disk.log(&node::tp());
                if disk.log_durable < *hw && durable {
                    violations.push(format!(
                        "ISR member {member} of leader {} (epoch {epoch}) holds durable data only below {}, under the high watermark {hw}",
                        self.nodes[*l].id, disk.log_durable
                    ));
                }
                let entry = targets.entry(m).or_insert((0, String::new()));
                if *hw > entry.0 {
                    *entry = (*hw, format!("the high watermark {hw} of its leader {}", self.nodes[*l].id));
                }
            }
        }
        // Every member of the controller's committed ISR could be elected next: each must hold
        // (durably) everything any replica ever counted as committed (KIP-101's epoch start
        // rule and KIP-497's maximal ISR exist for this).
        for r in self.nodes.iter().filter_map(|n| n.process.as_ref()?.replica()) {
            self.committed_end = self.committed_end.max(r.high_watermark().0);
        }
        if durable {
            // The newest committed image anywhere (a restarted node replays older ones).
            for p in self.nodes.iter().filter_map(|n| n.process.as_ref()) {
                let index = p.quorum.controller().applied_index().0;
                if self.latest_image.as_ref().is_none_or(|(i, _)| index > *i) {
                    if let Some(state) = node::partition_state(p.quorum.controller()) {
                        self.latest_image = Some((index, state));
                    }
                }
            }
            if let Some((_, state)) = &self.latest_image {
                for member in &state.isr {
                    let Some(m) = self.node_index(*member) else { continue };
                    let disk = self.nodes[m].disk.log(&node::tp());
                    if disk.log_durable < self.committed_end {
                        violations.push(format!(
                            "node {member} is in the committed ISR {:?} (leader {}, epoch {}, partition epoch {}) but holds durable data only below {}, under the committed offset {}",
                            state.isr, state.leader, state.leader_epoch, state.partition_epoch, disk.log_durable, self.committed_end
                        ));
                    }
                }
            }
        }
        if !durable {
            targets.clear();
        }
        for (i, (target, why)) in targets {
            let disk = self.nodes[i].disk.log(&node::tp());
            let Some(w) = self.watch.get_mut(&i) else { continue };
            let upto = target.min(disk.log_end());
            if w.verified_to >= upto {
                continue;
            }
            let start = disk.batches.partition_point(|b| b.end <= w.verified_to);
            for b in disk.batches[start..].iter().take_while(|b| b.end <= upto) {
                match self.committed.get(&b.base) {
                    Some((end, bytes, source)) if *end != b.end || *bytes != b.bytes => {
                        violations.push(format!(
                            "node {}: batch {}..{} (epoch {}) below {why} differs from the committed batch {}..{end} ({source})",
                            self.nodes[i].id, b.base, b.end, b.epoch, b.base
                        ));
                        break;
                    }
                    Some(_) => {}
                    None => {
                        let source = format!("epoch {}, seen on node {} at t={}ms below {why}", b.epoch, self.nodes[i].id, self.now);
                        self.committed.insert(b.base, (b.end, b.bytes.clone(), source));
                    }
                }
                w.verified_to = b.end;
            }
        }
        if let Some(v) = violations.into_iter().next() {
            self.fail(v);
        }
    }
}

fn r_min_isr(node: &Node) -> usize {
    node.process
        .as_ref()
        .and_then(|p| node::topic_id_opt(p.quorum.controller()).and_then(|t| p.quorum.controller().image().topics().get(&t).cloned()))
        .and_then(|t| t.configs.get("min.insync.replicas").and_then(|v| v.parse().ok()))
        .unwrap_or(1)
}

impl Client {
    fn new(id: NodeId, kind: ClientKind) -> Client {
        Client {
            id,
            kind,
            leader: None,
            inflight: None,
            inflight_api: ApiKey::Metadata,
            next_corr: 0,
            position: 0,
            high_watermark_seen: 0,
            done: false,
            commits: Commits { acked: -1, floor: -1, ..Commits::default() },
            idempotence: None,
            txn: None,
            read_committed: false,
        }
    }
}

/// The version the simulated clients speak of each API.
fn client_version(api: ApiKey) -> i16 {
    match api {
        ApiKey::Produce => 9,
        ApiKey::FindCoordinator => 3,
        ApiKey::OffsetCommit => 8,
        ApiKey::OffsetFetch => 7,
        ApiKey::CreateTopics => 7,
        ApiKey::InitProducerId => 4,
        ApiKey::AddPartitionsToTxn | ApiKey::EndTxn => 3,
        _ => 12,
    }
}

fn encode_request<R: Encodable>(api_key: ApiKey, version: i16, corr: i32, body: &R) -> Bytes {
    wire::encode_request(api_key, version, corr, "odradek-sim", body).expect("the simulator's requests encode")
}

/// Produce errors that Kafka returns only before appending anything: the write is definitely
/// absent (Jepsen's `:fail`). Every other error leaves it unknown (`:info`): a timeout,
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND and NOT_LEADER_OR_FOLLOWER (a waiting produce whose leader
/// stepped down, or a refusal before any append: the client cannot tell which) may all follow
/// an append that later commits, and so may KAFKA_STORAGE_ERROR (the append may have reached
/// the page cache before its log dir failed).
fn definitely_not_written(error: ErrorCode) -> bool {
    matches!(
        error,
        // acks=all with the ISR below min.insync.replicas, checked before the append.
        ErrorCode::NotEnoughReplicas
            // Request validation, before the append.
            | ErrorCode::InvalidRequiredAcks
            | ErrorCode::CorruptMessage
            | ErrorCode::InvalidRecord
            | ErrorCode::MessageTooLarge
            | ErrorCode::RecordListTooLarge
            | ErrorCode::UnsupportedForMessageFormat
            | ErrorCode::UnknownTopicOrPartition
    )
}

/// `(offset, value)` of every record in whole batches.
fn decode_values(bytes: &Bytes) -> Vec<(i64, u64)> {
    let mut out = Vec::new();
    for (position, header) in scan_headers(bytes) {
        // Transaction markers hold no values.
        if header.is_control() {
            continue;
        }
        let mut batch = bytes.slice(position..position + header.total_len());
        let set = RecordBatchDecoder::decode(&mut batch).expect("batches the replica served decode");
        for record in set.records {
            let value = record.value.expect("produced records have values");
            let value = u64::from_be_bytes(value[..8].try_into().expect("8-byte values"));
            out.push((record.offset, value));
        }
    }
    out
}

/// Runs one seed.
/// What a `read_committed` consumer keeps of fetched batches (Kafka's consumer: a producer's
/// data batches are dropped from the first offset of one of its `aborted` transactions, given
/// as `(producer id, first offset)`, up to its abort marker), and the offset after the last
/// batch, markers included.
fn committed_values(bytes: &Bytes, aborted: &[(i64, i64)]) -> (Vec<(i64, u64)>, Option<i64>) {
    let mut pending: Vec<(i64, i64)> = aborted.to_vec();
    pending.sort_by_key(|&(_, first)| first);
    let mut pending = pending.into_iter().peekable();
    let mut aborting: BTreeSet<i64> = BTreeSet::new();
    let mut out = Vec::new();
    let mut next = None;
    for (position, header) in scan_headers(bytes) {
        next = Some(header.next_offset());
        while let Some(&(producer_id, _)) = pending.peek().filter(|&&(_, first)| first <= header.last_offset()) {
            aborting.insert(producer_id);
            pending.next();
        }
        let batch = bytes.slice(position..position + header.total_len());
        if header.is_control() {
            if odradek_core::batch::control_marker(&batch).is_some_and(|m| !m.commit) {
                aborting.remove(&header.producer_id);
            }
            continue;
        }
        if header.is_transactional() && aborting.contains(&header.producer_id) {
            continue;
        }
        out.extend(decode_values(&batch));
    }
    (out, next)
}

pub fn run_seed(seed: u64, scenario: Scenario) -> Report {
    Sim::new(seed, scenario).run()
}
