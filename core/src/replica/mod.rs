//! The replica of one partition on one broker, sans IO: leader and follower roles, log end
//! offset, high watermark, ISR, `acks`, leader epochs and truncation (KIP-101/279/320/497).
//!
//! [`Replica`] tracks offsets and epochs, never the records themselves: bytes arrive in
//! [`Replica::handle_produce`] and [`Replica::handle_fetch_response`] and leave in
//! [`Action::Append`]; reads are answered as offset ranges ([`FetchAnswer`]) that the driver
//! serves from its log. See [`Replica`] for the driver's runbook and the rules it relies on.

pub mod driver;
pub mod epoch_cache;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchError};
use crate::compression::TopicCompression;
use crate::producer::{BatchPlace, ProducerBatch, ProducerStates, Verdict};
use crate::error::ErrorCode;
use crate::validate::{ProduceRules, Refusal};
use crate::ids::{LeaderEpoch, NodeId, Offset, PartitionEpoch};

pub use epoch_cache::{CheckpointError, EpochCache, EpochEndOffset, EpochEntry};

/// A driver-chosen id for a client request (produce, DeleteRecords); echoed in
/// [`Action::ReplyProduce`] and [`Action::ReplyDeleteRecords`].
pub type RequestId = u64;

/// Per-partition replication settings, named after Kafka's broker and topic configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// `min.insync.replicas`: acks=all needs an ISR this large, and the high watermark does not
    /// advance while the ISR is smaller.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`: an ISR follower not caught up for this long is dropped.
    pub replica_lag_time_max_ms: i64,
    /// odradek's durability switch (default on): positions count toward the high watermark,
    /// and acks=1 is answered, only for data that is fsynced. Off: written (page cache) data
    /// counts, as in Kafka.
    pub ack_after_fsync: bool,
    /// `max.message.bytes`.
    pub max_message_bytes: usize,
    /// `message.timestamp.type=LogAppendTime`.
    pub log_append_time: bool,
    /// `replica.fetch.wait.max.ms`, sent in follower fetches for the leader's long poll.
    pub replica_fetch_wait_max_ms: i32,
    /// `replica.fetch.max.bytes`, sent in follower fetches.
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.backoff.ms`: pause after a failed fetch before the next one.
    pub replica_fetch_backoff_ms: i64,
    /// A follower fetch without an answer for this long is abandoned and sent again (Kafka's
    /// `replica.socket.timeout.ms`).
    pub replica_fetch_response_timeout_ms: i64,
    /// Pause before an AlterPartition that failed with a retriable error is sent again.
    pub alter_partition_retry_backoff_ms: i64,
    /// `replica.high.watermark.checkpoint.interval.ms`.
    pub high_watermark_checkpoint_interval_ms: i64,
    /// Truncate with an explicit OffsetForLeaderEpoch round before fetching (Kafka before
    /// Fetch v12) instead of the fetch's `diverging_epoch` answers. Both paths share the
    /// truncation rule; this one serves leaders that do not send `diverging_epoch`.
    pub truncate_with_offset_for_leader_epoch: bool,
    /// `cleanup.policy` includes `compact`: a produce with a record without a key is refused
    /// (Kafka's LogValidator), since compaction could not keep or drop it by key.
    pub compacted: bool,
    /// `cleanup.policy` includes `delete`: DeleteRecords may move the log start (Kafka refuses
    /// it with POLICY_VIOLATION on a compact-only topic, whose log start only the cleaner moves).
    pub cleanup_delete: bool,
    /// `producer.id.expiration.ms`: a producer id with no batch for this long is forgotten.
    pub producer_id_expiration_ms: i64,
    /// `message.timestamp.before.max.ms`: how far in the past a CreateTime record may be.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future a CreateTime record may be.
    pub timestamp_after_max_ms: i64,
    /// `compression.type` (with `compression.<codec>.level`): a produced batch in another codec
    /// than the topic's is re-encoded in it before it is appended (Kafka's `LogValidator`).
    pub compression: TopicCompression,
}

impl ReplicaConfig {
    /// What a producer's records are validated against (Kafka's `LogValidator` inputs).
    pub fn produce_rules(&self) -> ProduceRules {
        ProduceRules {
            max_message_bytes: self.max_message_bytes,
            compacted: self.compacted,
            log_append_time: self.log_append_time,
            timestamp_before_max_ms: self.timestamp_before_max_ms,
            timestamp_after_max_ms: self.timestamp_after_max_ms,
            compression: self.compression,
        }
    }
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            ack_after_fsync: true,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1_048_576,
            replica_fetch_backoff_ms: 1_000,
            replica_fetch_response_timeout_ms: 30_000,
            alter_partition_retry_backoff_ms: 100,
            high_watermark_checkpoint_interval_ms: 5_000,
            truncate_with_offset_for_leader_epoch: false,
            compacted: false,
            cleanup_delete: true,
            producer_id_expiration_ms: 86_400_000,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: crate::validate::DEFAULT_TIMESTAMP_AFTER_MAX_MS,
            compression: TopicCompression::Producer,
        }
    }
}

/// An AlterPartition refused because our view (or the controller's) is stale is sent again
/// after this many retry backoffs, unless new metadata settles it first.
const STALE_VIEW_RETRY_FACTOR: i64 = 10;

/// Kafka's `producer.id.expiration.check.interval.ms` default.
const PRODUCER_SWEEP_INTERVAL_MS: i64 = 600_000;

/// What the driver recovered from disk for this partition before constructing the replica.
/// `Default` is a new, empty log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistedState {
    pub log_start_offset: Offset,
    /// End of the recovered log (after the tail rescan dropped any invalid batch).
    pub log_end_offset: Offset,
    /// End of what is known to be on stable storage; usually `log_end_offset` because
    /// recovery fsyncs what it kept.
    pub durable_offset: Offset,
    /// The `leader-epoch-checkpoint` contents, with every recovered batch's epoch assigned
    /// (see [`Replica`], rule 6). Entries past `log_end_offset` are dropped here.
    pub epoch_cache: EpochCache,
    /// From `replication-offset-checkpoint`; clamped into the recovered log.
    pub high_watermark: Offset,
    /// The idempotent producers' state, rebuilt from the recovered log's batches.
    pub producers: ProducerStates,
}

/// The controller's decision for this partition, as carried by metadata records
/// (`PartitionRecord`/`PartitionChangeRecord`) or an AlterPartition answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAndIsr {
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub isr: Vec<NodeId>,
    pub replicas: Vec<NodeId>,
}

/// `acks` of a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: no answer unless the request fails.
    None,
    /// `acks=1`: answered once the leader's own copy counts (fsynced by default).
    Leader,
    /// `acks=all` (`-1`): answered once the high watermark covers the records.
    All,
}

impl Acks {
    pub fn from_wire(acks: i16) -> Result<Acks, ErrorCode> {
        match acks {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            -1 => Ok(Acks::All),
            _ => Err(ErrorCode::InvalidRequiredAcks),
        }
    }
}

/// A successful produce: where the records went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    pub base_offset: Offset,
    /// Set for `LogAppendTime` topics.
    pub log_append_time_ms: Option<i64>,
    pub log_start_offset: Offset,
}

/// One partition of a Fetch request, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    /// The follower's node id, or `NodeId::NONE` for a consumer.
    pub replica_id: NodeId,
    /// KIP-320: the leader epoch the sender believes current; `LeaderEpoch::NONE` skips the
    /// check (old consumers only: follower fetches must carry it).
    pub current_leader_epoch: LeaderEpoch,
    pub fetch_offset: Offset,
    /// Fetch v12+: epoch of the last batch the sender has, checked against the leader's log.
    pub last_fetched_epoch: LeaderEpoch,
    pub log_start_offset: Offset,
    pub max_wait_ms: i32,
    pub max_bytes: i32,
    /// A consumer's `isolation.level=read_committed`: it reads up to the last stable offset.
    pub read_committed: bool,
    /// An odradek follower fetching before its last append is durable (rule 3): its durable
    /// end, below `fetch_offset`. Its position is this, not `fetch_offset`.
    pub durable_offset: Option<Offset>,
}

/// The leader's answer to one partition of a fetch. Always for the whole partition: the
/// driver reads the byte range and builds the wire response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAnswer {
    /// Serve batches from `fetch_offset` up to, not including, `read_to` (batch aligned);
    /// `read_to == fetch_offset` means nothing to send yet (the driver may long-poll, see
    /// [`Replica`] rule 8).
    Read {
        read_to: Offset,
        high_watermark: Offset,
        last_stable_offset: Offset,
        log_start_offset: Offset,
    },
    /// Fetch v12+: the sender's log diverges from ours; it must truncate (KIP-320/595).
    Diverging {
        diverging_epoch: EpochEndOffset,
        high_watermark: Offset,
        log_start_offset: Offset,
    },
    Error(ErrorCode),
}

impl FetchAnswer {
    /// For [`FetchAnswer::Read`], the end of the range the driver reads from the log.
    pub fn read_to(&self) -> Option<Offset> {
        match self {
            FetchAnswer::Read { read_to, .. } => Some(*read_to),
            _ => None,
        }
    }

    /// The response a follower receives: `records` are the bytes read up to
    /// [`FetchAnswer::read_to`] (empty otherwise); an error carries `log_start_offset`.
    pub fn into_response(self, records: Bytes, log_start_offset: Offset) -> FetchResponse {
        match self {
            FetchAnswer::Read { high_watermark, last_stable_offset, log_start_offset, .. } => FetchResponse {
                error: None,
                high_watermark,
                last_stable_offset,
                aborted_transactions: None,
                log_start_offset,
                diverging_epoch: None,
                records,
            },
            FetchAnswer::Diverging { diverging_epoch, high_watermark, log_start_offset } => FetchResponse {
                error: None,
                high_watermark,
                last_stable_offset: high_watermark,
                aborted_transactions: None,
                log_start_offset,
                diverging_epoch: Some(diverging_epoch),
                records: Bytes::new(),
            },
            FetchAnswer::Error(error) => FetchResponse {
                error: Some(error),
                high_watermark: Offset(-1),
                last_stable_offset: Offset(-1),
                aborted_transactions: None,
                log_start_offset,
                diverging_epoch: None,
                records: Bytes::new(),
            },
        }
    }
}

/// The part of a leader's fetch response for this partition, as the follower receives it.
/// Untrusted: every field is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub error: Option<ErrorCode>,
    pub high_watermark: Offset,
    /// For a consumer: the last stable offset, and under `read_committed` the aborted
    /// transactions its records meet (`None` otherwise). A follower ignores both.
    pub last_stable_offset: Offset,
    pub aborted_transactions: Option<Vec<crate::producer::AbortedTxn>>,
    pub log_start_offset: Offset,
    pub diverging_epoch: Option<EpochEndOffset>,
    pub records: Bytes,
}

/// An ISR change proposed to the controller (KIP-497).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub new_isr: Vec<NodeId>,
}

/// A disk operation the driver finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The [`Action::Append`] ending at `end_offset` is written and readable.
    Appended { end_offset: Offset },
    /// The [`Action::Truncate`] (or [`Action::ResetLog`]) to `to` is done.
    Truncated { to: Offset },
    /// Everything below `through` is on stable storage.
    Synced { through: Offset },
}

/// Output of the replica, drained with [`Replica::poll_action`] and performed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these batches at the log end (`base_offset` is the current end), the parts one
    /// after the other. Then [`Completion::Appended`]. A replica emits one part per append;
    /// [`driver::PartitionDriver`] hands out appends waiting behind each other as one.
    Append {
        base_offset: Offset,
        end_offset: Offset,
        records: Vec<Bytes>,
    },
    /// Drop every record at or after `to`. Then [`Completion::Truncated`].
    Truncate { to: Offset },
    /// Drop the whole log; it restarts empty at `start_offset` (the follower fell behind the
    /// leader's log start). Then [`Completion::Truncated`] with `to = start_offset`.
    ResetLog { start_offset: Offset },
    /// Make everything below `through` durable (group commit welcome). Then
    /// [`Completion::Synced`], possibly for a later offset than asked.
    Sync { through: Offset },
    /// Write (and fsync) the `leader-epoch-checkpoint` file with [`EpochCache::encode`].
    PersistEpochCache { cache: EpochCache },
    /// Record the high watermark in `replication-offset-checkpoint`.
    PersistHighWatermark { high_watermark: Offset },
    /// The log now starts at `start_offset` (never above the high watermark): readers may not
    /// see below it, segments wholly below it may be deleted, and the offset is recorded
    /// (Kafka's `log-start-offset-checkpoint`). Emitted after the driver's own retention
    /// ([`Replica::handle_log_start_advanced`]) and when a follower follows its leader's log
    /// start. No completion.
    AdvanceLogStart { start_offset: Offset },
    /// Follower: send this fetch to the leader; answer with
    /// [`Replica::handle_fetch_response`] and the same `fetch_id`.
    SendFetch {
        to: NodeId,
        fetch_id: u64,
        request: FetchRequest,
    },
    /// Follower: ask the leader where `leader_epoch` ends; answer with
    /// [`Replica::handle_offset_for_leader_epoch_response`].
    SendOffsetForLeaderEpoch {
        to: NodeId,
        request_id: u64,
        current_leader_epoch: LeaderEpoch,
        leader_epoch: LeaderEpoch,
    },
    /// Leader: propose an ISR to the controller; every one gets exactly one
    /// [`Replica::handle_alter_partition_response`] (a transport failure too).
    SendAlterPartition {
        request_id: u64,
        request: AlterPartitionRequest,
    },
    /// Answer produce request `request_id`.
    ReplyProduce {
        request_id: RequestId,
        result: Result<ProduceAck, ErrorCode>,
    },
    /// Answer DeleteRecords request `request_id` ([`Replica::handle_delete_records`]): the low
    /// watermark, the lowest log start of the leader and its live followers, which is at or
    /// past the requested start; the leader's own start was recorded on disk by the
    /// [`Action::AdvanceLogStart`] queued before it. Or REQUEST_TIMED_OUT when a follower did
    /// not follow within the request's timeout, NOT_LEADER_OR_FOLLOWER when leadership moved.
    ReplyDeleteRecords { request_id: RequestId, result: Result<Offset, ErrorCode> },
}

/// Why a produce was not appended: an error its reply carries, or records the validation
/// refused (answered by the caller, with the refusal's detail).
enum Rejected {
    Code(ErrorCode),
    Records(Refusal),
    /// The batch would start a transaction here: the coordinator is asked first.
    Unverified(Unverified),
}

/// Whether a produce's transactional batch is checked with its coordinator before it may
/// start a transaction on the partition (KIP-890 part 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnVerification {
    /// Not checked: a produce without a transactional id (Kafka's too), and the replica's
    /// own tests.
    Skip,
    /// Checked if it starts a transaction: the replica answers [`Started::Verify`].
    Ask,
    /// The coordinator said the transaction holds the partition, when asked under this guard;
    /// a marker written since voids it (INVALID_TXN_STATE).
    Verified(u64),
}

/// What became of a produce the replica took.
#[derive(Debug)]
pub enum Started {
    /// Written, refused or answered; the answer comes as [`Action::ReplyProduce`].
    Taken,
    /// Waiting for its coordinator: ask whether the producer's transaction holds the
    /// partition, then hand the records back with [`TxnVerification::Verified`].
    Verify(Unverified),
}

#[derive(Debug)]
pub struct Unverified {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub guard: u64,
    pub records: Bytes,
}

impl From<ErrorCode> for Rejected {
    fn from(code: ErrorCode) -> Rejected {
        Rejected::Code(code)
    }
}

/// Which role the replica plays in its current leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No decision from the controller yet (after construction).
    Offline,
    Leader,
    Follower {
        leader: NodeId,
    },
}

/// The replica of one partition on this broker.
///
/// # Driver runbook
///
/// Inputs are `become_*` (the controller's decisions), `handle_*` (requests, responses, disk
/// completions) and `handle_timeout`; each takes `now_ms` and never blocks. After every input,
/// drain [`Replica::poll_action`] and re-arm the timer from [`Replica::poll_timeout`]. A
/// spurious `handle_timeout` is a no-op.
///
/// 1. **Perform actions in queue order, per partition.** A `Truncate` must be done before a
///    later `Append` is written; a `PersistEpochCache` emitted before an `Append` must be on
///    disk before that append's `Sync` completes (Kafka writes the checkpoint synchronously),
///    and one emitted after a `Truncate` is written after the truncation.
/// 2. **Report completions in order**: one `Appended` per `Append` (in order), one
///    `Truncated` per `Truncate`/`ResetLog`, `Synced` whenever data became durable. A
///    `Synced` must not cover data that a later `Truncate` removed.
/// 3. **Durability rule** (`ack_after_fsync`, default on). The leader's own position is its
///    durable offset; acks=1 is answered once the records are durable there. A follower's
///    position is its durable log end: it never covers data the follower could lose in a
///    crash. While its last fetch brought records, a follower fetches again as soon as they are
///    written, its fsync running meanwhile: the request's `fetch_offset` is its written end,
///    `durable_offset` says how much of it is durable, and `max_wait_ms` is 0 so the leader
///    hears of the fsync at the next answer rather than after a long poll. Otherwise (an empty
///    answer) it waits for its fsync, and its `fetch_offset` is its durable end. With the
///    switch off, written data counts (Kafka's page-cache semantics).
/// 4. **High watermark** = min over the maximal ISR (committed ISR ∪ a pending AlterPartition's
///    proposal, KIP-497) and over caught-up ISR-eligible followers, of: the leader's own
///    position, each follower's position. A follower's position is the `fetch_offset` of its
///    last non-diverging fetch made under the leader's current epoch (KIP-320); after a leader
///    epoch change every position is unknown until the follower fetches again, and an unknown
///    position holds the high watermark. It never advances while the committed ISR is smaller
///    than `min_insync_replicas`, and never moves backwards (a follower lowers it only when an
///    unclean leader makes it truncate below it).
/// 5. **ISR.** A follower joins (AlterPartition) once its position reaches both the high
///    watermark and the start offset of the leader's current epoch. An ISR follower that has
///    not been caught up for `replica_lag_time_max_ms` is dropped. One AlterPartition is in
///    flight at a time; the ISR changes only when the controller commits it (the answer, or a
///    `become_leader` with the same leader epoch and a newer partition epoch).
/// 6. **Epochs and truncation.** A new leader records its epoch at its log end; every batch it
///    appends is stamped with that epoch. A follower records each new epoch it receives at the
///    batch's base offset. A follower never truncates to its high watermark: after every epoch
///    change it truncates only where the leader says the logs diverge (`diverging_epoch` in
///    fetch answers, or OffsetForLeaderEpoch), repeating until the logs agree (KIP-279). After
///    a crash the driver builds [`PersistedState::epoch_cache`] from the checkpoint plus
///    `assign(batch epoch, batch base offset)` for each recovered batch.
/// 7. **Produce answers.** acks=all is refused with NOT_ENOUGH_REPLICAS when the committed ISR
///    is smaller than `min_insync_replicas`; a waiting acks=all produce fails with
///    NOT_ENOUGH_REPLICAS_AFTER_APPEND when the committed ISR shrinks below it, with
///    REQUEST_TIMED_OUT at its deadline, and with NOT_LEADER_OR_FOLLOWER when leadership goes.
///    acks=0 gets a [`Action::ReplyProduce`] only for an error (the driver closes the
///    connection, as Kafka does).
/// 8. **Fetch** answers come back from [`Replica::handle_fetch`] at once. To long-poll, the
///    driver parks an empty answer and calls `handle_fetch` again with the same request when
///    [`Replica::written_offset`] or [`Replica::high_watermark`] moved, or at `max_wait_ms`;
///    the call is idempotent.
pub struct Replica {
    local: NodeId,
    config: ReplicaConfig,
    role: RoleState,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    replicas: Vec<NodeId>,
    log_start_offset: Offset,
    /// Next offset to assign or to receive: includes appends not yet written.
    log_end_offset: Offset,
    /// End of the data the driver has written (readable).
    written_offset: Offset,
    /// End of the data on stable storage.
    durable_offset: Offset,
    /// End offsets of emitted appends not yet completed, in order.
    appends_in_flight: VecDeque<Offset>,
    truncate_in_flight: Option<Offset>,
    /// Highest `through` of an emitted `Sync`.
    sync_requested: Offset,
    high_watermark: Offset,
    high_watermark_persisted: Offset,
    high_watermark_checkpoint_due_ms: Option<i64>,
    epoch_cache: EpochCache,
    /// Built from every batch written here, leader or follower (see [`crate::producer`]).
    producers: ProducerStates,
    /// When the leader next forgets expired producer ids.
    producer_sweep_due_ms: i64,
    actions: VecDeque<Action>,
    next_message_id: u64,
    /// Brokers the metadata shows fenced (a broker in controlled shutdown is fenced at once):
    /// KIP-841's ineligible replicas. The leader neither proposes them into the ISR nor lets
    /// one that was caught up a moment ago hold the high watermark (Kafka's `hasAliveBroker`).
    fenced: BTreeSet<NodeId>,
}

enum RoleState {
    Offline,
    Leader(LeaderState),
    Follower(FollowerState),
}

struct LeaderState {
    /// Where this leader's epoch starts in the log (KIP-101).
    epoch_start_offset: Offset,
    isr: BTreeSet<NodeId>,
    pending_isr: Option<PendingIsr>,
    followers: BTreeMap<NodeId, FollowerProgress>,
    /// acks=1 produces waiting for the leader's own position.
    awaiting_local: VecDeque<PendingProduce>,
    /// acks=all produces waiting for the high watermark.
    awaiting_high_watermark: VecDeque<PendingProduce>,
    /// DeleteRecords waiting for the followers' log starts.
    awaiting_low_watermark: VecDeque<PendingDelete>,
    isr_check_due_ms: i64,
}

struct PendingIsr {
    request_id: u64,
    proposed: BTreeSet<NodeId>,
    /// `Some(at)`: a retriable failure; send again at `at`. `None` with no answer pending:
    /// waiting for new metadata (Kafka's non-retriable errors).
    retry_at_ms: Option<i64>,
    in_flight: bool,
}

#[derive(Debug, Clone, Copy)]
struct FollowerProgress {
    /// `fetch_offset` of the last counted fetch in this leader epoch.
    position: Option<Offset>,
    /// The log start its last fetch reported (DeleteRecords' low watermark).
    log_start_offset: Option<Offset>,
    last_fetch_leader_end: Option<Offset>,
    last_fetch_ms: i64,
    last_caught_up_ms: Option<i64>,
}

/// A DeleteRecords waiting for the low watermark (Kafka's `DelayedDeleteRecords`).
#[derive(Debug, Clone, Copy)]
struct PendingDelete {
    request_id: RequestId,
    offset: Offset,
    deadline_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct PendingProduce {
    request_id: RequestId,
    base_offset: Offset,
    end_offset: Offset,
    deadline_ms: Option<i64>,
    log_append_time_ms: Option<i64>,
}

struct FollowerState {
    leader: NodeId,
    exchange: Exchange,
    leader_high_watermark: Offset,
    /// OffsetForLeaderEpoch mode: the truncation round for this epoch is complete.
    epoch_checked: bool,
    backoff_until_ms: Option<i64>,
    /// The last answer brought records: the next fetch need not wait for their fsync.
    streaming: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exchange {
    Idle,
    Fetching {
        fetch_id: u64,
        sent_ms: i64,
        fetch_offset: Offset,
    },
    AskingEpoch {
        request_id: u64,
        sent_ms: i64,
    },
}

impl Replica {
    /// Builds the replica from what the driver recovered; it is `Offline` until a
    /// `become_leader`/`become_follower`.
    pub fn new(local: NodeId, config: ReplicaConfig, persisted: PersistedState) -> Replica {
        assert!(
            config.min_insync_replicas >= 1,
            "min_insync_replicas must be at least 1"
        );
        assert!(config.replica_lag_time_max_ms > 0, "{config:?}");
        let PersistedState {
            log_start_offset,
            log_end_offset,
            durable_offset,
            mut epoch_cache,
            high_watermark,
            mut producers,
        } = persisted;
        assert!(
            0 <= log_start_offset.0 && log_start_offset <= durable_offset && durable_offset <= log_end_offset,
            "recovered offsets out of order: start {log_start_offset} durable {durable_offset} end {log_end_offset}"
        );
        // Kafka's recovery does the same: the cache may not name epochs past the log end.
        epoch_cache.truncate_from_end(log_end_offset);
        producers.truncate(log_end_offset);
        let position = if config.ack_after_fsync {
            durable_offset
        } else {
            log_end_offset
        };
        let high_watermark = high_watermark.clamp(log_start_offset, position);
        let replica = Replica {
            local,
            config,
            role: RoleState::Offline,
            leader_epoch: LeaderEpoch::NONE,
            partition_epoch: PartitionEpoch(-1),
            replicas: Vec::new(),
            log_start_offset,
            log_end_offset,
            written_offset: log_end_offset,
            durable_offset,
            appends_in_flight: VecDeque::new(),
            truncate_in_flight: None,
            sync_requested: durable_offset,
            high_watermark,
            high_watermark_persisted: high_watermark,
            high_watermark_checkpoint_due_ms: None,
            epoch_cache,
            producers,
            producer_sweep_due_ms: i64::MIN,
            actions: VecDeque::new(),
            next_message_id: 0,
            fenced: BTreeSet::new(),
        };
        replica.check_invariants();
        replica
    }

    // ---- getters ----

    pub fn local(&self) -> NodeId {
        self.local
    }

    pub fn role(&self) -> Role {
        match &self.role {
            RoleState::Offline => Role::Offline,
            RoleState::Leader(_) => Role::Leader,
            RoleState::Follower(f) => Role::Follower { leader: f.leader },
        }
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> PartitionEpoch {
        self.partition_epoch
    }

    pub fn log_start_offset(&self) -> Offset {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> Offset {
        self.log_end_offset
    }

    /// End of the data the driver has written: what the log can serve.
    pub fn written_offset(&self) -> Offset {
        self.written_offset
    }

    pub fn durable_offset(&self) -> Offset {
        self.durable_offset
    }

    /// The idempotent producers' state (see [`crate::producer`]).
    pub fn producers(&self) -> &ProducerStates {
        &self.producers
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// Takes a topic's changed configs: produces from now on are checked against them, and a
    /// lowered `min.insync.replicas` may let the high watermark move at once. Appended data is
    /// kept as it is (Kafka applies a new `max.message.bytes` or timestamp rule to new batches).
    pub fn reconfigure(&mut self, now_ms: i64, config: ReplicaConfig) {
        assert!(config.min_insync_replicas >= 1, "min_insync_replicas must be at least 1");
        self.config = config;
        if self.role() == Role::Leader {
            self.maybe_advance_high_watermark(now_ms);
        }
    }

    /// Below the high watermark and the first offset of any transaction under way
    /// (`read_committed` consumers read up to it).
    pub fn last_stable_offset(&self) -> Offset {
        self.producers.first_unstable_offset(self.high_watermark).map_or(self.high_watermark, |first| first.min(self.high_watermark))
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn epoch_cache(&self) -> &EpochCache {
        &self.epoch_cache
    }

    /// The committed ISR (leader only; empty otherwise).
    pub fn isr(&self) -> Vec<NodeId> {
        match &self.role {
            RoleState::Leader(l) => l.isr.iter().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether this replica leads and other replicas fetch from it (whose long polls wait
    /// for its written end, not only its high watermark).
    pub fn has_followers(&self) -> bool {
        matches!(&self.role, RoleState::Leader(l) if !l.followers.is_empty())
    }

    /// Committed ISR plus a pending proposal (KIP-497's "maximal ISR"); leader only.
    pub fn maximal_isr(&self) -> Vec<NodeId> {
        match &self.role {
            RoleState::Leader(l) => l.maximal_isr().into_iter().collect(),
            _ => Vec::new(),
        }
    }

    // ---- outputs ----

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Replica::handle_timeout`] should next run, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<i64> {
        let mut due: Option<i64> = self.high_watermark_checkpoint_due_ms;
        let mut consider = |t: Option<i64>| {
            if let Some(t) = t {
                due = Some(due.map_or(t, |d| d.min(t)));
            }
        };
        match &self.role {
            RoleState::Offline => {}
            RoleState::Leader(l) => {
                consider(Some(l.isr_check_due_ms));
                consider(l.pending_isr.as_ref().and_then(|p| p.retry_at_ms));
                for p in l.awaiting_local.iter().chain(&l.awaiting_high_watermark) {
                    consider(p.deadline_ms);
                }
                for d in &l.awaiting_low_watermark {
                    consider(d.deadline_ms);
                }
            }
            RoleState::Follower(f) => {
                consider(f.backoff_until_ms);
                match f.exchange {
                    Exchange::Idle => {}
                    Exchange::Fetching { sent_ms, .. } | Exchange::AskingEpoch { sent_ms, .. } => {
                        consider(Some(
                            sent_ms + self.config.replica_fetch_response_timeout_ms,
                        ))
                    }
                }
            }
        }
        due
    }

    // ---- the controller's decisions ----

    /// The controller made this broker the leader, or (same leader epoch, newer partition
    /// epoch) committed a new ISR or replica set for it. A stale decision is an error and
    /// changes nothing.
    pub fn become_leader(&mut self, now_ms: i64, state: LeaderAndIsr) -> Result<(), ErrorCode> {
        let result = self.on_become_leader(now_ms, state);
        self.after_input(now_ms);
        result
    }

    fn on_become_leader(&mut self, now_ms: i64, state: LeaderAndIsr) -> Result<(), ErrorCode> {
        let isr = validate_leader_and_isr(self.local, &state)?;
        // After a restart `leader_epoch` is unknown, but the log knows which epochs wrote it:
        // a decision older than those is stale metadata.
        if state.leader_epoch < self.leader_epoch
            || state.leader_epoch < self.epoch_cache.latest_epoch()
        {
            return Err(ErrorCode::FencedLeaderEpoch);
        }
        if state.leader_epoch == self.leader_epoch {
            let RoleState::Leader(_) = self.role else {
                return Err(ErrorCode::FencedLeaderEpoch);
            };
            if state.partition_epoch > self.partition_epoch {
                self.replicas = state.replicas.clone();
                self.sync_follower_table(now_ms);
                self.commit_isr(now_ms, isr, state.partition_epoch);
                self.complete_deletes();
            }
            return Ok(());
        }
        let old = std::mem::replace(&mut self.role, RoleState::Offline);
        // The same broker re-elected keeps its waiting produces: its log is not truncated, so
        // the offsets they wait for still hold the same records.
        let (awaiting_local, awaiting_high_watermark, awaiting_low_watermark) = match old {
            RoleState::Leader(l) => (l.awaiting_local, l.awaiting_high_watermark, l.awaiting_low_watermark),
            _ => (VecDeque::new(), VecDeque::new(), VecDeque::new()),
        };
        self.leader_epoch = state.leader_epoch;
        self.partition_epoch = state.partition_epoch;
        self.replicas = state.replicas;
        let epoch_start_offset = self.log_end_offset;
        if self
            .epoch_cache
            .assign(self.leader_epoch, epoch_start_offset)
        {
            self.persist_epoch_cache();
        }
        let followers = self
            .replicas
            .iter()
            .filter(|&&r| r != self.local)
            .map(|&r| (r, FollowerProgress::reset(now_ms, isr.contains(&r))))
            .collect();
        self.role = RoleState::Leader(LeaderState {
            epoch_start_offset,
            isr,
            pending_isr: None,
            followers,
            awaiting_local,
            awaiting_high_watermark,
            awaiting_low_watermark,
            isr_check_due_ms: now_ms + self.isr_check_interval_ms(),
        });
        self.leader_check_isr_size();
        self.complete_local_produces();
        self.maybe_advance_high_watermark(now_ms);
        self.complete_deletes();
        Ok(())
    }

    /// The controller made `leader` the leader of `leader_epoch`; this broker follows it.
    /// The same leader and epoch with a newer partition epoch only records the epoch.
    pub fn become_follower(
        &mut self,
        now_ms: i64,
        leader: NodeId,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
    ) -> Result<(), ErrorCode> {
        let result = self.on_become_follower(now_ms, leader, leader_epoch, partition_epoch);
        self.after_input(now_ms);
        result
    }

    fn on_become_follower(
        &mut self,
        now_ms: i64,
        leader: NodeId,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
    ) -> Result<(), ErrorCode> {
        if leader == self.local || leader.0 < 0 || leader_epoch.0 < 0 {
            return Err(ErrorCode::InvalidRequest);
        }
        if leader_epoch < self.leader_epoch || leader_epoch < self.epoch_cache.latest_epoch() {
            return Err(ErrorCode::FencedLeaderEpoch);
        }
        if leader_epoch == self.leader_epoch {
            return match &self.role {
                RoleState::Follower(f) if f.leader == leader => {
                    self.partition_epoch = self.partition_epoch.max(partition_epoch);
                    Ok(())
                }
                _ => Err(ErrorCode::FencedLeaderEpoch),
            };
        }
        if let RoleState::Leader(l) = std::mem::replace(&mut self.role, RoleState::Offline) {
            for p in l.awaiting_local.iter().chain(&l.awaiting_high_watermark) {
                self.reply(p.request_id, Err(ErrorCode::NotLeaderOrFollower));
            }
            for d in l.awaiting_low_watermark {
                self.actions.push_back(Action::ReplyDeleteRecords { request_id: d.request_id, result: Err(ErrorCode::NotLeaderOrFollower) });
            }
        }
        self.leader_epoch = leader_epoch;
        self.partition_epoch = partition_epoch;
        self.role = RoleState::Follower(FollowerState {
            leader,
            exchange: Exchange::Idle,
            leader_high_watermark: self.high_watermark,
            epoch_checked: !self.config.truncate_with_offset_for_leader_epoch,
            backoff_until_ms: None,
            streaming: false,
        });
        self.maybe_send_fetch(now_ms);
        Ok(())
    }

    // ---- leader inputs ----

    /// A produce request's record set for this partition. Validates the records (Kafka's
    /// `LogValidator`, [`crate::validate`]), assigns offsets, stamps the leader epoch and emits
    /// the append; the answer comes as [`Action::ReplyProduce`] (see rule 7). Records the
    /// validation refuses are answered here instead, with what the refusal says of them
    /// (Produce v8+ carries it), and nothing else happens.
    pub fn handle_produce(
        &mut self,
        now_ms: i64,
        request_id: RequestId,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
    ) -> Result<(), Refusal> {
        self.handle_txn_produce(now_ms, request_id, records, acks, timeout_ms, TxnVerification::Skip).map(|_| ())
    }

    /// As [`Self::handle_produce`], with a transactional batch that would start its
    /// producer's transaction here verified as `verification` says: a late batch (one the
    /// producer gave up on, arriving after its transaction's marker) must not open a
    /// transaction of its own that the producer's next marker would end.
    pub fn handle_txn_produce(
        &mut self,
        now_ms: i64,
        request_id: RequestId,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
        verification: TxnVerification,
    ) -> Result<Started, Refusal> {
        let started = match self.on_produce(now_ms, request_id, records, acks, timeout_ms, verification) {
            Ok(()) => Ok(Started::Taken),
            Err(Rejected::Code(error)) => {
                self.reply(request_id, Err(error));
                Ok(Started::Taken)
            }
            Err(Rejected::Records(refusal)) => Err(refusal),
            Err(Rejected::Unverified(unverified)) => Ok(Started::Verify(unverified)),
        };
        self.after_input(now_ms);
        started
    }

    fn on_produce(
        &mut self,
        now_ms: i64,
        request_id: RequestId,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
        verification: TxnVerification,
    ) -> Result<(), Rejected> {
        let acks = Acks::from_wire(acks)?;
        let RoleState::Leader(leader) = &self.role else {
            return Err(ErrorCode::NotLeaderOrFollower.into());
        };
        let (mut validated, recompressed) =
            crate::validate::validate_and_recompress(&records, &self.config.produce_rules(), now_ms)
                .map_err(Rejected::Records)?;
        if acks == Acks::All && leader.isr.len() < self.config.min_insync_replicas {
            return Err(ErrorCode::NotEnoughReplicas.into());
        }
        // validate_produce left exactly one batch, neither a control batch nor an idempotent
        // one without a sequence, nor a transactional one without a producer.
        let producer = validated.batches.first().and_then(|(_, header)| ProducerBatch::of(header));
        if let Some(producer) = &producer {
            self.sweep_producers(now_ms);
            if let Verdict::Duplicate(place) = self.producers.check(producer)? {
                tracing::debug!(
                    producer_id = producer.producer_id,
                    first_seq = producer.first_seq,
                    offset = place.first_offset.0,
                    "a retried batch is answered with its first offsets"
                );
                self.await_duplicate(request_id, acks, place, timeout_ms, now_ms);
                return Ok(());
            }
            if self.producers.starts_transaction(producer) {
                match verification {
                    TxnVerification::Skip => {}
                    TxnVerification::Ask => {
                        let guard = self.producers.begin_verification(producer.producer_id);
                        let (producer_id, producer_epoch) = (producer.producer_id, producer.epoch);
                        return Err(Rejected::Unverified(Unverified { producer_id, producer_epoch, guard, records }));
                    }
                    TxnVerification::Verified(guard) if self.producers.verified(producer.producer_id, guard) => {}
                    TxnVerification::Verified(_) => {
                        tracing::info!(
                            producer_id = producer.producer_id,
                            epoch = producer.epoch,
                            "a transactional batch verified before its transaction's marker was refused"
                        );
                        return Err(ErrorCode::InvalidTxnState.into());
                    }
                }
            }
        }
        // A batch re-encoded in the topic's codec is a buffer of its own (no copy to own it).
        let mut buf = recompressed
            .unwrap_or(records)
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        let log_append_time_ms = self.config.log_append_time.then_some(now_ms);
        let base_offset = self.log_end_offset;
        let end_offset = Offset(batch::assign_offsets(
            &mut buf,
            &mut validated,
            base_offset.0,
            self.leader_epoch.0,
            log_append_time_ms,
        ));
        if producer.is_some() {
            // Its header now carries the assigned offsets.
            self.producers.replay_marked(now_ms, &validated.batches[0].1, None);
        }
        let pending = PendingProduce {
            request_id,
            base_offset,
            end_offset,
            deadline_ms: (timeout_ms > 0).then(|| now_ms + i64::from(timeout_ms)),
            log_append_time_ms,
        };
        self.append_and_await(acks, pending, buf.freeze());
        Ok(())
    }

    /// A leader's append of `records` at `pending`'s offsets, whose answer waits for what
    /// `acks` asks (nothing, this replica's position, the high watermark).
    fn append_and_await(&mut self, acks: Acks, pending: PendingProduce, records: Bytes) {
        self.emit_append(pending.base_offset, pending.end_offset, records);
        let RoleState::Leader(leader) = &mut self.role else {
            unreachable!("only a leader appends for a request")
        };
        match acks {
            Acks::None => {}
            Acks::Leader => leader.awaiting_local.push_back(pending),
            Acks::All => leader.awaiting_high_watermark.push_back(pending),
        }
    }

    /// WriteTxnMarkers for this partition: the leader writes the transaction coordinator's
    /// commit or abort marker for `producer_id` as a control batch, replicated as acks=all
    /// (Kafka appends markers with `requiredAcks=-1`); the answer comes as
    /// [`Action::ReplyProduce`]. The producer's transaction here ends, which may move the last
    /// stable offset. A marker for a producer with no transaction here is written all the
    /// same (Kafka's too): markers are sent again after a coordinator failover.
    pub fn handle_write_marker(
        &mut self,
        now_ms: i64,
        request_id: RequestId,
        producer_id: i64,
        producer_epoch: i16,
        marker: batch::ControlMarker,
        timeout_ms: i32,
    ) {
        match self.on_write_marker(now_ms, request_id, producer_id, producer_epoch, marker, timeout_ms) {
            Ok(()) => {}
            Err(error) => self.reply(request_id, Err(error)),
        }
        self.after_input(now_ms);
    }

    fn on_write_marker(
        &mut self,
        now_ms: i64,
        request_id: RequestId,
        producer_id: i64,
        producer_epoch: i16,
        marker: batch::ControlMarker,
        timeout_ms: i32,
    ) -> Result<(), ErrorCode> {
        let RoleState::Leader(leader) = &self.role else {
            return Err(ErrorCode::NotLeaderOrFollower);
        };
        if leader.isr.len() < self.config.min_insync_replicas {
            return Err(ErrorCode::NotEnoughReplicas);
        }
        self.producers.check_marker(producer_id, producer_epoch, marker)?;
        let records = crate::records::encode_marker(producer_id, producer_epoch, marker, now_ms);
        let mut validated = batch::validate_records(&records, usize::MAX).map_err(|e: BatchError| e.code())?;
        let mut buf = BytesMut::from(&records[..]);
        let base_offset = self.log_end_offset;
        let end_offset = Offset(batch::assign_offsets(&mut buf, &mut validated, base_offset.0, self.leader_epoch.0, None));
        self.producers.end_transaction(now_ms, producer_id, producer_epoch, marker, base_offset);
        let pending = PendingProduce {
            request_id,
            base_offset,
            end_offset,
            deadline_ms: (timeout_ms > 0).then(|| now_ms + i64::from(timeout_ms)),
            log_append_time_ms: None,
        };
        self.append_and_await(Acks::All, pending, buf.freeze());
        Ok(())
    }

    /// The brokers the committed metadata shows fenced or shutting down. One taken out of that
    /// set is eligible again from its next fetch; one put in may free the high watermark.
    /// -> whether the set changed.
    pub fn handle_fenced_brokers(&mut self, now_ms: i64, fenced: &BTreeSet<NodeId>) -> bool {
        if &self.fenced == fenced {
            return false;
        }
        self.fenced = fenced.clone();
        self.maybe_advance_high_watermark(now_ms);
        self.complete_deletes();
        self.after_input(now_ms);
        true
    }

    /// One partition of a Fetch request from a follower (`replica_id` set) or a consumer.
    /// Updates the follower's position, which may grow the ISR, advance the high watermark and
    /// answer acks=all produces (see rules 4, 5, 8).
    pub fn handle_fetch(&mut self, now_ms: i64, request: &FetchRequest) -> FetchAnswer {
        let answer = self.on_fetch(now_ms, request);
        self.after_input(now_ms);
        answer
    }

    fn on_fetch(&mut self, now_ms: i64, request: &FetchRequest) -> FetchAnswer {
        let from_follower = request.replica_id != NodeId::NONE;
        if from_follower || request.current_leader_epoch != LeaderEpoch::NONE {
            if let Err(error) = self.check_current_leader_epoch(request.current_leader_epoch) {
                return FetchAnswer::Error(error);
            }
        }
        let RoleState::Leader(leader) = &self.role else {
            return FetchAnswer::Error(ErrorCode::NotLeaderOrFollower);
        };
        if from_follower && !leader.followers.contains_key(&request.replica_id) {
            return FetchAnswer::Error(ErrorCode::NotLeaderOrFollower);
        }
        if request.fetch_offset < self.log_start_offset {
            return FetchAnswer::Error(ErrorCode::OffsetOutOfRange);
        }
        if request.last_fetched_epoch != LeaderEpoch::NONE {
            let end = self
                .epoch_cache
                .end_offset_for(request.last_fetched_epoch, self.log_end_offset);
            if end.is_undefined() {
                return FetchAnswer::Error(ErrorCode::OffsetOutOfRange);
            }
            if end.epoch < request.last_fetched_epoch || end.end_offset < request.fetch_offset {
                // Kafka does not count a diverging fetch toward the follower's position.
                return FetchAnswer::Diverging {
                    diverging_epoch: end,
                    high_watermark: self.high_watermark,
                    log_start_offset: self.log_start_offset,
                };
            }
        }
        if request.fetch_offset > self.log_end_offset {
            return FetchAnswer::Error(ErrorCode::OffsetOutOfRange);
        }
        let last_stable_offset = self.last_stable_offset();
        let read_to = if from_follower {
            self.update_follower(now_ms, request.replica_id, request.fetch_offset, request.durable_offset, request.log_start_offset);
            self.written_offset
        } else if request.read_committed {
            last_stable_offset
        } else {
            self.high_watermark
        };
        FetchAnswer::Read {
            read_to: read_to.max(request.fetch_offset),
            high_watermark: self.high_watermark,
            last_stable_offset,
            log_start_offset: self.log_start_offset,
        }
    }

    /// OffsetForLeaderEpoch from a follower or a consumer (KIP-101/279/320): where
    /// `leader_epoch` ends in the leader's log. Changes nothing.
    pub fn handle_offset_for_leader_epoch(
        &self,
        current_leader_epoch: LeaderEpoch,
        leader_epoch: LeaderEpoch,
    ) -> Result<EpochEndOffset, ErrorCode> {
        if current_leader_epoch != LeaderEpoch::NONE {
            self.check_current_leader_epoch(current_leader_epoch)?;
        }
        let RoleState::Leader(_) = self.role else {
            return Err(ErrorCode::NotLeaderOrFollower);
        };
        Ok(self
            .epoch_cache
            .end_offset_for(leader_epoch, self.log_end_offset))
    }

    /// The driver deleted the local segments below `start_offset` (retention:
    /// `retention.ms` / `retention.bytes`, applied by every replica to its own log and never
    /// above its high watermark). The log start follows, the epoch cache drops what is gone
    /// (Kafka's `truncateFromStart`), and [`Action::AdvanceLogStart`] records it. Fetches
    /// below the new start get OFFSET_OUT_OF_RANGE. An offset at or below the current start is
    /// ignored.
    pub fn handle_log_start_advanced(&mut self, now_ms: i64, start_offset: Offset) {
        assert!(
            start_offset <= self.high_watermark,
            "retention above the high watermark: start {start_offset} hw {}",
            self.high_watermark
        );
        self.advance_log_start(start_offset);
        self.after_input(now_ms);
    }

    /// DeleteRecords on the leader (Kafka's `Partition.deleteRecordsOnLeader`): the log start
    /// moves up to `offset`, `-1` meaning the high watermark. Followers take it from their next
    /// fetch answers and report their own start in the fetch after. The answer, the low
    /// watermark, comes as [`Action::ReplyDeleteRecords`] behind the [`Action::AdvanceLogStart`]
    /// that records it, once every follower whose broker is not fenced has reported a start at
    /// or past it (`DelayedDeleteRecords`: a client told records are gone does not see them
    /// again from the next leader), or REQUEST_TIMED_OUT after `timeout_ms` (none if not
    /// positive). An offset at or below the current start changes nothing and is answered with
    /// the low watermark. Refused at once: NOT_LEADER_OR_FOLLOWER off the
    /// leader, OFFSET_OUT_OF_RANGE above the high watermark (or below -1), POLICY_VIOLATION
    /// without `cleanup.policy=delete`.
    pub fn handle_delete_records(&mut self, now_ms: i64, request_id: RequestId, offset: Offset, timeout_ms: i32) -> Result<(), ErrorCode> {
        let RoleState::Leader(_) = self.role else {
            return Err(ErrorCode::NotLeaderOrFollower);
        };
        if !self.config.cleanup_delete {
            return Err(ErrorCode::PolicyViolation);
        }
        let offset = if offset == Offset(-1) { self.high_watermark } else { offset };
        if offset.0 < 0 || offset > self.high_watermark {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        self.advance_log_start(offset);
        let required = self.log_start_offset;
        let deadline_ms = (timeout_ms > 0).then(|| now_ms + i64::from(timeout_ms));
        let RoleState::Leader(leader) = &mut self.role else { unreachable!("checked above") };
        leader.awaiting_low_watermark.push_back(PendingDelete { request_id, offset: required, deadline_ms });
        self.complete_deletes();
        self.after_input(now_ms);
        Ok(())
    }

    /// The controller's answer to [`Action::SendAlterPartition`] `request_id`: the committed
    /// state, or an error (KIP-497; error handling as Kafka's `Partition`).
    pub fn handle_alter_partition_response(
        &mut self,
        now_ms: i64,
        request_id: u64,
        result: Result<LeaderAndIsr, ErrorCode>,
    ) {
        self.on_alter_partition_response(now_ms, request_id, result);
        self.after_input(now_ms);
    }

    fn on_alter_partition_response(
        &mut self,
        now_ms: i64,
        request_id: u64,
        result: Result<LeaderAndIsr, ErrorCode>,
    ) {
        let retry_backoff_ms = self.config.alter_partition_retry_backoff_ms;
        let leader_epoch = self.leader_epoch;
        let partition_epoch = self.partition_epoch;
        let local = self.local;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(pending) = &mut leader.pending_isr else {
            return;
        };
        if pending.request_id != request_id || !pending.in_flight {
            return;
        }
        pending.in_flight = false;
        match result {
            Ok(state) => {
                if state.leader_epoch != leader_epoch || state.partition_epoch < partition_epoch {
                    // Stale answer; stay pending until metadata says what happened.
                    return;
                }
                let Ok(isr) = validate_leader_and_isr(local, &state) else {
                    return;
                };
                self.commit_isr(now_ms, isr, state.partition_epoch);
            }
            // The controller says the request was not applied and the partition epoch is
            // right: back to the committed state.
            Err(ErrorCode::OperationNotAttempted | ErrorCode::IneligibleReplica) => {
                leader.pending_isr = None;
            }
            // Our view is stale or the controller does not know the partition: stay pending
            // (the maximal ISR keeps the HW safe); new metadata settles it. Or the answer is
            // stale: a deposed controller that has not yet heard of its successor answers from
            // its old image, and then no metadata ever comes. So the same proposal goes again
            // after a longer backoff; a controller that knows better accepts it, and new
            // metadata stops the retries.
            Err(
                ErrorCode::UnknownTopicOrPartition
                | ErrorCode::UnknownTopicId
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::InvalidRequest
                | ErrorCode::NewLeaderElected,
            ) => pending.retry_at_ms = Some(now_ms + STALE_VIEW_RETRY_FACTOR * retry_backoff_ms),
            // The controller checked the proposal against a change of its own it had not yet
            // committed (often this very proposal, sent again after a timeout). That change
            // may still commit, and then metadata arrives and settles it, or be lost with
            // the controller's leadership, and then no metadata ever comes: stay pending (the
            // maximal ISR still holds the HW) and send the same proposal again after the
            // backoff, which a controller without that change accepts. Kafka's `Partition`
            // only waits here, and its ISR can stay short for good.
            Err(ErrorCode::InvalidUpdateVersion) => pending.retry_at_ms = Some(now_ms + retry_backoff_ms),
            Err(_) => pending.retry_at_ms = Some(now_ms + retry_backoff_ms),
        }
    }

    // ---- follower inputs ----

    /// The leader's answer to [`Action::SendFetch`] `fetch_id`. Truncates on a diverging
    /// epoch, otherwise appends the batches (validated: this is network input) and learns the
    /// leader's high watermark. Answers to anything but the outstanding fetch are ignored.
    pub fn handle_fetch_response(&mut self, now_ms: i64, fetch_id: u64, response: FetchResponse) {
        self.on_fetch_response(now_ms, fetch_id, response);
        self.maybe_send_fetch(now_ms);
        self.after_input(now_ms);
    }

    fn on_fetch_response(&mut self, now_ms: i64, fetch_id: u64, response: FetchResponse) {
        let backoff_ms = self.config.replica_fetch_backoff_ms;
        let leader_epoch = self.leader_epoch;
        let RoleState::Follower(follower) = &mut self.role else {
            return;
        };
        let Exchange::Fetching {
            fetch_id: expected,
            fetch_offset,
            ..
        } = follower.exchange
        else {
            return;
        };
        if expected != fetch_id {
            return;
        }
        follower.exchange = Exchange::Idle;
        follower.streaming = false;
        if crate::INVARIANTS {
            assert_eq!(
                fetch_offset, self.log_end_offset,
                "fetches are sent only when idle"
            );
        }
        if let Some(error) = response.error {
            follower.backoff_until_ms = Some(now_ms + backoff_ms);
            if error == ErrorCode::OffsetOutOfRange
                && self.log_end_offset < response.log_start_offset
            {
                // The leader deleted what we would fetch next: start over at its log start.
                follower.backoff_until_ms = None;
                self.reset_log(response.log_start_offset);
            }
            return;
        }
        if let Some(diverging) = response.diverging_epoch {
            self.truncate_by_epoch(now_ms, diverging);
            return;
        }
        let fetch_offset = self.restart_at_straddling_batch(fetch_offset, &response.records);
        let Some(FetchedPrefix {
            end_offset,
            byte_len,
            new_epochs,
            producer_headers,
        }) = self.check_fetched_records(fetch_offset, leader_epoch, &response.records)
        else {
            tracing::debug!(
                fetch_offset = fetch_offset.0,
                "dropping invalid fetch response"
            );
            self.follower_backoff(now_ms);
            return;
        };
        if end_offset > fetch_offset {
            let mut cache_changed = false;
            for (epoch, base_offset) in new_epochs {
                cache_changed |= self.epoch_cache.assign(epoch, base_offset);
            }
            if cache_changed {
                self.persist_epoch_cache();
            }
            for (header, marker) in &producer_headers {
                self.producers.replay_marked(now_ms, header, *marker);
            }
            self.emit_append(fetch_offset, end_offset, response.records.slice(..byte_len));
        }
        let RoleState::Follower(follower) = &mut self.role else {
            unreachable!("follower")
        };
        follower.streaming = end_offset > fetch_offset;
        follower.leader_high_watermark = response.high_watermark;
        self.update_follower_high_watermark(now_ms);
        // Kafka's follower raises its log start to the leader's (retention, DeleteRecords), but
        // never past what it knows to be committed.
        let start_offset = response.log_start_offset.min(self.high_watermark);
        if start_offset > self.log_start_offset {
            self.advance_log_start(start_offset);
        }
    }

    /// The leader's answer to [`Action::SendOffsetForLeaderEpoch`] `request_id`.
    pub fn handle_offset_for_leader_epoch_response(
        &mut self,
        now_ms: i64,
        request_id: u64,
        result: Result<EpochEndOffset, ErrorCode>,
    ) {
        self.on_offset_for_leader_epoch_response(now_ms, request_id, result);
        self.maybe_send_fetch(now_ms);
        self.after_input(now_ms);
    }

    fn on_offset_for_leader_epoch_response(
        &mut self,
        now_ms: i64,
        request_id: u64,
        result: Result<EpochEndOffset, ErrorCode>,
    ) {
        let RoleState::Follower(follower) = &mut self.role else {
            return;
        };
        if !matches!(follower.exchange, Exchange::AskingEpoch { request_id: id, .. } if id == request_id)
        {
            return;
        }
        follower.exchange = Exchange::Idle;
        match result {
            Ok(end) if !end.is_undefined() => self.truncate_by_epoch(now_ms, end),
            _ => self.follower_backoff(now_ms),
        }
    }

    // ---- disk and time ----

    /// A disk operation finished (rule 2).
    pub fn handle_completion(&mut self, now_ms: i64, completion: Completion) {
        match completion {
            Completion::Appended { end_offset } => {
                let front = self.appends_in_flight.pop_front();
                assert_eq!(front, Some(end_offset), "appends complete in order");
                self.written_offset = end_offset;
            }
            Completion::Truncated { to } => {
                assert_eq!(
                    self.truncate_in_flight,
                    Some(to),
                    "unexpected truncation completion"
                );
                self.truncate_in_flight = None;
            }
            Completion::Synced { through } => {
                let through = through.min(self.written_offset);
                if through > self.durable_offset {
                    self.durable_offset = through;
                }
            }
        }
        match self.role {
            RoleState::Leader(_) => {
                self.complete_local_produces();
                self.maybe_advance_high_watermark(now_ms);
            }
            RoleState::Follower(_) => {
                self.update_follower_high_watermark(now_ms);
                self.maybe_send_fetch(now_ms);
            }
            RoleState::Offline => {}
        }
        self.after_input(now_ms);
    }

    /// Timers: ISR shrink check, AlterPartition retry, produce deadlines, fetch retry and
    /// response timeout, high watermark checkpoint. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now_ms: i64) {
        if self
            .high_watermark_checkpoint_due_ms
            .is_some_and(|due| due <= now_ms)
        {
            self.high_watermark_checkpoint_due_ms = None;
            if self.high_watermark != self.high_watermark_persisted {
                self.high_watermark_persisted = self.high_watermark;
                self.actions.push_back(Action::PersistHighWatermark {
                    high_watermark: self.high_watermark,
                });
            }
        }
        match self.role {
            RoleState::Leader(_) => self.leader_timeouts(now_ms),
            RoleState::Follower(_) => {
                let timeout_ms = self.config.replica_fetch_response_timeout_ms;
                let RoleState::Follower(follower) = &mut self.role else {
                    unreachable!("follower")
                };
                if follower.backoff_until_ms.is_some_and(|t| t <= now_ms) {
                    follower.backoff_until_ms = None;
                }
                match follower.exchange {
                    Exchange::Fetching { sent_ms, .. } | Exchange::AskingEpoch { sent_ms, .. }
                        if sent_ms + timeout_ms <= now_ms =>
                    {
                        follower.exchange = Exchange::Idle;
                    }
                    _ => {}
                }
                self.maybe_send_fetch(now_ms);
            }
            RoleState::Offline => {}
        }
        self.after_input(now_ms);
    }

    fn leader_timeouts(&mut self, now_ms: i64) {
        let interval_ms = self.isr_check_interval_ms();
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let due = |deadline_ms: Option<i64>| deadline_ms.is_some_and(|d| d <= now_ms);
        let mut expired = take_where(&mut leader.awaiting_local, |p| due(p.deadline_ms));
        expired.extend(take_where(&mut leader.awaiting_high_watermark, |p| due(p.deadline_ms)));
        let expired: Vec<RequestId> = expired.iter().map(|p| p.request_id).collect();
        for d in take_where(&mut leader.awaiting_low_watermark, |d| due(d.deadline_ms)) {
            self.actions.push_back(Action::ReplyDeleteRecords { request_id: d.request_id, result: Err(ErrorCode::RequestTimedOut) });
        }
        let resend = match &mut leader.pending_isr {
            Some(p) if p.retry_at_ms.is_some_and(|t| t <= now_ms) => {
                p.retry_at_ms = None;
                Some(p.proposed.clone())
            }
            _ => None,
        };
        let shrink_due = leader.isr_check_due_ms <= now_ms;
        if shrink_due {
            leader.isr_check_due_ms = now_ms + interval_ms;
        }
        for request_id in expired {
            self.reply(request_id, Err(ErrorCode::RequestTimedOut));
        }
        if let Some(proposed) = resend {
            self.propose_isr(proposed);
        }
        if shrink_due {
            self.maybe_shrink_isr(now_ms);
        }
    }

    // ---- leader internals ----

    fn check_current_leader_epoch(&self, current: LeaderEpoch) -> Result<(), ErrorCode> {
        if current < self.leader_epoch {
            Err(ErrorCode::FencedLeaderEpoch)
        } else if current > self.leader_epoch {
            Err(ErrorCode::UnknownLeaderEpoch)
        } else {
            Ok(())
        }
    }

    /// Kafka's `Replica.updateFetchState`: a fetch at or past the leader's end means caught
    /// up now; one at or past the leader's end at the previous fetch means caught up then.
    /// `durable_offset`: rule 3's, when the follower fetched ahead of its fsync.
    fn update_follower(&mut self, now_ms: i64, replica_id: NodeId, fetch_offset: Offset, durable_offset: Option<Offset>, log_start_offset: Offset) {
        let leader_end = self.written_offset;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let progress = leader
            .followers
            .get_mut(&replica_id)
            .expect("checked by the caller");
        if fetch_offset >= leader_end {
            progress.last_caught_up_ms =
                Some(progress.last_caught_up_ms.map_or(now_ms, |t| t.max(now_ms)));
        } else if progress
            .last_fetch_leader_end
            .is_some_and(|end| fetch_offset >= end)
        {
            let then = progress.last_fetch_ms;
            progress.last_caught_up_ms =
                Some(progress.last_caught_up_ms.map_or(then, |t| t.max(then)));
        }
        progress.last_fetch_leader_end = Some(leader_end);
        progress.last_fetch_ms = now_ms;
        progress.position = Some(durable_offset.map_or(fetch_offset, |durable| durable.min(fetch_offset)));
        if log_start_offset.0 >= 0 {
            progress.log_start_offset = Some(log_start_offset);
        }
        self.maybe_expand_isr(replica_id);
        self.maybe_advance_high_watermark(now_ms);
        self.complete_deletes();
    }

    /// Kafka's `lowWatermarkIfLeader`: the lowest log start of the leader and of every follower
    /// whose broker is not fenced; a follower that has not reported one since this leader
    /// started holds it unknown (`None`).
    fn low_watermark(&self) -> Option<Offset> {
        let RoleState::Leader(leader) = &self.role else { return None };
        let mut low = self.log_start_offset;
        for (id, progress) in &leader.followers {
            if self.fenced.contains(id) {
                continue;
            }
            low = low.min(progress.log_start_offset?);
        }
        Some(low)
    }

    /// Answers the DeleteRecords whose start every live replica has reached.
    fn complete_deletes(&mut self) {
        if !matches!(&self.role, RoleState::Leader(l) if !l.awaiting_low_watermark.is_empty()) {
            return;
        }
        let low = self.low_watermark();
        let RoleState::Leader(leader) = &mut self.role else { return };
        let Some(low) = low else { return };
        for d in take_where(&mut leader.awaiting_low_watermark, |d| low >= d.offset) {
            self.actions.push_back(Action::ReplyDeleteRecords { request_id: d.request_id, result: Ok(low) });
        }
    }

    fn maybe_expand_isr(&mut self, replica_id: NodeId) {
        let high_watermark = self.high_watermark;
        let RoleState::Leader(leader) = &self.role else {
            return;
        };
        if leader.pending_isr.is_some() || leader.isr.contains(&replica_id) || self.fenced.contains(&replica_id) {
            return;
        }
        let Some(position) = leader.followers.get(&replica_id).and_then(|p| p.position) else {
            return;
        };
        // KIP-101/Kafka's `isFollowerInSync`: caught up to the HW, and holding everything
        // the previous leaders wrote (the start of this leader's epoch).
        if position >= high_watermark && position >= leader.epoch_start_offset {
            let mut proposed = leader.isr.clone();
            proposed.insert(replica_id);
            self.propose_isr(proposed);
        }
    }

    fn maybe_shrink_isr(&mut self, now_ms: i64) {
        let lag_ms = self.config.replica_lag_time_max_ms;
        let leader_end = self.written_offset;
        let RoleState::Leader(leader) = &self.role else {
            return;
        };
        if leader.pending_isr.is_some() {
            return;
        }
        let out_of_sync: Vec<NodeId> = leader
            .isr
            .iter()
            .filter(|&&r| r != self.local)
            .filter(|r| {
                !leader
                    .followers
                    .get(r)
                    .is_some_and(|p| p.caught_up(now_ms, leader_end, lag_ms))
            })
            .copied()
            .collect();
        if out_of_sync.is_empty() {
            return;
        }
        let proposed = leader
            .isr
            .iter()
            .filter(|r| !out_of_sync.contains(r))
            .copied()
            .collect();
        self.propose_isr(proposed);
    }

    fn propose_isr(&mut self, proposed: BTreeSet<NodeId>) {
        assert!(
            proposed.contains(&self.local),
            "the leader stays in its ISR: {proposed:?}"
        );
        let request_id = self.next_id();
        let request = AlterPartitionRequest {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            new_isr: proposed.iter().copied().collect(),
        };
        let RoleState::Leader(leader) = &mut self.role else {
            unreachable!("leader only")
        };
        leader.pending_isr = Some(PendingIsr {
            request_id,
            proposed,
            retry_at_ms: None,
            in_flight: true,
        });
        self.actions.push_back(Action::SendAlterPartition {
            request_id,
            request,
        });
    }

    fn commit_isr(&mut self, now_ms: i64, isr: BTreeSet<NodeId>, partition_epoch: PartitionEpoch) {
        let RoleState::Leader(leader) = &mut self.role else {
            unreachable!("leader only")
        };
        // A follower the committed ISR drops (a broker fenced or shutting down, KIP-841) no
        // longer counts for having been caught up a moment ago, nor is it proposed back into
        // the ISR for a position it held then (on an empty log every position is caught up):
        // only a fetch after the change makes it count, and makes it eligible again.
        for (id, progress) in leader.followers.iter_mut() {
            if leader.isr.contains(id) && !isr.contains(id) {
                progress.last_caught_up_ms = None;
                progress.position = None;
                progress.last_fetch_leader_end = None;
            }
        }
        leader.isr = isr;
        leader.pending_isr = None;
        self.partition_epoch = partition_epoch;
        self.leader_check_isr_size();
        self.maybe_advance_high_watermark(now_ms);
    }

    /// Fails waiting acks=all produces when the committed ISR is below `min.insync.replicas`.
    fn leader_check_isr_size(&mut self) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        if leader.isr.len() >= self.config.min_insync_replicas {
            return;
        }
        let failed: Vec<RequestId> = leader
            .awaiting_high_watermark
            .drain(..)
            .map(|p| p.request_id)
            .collect();
        for request_id in failed {
            self.reply(request_id, Err(ErrorCode::NotEnoughReplicasAfterAppend));
        }
    }

    /// Keeps one progress entry per assigned follower after a replica set change.
    fn sync_follower_table(&mut self, now_ms: i64) {
        let local = self.local;
        let replicas = self.replicas.clone();
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        leader.followers.retain(|r, _| replicas.contains(r));
        for r in replicas.into_iter().filter(|&r| r != local) {
            leader
                .followers
                .entry(r)
                .or_insert_with(|| FollowerProgress::reset(now_ms, false));
        }
    }

    /// Rule 4.
    fn maybe_advance_high_watermark(&mut self, now_ms: i64) {
        let lag_ms = self.config.replica_lag_time_max_ms;
        let leader_end = self.written_offset;
        let own = self.own_position();
        let RoleState::Leader(leader) = &self.role else {
            return;
        };
        if leader.isr.len() < self.config.min_insync_replicas {
            return;
        }
        let maximal = leader.maximal_isr();
        let mut candidate = own;
        for (id, progress) in &leader.followers {
            let counts = maximal.contains(id) || (!self.fenced.contains(id) && progress.caught_up(now_ms, leader_end, lag_ms));
            if !counts {
                continue;
            }
            match progress.position {
                Some(position) => candidate = candidate.min(position),
                None => return,
            }
        }
        if candidate > self.high_watermark {
            self.raise_high_watermark(now_ms, candidate);
            self.complete_high_watermark_produces();
        }
    }

    fn complete_high_watermark_produces(&mut self) {
        self.complete_produces(self.high_watermark, |leader| &mut leader.awaiting_high_watermark);
    }

    fn complete_local_produces(&mut self) {
        self.complete_produces(self.own_position(), |leader| &mut leader.awaiting_local);
    }

    /// A retried batch already in the log at `place`: answered as its first write would be,
    /// once what `acks` asks covers it (perhaps at once). The queues stay in offset order.
    fn await_duplicate(&mut self, request_id: RequestId, acks: Acks, place: BatchPlace, timeout_ms: i32, now_ms: i64) {
        let pending = PendingProduce {
            request_id,
            base_offset: place.first_offset,
            end_offset: Offset(place.last_offset.0 + 1),
            deadline_ms: (timeout_ms > 0).then(|| now_ms + i64::from(timeout_ms)),
            log_append_time_ms: None,
        };
        let covered = match acks {
            Acks::None => return,
            Acks::Leader => self.own_position(),
            Acks::All => self.high_watermark,
        };
        if pending.end_offset <= covered {
            self.reply(request_id, Ok(pending.ack(self.log_start_offset)));
            return;
        }
        let RoleState::Leader(leader) = &mut self.role else { unreachable!("checked by on_produce") };
        let queue = if acks == Acks::All { &mut leader.awaiting_high_watermark } else { &mut leader.awaiting_local };
        let at = queue.iter().position(|p| p.end_offset > pending.end_offset).unwrap_or(queue.len());
        queue.insert(at, pending);
    }

    /// Forgets expired producer ids, at most every [`PRODUCER_SWEEP_INTERVAL_MS`] (Kafka's
    /// `producer.id.expiration.check.interval.ms`).
    fn sweep_producers(&mut self, now_ms: i64) {
        if now_ms >= self.producer_sweep_due_ms {
            self.producers.expire(now_ms, self.config.producer_id_expiration_ms);
            self.producer_sweep_due_ms = now_ms.saturating_add(PRODUCER_SWEEP_INTERVAL_MS);
        }
    }

    /// Answers, in order, the produces of one waiting queue whose records end at or below
    /// `covered`.
    fn complete_produces(
        &mut self,
        covered: Offset,
        queue: impl Fn(&mut LeaderState) -> &mut VecDeque<PendingProduce>,
    ) {
        let log_start_offset = self.log_start_offset;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let waiting = queue(leader);
        let mut done = Vec::new();
        while waiting.front().is_some_and(|p| p.end_offset <= covered) {
            done.push(waiting.pop_front().expect("front"));
        }
        for p in done {
            self.reply(p.request_id, Ok(p.ack(log_start_offset)));
        }
    }

    fn isr_check_interval_ms(&self) -> i64 {
        (self.config.replica_lag_time_max_ms / 2).max(1)
    }

    // ---- follower internals ----

    /// Sends the next fetch (or OffsetForLeaderEpoch) when the follower is idle: nothing
    /// outstanding, no truncation or append in flight, and (rule 3) everything durable.
    fn maybe_send_fetch(&mut self, now_ms: i64) {
        let RoleState::Follower(follower) = &self.role else {
            return;
        };
        if follower.exchange != Exchange::Idle
            || follower.backoff_until_ms.is_some_and(|t| t > now_ms)
        {
            return;
        }
        let streaming = follower.streaming;
        if self.truncate_in_flight.is_some() || !self.appends_in_flight.is_empty() {
            return;
        }
        let unsynced = self.config.ack_after_fsync && self.durable_offset < self.log_end_offset;
        if unsynced {
            if self.sync_requested < self.log_end_offset {
                self.sync_requested = self.log_end_offset;
                self.actions.push_back(Action::Sync {
                    through: self.log_end_offset,
                });
            }
            if !streaming {
                return;
            }
        }
        let leader = follower.leader;
        let last_fetched_epoch = self.epoch_cache.latest_epoch();
        if !follower.epoch_checked && last_fetched_epoch != LeaderEpoch::NONE {
            let request_id = self.next_id();
            self.actions.push_back(Action::SendOffsetForLeaderEpoch {
                to: leader,
                request_id,
                current_leader_epoch: self.leader_epoch,
                leader_epoch: last_fetched_epoch,
            });
            let RoleState::Follower(follower) = &mut self.role else {
                unreachable!("follower")
            };
            follower.exchange = Exchange::AskingEpoch {
                request_id,
                sent_ms: now_ms,
            };
            return;
        }
        let fetch_id = self.next_id();
        let request = FetchRequest {
            replica_id: self.local,
            current_leader_epoch: self.leader_epoch,
            fetch_offset: self.log_end_offset,
            last_fetched_epoch,
            log_start_offset: self.log_start_offset,
            max_wait_ms: if unsynced { 0 } else { self.config.replica_fetch_wait_max_ms },
            max_bytes: self.config.replica_fetch_max_bytes,
            read_committed: false,
            durable_offset: unsynced.then_some(self.durable_offset),
        };
        self.actions.push_back(Action::SendFetch {
            to: leader,
            fetch_id,
            request,
        });
        let RoleState::Follower(follower) = &mut self.role else {
            unreachable!("follower")
        };
        follower.epoch_checked = true;
        follower.exchange = Exchange::Fetching {
            fetch_id,
            sent_ms: now_ms,
            fetch_offset: self.log_end_offset,
        };
    }

    /// KIP-279 truncation, as Kafka's `AbstractFetcherThread.getOffsetTruncationState`: find
    /// where the leader's answer for epoch E ends in our log; if we know E, cut at the earlier
    /// of the two ends; if not, cut at the end of our largest epoch below E and ask again.
    fn truncate_by_epoch(&mut self, now_ms: i64, leader_end: EpochEndOffset) {
        if leader_end.is_undefined() {
            self.follower_backoff(now_ms);
            return;
        }
        let log_end = self.log_end_offset;
        let local = self.epoch_cache.end_offset_for(leader_end.epoch, log_end);
        let (to, complete) = if local.is_undefined() {
            (leader_end.end_offset.min(log_end), true)
        } else if local.epoch != leader_end.epoch {
            (local.end_offset.min(log_end), false)
        } else {
            (
                local.end_offset.min(leader_end.end_offset).min(log_end),
                true,
            )
        };
        let to = to.max(Offset(0));
        {
            let RoleState::Follower(follower) = &mut self.role else {
                unreachable!("follower")
            };
            follower.epoch_checked = complete || !self.config.truncate_with_offset_for_leader_epoch;
        }
        if to >= log_end {
            // No data to cut, but the epoch cache may end with an epoch this broker assigned as
            // leader without appending anything, which the new leader does not know: drop it,
            // or every fetch would carry it and diverge again (Kafka's `UnifiedLog.truncateTo`
            // truncates the cache even when the log is not cut).
            if self.epoch_cache.truncate_from_end(log_end) {
                self.persist_epoch_cache();
            }
            self.follower_backoff(now_ms);
            return;
        }
        if to < self.log_start_offset {
            self.reset_log(to);
            return;
        }
        if to < self.high_watermark {
            // Only an unclean election lets a leader lack data below our high watermark.
            tracing::warn!(
                to = to.0,
                high_watermark = self.high_watermark.0,
                "truncating below the high watermark"
            );
            self.high_watermark = to;
        }
        self.log_end_offset = to;
        self.written_offset = to;
        self.durable_offset = self.durable_offset.min(to);
        self.sync_requested = self.sync_requested.min(to);
        self.truncate_in_flight = Some(to);
        self.producers.truncate(to);
        self.actions.push_back(Action::Truncate { to });
        if self.epoch_cache.truncate_from_end(to) {
            self.persist_epoch_cache();
        }
    }

    fn reset_log(&mut self, start_offset: Offset) {
        self.log_start_offset = start_offset;
        self.log_end_offset = start_offset;
        self.written_offset = start_offset;
        self.durable_offset = start_offset;
        self.sync_requested = start_offset;
        self.high_watermark = start_offset;
        self.truncate_in_flight = Some(start_offset);
        self.producers = ProducerStates::default();
        self.actions.push_back(Action::ResetLog { start_offset });
        self.epoch_cache = EpochCache::new();
        self.persist_epoch_cache();
    }

    /// DeleteRecords can put the leader's log start inside a batch, and a fetch from there is
    /// answered from the start of that batch. A follower whose log is empty at `fetch_offset`
    /// (it just restarted at the leader's start) restarts it at the batch's base offset instead,
    /// as Kafka's `Partition.appendRecordsToFollowerOrFutureReplica` does on
    /// `UnexpectedAppendOffsetException`; the answer's log start then moves its start up again.
    /// Otherwise the follower would refuse the batch on every fetch and never catch up.
    /// -> where the fetched records go.
    fn restart_at_straddling_batch(&mut self, fetch_offset: Offset, records: &[u8]) -> Offset {
        let empty = self.log_start_offset == fetch_offset
            && self.log_end_offset == fetch_offset
            && self.truncate_in_flight.is_none()
            && self.appends_in_flight.is_empty();
        if !empty {
            return fetch_offset;
        }
        match batch::validate_stored_batch(records) {
            Ok(header) if header.base_offset < fetch_offset.0 && header.next_offset() > fetch_offset.0 => {
                tracing::info!(
                    fetch_offset = fetch_offset.0,
                    base_offset = header.base_offset,
                    "the leader's log start is inside a batch: restarting the empty log at its base"
                );
                self.reset_log(Offset(header.base_offset));
                Offset(header.base_offset)
            }
            _ => fetch_offset,
        }
    }

    fn follower_backoff(&mut self, now_ms: i64) {
        let backoff_ms = self.config.replica_fetch_backoff_ms;
        if let RoleState::Follower(follower) = &mut self.role {
            follower.backoff_until_ms = Some(now_ms + backoff_ms);
        }
    }

    /// Checks fetched batches: contiguous from `fetch_offset`, valid CRC, epochs not above the
    /// leader's and not below ours. A trailing partial batch (max bytes cut it) is left out.
    /// Returns the end offset and byte length of the valid prefix, and each new epoch with its
    /// base offset.
    fn check_fetched_records(
        &self,
        fetch_offset: Offset,
        leader_epoch: LeaderEpoch,
        records: &[u8],
    ) -> Option<FetchedPrefix> {
        let mut position = 0usize;
        let mut next = fetch_offset;
        let mut latest = self.epoch_cache.latest_epoch();
        let mut epochs = Vec::new();
        let mut producer_headers = Vec::new();
        while position < records.len() {
            // Stored, not produced, batches: compaction leaves fewer records than offsets, and
            // offset gaps between batches.
            let header = match batch::validate_stored_batch(&records[position..]) {
                Ok(header) => header,
                Err(BatchError::Truncated { .. }) => break,
                Err(BatchError::InvalidLength { length, remaining })
                    if length > 0 && batch::LOG_OVERHEAD + length as usize > remaining =>
                {
                    break
                }
                Err(_) => return None,
            };
            let epoch = LeaderEpoch(header.partition_leader_epoch);
            if Offset(header.base_offset) < next
                || epoch.0 < 0
                || epoch > leader_epoch
                || epoch < latest
            {
                return None;
            }
            if epoch > latest {
                epochs.push((epoch, Offset(header.base_offset)));
                latest = epoch;
            }
            if header.producer_id >= 0 {
                let marker = if header.is_control() { batch::control_marker(&records[position..]) } else { None };
                producer_headers.push((header, marker));
            }
            next = Offset(header.next_offset());
            position += header.total_len();
        }
        Some(FetchedPrefix {
            end_offset: next,
            byte_len: position,
            new_epochs: epochs,
            producer_headers,
        })
    }

    fn update_follower_high_watermark(&mut self, now_ms: i64) {
        let own = self.own_position();
        let RoleState::Follower(follower) = &self.role else {
            return;
        };
        let candidate = follower.leader_high_watermark.min(own);
        if candidate > self.high_watermark {
            self.raise_high_watermark(now_ms, candidate);
        }
    }

    // ---- shared internals ----

    /// The position that counts for this replica (rule 3).
    fn own_position(&self) -> Offset {
        if self.config.ack_after_fsync {
            self.durable_offset
        } else {
            self.written_offset
        }
    }

    fn raise_high_watermark(&mut self, now_ms: i64, high_watermark: Offset) {
        assert!(
            high_watermark > self.high_watermark,
            "high watermark moving back"
        );
        self.high_watermark = high_watermark;
        self.producers.replicated(high_watermark);
        if self.high_watermark_checkpoint_due_ms.is_none() {
            self.high_watermark_checkpoint_due_ms =
                Some(now_ms + self.config.high_watermark_checkpoint_interval_ms);
        }
    }

    fn emit_append(&mut self, base_offset: Offset, end_offset: Offset, records: Bytes) {
        assert_eq!(
            base_offset, self.log_end_offset,
            "appends go at the log end"
        );
        assert!(end_offset > base_offset);
        self.actions.push_back(Action::Append {
            base_offset,
            end_offset,
            records: vec![records],
        });
        self.appends_in_flight.push_back(end_offset);
        self.log_end_offset = end_offset;
        if self.config.ack_after_fsync {
            self.sync_requested = end_offset;
            self.actions.push_back(Action::Sync {
                through: end_offset,
            });
        }
    }

    /// Moves the log start up to `start_offset` (at most the high watermark): the epoch
    /// cache drops what precedes it, and the driver records it.
    fn advance_log_start(&mut self, start_offset: Offset) {
        let start_offset = start_offset.min(self.high_watermark);
        if start_offset <= self.log_start_offset {
            return;
        }
        self.log_start_offset = start_offset;
        // Everything below the start is gone from the log, so nothing there is left to sync
        // (matters with `ack_after_fsync` off, where syncs are not requested per append).
        self.durable_offset = self.durable_offset.max(start_offset);
        self.sync_requested = self.sync_requested.max(start_offset);
        if let RoleState::Leader(leader) = &mut self.role {
            // The cache's latest entry starts at the log start once retention passes the
            // start of this leader's epoch; both must stay equal (check_invariants).
            leader.epoch_start_offset = leader.epoch_start_offset.max(start_offset);
        }
        self.actions.push_back(Action::AdvanceLogStart { start_offset });
        self.producers.advance_log_start(start_offset);
        if self.epoch_cache.truncate_from_start(start_offset) {
            self.persist_epoch_cache();
        }
    }

    fn persist_epoch_cache(&mut self) {
        self.actions.push_back(Action::PersistEpochCache {
            cache: self.epoch_cache.clone(),
        });
    }

    fn reply(&mut self, request_id: RequestId, result: Result<ProduceAck, ErrorCode>) {
        self.actions
            .push_back(Action::ReplyProduce { request_id, result });
    }

    fn next_id(&mut self) -> u64 {
        self.next_message_id += 1;
        self.next_message_id
    }

    fn after_input(&mut self, _now_ms: i64) {
        if crate::INVARIANTS {
            self.check_invariants();
        }
    }

    /// Properties that hold after every input. Runs after each input where
    /// [`crate::INVARIANTS`] is on, and on construction (a recovered state is checked once).
    pub fn check_invariants(&self) {
        let ctx = || {
            format!(
                "replica {} epoch {} start {} durable {} written {} end {} hw {}",
                self.local,
                self.leader_epoch,
                self.log_start_offset,
                self.durable_offset,
                self.written_offset,
                self.log_end_offset,
                self.high_watermark
            )
        };
        assert!(self.log_start_offset <= self.durable_offset, "{}", ctx());
        assert!(self.durable_offset <= self.written_offset, "{}", ctx());
        assert!(self.written_offset <= self.log_end_offset, "{}", ctx());
        assert!(self.log_start_offset <= self.high_watermark, "{}", ctx());
        assert!(self.high_watermark <= self.own_position(), "{}", ctx());
        let mut previous = self.written_offset;
        for &end in &self.appends_in_flight {
            assert!(end > previous, "appends in flight out of order: {}", ctx());
            previous = end;
        }
        assert_eq!(
            previous,
            self.log_end_offset,
            "unaccounted append: {}",
            ctx()
        );
        self.epoch_cache.check_invariants();
        if let Some(latest) = self.epoch_cache.latest() {
            assert!(latest.start_offset <= self.log_end_offset, "{}", ctx());
            assert!(
                latest.epoch <= self.leader_epoch || self.leader_epoch == LeaderEpoch::NONE,
                "{}",
                ctx()
            );
        }
        if let RoleState::Leader(leader) = &self.role {
            assert!(
                leader.isr.contains(&self.local),
                "leader not in ISR {:?}: {}",
                leader.isr,
                ctx()
            );
            assert!(
                leader.isr.iter().all(|r| self.replicas.contains(r)),
                "{}",
                ctx()
            );
            // A leader re-elected at the epoch its recovered log already ends with (a restart
            // the controller saw no leader change for) keeps the cache's earlier start, as
            // Kafka's `LeaderEpochFileCache.assign` does, while its epoch start offset is its log
            // end then, which is what a follower must reach to join the ISR.
            let latest = self.epoch_cache.latest();
            assert!(
                latest.is_some_and(|e| e.epoch == self.leader_epoch && e.start_offset <= leader.epoch_start_offset),
                "leader epoch {} (from {}) not the latest cache entry {latest:?}: {}",
                self.leader_epoch,
                leader.epoch_start_offset,
                ctx()
            );
            assert!(
                leader
                    .awaiting_high_watermark
                    .iter()
                    .all(|p| p.end_offset > self.high_watermark),
                "a produce waits for a high watermark already past it: {}",
                ctx()
            );
            assert!(
                leader
                    .awaiting_local
                    .iter()
                    .all(|p| p.end_offset > self.own_position()),
                "a produce waits for a local write already done: {}",
                ctx()
            );
            if leader.isr.len() < self.config.min_insync_replicas {
                assert!(
                    leader.awaiting_high_watermark.is_empty(),
                    "acks=all produce waits with the ISR {:?} below min.insync.replicas {}: {}",
                    leader.isr,
                    self.config.min_insync_replicas,
                    ctx()
                );
            }
            for p in leader
                .awaiting_local
                .iter()
                .chain(&leader.awaiting_high_watermark)
            {
                assert!(
                    p.base_offset < p.end_offset && p.end_offset <= self.log_end_offset,
                    "{}",
                    ctx()
                );
            }
            if let Some(pending) = &leader.pending_isr {
                assert!(pending.proposed.contains(&self.local), "{}", ctx());
            }
            for (id, progress) in &leader.followers {
                assert!(*id != self.local && self.replicas.contains(id), "{}", ctx());
                if let Some(position) = progress.position {
                    assert!(
                        position <= self.log_end_offset,
                        "follower {id} ahead of the leader: {}",
                        ctx()
                    );
                }
            }
        }
    }
}

