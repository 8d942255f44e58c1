//! One core's data plane as a state machine: the partition replicas the core owns (each in
//! its [`PartitionDriver`]), its replica fetchers ([`Fetchers`], one request at a time per
//! source broker), the produce requests waiting for their answers, and the fetch purgatory
//! of the long polls served on this core. The broker's cores (`io/src/shard.rs`) and the
//! simulator's nodes drive the same `Shard`; neither holds a replication rule of its own.
//!
//! Inputs: partitions opened from their recovered state, the controller's decisions,
//! produces and fetches, disk completions, fetch answers, AlterPartition answers, news of
//! partitions on other cores, and time (`now_ms`, monotonic). Outputs ([`Output`]), drained
//! with [`Shard::poll_output`]: disk actions, fetches to send, AlterPartition and
//! OffsetForLeaderEpoch calls, produce answers, visibility changes and woken long polls.
//!
//! Every disk action and every call names the partition's generation: a partition removed
//! and opened again (a topic deleted and re-created) must not take the old one's answers.
//!
//! The shard also runs the core's group and transaction coordinators: the groups of the
//! `__consumer_offsets` partitions and the transactional ids of the `__transaction_state`
//! partitions it leads. A new leadership replays the partition
//! ([`Output::ReadCoordinatorLog`]), a lost one drops its state, coordinator records are
//! produced to the partition with acks=all, and the group APIs are answered as whole Kafka
//! responses ([`Output::GroupReply`]), the transaction calls as [`Output::TxnReply`]. The
//! transaction coordinator's markers go out as [`Output::WriteMarkers`] for the driver to
//! carry to the partitions' leaders.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::FetchResponse as WireFetchResponse;

use tracing::{debug, info, warn};

use super::groups::{self, GroupRequest, GroupResponse, Reply};
use super::partitions::{DeleteRecordsPart, EpochEndPart, FetchPart, ListOffsetsPart, ListOffsetsResult, OffsetLookup, PartRead, ProducePart};
use crate::batch;
use crate::controller::{MetadataImage, PartitionState, TopicId};
use crate::error::ErrorCode;
use crate::validate::Refusal;
use crate::fetcher::{Delivery, Fetchers, Outgoing, TopicPartition};
use crate::replication_quota::{self, QuotaWindow, ReplicationQuota, Throttled};
use crate::topic::{BrokerLayers, TopicConfig};
use crate::group::{self, GroupCoordinator, GroupRecord, OFFSETS_TOPIC};
use crate::txn::{self, TxnCoordinator, TxnRecord, TXN_TOPIC};
use crate::records;
use crate::ids::{LeaderEpoch, NodeId, Offset, PartitionEpoch};
use crate::replica::driver::PartitionDriver;
use crate::replica::{
    Action, AlterPartitionRequest, Completion, EpochEndOffset, FetchAnswer, FetchRequest, LeaderAndIsr, PersistedState,
    ProduceAck, Replica, ReplicaConfig, Role, Started, TxnVerification, Unverified,
};

/// How long a replicated group write waits for the ISR (Kafka's `offsets.commit.timeout.ms`).
const GROUP_COMMIT_TIMEOUT_MS: i32 = 5_000;
/// How often the coordinator's sessions and rebalances are checked while it owns groups.
const GROUP_TICK_MS: i64 = 100;
/// The most a replay of `__consumer_offsets` reads at a time.
const GROUP_LOAD_READ_BYTES: usize = 8 << 20;

/// What the driver performs for the shard.
#[derive(Debug)]
pub enum Output {
    /// One of the partition's disk actions (`Append`, `Truncate`, `ResetLog`, `Sync`,
    /// `PersistEpochCache`, `PersistHighWatermark`, `AdvanceLogStart`); report it done with
    /// [`Shard::finish`]. The partition hands out nothing else until then.
    Disk { partition: TopicPartition, generation: u64, action: Action },
    /// A multi-partition follower fetch; answer with [`Shard::handle_fetch_response`].
    Fetch(Outgoing),
    /// A follower asks its leader where an epoch ends; answer with
    /// [`Shard::handle_epoch_answer`].
    EpochQuery {
        partition: TopicPartition,
        generation: u64,
        to: NodeId,
        request_id: u64,
        current_leader_epoch: LeaderEpoch,
        leader_epoch: LeaderEpoch,
    },
    /// A leader proposes an ISR to the active controller; every one needs exactly one
    /// [`Shard::handle_alter_partition_response`] (a transport failure too).
    AlterPartition {
        partition: TopicPartition,
        generation: u64,
        topic_id: TopicId,
        request_id: u64,
        request: AlterPartitionRequest,
    },
    /// The answer to the produce the driver tagged `token`.
    Produced { token: u64, result: Result<ProduceAck, ErrorCode> },
    /// The answer to the DeleteRecords partition the driver tagged `token`
    /// ([`Shard::delete_records_part`]): the partition's new low watermark.
    RecordsDeleted { token: u64, result: Result<Offset, ErrorCode> },
    /// News for long polls on other cores reading the partition: its high watermark moved
    /// (consumers may read up to `high_watermark` now), or the written end of a leader with
    /// followers did (their fetches wait for it). This core's own long polls have heard.
    Visible { partition: TopicPartition, high_watermark: Offset },
    /// The long poll parked as `wait` should read again: news of one of its partitions, or its
    /// deadline passed.
    Woken { wait: u64 },
    /// The answer to the group request the driver handed in as `id`
    /// ([`Shard::group_request`]): the whole Kafka response.
    GroupReply { id: u64, response: GroupResponse },
    /// Read `partition` (a `__consumer_offsets` or `__transaction_state` partition whose
    /// coordinator state loads) from `from`, at most `max_bytes`, below `upto`; answer with
    /// [`Shard::handle_coordinator_read`].
    ReadCoordinatorLog { partition: TopicPartition, generation: u64, from: Offset, upto: Offset, max_bytes: usize },
    /// The answer to the transaction coordinator call the driver handed in as `id`
    /// ([`Shard::txn_request`]).
    TxnReply { id: u64, response: txn::Response },
    /// The transaction coordinator needs a fresh producer id (from the broker's block);
    /// answer with [`Shard::handle_txn_producer_id`].
    NewProducerId { token: u64 },
    /// Write `marker` for the producer to each partition, on its leader (WriteTxnMarkers);
    /// answer with [`Shard::handle_markers_written`], one result per partition.
    WriteMarkers { token: u64, producer_id: i64, producer_epoch: i16, marker: crate::batch::ControlMarker, partitions: Vec<(String, i32)> },
    /// Ask the transaction coordinator of `transactional_id` whether the producer's ongoing
    /// transaction holds `partition` (AddPartitionsToTxn v4, verify only: KIP-890) before its
    /// batch starts a transaction there; answer with [`Shard::handle_txn_verified`].
    VerifyTxn { token: u64, transactional_id: String, producer_id: i64, producer_epoch: i16, partition: (String, i32) },
}

/// A produce waiting for its coordinator's verification ([`Output::VerifyTxn`]).
struct Verifying {
    partition: TopicPartition,
    records: Bytes,
    acks: i16,
    timeout_ms: i32,
    guard: u64,
}

/// What a metadata image asks of one core ([`Shard::plan_image`]).
#[derive(Debug)]
pub struct ImagePlan {
    /// Replicas the shard has removed: the driver deletes their logs.
    pub remove: Vec<TopicPartition>,
    /// Replicas to recover from disk and [`Shard::open`] before [`Shard::apply_image`].
    pub open: Vec<Opening>,
    states: Vec<(TopicPartition, PartitionState)>,
    /// The brokers the image shows fenced or shutting down, handed to every replica here.
    fenced: BTreeSet<NodeId>,
}

/// A partition replica to open, with the topic's own `min.insync.replicas` if it sets one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    pub partition: TopicPartition,
    pub topic_id: TopicId,
    pub min_insync_replicas: Option<usize>,
}

struct Partition {
    topic_id: TopicId,
    generation: u64,
    driver: PartitionDriver,
    /// Controlled shutdown: new produces are refused before they reach the log.
    draining: bool,
    /// The controller decision last handed to the replica.
    applied: Option<(LeaderEpoch, PartitionEpoch)>,
    /// The replica's timer, as entered in `Shard::timers`.
    due: Option<i64>,
    /// The high watermark last reported as [`Output::Visible`].
    announced: Offset,
}

struct Waiter {
    partition: TopicPartition,
    answer: Answer,
}

/// Who hears a produce's answer.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// The driver, as [`Output::Produced`] with this token.
    Driver(u64),
    /// The group coordinator, whose records these are (its persist token).
    Group(u64),
    /// The transaction coordinator, whose records these are (its persist token).
    Txn(u64),
    /// The driver (as `Driver`), for a marker written to a `__consumer_offsets` partition:
    /// once written, the group coordinator settles the producer's transactional offsets.
    OffsetsMarker { token: u64, partition: i32, producer_id: i64, commit: bool },
}

/// Which coordinator an internal topic's partitions feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coordinator {
    Groups,
    Txns,
}

fn coordinator_of(topic: &str) -> Option<Coordinator> {
    match topic {
        OFFSETS_TOPIC => Some(Coordinator::Groups),
        TXN_TOPIC => Some(Coordinator::Txns),
        _ => None,
    }
}

/// One batch of a coordinator partition's replay.
enum Loaded {
    Records(Vec<(Bytes, Option<Bytes>)>),
    /// A transaction marker: producer id, commit.
    Marker(i64, bool),
}

/// A replay of one coordinator partition in progress.
struct CoordinatorLoad {
    epoch: LeaderEpoch,
    generation: u64,
    upto: Offset,
    records: usize,
    /// Everything below `upto` is read; the load ends once the high watermark covers it.
    read: bool,
}

