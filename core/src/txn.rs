//! Transaction coordinator for KIP-98 transactions, sans IO (Kafka's `TransactionCoordinator`,
//! `TransactionStateManager` and `TransactionMarkerChannelManager` in one state machine).
//!
//! One [`TxnCoordinator`] per core serves the transactional ids whose `__transaction_state`
//! partition that core leads. Inputs are `handle_*` calls carrying a driver-chosen
//! [`RequestId`] and `now_ms`; outputs are drained with [`TxnCoordinator::poll_action`]:
//! - [`Action::Reply`]: answer request N.
//! - [`Action::Persist`]: append these records to `__transaction_state` partition P (acks=all)
//!   and call [`TxnCoordinator::handle_persisted`] with the token once the ISR holds them (or
//!   the write failed). A state change is answered, and acted on, only after that.
//! - [`Action::NewProducerId`]: fetch a fresh producer id from the broker's block; answer with
//!   [`TxnCoordinator::handle_producer_id`].
//! - [`Action::WriteMarkers`]: write a commit or abort marker to each partition (on its
//!   leader, WriteTxnMarkers); answer with [`TxnCoordinator::handle_markers_written`], one
//!   result per partition. The coordinator retries the partitions that failed with a
//!   retriable error after `marker_retry_backoff_ms`, until all are written, then completes
//!   the transaction.
//!
//! The driver calls [`TxnCoordinator::handle_timeout`] when [`TxnCoordinator::poll_timeout`]
//! says (a spurious call is a no-op), and [`TxnCoordinator::load`] with every record of a
//! partition between [`TxnCoordinator::begin_load`] and [`TxnCoordinator::finish_load`].
//!
//! Two-phase commit: EndTxn persists PrepareCommit/PrepareAbort (the decision; the client is
//! answered then), the markers go out, and CompleteCommit/CompleteAbort is persisted once
//! every partition holds its marker. A coordinator that takes over a partition (failover)
//! finds a Prepare state in the log and sends the markers again: markers are idempotent on
//! the partitions (a second marker for a transaction already ended writes nothing new).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::ErrorCode;

pub type RequestId = u64;

/// Kafka's internal topic of transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// Broker settings for transactions, named after Kafka's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`.
    pub partitions: i32,
    /// `offsets.topic.num.partitions`: AddOffsetsToTxn adds the group's partition.
    pub offsets_topic_partitions: i32,
    /// `transaction.max.timeout.ms`.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_check_interval_ms: i64,
    /// Pause before a marker that failed is sent again.
    pub marker_retry_backoff_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            partitions: 50,
            offsets_topic_partitions: 50,
            max_timeout_ms: 900_000,
            id_expiration_ms: 7 * 24 * 3600 * 1000,
            abort_check_interval_ms: 10_000,
            marker_retry_backoff_ms: 100,
        }
    }
}

/// Kafka's `Utils.abs(transactionalId.hashCode) % partitions`.
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    crate::group::partition_for(transactional_id, partitions)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    /// The names DescribeTransactions and ListTransactions use (Kafka's `TransactionState`).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Kafka's `TransactionState.id`, the byte the log record stores.
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::PrepareAbort,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
            TxnState::Dead,
            TxnState::PrepareEpochFence,
        ]
        .into_iter()
        .find(|s| s.id() == id)
    }
}

/// A transactional id's state as `__transaction_state` stores it (Kafka's
/// `TransactionLogValue` v0 fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Sorted, no duplicates.
    pub partitions: Vec<(String, i32)>,
    pub last_update_ms: i64,
    /// -1 when no transaction is under way.
    pub start_ms: i64,
}

/// A record of the `__transaction_state` log; `value: None` is a tombstone (the id expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub transactional_id: String,
    pub value: Option<TxnValue>,
}

impl TxnRecord {
    /// Key and value bytes in Kafka's `TransactionLogKey`/`TransactionLogValue` v0 layout
    /// (key: version i16 = 0, transactional id string; value: version i16 = 0, producer id,
    /// epoch, timeout, state byte, partitions as [topic string, [i32]], last update, start).
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        key.put_i16(RECORD_VERSION);
        put_str(&mut key, &self.transactional_id);
        let value = self.value.as_ref().map(|v| {
            let mut buf = BytesMut::new();
            buf.put_i16(RECORD_VERSION);
            buf.put_i64(v.producer_id);
            buf.put_i16(v.producer_epoch);
            buf.put_i32(v.timeout_ms);
            buf.put_i8(v.state.id());
            if v.state == TxnState::Empty {
                // Kafka writes a null partition array for Empty; decode reads it back as none.
                buf.put_i32(-1);
            } else {
                let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in &v.partitions {
                    topics.entry(topic.as_str()).or_default().push(*partition);
                }
                buf.put_i32(len_i32(topics.len()));
                for (topic, partitions) in topics {
                    put_str(&mut buf, topic);
                    buf.put_i32(len_i32(partitions.len()));
                    for partition in partitions {
                        buf.put_i32(partition);
                    }
                }
            }
            buf.put_i64(v.last_update_ms);
            buf.put_i64(v.start_ms);
            buf.freeze()
        });
        (key.freeze(), value)
    }

    /// Reads [`Self::encode`]'s bytes; anything malformed is an error, never a panic.
    pub fn decode(mut key: Bytes, value: Option<Bytes>) -> Result<TxnRecord, String> {
        let version = get_i16(&mut key)?;
        if version != RECORD_VERSION {
            return Err(format!("unknown transaction log key version {version}"));
        }
        let transactional_id = get_str(&mut key)?;
        if !key.is_empty() {
            return Err(format!("{} bytes after the transaction log key", key.len()));
        }
        let value = match value {
            None => None,
            Some(mut v) => {
                let version = get_i16(&mut v)?;
                if version != RECORD_VERSION {
                    return Err(format!("unknown transaction log value version {version}"));
                }
                let producer_id = get_i64(&mut v)?;
                let producer_epoch = get_i16(&mut v)?;
                let timeout_ms = get_i32(&mut v)?;
                let state_id = get_i8(&mut v)?;
                let state = TxnState::from_id(state_id).ok_or_else(|| format!("unknown transaction state {state_id}"))?;
                let topics = get_i32(&mut v)?;
                if topics < -1 {
                    return Err(format!("negative topic count {topics}"));
                }
                // No capacity from the counts: they come off the disk (or a peer) unchecked, and
                // each entry read checks its own bytes, so a lying count ends in an error.
                let mut partitions = BTreeSet::new();
                for _ in 0..topics.max(0) {
                    let topic = get_str(&mut v)?;
                    let count = get_i32(&mut v)?;
                    if count < 0 {
                        return Err(format!("negative partition count {count} for topic {topic}"));
                    }
                    for _ in 0..count {
                        partitions.insert((topic.clone(), get_i32(&mut v)?));
                    }
                }
                let last_update_ms = get_i64(&mut v)?;
                let start_ms = get_i64(&mut v)?;
                if !v.is_empty() {
                    return Err(format!("{} bytes after the transaction log value", v.len()));
                }
                Some(TxnValue {
                    producer_id,
                    producer_epoch,
                    timeout_ms,
                    state,
                    partitions: partitions.into_iter().collect(),
                    last_update_ms,
                    start_ms,
                })
            }
        };
        Ok(TxnRecord { transactional_id, value })
    }
}

/// One transaction as DescribeTransactions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedTxn {
    pub transactional_id: String,
    /// NONE, or TRANSACTIONAL_ID_NOT_FOUND / NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS.
    pub error: Option<ErrorCode>,
    pub state: TxnState,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub partitions: Vec<(String, i32)>,
}

/// One transactional id as ListTransactions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTxn {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// InitProducerId with a transactional id. `producer_id`/`producer_epoch` are -1 unless
    /// the client resumes (KIP-360).
    InitProducerId { transactional_id: String, timeout_ms: i32, producer_id: i64, producer_epoch: i16 },
    /// AddPartitionsToTxn; `verify_only` is KIP-890's check from a partition leader (v4+):
    /// nothing is added, each partition is answered NONE if it is in the ongoing transaction of
    /// this producer and epoch, INVALID_TXN_STATE otherwise.
    AddPartitions {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
        verify_only: bool,
    },
    /// AddOffsetsToTxn: adds the group's `__consumer_offsets` partition.
    AddOffsets { transactional_id: String, producer_id: i64, producer_epoch: i16, group_id: String },
    EndTxn { transactional_id: String, producer_id: i64, producer_epoch: i16, commit: bool },
    Describe { transactional_ids: Vec<String> },
    /// Filters: empty means any.
    List { states: Vec<String>, producer_ids: Vec<i64> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    InitProducerId(Result<(i64, i16), ErrorCode>),
    /// Per partition, in request order.
    AddPartitions(Vec<((String, i32), Option<ErrorCode>)>),
    AddOffsets(Option<ErrorCode>),
    EndTxn(Option<ErrorCode>),
    /// In request order.
    Describe(Vec<DescribedTxn>),
    List(Vec<ListedTxn>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Reply(RequestId, Response),
    Persist { token: u64, partition: i32, records: Vec<TxnRecord> },
    NewProducerId { token: u64 },
    WriteMarkers {
        token: u64,
        producer_id: i64,
        producer_epoch: i16,
        /// The leader epoch of the `__transaction_state` partition this coordinator loaded:
        /// partitions refuse markers of an older coordinator (TRANSACTION_COORDINATOR_FENCED).
        coordinator_epoch: i32,
        commit: bool,
        partitions: Vec<(String, i32)>,
    },
}

// ---- state ----

/// Whether a coordinator serves a `__transaction_state` partition's ids yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ownership {
    /// Its records are being replayed: requests get COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    Loaded,
}

#[derive(Debug, Clone, Copy)]
struct OwnedPartition {
    ownership: Ownership,
    /// Sent with every marker of this partition's transactions, so a partition leader can
    /// refuse the markers of a coordinator that lost the partition since.
    coordinator_epoch: i32,
}

/// Kafka's `TransactionMetadata`: one transactional id as this coordinator knows it. It changes
/// only once the record of its next state is durable (see [`Transit`]).
#[derive(Debug, Clone)]
struct TxnMetadata {
    producer_id: i64,
    /// The producer id before the last rotation (epoch exhaustion), so the retry of the
    /// InitProducerId that rotated it is recognised (KIP-360); -1 if none.
    last_producer_id: i64,
    producer_epoch: i16,
    /// The epoch before the last InitProducerId bump, for the same retries; -1 if none.
    last_producer_epoch: i16,
    timeout_ms: i32,
    state: TxnState,
    partitions: BTreeSet<(String, i32)>,
    start_ms: i64,
    last_update_ms: i64,
    /// The token of the persist or producer id fetch in flight for this id (Kafka's
    /// `pendingState`): other requests get CONCURRENT_TRANSACTIONS until it ends.
    pending: Option<u64>,
    /// The markers of a PrepareCommit/PrepareAbort being written. Absent while the partition
    /// loads: [`TxnCoordinator::finish_load`] starts them.
    markers: Option<Markers>,
}

impl TxnMetadata {
    fn from_value(value: TxnValue, last_producer_id: i64, last_producer_epoch: i16) -> TxnMetadata {
        TxnMetadata {
            producer_id: value.producer_id,
            last_producer_id,
            producer_epoch: value.producer_epoch,
            last_producer_epoch,
            timeout_ms: value.timeout_ms,
            state: value.state,
            partitions: value.partitions.into_iter().collect(),
            start_ms: value.start_ms,
            last_update_ms: value.last_update_ms,
            pending: None,
            markers: None,
        }
    }

    /// The current state as a transition to start from; callers change what moves.
    fn transit(&self, now_ms: i64) -> Transit {
        Transit {
            value: TxnValue {
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                timeout_ms: self.timeout_ms,
                state: self.state,
                partitions: self.partitions.iter().cloned().collect(),
                last_update_ms: now_ms,
                start_ms: self.start_ms,
            },
            last_producer_id: self.last_producer_id,
            last_producer_epoch: self.last_producer_epoch,
        }
    }
}

/// Kafka's `TxnTransitMetadata`: the state an id moves to once its record is durable. The
/// last producer id and epoch are not in the v0 record, so they travel beside it.
#[derive(Debug, Clone)]
struct Transit {
    value: TxnValue,
    last_producer_id: i64,
    last_producer_epoch: i16,
}

#[derive(Debug, Clone)]
struct Markers {
    /// Partitions whose marker is not known to be written yet.
    remaining: BTreeSet<(String, i32)>,
    /// The WriteMarkers in flight; one at a time per transaction.
    in_flight: Option<u64>,
    /// When the partitions that failed are sent again, or (none remaining) when the failed
    /// CompleteCommit/CompleteAbort write is tried again.
    retry_at_ms: Option<i64>,
}

/// What an outstanding token stands for.
#[derive(Debug, Clone)]
enum Pending {
    ProducerId { transactional_id: String, request: RequestId, timeout_ms: i32, purpose: NewProducerId },
    /// `transit: None` is the tombstone of an expiring id.
    Persist { transactional_id: String, transit: Option<Transit>, then: AfterPersist },
    Markers { transactional_id: String },
}