/// The valid prefix of a fetch response's records.
struct FetchedPrefix {
    end_offset: Offset,
    byte_len: usize,
    /// Each epoch new to this log, with the base offset of its first batch.
    new_epochs: Vec<(LeaderEpoch, Offset)>,
    /// The headers of the idempotent producers' batches, for their state once appended.
    producer_headers: Vec<(batch::BatchHeader, Option<batch::ControlMarker>)>,
}

impl LeaderState {
    fn maximal_isr(&self) -> BTreeSet<NodeId> {
        let mut maximal = self.isr.clone();
        if let Some(pending) = &self.pending_isr {
            maximal.extend(pending.proposed.iter().copied());
        }
        maximal
    }
}

impl FollowerProgress {
    /// Kafka's `resetReplicaState` for a new leader epoch: position unknown; ISR members
    /// count as caught up now so that they are not dropped before they can fetch.
    fn reset(now_ms: i64, in_isr: bool) -> FollowerProgress {
        FollowerProgress {
            position: None,
            log_start_offset: None,
            last_fetch_leader_end: None,
            last_fetch_ms: now_ms,
            last_caught_up_ms: in_isr.then_some(now_ms),
        }
    }

    /// Kafka's `isCaughtUp`: at the leader's end, or caught up within the lag time.
    fn caught_up(&self, now_ms: i64, leader_end: Offset, lag_ms: i64) -> bool {
        self.position == Some(leader_end)
            || self.last_caught_up_ms.is_some_and(|t| now_ms - t <= lag_ms)
    }
}