pub struct Shard {
    local: NodeId,
    partitions: BTreeMap<TopicPartition, Partition>,
    /// Every topic of the last image planned, with its partition count: a partition this core
    /// does not hold is NOT_LEADER_OR_FOLLOWER if it exists, UNKNOWN_TOPIC_OR_PARTITION if not.
    known: BTreeMap<String, i32>,
    fetchers: Fetchers,
    /// The leader side of the replication throttles (KIP-73): this core's share of
    /// `leader.replication.throttled.rate`, and the partitions it leads that
    /// `leader.replication.throttled.replicas` names for this broker. The follower side is the
    /// fetchers'.
    leader_quota: ReplicationQuota,
    leader_throttled: BTreeSet<TopicPartition>,
    /// Produce request id (the replicas' request ids, unique across this shard) → who waits.
    produces: BTreeMap<u64, Waiter>,
    next_produce: u64,
    /// DeleteRecords request id (a replica request id from the produces' sequence) → the
    /// partition and the driver's token.
    deletes: BTreeMap<u64, (TopicPartition, u64)>,
    /// Produces whose transactional batch waits for its coordinator, by request id (the
    /// [`Output::VerifyTxn`] token).
    verifying: BTreeMap<u64, Verifying>,
    next_generation: u64,
    /// Partitions given input since their actions were last drained.
    dirty: BTreeSet<TopicPartition>,
    /// Every replica's next timer.
    timers: BTreeSet<(i64, TopicPartition)>,
    purgatory: Purgatory,
    outputs: VecDeque<Output>,
    groups: GroupCoordinator,
    /// Group requests waiting for the coordinator, with what their answers need.
    group_replies: BTreeMap<u64, Reply>,
    txns: TxnCoordinator,
    /// Per coordinator partition (`__consumer_offsets`, `__transaction_state`) this core
    /// leads, the leader epoch its state was loaded (or is loading) for.
    coordinator_leading: BTreeMap<TopicPartition, LeaderEpoch>,
    coordinator_loads: BTreeMap<TopicPartition, CoordinatorLoad>,
    /// Loads with nothing to read, finished at the next output (which knows the time).
    loads_done: Vec<TopicPartition>,
    /// Coordinator writes that ended (whose, durable), for the coordinators.
    coordinator_writes: Vec<(Answer, bool)>,
    /// The group coordinator's next tick, while it owns any partition.
    group_tick: Option<i64>,
}

impl Shard {
    /// `response_max_bytes` and `request_timeout_ms` are the fetchers' (see [`Fetchers::new`]).
    pub fn new(local: NodeId, response_max_bytes: i32, request_timeout_ms: i64, groups: GroupCoordinator, txns: TxnCoordinator) -> Self {
        Shard {
            local,
            partitions: BTreeMap::new(),
            known: BTreeMap::new(),
            fetchers: Fetchers::new(local, response_max_bytes, request_timeout_ms),
            leader_quota: ReplicationQuota::default(),
            leader_throttled: BTreeSet::new(),
            produces: BTreeMap::new(),
            next_produce: 0,
            deletes: BTreeMap::new(),
            verifying: BTreeMap::new(),
            next_generation: 0,
            dirty: BTreeSet::new(),
            timers: BTreeSet::new(),
            purgatory: Purgatory::default(),
            outputs: VecDeque::new(),
            groups,
            group_replies: BTreeMap::new(),
            txns,
            coordinator_leading: BTreeMap::new(),
            coordinator_loads: BTreeMap::new(),
            loads_done: Vec::new(),
            coordinator_writes: Vec::new(),
            group_tick: None,
        }
    }

    pub fn local(&self) -> NodeId {
        self.local
    }

    // ---- partitions ----

    /// A partition replica this core now owns, from the state its driver recovered from disk.
    /// It takes no role until [`Self::apply_state`]. Replaces a partition of the same name.
    pub fn open(&mut self, partition: TopicPartition, topic_id: TopicId, config: ReplicaConfig, persisted: PersistedState) {
        self.remove(&partition);
        self.next_generation += 1;
        let replica = Replica::new(self.local, config, persisted);
        let entry = Partition {
            topic_id,
            generation: self.next_generation,
            driver: PartitionDriver::new(replica),
            draining: false,
            applied: None,
            due: None,
            announced: Offset(-1),
        };
        self.partitions.insert(partition.clone(), entry);
        self.touch(partition);
    }

    /// The partition is no longer this core's (deleted, or reassigned away): its waiting
    /// produces are answered NOT_LEADER_OR_FOLLOWER, its long polls read again, and answers
    /// still due to it are dropped.
    pub fn remove(&mut self, partition: &TopicPartition) -> bool {
        let Some(entry) = self.partitions.remove(partition) else { return false };
        if let Some(due) = entry.due {
            self.timers.remove(&(due, partition.clone()));
        }
        self.dirty.remove(partition);
        self.fetchers.remove(partition);
        self.leader_throttled.remove(partition);
        let answered: Vec<u64> =
            self.produces.iter().filter(|(_, w)| &w.partition == partition).map(|(&id, _)| id).collect();
        for id in answered {
            let waiter = self.produces.remove(&id).expect("listed");
            answer_produce(&mut self.outputs, &mut self.coordinator_writes, waiter.answer, Err(ErrorCode::NotLeaderOrFollower));
        }
        let deletes: Vec<u64> = self.deletes.iter().filter(|(_, (p, _))| p == partition).map(|(&id, _)| id).collect();
        for id in deletes {
            let (_, token) = self.deletes.remove(&id).expect("listed");
            self.outputs.push_back(Output::RecordsDeleted { token, result: Err(ErrorCode::NotLeaderOrFollower) });
        }
        self.wake_partition(partition);
        self.coordinator_leadership(partition);
        true
    }

    /// What a committed metadata image asks of this core, for the partitions `owns` gives it
    /// (the driver's placement of partitions on cores): the replicas it holds that the image no
    /// longer gives this node are removed here (deleted topics, a topic re-created under a new
    /// id, reassignments away) and listed for the driver to delete their logs; the ones to open
    /// are listed for the driver to recover and [`Self::open`]; then [`Self::apply_image`] hands
    /// every owned replica its decision. The broker's cores and the simulated nodes both follow
    /// this, so which partitions a node serves is decided once.
    pub fn plan_image(&mut self, image: &MetadataImage, owns: impl Fn(&TopicPartition) -> bool) -> ImagePlan {
        let local = self.local;
        let mut states = Vec::new();
        let mut open = Vec::new();
        self.known = image.topics().values().map(|t| (t.name.clone(), t.partitions.len() as i32)).collect();
        for (&topic_id, topic) in image.topics() {
            for (index, state) in topic.partitions.iter().enumerate() {
                let partition = TopicPartition::new(topic.name.clone(), index as i32);
                if !state.replicas.contains(&local) || !owns(&partition) {
                    continue;
                }
                if state.leader == local {
                    self.expect_coordinator_leadership(&partition, state.leader_epoch);
                }
                if self.partitions.get(&partition).is_none_or(|p| p.topic_id != topic_id) {
                    let min_insync_replicas = topic.configs.get("min.insync.replicas").and_then(|v| v.parse().ok());
                    open.push(Opening { partition: partition.clone(), topic_id, min_insync_replicas });
                }
                states.push((partition, state.clone()));
            }
        }
        let wanted: BTreeSet<&TopicPartition> = states.iter().map(|(tp, _)| tp).collect();
        let reopened: BTreeSet<&TopicPartition> = open.iter().map(|o| &o.partition).collect();
        let remove: Vec<TopicPartition> =
            self.partitions.keys().filter(|tp| !wanted.contains(tp) || reopened.contains(tp)).cloned().collect();
        for partition in &remove {
            self.remove(partition);
        }
        let fenced = image.brokers().iter().filter(|(_, b)| b.fenced).map(|(&id, _)| id).collect();
        ImagePlan { remove, open, states, fenced }
    }

    /// Hands every partition of `plan` that is open its decision (see [`Self::apply_state`];
    /// one the driver could not open is skipped), then has every long poll read again, since
    /// leaderships may have moved.
    pub fn apply_image(&mut self, now_ms: i64, plan: ImagePlan) {
        for (partition, state) in &plan.states {
            if let Err(error) = self.apply_state(now_ms, partition, state) {
                tracing::debug!(topic = %partition.topic, partition = partition.partition, ?error, "partition decision not applied");
            }
            if self.partitions.get_mut(partition).is_some_and(|e| e.driver.replica_mut().handle_fenced_brokers(now_ms, &plan.fenced)) {
                self.touch(partition.clone());
            }
        }
        self.notify(None);
    }

    pub fn contains(&self, partition: &TopicPartition) -> bool {
        self.partitions.contains_key(partition)
    }

    pub fn replica(&self, partition: &TopicPartition) -> Option<&Replica> {
        self.partitions.get(partition).map(|p| p.driver.replica())
    }

    /// Whether one of the partition's disk actions is out.
    pub fn disk_busy(&self, partition: &TopicPartition) -> bool {
        self.partitions.get(partition).is_some_and(|p| p.driver.is_busy())
    }

    pub fn topic_id(&self, partition: &TopicPartition) -> Option<TopicId> {
        self.partitions.get(partition).map(|p| p.topic_id)
    }

    /// Every partition this core owns, with its topic id and replica.
    pub fn partitions(&self) -> impl Iterator<Item = (&TopicPartition, TopicId, &Replica)> {
        self.partitions.iter().map(|(tp, p)| (tp, p.topic_id, p.driver.replica()))
    }

    /// The controller's decision for the partition, from the metadata image. A decision the
    /// replica already has is not handed to it again; a new one answers the long polls
    /// reading the partition (a lost leadership is an error for them).
    pub fn apply_state(&mut self, now_ms: i64, partition: &TopicPartition, state: &PartitionState) -> Result<(), ErrorCode> {
        let local = self.local;
        let Some(entry) = self.partitions.get_mut(partition) else { return Err(ErrorCode::UnknownTopicOrPartition) };
        let seen = (state.leader_epoch, state.partition_epoch);
        if entry.applied == Some(seen) {
            return Ok(());
        }
        entry.applied = Some(seen);
        let replica = entry.driver.replica_mut();
        let result = if state.leader == local {
            replica.become_leader(
                now_ms,
                LeaderAndIsr {
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    isr: state.isr.clone(),
                    replicas: state.replicas.clone(),
                },
            )
        } else if state.leader != NodeId::NONE {
            replica.become_follower(now_ms, state.leader, state.leader_epoch, state.partition_epoch)
        } else {
            Ok(())
        };
        self.touch(partition.clone());
        self.wake_partition(partition);
        self.coordinator_leadership(partition);
        result
    }

    /// Controlled shutdown: every partition refuses new produces; -> how many produces still
    /// wait for their answer. A produce still waiting for the high watermark when leadership
    /// moves is answered NOT_LEADER_OR_FOLLOWER although the new leader may commit its records,
    /// and clients resend on that error, so a producer without idempotence would write them
    /// twice: draining first avoids that.
    pub fn drain(&mut self) -> usize {
        for entry in self.partitions.values_mut() {
            entry.draining = true;
        }
        self.produces.len()
    }

    // ---- client requests ----

