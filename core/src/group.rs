//! Group coordinator for Kafka's classic consumer-group protocol, sans IO.
//!
//! One [`GroupCoordinator`] per core serves the groups whose `__consumer_offsets` partition that
//! core owns. Inputs are `handle_*` calls carrying a driver-chosen [`RequestId`] and `now_ms`;
//! outputs are drained with [`GroupCoordinator::poll_action`]:
//! - [`Action::Reply`]: answer request N. Join and Sync answers may come long after the
//!   request (when the rebalance completes), and in any order across requests.
//! - [`Action::Persist`]: append these records to `__consumer_offsets` partition P and, once
//!   they are durable, call [`GroupCoordinator::handle_persisted`] with the token. An offset
//!   commit is answered only after that, so an acknowledged commit survives a crash.
//!
//! The driver calls [`GroupCoordinator::handle_timeout`] periodically (a spurious call is a
//! no-op) and [`GroupCoordinator::load`] with every record of its partitions before serving.
//!
//! Rules follow Kafka's `GroupCoordinator`/`ClassicGroup` (KIP-62 rebalance timeouts, KIP-134
//! initial rebalance delay, KIP-345 static membership, KIP-394 member id required, KIP-429
//! cooperative rebalancing is client-side and needs nothing here). Differences: members are
//! not persisted (after a coordinator restart a group is Empty with its generation, and members
//! rejoin after UNKNOWN_MEMBER_ID); OffsetDelete refuses only topics a member subscribes to.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;

use crate::error::ErrorCode;

pub type RequestId = u64;

/// Broker settings for groups, named after Kafka's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i64,
    pub offsets_retention_ms: i64,
    pub offset_metadata_max_bytes: usize,
    pub offsets_topic_partitions: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offset_metadata_max_bytes: 4096,
            offsets_topic_partitions: 50,
        }
    }
}

/// Kafka's internal topic of group records.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Kafka's `Utils.abs(groupId.hashCode) % partitions`, so a group lands on the partition Kafka
/// would choose.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = group_id.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (hash & 0x7fff_ffff) % partitions
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

// ---- requests and responses ----

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinResponse {
    pub error: Option<ErrorCode>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinMember>,
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResponse {
    pub error: Option<ErrorCode>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LeaveRequest {
    pub group_id: String,
    /// `(member_id, group_instance_id)`; v0-2 send exactly one.
    pub members: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResponse {
    pub error: Option<ErrorCode>,
    pub members: Vec<(String, Option<String>, Option<ErrorCode>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone)]
pub struct OffsetCommitRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// `(topic, partition, offset, leader_epoch, metadata)`.
    pub offsets: Vec<(String, i32, i64, i32, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchEntry {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    /// KIP-447: the partition has offsets a transaction has committed but not yet ended, and
    /// the client asked for stable offsets only (UNSTABLE_OFFSET_COMMIT, which it retries).
    pub unstable: bool,
}

/// TxnOffsetCommit (KIP-98, KIP-447): offsets a transactional producer commits for a group
/// as part of its transaction; they count only once its commit marker is written here.
#[derive(Debug, Clone)]
pub struct TxnOffsetCommitRequest {
    pub producer_id: i64,
    pub commit: OffsetCommitRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    pub group_id: String,
    pub error: Option<ErrorCode>,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(Option<ErrorCode>),
    Leave(LeaveResponse),
    /// Per `(topic, partition)` in request order.
    OffsetCommit(Vec<(String, i32, Option<ErrorCode>)>),
    /// Per `(topic, partition)` in request order.
    TxnOffsetCommit(Vec<(String, i32, Option<ErrorCode>)>),
    OffsetFetch(Result<Vec<OffsetFetchEntry>, ErrorCode>),
    Describe(Vec<DescribedGroup>),
    /// `(group_id, protocol_type, state)`.
    List(Vec<(String, String, GroupState)>),
    Delete(Vec<(String, Option<ErrorCode>)>),
    /// Top-level error, then per `(topic, partition)`.
    OffsetDelete(Option<ErrorCode>, Vec<(String, i32, Option<ErrorCode>)>),
}

/// A request to the coordinator, as [`GroupCoordinator::handle`] takes it.
#[derive(Debug, Clone)]
pub enum Call {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Leave(LeaveRequest),
    Commit(OffsetCommitRequest),
    TxnCommit(TxnOffsetCommitRequest),
    /// The group, its partitions wanted (`None`: all), and whether only stable offsets will do
    /// (OffsetFetch v7's `require_stable`).
    Fetch(String, Option<Vec<(String, i32)>>, bool),
    Describe(Vec<String>),
    List,
    Delete(Vec<String>),
    OffsetDelete(String, Vec<(String, i32)>),
}

/// A record of the `__consumer_offsets` log. `None` values are tombstones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    Offset { group_id: String, topic: String, partition: i32, value: Option<CommittedOffset> },
    /// An offset a transaction committed, pending until the producer's marker: a commit marker
    /// makes it the group's offset, an abort marker drops it. Its own key, so compaction keeps
    /// it apart from the group's committed offset; a tombstone follows once the transaction
    /// ended (and, for a commit, the plain offset record).
    TxnOffset { producer_id: i64, group_id: String, topic: String, partition: i32, value: Option<CommittedOffset> },
    Group { group_id: String, value: Option<GroupValue> },
}

/// A group's generation as `__consumer_offsets` keeps it. Members are stored once a
/// generation is Stable (the leader's SyncGroup), as Kafka's GroupMetadata value does, so a
/// restarted coordinator resumes the generation instead of forcing a rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<PersistedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersistedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Reply(RequestId, Response),
    Persist { token: u64, partition: i32, records: Vec<GroupRecord> },
}

// ---- state ----

#[derive(Debug, Clone)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    assignment: Bytes,
    session_deadline_ms: i64,
    awaiting_join: Option<RequestId>,
    awaiting_sync: Option<RequestId>,
}

#[derive(Debug, Clone)]
struct Group {
    state: GroupState,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    generation_id: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and when they lapse.
    pending_members: BTreeMap<String, i64>,
    static_members: BTreeMap<String, String>,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
    rebalance_deadline_ms: i64,
    /// While the initial rebalance delay (KIP-134) runs: when it ends, and its hard limit.
    initial_delay: Option<(i64, i64)>,
    empty_since_ms: i64,
}

impl Group {
    fn new(now_ms: i64) -> Group {
        Group {
            state: GroupState::Empty,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader: None,
            members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            offsets: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay: None,
            empty_since_ms: now_ms,
        }
    }

    /// Protocols every member supports, as Kafka's `candidateProtocols`.
    fn candidate_protocols(&self) -> BTreeSet<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else { return BTreeSet::new() };
        let mut candidates: BTreeSet<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for member in members {
            candidates.retain(|c| member.protocols.iter().any(|(n, _)| n == c));
        }
        candidates
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(n, _)| self.candidate_protocols().contains(n))
    }

    /// Each member votes for its most preferred candidate; most votes wins, ties go to the
    /// name that sorts first (deterministic, where Kafka's is map order).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes.into_iter().find(|&(_, v)| v == best).map(|(n, _)| n.to_owned())
    }

    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn subscribed_topics(&self) -> BTreeSet<String> {
        let mut topics = BTreeSet::new();
        if self.protocol_type.as_deref() != Some("consumer") {
            return topics;
        }
        for member in self.members.values() {
            for (_, metadata) in &member.protocols {
                match decode_subscription(metadata) {
                    Some(subscribed) => topics.extend(subscribed),
                    None => {
                        topics.insert(String::new());
                    }
                }
            }
        }
        topics
    }
}

fn decode_subscription(metadata: &Bytes) -> Option<Vec<String>> {
    let mut buf = metadata.clone();
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16();
    let subscription = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)).ok()?;
    Some(subscription.topics.into_iter().map(|t| t.to_string()).collect())
}

/// Whether a coordinator serves a `__consumer_offsets` partition's groups yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ownership {
    /// Its records are being replayed: requests get COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    Loaded,
}

/// The coordinator of the groups on one core. It serves only the groups of the
/// `__consumer_offsets` partitions it was given ([`GroupCoordinator::begin_load`]); requests
/// for any other group get NOT_COORDINATOR, so clients look the coordinator up again.
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    partitions: BTreeMap<i32, Ownership>,
    actions: VecDeque<Action>,
    next_token: u64,
    /// Offset commits waiting for their records to be durable.
    pending_commits: BTreeMap<u64, PendingCommit>,
    /// Per producer id, the offsets its open transaction committed: `(group, topic,
    /// partition)` → offset.
    txn_offsets: BTreeMap<i64, BTreeMap<(String, String, i32), CommittedOffset>>,
    member_seed: u64,
    member_counter: u64,
}

struct PendingCommit {
    request: RequestId,
    /// A TxnOffsetCommit's producer: its offsets wait for the marker.
    producer_id: Option<i64>,
    group_id: String,
    results: Vec<(String, i32, Option<ErrorCode>)>,
    offsets: Vec<((String, i32), CommittedOffset)>,
}

impl GroupCoordinator {
    /// `seed` makes generated member ids unique across restarts without ambient randomness.
    pub fn new(config: GroupConfig, seed: u64) -> GroupCoordinator {
        GroupCoordinator {
            config,
            groups: BTreeMap::new(),
            partitions: BTreeMap::new(),
            actions: VecDeque::new(),
            next_token: 0,
            pending_commits: BTreeMap::new(),
            txn_offsets: BTreeMap::new(),
            member_seed: seed,
            member_counter: 0,
        }
    }

    /// Takes one request; its answer comes as [`Action::Reply`] with `id`.
    pub fn handle(&mut self, now_ms: i64, id: RequestId, call: Call) {
        match call {
            Call::Join(r) => self.handle_join(now_ms, id, r),
            Call::Sync(r) => self.handle_sync(now_ms, id, r),
            Call::Heartbeat(r) => self.handle_heartbeat(now_ms, id, r),
            Call::Leave(r) => self.handle_leave(now_ms, id, r),
            Call::Commit(r) => self.handle_offset_commit(now_ms, id, r),
            Call::TxnCommit(r) => self.handle_txn_offset_commit(now_ms, id, r),
            Call::Fetch(g, p, stable) => self.handle_offset_fetch(id, &g, p, stable),
            Call::Describe(g) => self.handle_describe(id, g),
            Call::List => self.handle_list(id),
            Call::Delete(g) => self.handle_delete(id, g),
            Call::OffsetDelete(g, p) => self.handle_offset_delete(id, &g, p),
        }
    }

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Starts serving `partition` (this node leads it now): forgets what it knew of its
    /// groups and answers COORDINATOR_LOAD_IN_PROGRESS until [`Self::finish_load`]. The
    /// partition's records follow through [`Self::load`], in log order.
    pub fn begin_load(&mut self, partition: i32) {
        self.unload(partition);
        self.partitions.insert(partition, Ownership::Loading);
        self.check_invariants();
    }

    pub fn finish_load(&mut self, partition: i32) {
        if let Some(ownership) = self.partitions.get_mut(&partition) {
            *ownership = Ownership::Loaded;
        }
        self.check_invariants();
    }