impl Pending {
    fn transactional_id(&self) -> &str {
        match self {
            Pending::ProducerId { transactional_id, .. }
            | Pending::Persist { transactional_id, .. }
            | Pending::Markers { transactional_id } => transactional_id,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum NewProducerId {
    /// The id is unknown: it starts at epoch 0.
    Create,
    /// The epoch is exhausted: a new producer id replaces the old one (KIP-360).
    Rotate { record_last_epoch: bool },
}

#[derive(Debug, Clone)]
enum AfterPersist {
    /// Answer this request: with success once durable, NOT_COORDINATOR if the write failed.
    Reply(RequestId, Answer),
    /// The coordinator's own transition (an abort after a fence or a timeout, an expiry): a
    /// failed write is tried again at the next abort or expiry check.
    Nothing,
    /// CompleteCommit/CompleteAbort: a failed write is tried again after the backoff.
    Complete,
}

/// The shape of the answer a request waits for.
#[derive(Debug, Clone)]
enum Answer {
    InitProducerId(i64, i16),
    AddPartitions(Vec<(String, i32)>),
    AddOffsets,
    EndTxn,
}

impl Answer {
    fn response(self, error: Option<ErrorCode>) -> Response {
        match self {
            Answer::InitProducerId(producer_id, epoch) => {
                Response::InitProducerId(error.map_or(Ok((producer_id, epoch)), Err))
            }
            Answer::AddPartitions(partitions) => {
                Response::AddPartitions(partitions.into_iter().map(|p| (p, error)).collect())
            }
            Answer::AddOffsets => Response::AddOffsets(error),
            Answer::EndTxn => Response::EndTxn(error),
        }
    }
}

/// The answer to a write that failed. Kafka maps most append errors to NOT_COORDINATOR or
/// COORDINATOR_NOT_AVAILABLE; the driver reports only success or failure, so every failure is
/// NOT_COORDINATOR: the client looks the coordinator up again and retries, which is right
/// whether leadership moved or the write merely lacked replicas.
const WRITE_FAILED: ErrorCode = ErrorCode::NotCoordinator;

/// The transaction coordinator of one core. It serves only the ids of the
/// `__transaction_state` partitions it was given ([`TxnCoordinator::begin_load`]); requests for
/// any other id get NOT_COORDINATOR, so clients look the coordinator up again.
///
/// Driver rules: drain [`TxnCoordinator::poll_action`] after every input; answer every
/// Persist, NewProducerId and WriteMarkers token exactly once (answers to tokens of a
/// partition unloaded since are ignored); call [`TxnCoordinator::handle_timeout`] at
/// [`TxnCoordinator::poll_timeout`].
pub struct TxnCoordinator {
    config: TxnConfig,
    actions: VecDeque<Action>,
    /// One counter for every kind of token, so an answer can never be taken for another's.
    next_token: u64,
    txns: BTreeMap<String, TxnMetadata>,
    /// Ids not known yet whose first producer id or first record is in flight.
    creating: BTreeMap<String, u64>,
    partitions: BTreeMap<i32, OwnedPartition>,
    tokens: BTreeMap<u64, Pending>,
    /// When timed-out transactions and expired ids are next looked for; set once a partition
    /// is loaded.
    abort_check_due_ms: Option<i64>,
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> TxnCoordinator {
        assert!(config.partitions > 0, "transaction.state.log.num.partitions must be positive: {config:?}");
        assert!(config.offsets_topic_partitions > 0, "offsets.topic.num.partitions must be positive: {config:?}");
        assert!(config.abort_check_interval_ms > 0, "the abort check interval must be positive: {config:?}");
        TxnCoordinator {
            config,
            actions: VecDeque::new(),
            next_token: 0,
            txns: BTreeMap::new(),
            creating: BTreeMap::new(),
            partitions: BTreeMap::new(),
            tokens: BTreeMap::new(),
            abort_check_due_ms: None,
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// Takes one request; its answer comes as [`Action::Reply`] with `id`.
    pub fn handle(&mut self, now_ms: i64, id: RequestId, call: Call) {
        match call {
            Call::InitProducerId { transactional_id, timeout_ms, producer_id, producer_epoch } => {
                self.init_producer_id(now_ms, id, transactional_id, timeout_ms, producer_id, producer_epoch);
            }
            Call::AddPartitions { transactional_id, producer_id, producer_epoch, partitions, verify_only } => {
                let answer = Answer::AddPartitions(partitions.clone());
                let txn = Txn { transactional_id: &transactional_id, producer_id, producer_epoch };
                self.add_partitions(now_ms, id, txn, partitions, answer, verify_only);
            }
            Call::AddOffsets { transactional_id, producer_id, producer_epoch, group_id } => {
                // The offsets are committed (TxnOffsetCommit) to the group's partition, which
                // then needs a marker like any other partition of the transaction.
                let partition = crate::group::partition_for(&group_id, self.config.offsets_topic_partitions);
                let partitions = vec![(crate::group::OFFSETS_TOPIC.to_owned(), partition)];
                let txn = Txn { transactional_id: &transactional_id, producer_id, producer_epoch };
                self.add_partitions(now_ms, id, txn, partitions, Answer::AddOffsets, false);
            }
            Call::EndTxn { transactional_id, producer_id, producer_epoch, commit } => {
                let txn = Txn { transactional_id: &transactional_id, producer_id, producer_epoch };
                self.end_txn(now_ms, id, txn, commit);
            }
            Call::Describe { transactional_ids } => self.describe(id, transactional_ids),
            Call::List { states, producer_ids } => self.list(id, &states, &producer_ids),
        }
        self.check_invariants();
    }

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Starts serving `partition`, whose replica leads at `coordinator_epoch`: forgets what it
    /// knew of its ids and answers COORDINATOR_LOAD_IN_PROGRESS until [`Self::finish_load`].
    pub fn begin_load(&mut self, partition: i32, coordinator_epoch: i32) {
        // Whatever an earlier term left (ids, writes and markers in flight) is stale: the log
        // about to be replayed is the truth.
        self.forget(partition);
        self.partitions.insert(partition, OwnedPartition { ownership: Ownership::Loading, coordinator_epoch });
        self.check_invariants();
    }

    /// Rebuilds state from one record, in log order, while its partition loads.
    pub fn load(&mut self, now_ms: i64, record: TxnRecord) {
        // A loaded record brings its own times: an Ongoing transaction's timeout counts from its
        // start, so one whose producer died long ago is aborted at the next check.
        let _ = now_ms;
        let partition = self.partition_of(&record.transactional_id);
        if self.partitions.get(&partition).map(|p| p.ownership) != Some(Ownership::Loading) {
            return;
        }
        match record.value {
            // Kafka never writes Dead (an expired id gets a tombstone); read one as a tombstone.
            Some(value) if value.state != TxnState::Dead => {
                // The v0 record keeps no last producer id or epoch: a KIP-360 retry that spans a
                // coordinator change is fenced, a limit Kafka accepts for its old records too.
                self.txns.insert(record.transactional_id, TxnMetadata::from_value(value, -1, -1));
            }
            _ => {
                self.txns.remove(&record.transactional_id);
            }
        }
        self.check_invariants();
    }

    /// The partition is loaded: transactions found in PrepareCommit/PrepareAbort get their
    /// markers sent (again), then complete.
    pub fn finish_load(&mut self, now_ms: i64, partition: i32) {
        let Some(owned) = self.partitions.get_mut(&partition) else { return };
        if owned.ownership != Ownership::Loading {
            return;
        }
        owned.ownership = Ownership::Loaded;
        self.abort_check_due_ms.get_or_insert(now_ms + self.config.abort_check_interval_ms);
        let prepared: Vec<String> = self
            .txns
            .iter()
            .filter(|(id, m)| {
                self.partition_of(id) == partition
                    && matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in prepared {
            let m = self.txns.get_mut(&id).expect("listed");
            if m.state == TxnState::PrepareEpochFence {
                // Kafka never persists this state (a fence goes straight on to PrepareAbort);
                // should one be found, the fence meant to abort.
                tracing::warn!(transactional_id = %id, "PrepareEpochFence loaded; aborting the transaction");
                m.state = TxnState::PrepareAbort;
            }
            self.start_markers(now_ms, &id);
        }
        self.check_invariants();
    }

    /// Stops serving `partition`: its ids are forgotten; requests waiting on them are
    /// answered NOT_COORDINATOR; answers to their persists and markers are ignored.
    pub fn unload(&mut self, partition: i32) {
        self.forget(partition);
        self.check_invariants();
    }

    pub fn owned_partitions(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }

    /// The record of `token` is durable (`ok`) or could not be written.
    pub fn handle_persisted(&mut self, now_ms: i64, token: u64, ok: bool) {
        let (id, transit, then) = match self.tokens.remove(&token) {
            Some(Pending::Persist { transactional_id, transit, then }) => (transactional_id, transit, then),
            Some(other) => {
                tracing::warn!(token, ?other, "persist answer for a token that is no persist; ignored");
                self.tokens.insert(token, other);
                return;
            }
            None => return,
        };
        match self.txns.get_mut(&id) {
            Some(m) => {
                assert_eq!(m.pending, Some(token), "{id}: persist {token} answered while another is pending");
                m.pending = None;
            }
            None => {
                assert_eq!(self.creating.remove(&id), Some(token), "{id}: persist {token} of an unknown id");
            }
        }
        if ok {
            let prepared = match transit {
                None => {
                    self.txns.remove(&id);
                    false
                }
                Some(transit) => {
                    let m = TxnMetadata::from_value(transit.value, transit.last_producer_id, transit.last_producer_epoch);
                    let prepared = matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort);
                    self.txns.insert(id.clone(), m);
                    prepared
                }
            };
            // A decision is answered once durable, before its markers go out, as in Kafka: a
            // coordinator taking over finds it in the log and sends them itself.
            if let AfterPersist::Reply(request, answer) = then {
                self.reply(request, answer.response(None));
            }
            if prepared {
                self.start_markers(now_ms, &id);
            }
        } else {
            match then {
                AfterPersist::Reply(request, answer) => self.reply(request, answer.response(Some(WRITE_FAILED))),
                AfterPersist::Nothing => {}
                AfterPersist::Complete => {
                    let backoff_ms = self.config.marker_retry_backoff_ms;
                    let markers = self.txns.get_mut(&id).and_then(|m| m.markers.as_mut()).expect("completing");
                    markers.retry_at_ms = Some(now_ms + backoff_ms);
                }
            }
        }
        self.check_invariants();
    }

    pub fn handle_producer_id(&mut self, now_ms: i64, token: u64, result: Result<i64, ErrorCode>) {
        let (id, request, timeout_ms, purpose) = match self.tokens.remove(&token) {
            Some(Pending::ProducerId { transactional_id, request, timeout_ms, purpose }) => {
                (transactional_id, request, timeout_ms, purpose)
            }
            Some(other) => {
                tracing::warn!(token, ?other, "producer id answer for a token that is no fetch; ignored");
                self.tokens.insert(token, other);
                return;
            }
            None => return,
        };
        let producer_id = match result {
            Ok(producer_id) => producer_id,
            Err(error) => {
                match purpose {
                    NewProducerId::Create => {
                        self.creating.remove(&id);
                    }
                    NewProducerId::Rotate { .. } => {
                        self.txns.get_mut(&id).expect("rotating").pending = None;
                    }
                }
                self.reply(request, Response::InitProducerId(Err(error)));
                self.check_invariants();
                return;
            }
        };
        let fresh = |last_producer_id, last_producer_epoch| Transit {
            value: TxnValue {
                producer_id,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: Vec::new(),
                last_update_ms: now_ms,
                start_ms: -1,
            },
            last_producer_id,
            last_producer_epoch,
        };
        let transit = match purpose {
            NewProducerId::Create => {
                self.creating.remove(&id);
                fresh(-1, -1)
            }
            NewProducerId::Rotate { record_last_epoch } => {
                let m = self.txns.get_mut(&id).expect("rotating");
                m.pending = None;
                fresh(m.producer_id, if record_last_epoch { m.producer_epoch } else { -1 })
            }
        };
        let answer = Answer::InitProducerId(producer_id, 0);
        self.persist(&id, Some(transit), AfterPersist::Reply(request, answer));
        self.check_invariants();
    }

    pub fn handle_markers_written(&mut self, now_ms: i64, token: u64, results: Vec<((String, i32), Option<ErrorCode>)>) {
        let id = match self.tokens.remove(&token) {
            Some(Pending::Markers { transactional_id }) => transactional_id,
            Some(other) => {
                tracing::warn!(token, ?other, "marker answer for a token that is no marker write; ignored");
                self.tokens.insert(token, other);
                return;
            }
            None => return,
        };
        let m = self.txns.get_mut(&id).expect("markers of a known id");
        let markers = m.markers.as_mut().expect("markers in flight");
        assert_eq!(markers.in_flight, Some(token), "{id}: markers {token} answered while not in flight");
        markers.in_flight = None;
        for (partition, error) in results {
            if !markers.remaining.contains(&partition) {
                continue;
            }
            match error {
                None => {
                    markers.remaining.remove(&partition);
                }
                Some(ErrorCode::UnknownTopicOrPartition) => {
                    // The topic was deleted: no one will ever read the transaction there.
                    tracing::warn!(transactional_id = %id, ?partition, "marker partition is gone; dropped");
                    markers.remaining.remove(&partition);
                }
                Some(
                    error @ (ErrorCode::InvalidProducerEpoch
                    | ErrorCode::ProducerFenced
                    | ErrorCode::TransactionCoordinatorFenced),
                ) => {
                    // A newer producer epoch or coordinator owns the partition's transaction
                    // state; resending cannot succeed. Kafka stops sending the whole
                    // transaction's markers and leaves it prepared; completing it instead frees
                    // the id here, and a coordinator that lost the partition fails the write.
                    tracing::warn!(transactional_id = %id, ?partition, ?error, "marker refused for good; dropped");
                    markers.remaining.remove(&partition);
                }
                // NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT and the like:
                // the partition's leader may move or recover; try again.
                Some(_) => {}
            }
        }
        if markers.remaining.is_empty() {
            self.persist_complete(now_ms, &id);
        } else {
            markers.retry_at_ms = Some(now_ms + self.config.marker_retry_backoff_ms);
        }
        self.check_invariants();
    }

    /// When [`Self::handle_timeout`] is next due, while anything is owned.
    pub fn poll_timeout(&self) -> Option<i64> {
        if self.partitions.is_empty() {
            return None;
        }
        let retry = self.txns.values().filter_map(|m| m.markers.as_ref()?.retry_at_ms).min();
        [self.abort_check_due_ms, retry].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now_ms: i64) {
        if self.partitions.is_empty() {
            return;
        }
        let retries: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, m)| m.markers.as_ref().and_then(|k| k.retry_at_ms).is_some_and(|at| at <= now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for id in retries {
            let markers = self.txns.get_mut(&id).and_then(|m| m.markers.as_mut()).expect("listed");
            markers.retry_at_ms = None;
            self.send_markers(now_ms, &id);
        }
        if self.abort_check_due_ms.is_some_and(|at| at <= now_ms) {
            self.abort_timed_out(now_ms);
            self.expire_ids(now_ms);
            self.abort_check_due_ms = Some(now_ms + self.config.abort_check_interval_ms);
        }
        self.check_invariants();
    }

    // ---- requests ----

    fn init_producer_id(
        &mut self,
        now_ms: i64,
        request: RequestId,
        transactional_id: String,
        timeout_ms: i32,
        producer_id: i64,
        producer_epoch: i16,
    ) {
        let fail = |error| Response::InitProducerId(Err(error));
        if transactional_id.is_empty() {
            return self.reply(request, fail(ErrorCode::InvalidRequest));
        }
        // KafkaApis: a producer id without an epoch, or the reverse, is malformed.
        let expected = match (producer_id, producer_epoch) {
            (-1, -1) => None,
            (-1, _) | (_, -1) => return self.reply(request, fail(ErrorCode::InvalidRequest)),
            given => Some(given),
        };
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return self.reply(request, fail(ErrorCode::InvalidTransactionTimeout));
        }
        if let Some(error) = self.not_serving(&transactional_id) {
            return self.reply(request, fail(error));
        }
        if self.creating.contains_key(&transactional_id) {
            return self.reply(request, fail(ErrorCode::ConcurrentTransactions));
        }
        let Some(m) = self.txns.get(&transactional_id) else {
            // A new id: whatever producer id the client resumes from (KIP-360, after the id
            // expired) is replaced by a fresh one, as Kafka's brand new metadata accepts any.
            let token = self.new_token();
            self.creating.insert(transactional_id.clone(), token);
            self.tokens.insert(token, Pending::ProducerId {
                transactional_id,
                request,
                timeout_ms,
                purpose: NewProducerId::Create,
            });
            self.actions.push_back(Action::NewProducerId { token });
            return;
        };
        if m.pending.is_some() {
            return self.reply(request, fail(ErrorCode::ConcurrentTransactions));
        }
        // Kafka's `isValidProducerId`: the current producer id, or the one a rotation replaced
        // when the client's epoch was the exhausted one (a retry of that rotation).
        let valid = |(pid, epoch): (i64, i16)| {
            m.producer_epoch < 0 || pid == m.producer_id || (pid == m.last_producer_id && epoch_exhausted(epoch))
        };
        if !expected.is_none_or(valid) {
            return self.reply(request, fail(ErrorCode::ProducerFenced));
        }
        match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence | TxnState::Dead => {
                self.reply(request, fail(ErrorCode::ConcurrentTransactions));
            }
            TxnState::Ongoing => {
                // Fence the running producer and abort its transaction; the client retries
                // and gets its epoch once the abort completes (a second bump, so an epoch the
                // fence exhausted rotates the producer id then).
                self.fence_and_abort(now_ms, &transactional_id);
                self.reply(request, fail(ErrorCode::ConcurrentTransactions));
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if epoch_exhausted(m.producer_epoch) && expected.is_none_or(|(_, epoch)| epoch == m.producer_epoch) {
                    let token = self.new_token();
                    self.txns.get_mut(&transactional_id).expect("known").pending = Some(token);
                    self.tokens.insert(token, Pending::ProducerId {
                        transactional_id,
                        request,
                        timeout_ms,
                        purpose: NewProducerId::Rotate { record_last_epoch: expected.is_some() },
                    });
                    self.actions.push_back(Action::NewProducerId { token });
                    return;
                }
                // Kafka's `prepareIncrementProducerEpoch`.
                let (epoch, last_epoch) = match expected {
                    None => (m.producer_epoch + 1, -1),
                    Some((_, given)) if m.producer_epoch < 0 || given == m.producer_epoch => {
                        (m.producer_epoch + 1, m.producer_epoch)
                    }
                    // The answer to an InitProducerId that bumped the epoch was lost: the same
                    // epoch again, without another bump.
                    Some((_, given)) if given == m.last_producer_epoch => (m.producer_epoch, m.last_producer_epoch),
                    Some(_) => return self.reply(request, fail(ErrorCode::ProducerFenced)),
                };
                let mut transit = m.transit(now_ms);
                transit.value.producer_epoch = epoch;
                transit.value.timeout_ms = timeout_ms;
                transit.value.state = TxnState::Empty;
                transit.value.partitions.clear();
                transit.value.start_ms = -1;
                transit.last_producer_epoch = last_epoch;
                let answer = Answer::InitProducerId(m.producer_id, epoch);
                self.persist(&transactional_id, Some(transit), AfterPersist::Reply(request, answer));
            }
        }
    }

    fn add_partitions(
        &mut self,
        now_ms: i64,
        request: RequestId,
        txn: Txn,
        partitions: Vec<(String, i32)>,
        answer: Answer,
        verify_only: bool,
    ) {
        if let Err(error) = self.check_producer(txn) {
            return self.reply(request, answer.response(Some(error)));
        }
        let m = self.txns.get(txn.transactional_id).expect("checked");
        if m.pending.is_some()
            || matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence)
        {
            return self.reply(request, answer.response(Some(ErrorCode::ConcurrentTransactions)));
        }
        if verify_only {
            // KIP-890: a partition leader asks before it appends a transactional batch.
            let results = partitions
                .into_iter()
                .map(|p| {
                    let error = (m.state != TxnState::Ongoing || !m.partitions.contains(&p))
                        .then_some(ErrorCode::InvalidTxnState);
                    (p, error)
                })
                .collect();
            return self.reply(request, Response::AddPartitions(results));
        }
        if m.state == TxnState::Ongoing && partitions.iter().all(|p| m.partitions.contains(p)) {
            return self.reply(request, answer.response(None));
        }
        let mut transit = m.transit(now_ms);
        if m.state != TxnState::Ongoing {
            transit.value.start_ms = now_ms;
        }
        transit.value.state = TxnState::Ongoing;
        let all: BTreeSet<(String, i32)> = m.partitions.iter().cloned().chain(partitions).collect();
        transit.value.partitions = all.into_iter().collect();
        let id = txn.transactional_id.to_owned();
        self.persist(&id, Some(transit), AfterPersist::Reply(request, answer));
    }

    fn end_txn(&mut self, now_ms: i64, request: RequestId, txn: Txn, commit: bool) {
        let fail = |error| Response::EndTxn(Some(error));
        if let Err(error) = self.check_producer(txn) {
            return self.reply(request, fail(error));
        }
        let m = self.txns.get(txn.transactional_id).expect("checked");
        if m.pending.is_some() {
            return self.reply(request, fail(ErrorCode::ConcurrentTransactions));
        }
        let result = match (m.state, commit) {
            (TxnState::Ongoing, _) => Ok(if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort }),
            // A retry of an EndTxn whose answer was lost.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Err(None),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(Some(ErrorCode::ConcurrentTransactions))
            }
            _ => Err(Some(ErrorCode::InvalidTxnState)),
        };
        match result {
            Err(error) => self.reply(request, Response::EndTxn(error)),
            Ok(state) => {
                let mut transit = m.transit(now_ms);
                transit.value.state = state;
                let id = txn.transactional_id.to_owned();
                self.persist(&id, Some(transit), AfterPersist::Reply(request, Answer::EndTxn));
            }
        }
    }

    /// The checks every request naming a producer passes first, in Kafka's order.
    fn check_producer(&self, txn: Txn) -> Result<(), ErrorCode> {
        if txn.transactional_id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        if let Some(error) = self.not_serving(txn.transactional_id) {
            return Err(error);
        }
        let Some(m) = self.txns.get(txn.transactional_id) else {
            return Err(ErrorCode::InvalidProducerIdMapping);
        };
        if m.producer_id != txn.producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if m.producer_epoch != txn.producer_epoch {
            // Also the producer whose transaction the coordinator aborted on timeout: the
            // abort bumped the epoch.
            return Err(ErrorCode::ProducerFenced);
        }
        Ok(())
    }

    fn describe(&mut self, request: RequestId, transactional_ids: Vec<String>) {
        let described = transactional_ids
            .into_iter()
            .map(|transactional_id| {
                let error = self.not_serving(&transactional_id);
                match self.txns.get(&transactional_id) {
                    Some(m) if error.is_none() => DescribedTxn {
                        transactional_id,
                        error: None,
                        state: m.state,
                        producer_id: m.producer_id,
                        producer_epoch: m.producer_epoch,
                        timeout_ms: m.timeout_ms,
                        start_ms: m.start_ms,
                        partitions: m.partitions.iter().cloned().collect(),
                    },
                    _ => DescribedTxn {
                        transactional_id,
                        error: Some(error.unwrap_or(ErrorCode::TransactionalIdNotFound)),
                        state: TxnState::Dead,
                        producer_id: -1,
                        producer_epoch: -1,
                        timeout_ms: 0,
                        start_ms: -1,
                        partitions: Vec::new(),
                    },
                }
            })
            .collect();
        self.reply(request, Response::Describe(described));
    }

    fn list(&mut self, request: RequestId, states: &[String], producer_ids: &[i64]) {
        let listed = self
            .txns
            .iter()
            .filter(|(id, m)| {
                self.not_serving(id).is_none()
                    && (states.is_empty() || states.iter().any(|s| s == m.state.name()))
                    && (producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            })
            .map(|(id, m)| ListedTxn { transactional_id: id.clone(), producer_id: m.producer_id, state: m.state })
            .collect();
        self.reply(request, Response::List(listed));
    }

    // ---- the coordinator's own transitions ----

    /// Kafka's `prepareFenceProducerEpoch` then an abort: the epoch is bumped so the running
    /// producer is fenced on every partition the abort marker reaches.
    fn fence_and_abort(&mut self, now_ms: i64, transactional_id: &str) {
        let m = self.txns.get(transactional_id).expect("known");
        let mut transit = m.transit(now_ms);
        // Epochs stop at i16::MAX - 1 for clients, so one is always left for a fence; should
        // it not be, Kafka's rule is to keep the epoch rather than overflow.
        transit.value.producer_epoch = m.producer_epoch.checked_add(1).unwrap_or(m.producer_epoch);
        transit.value.state = TxnState::PrepareAbort;
        // As Kafka: the fenced epoch must not pass for the retry of an InitProducerId.
        transit.last_producer_epoch = -1;
        self.persist(transactional_id, Some(transit), AfterPersist::Nothing);
    }

    /// Kafka's `abortTimedOutTransactions`.
    fn abort_timed_out(&mut self, now_ms: i64) {
        let timed_out: Vec<String> = self
            .txns
            .iter()
            .filter(|(id, m)| {
                self.not_serving(id).is_none()
                    && m.state == TxnState::Ongoing
                    && m.pending.is_none()
                    && now_ms > m.start_ms + i64::from(m.timeout_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in timed_out {
            tracing::info!(transactional_id = %id, "aborting a transaction past its timeout");
            self.fence_and_abort(now_ms, &id);
        }
    }

    /// Kafka's `removeExpiredTransactionalIds`: ids idle for `transactional.id.expiration.ms`
    /// with no transaction under way are tombstoned and forgotten.
    fn expire_ids(&mut self, now_ms: i64) {
        let expired: Vec<String> = self
            .txns
            .iter()
            .filter(|(id, m)| {
                self.not_serving(id).is_none()
                    && matches!(m.state, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort)
                    && m.pending.is_none()
                    && now_ms - m.last_update_ms >= self.config.id_expiration_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.persist(&id, None, AfterPersist::Nothing);
        }
    }

    // ---- markers ----

    fn start_markers(&mut self, now_ms: i64, transactional_id: &str) {
        let m = self.txns.get_mut(transactional_id).expect("known");
        m.markers = Some(Markers { remaining: m.partitions.clone(), in_flight: None, retry_at_ms: None });
        self.send_markers(now_ms, transactional_id);
    }

    /// Sends the markers not yet written, or completes the transaction once none is left.
    fn send_markers(&mut self, now_ms: i64, transactional_id: &str) {
        let m = self.txns.get(transactional_id).expect("known");
        if m.markers.as_ref().expect("markers started").remaining.is_empty() {
            return self.persist_complete(now_ms, transactional_id);
        }
        let token = self.new_token();
        let coordinator_epoch = self.partitions[&self.partition_of(transactional_id)].coordinator_epoch;
        let m = self.txns.get_mut(transactional_id).expect("known");
        let markers = m.markers.as_mut().expect("markers started");
        markers.in_flight = Some(token);
        self.actions.push_back(Action::WriteMarkers {
            token,
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            coordinator_epoch,
            commit: m.state == TxnState::PrepareCommit,
            partitions: markers.remaining.iter().cloned().collect(),
        });
        self.tokens.insert(token, Pending::Markers { transactional_id: transactional_id.to_owned() });
    }

    fn persist_complete(&mut self, now_ms: i64, transactional_id: &str) {
        let m = self.txns.get(transactional_id).expect("known");
        let mut transit = m.transit(now_ms);
        transit.value.state = match m.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            other => panic!("{transactional_id}: completing a transaction in {other:?}"),
        };
        transit.value.partitions.clear();
        // Kafka keeps the start time in a Complete record; none is under way any more.
        transit.value.start_ms = -1;
        self.persist(transactional_id, Some(transit), AfterPersist::Complete);
    }

    // ---- plumbing ----

    fn partition_of(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.config.partitions)
    }

    /// Why this coordinator cannot serve `transactional_id` now, if it cannot.
    fn not_serving(&self, transactional_id: &str) -> Option<ErrorCode> {
        match self.partitions.get(&self.partition_of(transactional_id)).map(|p| p.ownership) {
            None => Some(ErrorCode::NotCoordinator),
            Some(Ownership::Loading) => Some(ErrorCode::CoordinatorLoadInProgress),
            Some(Ownership::Loaded) => None,
        }
    }

    /// Drops `partition` and everything known of its ids; requests waiting on them get
    /// NOT_COORDINATOR so their clients find the new coordinator.
    fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
        let tokens: Vec<u64> = self
            .tokens
            .iter()
            .filter(|(_, p)| self.partition_of(p.transactional_id()) == partition)
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            match self.tokens.remove(&token).expect("listed") {
                Pending::ProducerId { request, .. } => {
                    self.reply(request, Response::InitProducerId(Err(ErrorCode::NotCoordinator)));
                }
                Pending::Persist { then: AfterPersist::Reply(request, answer), .. } => {
                    self.reply(request, answer.response(Some(ErrorCode::NotCoordinator)));
                }
                Pending::Persist { .. } | Pending::Markers { .. } => {}
            }
        }
        let partitions = self.config.partitions;
        self.txns.retain(|id, _| partition_for(id, partitions) != partition);
        self.creating.retain(|id, _| partition_for(id, partitions) != partition);
        if self.partitions.is_empty() {
            self.abort_check_due_ms = None;
        }
    }

    fn reply(&mut self, request: RequestId, response: Response) {
        self.actions.push_back(Action::Reply(request, response));
    }

    fn new_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// Asks for `transit` (None: a tombstone) to be written; the id is pending until it is.
    fn persist(&mut self, transactional_id: &str, transit: Option<Transit>, then: AfterPersist) {
        let token = self.new_token();
        let record =
            TxnRecord { transactional_id: transactional_id.to_owned(), value: transit.as_ref().map(|t| t.value.clone()) };
        let partition = self.partition_of(transactional_id);
        self.actions.push_back(Action::Persist { token, partition, records: vec![record] });
        match self.txns.get_mut(transactional_id) {
            Some(m) => {
                assert!(m.pending.is_none(), "{transactional_id}: a second write while {:?} is pending", m.pending);
                m.pending = Some(token);
            }
            None => {
                self.creating.insert(transactional_id.to_owned(), token);
            }
        }
        self.tokens.insert(token, Pending::Persist { transactional_id: transactional_id.to_owned(), transit, then });
    }

    /// Properties that hold after every input. Only where [`crate::INVARIANTS`] is on: each
    /// check walks every id.
    fn check_invariants(&self) {
        if !crate::INVARIANTS {
            return;
        }
        for (id, m) in &self.txns {
            let owned = self.partitions.get(&self.partition_of(id));
            assert!(owned.is_some(), "{id} kept after its partition was unloaded");
            assert!(!self.creating.contains_key(id), "{id} known and being created");
            let loaded = owned.is_some_and(|p| p.ownership == Ownership::Loaded);
            match m.state {
                TxnState::Ongoing => assert!(m.start_ms >= 0, "{id}: Ongoing without a start: {m:?}"),
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                    assert!(m.partitions.is_empty(), "{id}: {:?} with partitions: {m:?}", m.state);
                }
                TxnState::PrepareCommit | TxnState::PrepareAbort => {}
                TxnState::Dead | TxnState::PrepareEpochFence => {
                    assert!(!loaded, "{id}: {:?} in a loaded partition", m.state);
                }
            }
            let prepared = matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort);
            assert_eq!(m.markers.is_some(), loaded && prepared, "{id}: markers out of step with {:?}: {m:?}", m.state);
            if let Some(markers) = &m.markers {
                assert!(markers.remaining.is_subset(&m.partitions), "{id}: markers for partitions not in {m:?}");
                assert!(
                    markers.in_flight.is_none() || markers.retry_at_ms.is_none(),
                    "{id}: markers in flight and waiting to retry: {m:?}"
                );
                if let Some(token) = markers.in_flight {
                    assert!(
                        matches!(&self.tokens.get(&token), Some(Pending::Markers { transactional_id }) if transactional_id == id),
                        "{id}: markers {token} not outstanding"
                    );
                    assert!(m.pending.is_none(), "{id}: markers in flight while {:?} pending", m.pending);
                }
            }
            if let Some(token) = m.pending {
                assert!(
                    self.tokens.get(&token).is_some_and(|p| p.transactional_id() == id),
                    "{id}: pending {token} not outstanding"
                );
            }
        }
        for (id, token) in &self.creating {
            assert!(self.partitions.contains_key(&self.partition_of(id)), "{id} being created after its unload");
            assert!(
                self.tokens.get(token).is_some_and(|p| p.transactional_id() == id),
                "{id}: creation {token} not outstanding"
            );
        }
        for (token, pending) in &self.tokens {
            let id = pending.transactional_id();
            assert!(*token < self.next_token, "token {token} never handed out");
            let owner = match self.txns.get(id) {
                Some(m) => m.pending == Some(*token) || m.markers.as_ref().is_some_and(|k| k.in_flight == Some(*token)),
                None => self.creating.get(id) == Some(token),
            };
            assert!(owner, "token {token} ({pending:?}) belongs to no id");
        }
    }
}