    /// A produce for an owned partition, answered later as [`Output::Produced`] with `token`
    /// (acks=0 only when refused, and then nobody listens). Refused at once, before the log
    /// sees it, while draining.
    pub fn produce(
        &mut self,
        now_ms: i64,
        partition: &TopicPartition,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
        token: u64,
    ) -> Result<(), Refusal> {
        self.start_produce(now_ms, partition, records, acks, timeout_ms, None, Answer::Driver(token))
    }

    /// A transactional batch that would start its producer's transaction on the partition
    /// waits for [`Output::VerifyTxn`]'s answer when the request names its transactional id.
    #[allow(clippy::too_many_arguments)]
    fn start_produce(
        &mut self,
        now_ms: i64,
        partition: &TopicPartition,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
        transactional_id: Option<String>,
        answer: Answer,
    ) -> Result<(), Refusal> {
        let id = self.admit(partition, (acks != 0).then_some(answer))?;
        let entry = self.partitions.get_mut(partition).expect("admitted");
        let verification = if transactional_id.is_some() { TxnVerification::Ask } else { TxnVerification::Skip };
        let started = entry.driver.replica_mut().handle_txn_produce(now_ms, id, records, acks, timeout_ms, verification);
        match started {
            Err(refusal) => {
                self.produces.remove(&id);
                let (topic, partition) = (&partition.topic, partition.partition);
                warn!(%topic, partition, code = ?refusal.code, message = ?refusal.message, "refused produced records");
                return Err(refusal);
            }
            Ok(Started::Taken) => {}
            Ok(Started::Verify(unverified)) => {
                let Unverified { producer_id, producer_epoch, guard, records } = unverified;
                self.verifying.insert(id, Verifying { partition: partition.clone(), records, acks, timeout_ms, guard });
                self.outputs.push_back(Output::VerifyTxn {
                    token: id,
                    transactional_id: transactional_id.expect("asked only with an id"),
                    producer_id,
                    producer_epoch,
                    partition: (partition.topic.to_string(), partition.partition),
                });
            }
        }
        self.touch(partition.clone());
        Ok(())
    }

    /// The coordinator's answer to [`Output::VerifyTxn`]: the produce goes on (its batch may
    /// start the transaction unless a marker for the producer was written meanwhile) or is
    /// answered with the error (see [`super::txn::verify_result`]).
    pub fn handle_txn_verified(&mut self, now_ms: i64, token: u64, result: Result<(), ErrorCode>) {
        let Some(v) = self.verifying.remove(&token) else { return };
        let waiting = self.produces.contains_key(&token);
        let error = match (&result, self.partitions.get(&v.partition)) {
            (_, None) => Some(ErrorCode::NotLeaderOrFollower),
            (_, Some(entry)) if entry.draining => Some(ErrorCode::NotLeaderOrFollower),
            (Err(error), _) => Some(*error),
            (Ok(()), Some(_)) => None,
        };
        if let Some(error) = error {
            let (topic, partition) = (&v.partition.topic, v.partition.partition);
            debug!(%topic, partition, ?error, "a transactional batch failed its coordinator's verification");
            if let Some(waiter) = self.produces.remove(&token) {
                answer_produce(&mut self.outputs, &mut self.coordinator_writes, waiter.answer, Err(error));
            }
            return;
        }
        if v.acks != 0 && !waiting {
            // Answered already (the partition moved away and back): nobody waits for it.
            return;
        }
        let entry = self.partitions.get_mut(&v.partition).expect("checked");
        let verified = TxnVerification::Verified(v.guard);
        let started = entry.driver.replica_mut().handle_txn_produce(now_ms, token, v.records, v.acks, v.timeout_ms, verified);
        if let Err(refusal) = started {
            // The records were checked before they were verified; they are refused only if the
            // partition's rules changed meanwhile.
            if let Some(waiter) = self.produces.remove(&token) {
                answer_produce(&mut self.outputs, &mut self.coordinator_writes, waiter.answer, Err(refusal.code));
            }
        }
        self.touch(v.partition);
    }