    /// Stops serving `partition` (another node leads it now): drops its groups and answers
    /// their parked joins and syncs with NOT_COORDINATOR. Commits still being written are
    /// answered when their write ends.
    pub fn unload(&mut self, partition: i32) {
        self.partitions.remove(&partition);
        let partitions = self.config.offsets_topic_partitions;
        for pending in self.txn_offsets.values_mut() {
            pending.retain(|(group_id, _, _), _| partition_for(group_id, partitions) != partition);
        }
        self.txn_offsets.retain(|_, pending| !pending.is_empty());
        let dropped: Vec<String> = self
            .groups
            .keys()
            .filter(|g| partition_for(g, self.config.offsets_topic_partitions) == partition)
            .cloned()
            .collect();
        for group_id in dropped {
            let group = self.groups.remove(&group_id).expect("listed");
            for member in group.members.into_values() {
                if let Some(join) = member.awaiting_join {
                    self.reply(join, Response::Join(JoinResponse {
                        error: Some(ErrorCode::NotCoordinator),
                        generation_id: -1,
                        ..Default::default()
                    }));
                }
                if let Some(sync) = member.awaiting_sync {
                    self.reply(sync, sync_error(ErrorCode::NotCoordinator));
                }
            }
        }
        self.check_invariants();
    }

    /// The partitions this coordinator serves or is loading.
    pub fn owned_partitions(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }

    /// Why this coordinator cannot serve `group_id` now, if it cannot.
    fn not_serving(&self, group_id: &str) -> Option<ErrorCode> {
        match self.partitions.get(&partition_for(group_id, self.config.offsets_topic_partitions)) {
            None => Some(ErrorCode::NotCoordinator),
            Some(Ownership::Loading) => Some(ErrorCode::CoordinatorLoadInProgress),
            Some(Ownership::Loaded) => None,
        }
    }

    fn serves(&self, group_id: &str) -> bool {
        self.not_serving(group_id).is_none()
    }