/// The producer a request names.
#[derive(Debug, Clone, Copy)]
struct Txn<'a> {
    transactional_id: &'a str,
    producer_id: i64,
    producer_epoch: i16,
}

/// Kafka's `TransactionMetadata.isEpochExhausted`: clients never get the last epoch, so the
/// coordinator always has one to fence them with.
fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

// ---- record encoding for __transaction_state (Kafka's v0 key and value) ----

const RECORD_VERSION: i16 = 0;

fn len_i32(len: usize) -> i32 {
    i32::try_from(len).expect("count fits an i32")
}

fn put_str(buf: &mut BytesMut, s: &str) {
    // Transactional ids and topic names come off the wire as i16-length strings.
    let len = i16::try_from(s.len()).unwrap_or_else(|_| panic!("string of {} bytes does not fit a record", s.len()));
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
}

fn need(buf: &Bytes, n: usize) -> Result<(), String> {
    if buf.remaining() < n { Err(format!("record ends early: need {n} bytes, have {}", buf.remaining())) } else { Ok(()) }
}

fn get_i8(buf: &mut Bytes) -> Result<i8, String> {
    need(buf, 1)?;
    Ok(buf.get_i8())
}

fn get_i16(buf: &mut Bytes) -> Result<i16, String> {
    need(buf, 2)?;
    Ok(buf.get_i16())
}