    /// A write for an owned partition gets its request id, and `answer` (if anyone listens)
    /// waits under it; refused while draining, before the log sees it.
    fn admit(&mut self, partition: &TopicPartition, answer: Option<Answer>) -> Result<u64, ErrorCode> {
        let Some(entry) = self.partitions.get(partition) else { return Err(ErrorCode::NotLeaderOrFollower) };
        if entry.draining {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let id = self.next_produce;
        self.next_produce += 1;
        if let Some(answer) = answer {
            self.produces.insert(id, Waiter { partition: partition.clone(), answer });
        }
        Ok(id)
    }

    /// WriteTxnMarkers for an owned partition: its leader writes the marker, answered later as
    /// [`Output::Produced`] with `token` once the ISR holds it (see
    /// [`Replica::handle_write_marker`]). Refused at once while draining.
    #[allow(clippy::too_many_arguments)]
    pub fn write_marker(
        &mut self,
        now_ms: i64,
        partition: &TopicPartition,
        producer_id: i64,
        producer_epoch: i16,
        marker: crate::batch::ControlMarker,
        timeout_ms: i32,
        token: u64,
    ) -> Result<(), ErrorCode> {
        let answer = if &*partition.topic == OFFSETS_TOPIC {
            Answer::OffsetsMarker { token, partition: partition.partition, producer_id, commit: marker.commit }
        } else {
            Answer::Driver(token)
        };
        let id = self.admit(partition, Some(answer))?;
        let entry = self.partitions.get_mut(partition).expect("admitted");
        entry.driver.replica_mut().handle_write_marker(now_ms, id, producer_id, producer_epoch, marker, timeout_ms);
        self.touch(partition.clone());
        Ok(())
    }

    /// One partition of a Fetch (a follower's or a consumer's): the replica's answer and the
    /// log start an error answer carries. `None` when this core does not hold the partition.
    pub fn fetch(&mut self, now_ms: i64, partition: &TopicPartition, request: &FetchRequest) -> Option<(FetchAnswer, Offset)> {
        let entry = self.partitions.get_mut(partition)?;
        let answer = entry.driver.replica_mut().handle_fetch(now_ms, request);
        let log_start = entry.driver.replica().log_start_offset();
        // A consumer's fetch changes nothing in the replica (it only reads), so only a
        // follower's may have given the partition something to do.
        if request.replica_id != NodeId::NONE {
            self.touch(partition.clone());
        }
        Some((answer, log_start))
    }

    /// OffsetForLeaderEpoch for an owned partition, answered by the leader's epoch cache.
    pub fn offset_for_leader_epoch(
        &self,
        partition: &TopicPartition,
        current: LeaderEpoch,
        requested: LeaderEpoch,
    ) -> Option<Result<EpochEndOffset, ErrorCode>> {
        Some(self.replica(partition)?.handle_offset_for_leader_epoch(current, requested))
    }

    /// NOT_LEADER_OR_FOLLOWER for a partition of the image this core does not hold (clients
    /// refresh their metadata), UNKNOWN_TOPIC_OR_PARTITION for one the image lacks.
    fn missing(&self, partition: &TopicPartition) -> ErrorCode {
        match self.known.get(&*partition.topic) {
            Some(&count) if (0..count).contains(&partition.partition) => ErrorCode::NotLeaderOrFollower,
            _ => ErrorCode::UnknownTopicOrPartition,
        }
    }

    /// A Produce's partition ([`partitions::ProduceCall`]) on its owning core: as
    /// [`Self::produce`], with UNKNOWN_TOPIC_OR_PARTITION for a partition the image lacks.
    pub fn produce_part(&mut self, now_ms: i64, part: ProducePart, token: u64) -> Result<(), Refusal> {
        if !self.partitions.contains_key(&part.partition) {
            return Err(self.missing(&part.partition).into());
        }
        self.start_produce(now_ms, &part.partition, part.records, part.acks, part.timeout_ms, part.transactional_id, Answer::Driver(token))
    }

    /// A Fetch's partition ([`partitions::FetchCall`]) on its owning core: the replica's
    /// answer, which the executor completes with the log range it names.
    pub fn fetch_part(&mut self, now_ms: i64, part: &FetchPart) -> PartRead {
        let (answer, log_start) = self
            .fetch(now_ms, &part.partition, &part.request)
            .unwrap_or_else(|| (FetchAnswer::Error(self.missing(&part.partition)), Offset(-1)));
        let follower = part.request.replica_id;
        // Kafka counts every byte of a throttled partition sent to a follower, but holds back
        // only replicas outside the ISR: catching up is throttled, staying in sync is not.
        let leader_throttled = follower.0 >= 0 && self.leader_throttled.contains(&part.partition);
        let answer = match answer {
            FetchAnswer::Read { read_to, high_watermark, last_stable_offset, log_start_offset }
                if leader_throttled
                    && read_to > part.request.fetch_offset
                    && self.replica(&part.partition).is_some_and(|r| !r.isr().contains(&follower))
                    && self.leader_quota.is_exceeded(now_ms) =>
            {
                FetchAnswer::Read { read_to: part.request.fetch_offset, high_watermark, last_stable_offset, log_start_offset }
            }
            other => other,
        };
        let aborted = match answer {
            FetchAnswer::Read { read_to, .. } if part.request.read_committed => {
                let replica = self.replica(&part.partition).map(|r| r.producers());
                Some(replica.map_or_else(Vec::new, |p| p.aborted_between(part.request.fetch_offset, read_to)))
            }
            _ => None,
        };
        PartRead { answer, log_start, fetch_offset: part.request.fetch_offset, max_bytes: part.request.max_bytes, aborted, leader_throttled }
    }

    /// Bytes sent to followers for partitions under the leader's replication throttle (the
    /// reads of [`PartRead::leader_throttled`]), once they are read.
    pub fn record_leader_throttled(&mut self, now_ms: i64, bytes: u64) {
        self.leader_quota.record(now_ms, bytes);
    }

    /// `replication.quota.window.num` and `.size.seconds` (static settings); the bounds stay.
    pub fn set_replication_quota_window(&mut self, window: QuotaWindow) {
        let bound = self.leader_quota.bound();
        self.leader_quota = ReplicationQuota::new(window);
        self.leader_quota.set_bound(bound);
        self.fetchers.set_throttle_window(window);
    }

    /// The throttle rates from the broker's dynamic configs, this core taking `1 / cores` of
    /// each: the rates are per broker, and a core measures only its own partitions' traffic.
    pub fn set_replication_throttle_rates(&mut self, layers: &BrokerLayers, cores: usize) {
        let cores = u64::try_from(cores.max(1)).unwrap_or(1);
        let (leader, follower) = replication_quota::throttled_rates(layers);
        let share = |rate: Option<u64>| rate.map(|r| (r / cores).max(u64::from(r > 0)));
        let (leader, follower) = (share(leader), share(follower));
        if (leader, follower) != (self.leader_quota.bound(), self.fetchers.throttle_bound()) {
            info!(leader_bytes_per_s = ?leader, follower_bytes_per_s = ?follower, "replication throttle rates (this core's share)");
        }
        self.leader_quota.set_bound(leader);
        self.fetchers.set_throttle_bound(follower);
    }

    /// Whether the topic's `*.replication.throttled.replicas` name this partition on this
    /// broker, for the leader and the follower side.
    pub fn set_replication_throttled(&mut self, partition: &TopicPartition, config: &TopicConfig) {
        let named = |name: &str| {
            config.value(name).is_some_and(|v| Throttled::parse(v, self.local).contains(partition.partition))
        };
        let (leader, follower) = (named(replication_quota::LEADER_THROTTLED_REPLICAS), named(replication_quota::FOLLOWER_THROTTLED_REPLICAS));
        let changed = if leader { self.leader_throttled.insert(partition.clone()) } else { self.leader_throttled.remove(partition) }
            | self.fetchers.set_throttled(partition, follower);
        if changed {
            info!(topic = %partition.topic, partition = partition.partition, leader, follower, "replication throttle of the partition");
        }
    }

    /// A ListOffsets partition on its owning core, answered by the leader: the latest offset
    /// (-1) is the high watermark, the earliest (-2) the log start; a time is searched in the
    /// log by the executor. Other negative times (KIP-734's max timestamp, -3) are not
    /// supported.
    pub fn list_offsets(&self, part: &ListOffsetsPart) -> OffsetLookup {
        let leader = self.replica(&part.partition).filter(|r| r.role() == Role::Leader);
        let Some(replica) = leader else {
            return OffsetLookup::Answered(ListOffsetsResult::error(self.missing(&part.partition)));
        };
        let leader_epoch = replica.leader_epoch();
        let at = |offset: Offset| ListOffsetsResult { error: None, offset: offset.0, timestamp: -1, leader_epoch };
        match part.timestamp {
            -1 if part.read_committed => OffsetLookup::Answered(at(replica.last_stable_offset())),
            -1 => OffsetLookup::Answered(at(replica.high_watermark())),
            -2 => OffsetLookup::Answered(at(replica.log_start_offset())),
            t if t < 0 => OffsetLookup::Answered(ListOffsetsResult::error(ErrorCode::UnsupportedVersion)),
            timestamp => OffsetLookup::ByTimestamp { timestamp, leader_epoch },
        }
    }

    /// A DeleteRecords partition ([`partitions::DeleteRecordsCall`]) on its owning core:
    /// [`Replica::handle_delete_records`] on the leader, answered later as
    /// [`Output::RecordsDeleted`] with `token` once the new log start is on disk here and the
    /// live followers have taken it (or the request's timeout passed). Refused
    /// at once as the replica refuses it, with UNKNOWN_TOPIC_OR_PARTITION for a partition the
    /// image lacks.
    pub fn delete_records_part(&mut self, now_ms: i64, part: &DeleteRecordsPart, token: u64) -> Result<(), ErrorCode> {
        let Some(entry) = self.partitions.get_mut(&part.partition) else { return Err(self.missing(&part.partition)) };
        let id = self.next_produce;
        entry.driver.replica_mut().handle_delete_records(now_ms, id, part.offset, part.timeout_ms)?;
        self.next_produce += 1;
        self.deletes.insert(id, (part.partition.clone(), token));
        self.touch(part.partition.clone());
        Ok(())
    }

    /// A DescribeProducers partition on its owning core: the leader's producer state
    /// (id, epoch, last sequence per producer).
    pub fn describe_producers(&self, partition: &TopicPartition) -> Result<Vec<(i64, i16, i32)>, ErrorCode> {
        match self.replica(partition).filter(|r| r.role() == Role::Leader) {
            Some(replica) => Ok(replica.producers().active().collect()),
            None => Err(self.missing(partition)),
        }
    }

    /// An OffsetForLeaderEpoch partition on its owning core ([`Self::offset_for_leader_epoch`]).
    pub fn epoch_end(&self, part: &EpochEndPart) -> Result<EpochEndOffset, ErrorCode> {
        self.offset_for_leader_epoch(&part.partition, part.current_leader_epoch, part.leader_epoch)
            .unwrap_or_else(|| Err(self.missing(&part.partition)))
    }

    // ---- completions and answers ----

    /// The partition's disk action handed out last is done (`completion` as
    /// [`PartitionDriver::finish`] takes it). Ignored for a partition no longer open in that
    /// generation.
    pub fn finish(&mut self, now_ms: i64, partition: &TopicPartition, generation: u64, completion: Option<Completion>) {
        let Some(entry) = self.partitions.get_mut(partition).filter(|p| p.generation == generation) else { return };
        entry.driver.finish(now_ms, completion);
        self.touch(partition.clone());
    }

    /// Retention moved the partition's log start (never above its high watermark).
    pub fn handle_log_start_advanced(&mut self, now_ms: i64, partition: &TopicPartition, start: Offset) {
        let Some(entry) = self.partitions.get_mut(partition) else { return };
        entry.driver.replica_mut().handle_log_start_advanced(now_ms, start);
        self.touch(partition.clone());
    }

    /// A topic's configs changed (AlterConfigs): the replica takes `config` for what comes next.
    pub fn reconfigure(&mut self, now_ms: i64, partition: &TopicPartition, config: ReplicaConfig) {
        let Some(entry) = self.partitions.get_mut(partition) else { return };
        if entry.driver.replica().config() == &config {
            return;
        }
        entry.driver.replica_mut().reconfigure(now_ms, config);
        self.touch(partition.clone());
    }

    /// The answer (or the transport's failure) to an [`Output::Fetch`].
    pub fn handle_fetch_response(
        &mut self,
        now_ms: i64,
        leader: NodeId,
        request_id: u64,
        answer: Result<WireFetchResponse, ErrorCode>,
    ) {
        let deliveries = self.fetchers.handle_response(now_ms, leader, request_id, answer);
        self.deliver(now_ms, deliveries);
    }

    pub fn handle_alter_partition_response(
        &mut self,
        now_ms: i64,
        partition: &TopicPartition,
        generation: u64,
        request_id: u64,
        result: Result<LeaderAndIsr, ErrorCode>,
    ) {
        let Some(entry) = self.partitions.get_mut(partition).filter(|p| p.generation == generation) else { return };
        entry.driver.replica_mut().handle_alter_partition_response(now_ms, request_id, result);
        self.touch(partition.clone());
    }

    pub fn handle_epoch_answer(
        &mut self,
        now_ms: i64,
        partition: &TopicPartition,
        generation: u64,
        request_id: u64,
        result: Result<EpochEndOffset, ErrorCode>,
    ) {
        let Some(entry) = self.partitions.get_mut(partition).filter(|p| p.generation == generation) else { return };
        entry.driver.replica_mut().handle_offset_for_leader_epoch_response(now_ms, request_id, result);
        self.touch(partition.clone());
    }

    fn deliver(&mut self, now_ms: i64, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            if let Some(entry) = self.partitions.get_mut(&delivery.partition) {
                entry.driver.replica_mut().handle_fetch_response(now_ms, delivery.fetch_id, delivery.response);
                self.touch(delivery.partition);
            }
        }
    }

    // ---- groups ----

    /// A group request for this core's coordinator, answered later as [`Output::GroupReply`]
    /// with `id` (unique among the driver's requests still waiting).
    pub fn group_request(&mut self, now_ms: i64, id: u64, request: GroupRequest) {
        self.group_replies.insert(id, request.reply);
        self.groups.handle(now_ms, id, request.call);
    }

    /// The metadata image makes this node the leader of a coordinator partition
    /// (`__consumer_offsets-N`, `__transaction_state-N`) at `epoch`, and this core will own it:
    /// until its replica leads and its state loads, requests get COORDINATOR_LOAD_IN_PROGRESS
    /// (which clients retry) rather than NOT_COORDINATOR, since FindCoordinator already names
    /// this node.
    fn expect_coordinator_leadership(&mut self, partition: &TopicPartition, epoch: LeaderEpoch) {
        let Some(kind) = coordinator_of(&partition.topic) else { return };
        if self.coordinator_leading.get(partition) != Some(&epoch) {
            match kind {
                Coordinator::Groups => self.groups.begin_load(partition.partition),
                Coordinator::Txns => self.txns.begin_load(partition.partition, epoch.0),
            }
        }
    }

    /// Follows the leadership of a coordinator partition's replica: a new one replays the
    /// partition to its log end (a leader never truncates its own log, so all of it becomes
    /// committed or this node loses leadership first); a lost one drops the partition's state.
    fn coordinator_leadership(&mut self, partition: &TopicPartition) {
        let Some(kind) = coordinator_of(&partition.topic) else { return };
        let p = partition.partition;
        let entry = self.partitions.get(partition);
        let leading = entry
            .map(|e| e.driver.replica())
            .filter(|r| r.role() == Role::Leader)
            .map(|r| r.leader_epoch());
        let previous = self.coordinator_leading.get(partition).copied();
        if previous == leading {
            return;
        }
        self.coordinator_loads.remove(partition);
        match (leading, entry) {
            (Some(epoch), Some(entry)) => {
                self.coordinator_leading.insert(partition.clone(), epoch);
                match kind {
                    Coordinator::Groups => {
                        self.groups.begin_load(p);
                        // Due at once (a spurious tick changes nothing); later ones every GROUP_TICK_MS.
                        self.group_tick.get_or_insert(i64::MIN);
                    }
                    Coordinator::Txns => self.txns.begin_load(p, epoch.0),
                }
                let replica = entry.driver.replica();
                let (from, upto) = (replica.log_start_offset(), replica.log_end_offset());
                let generation = entry.generation;
                self.coordinator_loads.insert(partition.clone(), CoordinatorLoad { epoch, generation, upto, records: 0, read: false });
                if from < upto {
                    self.outputs.push_back(Output::ReadCoordinatorLog {
                        partition: partition.clone(),
                        generation,
                        from,
                        upto,
                        max_bytes: GROUP_LOAD_READ_BYTES,
                    });
                } else {
                    self.coordinator_loads.get_mut(partition).expect("inserted").read = true;
                    self.maybe_finish_coordinator_load(partition);
                }
            }
            _ => {
                let expected = match kind {
                    Coordinator::Groups => self.groups.owned_partitions().contains(&p),
                    Coordinator::Txns => self.txns.owned_partitions().contains(&p),
                };
                self.coordinator_leading.remove(partition);
                if previous.is_some() || expected {
                    match kind {
                        Coordinator::Groups => self.groups.unload(p),
                        Coordinator::Txns => self.txns.unload(p),
                    }
                    info!(partition = p, "no longer coordinating for {}-{p}", partition.topic);
                }
            }
        }
    }