    /// Rebuilds state from one `__consumer_offsets` record, in log order, while its
    /// partition loads. Records of partitions not loading are ignored.
    pub fn load(&mut self, now_ms: i64, record: GroupRecord) {
        let partition = partition_for(record.group_id(), self.config.offsets_topic_partitions);
        if self.partitions.get(&partition) != Some(&Ownership::Loading) {
            return;
        }
        match record {
            GroupRecord::Offset { group_id, topic, partition, value } => {
                let group = self.groups.entry(group_id).or_insert_with(|| Group::new(now_ms));
                match value {
                    Some(v) => group.offsets.insert((topic, partition), v),
                    None => group.offsets.remove(&(topic, partition)),
                };
            }
            GroupRecord::TxnOffset { producer_id, group_id, topic, partition, value } => {
                self.groups.entry(group_id.clone()).or_insert_with(|| Group::new(now_ms));
                let key = (group_id, topic, partition);
                match value {
                    Some(v) => {
                        self.txn_offsets.entry(producer_id).or_default().insert(key, v);
                    }
                    None => {
                        if let Some(pending) = self.txn_offsets.get_mut(&producer_id) {
                            pending.remove(&key);
                            if pending.is_empty() {
                                self.txn_offsets.remove(&producer_id);
                            }
                        }
                    }
                }
            }
            GroupRecord::Group { group_id, value: Some(value) } => {
                let group = self.groups.entry(group_id).or_insert_with(|| Group::new(now_ms));
                group.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type.clone());
                group.generation_id = value.generation_id;
                group.members.clear();
                group.static_members.clear();
                group.pending_members.clear();
                for m in value.members {
                    if let Some(instance) = &m.group_instance_id {
                        group.static_members.insert(instance.clone(), m.member_id.clone());
                    }
                    group.members.insert(m.member_id, Member {
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        protocol_type: value.protocol_type.clone(),
                        protocols: m.protocols,
                        session_timeout_ms: m.session_timeout_ms,
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        assignment: m.assignment,
                        // Kafka restarts every loaded member's session at load time.
                        session_deadline_ms: now_ms + i64::from(m.session_timeout_ms),
                        awaiting_join: None,
                        awaiting_sync: None,
                    });
                }
                if group.members.is_empty() {
                    group.state = GroupState::Empty;
                    group.protocol_name = None;
                    group.leader = None;
                    group.empty_since_ms = now_ms;
                } else {
                    group.state = GroupState::Stable;
                    group.protocol_name = value.protocol_name;
                    group.leader = value.leader.filter(|l| group.members.contains_key(l));
                    if group.leader.is_none() {
                        group.leader = group.members.keys().next().cloned();
                    }
                }
            }
            GroupRecord::Group { group_id, value: None } => {
                self.groups.remove(&group_id);
            }
        }
        self.check_invariants();
    }

    fn reply(&mut self, id: RequestId, response: Response) {
        self.actions.push_back(Action::Reply(id, response));
    }

    fn persist(&mut self, group_id: &str, records: Vec<GroupRecord>) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        let partition = partition_for(group_id, self.config.offsets_topic_partitions);
        self.actions.push_back(Action::Persist { token, partition, records });
        token
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.member_counter += 1;
        let mut x = self.member_seed ^ self.member_counter.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // splitmix64 finaliser: distinct, well-spread ids from a counter.
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        format!("{client_id}-{x:016x}{:08x}", self.member_counter as u32)
    }

    // ---- JoinGroup ----

    pub fn handle_join(&mut self, now_ms: i64, id: RequestId, req: JoinRequest) {
        let fail = |error| Response::Join(JoinResponse { error: Some(error), generation_id: -1, ..Default::default() });
        if req.group_id.is_empty() {
            return self.reply(id, fail(ErrorCode::InvalidGroupId));
        }
        if let Some(error) = self.not_serving(&req.group_id) {
            return self.reply(id, fail(error));
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return self.reply(id, fail(ErrorCode::InvalidSessionTimeout));
        }
        if !req.member_id.is_empty() && !self.groups.contains_key(&req.group_id) {
            return self.reply(id, fail(ErrorCode::UnknownMemberId));
        }
        let group = self.groups.entry(req.group_id.clone()).or_insert_with(|| Group::new(now_ms));
        if !group.supports(&req.protocol_type, &req.protocols) {
            return self.reply(id, fail(ErrorCode::InconsistentGroupProtocol));
        }
        if req.member_id.is_empty() {
            self.join_unknown_member(now_ms, id, req);
        } else {
            self.join_known_member(now_ms, id, req);
        }
        self.check_invariants();
    }

    fn join_unknown_member(&mut self, now_ms: i64, id: RequestId, req: JoinRequest) {
        let member_id = self.new_member_id(&req.client_id);
        let group = self.groups.get_mut(&req.group_id).expect("created by handle_join");
        if let Some(instance) = &req.group_instance_id {
            if let Some(old_id) = group.static_members.get(instance).cloned() {
                // KIP-345: a static member restarting takes over its old identity; the old
                // member id is fenced. Without a protocol change a follower needs no rebalance.
                let mut member = group.members.remove(&old_id).expect("static member present");
                if let Some(join) = member.awaiting_join.take() {
                    self.actions.push_back(Action::Reply(join, Response::Join(JoinResponse {
                        error: Some(ErrorCode::FencedInstanceId),
                        generation_id: -1,
                        ..Default::default()
                    })));
                }
                let group = self.groups.get_mut(&req.group_id).expect("group");
                let unchanged = member.protocols == req.protocols;
                let was_leader = group.leader.as_deref() == Some(old_id.as_str());
                member.protocols = req.protocols.clone();
                member.session_timeout_ms = req.session_timeout_ms;
                member.rebalance_timeout_ms = req.rebalance_timeout_ms;
                member.client_id = req.client_id.clone();
                member.client_host = req.client_host.clone();
                member.session_deadline_ms = now_ms + i64::from(req.session_timeout_ms);
                if was_leader {
                    group.leader = Some(member_id.clone());
                }
                group.static_members.insert(instance.clone(), member_id.clone());
                group.members.insert(member_id.clone(), member);
                if group.state == GroupState::Stable && unchanged && !was_leader {
                    let response = current_join_response(group, &member_id, false);
                    // The stored generation must name the new member id, or a restarted
                    // coordinator would fence the member that replaced the old one.
                    let record = group_record(&req.group_id, group);
                    self.reply(id, Response::Join(response));
                    self.persist(&req.group_id, vec![record]);
                    return;
                }
                return self.add_to_rebalance(now_ms, id, &req, member_id);
            }
            return self.add_to_rebalance(now_ms, id, &req, member_id);
        }
        if req.require_known_member_id {
            let deadline = now_ms + i64::from(req.session_timeout_ms);
            group.pending_members.insert(member_id.clone(), deadline);
            let response = JoinResponse {
                error: Some(ErrorCode::MemberIdRequired),
                generation_id: -1,
                member_id,
                ..Default::default()
            };
            return self.reply(id, Response::Join(response));
        }
        self.add_to_rebalance(now_ms, id, &req, member_id);
    }

    fn join_known_member(&mut self, now_ms: i64, id: RequestId, req: JoinRequest) {
        let group = self.groups.get_mut(&req.group_id).expect("checked by handle_join");
        let fail = |error| Response::Join(JoinResponse { error: Some(error), generation_id: -1, ..Default::default() });
        if group.pending_members.remove(&req.member_id).is_some() {
            return self.add_to_rebalance(now_ms, id, &req, req.member_id.clone());
        }
        if let Some(instance) = &req.group_instance_id {
            if group.static_members.get(instance).is_some_and(|m| *m != req.member_id) {
                return self.reply(id, fail(ErrorCode::FencedInstanceId));
            }
        }
        let Some(member) = group.members.get_mut(&req.member_id) else {
            return self.reply(id, fail(ErrorCode::UnknownMemberId));
        };
        let unchanged = member.protocols == req.protocols;
        member.session_deadline_ms = now_ms + i64::from(req.session_timeout_ms);
        match group.state {
            GroupState::CompletingRebalance if unchanged => {
                // A retried JoinGroup: answer with the generation being completed.
                let is_leader = group.leader.as_deref() == Some(req.member_id.as_str());
                let response = current_join_response(group, &req.member_id, is_leader);
                self.reply(id, Response::Join(response));
            }
            GroupState::Stable if unchanged && group.leader.as_deref() != Some(req.member_id.as_str()) => {
                let response = current_join_response(group, &req.member_id, false);
                self.reply(id, Response::Join(response));
            }
            _ => self.add_to_rebalance(now_ms, id, &req, req.member_id.clone()),
        }
    }

    /// Adds or updates the member, marks it as awaiting the join answer, and starts (or
    /// continues) a rebalance.
    fn add_to_rebalance(&mut self, now_ms: i64, id: RequestId, req: &JoinRequest, member_id: String) {
        let group = self.groups.get_mut(&req.group_id).expect("group");
        let member = group.members.entry(member_id.clone()).or_insert_with(|| Member {
            group_instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            protocol_type: req.protocol_type.clone(),
            protocols: Vec::new(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            assignment: Bytes::new(),
            session_deadline_ms: 0,
            awaiting_join: None,
            awaiting_sync: None,
        });
        member.protocols = req.protocols.clone();
        member.protocol_type = req.protocol_type.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.session_deadline_ms = now_ms + i64::from(req.session_timeout_ms);
        if let Some(previous) = member.awaiting_join.replace(id) {
            // The client gave up on its earlier JoinGroup; only the newest gets the answer.
            self.actions.push_back(Action::Reply(previous, Response::Join(JoinResponse {
                error: Some(ErrorCode::UnknownMemberId),
                generation_id: -1,
                ..Default::default()
            })));
        }
        let group = self.groups.get_mut(&req.group_id).expect("group");
        if let Some(instance) = &req.group_instance_id {
            group.static_members.insert(instance.clone(), member_id);
        }
        if group.protocol_type.is_none() || group.members.len() == 1 {
            group.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some((end, limit)) = group.initial_delay {
            // KIP-134: each new member extends the initial delay, up to the rebalance timeout.
            let extended = (now_ms + self.config.initial_rebalance_delay_ms).min(limit);
            group.initial_delay = Some((end.max(extended), limit));
        }
        let group_id = req.group_id.clone();
        self.prepare_rebalance(now_ms, &group_id);
        self.try_complete_join(now_ms, &group_id);
    }

    fn prepare_rebalance(&mut self, now_ms: i64, group_id: &str) {
        let initial_delay_ms = self.config.initial_rebalance_delay_ms;
        let group = self.groups.get_mut(group_id).expect("group");
        if group.state == GroupState::PreparingRebalance {
            return;
        }
        let max_rebalance_ms = group.members.values().map(|m| i64::from(m.rebalance_timeout_ms)).max().unwrap_or(0);
        let mut cancelled = Vec::new();
        if group.state == GroupState::CompletingRebalance {
            for member in group.members.values_mut() {
                member.assignment = Bytes::new();
                cancelled.extend(member.awaiting_sync.take());
            }
        }
        if group.state == GroupState::Empty && initial_delay_ms > 0 {
            let limit = now_ms + max_rebalance_ms;
            group.initial_delay = Some(((now_ms + initial_delay_ms).min(limit), limit));
        }
        group.state = GroupState::PreparingRebalance;
        group.rebalance_deadline_ms = now_ms + max_rebalance_ms;
        for id in cancelled {
            self.reply(id, sync_error(ErrorCode::RebalanceInProgress));
        }
    }

    fn try_complete_join(&mut self, now_ms: i64, group_id: &str) {
        let Some(group) = self.groups.get(group_id) else { return };
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let delaying = group.initial_delay.is_some_and(|(end, _)| now_ms < end);
        let expired = now_ms >= group.rebalance_deadline_ms;
        if (group.all_joined() && !delaying) || expired {
            self.complete_join(now_ms, group_id);
        }
    }

    /// Ends the join phase: members that did not rejoin are removed, the generation advances,
    /// and every waiting member gets its answer (the leader with the member list).
    fn complete_join(&mut self, now_ms: i64, group_id: &str) {
        let group = self.groups.get_mut(group_id).expect("group");
        let gone: Vec<String> =
            group.members.iter().filter(|(_, m)| m.awaiting_join.is_none()).map(|(id, _)| id.clone()).collect();
        for member_id in gone {
            remove_member(group, &member_id);
        }
        group.pending_members.clear();
        group.initial_delay = None;
        group.generation_id += 1;
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.protocol_name = None;
            group.leader = None;
            group.empty_since_ms = now_ms;
        } else {
            group.state = GroupState::CompletingRebalance;
            group.protocol_name = group.select_protocol();
            if !group.leader.as_ref().is_some_and(|l| group.members.contains_key(l)) {
                group.leader = group.members.keys().next().cloned();
            }
        }
        let mut replies = Vec::new();
        let member_ids: Vec<String> = group.members.keys().cloned().collect();
        for member_id in &member_ids {
            let is_leader = group.leader.as_deref() == Some(member_id.as_str());
            let response = current_join_response(group, member_id, is_leader);
            let member = group.members.get_mut(member_id).expect("member");
            member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
            if let Some(id) = member.awaiting_join.take() {
                replies.push((id, response));
            }
        }
        // As Kafka's `onCompleteJoin`, only a group left empty is stored here: a generation
        // still completing is stored by its SyncGroup, so until then the log keeps the last
        // Stable one, and a coordinator that takes over resumes it with its members (whose
        // commits of that generation stay valid) instead of forgetting them.
        let record = (group.state == GroupState::Empty).then(|| group_record(group_id, group));
        for (id, response) in replies {
            self.reply(id, Response::Join(response));
        }
        if let Some(record) = record {
            self.persist(group_id, vec![record]);
        }
    }

    // ---- SyncGroup ----

    pub fn handle_sync(&mut self, now_ms: i64, id: RequestId, req: SyncRequest) {
        if let Some(error) = self.not_serving(&req.group_id) {
            return self.reply(id, sync_error(error));
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return self.reply(id, sync_error(ErrorCode::UnknownMemberId));
        };
        if let Err(error) = validate_member(group, &req.member_id, req.group_instance_id.as_deref(), req.generation_id) {
            return self.reply(id, sync_error(error));
        }
        let mismatched = |given: &Option<String>, current: &Option<String>| given.is_some() && given != current;
        if mismatched(&req.protocol_type, &group.protocol_type) || mismatched(&req.protocol_name, &group.protocol_name) {
            return self.reply(id, sync_error(ErrorCode::InconsistentGroupProtocol));
        }
        let member = group.members.get_mut(&req.member_id).expect("validated");
        member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        match group.state {
            GroupState::PreparingRebalance => self.reply(id, sync_error(ErrorCode::RebalanceInProgress)),
            GroupState::CompletingRebalance => {
                if let Some(previous) = member.awaiting_sync.replace(id) {
                    self.actions.push_back(Action::Reply(previous, sync_error(ErrorCode::RebalanceInProgress)));
                }
                let group = self.groups.get_mut(&req.group_id).expect("group");
                if group.leader.as_deref() == Some(req.member_id.as_str()) {
                    let assignments: BTreeMap<String, Bytes> = req.assignments.into_iter().collect();
                    for (member_id, member) in group.members.iter_mut() {
                        member.assignment = assignments.get(member_id).cloned().unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    let replies: Vec<(RequestId, Response)> = group
                        .members
                        .values_mut()
                        .filter_map(|m| {
                            let id = m.awaiting_sync.take()?;
                            Some((id, Response::Sync(SyncResponse {
                                error: None,
                                protocol_type: group.protocol_type.clone(),
                                protocol_name: group.protocol_name.clone(),
                                assignment: m.assignment.clone(),
                            })))
                        })
                        .collect();
                    let record = group_record(&req.group_id, group);
                    for (id, response) in replies {
                        self.reply(id, response);
                    }
                    self.persist(&req.group_id, vec![record]);
                }
            }
            GroupState::Stable => {
                let response = SyncResponse {
                    error: None,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment: member.assignment.clone(),
                };
                self.reply(id, Response::Sync(response));
            }
            GroupState::Empty | GroupState::Dead => self.reply(id, sync_error(ErrorCode::UnknownMemberId)),
        }
        self.check_invariants();
    }

    // ---- Heartbeat and LeaveGroup ----

    pub fn handle_heartbeat(&mut self, now_ms: i64, id: RequestId, req: HeartbeatRequest) {
        if let Some(error) = self.not_serving(&req.group_id) {
            return self.reply(id, Response::Heartbeat(Some(error)));
        }
        let error = match self.groups.get_mut(&req.group_id) {
            None => Some(ErrorCode::UnknownMemberId),
            Some(group) => match validate_member(group, &req.member_id, req.group_instance_id.as_deref(), req.generation_id) {
                Err(e) => Some(e),
                Ok(()) => {
                    let member = group.members.get_mut(&req.member_id).expect("validated");
                    member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                    match group.state {
                        GroupState::PreparingRebalance => Some(ErrorCode::RebalanceInProgress),
                        GroupState::CompletingRebalance | GroupState::Stable => None,
                        GroupState::Empty | GroupState::Dead => Some(ErrorCode::UnknownMemberId),
                    }
                }
            },
        };
        self.reply(id, Response::Heartbeat(error));
        self.check_invariants();
    }

    pub fn handle_leave(&mut self, now_ms: i64, id: RequestId, req: LeaveRequest) {
        if let Some(error) = self.not_serving(&req.group_id) {
            return self.reply(id, Response::Leave(LeaveResponse { error: Some(error), members: Vec::new() }));
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            let members = req.members.into_iter().map(|(m, i)| (m, i, Some(ErrorCode::UnknownMemberId))).collect();
            return self.reply(id, Response::Leave(LeaveResponse { error: Some(ErrorCode::UnknownMemberId), members }));
        };
        let mut results = Vec::new();
        let mut removed = false;
        for (member_id, instance) in req.members {
            let target = match &instance {
                Some(instance) => match group.static_members.get(instance) {
                    Some(known) if member_id.is_empty() || *known == member_id => Ok(known.clone()),
                    Some(_) => Err(ErrorCode::FencedInstanceId),
                    None => Err(ErrorCode::UnknownMemberId),
                },
                None if group.members.contains_key(&member_id) || group.pending_members.contains_key(&member_id) => {
                    Ok(member_id.clone())
                }
                None => Err(ErrorCode::UnknownMemberId),
            };
            match target {
                Ok(target) => {
                    group.pending_members.remove(&target);
                    if let Some(join) = remove_member(group, &target) {
                        self.actions.push_back(Action::Reply(join, Response::Join(JoinResponse {
                            error: Some(ErrorCode::UnknownMemberId),
                            generation_id: -1,
                            ..Default::default()
                        })));
                    }
                    removed = true;
                    results.push((member_id, instance, None));
                }
                Err(error) => results.push((member_id, instance, Some(error))),
            }
        }
        let error = if results.len() == 1 { results[0].2 } else { None };
        self.reply(id, Response::Leave(LeaveResponse { error, members: results }));
        if removed {
            self.rebalance_after_departure(now_ms, &req.group_id);
        }
        self.check_invariants();
    }

    fn rebalance_after_departure(&mut self, now_ms: i64, group_id: &str) {
        let Some(group) = self.groups.get(group_id) else { return };
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, group_id);
                self.try_complete_join(now_ms, group_id);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, group_id),
            GroupState::Empty | GroupState::Dead => {}
        }
        // A rebalance with nobody left completes at once into Empty.
        if let Some(group) = self.groups.get(group_id) {
            if group.state == GroupState::PreparingRebalance && group.members.is_empty() {
                self.complete_join(now_ms, group_id);
            }
        }
    }

    // ---- offsets ----

    pub fn handle_offset_commit(&mut self, now_ms: i64, id: RequestId, req: OffsetCommitRequest) {
        let all = |error: Option<ErrorCode>| {
            Response::OffsetCommit(req.offsets.iter().map(|(t, p, ..)| (t.clone(), *p, error)).collect())
        };
        if req.group_id.is_empty() {
            return self.reply(id, all(Some(ErrorCode::InvalidGroupId)));
        }
        if let Some(error) = self.not_serving(&req.group_id) {
            return self.reply(id, all(Some(error)));
        }
        let simple = req.generation_id < 0 && req.member_id.is_empty();
        let check = match self.groups.get_mut(&req.group_id) {
            None if simple => Ok(()),
            None => Err(ErrorCode::IllegalGeneration),
            Some(group) if simple && group.state == GroupState::Empty => Ok(()),
            Some(group) => validate_member(group, &req.member_id, req.group_instance_id.as_deref(), req.generation_id)
                .and(match group.state {
                    // Members commit on revoke while the rebalance prepares; Kafka accepts
                    // those and refuses only between the join and sync phases.
                    GroupState::Stable | GroupState::PreparingRebalance => Ok(()),
                    GroupState::CompletingRebalance => Err(ErrorCode::RebalanceInProgress),
                    GroupState::Empty | GroupState::Dead => Err(ErrorCode::UnknownMemberId),
                })
                .inspect(|()| {
                    let member = group.members.get_mut(&req.member_id).expect("validated");
                    member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                }),
        };
        if let Err(error) = check {
            return self.reply(id, all(Some(error)));
        }
        self.groups.entry(req.group_id.clone()).or_insert_with(|| Group::new(now_ms));
        self.write_commit(now_ms, id, req, None);
        self.check_invariants();
    }

    /// Writes a checked commit's offsets (a transaction's, pending for `producer_id`, when
    /// given) and answers once they are durable; too large metadata is refused per partition.
    fn write_commit(&mut self, now_ms: i64, id: RequestId, req: OffsetCommitRequest, producer_id: Option<i64>) {
        let mut results = Vec::new();
        let mut offsets = Vec::new();
        let mut records = Vec::new();
        for (topic, partition, offset, leader_epoch, metadata) in req.offsets {
            let metadata = metadata.unwrap_or_default();
            if metadata.len() > self.config.offset_metadata_max_bytes {
                results.push((topic, partition, Some(ErrorCode::OffsetMetadataTooLarge)));
                continue;
            }
            let value = CommittedOffset { offset, leader_epoch, metadata, commit_timestamp_ms: now_ms };
            let (group_id, key, written) = (req.group_id.clone(), topic.clone(), Some(value.clone()));
            records.push(match producer_id {
                Some(producer_id) => GroupRecord::TxnOffset { producer_id, group_id, topic: key, partition, value: written },
                None => GroupRecord::Offset { group_id, topic: key, partition, value: written },
            });
            offsets.push(((topic.clone(), partition), value));
            results.push((topic, partition, None));
        }
        if records.is_empty() {
            let response = if producer_id.is_some() { Response::TxnOffsetCommit(results) } else { Response::OffsetCommit(results) };
            self.reply(id, response);
        } else {
            let token = self.persist(&req.group_id, records);
            self.pending_commits.insert(token, PendingCommit { request: id, producer_id, group_id: req.group_id, results, offsets });
        }
    }

    /// TxnOffsetCommit: the offsets are written (as [`GroupRecord::TxnOffset`]) and held for
    /// the producer until its transaction's marker reaches this partition
    /// ([`Self::handle_txn_marker`]). A member's generation is checked as for OffsetCommit when
    /// the client gives one (v3+, KIP-447); `generation_id` -1 skips it, as Kafka does.
    pub fn handle_txn_offset_commit(&mut self, now_ms: i64, id: RequestId, req: TxnOffsetCommitRequest) {
        let commit = req.commit;
        let all = |error: Option<ErrorCode>| {
            Response::TxnOffsetCommit(commit.offsets.iter().map(|(t, p, ..)| (t.clone(), *p, error)).collect())
        };
        if commit.group_id.is_empty() {
            return self.reply(id, all(Some(ErrorCode::InvalidGroupId)));
        }
        if let Some(error) = self.not_serving(&commit.group_id) {
            return self.reply(id, all(Some(error)));
        }
        if commit.generation_id >= 0 {
            let check = match self.groups.get(&commit.group_id) {
                None => Err(ErrorCode::IllegalGeneration),
                Some(group) => validate_member(group, &commit.member_id, commit.group_instance_id.as_deref(), commit.generation_id),
            };
            if let Err(error) = check {
                return self.reply(id, all(Some(error)));
            }
        }
        self.groups.entry(commit.group_id.clone()).or_insert_with(|| Group::new(now_ms));
        self.write_commit(now_ms, id, commit, Some(req.producer_id));
        self.check_invariants();
    }

    /// A transaction marker for `producer_id` written to `__consumer_offsets` partition
    /// `partition` (the coordinator's WriteTxnMarkers), or read back while the partition
    /// loads (`loading`): the producer's offsets for the partition's groups become committed
    /// (`commit`) or are dropped. Live, the outcome is written too: the committed offsets as
    /// plain offset records, and tombstones for the pending ones, so compaction cannot bring
    /// an ended transaction's offsets back.
    pub fn handle_txn_marker(&mut self, now_ms: i64, partition: i32, producer_id: i64, commit: bool, loading: bool) {
        let Some(pending) = self.txn_offsets.get_mut(&producer_id) else { return };
        let partitions = self.config.offsets_topic_partitions;
        let ended: Vec<((String, String, i32), CommittedOffset)> = pending
            .extract_if(.., |(group_id, _, _), _| partition_for(group_id, partitions) == partition)
            .collect();
        if pending.is_empty() {
            self.txn_offsets.remove(&producer_id);
        }
        let mut by_group: BTreeMap<String, Vec<GroupRecord>> = BTreeMap::new();
        for ((group_id, topic, p), value) in ended {
            let records = by_group.entry(group_id.clone()).or_default();
            records.push(GroupRecord::TxnOffset { producer_id, group_id: group_id.clone(), topic: topic.clone(), partition: p, value: None });
            if commit {
                let group = self.groups.entry(group_id.clone()).or_insert_with(|| Group::new(now_ms));
                group.offsets.insert((topic.clone(), p), value.clone());
                records.push(GroupRecord::Offset { group_id, topic, partition: p, value: Some(value) });
            }
        }
        if !loading {
            for (group_id, records) in by_group {
                // Nobody waits for these: a lost write leaves the TxnOffset record and the
                // marker, which a reload reads to the same outcome.
                self.persist(&group_id, records);
            }
        }
        self.check_invariants();
    }

    /// The records of `token` are durable (`ok`) or could not be written.
    pub fn handle_persisted(&mut self, token: u64, ok: bool) {
        let Some(commit) = self.pending_commits.remove(&token) else { return };
        let results = if !self.serves(&commit.group_id) {
            // The partition moved while the records were written: the new coordinator
            // replays them if they were committed, and the client asks it again.
            commit.results.into_iter().map(|(t, p, _)| (t, p, Some(ErrorCode::NotCoordinator))).collect()
        } else if ok {
            match commit.producer_id {
                Some(producer_id) => {
                    let pending = self.txn_offsets.entry(producer_id).or_default();
                    for ((topic, p), value) in commit.offsets {
                        pending.insert((commit.group_id.clone(), topic, p), value);
                    }
                }
                None => {
                    if let Some(group) = self.groups.get_mut(&commit.group_id) {
                        group.offsets.extend(commit.offsets);
                    }
                }
            }
            commit.results
        } else {
            commit.results.into_iter().map(|(t, p, _)| (t, p, Some(ErrorCode::CoordinatorNotAvailable))).collect()
        };
        let response = if commit.producer_id.is_some() { Response::TxnOffsetCommit(results) } else { Response::OffsetCommit(results) };
        self.reply(commit.request, response);
        self.check_invariants();
    }

    /// Whether a transaction has offsets pending for the group's partition (KIP-447).
    fn unstable(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.txn_offsets.values().any(|pending| pending.contains_key(&(group_id.to_owned(), topic.to_owned(), partition)))
    }

    /// `partitions: None` asks for every committed partition (OffsetFetch v2+).
    /// `require_stable`: a partition with offsets of an open transaction is answered
    /// UNSTABLE_OFFSET_COMMIT (KIP-447).
    pub fn handle_offset_fetch(&mut self, id: RequestId, group_id: &str, partitions: Option<Vec<(String, i32)>>, require_stable: bool) {
        if let Some(error) = self.not_serving(group_id) {
            return self.reply(id, Response::OffsetFetch(Err(error)));
        }
        let group = self.groups.get(group_id);
        let entry = |(topic, partition): (String, i32), committed: Option<&CommittedOffset>| {
            let unstable = require_stable && self.unstable(group_id, &topic, partition);
            OffsetFetchEntry {
                topic,
                partition,
                offset: committed.map_or(-1, |c| c.offset),
                leader_epoch: committed.map_or(-1, |c| c.leader_epoch),
                metadata: committed.map(|c| c.metadata.clone()).unwrap_or_default(),
                unstable,
            }
        };
        let entries = match partitions {
            Some(wanted) => wanted
                .into_iter()
                .map(|key| {
                    let committed = group.and_then(|g| g.offsets.get(&key));
                    entry(key, committed)
                })
                .collect(),
            None => group
                .map(|g| g.offsets.iter().map(|(k, c)| entry(k.clone(), Some(c))).collect())
                .unwrap_or_default(),
        };
        self.reply(id, Response::OffsetFetch(Ok(entries)));
    }

    pub fn handle_offset_delete(&mut self, id: RequestId, group_id: &str, partitions: Vec<(String, i32)>) {
        if let Some(error) = self.not_serving(group_id) {
            return self.reply(id, Response::OffsetDelete(Some(error), Vec::new()));
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return self.reply(id, Response::OffsetDelete(Some(ErrorCode::GroupIdNotFound), Vec::new()));
        };
        let subscribed = group.subscribed_topics();
        let mut results = Vec::new();
        let mut records = Vec::new();
        for (topic, partition) in partitions {
            // An undecodable subscription is recorded as "" and protects every topic.
            if subscribed.contains(&topic) || subscribed.contains("") {
                results.push((topic, partition, Some(ErrorCode::GroupSubscribedToTopic)));
                continue;
            }
            group.offsets.remove(&(topic.clone(), partition));
            records.push(GroupRecord::Offset { group_id: group_id.to_owned(), topic: topic.clone(), partition, value: None });
            results.push((topic, partition, None));
        }
        if !records.is_empty() {
            self.persist(group_id, records);
        }
        self.reply(id, Response::OffsetDelete(None, results));
        self.check_invariants();
    }

    // ---- admin ----

    pub fn handle_describe(&mut self, id: RequestId, group_ids: Vec<String>) {
        let described = group_ids
            .into_iter()
            .map(|group_id| match self.groups.get(&group_id) {
                _ if !self.serves(&group_id) => DescribedGroup {
                    error: self.not_serving(&group_id),
                    group_id,
                    state: GroupState::Dead,
                    protocol_type: String::new(),
                    protocol: String::new(),
                    members: Vec::new(),
                },
                None => DescribedGroup {
                    group_id,
                    error: None,
                    state: GroupState::Dead,
                    protocol_type: String::new(),
                    protocol: String::new(),
                    members: Vec::new(),
                },
                Some(group) => {
                    let protocol = group.protocol_name.clone().unwrap_or_default();
                    DescribedGroup {
                        error: None,
                        state: group.state,
                        protocol_type: group.protocol_type.clone().unwrap_or_default(),
                        members: group
                            .members
                            .iter()
                            .map(|(member_id, m)| DescribedMember {
                                member_id: member_id.clone(),
                                group_instance_id: m.group_instance_id.clone(),
                                client_id: m.client_id.clone(),
                                client_host: m.client_host.clone(),
                                metadata: m.protocols.iter().find(|(n, _)| *n == protocol).map(|(_, b)| b.clone()).unwrap_or_default(),
                                assignment: m.assignment.clone(),
                            })
                            .collect(),
                        protocol,
                        group_id,
                    }
                }
            })
            .collect();
        self.reply(id, Response::Describe(described));
    }

    pub fn handle_list(&mut self, id: RequestId) {
        let groups = self
            .groups
            .iter()
            .filter(|(group_id, _)| self.serves(group_id))
            .map(|(group_id, g)| (group_id.clone(), g.protocol_type.clone().unwrap_or_default(), g.state))
            .collect();
        self.reply(id, Response::List(groups));
    }

    pub fn handle_delete(&mut self, id: RequestId, group_ids: Vec<String>) {
        let mut results = Vec::new();
        for group_id in group_ids {
            let error = match self.groups.get(&group_id) {
                _ if !self.serves(&group_id) => self.not_serving(&group_id),
                None => Some(ErrorCode::GroupIdNotFound),
                Some(group) if !group.members.is_empty() || group.state != GroupState::Empty => Some(ErrorCode::NonEmptyGroup),
                Some(_) => {
                    self.delete_group(&group_id);
                    None
                }
            };
            results.push((group_id, error));
        }
        self.reply(id, Response::Delete(results));
        self.check_invariants();
    }

    fn delete_group(&mut self, group_id: &str) {
        let Some(group) = self.groups.remove(group_id) else { return };
        let mut records: Vec<GroupRecord> = group
            .offsets
            .into_keys()
            .map(|(topic, partition)| GroupRecord::Offset { group_id: group_id.to_owned(), topic, partition, value: None })
            .collect();
        records.push(GroupRecord::Group { group_id: group_id.to_owned(), value: None });
        self.persist(group_id, records);
    }

    // ---- time ----

    /// Expires sessions, pending member ids, rebalance deadlines and old offsets of empty
    /// groups (`offsets.retention.minutes`, counted from when the group became empty).
    pub fn handle_timeout(&mut self, now_ms: i64) {
        // Groups of a loading partition wait for their load to finish.
        let group_ids: Vec<String> = self.groups.keys().filter(|g| self.serves(g)).cloned().collect();
        for group_id in group_ids {
            let group = self.groups.get_mut(&group_id).expect("listed");
            group.pending_members.retain(|_, deadline| *deadline > now_ms);
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| m.awaiting_join.is_none() && m.session_deadline_ms <= now_ms)
                .map(|(id, _)| id.clone())
                .collect();
            let mut orphaned_syncs = Vec::new();
            for member_id in &expired {
                orphaned_syncs.extend(group.members.get_mut(member_id).and_then(|m| m.awaiting_sync.take()));
                remove_member(group, member_id);
            }
            for sync in orphaned_syncs {
                self.reply(sync, sync_error(ErrorCode::UnknownMemberId));
            }
            if !expired.is_empty() {
                self.rebalance_after_departure(now_ms, &group_id);
            }
            self.try_complete_join(now_ms, &group_id);
            let retention_ms = self.config.offsets_retention_ms;
            let group = self.groups.get(&group_id).expect("listed");
            if group.state == GroupState::Empty
                && group.members.is_empty()
                && retention_ms >= 0
                && now_ms - group.empty_since_ms >= retention_ms
                && group.offsets.values().all(|o| now_ms - o.commit_timestamp_ms >= retention_ms)
            {
                self.delete_group(&group_id);
            }
        }
        self.check_invariants();
    }

    /// Properties that hold after every input that changes state. Only where
    /// [`crate::INVARIANTS`] is on: each check walks every group, too much per heartbeat.
    fn check_invariants(&self) {
        if !crate::INVARIANTS {
            return;
        }
        for (group_id, group) in &self.groups {
            assert!(
                self.partitions.contains_key(&partition_for(group_id, self.config.offsets_topic_partitions)),
                "group {group_id} kept after its partition was unloaded"
            );
            if let Some(leader) = &group.leader {
                assert!(
                    group.members.contains_key(leader) || group.state == GroupState::Empty,
                    "group {group_id}: leader {leader} is not a member in {:?}",
                    group.state
                );
            }
            assert!(
                group.state != GroupState::Stable || !group.members.is_empty(),
                "group {group_id}: Stable without members"
            );
            for (instance, member_id) in &group.static_members {
                assert!(
                    group.members.contains_key(member_id) || group.pending_members.contains_key(member_id),
                    "group {group_id}: static member {instance} maps to unknown {member_id}"
                );
            }
        }
    }

    // ---- read-only views, for metrics ----

    /// The state of every group this coordinator serves (loaded partitions only).
    pub fn group_states(&self) -> impl Iterator<Item = (&str, GroupState)> + '_ {
        self.groups.iter().filter(|(id, _)| self.serves(id)).map(|(id, g)| (id.as_str(), g.state))
    }

    /// `(group, topic, partition, offset)` of every committed offset of the groups this
    /// coordinator serves (transactional offsets count once their marker is written).
    pub fn committed_offsets(&self) -> impl Iterator<Item = (&str, &str, i32, i64)> + '_ {
        self.groups
            .iter()
            .filter(|(id, _)| self.serves(id))
            .flat_map(|(id, g)| g.offsets.iter().map(move |((topic, partition), o)| (id.as_str(), topic.as_str(), *partition, o.offset)))
    }
}