impl PendingProduce {
    fn ack(&self, log_start_offset: Offset) -> ProduceAck {
        ProduceAck {
            base_offset: self.base_offset,
            log_append_time_ms: self.log_append_time_ms,
            log_start_offset,
        }
    }
}

/// Checks a controller decision that names `local` as leader: the ISR is a set of assigned
/// replicas that holds the leader.
/// Removes the entries `pred` picks from `queue`, keeping the others in order; -> those removed.
fn take_where<T: Copy>(queue: &mut VecDeque<T>, pred: impl Fn(&T) -> bool) -> Vec<T> {
    let mut taken = Vec::new();
    queue.retain(|item| {
        let take = pred(item);
        if take {
            taken.push(*item);
        }
        !take
    });
    taken
}

fn validate_leader_and_isr(
    local: NodeId,
    state: &LeaderAndIsr,
) -> Result<BTreeSet<NodeId>, ErrorCode> {
    let replicas: BTreeSet<NodeId> = state.replicas.iter().copied().collect();
    let isr: BTreeSet<NodeId> = state.isr.iter().copied().collect();
    let valid = state.leader_epoch.0 >= 0
        && replicas.len() == state.replicas.len()
        && isr.len() == state.isr.len()
        && isr.contains(&local)
        && isr.is_subset(&replicas);
    if valid {
        Ok(isr)
    } else {
        Err(ErrorCode::InvalidRequest)
    }
}