    /// A chunk of a replay ([`Output::ReadCoordinatorLog`]) read, or why it could not be. A
    /// failed read leaves the partition loading: clients retry, and go elsewhere once
    /// leadership moves, as Kafka's do.
    pub fn handle_coordinator_read(&mut self, now_ms: i64, partition: &TopicPartition, generation: u64, read: Result<Bytes, String>) {
        let p = partition.partition;
        let Some(kind) = coordinator_of(&partition.topic) else { return };
        let Some(load) = self.coordinator_loads.get(partition).filter(|l| l.generation == generation) else { return };
        let upto = load.upto;
        // Batch by batch, in log order: a transaction marker in `__consumer_offsets` settles
        // the offsets its producer committed before it.
        let decoded = read.and_then(|chunk| {
            let mut batches = Vec::new();
            for (position, header) in batch::scan_headers(&chunk) {
                let bytes = chunk.slice(position..position + header.total_len());
                if header.is_control() {
                    if let Some(marker) = batch::control_marker(&bytes) {
                        batches.push(Loaded::Marker(header.producer_id, marker.commit));
                    }
                } else {
                    batches.push(Loaded::Records(records::decode_key_values(&bytes)?));
                }
            }
            let next = batch::scan_headers(&chunk).last().map(|(_, h)| Offset(h.next_offset()));
            Ok((next, batches))
        });
        let (next, batches) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                warn!(topic = %partition.topic, partition = p, %error, "loading coordinator state failed");
                self.coordinator_loads.remove(partition);
                return;
            }
        };
        let mut loaded = 0;
        for loaded_batch in batches {
            let records = match loaded_batch {
                Loaded::Marker(producer_id, commit) => {
                    if kind == Coordinator::Groups {
                        self.groups.handle_txn_marker(now_ms, p, producer_id, commit, true);
                    }
                    continue;
                }
                Loaded::Records(records) => records,
            };
            for (key, value) in records {
                match kind {
                    Coordinator::Groups => match GroupRecord::decode(key, value) {
                        Ok(record) => self.groups.load(now_ms, record),
                        Err(error) => warn!(partition = p, %error, "skipping an unreadable group record"),
                    },
                    Coordinator::Txns => match TxnRecord::decode(key, value) {
                        Ok(record) => self.txns.load(now_ms, record),
                        Err(error) => warn!(partition = p, %error, "skipping an unreadable transaction record"),
                    },
                }
                loaded += 1;
            }
        }
        self.coordinator_loads.get_mut(partition).expect("checked").records += loaded;
        match next {
            Some(next) if next < upto => self.outputs.push_back(Output::ReadCoordinatorLog {
                partition: partition.clone(),
                generation,
                from: next,
                upto,
                max_bytes: GROUP_LOAD_READ_BYTES,
            }),
            _ => {
                self.coordinator_loads.get_mut(partition).expect("checked").read = true;
                self.maybe_finish_coordinator_load(partition);
                let _ = now_ms;
            }
        }
    }

    /// A coordinator serves a partition's state only once all of it is committed: the records
    /// it read past the high watermark (a previous leadership's tail) may still be lost with
    /// a leader change, and an answer given from them would then be undone.
    fn maybe_finish_coordinator_load(&mut self, partition: &TopicPartition) {
        let Some(load) = self.coordinator_loads.get(partition).filter(|l| l.read) else { return };
        let high_watermark = self.partitions.get(partition).map(|e| e.driver.replica().high_watermark());
        if high_watermark.is_some_and(|hw| hw >= load.upto) && !self.loads_done.contains(partition) {
            self.loads_done.push(partition.clone());
        }
    }

    fn finish_coordinator_load(&mut self, now_ms: i64, partition: &TopicPartition) {
        let Some(load) = self.coordinator_loads.remove(partition) else { return };
        let p = partition.partition;
        match coordinator_of(&partition.topic) {
            Some(Coordinator::Groups) => self.groups.finish_load(p),
            Some(Coordinator::Txns) => self.txns.finish_load(now_ms, p),
            None => return,
        }
        info!(partition = p, epoch = %load.epoch, records = load.records, "loaded the coordinator state of {}-{p}", partition.topic);
    }

    // ---- transactions ----

    /// A call for this core's transaction coordinator, answered later as
    /// [`Output::TxnReply`] with `id` (unique among the driver's requests still waiting).
    pub fn txn_request(&mut self, now_ms: i64, id: u64, call: txn::Call) {
        self.txns.handle(now_ms, id, call);
    }

    /// The answer to [`Output::NewProducerId`].
    pub fn handle_txn_producer_id(&mut self, now_ms: i64, token: u64, result: Result<i64, ErrorCode>) {
        self.txns.handle_producer_id(now_ms, token, result);
    }

    /// The answer to [`Output::WriteMarkers`]: per partition, written (`None`) or why not.
    pub fn handle_markers_written(&mut self, now_ms: i64, token: u64, results: Vec<((String, i32), Option<ErrorCode>)>) {
        self.txns.handle_markers_written(now_ms, token, results);
    }

    /// The transaction coordinator's actions. -> whether there were any.
    fn drain_txns(&mut self, now_ms: i64) -> bool {
        let mut any = false;
        while let Some(action) = self.txns.poll_action() {
            any = true;
            match action {
                txn::Action::Reply(id, response) => self.outputs.push_back(Output::TxnReply { id, response }),
                txn::Action::Persist { token, partition, records } => {
                    let tp = TopicPartition::new(TXN_TOPIC, partition);
                    let encoded: Vec<(Bytes, Option<Bytes>)> = records.iter().map(TxnRecord::encode).collect();
                    let batch = records::encode_batch(&encoded, now_ms);
                    let started = self.start_produce(now_ms, &tp, batch, -1, GROUP_COMMIT_TIMEOUT_MS, None, Answer::Txn(token));
                    if let Err(error) = started {
                        warn!(partition, ?error, "replicating transaction records failed");
                        self.coordinator_writes.push((Answer::Txn(token), false));
                    }
                }
                txn::Action::NewProducerId { token } => self.outputs.push_back(Output::NewProducerId { token }),
                txn::Action::WriteMarkers { token, producer_id, producer_epoch, coordinator_epoch, commit, partitions } => {
                    let marker = crate::batch::ControlMarker { commit, coordinator_epoch };
                    self.outputs.push_back(Output::WriteMarkers { token, producer_id, producer_epoch, marker, partitions });
                }
            }
        }
        any
    }

    /// The coordinator's actions: answers out as Kafka responses, records to its partition.
    /// -> whether there were any.
    fn drain_groups(&mut self, now_ms: i64) -> bool {
        let mut any = false;
        while let Some(action) = self.groups.poll_action() {
            any = true;
            match action {
                group::Action::Reply(id, response) => {
                    if let Some(reply) = self.group_replies.remove(&id) {
                        self.outputs.push_back(Output::GroupReply { id, response: groups::answer(reply, response) });
                    }
                }
                group::Action::Persist { token, partition, records } => {
                    // acks=all: an offset commit is acknowledged only once the ISR holds it, as
                    // Kafka writes group records.
                    let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
                    let encoded: Vec<(Bytes, Option<Bytes>)> = records.iter().map(GroupRecord::encode).collect();
                    let batch = records::encode_batch(&encoded, now_ms);
                    let started = self.start_produce(now_ms, &tp, batch, -1, GROUP_COMMIT_TIMEOUT_MS, None, Answer::Group(token));
                    if let Err(error) = started {
                        warn!(partition, ?error, "replicating group records failed");
                        self.coordinator_writes.push((Answer::Group(token), false));
                    }
                }
            }
        }
        any
    }

    // ---- the fetch purgatory ----

    /// Parks a long poll until news of one of `partitions` or `deadline_ms` (then
    /// [`Output::Woken`] with `wait`, once). Park before reading, so that news arriving between
    /// the read and the wait is not missed. A long poll parks again under the same `wait`
    /// after each read that did not answer it, and leaves with [`Self::unpark`].
    pub fn park(&mut self, wait: u64, partitions: Arc<[TopicPartition]>, deadline_ms: i64) {
        self.purgatory.park(wait, partitions, deadline_ms);
    }

    /// The long poll answered without waiting (or gave up): it leaves the purgatory.
    pub fn unpark(&mut self, wait: u64) {
        self.purgatory.cancel(wait);
    }

    /// Long polls between [`Self::park`] and [`Self::unpark`], woken or not.
    pub fn parked_long_polls(&self) -> usize {
        self.purgatory.waits.len()
    }

    /// News of a partition owned by another core (`None`: of every partition).
    pub fn notify(&mut self, partition: Option<&TopicPartition>) {
        match partition {
            Some(tp) => self.wake_partition(tp),
            None => {
                self.purgatory.wake_all();
                self.drain_woken();
            }
        }
    }

    fn wake_partition(&mut self, partition: &TopicPartition) {
        self.purgatory.wake(partition);
        self.drain_woken();
    }

    fn drain_woken(&mut self) {
        while let Some(wait) = self.purgatory.woken.pop_front() {
            self.outputs.push_back(Output::Woken { wait });
        }
    }

    // ---- time and output ----

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<i64> {
        [
            self.timers.first().map(|(due, _)| *due),
            self.fetchers.poll_timeout(),
            self.purgatory.poll_timeout(),
            self.group_tick,
            self.txns.poll_timeout(),
        ]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now_ms: i64) {
        while let Some((due, partition)) = self.timers.first().cloned() {
            if due > now_ms {
                break;
            }
            self.timers.pop_first();
            let entry = self.partitions.get_mut(&partition).expect("timers name open partitions");
            entry.due = None;
            entry.driver.replica_mut().handle_timeout(now_ms);
            self.touch(partition);
        }
        let expired = self.fetchers.handle_timeout(now_ms);
        self.deliver(now_ms, expired);
        self.purgatory.expire(now_ms);
        self.drain_woken();
        if self.group_tick.is_some_and(|due| due <= now_ms) {
            self.groups.handle_timeout(now_ms);
            self.group_tick = (!self.groups.owned_partitions().is_empty()).then_some(now_ms + GROUP_TICK_MS);
        }
        if self.txns.poll_timeout().is_some_and(|due| due <= now_ms) {
            self.txns.handle_timeout(now_ms);
        }
    }

    /// The next output to perform. `now_ms` times the fetchers' rounds.
    pub fn poll_output(&mut self, now_ms: i64) -> Option<Output> {
        loop {
            if let Some(output) = self.outputs.pop_front() {
                return Some(output);
            }
            for partition in std::mem::take(&mut self.loads_done) {
                self.finish_coordinator_load(now_ms, &partition);
            }
            for (whose, durable) in std::mem::take(&mut self.coordinator_writes) {
                match whose {
                    Answer::Group(token) => self.groups.handle_persisted(token, durable),
                    Answer::Txn(token) => self.txns.handle_persisted(now_ms, token, durable),
                    Answer::OffsetsMarker { partition, producer_id, commit, .. } => {
                        if durable {
                            self.groups.handle_txn_marker(now_ms, partition, producer_id, commit, false);
                        }
                    }
                    Answer::Driver(_) => {}
                }
            }
            if self.drain_groups(now_ms) || self.drain_txns(now_ms) {
                continue;
            }
            if let Some(partition) = self.dirty.pop_first() {
                self.drain_partition(partition);
                continue;
            }
            let outgoing = self.fetchers.poll_request(now_ms)?;
            return Some(Output::Fetch(outgoing));
        }
    }

    fn touch(&mut self, partition: TopicPartition) {
        self.dirty.insert(partition);
    }

    /// Takes the partition's actions that may run now, in its driver's order; sends go to
    /// the fetchers, replies to their waiters, the rest out.
    fn drain_partition(&mut self, partition: TopicPartition) {
        let Some(entry) = self.partitions.get_mut(&partition) else { return };
        let generation = entry.generation;
        while let Some(action) = entry.driver.poll_action() {
            match action {
                Action::SendFetch { to, fetch_id, request } => {
                    self.fetchers.enqueue(to, partition.clone(), fetch_id, request);
                }
                Action::SendOffsetForLeaderEpoch { to, request_id, current_leader_epoch, leader_epoch } => {
                    self.outputs.push_back(Output::EpochQuery {
                        partition: partition.clone(),
                        generation,
                        to,
                        request_id,
                        current_leader_epoch,
                        leader_epoch,
                    });
                }
                Action::SendAlterPartition { request_id, request } => {
                    self.outputs.push_back(Output::AlterPartition {
                        partition: partition.clone(),
                        generation,
                        topic_id: entry.topic_id,
                        request_id,
                        request,
                    });
                }
                Action::ReplyProduce { request_id, result } => {
                    if let Some(waiter) = self.produces.remove(&request_id) {
                        answer_produce(&mut self.outputs, &mut self.coordinator_writes, waiter.answer, result);
                    }
                }
                Action::ReplyDeleteRecords { request_id, result } => {
                    if let Some((_, token)) = self.deletes.remove(&request_id) {
                        self.outputs.push_back(Output::RecordsDeleted { token, result });
                    }
                }
                disk => self.outputs.push_back(Output::Disk { partition: partition.clone(), generation, action: disk }),
            }
        }
        let visible = entry.driver.poll_visible();
        if visible.is_some() && coordinator_of(&partition.topic).is_some() {
            self.maybe_finish_coordinator_load(&partition);
        }
        let Some(entry) = self.partitions.get_mut(&partition) else { return };
        let due = entry.driver.replica().poll_timeout();
        if due != entry.due {
            if let Some(old) = entry.due {
                self.timers.remove(&(old, partition.clone()));
            }
            if let Some(new) = due {
                self.timers.insert((new, partition.clone()));
            }
            entry.due = due;
        }
        if let Some((high_watermark, _)) = visible {
            // Long polls reading the partition: a follower waits for data, a consumer for the
            // high watermark. Only news a long poll may wait for wakes one, here or on another
            // core: a consumer woken by a written end it may not read yet reads for nothing.
            if high_watermark != entry.announced || entry.driver.replica().has_followers() {
                entry.announced = high_watermark;
                self.outputs.push_back(Output::Visible { partition: partition.clone(), high_watermark });
                self.wake_partition(&partition);
            }
        }
    }

    // ---- read-only views, for metrics ----

    /// Produces waiting for their answer (Kafka's produce purgatory: acks=all waiting for
    /// the high watermark, and acks=1 for their append).
    pub fn waiting_produces(&self) -> usize {
        self.produces.len()
    }

    /// The group coordinator of this core's `__consumer_offsets` partitions.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }
}