fn get_i32(buf: &mut Bytes) -> Result<i32, String> {
    need(buf, 4)?;
    Ok(buf.get_i32())
}

fn get_i64(buf: &mut Bytes) -> Result<i64, String> {
    need(buf, 8)?;
    Ok(buf.get_i64())
}

fn get_str(buf: &mut Bytes) -> Result<String, String> {
    let len = get_i16(buf)?;
    let len = usize::try_from(len).map_err(|_| format!("negative string length {len}"))?;
    need(buf, len)?;
    String::from_utf8(buf.split_to(len).to_vec()).map_err(|e| format!("string is not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COORDINATOR_EPOCH: i32 = 7;
    const TIMEOUT_MS: i32 = 10_000;
    const BACKOFF_MS: i64 = 100;
    const CHECK_MS: i64 = 1_000;
    const EXPIRY_MS: i64 = 1_000_000;

    fn config() -> TxnConfig {
        TxnConfig {
            partitions: 4,
            offsets_topic_partitions: 5,
            max_timeout_ms: 60_000,
            id_expiration_ms: EXPIRY_MS,
            abort_check_interval_ms: CHECK_MS,
            marker_retry_backoff_ms: BACKOFF_MS,
        }
    }

    fn tp(topic: &str, partition: i32) -> (String, i32) {
        (topic.to_owned(), partition)
    }

    /// `n` transactional ids that hash to `partition`.
    fn ids_in(partition: i32, n: usize) -> Vec<String> {
        (0..).map(|i| format!("id-{i}")).filter(|id| partition_for(id, config().partitions) == partition).take(n).collect()
    }

    fn init_call(id: &str, producer_id: i64, producer_epoch: i16) -> Call {
        Call::InitProducerId { transactional_id: id.into(), timeout_ms: TIMEOUT_MS, producer_id, producer_epoch }
    }

    fn add_call(id: &str, (pid, epoch): (i64, i16), partitions: &[(String, i32)]) -> Call {
        Call::AddPartitions {
            transactional_id: id.into(),
            producer_id: pid,
            producer_epoch: epoch,
            partitions: partitions.to_vec(),
            verify_only: false,
        }
    }

    fn verify_call(id: &str, (pid, epoch): (i64, i16), partitions: &[(String, i32)]) -> Call {
        Call::AddPartitions {
            transactional_id: id.into(),
            producer_id: pid,
            producer_epoch: epoch,
            partitions: partitions.to_vec(),
            verify_only: true,
        }
    }

    fn end_call(id: &str, (pid, epoch): (i64, i16), commit: bool) -> Call {
        Call::EndTxn { transactional_id: id.into(), producer_id: pid, producer_epoch: epoch, commit }
    }

    /// A driver in memory: it answers every NewProducerId with a fresh id, writes every
    /// record (keeping them as the `__transaction_state` log a failover replays) and every
    /// marker, unless a test takes the actions itself with [`Harness::actions`].
    struct Harness {
        c: TxnCoordinator,
        now: i64,
        next_request: RequestId,
        next_producer_id: i64,
        log: Vec<TxnRecord>,
        markers: Vec<Action>,
        replies: BTreeMap<RequestId, Response>,
    }

    impl Harness {
        /// A coordinator serving every partition, as a single node's does.
        fn new() -> Harness {
            let mut c = TxnCoordinator::new(config());
            for p in 0..config().partitions {
                c.begin_load(p, COORDINATOR_EPOCH);
                c.finish_load(0, p);
            }
            Harness::with(c)
        }

        fn with(c: TxnCoordinator) -> Harness {
            Harness {
                c,
                now: 0,
                next_request: 1,
                next_producer_id: 1000,
                log: Vec::new(),
                markers: Vec::new(),
                replies: BTreeMap::new(),
            }
        }

        /// Hands the call in and leaves its actions queued.
        fn send(&mut self, call: Call) -> RequestId {
            let id = self.next_request;
            self.next_request += 1;
            self.c.handle(self.now, id, call);
            id
        }

        /// Hands the call in, lets the driver do everything, and returns the answer.
        fn call(&mut self, call: Call) -> Response {
            let id = self.send(call);
            self.settle();
            self.replies.remove(&id).unwrap_or_else(|| panic!("request {id} unanswered"))
        }

        /// Every action queued, untouched (replies kept aside as well).
        fn actions(&mut self) -> Vec<Action> {
            let actions: Vec<Action> = std::iter::from_fn(|| self.c.poll_action()).collect();
            for action in &actions {
                if let Action::Reply(id, response) = action {
                    self.replies.insert(*id, response.clone());
                }
                if let Action::Persist { records, .. } = action {
                    self.log.extend(records.iter().cloned());
                }
            }
            actions
        }

        /// The actions that are not replies.
        fn work(&mut self) -> Vec<Action> {
            self.actions().into_iter().filter(|a| !matches!(a, Action::Reply(..))).collect()
        }

        fn take_reply(&mut self, id: RequestId) -> Response {
            self.replies.remove(&id).unwrap_or_else(|| panic!("request {id} unanswered"))
        }

        fn settle(&mut self) {
            for _ in 0..1000 {
                let actions = self.actions();
                if actions.is_empty() {
                    return;
                }
                for action in actions {
                    match action {
                        Action::Reply(..) => {}
                        Action::Persist { token, .. } => self.c.handle_persisted(self.now, token, true),
                        Action::NewProducerId { token } => {
                            let pid = self.next_producer_id;
                            self.next_producer_id += 1;
                            self.c.handle_producer_id(self.now, token, Ok(pid));
                        }
                        Action::WriteMarkers { token, ref partitions, .. } => {
                            let results = partitions.iter().map(|p| (p.clone(), None)).collect();
                            self.markers.push(action.clone());
                            self.c.handle_markers_written(self.now, token, results);
                        }
                    }
                }
            }
            panic!("the coordinator never settles");
        }

        fn init(&mut self, id: &str) -> (i64, i16) {
            match self.call(init_call(id, -1, -1)) {
                Response::InitProducerId(Ok(pe)) => pe,
                other => panic!("init {id}: {other:?}"),
            }
        }

        fn init_with(&mut self, id: &str, (pid, epoch): (i64, i16)) -> Result<(i64, i16), ErrorCode> {
            match self.call(init_call(id, pid, epoch)) {
                Response::InitProducerId(r) => r,
                other => panic!("init {id}: {other:?}"),
            }
        }

        fn add(&mut self, id: &str, producer: (i64, i16), partitions: &[(String, i32)]) -> Vec<Option<ErrorCode>> {
            match self.call(add_call(id, producer, partitions)) {
                Response::AddPartitions(results) => {
                    let asked: Vec<(String, i32)> = results.iter().map(|(p, _)| p.clone()).collect();
                    assert_eq!(asked, partitions, "answered in request order");
                    results.into_iter().map(|(_, e)| e).collect()
                }
                other => panic!("add {id}: {other:?}"),
            }
        }

        fn end(&mut self, id: &str, producer: (i64, i16), commit: bool) -> Option<ErrorCode> {
            match self.call(end_call(id, producer, commit)) {
                Response::EndTxn(e) => e,
                other => panic!("end {id}: {other:?}"),
            }
        }

        fn describe(&mut self, id: &str) -> DescribedTxn {
            match self.call(Call::Describe { transactional_ids: vec![id.into()] }) {
                Response::Describe(mut d) => d.remove(0),
                other => panic!("describe {id}: {other:?}"),
            }
        }

        fn state(&mut self, id: &str) -> TxnState {
            let d = self.describe(id);
            assert_eq!(d.error, None, "{id}: {d:?}");
            d.state
        }

        /// Runs the timers up to `until`, letting the driver answer everything.
        fn run_until(&mut self, until: i64) {
            while let Some(due) = self.c.poll_timeout().filter(|due| *due <= until) {
                self.now = self.now.max(due);
                self.c.handle_timeout(self.now);
                self.settle();
            }
            self.now = until;
        }

        /// A coordinator elsewhere, loading every partition from this one's log.
        fn failover(&mut self, coordinator_epoch: i32) -> Harness {
            let mut c = TxnCoordinator::new(config());
            for p in 0..config().partitions {
                c.begin_load(p, coordinator_epoch);
            }
            for record in &self.log {
                let (key, value) = record.encode();
                c.load(self.now, TxnRecord::decode(key, value).expect("own record"));
            }
            for p in 0..config().partitions {
                c.finish_load(self.now, p);
            }
            let mut other = Harness::with(c);
            other.now = self.now;
            other.next_producer_id = self.next_producer_id + 1000;
            other
        }
    }

    fn value(v: &Action) -> &TxnValue {
        match v {
            Action::Persist { records, .. } if records.len() == 1 => records[0].value.as_ref().expect("a value"),
            other => panic!("expected one record persisted, got {other:?}"),
        }
    }

    fn token(a: &Action) -> u64 {
        match a {
            Action::Persist { token, .. } | Action::NewProducerId { token } | Action::WriteMarkers { token, .. } => *token,
            Action::Reply(..) => panic!("a reply has no token"),
        }
    }

    // ---- InitProducerId ----

    // An acknowledged producer id must survive a coordinator crash: the answer waits for the
    // record, or a restarted coordinator could hand the same id and epoch to a second producer.
    #[test]
    fn init_producer_id_is_answered_once_its_record_is_durable() {
        let mut h = Harness::new();
        h.now = 5;
        let r = h.send(init_call("tx", -1, -1));
        let work = h.work();
        let [Action::NewProducerId { token: fetch }] = work[..] else { panic!("{work:?}") };
        h.c.handle_producer_id(h.now, fetch, Ok(42));
        let work = h.work();
        assert!(h.replies.is_empty(), "no answer before the record is durable");
        assert!(
            matches!(&work[..], [Action::Persist { partition, records, .. }]
                if *partition == partition_for("tx", 4)
                && records[..] == [TxnRecord { transactional_id: "tx".into(), value: Some(TxnValue {
                    producer_id: 42, producer_epoch: 0, timeout_ms: TIMEOUT_MS, state: TxnState::Empty,
                    partitions: vec![], last_update_ms: 5, start_ms: -1 }) }]),
            "{work:?}"
        );
        h.c.handle_persisted(h.now, token(&work[0]), true);
        assert!(h.work().is_empty());
        assert_eq!(h.take_reply(r), Response::InitProducerId(Ok((42, 0))));
        assert_eq!(h.init("tx"), (42, 1), "a second producer instance bumps the epoch");
        let d = h.describe("tx");
        assert_eq!((d.state, d.producer_id, d.producer_epoch, d.timeout_ms, d.start_ms), (TxnState::Empty, 42, 1, TIMEOUT_MS, -1));
    }

    #[test]
    fn init_producer_id_refuses_bad_timeouts_and_half_given_producers() {
        let mut h = Harness::new();
        for timeout_ms in [0, -5, 60_001] {
            let call = Call::InitProducerId { transactional_id: "tx".into(), timeout_ms, producer_id: -1, producer_epoch: -1 };
            assert_eq!(h.call(call), Response::InitProducerId(Err(ErrorCode::InvalidTransactionTimeout)));
        }
        assert_eq!(h.init_with("tx", (5, -1)), Err(ErrorCode::InvalidRequest));
        assert_eq!(h.init_with("tx", (-1, 3)), Err(ErrorCode::InvalidRequest));
        assert_eq!(h.init_with("", (-1, -1)), Err(ErrorCode::InvalidRequest));
        assert!(h.log.is_empty(), "nothing written for refused requests");
        let call = Call::InitProducerId { transactional_id: "tx".into(), timeout_ms: 60_000, producer_id: -1, producer_epoch: -1 };
        assert_eq!(h.call(call), Response::InitProducerId(Ok((1000, 0))));
    }

    // KIP-360: a producer whose InitProducerId answer was lost retries with the epoch it had;
    // it must get the epoch that call produced, not bump again (which would fence itself).
    #[test]
    fn a_retried_init_gets_the_epoch_it_bumped_to_without_another_bump() {
        let mut h = Harness::new();
        let (pid, _) = h.init("tx");
        assert_eq!(h.init_with("tx", (pid, 0)), Ok((pid, 1)));
        assert_eq!(h.init_with("tx", (pid, 0)), Ok((pid, 1)), "the retry");
        assert_eq!(h.log.last().and_then(|r| r.value.as_ref()).map(|v| v.producer_epoch), Some(1));
        assert_eq!(h.init_with("tx", (pid, 1)), Ok((pid, 2)));
        assert_eq!(h.init_with("tx", (pid, 0)), Err(ErrorCode::ProducerFenced), "no longer the previous epoch");
        assert_eq!(h.init_with("tx", (pid, 7)), Err(ErrorCode::ProducerFenced));
        assert_eq!(h.init_with("tx", (pid + 1, 2)), Err(ErrorCode::ProducerFenced), "another producer id");
        // A fresh instance (no producer given) always gets the next epoch and forgets the last.
        assert_eq!(h.init("tx"), (pid, 3));
        assert_eq!(h.init_with("tx", (pid, 2)), Err(ErrorCode::ProducerFenced));
        // An id unknown here (expired) takes whatever the client resumes from.
        assert_eq!(h.init_with("other", (77, 4)), Ok((pid + 1, 0)));
    }

    // Clients never get epoch i16::MAX (it is kept for fencing): the id moves to a new producer
    // id at epoch 0, and the retry of that InitProducerId finds the new id.
    #[test]
    fn an_exhausted_epoch_rotates_the_producer_id() {
        let mut h = Harness::with(TxnCoordinator::new(config()));
        let p = partition_for("tx", 4);
        h.c.begin_load(p, COORDINATOR_EPOCH);
        h.c.load(0, TxnRecord {
            transactional_id: "tx".into(),
            value: Some(TxnValue {
                producer_id: 5,
                producer_epoch: i16::MAX - 2,
                timeout_ms: TIMEOUT_MS,
                state: TxnState::CompleteCommit,
                partitions: vec![],
                last_update_ms: 0,
                start_ms: -1,
            }),
        });
        h.c.finish_load(0, p);
        assert_eq!(h.init("tx"), (5, i16::MAX - 1));
        let r = h.send(init_call("tx", 5, i16::MAX - 1));
        let work = h.work();
        let [Action::NewProducerId { token: fetch }] = work[..] else { panic!("{work:?}") };
        assert_eq!(h.call(init_call("tx", 5, i16::MAX - 1)), Response::InitProducerId(Err(ErrorCode::ConcurrentTransactions)));
        h.c.handle_producer_id(h.now, fetch, Ok(9));
        h.settle();
        assert_eq!(h.take_reply(r), Response::InitProducerId(Ok((9, 0))));
        let r = h.send(init_call("tx", 5, i16::MAX - 1));
        let work = h.work();
        assert!(matches!(&work[..], [Action::Persist { .. }]), "the retry needs no new producer id: {work:?}");
        assert_eq!(value(&work[0]).producer_id, 9);
        h.c.handle_persisted(h.now, token(&work[0]), true);
        h.settle();
        assert_eq!(h.take_reply(r), Response::InitProducerId(Ok((9, 0))));
        assert_eq!(h.init_with("tx", (5, i16::MAX - 2)), Err(ErrorCode::ProducerFenced));
        assert_eq!(h.init_with("tx", (9, 0)), Ok((9, 1)));
    }

    #[test]
    fn a_failed_producer_id_fetch_is_answered_with_its_error() {
        let mut h = Harness::new();
        let r = h.send(init_call("tx", -1, -1));
        let work = h.work();
        let [Action::NewProducerId { token: fetch }] = work[..] else { panic!("{work:?}") };
        h.c.handle_producer_id(h.now, fetch, Err(ErrorCode::CoordinatorNotAvailable));
        assert!(h.work().is_empty());
        assert_eq!(h.take_reply(r), Response::InitProducerId(Err(ErrorCode::CoordinatorNotAvailable)));
        assert_eq!(h.describe("tx").error, Some(ErrorCode::TransactionalIdNotFound));
        h.c.handle_producer_id(h.now, fetch, Ok(5));
        assert!(h.work().is_empty(), "a second answer to the token is ignored");
        assert_eq!(h.init("tx"), (1000, 0));
    }

    // ---- the two phases ----

    #[test]
    fn a_commit_persists_the_decision_then_writes_markers_then_completes() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        h.now = 100;
        let partitions = [tp("b", 1), tp("a", 0), tp("a", 2)];
        assert_eq!(h.add("tx", producer, &partitions), vec![None; 3]);
        let d = h.describe("tx");
        assert_eq!((d.state, d.start_ms), (TxnState::Ongoing, 100));
        assert_eq!(d.partitions, vec![tp("a", 0), tp("a", 2), tp("b", 1)], "sorted");

        h.now = 200;
        let r = h.send(end_call("tx", producer, true));
        let work = h.work();
        assert_eq!(work.len(), 1, "{work:?}");
        let prepared = value(&work[0]).clone();
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        assert_eq!((prepared.producer_epoch, prepared.start_ms, prepared.last_update_ms), (producer.1, 100, 200));
        assert_eq!(prepared.partitions, vec![tp("a", 0), tp("a", 2), tp("b", 1)]);
        assert!(h.replies.is_empty(), "the decision is answered once durable");
        assert_eq!(h.state("tx"), TxnState::Ongoing, "nothing changes before the write ends");

        h.c.handle_persisted(h.now, token(&work[0]), true);
        let actions = h.actions();
        assert_eq!(actions[0], Action::Reply(r, Response::EndTxn(None)), "answered before the markers go out");
        let Action::WriteMarkers { token: marker_token, producer_id, producer_epoch, coordinator_epoch, commit, partitions } =
            actions[1].clone()
        else {
            panic!("{actions:?}")
        };
        assert_eq!((producer_id, producer_epoch, coordinator_epoch, commit), (producer.0, producer.1, COORDINATOR_EPOCH, true));
        assert_eq!(partitions, vec![tp("a", 0), tp("a", 2), tp("b", 1)]);
        assert_eq!(h.state("tx"), TxnState::PrepareCommit);
        assert_eq!(h.init_with("tx", producer), Err(ErrorCode::ConcurrentTransactions));
        assert_eq!(h.add("tx", producer, &[tp("c", 0)]), vec![Some(ErrorCode::ConcurrentTransactions)]);

        h.now = 300;
        h.c.handle_markers_written(h.now, marker_token, partitions.into_iter().map(|p| (p, None)).collect());
        let work = h.work();
        let complete = value(&work[0]).clone();
        assert_eq!(
            complete,
            TxnValue { state: TxnState::CompleteCommit, partitions: vec![], start_ms: -1, last_update_ms: 300, ..prepared }
        );
        assert_eq!(h.end("tx", producer, true), Some(ErrorCode::ConcurrentTransactions), "completion in flight");
        h.c.handle_persisted(h.now, token(&work[0]), true);
        assert!(h.work().is_empty());
        assert_eq!(h.state("tx"), TxnState::CompleteCommit);
        assert_eq!(h.end("tx", producer, true), None, "a retried EndTxn");
        assert_eq!(h.add("tx", producer, &[tp("a", 0)]), vec![None], "the next transaction");
        assert_eq!(h.describe("tx").start_ms, 300);
    }

    #[test]
    fn end_txn_answers_retries_and_refuses_wrong_states() {
        let mut h = Harness::new();
        assert_eq!(h.end("tx", (1, 0), true), Some(ErrorCode::InvalidProducerIdMapping), "unknown id");
        let producer = h.init("tx");
        assert_eq!(h.end("tx", producer, true), Some(ErrorCode::InvalidTxnState), "nothing to end");
        assert_eq!(h.end("tx", (producer.0 + 1, producer.1), true), Some(ErrorCode::InvalidProducerIdMapping));
        assert_eq!(h.end("tx", (producer.0, producer.1 + 1), true), Some(ErrorCode::ProducerFenced));

        for commit in [true, false] {
            h.add("tx", producer, &[tp("a", 0)]);
            let r = h.send(end_call("tx", producer, commit));
            let work = h.work();
            h.c.handle_persisted(h.now, token(&work[0]), true);
            let work = h.work();
            assert_eq!(h.take_reply(r), Response::EndTxn(None));
            assert!(matches!(work[..], [Action::WriteMarkers { commit: c, .. }] if c == commit), "{work:?}");
            // Markers still being written: the same decision again waits, the other is wrong.
            assert_eq!(h.end("tx", producer, commit), Some(ErrorCode::ConcurrentTransactions));
            assert_eq!(h.end("tx", producer, !commit), Some(ErrorCode::InvalidTxnState));
            h.c.handle_markers_written(h.now, token(&work[0]), vec![(tp("a", 0), None)]);
            h.settle();
            assert_eq!(h.end("tx", producer, commit), None, "a retry of the finished EndTxn");
            assert_eq!(h.end("tx", producer, !commit), Some(ErrorCode::InvalidTxnState));
        }
    }

    #[test]
    fn an_abort_without_partitions_completes_without_markers() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        assert_eq!(h.add("tx", producer, &[]), Vec::<Option<ErrorCode>>::new());
        assert_eq!(h.state("tx"), TxnState::Ongoing);
        assert_eq!(h.end("tx", producer, false), None);
        assert!(h.markers.is_empty());
        assert_eq!(h.state("tx"), TxnState::CompleteAbort);
    }

    // ---- AddPartitions, AddOffsets ----

    #[test]
    fn add_partitions_checks_the_producer_and_skips_the_write_for_known_partitions() {
        let mut h = Harness::new();
        let two = [tp("a", 0), tp("b", 0)];
        assert_eq!(h.add("tx", (1, 0), &two), vec![Some(ErrorCode::InvalidProducerIdMapping); 2]);
        let producer = h.init("tx");
        assert_eq!(h.add("tx", (producer.0 + 1, producer.1), &two), vec![Some(ErrorCode::InvalidProducerIdMapping); 2]);
        assert_eq!(h.add("tx", (producer.0, producer.1 + 1), &two), vec![Some(ErrorCode::ProducerFenced); 2]);
        h.now = 10;
        assert_eq!(h.add("tx", producer, &two), vec![None; 2]);
        let written = h.log.len();
        h.now = 20;
        assert_eq!(h.add("tx", producer, &[tp("b", 0)]), vec![None]);
        assert_eq!(h.log.len(), written, "partitions already in the transaction need no write");
        assert_eq!(h.add("tx", producer, &[tp("b", 0), tp("c", 3)]), vec![None; 2]);
        let d = h.describe("tx");
        assert_eq!(d.partitions, vec![tp("a", 0), tp("b", 0), tp("c", 3)]);
        assert_eq!(d.start_ms, 10, "the transaction started with its first partition");
        assert_eq!(h.log.last().and_then(|r| r.value.as_ref()).map(|v| v.last_update_ms), Some(20));
    }

    // KIP-890: a partition leader asks the coordinator before it appends a transactional
    // batch; the check must answer from the transaction and change nothing.
    #[test]
    fn verify_only_answers_from_the_ongoing_transaction_and_changes_nothing() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        let asked = [tp("a", 0), tp("b", 0)];
        let invalid = Some(ErrorCode::InvalidTxnState);
        assert_eq!(h.call(verify_call("tx", producer, &asked)), Response::AddPartitions(vec![(tp("a", 0), invalid), (tp("b", 0), invalid)]));
        assert_eq!(h.state("tx"), TxnState::Empty);
        h.add("tx", producer, &[tp("a", 0)]);
        let written = h.log.len();
        assert_eq!(h.call(verify_call("tx", producer, &asked)), Response::AddPartitions(vec![(tp("a", 0), None), (tp("b", 0), invalid)]));
        assert_eq!(h.log.len(), written);
        assert_eq!(h.describe("tx").partitions, vec![tp("a", 0)]);
        let fenced = Some(ErrorCode::ProducerFenced);
        assert_eq!(h.call(verify_call("tx", (producer.0, producer.1 - 1), &asked[..1])), Response::AddPartitions(vec![(tp("a", 0), fenced)]));
    }

    #[test]
    fn add_offsets_adds_the_groups_offsets_partition() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        let call = |group: &str| Call::AddOffsets {
            transactional_id: "tx".into(),
            producer_id: producer.0,
            producer_epoch: producer.1,
            group_id: group.into(),
        };
        assert_eq!(h.call(call("g")), Response::AddOffsets(None));
        let offsets = tp(crate::group::OFFSETS_TOPIC, crate::group::partition_for("g", 5));
        assert_eq!(h.describe("tx").partitions, vec![offsets.clone()]);
        let fenced = Call::AddOffsets { transactional_id: "tx".into(), producer_id: producer.0, producer_epoch: 9, group_id: "g".into() };
        assert_eq!(h.call(fenced), Response::AddOffsets(Some(ErrorCode::ProducerFenced)));
        assert_eq!(h.end("tx", producer, true), None);
        assert!(matches!(&h.markers[..], [Action::WriteMarkers { partitions, .. }] if *partitions == vec![offsets.clone()]));
    }

    // Kafka's pendingState: two transitions of one id must not race, or the second would be
    // built from a state the first is about to replace.
    #[test]
    fn requests_for_an_id_with_a_write_in_flight_get_concurrent_transactions() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        let r = h.send(add_call("tx", producer, &[tp("a", 0)]));
        let work = h.work();
        let concurrent = Some(ErrorCode::ConcurrentTransactions);
        assert_eq!(h.add("tx", producer, &[tp("b", 0)]), vec![concurrent]);
        assert_eq!(h.call(verify_call("tx", producer, &[tp("a", 0)])), Response::AddPartitions(vec![(tp("a", 0), concurrent)]));
        assert_eq!(h.end("tx", producer, false), concurrent);
        assert_eq!(h.init_with("tx", producer), Err(ErrorCode::ConcurrentTransactions));
        assert_eq!(h.state("tx"), TxnState::Empty, "the add is not applied before it is durable");
        h.c.handle_persisted(h.now, token(&work[0]), true);
        assert!(h.work().is_empty());
        assert_eq!(h.take_reply(r), Response::AddPartitions(vec![(tp("a", 0), None)]));
        assert_eq!(h.state("tx"), TxnState::Ongoing);

        // An id being created is just as busy, through its producer id fetch and first write.
        let first = h.send(init_call("new", -1, -1));
        let work = h.work();
        assert_eq!(h.init_with("new", (-1, -1)), Err(ErrorCode::ConcurrentTransactions));
        h.c.handle_producer_id(h.now, token(&work[0]), Ok(55));
        let work = h.work();
        assert_eq!(h.init_with("new", (-1, -1)), Err(ErrorCode::ConcurrentTransactions));
        assert_eq!(h.describe("new").error, Some(ErrorCode::TransactionalIdNotFound), "not created before durable");
        h.c.handle_persisted(h.now, token(&work[0]), true);
        let _ = h.work();
        assert_eq!(h.take_reply(first), Response::InitProducerId(Ok((55, 0))));
    }

    // A write that fails may or may not be in the log; the state here stays as it was, and the
    // client is sent to look the coordinator up again (NOT_COORDINATOR) and retry.
    #[test]
    fn a_failed_write_answers_not_coordinator_and_changes_nothing() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        let not_coordinator = Some(ErrorCode::NotCoordinator);
        let r = h.send(init_call("tx", -1, -1));
        let work = h.work();
        h.c.handle_persisted(h.now, token(&work[0]), false);
        assert!(h.work().is_empty());
        assert_eq!(h.take_reply(r), Response::InitProducerId(Err(ErrorCode::NotCoordinator)));
        assert_eq!(h.describe("tx").producer_epoch, producer.1, "the bump is not applied");

        let r = h.send(add_call("tx", producer, &[tp("a", 0), tp("b", 0)]));
        let work = h.work();
        h.c.handle_persisted(h.now, token(&work[0]), false);
        assert!(h.work().is_empty());
        assert_eq!(h.take_reply(r), Response::AddPartitions(vec![(tp("a", 0), not_coordinator), (tp("b", 0), not_coordinator)]));
        assert_eq!(h.state("tx"), TxnState::Empty);
        assert_eq!(h.add("tx", producer, &[tp("a", 0)]), vec![None], "the retry goes through");

        let r = h.send(end_call("tx", producer, true));
        let work = h.work();
        h.c.handle_persisted(h.now, token(&work[0]), false);
        assert!(h.work().is_empty(), "no markers for a decision that is not durable");
        assert_eq!(h.take_reply(r), Response::EndTxn(not_coordinator));
        assert_eq!(h.state("tx"), TxnState::Ongoing);

        // A fence whose abort is not durable leaves the transaction running, its epoch as it was.
        let r = h.send(init_call("tx", -1, -1));
        let work = h.work();
        assert_eq!(h.take_reply(r), Response::InitProducerId(Err(ErrorCode::ConcurrentTransactions)));
        h.c.handle_persisted(h.now, token(&work[0]), false);
        assert!(h.work().is_empty());
        let d = h.describe("tx");
        assert_eq!((d.state, d.producer_epoch), (TxnState::Ongoing, producer.1));

        let r = h.send(init_call("fresh", -1, -1));
        let work = h.work();
        h.c.handle_producer_id(h.now, token(&work[0]), Ok(66));
        let work = h.work();
        h.c.handle_persisted(h.now, token(&work[0]), false);
        assert!(h.work().is_empty());
        assert_eq!(h.take_reply(r), Response::InitProducerId(Err(ErrorCode::NotCoordinator)));
        assert_eq!(h.describe("fresh").error, Some(ErrorCode::TransactionalIdNotFound));
        assert_eq!(h.init("fresh"), (1001, 0));
    }

    // ---- fencing ----

    // KIP-98 zombie fencing: a new instance of a producer (same transactional id) must abort
    // the old instance's open transaction and fence its epoch everywhere the abort marker goes.
    #[test]
    fn init_fences_the_running_producer_and_aborts_its_transaction() {
        let mut h = Harness::new();
        let old = h.init("tx");
        h.add("tx", old, &[tp("a", 0), tp("b", 1)]);
        h.now = 50;
        let r = h.send(init_call("tx", -1, -1));
        let actions = h.actions();
        assert_eq!(h.take_reply(r), Response::InitProducerId(Err(ErrorCode::ConcurrentTransactions)), "retry later");
        let persist = actions.iter().find(|a| matches!(a, Action::Persist { .. })).expect("the abort is written");
        let abort = value(persist).clone();
        assert_eq!((abort.state, abort.producer_epoch, abort.partitions.len()), (TxnState::PrepareAbort, old.1 + 1, 2));
        assert_eq!(h.init_with("tx", (-1, -1)), Err(ErrorCode::ConcurrentTransactions), "fence in flight");
        h.c.handle_persisted(h.now, token(persist), true);
        let work = h.work();
        assert!(
            matches!(&work[..], [Action::WriteMarkers { producer_epoch, commit: false, .. }] if *producer_epoch == old.1 + 1),
            "the abort markers carry the bumped epoch: {work:?}"
        );
        // The zombie is fenced while the abort runs and after.
        assert_eq!(h.end("tx", old, true), Some(ErrorCode::ProducerFenced));
        assert_eq!(h.add("tx", old, &[tp("c", 0)]), vec![Some(ErrorCode::ProducerFenced)]);
        assert_eq!(h.init_with("tx", (-1, -1)), Err(ErrorCode::ConcurrentTransactions), "markers being written");
        h.c.handle_markers_written(h.now, token(&work[0]), vec![(tp("a", 0), None), (tp("b", 1), None)]);
        h.settle();
        assert_eq!(h.state("tx"), TxnState::CompleteAbort);
        // The fence forgot the old epoch: the zombie cannot pass for the retry of an init that
        // bumped it (KIP-360), and take the epoch meant for the new instance.
        assert_eq!(h.init_with("tx", old), Err(ErrorCode::ProducerFenced));
        let new = h.init("tx");
        assert_eq!(new, (old.0, old.1 + 2), "the retry gets a second bump");
        assert_eq!(h.end("tx", old, false), Some(ErrorCode::ProducerFenced));
        assert_eq!(h.init_with("tx", old), Err(ErrorCode::ProducerFenced));
        assert_eq!(h.add("tx", new, &[tp("a", 0)]), vec![None]);
    }

    // ---- markers ----

    // Kafka's TransactionMarkerRequestCompletionHandler: only the partitions that failed with
    // a retriable error are sent again, after a pause; terminal errors drop their partition.
    #[test]
    fn markers_that_failed_are_sent_again_alone_after_the_backoff() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        let partitions = [tp("a", 0), tp("a", 1), tp("b", 0), tp("c", 0), tp("d", 0)];
        h.add("tx", producer, &partitions);
        h.now = 50;
        let r = h.send(end_call("tx", producer, true));
        let work = h.work();
        h.c.handle_persisted(h.now, token(&work[0]), true);
        let work = h.work();
        assert_eq!(h.take_reply(r), Response::EndTxn(None));
        let first = token(&work[0]);
        h.c.handle_markers_written(h.now, first, vec![
            (tp("a", 0), None),
            (tp("a", 1), Some(ErrorCode::NotLeaderOrFollower)),
            (tp("b", 0), Some(ErrorCode::UnknownTopicOrPartition)),
            (tp("d", 0), Some(ErrorCode::UnknownServerError)),
            (tp("zz", 9), Some(ErrorCode::NotLeaderOrFollower)),
            // c-0 got no answer at all: it is sent again too.
        ]);
        assert!(h.work().is_empty(), "nothing before the backoff");
        assert_eq!(h.c.poll_timeout(), Some(50 + BACKOFF_MS));
        h.c.handle_timeout(50 + BACKOFF_MS - 1);
        assert!(h.work().is_empty(), "a spurious timeout does nothing");
        h.now = 50 + BACKOFF_MS;
        h.c.handle_timeout(h.now);
        let work = h.work();
        let [Action::WriteMarkers { token: second, ref partitions, commit: true, .. }] = work[..] else { panic!("{work:?}") };
        assert_eq!(*partitions, vec![tp("a", 1), tp("c", 0), tp("d", 0)]);
        assert_ne!(second, first);
        h.c.handle_markers_written(h.now, first, vec![(tp("a", 1), None)]);
        assert!(h.work().is_empty(), "an answer to an old token is ignored");
        assert_eq!(h.state("tx"), TxnState::PrepareCommit);
        h.c.handle_markers_written(h.now, second, vec![
            (tp("a", 1), Some(ErrorCode::RequestTimedOut)),
            (tp("c", 0), Some(ErrorCode::TransactionCoordinatorFenced)),
            (tp("d", 0), Some(ErrorCode::InvalidProducerEpoch)),
        ]);
        assert!(h.work().is_empty());
        h.now += BACKOFF_MS;
        h.c.handle_timeout(h.now);
        let work = h.work();
        assert!(matches!(&work[..], [Action::WriteMarkers { partitions, .. }] if *partitions == vec![tp("a", 1)]), "{work:?}");
        h.c.handle_markers_written(h.now, token(&work[0]), vec![(tp("a", 1), None)]);
        let work = h.work();
        assert_eq!(value(&work[0]).state, TxnState::CompleteCommit);
        h.c.handle_persisted(h.now, token(&work[0]), true);
        assert_eq!(h.state("tx"), TxnState::CompleteCommit);
        assert_eq!(h.c.poll_timeout(), Some(CHECK_MS), "only the abort check is left");
    }

    #[test]
    fn a_failed_completion_write_is_tried_again_after_the_backoff() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        h.add("tx", producer, &[tp("a", 0)]);
        let r = h.send(end_call("tx", producer, false));
        let work = h.work();
        h.c.handle_persisted(h.now, token(&work[0]), true);
        let work = h.work();
        assert_eq!(h.take_reply(r), Response::EndTxn(None));
        h.c.handle_markers_written(h.now, token(&work[0]), vec![(tp("a", 0), None)]);
        let work = h.work();
        assert_eq!(value(&work[0]).state, TxnState::CompleteAbort);
        h.c.handle_persisted(h.now, token(&work[0]), false);
        assert!(h.work().is_empty());
        assert_eq!(h.state("tx"), TxnState::PrepareAbort);
        assert_eq!(h.c.poll_timeout(), Some(BACKOFF_MS));
        h.now = BACKOFF_MS;
        h.c.handle_timeout(h.now);
        let work = h.work();
        assert!(matches!(&work[..], [Action::Persist { .. }]), "the completion again, no markers: {work:?}");
        assert_eq!(value(&work[0]).state, TxnState::CompleteAbort);
        h.c.handle_persisted(h.now, token(&work[0]), true);
        assert_eq!(h.state("tx"), TxnState::CompleteAbort);
    }

    // ---- timeouts ----

    // transaction.timeout.ms: a producer that dies mid-transaction would otherwise hold back
    // the last stable offset of every partition it wrote to, forever.
    #[test]
    fn the_coordinator_aborts_a_transaction_past_its_timeout_and_fences_its_producer() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        h.now = 500;
        h.add("tx", producer, &[tp("a", 0)]);
        assert_eq!(h.c.poll_timeout(), Some(CHECK_MS));
        h.run_until(500 + i64::from(TIMEOUT_MS));
        assert_eq!(h.state("tx"), TxnState::Ongoing, "not past its timeout yet");
        assert!(h.markers.is_empty());
        let due = h.c.poll_timeout().expect("checks go on");
        assert!(due > 500 + i64::from(TIMEOUT_MS) && due <= 500 + i64::from(TIMEOUT_MS) + CHECK_MS);
        h.now = due;
        h.c.handle_timeout(h.now);
        let work = h.work();
        let abort = value(&work[0]).clone();
        assert_eq!(
            abort,
            TxnValue {
                producer_id: producer.0,
                producer_epoch: producer.1 + 1,
                timeout_ms: TIMEOUT_MS,
                state: TxnState::PrepareAbort,
                partitions: vec![tp("a", 0)],
                last_update_ms: due,
                start_ms: 500,
            }
        );
        assert_eq!(h.c.poll_timeout(), Some(due + CHECK_MS));
        h.c.handle_persisted(h.now, token(&work[0]), true);
        h.settle();
        assert!(matches!(&h.markers[..], [Action::WriteMarkers { commit: false, producer_epoch, .. }] if *producer_epoch == producer.1 + 1));
        assert_eq!(h.state("tx"), TxnState::CompleteAbort);
        assert_eq!(h.end("tx", producer, true), Some(ErrorCode::ProducerFenced));
        assert_eq!(h.add("tx", producer, &[tp("a", 0)]), vec![Some(ErrorCode::ProducerFenced)]);
        assert_eq!(h.init("tx"), (producer.0, producer.1 + 2));
    }

    #[test]
    fn a_failed_timeout_abort_is_tried_again_at_the_next_check() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        h.add("tx", producer, &[tp("a", 0)]);
        h.now = i64::from(TIMEOUT_MS);
        h.c.handle_timeout(h.now);
        assert!(h.work().is_empty(), "at its timeout, not past it");
        h.now += CHECK_MS;
        h.c.handle_timeout(h.now);
        let work = h.work();
        h.c.handle_persisted(h.now, token(&work[0]), false);
        assert_eq!(h.state("tx"), TxnState::Ongoing);
        assert_eq!(h.describe("tx").producer_epoch, producer.1, "the bump is not applied");
        h.c.handle_timeout(h.now);
        assert!(h.work().is_empty(), "not before the next check");
        h.now += CHECK_MS;
        h.c.handle_timeout(h.now);
        let work = h.work();
        assert_eq!(value(&work[0]).producer_epoch, producer.1 + 1, "a failed fence does not bump twice");
    }

    // Kafka never hands out i16::MAX, so a fence always has an epoch left; should it not (a
    // record written by something else), the epoch is kept rather than wrapped negative.
    #[test]
    fn a_fence_at_the_last_epoch_keeps_it() {
        let mut h = Harness::with(TxnCoordinator::new(config()));
        let p = partition_for("tx", 4);
        h.c.begin_load(p, COORDINATOR_EPOCH);
        let ongoing = TxnValue {
            producer_id: 3,
            producer_epoch: i16::MAX,
            timeout_ms: TIMEOUT_MS,
            state: TxnState::Ongoing,
            partitions: vec![tp("a", 0)],
            last_update_ms: 0,
            start_ms: 0,
        };
        h.c.load(0, TxnRecord { transactional_id: "tx".into(), value: Some(ongoing) });
        h.c.finish_load(0, p);
        assert_eq!(h.init_with("tx", (-1, -1)), Err(ErrorCode::ConcurrentTransactions));
        assert_eq!(h.markers.len(), 1);
        assert!(matches!(h.markers[0], Action::WriteMarkers { producer_epoch: i16::MAX, .. }));
        assert_eq!(h.init("tx"), (1000, 0), "the next init rotates the producer id");
    }

    // transactional.id.expiration.ms: ids of producers gone for good must not pile up.
    #[test]
    fn idle_ids_are_tombstoned_and_forgotten() {
        let mut h = Harness::new();
        let idle = h.init("idle");
        h.add("idle", idle, &[tp("a", 0)]);
        assert_eq!(h.end("idle", idle, true), None);
        h.now = EXPIRY_MS - 10;
        h.init("recent");
        h.now = EXPIRY_MS;
        h.c.handle_timeout(h.now);
        let work = h.work();
        assert!(
            matches!(&work[..], [Action::Persist { records, partition, .. }]
                if records[..] == [TxnRecord { transactional_id: "idle".into(), value: None }]
                && *partition == partition_for("idle", 4)),
            "{work:?}"
        );
        assert_eq!(h.init_with("idle", idle), Err(ErrorCode::ConcurrentTransactions));
        h.c.handle_persisted(h.now, token(&work[0]), false);
        assert_eq!(h.state("idle"), TxnState::CompleteCommit, "a failed tombstone forgets nothing");
        h.now += CHECK_MS;
        h.c.handle_timeout(h.now);
        let work = h.work();
        assert_eq!(work.len(), 1, "tried again at the next check: {work:?}");
        h.c.handle_persisted(h.now, token(&work[0]), true);
        assert_eq!(h.describe("idle").error, Some(ErrorCode::TransactionalIdNotFound));
        assert_eq!(h.state("recent"), TxnState::Empty);
        let r = h.send(init_call("idle", idle.0, idle.1));
        assert!(matches!(h.work()[..], [Action::NewProducerId { .. }]), "the id starts over");
        let _ = r;
    }

    #[test]
    fn ongoing_transactions_do_not_expire() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        h.add("tx", producer, &[tp("a", 0)]);
        h.now = EXPIRY_MS * 2;
        h.c.handle_timeout(h.now);
        let work = h.work();
        assert_eq!(work.len(), 1);
        assert_eq!(value(&work[0]).state, TxnState::PrepareAbort, "aborted, not tombstoned");
    }

    // ---- ownership, loading, failover ----

    // Clients find the coordinator through the partition's leader; any other node must send
    // them back to FindCoordinator, and one still replaying the partition must ask them to wait.
    #[test]
    fn only_loaded_partitions_are_served() {
        let mut h = Harness::with(TxnCoordinator::new(config()));
        assert_eq!(h.c.poll_timeout(), None, "nothing owned, nothing due");
        assert_eq!(h.init_with("tx", (-1, -1)), Err(ErrorCode::NotCoordinator));
        assert_eq!(h.add("tx", (1, 0), &[tp("a", 0)]), vec![Some(ErrorCode::NotCoordinator)]);
        assert_eq!(h.end("tx", (1, 0), true), Some(ErrorCode::NotCoordinator));
        assert_eq!(h.describe("tx").error, Some(ErrorCode::NotCoordinator));
        let p = partition_for("tx", 4);
        let other = (p + 1) % 4;
        h.c.begin_load(other, 1);
        h.c.begin_load(p, 2);
        assert_eq!(h.c.owned_partitions(), {
            let mut owned = vec![p, other];
            owned.sort();
            owned
        });
        assert_eq!(h.init_with("tx", (-1, -1)), Err(ErrorCode::CoordinatorLoadInProgress));
        let offsets = Call::AddOffsets { transactional_id: "tx".into(), producer_id: 1, producer_epoch: 0, group_id: "g".into() };
        assert_eq!(h.call(offsets), Response::AddOffsets(Some(ErrorCode::CoordinatorLoadInProgress)));
        assert_eq!(h.describe("tx").error, Some(ErrorCode::CoordinatorLoadInProgress));
        h.c.finish_load(100, p);
        assert_eq!(h.c.poll_timeout(), Some(100 + CHECK_MS));
        let producer = h.init("tx");
        assert_eq!(h.call(Call::List { states: vec![], producer_ids: vec![] }), Response::List(vec![ListedTxn {
            transactional_id: "tx".into(),
            producer_id: producer.0,
            state: TxnState::Empty,
        }]));
        h.c.unload(p);
        h.c.unload(other);
        assert_eq!(h.c.owned_partitions(), Vec::<i32>::new());
        assert_eq!(h.c.poll_timeout(), None);
        h.c.handle_timeout(1_000_000_000);
        assert!(h.work().is_empty());
    }

    #[test]
    fn load_keeps_the_last_record_per_id_and_tombstones_remove() {
        let p = 1;
        let ids = ids_in(p, 4);
        let outside = ids_in(2, 1).remove(0);
        let mut h = Harness::with(TxnCoordinator::new(config()));
        h.c.begin_load(p, COORDINATOR_EPOCH);
        let v = |epoch, state, partitions: Vec<(String, i32)>| {
            Some(TxnValue {
                producer_id: 9,
                producer_epoch: epoch,
                timeout_ms: TIMEOUT_MS,
                state,
                start_ms: if partitions.is_empty() { -1 } else { 0 },
                partitions,
                last_update_ms: 0,
            })
        };
        let records = [
            (&ids[0], v(0, TxnState::Empty, vec![])),
            (&ids[0], v(0, TxnState::Ongoing, vec![tp("a", 0)])),
            (&ids[1], v(3, TxnState::CompleteCommit, vec![])),
            (&ids[1], None),
            (&ids[2], v(1, TxnState::Empty, vec![])),
            (&ids[2], v(1, TxnState::Dead, vec![])),
            (&ids[3], None),
            (&outside, v(0, TxnState::Empty, vec![])),
        ];
        for (id, value) in records {
            h.c.load(0, TxnRecord { transactional_id: id.clone(), value });
        }
        h.c.begin_load(2, COORDINATOR_EPOCH);
        h.c.finish_load(0, p);
        h.c.finish_load(0, 2);
        let d = h.describe(&ids[0]);
        assert_eq!((d.state, d.producer_epoch, d.partitions.clone()), (TxnState::Ongoing, 0, vec![tp("a", 0)]));
        for id in [&ids[1], &ids[2], &ids[3], &outside] {
            assert_eq!(h.describe(id).error, Some(ErrorCode::TransactionalIdNotFound), "{id}");
        }
        assert!(h.work().is_empty(), "an Ongoing transaction needs no markers");
    }

    // Leadership of a __transaction_state partition moves: the new coordinator finds the
    // decided transactions in the log and must finish them, fencing the old coordinator's
    // markers with its higher coordinator epoch.
    #[test]
    fn a_new_coordinator_finishes_the_prepared_transactions_it_loads() {
        let mut h = Harness::new();
        let decided = h.init("decided");
        h.add("decided", decided, &[tp("b", 0), tp("a", 0)]);
        let r = h.send(end_call("decided", decided, true));
        let work = h.work();
        h.c.handle_persisted(h.now, token(&work[0]), true);
        let old_markers = h.work();
        assert_eq!(h.take_reply(r), Response::EndTxn(None));
        let running = h.init("running");
        h.add("running", running, &[tp("c", 0)]);
        let done = h.init("done");
        h.add("done", done, &[tp("c", 1)]);
        assert_eq!(h.end("done", done, false), None);

        h.now = 5_000;
        let mut elsewhere = h.failover(8);
        let work = elsewhere.work();
        assert!(
            matches!(&work[..], [Action::WriteMarkers { producer_id, producer_epoch, coordinator_epoch: 8, commit: true, partitions, .. }]
                if (*producer_id, *producer_epoch) == decided && *partitions == vec![tp("a", 0), tp("b", 0)]),
            "{work:?}"
        );
        elsewhere.c.handle_markers_written(elsewhere.now, token(&work[0]), vec![(tp("a", 0), None), (tp("b", 0), None)]);
        elsewhere.settle();
        assert_eq!(elsewhere.state("decided"), TxnState::CompleteCommit);
        assert_eq!(elsewhere.end("decided", decided, true), None, "the client's retry finds it done");
        assert_eq!(elsewhere.state("running"), TxnState::Ongoing);
        assert_eq!(elsewhere.state("done"), TxnState::CompleteAbort);
        assert_eq!(elsewhere.end("running", running, true), None, "the running producer carries on");

        // The old coordinator lets go; what its markers' answers say no longer matters.
        for p in 0..4 {
            h.c.unload(p);
        }
        h.c.handle_markers_written(h.now, token(&old_markers[0]), vec![(tp("a", 0), None), (tp("b", 0), None)]);
        assert!(h.work().is_empty());
    }

    // The producer died long before the failover: its transaction's clock did not restart.
    #[test]
    fn a_loaded_ongoing_transaction_times_out_from_its_start() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        h.add("tx", producer, &[tp("a", 0)]);
        h.now = 1_000_000;
        let mut elsewhere = h.failover(8);
        assert!(elsewhere.work().is_empty());
        assert_eq!(elsewhere.c.poll_timeout(), Some(1_000_000 + CHECK_MS));
        elsewhere.c.handle_timeout(1_000_000 + CHECK_MS);
        let work = elsewhere.work();
        assert_eq!(value(&work[0]).state, TxnState::PrepareAbort);
        assert_eq!(value(&work[0]).producer_epoch, producer.1 + 1);
    }

    #[test]
    fn a_loaded_prepare_epoch_fence_is_aborted() {
        let mut h = Harness::with(TxnCoordinator::new(config()));
        let p = partition_for("tx", 4);
        h.c.begin_load(p, 3);
        let fence = TxnValue {
            producer_id: 3,
            producer_epoch: 4,
            timeout_ms: TIMEOUT_MS,
            state: TxnState::PrepareEpochFence,
            partitions: vec![tp("a", 0)],
            last_update_ms: 0,
            start_ms: 0,
        };
        h.c.load(0, TxnRecord { transactional_id: "tx".into(), value: Some(fence) });
        h.c.finish_load(0, p);
        let work = h.work();
        assert!(
            matches!(&work[..], [Action::WriteMarkers { commit: false, producer_epoch: 4, coordinator_epoch: 3, .. }]),
            "{work:?}"
        );
        h.c.handle_markers_written(0, token(&work[0]), vec![(tp("a", 0), None)]);
        h.settle();
        assert_eq!(h.state("tx"), TxnState::CompleteAbort);
    }

    // A partition that moves away mid-request: the client must go to the new coordinator, and
    // the answers of writes and markers started here must not touch state it no longer owns.
    #[test]
    fn unload_answers_waiting_requests_and_ignores_late_answers() {
        let p = 2;
        let ids = ids_in(p, 3);
        let mut h = Harness::with(TxnCoordinator::new(config()));
        h.c.begin_load(p, COORDINATOR_EPOCH);
        h.c.finish_load(0, p);
        let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
        let pb = h.init(b);
        let pc = h.init(c);
        h.add(c, pc, &[tp("t", 0)]);
        let creating = h.send(init_call(a, -1, -1));
        let adding = h.send(add_call(b, pb, &[tp("t", 1)]));
        let ending = h.send(end_call(c, pc, true));
        let mut work = h.work();
        let end_persist = work.pop().expect("the decision");
        h.c.handle_persisted(h.now, token(&end_persist), true);
        let markers = h.work();
        assert_eq!(h.take_reply(ending), Response::EndTxn(None));
        assert!(matches!(&markers[..], [Action::WriteMarkers { .. }]));

        h.c.unload(p);
        assert!(h.work().is_empty());
        assert_eq!(h.take_reply(creating), Response::InitProducerId(Err(ErrorCode::NotCoordinator)));
        assert_eq!(h.take_reply(adding), Response::AddPartitions(vec![(tp("t", 1), Some(ErrorCode::NotCoordinator))]));
        assert_eq!(h.c.poll_timeout(), None);

        h.c.handle_producer_id(h.now, token(&work[0]), Ok(5));
        h.c.handle_persisted(h.now, token(&work[1]), true);
        h.c.handle_markers_written(h.now, token(&markers[0]), vec![(tp("t", 0), None)]);
        assert!(h.work().is_empty(), "late answers are ignored");
        assert!(h.replies.is_empty());
        for id in [a, b, c] {
            assert_eq!(h.describe(id).error, Some(ErrorCode::NotCoordinator));
        }

        // Loading it again starts from the log, not from what was known before.
        h.c.begin_load(p, COORDINATOR_EPOCH + 1);
        h.c.finish_load(h.now, p);
        assert_eq!(h.describe(b).error, Some(ErrorCode::TransactionalIdNotFound));
    }

    #[test]
    fn begin_load_of_an_owned_partition_forgets_its_ids_and_sends_waiters_away() {
        let mut h = Harness::new();
        let producer = h.init("tx");
        let r = h.send(add_call("tx", producer, &[tp("a", 0)]));
        let work = h.work();
        let p = partition_for("tx", 4);
        h.c.begin_load(p, COORDINATOR_EPOCH + 1);
        assert!(h.work().is_empty());
        assert_eq!(h.take_reply(r), Response::AddPartitions(vec![(tp("a", 0), Some(ErrorCode::NotCoordinator))]));
        h.c.handle_persisted(h.now, token(&work[0]), true);
        assert_eq!(h.describe("tx").error, Some(ErrorCode::CoordinatorLoadInProgress));
        h.c.finish_load(h.now, p);
        assert_eq!(h.describe("tx").error, Some(ErrorCode::TransactionalIdNotFound));
        assert_eq!(h.c.owned_partitions(), vec![0, 1, 2, 3]);
    }

    // ---- admin ----

    #[test]
    fn describe_and_list_show_loaded_ids_in_order() {
        let mut h = Harness::with(TxnCoordinator::new(config()));
        let p = partition_for("b-tx", 4);
        let mut served: Vec<String> = ids_in(p, 2);
        h.c.begin_load(p, 1);
        h.c.finish_load(0, p);
        let elsewhere = ids_in((p + 1) % 4, 1).remove(0);
        let b = h.init("b-tx");
        let (x, y) = (served.remove(0), served.remove(0));
        let px = h.init(&x);
        h.add(&x, px, &[tp("t", 2), tp("s", 1)]);
        let py = h.init(&y);
        let described = h.call(Call::Describe { transactional_ids: vec![x.clone(), "nope-0".into(), elsewhere.clone()] });
        let Response::Describe(d) = described else { panic!() };
        assert_eq!(d.iter().map(|d| d.transactional_id.as_str()).collect::<Vec<_>>(), [x.as_str(), "nope-0", elsewhere.as_str()]);
        assert_eq!(
            d[0],
            DescribedTxn {
                transactional_id: x.clone(),
                error: None,
                state: TxnState::Ongoing,
                producer_id: px.0,
                producer_epoch: px.1,
                timeout_ms: TIMEOUT_MS,
                start_ms: 0,
                partitions: vec![tp("s", 1), tp("t", 2)],
            }
        );
        let nope = if partition_for("nope-0", 4) == p { ErrorCode::TransactionalIdNotFound } else { ErrorCode::NotCoordinator };
        assert_eq!(d[1].error, Some(nope));
        assert_eq!(d[2].error, Some(ErrorCode::NotCoordinator));

        let list = |h: &mut Harness, states: &[&str], producer_ids: &[i64]| match h.call(Call::List {
            states: states.iter().map(|s| s.to_string()).collect(),
            producer_ids: producer_ids.to_vec(),
        }) {
            Response::List(l) => l.into_iter().map(|t| (t.transactional_id, t.producer_id, t.state)).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let mut all = vec![("b-tx".to_string(), b.0, TxnState::Empty), (x.clone(), px.0, TxnState::Ongoing), (y.clone(), py.0, TxnState::Empty)];
        all.sort();
        assert_eq!(list(&mut h, &[], &[]), all);
        assert_eq!(list(&mut h, &["Ongoing"], &[]), vec![(x.clone(), px.0, TxnState::Ongoing)]);
        assert_eq!(list(&mut h, &["Empty"], &[py.0]), vec![(y.clone(), py.0, TxnState::Empty)]);
        assert_eq!(list(&mut h, &["Ongoing"], &[py.0]), vec![]);
        assert_eq!(list(&mut h, &["Bogus"], &[]), vec![]);
    }

    #[test]
    fn tokens_are_unique_across_action_kinds() {
        let mut h = Harness::new();
        let mut tokens = BTreeSet::new();
        let mut seen = 0;
        let mut note = |actions: &[Action]| {
            for a in actions.iter().filter(|a| !matches!(a, Action::Reply(..))) {
                seen += 1;
                assert!(tokens.insert(token(a)), "token {} handed out twice", token(a));
            }
        };
        for id in ["a", "b"] {
            let r = h.send(init_call(id, -1, -1));
            let w = h.work();
            note(&w);
            h.c.handle_producer_id(h.now, token(&w[0]), Ok(if id == "a" { 1 } else { 2 }));
            let w = h.work();
            note(&w);
            h.c.handle_persisted(h.now, token(&w[0]), true);
            assert!(h.work().is_empty());
            let _ = h.take_reply(r);
            let producer = (if id == "a" { 1 } else { 2 }, 0);
            h.send(add_call(id, producer, &[tp("t", 0)]));
            let w = h.work();
            note(&w);
            h.c.handle_persisted(h.now, token(&w[0]), true);
            h.send(end_call(id, producer, true));
            let w = h.work();
            note(&w);
            h.c.handle_persisted(h.now, token(&w[0]), true);
            let w = h.work();
            note(&w);
            h.c.handle_markers_written(h.now, token(&w[0]), vec![(tp("t", 0), None)]);
            let w = h.work();
            note(&w);
            h.c.handle_persisted(h.now, token(&w[0]), true);
        }
        assert_eq!(seen, 12);
    }

    // ---- records ----

    fn sample_value() -> TxnValue {
        TxnValue {
            producer_id: 0x0102_0304_0506_0708,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: vec![tp("a", 0), tp("a", 7), tp("bc", 2)],
            last_update_ms: 1_700_000_000_000,
            start_ms: 1_699_999_999_000,
        }
    }

    // Kafka's TransactionLogKey/TransactionLogValue v0 bytes, so a log written here reads as
    // Kafka's and the reverse.
    #[test]
    fn records_use_kafkas_v0_layout_and_round_trip() {
        let record = TxnRecord { transactional_id: "tx-1".into(), value: Some(sample_value()) };
        let (key, value) = record.encode();
        assert_eq!(&key[..], b"\x00\x00\x00\x04tx-1");
        let mut expected = vec![0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 3, 0, 0, 0xea, 0x60, 2];
        expected.extend([0, 0, 0, 2]); // two topics
        expected.extend([0, 1, b'a', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7]);
        expected.extend([0, 2, b'b', b'c', 0, 0, 0, 1, 0, 0, 0, 2]);
        expected.extend(1_700_000_000_000i64.to_be_bytes());
        expected.extend(1_699_999_999_000i64.to_be_bytes());
        assert_eq!(value.as_deref(), Some(&expected[..]));
        assert_eq!(TxnRecord::decode(key, value), Ok(record));

        let tombstone = TxnRecord { transactional_id: "gone".into(), value: None };
        let (key, value) = tombstone.encode();
        assert_eq!(value, None);
        assert_eq!(TxnRecord::decode(key, value), Ok(tombstone));

        // Kafka writes Empty's partitions as a null array.
        let empty = TxnValue { state: TxnState::Empty, partitions: vec![], start_ms: -1, ..sample_value() };
        let record = TxnRecord { transactional_id: "e".into(), value: Some(empty) };
        let (key, value) = record.encode();
        assert_eq!(value.as_ref().map(|v| &v[17..21]), Some(&[0xff, 0xff, 0xff, 0xff][..]));
        assert_eq!(TxnRecord::decode(key, value), Ok(record));

        for state in [TxnState::Ongoing, TxnState::CompleteAbort, TxnState::Dead, TxnState::PrepareEpochFence] {
            let record = TxnRecord { transactional_id: "s".into(), value: Some(TxnValue { state, ..sample_value() }) };
            let (key, value) = record.encode();
            assert_eq!(TxnRecord::decode(key, value), Ok(record));
            assert_eq!(TxnState::from_id(state.id()), Some(state));
        }
    }

    #[test]
    fn decode_sorts_partitions_of_topics_written_apart() {
        let mut value = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 100, 1];
        value.extend([0, 0, 0, 2]);
        value.extend([0, 1, b'z', 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 1]);
        value.extend([0, 1, b'a', 0, 0, 0, 1, 0, 0, 0, 9]);
        value.extend([0; 16]);
        let key = Bytes::from_static(b"\x00\x00\x00\x01k");
        let record = TxnRecord::decode(key, Some(Bytes::from(value))).expect("valid");
        assert_eq!(record.value.expect("value").partitions, vec![tp("a", 9), tp("z", 1), tp("z", 5)]);
    }

    #[test]
    fn decode_refuses_malformed_records() {
        let (key, value) = TxnRecord { transactional_id: "tx".into(), value: Some(sample_value()) }.encode();
        let value = value.expect("value").to_vec();
        let with = |mutate: &dyn Fn(&mut Vec<u8>)| {
            let mut v = value.clone();
            mutate(&mut v);
            TxnRecord::decode(key.clone(), Some(Bytes::from(v)))
        };
        let refused = |r: Result<TxnRecord, String>, what: &str| assert!(r.is_err(), "{what} accepted: {r:?}");
        refused(TxnRecord::decode(Bytes::from_static(b"\x00\x01\x00\x02tx"), None), "key version 1");
        refused(TxnRecord::decode(Bytes::from_static(b"\x00\x00\xff\xfe"), None), "negative key length");
        refused(TxnRecord::decode(Bytes::from_static(b"\x00\x00\x00\x02\xff\xfe"), None), "key not UTF-8");
        refused(TxnRecord::decode(Bytes::from_static(b"\x00\x00\x00\x02txx"), None), "bytes after the key");
        refused(TxnRecord::decode(Bytes::from_static(b"\x00\x00\x00\x05tx"), None), "short key");
        refused(TxnRecord::decode(Bytes::new(), None), "empty key");
        refused(with(&|v| v[1] = 1), "value version 1");
        refused(with(&|v| v[16] = 8), "state 8");
        refused(with(&|v| v[16] = 0xff), "state -1");
        refused(with(&|v| v[17..21].copy_from_slice(&(-2i32).to_be_bytes())), "topic count -2");
        refused(with(&|v| v[21..23].copy_from_slice(&(-1i16).to_be_bytes())), "null topic name");
        refused(with(&|v| v[24..28].copy_from_slice(&(-1i32).to_be_bytes())), "partition count -1");
        refused(with(&|v| v[24..28].copy_from_slice(&i32::MAX.to_be_bytes())), "partition count past the end");
        refused(with(&|v| v[17..21].copy_from_slice(&i32::MAX.to_be_bytes())), "topic count past the end");
        refused(with(&|v| v[23] = 0xc3), "topic not UTF-8");
        refused(with(&|v| v.push(0)), "bytes after the value");
        refused(with(&|v| {
            v.pop();
        }), "short value");
        refused(TxnRecord::decode(key.clone(), Some(Bytes::new())), "empty value");
    }

    // The log is read back after crashes and from other nodes: no byte pattern may panic.
    #[test]
    fn decode_never_panics_on_truncated_or_corrupted_records() {
        let (key, value) = TxnRecord { transactional_id: "tx-é".into(), value: Some(sample_value()) }.encode();
        let value = value.expect("value");
        for n in 0..key.len() {
            assert!(TxnRecord::decode(key.slice(..n), Some(value.clone())).is_err(), "key cut at {n}");
        }
        for n in 0..value.len() {
            assert!(TxnRecord::decode(key.clone(), Some(value.slice(..n))).is_err(), "value cut at {n}");
        }
        for i in 0..value.len() {
            for mask in [0x01u8, 0x80, 0x7f, 0xff] {
                let mut v = value.to_vec();
                v[i] ^= mask;
                let _ = TxnRecord::decode(key.clone(), Some(Bytes::from(v)));
            }
        }
        for i in 0..key.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut k = key.to_vec();
                k[i] ^= mask;
                let _ = TxnRecord::decode(Bytes::from(k), Some(value.clone()));
            }
        }
        // Several flips at once, at places a fixed linear congruential sequence picks.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as usize
        };
        let mut accepted = 0;
        for _ in 0..5_000 {
            let mut v = value.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = next() % v.len();
                v[at] = next() as u8;
            }
            let cut = if next() % 4 == 0 { next() % (v.len() + 1) } else { v.len() };
            v.truncate(cut);
            if let Ok(record) = TxnRecord::decode(key.clone(), Some(Bytes::from(v))) {
                accepted += 1;
                // Whatever decodes must encode back to something that decodes the same.
                let (k, v) = record.encode();
                assert_eq!(TxnRecord::decode(k, v), Ok(record));
            }
        }
        assert!(accepted > 0, "flips of plain numbers still decode");
    }

    #[test]
    fn transactional_ids_land_on_kafkas_partition() {
        // Kafka: Utils.abs("my-txn".hashCode) % 50.
        let hash = "my-txn".chars().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
        assert_eq!(partition_for("my-txn", 50), (hash & 0x7fff_ffff) % 50);
        assert!((0..config().partitions).contains(&partition_for("anything", config().partitions)));
    }
}