fn sync_error(error: ErrorCode) -> Response {
    Response::Sync(SyncResponse { error: Some(error), ..Default::default() })
}

/// Kafka's checks for a request naming a member and generation.
fn validate_member(group: &Group, member_id: &str, instance: Option<&str>, generation_id: i32) -> Result<(), ErrorCode> {
    if let Some(instance) = instance {
        match group.static_members.get(instance) {
            Some(known) if known != member_id => return Err(ErrorCode::FencedInstanceId),
            _ => {}
        }
    }
    if !group.members.contains_key(member_id) {
        return Err(ErrorCode::UnknownMemberId);
    }
    if generation_id != group.generation_id {
        return Err(ErrorCode::IllegalGeneration);
    }
    Ok(())
}

/// Removes a member and its static mapping; returns a JoinGroup it was waiting on.
fn remove_member(group: &mut Group, member_id: &str) -> Option<RequestId> {
    let member = group.members.remove(member_id)?;
    if let Some(instance) = &member.group_instance_id {
        if group.static_members.get(instance).is_some_and(|m| m == member_id) {
            group.static_members.remove(instance);
        }
    }
    if group.leader.as_deref() == Some(member_id) {
        group.leader = group.members.keys().next().cloned();
    }
    member.awaiting_join
}

fn current_join_response(group: &Group, member_id: &str, with_members: bool) -> JoinResponse {
    let protocol = group.protocol_name.clone();
    JoinResponse {
        error: None,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: protocol.clone(),
        leader: group.leader.clone().unwrap_or_default(),
        member_id: member_id.to_owned(),
        members: if with_members {
            group
                .members
                .iter()
                .map(|(id, m)| JoinMember {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == protocol.as_ref())
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

// ---- record encoding for __consumer_offsets ----
//
// odradek's own layout (Kafka's uses its internal schemas): key = i16 kind (1 offset, 2
// group) then strings as u32 length + UTF-8; value = i16 version 1 then the fields.

const OFFSET_KEY: i16 = 1;
const GROUP_KEY: i16 = 2;
/// odradek's own kind (Kafka keeps transactional offsets under the plain offset key, in
/// transactional batches).
const TXN_OFFSET_KEY: i16 = 0x70;
/// Version 2 added the members of a Stable generation.
const GROUP_VALUE_VERSION: i16 = 2;

/// The record that stores `group`'s current generation: its members only once it is Stable,
/// since a generation still completing has no assignments to resume.
fn group_record(group_id: &str, group: &Group) -> GroupRecord {
    let stable = group.state == GroupState::Stable;
    let members = if stable {
        group
            .members
            .iter()
            .map(|(id, m)| PersistedMember {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocols: m.protocols.clone(),
                assignment: m.assignment.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    GroupRecord::Group {
        group_id: group_id.to_owned(),
        value: Some(GroupValue {
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            generation_id: group.generation_id,
            protocol_name: if stable { group.protocol_name.clone() } else { None },
            leader: if stable { group.leader.clone() } else { None },
            members,
        }),
    }
}

impl GroupRecord {
    pub fn group_id(&self) -> &str {
        match self {
            GroupRecord::Offset { group_id, .. } | GroupRecord::Group { group_id, .. } | GroupRecord::TxnOffset { group_id, .. } => {
                group_id
            }
        }
    }

    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        let mut value = BytesMut::new();
        let has_value = match self {
            GroupRecord::Offset { group_id, topic, partition, value: v }
            | GroupRecord::TxnOffset { group_id, topic, partition, value: v, .. } => {
                let kind = if let GroupRecord::TxnOffset { producer_id, .. } = self {
                    key.put_i16(TXN_OFFSET_KEY);
                    Some(*producer_id)
                } else {
                    key.put_i16(OFFSET_KEY);
                    None
                };
                put_str(&mut key, group_id);
                put_str(&mut key, topic);
                key.put_i32(*partition);
                if let Some(producer_id) = kind {
                    key.put_i64(producer_id);
                }
                if let Some(v) = v {
                    value.put_i16(1);
                    value.put_i64(v.offset);
                    value.put_i32(v.leader_epoch);
                    put_str(&mut value, &v.metadata);
                    value.put_i64(v.commit_timestamp_ms);
                }
                v.is_some()
            }
            GroupRecord::Group { group_id, value: v } => {
                key.put_i16(GROUP_KEY);
                put_str(&mut key, group_id);
                if let Some(v) = v {
                    value.put_i16(GROUP_VALUE_VERSION);
                    put_str(&mut value, &v.protocol_type);
                    value.put_i32(v.generation_id);
                    put_opt_str(&mut value, v.protocol_name.as_deref());
                    put_opt_str(&mut value, v.leader.as_deref());
                    value.put_u32(v.members.len() as u32);
                    for m in &v.members {
                        put_str(&mut value, &m.member_id);
                        put_opt_str(&mut value, m.group_instance_id.as_deref());
                        put_str(&mut value, &m.client_id);
                        put_str(&mut value, &m.client_host);
                        value.put_i32(m.session_timeout_ms);
                        value.put_i32(m.rebalance_timeout_ms);
                        value.put_u32(m.protocols.len() as u32);
                        for (name, metadata) in &m.protocols {
                            put_str(&mut value, name);
                            put_bytes(&mut value, metadata);
                        }
                        put_bytes(&mut value, &m.assignment);
                    }
                }
                v.is_some()
            }
        };
        (key.freeze(), has_value.then(|| value.freeze()))
    }

    pub fn decode(mut key: Bytes, value: Option<Bytes>) -> Result<GroupRecord, String> {
        let kind = get_i16(&mut key)?;
        let group_id = get_str(&mut key)?;
        match kind {
            OFFSET_KEY | TXN_OFFSET_KEY => {
                let topic = get_str(&mut key)?;
                let partition = get_i32(&mut key)?;
                let producer_id = if kind == TXN_OFFSET_KEY { Some(get_i64(&mut key)?) } else { None };
                let value = match value {
                    None => None,
                    Some(mut v) => {
                        let _version = get_i16(&mut v)?;
                        Some(CommittedOffset {
                            offset: get_i64(&mut v)?,
                            leader_epoch: get_i32(&mut v)?,
                            metadata: get_str(&mut v)?,
                            commit_timestamp_ms: get_i64(&mut v)?,
                        })
                    }
                };
                Ok(match producer_id {
                    Some(producer_id) => GroupRecord::TxnOffset { producer_id, group_id, topic, partition, value },
                    None => GroupRecord::Offset { group_id, topic, partition, value },
                })
            }
            GROUP_KEY => {
                let value = match value {
                    None => None,
                    Some(mut v) => {
                        let version = get_i16(&mut v)?;
                        let mut group =
                            GroupValue { protocol_type: get_str(&mut v)?, generation_id: get_i32(&mut v)?, ..Default::default() };
                        // Version 1 stored no members: such a group loads Empty.
                        if version >= 2 {
                            group.protocol_name = get_opt_str(&mut v)?;
                            group.leader = get_opt_str(&mut v)?;
                            let count = get_i32(&mut v)?;
                            for _ in 0..count {
                                let mut member = PersistedMember {
                                    member_id: get_str(&mut v)?,
                                    group_instance_id: get_opt_str(&mut v)?,
                                    client_id: get_str(&mut v)?,
                                    client_host: get_str(&mut v)?,
                                    session_timeout_ms: get_i32(&mut v)?,
                                    rebalance_timeout_ms: get_i32(&mut v)?,
                                    ..Default::default()
                                };
                                let protocols = get_i32(&mut v)?;
                                for _ in 0..protocols {
                                    member.protocols.push((get_str(&mut v)?, get_bytes(&mut v)?));
                                }
                                member.assignment = get_bytes(&mut v)?;
                                group.members.push(member);
                            }
                        }
                        Some(group)
                    }
                };
                Ok(GroupRecord::Group { group_id, value })
            }
            other => Err(format!("unknown record kind {other}")),
        }
    }
}

fn put_str(buf: &mut BytesMut, s: &str) {
    put_bytes(buf, s.as_bytes());
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32(b.len() as u32);
    buf.put_slice(b);
}

/// `None` is written as length `u32::MAX`, which no string reaches.
fn put_opt_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(buf, s),
        None => buf.put_u32(u32::MAX),
    }
}

fn get_opt_str(buf: &mut Bytes) -> Result<Option<String>, String> {
    need(buf, 4)?;
    if buf[..4] == [0xff; 4] {
        buf.advance(4);
        return Ok(None);
    }
    get_str(buf).map(Some)
}

fn get_bytes(buf: &mut Bytes) -> Result<Bytes, String> {
    need(buf, 4)?;
    let len = buf.get_u32() as usize;
    need(buf, len)?;
    Ok(buf.split_to(len))
}

fn need(buf: &Bytes, n: usize) -> Result<(), String> {
    if buf.remaining() < n { Err(format!("record ends early: need {n} bytes, have {}", buf.remaining())) } else { Ok(()) }
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
    need(buf, 4)?;
    let len = buf.get_u32();
    need(buf, len as usize)?;
    String::from_utf8(buf.split_to(len as usize).to_vec()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION_MS: i32 = 10_000;

    fn coordinator() -> GroupCoordinator {
        serving_all(GroupCoordinator::new(GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() }, 7))
    }

    /// A coordinator serving every `__consumer_offsets` partition, as a single node's does.
    fn serving_all(mut c: GroupCoordinator) -> GroupCoordinator {
        for p in 0..c.config.offsets_topic_partitions {
            c.begin_load(p);
            c.finish_load(p);
        }
        c
    }

    fn join(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: None,
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("meta-{p}")))).collect(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: 30_000,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            require_known_member_id: true,
        }
    }

    std::thread_local! {
        /// Every record the coordinator under test asked to persist, in order: the
        /// `__consumer_offsets` partition a restart replays.
        static PERSISTED: std::cell::RefCell<Vec<GroupRecord>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn drain(c: &mut GroupCoordinator) -> Vec<Action> {
        let actions: Vec<Action> = std::iter::from_fn(|| c.poll_action()).collect();
        for action in &actions {
            if let Action::Persist { records, .. } = action {
                PERSISTED.with(|p| p.borrow_mut().extend(records.iter().cloned()));
            }
        }
        actions
    }

    fn replies(c: &mut GroupCoordinator) -> BTreeMap<RequestId, Response> {
        drain(c)
            .into_iter()
            .filter_map(|a| match a {
                Action::Reply(id, r) => Some((id, r)),
                Action::Persist { .. } => None,
            })
            .collect()
    }

    fn join_response(r: &Response) -> &JoinResponse {
        match r {
            Response::Join(j) => j,
            other => panic!("expected a join answer, got {other:?}"),
        }
    }

    /// Joins a new dynamic member through MEMBER_ID_REQUIRED; returns its member id.
    fn new_member(c: &mut GroupCoordinator, now: i64, id: RequestId) -> String {
        c.handle_join(now, id, join("", &["range"]));
        let answers = replies(c);
        let first = join_response(&answers[&id]);
        assert_eq!(first.error, Some(ErrorCode::MemberIdRequired));
        first.member_id.clone()
    }

    fn sync(member_id: &str, generation_id: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
        SyncRequest {
            group_id: "g".into(),
            generation_id,
            member_id: member_id.into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        }
    }

    fn heartbeat(c: &mut GroupCoordinator, now: i64, member_id: &str, generation_id: i32) -> Option<ErrorCode> {
        let req = HeartbeatRequest { group_id: "g".into(), generation_id, member_id: member_id.into(), group_instance_id: None };
        c.handle_heartbeat(now, 999, req);
        match replies(c).remove(&999) {
            Some(Response::Heartbeat(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    /// Two members form generation 1; the leader's assignment reaches both.
    fn stable_pair(c: &mut GroupCoordinator) -> (String, String) {
        let a = new_member(c, 0, 1);
        let b = new_member(c, 0, 2);
        c.handle_join(0, 3, join(&a, &["range"]));
        assert!(replies(c).is_empty(), "the join waits for the second member");
        c.handle_join(0, 4, join(&b, &["range"]));
        let answers = replies(c);
        let (ja, jb) = (join_response(&answers[&3]), join_response(&answers[&4]));
        assert_eq!((ja.generation_id, jb.generation_id), (1, 1));
        assert_eq!(ja.leader, jb.leader);
        let (leader, follower) = if ja.leader == a { (a, b) } else { (b, a) };
        let leader_answer = if ja.member_id == leader { ja } else { jb };
        assert_eq!(leader_answer.members.len(), 2, "only the leader gets the member list");
        c.handle_sync(0, 5, sync(&follower, 1, vec![]));
        assert!(replies(c).is_empty(), "followers wait for the leader's assignment");
        let assignments = vec![(leader.clone(), Bytes::from("L")), (follower.clone(), Bytes::from("F"))];
        c.handle_sync(0, 6, sync(&leader, 1, assignments));
        let answers = replies(c);
        assert_eq!(answers[&5], Response::Sync(SyncResponse { error: None, protocol_type: Some("consumer".into()), protocol_name: Some("range".into()), assignment: Bytes::from("F") }));
        assert!(matches!(&answers[&6], Response::Sync(s) if s.assignment == "L"));
        (leader, follower)
    }

    #[test]
    fn members_join_sync_and_get_their_assignment() {
        let mut c = coordinator();
        let (leader, follower) = stable_pair(&mut c);
        assert_eq!(heartbeat(&mut c, 1, &leader, 1), None);
        assert_eq!(heartbeat(&mut c, 1, &follower, 1), None);
    }

    // Clients rely on these codes to rejoin by themselves.
    #[test]
    fn heartbeats_report_unknown_members_stale_generations_and_rebalances() {
        let mut c = coordinator();
        let (leader, follower) = stable_pair(&mut c);
        assert_eq!(heartbeat(&mut c, 1, "nobody", 1), Some(ErrorCode::UnknownMemberId));
        assert_eq!(heartbeat(&mut c, 1, &leader, 0), Some(ErrorCode::IllegalGeneration));
        c.handle_join(2, 10, join(&leader, &["range"]));
        assert_eq!(heartbeat(&mut c, 3, &follower, 1), Some(ErrorCode::RebalanceInProgress));
    }

    #[test]
    fn a_silent_member_is_removed_after_its_session_timeout() {
        let mut c = coordinator();
        let (leader, follower) = stable_pair(&mut c);
        let step = i64::from(SESSION_MS) / 4;
        for t in 1..=3 {
            assert_eq!(heartbeat(&mut c, t * step, &leader, 1), None);
            c.handle_timeout(t * step);
        }
        assert_eq!(heartbeat(&mut c, 3 * step, &follower, 1), None, "still within its session");
        c.handle_timeout(3 * step + i64::from(SESSION_MS));
        let _ = drain(&mut c);
        assert_eq!(heartbeat(&mut c, 3 * step + i64::from(SESSION_MS), &follower, 1), Some(ErrorCode::UnknownMemberId));
    }

    #[test]
    fn leaving_rebalances_at_once_and_the_last_leave_empties_the_group() {
        let mut c = coordinator();
        let (leader, follower) = stable_pair(&mut c);
        c.handle_leave(5, 20, LeaveRequest { group_id: "g".into(), members: vec![(follower.clone(), None)] });
        let answers = replies(&mut c);
        assert!(matches!(&answers[&20], Response::Leave(l) if l.error.is_none()));
        assert_eq!(heartbeat(&mut c, 5, &leader, 1), Some(ErrorCode::RebalanceInProgress));
        c.handle_join(6, 21, join(&leader, &["range"]));
        let answers = replies(&mut c);
        let rejoined = join_response(&answers[&21]);
        assert_eq!((rejoined.generation_id, rejoined.members.len()), (2, 1));
        c.handle_leave(7, 22, LeaveRequest { group_id: "g".into(), members: vec![(leader, None)] });
        let _ = drain(&mut c);
        c.handle_describe(23, vec!["g".into()]);
        match &replies(&mut c)[&23] {
            Response::Describe(groups) => assert_eq!(groups[0].state, GroupState::Empty),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_different_protocol_type_is_inconsistent() {
        let mut c = coordinator();
        stable_pair(&mut c);
        let mut other = join("", &["range"]);
        other.protocol_type = "connect".into();
        c.handle_join(0, 30, other);
        assert_eq!(join_response(&replies(&mut c)[&30]).error, Some(ErrorCode::InconsistentGroupProtocol));
        let mut disjoint = join("", &["sticky-only"]);
        disjoint.require_known_member_id = false;
        c.handle_join(0, 31, disjoint);
        assert_eq!(join_response(&replies(&mut c)[&31]).error, Some(ErrorCode::InconsistentGroupProtocol));
    }

    #[test]
    fn session_timeouts_outside_the_broker_range_are_refused() {
        let mut c = coordinator();
        let mut short = join("", &["range"]);
        short.session_timeout_ms = 1_000;
        c.handle_join(0, 1, short);
        assert_eq!(join_response(&replies(&mut c)[&1]).error, Some(ErrorCode::InvalidSessionTimeout));
    }

    fn commit(group_member: (&str, i32), offset: i64, metadata: &str) -> OffsetCommitRequest {
        OffsetCommitRequest {
            group_id: "g".into(),
            generation_id: group_member.1,
            member_id: group_member.0.into(),
            group_instance_id: None,
            offsets: vec![("t".into(), 0, offset, -1, Some(metadata.into()))],
        }
    }

    // An acknowledged commit must be durable: the answer waits for the records' fsync.
    #[test]
    fn commits_are_answered_only_once_persisted() {
        let mut c = coordinator();
        c.handle_offset_commit(0, 1, commit(("", -1), 42, "meta"));
        let actions = drain(&mut c);
        let [Action::Persist { token, partition, records }] = &actions[..] else { panic!("{actions:?}") };
        assert_eq!(*partition, partition_for("g", 50));
        assert_eq!(records.len(), 1);
        c.handle_offset_fetch(2, "g", None, false);
        assert!(matches!(&replies(&mut c)[&2], Response::OffsetFetch(Ok(e)) if e.is_empty()));
        c.handle_persisted(*token, true);
        assert_eq!(replies(&mut c)[&1], Response::OffsetCommit(vec![("t".into(), 0, None)]));
        c.handle_offset_fetch(3, "g", Some(vec![("t".into(), 0), ("t".into(), 1)]), false);
        match &replies(&mut c)[&3] {
            Response::OffsetFetch(Ok(e)) => {
                assert_eq!((e[0].offset, e[0].metadata.as_str()), (42, "meta"));
                assert_eq!(e[1].offset, -1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_persist_is_a_retriable_error_and_changes_nothing() {
        let mut c = coordinator();
        c.handle_offset_commit(0, 1, commit(("", -1), 42, ""));
        let Some(Action::Persist { token, .. }) = c.poll_action() else { panic!() };
        c.handle_persisted(token, false);
        assert_eq!(replies(&mut c)[&1], Response::OffsetCommit(vec![("t".into(), 0, Some(ErrorCode::CoordinatorNotAvailable))]));
        c.handle_offset_fetch(2, "g", Some(vec![("t".into(), 0)]), false);
        assert!(matches!(&replies(&mut c)[&2], Response::OffsetFetch(Ok(e)) if e[0].offset == -1));
    }

    #[test]
    fn commits_check_membership_and_generation() {
        let mut c = coordinator();
        let (leader, _) = stable_pair(&mut c);
        let codes = |c: &mut GroupCoordinator, req, id| {
            c.handle_offset_commit(0, id, req);
            match replies(c).remove(&id) {
                Some(Response::OffsetCommit(r)) => r[0].2,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(codes(&mut c, commit(("", -1), 1, ""), 40), Some(ErrorCode::UnknownMemberId));
        assert_eq!(codes(&mut c, commit((&leader, 0), 1, ""), 41), Some(ErrorCode::IllegalGeneration));
        assert_eq!(codes(&mut c, commit(("stranger", 1), 1, ""), 42), Some(ErrorCode::UnknownMemberId));
        c.handle_join(1, 44, join(&leader, &["range"]));
        assert_eq!(heartbeat(&mut c, 1, &leader, 1), Some(ErrorCode::RebalanceInProgress));
        c.handle_offset_commit(1, 45, commit((&leader, 1), 7, "on revoke"));
        let persisted = drain(&mut c);
        assert!(matches!(&persisted[..], [Action::Persist { .. }]), "commit on revoke accepted while preparing: {persisted:?}");
        let long = "x".repeat(5000);
        assert_eq!(codes(&mut c, commit((&leader, 1), 1, &long), 43), Some(ErrorCode::OffsetMetadataTooLarge));
    }

    #[test]
    fn a_static_member_restarting_gets_its_assignment_back_without_a_rebalance() {
        let mut c = coordinator();
        let static_join = |instance: &str, member_id: &str| JoinRequest {
            group_instance_id: Some(instance.into()),
            ..join(member_id, &["range"])
        };
        c.handle_join(0, 1, static_join("instance-a", ""));
        let a = join_response(&replies(&mut c)[&1]).member_id.clone();
        c.handle_sync(0, 2, sync(&a, 1, vec![(a.clone(), "A".into())]));
        let _ = drain(&mut c);
        c.handle_join(0, 3, static_join("instance-b", ""));
        c.handle_join(0, 4, static_join("instance-a", &a));
        let answers = replies(&mut c);
        let b = join_response(&answers[&3]).member_id.clone();
        assert_eq!(join_response(&answers[&4]).leader, a, "the leader stays the leader");
        c.handle_sync(0, 5, sync(&a, 2, vec![(a.clone(), "L".into()), (b.clone(), "F".into())]));
        c.handle_sync(0, 6, sync(&b, 2, vec![]));
        let _ = drain(&mut c);

        c.handle_join(1, 7, static_join("instance-b", ""));
        let answer = join_response(&replies(&mut c)[&7]).clone();
        assert_eq!((answer.error, answer.generation_id), (None, 2), "no rebalance");
        assert_ne!(answer.member_id, b);
        assert_eq!(heartbeat(&mut c, 1, &a, 2), None, "the leader is not disturbed");
        c.handle_sync(1, 8, sync(&answer.member_id, 2, vec![]));
        assert!(matches!(&replies(&mut c)[&8], Response::Sync(s) if s.assignment == "F"));
        assert_eq!(heartbeat(&mut c, 1, &b, 2), Some(ErrorCode::UnknownMemberId), "the old id is fenced");
    }

    #[test]
    fn initial_rebalance_delay_waits_for_more_members() {
        let mut c = serving_all(GroupCoordinator::new(GroupConfig { initial_rebalance_delay_ms: 3_000, ..GroupConfig::default() }, 1));
        let mut j = join("", &["range"]);
        j.require_known_member_id = false;
        c.handle_join(0, 1, j.clone());
        c.handle_timeout(1_000);
        c.handle_join(1_000, 2, j);
        c.handle_timeout(3_500);
        assert!(replies(&mut c).is_empty(), "the second member extended the delay to 4000");
        c.handle_timeout(4_000);
        let answers = replies(&mut c);
        assert_eq!(join_response(&answers[&1]).generation_id, 1);
        assert_eq!(join_response(&answers[&2]).generation_id, 1);
    }

    #[test]
    fn records_round_trip_and_rebuild_offsets_and_generation() {
        let records = vec![
            GroupRecord::Offset {
                group_id: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(CommittedOffset { offset: 9, leader_epoch: 2, metadata: "m".into(), commit_timestamp_ms: 5 }),
            },
            GroupRecord::Offset { group_id: "g".into(), topic: "t".into(), partition: 4, value: None },
            GroupRecord::Group {
                group_id: "g".into(),
                value: Some(GroupValue { protocol_type: "consumer".into(), generation_id: 7, ..Default::default() }),
            },
        ];
        let mut c = coordinator();
        let partition = partition_for("g", c.config.offsets_topic_partitions);
        c.begin_load(partition);
        for record in &records {
            let (key, value) = record.encode();
            let decoded = GroupRecord::decode(key, value).unwrap();
            assert_eq!(&decoded, record);
            c.load(0, decoded);
        }
        c.finish_load(partition);
        assert!(GroupRecord::decode(Bytes::from_static(&[0, 1, 0]), None).is_err());
        c.handle_offset_fetch(1, "g", None, false);
        assert!(matches!(&replies(&mut c)[&1], Response::OffsetFetch(Ok(e)) if e.len() == 1 && e[0].offset == 9));
        let j = join("", &["range"]);
        c.handle_join(0, 2, JoinRequest { require_known_member_id: false, ..j });
        assert_eq!(join_response(&replies(&mut c)[&2]).generation_id, 8, "generations continue after a restart");
    }

    fn fetched(c: &mut GroupCoordinator, id: RequestId) -> (i64, bool) {
        c.handle_offset_fetch(id, "g", Some(vec![("t".into(), 0)]), true);
        match &replies(c)[&id] {
            Response::OffsetFetch(Ok(e)) => (e[0].offset, e[0].unstable),
            other => panic!("{other:?}"),
        }
    }

    // KIP-98/447: a transaction's offsets count only once its commit marker is written, and a
    // reload reaches the same outcome from the records and markers in the log.
    #[test]
    fn transactional_offsets_wait_for_their_marker_and_replay_the_same_way() {
        let mut c = coordinator();
        let partition = partition_for("g", c.config.offsets_topic_partitions);
        let mut log: Vec<Option<GroupRecord>> = Vec::new();
        let txn_commit = |c: &mut GroupCoordinator, id, producer_id, offset| {
            c.handle_txn_offset_commit(0, id, TxnOffsetCommitRequest { producer_id, commit: commit(("", -1), offset, "") });
            let Some(Action::Persist { token, records, .. }) = c.poll_action() else { panic!("a persist") };
            c.handle_persisted(token, true);
            assert_eq!(replies(c)[&id], Response::TxnOffsetCommit(vec![("t".into(), 0, None)]));
            records
        };
        log.extend(txn_commit(&mut c, 1, 7, 10).into_iter().map(Some));
        assert_eq!(fetched(&mut c, 2), (-1, true), "pending: unstable, not committed");
        c.handle_txn_marker(0, partition, 7, true, false);
        log.push(None);
        let settled = drain(&mut c);
        assert!(matches!(&settled[..], [Action::Persist { records, .. }] if records.iter().any(|r| matches!(r, GroupRecord::Offset { value: Some(v), .. } if v.offset == 10))));
        assert_eq!(fetched(&mut c, 3), (10, false));
        log.extend(txn_commit(&mut c, 4, 8, 20).into_iter().map(Some));
        c.handle_txn_marker(0, partition, 8, false, false);
        log.push(None);
        let _ = drain(&mut c);
        assert_eq!(fetched(&mut c, 5), (10, false), "an aborted transaction's offsets are dropped");
        log.extend(txn_commit(&mut c, 6, 9, 30).into_iter().map(Some));

        let mut reloaded = coordinator();
        reloaded.begin_load(partition);
        let mut markers = [(7, true), (8, false)].into_iter();
        for entry in log {
            match entry {
                Some(record) => reloaded.load(0, record),
                None => {
                    let (producer_id, commit) = markers.next().unwrap();
                    reloaded.handle_txn_marker(0, partition, producer_id, commit, true);
                }
            }
        }
        reloaded.finish_load(partition);
        assert!(drain(&mut reloaded).is_empty(), "a replay writes nothing");
        assert_eq!(fetched(&mut reloaded, 1), (10, true), "producer 9's offsets are still pending");
        reloaded.handle_txn_marker(0, partition, 9, true, false);
        let _ = drain(&mut reloaded);
        assert_eq!(fetched(&mut reloaded, 2), (30, false));
    }

    #[test]
    fn empty_groups_lose_their_offsets_after_retention() {
        let mut c = serving_all(GroupCoordinator::new(GroupConfig { offsets_retention_ms: 1_000, ..GroupConfig::default() }, 1));
        c.handle_offset_commit(0, 1, commit(("", -1), 42, ""));
        let Some(Action::Persist { token, .. }) = c.poll_action() else { panic!() };
        c.handle_persisted(token, true);
        let _ = drain(&mut c);
        c.handle_timeout(999);
        assert!(drain(&mut c).is_empty());
        c.handle_timeout(1_000);
        let actions = drain(&mut c);
        assert!(matches!(&actions[..], [Action::Persist { records, .. }] if records.iter().any(|r| matches!(r, GroupRecord::Offset { value: None, .. }))));
        c.handle_list(2);
        assert_eq!(replies(&mut c)[&2], Response::List(vec![]));
    }

    #[test]
    fn group_partition_matches_kafkas_choice() {
        // Values of Java's String.hashCode-based choice with 50 partitions.
        assert_eq!(partition_for("my-group", 50), 36);
        assert_eq!(partition_for("test-consumer-group", 50), 17);
        assert_eq!(partition_for("g", 50), 3);
    }

    #[test]
    fn delete_refuses_groups_with_members() {
        let mut c = coordinator();
        stable_pair(&mut c);
        c.handle_delete(1, vec!["g".into(), "missing".into()]);
        assert_eq!(
            replies(&mut c)[&1],
            Response::Delete(vec![("g".into(), Some(ErrorCode::NonEmptyGroup)), ("missing".into(), Some(ErrorCode::GroupIdNotFound))])
        );
    }

    /// A coordinator rebuilt from every record persisted so far (through the byte encoding),
    /// as a restart replaying `__consumer_offsets` would. A new seed, as each start gets.
    fn restarted(c: &mut GroupCoordinator, now: i64) -> GroupCoordinator {
        let _ = drain(c);
        let mut fresh = GroupCoordinator::new(GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() }, now as u64 + 1000);
        replay_into(&mut fresh, now);
        fresh
    }

    /// Loads every partition of `c` from every record persisted so far.
    fn replay_into(c: &mut GroupCoordinator, now: i64) {
        let partitions = c.config.offsets_topic_partitions;
        for p in 0..partitions {
            c.begin_load(p);
        }
        for record in PERSISTED.with(|p| p.borrow().clone()) {
            let (key, value) = record.encode();
            c.load(now, GroupRecord::decode(key, value).unwrap());
        }
        for p in 0..partitions {
            c.finish_load(p);
        }
    }

    // Clients find the coordinator by the partition's leader; any other node must send them
    // back to FindCoordinator, and a node still replaying the partition must ask them to wait.
    #[test]
    fn only_loaded_partitions_are_served() {
        let mut c = GroupCoordinator::new(GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() }, 7);
        let partition = partition_for("g", c.config.offsets_topic_partitions);
        c.handle_join(0, 1, join("", &["range"]));
        c.handle_offset_fetch(2, "g", None, false);
        c.handle_offset_commit(0, 3, commit(("", -1), 1, ""));
        c.handle_describe(4, vec!["g".into()]);
        let answers = replies(&mut c);
        assert_eq!(join_response(&answers[&1]).error, Some(ErrorCode::NotCoordinator));
        assert_eq!(answers[&2], Response::OffsetFetch(Err(ErrorCode::NotCoordinator)));
        assert_eq!(answers[&3], Response::OffsetCommit(vec![("t".into(), 0, Some(ErrorCode::NotCoordinator))]));
        assert!(matches!(&answers[&4], Response::Describe(d) if d[0].error == Some(ErrorCode::NotCoordinator)));

        c.begin_load(partition);
        c.handle_heartbeat(0, 5, HeartbeatRequest { group_id: "g".into(), generation_id: 1, member_id: "m".into(), group_instance_id: None });
        assert_eq!(replies(&mut c)[&5], Response::Heartbeat(Some(ErrorCode::CoordinatorLoadInProgress)));
        c.finish_load(partition);
        c.handle_offset_fetch(6, "g", None, false);
        assert_eq!(replies(&mut c)[&6], Response::OffsetFetch(Ok(vec![])));
        assert_eq!(c.owned_partitions(), vec![partition]);
    }

    // Leadership of the group's partition moves to another node: this one forgets the group
    // and sends parked members to the new coordinator, which rebuilds the Stable generation
    // from the replicated records, so members keep their generation and assignment.
    #[test]
    fn a_moved_partition_is_unloaded_and_resumed_elsewhere() {
        let mut c = coordinator();
        let (leader, follower) = stable_pair(&mut c);
        c.handle_offset_commit(0, 10, commit((&leader, 1), 77, ""));
        let Some(Action::Persist { token, records, .. }) = c.poll_action() else { panic!("the commit is persisted") };
        PERSISTED.with(|p| p.borrow_mut().extend(records));
        // The leader rejoins (a rebalance that parks its join) as the partition moves away.
        c.handle_join(1, 11, join(&leader, &["range"]));
        let partition = partition_for("g", c.config.offsets_topic_partitions);
        c.unload(partition);
        c.handle_persisted(token, true);
        let answers = replies(&mut c);
        assert_eq!(join_response(&answers[&11]).error, Some(ErrorCode::NotCoordinator));
        assert_eq!(answers[&10], Response::OffsetCommit(vec![("t".into(), 0, Some(ErrorCode::NotCoordinator))]));
        assert_eq!(heartbeat(&mut c, 2, &leader, 1), Some(ErrorCode::NotCoordinator));
        c.handle_list(12);
        assert_eq!(replies(&mut c)[&12], Response::List(vec![]));

        let mut elsewhere = GroupCoordinator::new(GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() }, 99);
        replay_into(&mut elsewhere, 3);
        assert_eq!(heartbeat(&mut elsewhere, 3, &leader, 1), None, "the generation resumes");
        assert_eq!(heartbeat(&mut elsewhere, 3, &follower, 1), None);
        elsewhere.handle_offset_fetch(13, "g", None, false);
        assert!(matches!(&replies(&mut elsewhere)[&13], Response::OffsetFetch(Ok(e)) if e.len() == 1 && e[0].offset == 77));
    }

    // A coordinator restart must not force a rebalance on a Stable group (Kafka stores the
    // members in its GroupMetadata record): members keep heartbeating their generation.
    #[test]
    fn a_stable_generation_resumes_after_a_restart() {
        let mut c = coordinator();
        let (leader, follower) = stable_pair(&mut c);
        let mut c = restarted(&mut c, 100);
        assert_eq!(heartbeat(&mut c, 200, &leader, 1), None);
        c.handle_sync(200, 7, sync(&leader, 1, vec![]));
        assert!(matches!(&replies(&mut c)[&7], Response::Sync(s) if s.assignment == "L"), "assignment kept");
        c.handle_describe(8, vec!["g".into()]);
        let Response::Describe(groups) = &replies(&mut c)[&8] else { panic!() };
        assert_eq!((groups[0].state, groups[0].members.len()), (GroupState::Stable, 2));

        // Sessions restart at load time: the follower, silent since, goes one session later.
        let session = i64::from(SESSION_MS);
        assert_eq!(heartbeat(&mut c, 100 + session - 1, &leader, 1), None);
        c.handle_timeout(100 + session - 1);
        assert_eq!(heartbeat(&mut c, 100 + session - 1, &follower, 1), None, "still within its session");
        assert_eq!(heartbeat(&mut c, 100 + 2 * session - 2, &leader, 1), None);
        c.handle_timeout(100 + 2 * session);
        assert_eq!(heartbeat(&mut c, 100 + 2 * session, &leader, 1), Some(ErrorCode::RebalanceInProgress));
    }

    #[test]
    fn a_generation_still_completing_is_not_stored_so_the_last_stable_one_loads() {
        let mut c = coordinator();
        let a = new_member(&mut c, 0, 1);
        c.handle_join(0, 2, join(&a, &["range"]));
        let mut c = restarted(&mut c, 10);
        assert_eq!(heartbeat(&mut c, 20, &a, 1), Some(ErrorCode::UnknownMemberId), "nothing was stable yet");

        // Stable at generation 1; a second member's join completes generation 2, then the
        // coordinator moves before the SyncGroup.
        PERSISTED.with(|p| p.borrow_mut().clear());
        let mut c = coordinator();
        let a = new_member(&mut c, 0, 1);
        c.handle_join(0, 2, join(&a, &["range"]));
        let _ = drain(&mut c);
        c.handle_sync(0, 3, sync(&a, 1, vec![(a.clone(), "A".into())]));
        let _ = drain(&mut c);
        let b = new_member(&mut c, 1, 4);
        c.handle_join(1, 5, join(&b, &["range"]));
        c.handle_join(1, 6, join(&a, &["range"]));
        let answers = replies(&mut c);
        assert_eq!(join_response(&answers[&6]).generation_id, 2);
        let mut c = restarted(&mut c, 10);
        // The member of generation 1 is still known, and a commit of that generation is taken.
        assert_eq!(heartbeat(&mut c, 20, &a, 1), None);
        assert_eq!(heartbeat(&mut c, 20, &a, 2), Some(ErrorCode::IllegalGeneration));
    }

    // The stored generation must follow a static member's new id, or after a restart the
    // coordinator would fence the live member with FENCED_INSTANCE_ID.
    #[test]
    fn a_replaced_static_member_is_stored_under_its_new_id() {
        let mut c = coordinator();
        let static_join = |instance: &str, member_id: &str| JoinRequest {
            group_instance_id: Some(instance.into()),
            ..join(member_id, &["range"])
        };
        c.handle_join(0, 1, static_join("a", ""));
        let a = join_response(&replies(&mut c)[&1]).member_id.clone();
        c.handle_sync(0, 2, sync(&a, 1, vec![(a.clone(), "A".into())]));
        c.handle_join(0, 3, static_join("b", ""));
        c.handle_join(0, 4, static_join("a", &a));
        let b = join_response(&replies(&mut c)[&3]).member_id.clone();
        c.handle_sync(0, 5, sync(&a, 2, vec![(a.clone(), "L".into()), (b.clone(), "F".into())]));
        let _ = drain(&mut c);

        // Restart, then instance b restarts too and takes over its identity without a rebalance.
        let mut c = restarted(&mut c, 1);
        c.handle_join(2, 6, static_join("b", ""));
        let answer = join_response(&replies(&mut c)[&6]).clone();
        assert_eq!((answer.error, answer.generation_id), (None, 2));
        assert_ne!(answer.member_id, b);

        let mut c = restarted(&mut c, 3);
        let beat = |c: &mut GroupCoordinator, member_id: &str| {
            let req = HeartbeatRequest { group_id: "g".into(), generation_id: 2, member_id: member_id.into(), group_instance_id: Some("b".into()) };
            c.handle_heartbeat(4, 9, req);
            replies(c).remove(&9).unwrap()
        };
        assert_eq!(beat(&mut c, &answer.member_id), Response::Heartbeat(None));
        assert_eq!(beat(&mut c, &b), Response::Heartbeat(Some(ErrorCode::FencedInstanceId)));
    }

    #[test]
    fn version_1_group_records_still_load() {
        let mut value = BytesMut::new();
        value.put_i16(1);
        put_str(&mut value, "consumer");
        value.put_i32(4);
        let (key, _) = GroupRecord::Group { group_id: "g".into(), value: None }.encode();
        let decoded = GroupRecord::decode(key, Some(value.freeze())).unwrap();
        let GroupRecord::Group { value: Some(v), .. } = &decoded else { panic!() };
        assert_eq!((v.generation_id, v.members.len()), (4, 0));
    }
}