/// Hands a produce's answer to whoever waits for it: the driver, or (at the shard's next
/// output) the coordinator whose records it wrote.
fn answer_produce(outputs: &mut VecDeque<Output>, coordinator_writes: &mut Vec<(Answer, bool)>, answer: Answer, result: Result<ProduceAck, ErrorCode>) {
    match answer {
        Answer::Driver(token) => outputs.push_back(Output::Produced { token, result }),
        Answer::OffsetsMarker { token, .. } => {
            coordinator_writes.push((answer, result.is_ok()));
            outputs.push_back(Output::Produced { token, result });
        }
        coordinator => {
            if let Err(error) = &result {
                warn!(?error, "replicating coordinator records failed");
            }
            coordinator_writes.push((coordinator, result.is_ok()));
        }
    }
}

/// The fetch purgatory (Kafka's `DelayedFetch`, keyed by partition): each parked long poll
/// waits for news of one of its partitions or its deadline, and news of a partition wakes only
/// the long polls reading it.
///
/// A long poll reads, parks, is woken and parks again under the same `wait` until it is
/// answered: its registration under its partitions stays from its first park to
/// [`Self::cancel`] (or its deadline), and a wake only disarms it, so each read after the
/// first costs one lookup however many partitions it watches.
#[derive(Debug, Default)]
struct Purgatory {
    waits: BTreeMap<u64, Wait>,
    /// Partition → the long polls registered on it. A partition's entry stays when its last
    /// wait leaves (a consumer's next long poll watches the same partitions); entries without
    /// waits go when every long poll is woken (a new metadata image).
    watchers: BTreeMap<TopicPartition, BTreeSet<u64>>,
    deadlines: BTreeSet<(i64, u64)>,
    woken: VecDeque<u64>,
}

#[derive(Debug)]
struct Wait {
    partitions: Arc<[TopicPartition]>,
    deadline_ms: i64,
    /// Parked, so the next news wakes it; a woken long poll is disarmed until it parks again.
    armed: bool,
}

impl Purgatory {
    fn park(&mut self, wait: u64, partitions: Arc<[TopicPartition]>, deadline_ms: i64) {
        if let Some(parked) = self.waits.get_mut(&wait) {
            if Arc::ptr_eq(&parked.partitions, &partitions) && parked.deadline_ms == deadline_ms {
                parked.armed = true;
                return;
            }
        }
        self.cancel(wait);
        for tp in partitions.iter() {
            match self.watchers.get_mut(tp) {
                Some(waits) => {
                    waits.insert(wait);
                }
                None => {
                    self.watchers.insert(tp.clone(), BTreeSet::from([wait]));
                }
            }
        }
        self.deadlines.insert((deadline_ms, wait));
        self.waits.insert(wait, Wait { partitions, deadline_ms, armed: true });
    }

    /// Takes `wait` out; -> whether it was parked (armed).
    fn cancel(&mut self, wait: u64) -> bool {
        let Some(gone) = self.waits.remove(&wait) else { return false };
        self.deadlines.remove(&(gone.deadline_ms, wait));
        for tp in gone.partitions.iter() {
            if let Some(set) = self.watchers.get_mut(tp) {
                set.remove(&wait);
            }
        }
        gone.armed
    }

    fn wake(&mut self, partition: &TopicPartition) {
        let Some(registered) = self.watchers.get(partition) else { return };
        for wait in registered {
            if let Some(parked) = self.waits.get_mut(wait).filter(|w| w.armed) {
                parked.armed = false;
                self.woken.push_back(*wait);
            }
        }
    }

    fn wake_all(&mut self) {
        let waits: Vec<u64> = self.waits.keys().copied().collect();
        for wait in waits {
            if self.cancel(wait) {
                self.woken.push_back(wait);
            }
        }
        self.watchers.clear();
    }

    /// Long polls past their deadline leave; a parked one is woken to answer.
    fn expire(&mut self, now_ms: i64) {
        while let Some(&(deadline, wait)) = self.deadlines.first() {
            if deadline > now_ms {
                break;
            }
            if self.cancel(wait) {
                self.woken.push_back(wait);
            }
        }
    }

    fn poll_timeout(&self) -> Option<i64> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::encode_batch;
    use crate::controller::MetadataRecord;
    use crate::group::GroupConfig;
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::{OffsetCommitRequest, OffsetFetchRequest};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::Compression;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn leader_state() -> PartitionState {
        PartitionState {
            replicas: vec![NodeId(1)],
            isr: vec![NodeId(1)],
            leader: NodeId(1),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
        }
    }

    fn shard_leading(partitions: i32) -> Shard {
        let mut shard = Shard::new(NodeId(1), 1 << 20, 10_000, coordinator(), TxnCoordinator::new(Default::default()));
        for p in 0..partitions {
            shard.open(tp(p), [0; 16], ReplicaConfig::default(), PersistedState::default());
            shard.apply_state(0, &tp(p), &leader_state()).unwrap();
        }
        perform_all(&mut shard, 0);
        shard
    }

    fn coordinator() -> GroupCoordinator {
        GroupCoordinator::new(GroupConfig { offsets_topic_partitions: 1, ..GroupConfig::default() }, 7)
    }

    /// Performs every disk action at once, as a disk that never fails; -> the other outputs.
    fn perform_all(shard: &mut Shard, now: i64) -> Vec<Output> {
        perform_all_into(shard, now, &mut BTreeMap::new())
    }

    /// [`perform_all`], keeping what each partition appended in `logs`.
    fn perform_all_into(shard: &mut Shard, now: i64, logs: &mut BTreeMap<TopicPartition, Vec<Bytes>>) -> Vec<Output> {
        let mut others = Vec::new();
        let mut written: BTreeMap<TopicPartition, Offset> = BTreeMap::new();
        while let Some(output) = shard.poll_output(now) {
            match output {
                Output::Disk { partition, generation, action } => {
                    let completion = match action {
                        Action::Append { end_offset, records, .. } => {
                            logs.entry(partition.clone()).or_default().extend(records);
                            written.insert(partition.clone(), end_offset);
                            Some(Completion::Appended { end_offset })
                        }
                        Action::Sync { through } => {
                            Some(Completion::Synced { through: written.get(&partition).copied().unwrap_or(through).max(through) })
                        }
                        Action::Truncate { to } => Some(Completion::Truncated { to }),
                        Action::ResetLog { start_offset } => Some(Completion::Truncated { to: start_offset }),
                        _ => None,
                    };
                    shard.finish(now, &partition, generation, completion);
                }
                other => others.push(other),
            }
        }
        others
    }

    fn image(records: &[MetadataRecord]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for record in records {
            image.apply(record).unwrap();
        }
        image
    }

    fn topic_records(name: &str, id: u8, partitions: i32, replicas: &[NodeId]) -> Vec<MetadataRecord> {
        let topic_id = [id; 16];
        let mut configs = BTreeMap::new();
        configs.insert("min.insync.replicas".to_string(), "2".to_string());
        let mut records = vec![MetadataRecord::Topic { name: name.into(), topic_id, configs }];
        for partition in 0..partitions {
            records.push(MetadataRecord::Partition {
                topic_id,
                partition,
                replicas: replicas.to_vec(),
                isr: replicas.to_vec(),
                leader: replicas[0],
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
            });
        }
        records
    }

    fn open_plan(shard: &mut Shard, plan: ImagePlan) {
        for opening in &plan.open {
            let config = ReplicaConfig { min_insync_replicas: opening.min_insync_replicas.unwrap_or(1), ..ReplicaConfig::default() };
            shard.open(opening.partition.clone(), opening.topic_id, config, PersistedState::default());
        }
        shard.apply_image(0, plan);
        perform_all(shard, 0);
    }

    #[test]
    fn an_image_opens_the_owned_local_replicas_and_removes_those_it_no_longer_gives() {
        let mut shard = Shard::new(NodeId(1), 1 << 20, 10_000, coordinator(), TxnCoordinator::new(Default::default()));
        let mut records = topic_records("a", 1, 3, &[NodeId(1)]);
        records.extend(topic_records("elsewhere", 2, 1, &[NodeId(2)]));
        let first = image(&records);
        let plan = shard.plan_image(&first, |tp| tp.partition != 2);
        assert!(plan.remove.is_empty());
        let opened: Vec<_> = plan.open.iter().map(|o| (o.partition.clone(), o.topic_id, o.min_insync_replicas)).collect();
        assert_eq!(opened, vec![(TopicPartition::new("a", 0), [1; 16], Some(2)), (TopicPartition::new("a", 1), [1; 16], Some(2))]);
        open_plan(&mut shard, plan);
        assert_eq!(shard.replica(&TopicPartition::new("a", 0)).unwrap().role(), Role::Leader);
        assert!(!shard.contains(&TopicPartition::new("a", 2)));
        assert!(!shard.contains(&TopicPartition::new("elsewhere", 0)));

        // The same image again asks for nothing new.
        let again = shard.plan_image(&first, |tp| tp.partition != 2);
        assert!(again.remove.is_empty() && again.open.is_empty());
        shard.apply_image(0, again);

        // "a" deleted and re-created under a new id with one partition: both old replicas go,
        // partition 0 is opened afresh under the new id.
        let recreated = image(&topic_records("a", 9, 1, &[NodeId(1)]));
        let plan = shard.plan_image(&recreated, |tp| tp.partition != 2);
        assert_eq!(plan.remove, vec![TopicPartition::new("a", 0), TopicPartition::new("a", 1)]);
        assert_eq!(plan.open.iter().map(|o| (o.partition.clone(), o.topic_id)).collect::<Vec<_>>(), vec![(TopicPartition::new("a", 0), [9; 16])]);
        assert!(!shard.contains(&TopicPartition::new("a", 0)));
        open_plan(&mut shard, plan);
        assert_eq!(shard.topic_id(&TopicPartition::new("a", 0)), Some([9; 16]));
        assert!(!shard.contains(&TopicPartition::new("a", 1)));
    }

    // Guards KIP-73 on the leader: over the rate, a follower outside the ISR gets no records of
    // a throttled partition for now, while a follower in the ISR and an unthrottled partition
    // get theirs (throttled catch-up never holds back in-sync replication), and the held one
    // gets them once the rate has fallen.
    #[test]
    fn leader_throttle_holds_back_only_out_of_sync_followers_of_throttled_partitions() {
        let mut shard = Shard::new(NodeId(1), 1 << 20, 10_000, coordinator(), TxnCoordinator::new(Default::default()));
        let in_sync = PartitionState { replicas: vec![NodeId(1), NodeId(2), NodeId(3)], isr: vec![NodeId(1), NodeId(3)], ..leader_state() };
        for p in 0..2 {
            shard.open(tp(p), [0; 16], ReplicaConfig::default(), PersistedState::default());
            shard.apply_state(0, &tp(p), &in_sync).unwrap();
            shard.produce(0, &tp(p), Bytes::from(encode_batch(3, 0, Compression::None)), 1, 30_000, p as u64).unwrap();
        }
        perform_all(&mut shard, 0);
        let overrides = BTreeMap::from([(replication_quota::LEADER_THROTTLED_REPLICAS.to_owned(), "0:1,1:2".to_owned())]);
        let config = TopicConfig::new(&BrokerLayers::default(), overrides).unwrap();
        for p in 0..2 {
            shard.set_replication_throttled(&tp(p), &config);
        }
        let mut layers = BrokerLayers::default();
        layers.dynamic_broker.insert(replication_quota::LEADER_THROTTLED_RATE.to_owned(), "10".to_owned());
        shard.set_replication_throttle_rates(&layers, 1);
        let fetch = |shard: &mut Shard, now: i64, p: i32, follower: i32| {
            let request = FetchRequest {
                replica_id: NodeId(follower),
                current_leader_epoch: LeaderEpoch(0),
                fetch_offset: Offset(0),
                last_fetched_epoch: LeaderEpoch(-1),
                log_start_offset: Offset(0),
                max_wait_ms: 0,
                max_bytes: 1 << 20,
                read_committed: false,
                durable_offset: None,
            };
            let read = shard.fetch_part(now, &FetchPart { partition: tp(p), request });
            (read.range().is_some(), read.leader_throttled())
        };
        // Under the rate: served, and counted.
        assert_eq!(fetch(&mut shard, 1, 0, 2), (true, true));
        shard.record_leader_throttled(1, 1_000);
        // Over it: only the lagging follower of the throttled partition waits.
        assert_eq!(fetch(&mut shard, 2, 0, 2), (false, true));
        assert_eq!(fetch(&mut shard, 2, 0, 3), (true, true), "in the ISR");
        assert_eq!(fetch(&mut shard, 2, 1, 2), (true, false), "partition 1 is throttled on broker 2 only");
        // Once the samples age out (11 windows of 1 s), it is served again.
        assert_eq!(fetch(&mut shard, 11_100, 0, 2), (true, true));
    }

    #[test]
    fn a_produce_is_answered_with_its_token_once_appended_and_synced() {
        let mut shard = shard_leading(2);
        let records = Bytes::from(encode_batch(3, 0, Compression::None));
        shard.produce(1, &tp(1), records, -1, 30_000, 77).unwrap();
        let outputs = perform_all(&mut shard, 1);
        let produced: Vec<_> = outputs.iter().filter_map(|o| match o {
            Output::Produced { token, result } => Some((*token, result.clone())),
            _ => None,
        }).collect();
        assert_eq!(produced.len(), 1);
        assert_eq!(produced[0].0, 77);
        assert_eq!(produced[0].1.as_ref().unwrap().base_offset, Offset(0));
        assert!(outputs.iter().any(|o| matches!(o, Output::Visible { partition, high_watermark } if *partition == tp(1) && *high_watermark == Offset(3))));
        assert_eq!(shard.replica(&tp(0)).unwrap().high_watermark(), Offset(0));
    }

    /// A transactional batch of producer 7 at epoch 0.
    fn txn_part(first_seq: i32) -> ProducePart {
        let sequenced = records::Sequenced { producer_id: 7, epoch: 0, first_seq, transactional: true };
        let records = records::encode_producer_records(&[(None, Some(Bytes::from_static(b"v")))], 1, Compression::None, Some(sequenced));
        ProducePart { partition: tp(0), records, acks: -1, timeout_ms: 30_000, transactional_id: Some("tx".to_owned()) }
    }

    fn produced(outputs: &[Output]) -> Vec<(u64, Result<Offset, ErrorCode>)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Produced { token, result } => Some((*token, result.as_ref().map(|a| a.base_offset).map_err(|e| *e))),
                _ => None,
            })
            .collect()
    }

    fn verifications(outputs: &[Output]) -> Vec<u64> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::VerifyTxn { token, transactional_id, producer_id: 7, producer_epoch: 0, partition } => {
                    assert_eq!((transactional_id.as_str(), partition), ("tx", &("t".to_owned(), 0)));
                    Some(*token)
                }
                Output::VerifyTxn { .. } => panic!("{o:?}"),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_batch_that_would_start_a_transaction_waits_for_its_coordinator_and_a_marker_voids_the_answer() {
        let mut shard = shard_leading(1);
        let abort = batch::ControlMarker { commit: false, coordinator_epoch: 0 };

        // The transaction's first batch here is verified first, its next one is not.
        shard.produce_part(1, txn_part(0), 1).unwrap();
        let outputs = perform_all(&mut shard, 1);
        let [token] = verifications(&outputs)[..] else { panic!("{outputs:?}") };
        assert!(produced(&outputs).is_empty(), "nothing written before the coordinator answers");
        shard.handle_txn_verified(2, token, Ok(()));
        assert_eq!(produced(&perform_all(&mut shard, 2)), vec![(1, Ok(Offset(0)))]);
        shard.produce_part(3, txn_part(1), 2).unwrap();
        let outputs = perform_all(&mut shard, 3);
        assert!(verifications(&outputs).is_empty());
        assert_eq!(produced(&outputs), vec![(2, Ok(Offset(1)))]);
        shard.write_marker(4, &tp(0), 7, 0, abort, 30_000, 3).unwrap();
        assert_eq!(produced(&perform_all(&mut shard, 4)), vec![(3, Ok(Offset(2)))]);

        // A late batch of the aborted transaction: the coordinator refuses it.
        shard.produce_part(5, txn_part(2), 4).unwrap();
        let outputs = perform_all(&mut shard, 5);
        let [token] = verifications(&outputs)[..] else { panic!("{outputs:?}") };
        shard.handle_txn_verified(6, token, Err(ErrorCode::InvalidTxnState));
        assert_eq!(produced(&perform_all(&mut shard, 6)), vec![(4, Err(ErrorCode::InvalidTxnState))]);

        // The coordinator said yes, but a marker for the producer was written before the answer
        // arrived: the batch would open a transaction after its own transaction's end.
        shard.produce_part(7, txn_part(2), 5).unwrap();
        let [token] = verifications(&perform_all(&mut shard, 7))[..] else { panic!() };
        shard.write_marker(8, &tp(0), 7, 0, abort, 30_000, 6).unwrap();
        assert_eq!(produced(&perform_all(&mut shard, 8)), vec![(6, Ok(Offset(3)))]);
        shard.handle_txn_verified(9, token, Ok(()));
        assert_eq!(produced(&perform_all(&mut shard, 9)), vec![(5, Err(ErrorCode::InvalidTxnState))]);
        assert_eq!(shard.replica(&tp(0)).unwrap().log_end_offset(), Offset(4), "two batches and two markers");

        // A produce without a transactional id has no coordinator to ask (the Produce path
        // refuses transactional batches without one before they get here).
        let part = ProducePart { transactional_id: None, ..txn_part(2) };
        shard.produce_part(10, part, 7).unwrap();
        let outputs = perform_all(&mut shard, 10);
        assert!(verifications(&outputs).is_empty());
        assert_eq!(produced(&outputs), vec![(7, Ok(Offset(4)))]);
    }

    #[test]
    fn news_of_a_partition_wakes_only_the_long_polls_reading_it() {
        let mut shard = shard_leading(2);
        shard.park(10, Arc::from([tp(0)]), 1_000);
        shard.park(11, Arc::from([tp(1)]), 1_000);
        shard.park(12, Arc::from([tp(0), tp(1)]), 1_000);
        let records = Bytes::from(encode_batch(1, 0, Compression::None));
        shard.produce(1, &tp(1), records, 1, 30_000, 1).unwrap();
        let woken: BTreeSet<u64> = perform_all(&mut shard, 1)
            .into_iter()
            .filter_map(|o| match o {
                Output::Woken { wait } => Some(wait),
                _ => None,
            })
            .collect();
        assert_eq!(woken, BTreeSet::from([11, 12]));
        // The one left waits for its deadline.
        assert_eq!(shard.poll_timeout(), Some(1_000));
        shard.handle_timeout(1_000);
        let woken: Vec<_> = perform_all(&mut shard, 1_000).into_iter().filter(|o| matches!(o, Output::Woken { .. })).collect();
        assert!(matches!(woken[..], [Output::Woken { wait: 10 }]), "{woken:?}");
    }

    #[test]
    fn a_removed_partition_answers_its_produces_and_ignores_its_old_disk_actions() {
        let mut shard = shard_leading(1);
        let records = Bytes::from(encode_batch(1, 0, Compression::None));
        shard.produce(1, &tp(0), records, -1, 30_000, 5).unwrap();
        let Some(Output::Disk { generation, action: Action::Append { end_offset, .. }, .. }) = shard.poll_output(1) else {
            panic!("the append first")
        };
        assert!(shard.remove(&tp(0)));
        let answer = shard.poll_output(1);
        assert!(
            matches!(answer, Some(Output::Produced { token: 5, result: Err(ErrorCode::NotLeaderOrFollower) })),
            "{answer:?}"
        );
        shard.open(tp(0), [1; 16], ReplicaConfig::default(), PersistedState::default());
        // The old generation's append finishing must not reach the new replica's driver.
        shard.finish(2, &tp(0), generation, Some(Completion::Appended { end_offset }));
        assert_eq!(shard.replica(&tp(0)).unwrap().log_end_offset(), Offset(0));
        assert!(perform_all(&mut shard, 2).iter().all(|o| !matches!(o, Output::Produced { .. })));
    }

    #[test]
    fn draining_refuses_produces_before_the_log_sees_them() {
        let mut shard = shard_leading(1);
        assert_eq!(shard.drain(), 0);
        let records = Bytes::from(encode_batch(1, 0, Compression::None));
        assert_eq!(shard.produce(1, &tp(0), records, -1, 30_000, 1), Err(ErrorCode::NotLeaderOrFollower.into()));
        assert!(perform_all(&mut shard, 1).is_empty());
        assert_eq!(shard.replica(&tp(0)).unwrap().log_end_offset(), Offset(0));
    }

    fn offsets() -> TopicPartition {
        TopicPartition::new(OFFSETS_TOPIC, 0)
    }

    fn commit(offset: i64) -> GroupRequest {
        let partition = OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset);
        let topic = OffsetCommitRequestTopic::default().with_name(StrBytes::from_static_str("t").into()).with_partitions(vec![partition]);
        let request = OffsetCommitRequest::default()
            .with_group_id(StrBytes::from_static_str("g").into())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![topic]);
        let mut routed = groups::offset_commit(request, 1, |_, _| true);
        assert_eq!(routed.parts.len(), 1);
        routed.parts.pop().unwrap().1
    }

    fn committed(shard: &mut Shard, now: i64, id: u64) -> GroupResponse {
        let request = OffsetFetchRequest::default().with_group_id(StrBytes::from_static_str("g").into()).with_topics(None);
        shard.group_request(now, id, groups::offset_fetch(request, 5, 1).parts.pop().unwrap().1);
        let replies = group_replies(perform_all(shard, now));
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies.into_iter().next().unwrap().1
    }

    fn group_replies(outputs: Vec<Output>) -> Vec<(u64, GroupResponse)> {
        outputs
            .into_iter()
            .filter_map(|o| match o {
                Output::GroupReply { id, response } => Some((id, response)),
                _ => None,
            })
            .collect()
    }

    fn commit_error(response: &GroupResponse) -> i16 {
        let GroupResponse::OffsetCommit(r) = response else { panic!("{response:?}") };
        r.topics[0].partitions[0].error_code
    }

    fn committed_offset(response: &GroupResponse) -> Option<i64> {
        let GroupResponse::OffsetFetch(r) = response else { panic!("{response:?}") };
        assert_eq!(r.error_code, 0, "{r:?}");
        r.topics.first().map(|t| t.partitions[0].committed_offset)
    }

    fn shard_leading_offsets(persisted: PersistedState) -> Shard {
        let mut shard = Shard::new(NodeId(1), 1 << 20, 10_000, coordinator(), TxnCoordinator::new(Default::default()));
        shard.open(offsets(), [9; 16], ReplicaConfig::default(), persisted);
        shard.apply_state(0, &offsets(), &leader_state()).unwrap();
        shard
    }

    #[test]
    fn an_offset_commit_is_answered_once_its_records_are_replicated_and_replays_on_a_new_leader() {
        let mut logs = BTreeMap::new();
        let mut shard = shard_leading_offsets(PersistedState::default());
        perform_all_into(&mut shard, 0, &mut logs);
        shard.group_request(1, 40, commit(123));
        // The answer waits for the write: nothing before its disk actions ran.
        let Some(Output::Disk { action: Action::Append { .. }, .. }) = shard.poll_output(1) else { panic!("the append first") };
        shard.remove(&offsets());
        let refused = group_replies(perform_all(&mut shard, 1));
        assert!(matches!(&refused[..], [(40, r)] if commit_error(r) != 0), "a commit whose write was lost must fail: {refused:?}");

        let mut shard = shard_leading_offsets(PersistedState::default());
        perform_all_into(&mut shard, 0, &mut logs);
        shard.group_request(2, 41, commit(123));
        let replies = group_replies(perform_all_into(&mut shard, 2, &mut logs));
        assert!(matches!(&replies[..], [(41, r)] if commit_error(r) == 0), "{replies:?}");
        assert_eq!(committed_offset(&committed(&mut shard, 3, 42)), Some(123));
        let written = logs.get(&offsets()).expect("group records appended").clone();

        // A new leader of the partition replays what was written before it serves the group.
        let end = shard.replica(&offsets()).unwrap().log_end_offset();
        let mut successor = Shard::new(NodeId(1), 1 << 20, 10_000, coordinator(), TxnCoordinator::new(Default::default()));
        let persisted = PersistedState { log_end_offset: end, durable_offset: end, ..PersistedState::default() };
        successor.open(offsets(), [9; 16], ReplicaConfig::default(), persisted);
        successor.apply_state(10, &offsets(), &leader_state()).unwrap();
        let mut reads = Vec::new();
        for output in perform_all(&mut successor, 10) {
            if let Output::ReadCoordinatorLog { partition, generation, from, upto, .. } = output {
                reads.push((partition, generation, from, upto));
            }
        }
        let [(partition, generation, from, upto)] = &reads[..] else { panic!("one read of the log: {reads:?}") };
        assert_eq!((*from, *upto), (Offset(0), end));
        // Until the read is in, the group is loading.
        let GroupResponse::OffsetFetch(loading) = committed(&mut successor, 11, 1) else { unreachable!() };
        assert_eq!(loading.error_code, ErrorCode::CoordinatorLoadInProgress.code());
        let chunk: Vec<u8> = written.iter().flat_map(|b| b.iter().copied()).collect();
        let hw_before = successor.replica(&offsets()).unwrap().high_watermark();
        successor.handle_coordinator_read(12, partition, *generation, Ok(Bytes::from(chunk)));
        if hw_before < end {
            // Read, but served only once the high watermark covers what was read.
            assert_eq!(successor.replica(&offsets()).unwrap().high_watermark(), hw_before);
        }
        perform_all(&mut successor, 12);
        assert_eq!(successor.replica(&offsets()).unwrap().high_watermark(), end);
        assert_eq!(committed_offset(&committed(&mut successor, 12, 2)), Some(123));
    }

    #[test]
    fn a_stale_group_read_is_ignored_and_a_lost_leadership_drops_the_groups() {
        let mut logs = BTreeMap::new();
        let mut shard = shard_leading_offsets(PersistedState::default());
        perform_all_into(&mut shard, 0, &mut logs);
        shard.group_request(1, 1, commit(5));
        perform_all_into(&mut shard, 1, &mut logs);
        let follower = PartitionState { leader: NodeId(2), leader_epoch: LeaderEpoch(1), ..leader_state() };
        shard.apply_state(2, &offsets(), &follower).unwrap();
        let GroupResponse::OffsetFetch(moved) = committed(&mut shard, 3, 2) else { unreachable!() };
        assert_eq!(moved.error_code, ErrorCode::NotCoordinator.code());
        // A read for a generation since removed changes nothing.
        shard.handle_coordinator_read(4, &offsets(), 999, Ok(Bytes::new()));
        let GroupResponse::OffsetFetch(still) = committed(&mut shard, 4, 3) else { unreachable!() };
        assert_eq!(still.error_code, ErrorCode::NotCoordinator.code());
    }
}
