//! The requests `odradek group` and `odradek users` send and the answers they read, version
//! by version.
//!
//! Each builder sets only the fields its version carries (the codec refuses to encode a field
//! the version lacks), and each reader folds the version-specific answer shapes into one plain
//! type. Everything here is pure; the tests encode every version in [`CLIENT_VERSIONS`] and
//! decode it back with kafka-protocol's own decoders.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::alter_user_scram_credentials_request::{ScramCredentialDeletion, ScramCredentialUpsertion};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse, ApiKey, BrokerId, ConsumerProtocolAssignment, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, ListGroupsRequest, ListGroupsResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Message, StrBytes};
use kafka_protocol::ResponseError;
use odradek_core::acl::{AclBinding, AclBindingFilter, Operation, PatternType, Permission, ResourceType};

use super::TopicPartition;

/// The versions this tool encodes and reads, per API. Each request goes out at the highest
/// version inside both this range and the one the broker advertises.
pub const CLIENT_VERSIONS: [(ApiKey, i16, i16); 27] = [
    // Always v0: every broker answers it, and it is the request that learns the others.
    (ApiKey::ApiVersions, 0, 0),
    (ApiKey::Metadata, 1, 12),
    // v10 adds a tiered-storage timeout and nothing else this tool needs.
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    // v1 cannot ask for "every committed partition" (a null topic list came with v2).
    (ApiKey::OffsetFetch, 2, 9),
    (ApiKey::OffsetCommit, 2, 9),
    // KIP-554; v0 is the only version.
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // KIP-140; v0 (no pattern type) is gone from Kafka 4.0 and from kafka-protocol 0.18.
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    // `odradek topics`: CreateTopics v2 is the oldest Kafka 4.0 serves (KIP-896); v1 of
    // DeleteTopics likewise.
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    // `odradek configs`: DescribeConfigs v0 is gone from Kafka 4.0 and kafka-protocol 0.18.
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    // `odradek configs` for users, clients and ips (KIP-546).
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    // `odradek cluster` (KIP-700) and `odradek log-dirs` (KIP-113).
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    // `odradek produce` and `consume`: v3 is the first Produce of record batch v2; Fetch v13
    // names topics by id, which the Metadata this tool reads may not carry.
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    // `odradek delete-records`.
    (ApiKey::DeleteRecords, 0, 2),
    // `odradek reassign` (KIP-455; v1 carries KIP-860's flag).
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
];

pub fn client_versions(api_key: ApiKey) -> Option<(i16, i16)> {
    CLIENT_VERSIONS.iter().find(|(k, _, _)| *k == api_key).map(|&(_, min, max)| (min, max))
}

/// The highest version inside both ranges, if they overlap.
pub fn negotiate(client: (i16, i16), broker: (i16, i16)) -> Option<i16> {
    let max = client.1.min(broker.1);
    (max >= client.0.max(broker.0)).then_some(max)
}

/// FindCoordinator key type of a consumer group (1 is a transactional id).
const GROUP_KEY_TYPE: i8 = 0;
/// ListOffsets timestamps with a special meaning (KIP-79).
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// What is wrong with an answer, or with one entry of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The broker answered with a Kafka error code.
    #[error("{}{}", error_name(*code), message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker { code: i16, message: Option<String> },
    /// The answer lacks what the request asked for.
    #[error("{0}")]
    Incomplete(String),
}

impl AnswerError {
    pub fn code(error: ResponseError) -> Self {
        AnswerError::Broker { code: error.code(), message: None }
    }

    /// Whether the broker answered `error`, whatever message came with it.
    pub fn is(&self, error: ResponseError) -> bool {
        matches!(self, AnswerError::Broker { code, .. } if *code == error.code())
    }

    /// The group coordinator is starting, moving or loading: find it again and retry.
    pub fn is_coordinator_moving(&self) -> bool {
        let AnswerError::Broker { code, .. } = self else { return false };
        matches!(
            ResponseError::try_from_code(*code),
            Some(
                ResponseError::CoordinatorNotAvailable
                    | ResponseError::CoordinatorLoadInProgress
                    | ResponseError::NotCoordinator
            )
        )
    }
}

/// Kafka's name for an error code, as its tools print it: `NOT_COORDINATOR (16)`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE (0)".to_owned(),
        Some(ResponseError::Unknown(code)) => format!("unknown error code {code}"),
        Some(error) => {
            // The crate spells Kafka's names in camel case (`NotCoordinator`).
            let camel = format!("{error:?}");
            let mut name = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            format!("{name} ({code})")
        }
    }
}

pub fn check(code: i16, message: Option<&StrBytes>) -> Result<(), AnswerError> {
    match code {
        0 => Ok(()),
        // Kafka leaves some messages at their default, "", which says nothing.
        code => Err(AnswerError::Broker { code, message: message.filter(|m| !m.is_empty()).map(|m| m.to_string()) }),
    }
}

pub fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// `host:port`, with brackets around an IPv6 host.
pub fn broker_address(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Partitions grouped by topic, both in order.
pub fn by_topic<'a, V: Copy + 'a>(
    partitions: impl IntoIterator<Item = (&'a TopicPartition, V)>,
) -> BTreeMap<&'a str, Vec<(i32, V)>> {
    let mut topics: BTreeMap<&str, Vec<(i32, V)>> = BTreeMap::new();
    for (tp, value) in partitions {
        topics.entry(tp.topic.as_str()).or_default().push((tp.partition, value));
    }
    for partitions in topics.values_mut() {
        partitions.sort_by_key(|&(partition, _)| partition);
    }
    topics
}

// ---- Metadata ----

/// `topics: None` asks for every topic; `Some(&[])` for none (brokers only).
pub fn metadata_request(topics: Option<&[String]>, version: i16) -> MetadataRequest {
    let topics = match topics {
        Some([]) => Some(Vec::new()),
        // v1-3 have no allow_auto_topic_creation: naming a topic there may create it, so ask
        // for every topic instead.
        Some(names) if version >= 4 => {
            Some(names.iter().map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(s(n))))).collect())
        }
        _ => None,
    };
    // Below v4 the field does not exist and must keep its default (auto-creation allowed).
    MetadataRequest::default().with_topics(topics).with_allow_auto_topic_creation(version < 4)
}

/// Partitions by their leader's `host:port`.
pub type ByLeader = BTreeMap<String, Vec<TopicPartition>>;
/// A partition whose leader cannot be asked, and why.
pub type Leaderless = (TopicPartition, AnswerError);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// Node id to `host:port`.
    pub brokers: BTreeMap<i32, String>,
    pub topics: BTreeMap<String, Result<TopicMetadata, AnswerError>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Partition index to its leader's node id.
    pub partitions: BTreeMap<i32, Result<i32, AnswerError>>,
}

impl ClusterMetadata {
    pub fn topic(&self, topic: &str) -> Result<&TopicMetadata, AnswerError> {
        match self.topics.get(topic) {
            Some(Ok(meta)) => Ok(meta),
            Some(Err(e)) => Err(e.clone()),
            None => Err(AnswerError::code(ResponseError::UnknownTopicOrPartition)),
        }
    }

    pub fn leader(&self, tp: &TopicPartition) -> Result<i32, AnswerError> {
        match self.topic(&tp.topic)?.partitions.get(&tp.partition) {
            Some(leader) => leader.clone(),
            None => Err(AnswerError::code(ResponseError::UnknownTopicOrPartition)),
        }
    }

    /// The partitions grouped by their leader's `host:port`, and those without a reachable
    /// leader with the reason.
    pub fn by_leader<'a>(&self, partitions: impl IntoIterator<Item = &'a TopicPartition>) -> (ByLeader, Vec<Leaderless>) {
        let mut led: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
        let mut leaderless = Vec::new();
        for tp in partitions {
            let addr = self.leader(tp).and_then(|leader| {
                self.brokers
                    .get(&leader)
                    .cloned()
                    .ok_or_else(|| AnswerError::Incomplete(format!("its leader, node {leader}, is not in the metadata")))
            });
            match addr {
                Ok(addr) => led.entry(addr).or_default().push(tp.clone()),
                Err(e) => leaderless.push((tp.clone(), e)),
            }
        }
        (led, leaderless)
    }
}

pub fn cluster_metadata(response: MetadataResponse) -> ClusterMetadata {
    let brokers = response.brokers.iter().map(|b| (b.node_id.0, broker_address(&b.host, b.port))).collect();
    let topics = response
        .topics
        .into_iter()
        .filter_map(|topic| {
            let name = topic.name?.0.to_string();
            if topic.error_code != 0 {
                return Some((name, Err(AnswerError::Broker { code: topic.error_code, message: None })));
            }
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    // A partition error with a live leader (REPLICA_NOT_AVAILABLE) still leaves
                    // the leader usable; without one there is nobody to ask.
                    let leader = match (p.leader_id.0, p.error_code) {
                        (leader, _) if leader >= 0 => Ok(leader),
                        (_, 0) => Err(AnswerError::code(ResponseError::LeaderNotAvailable)),
                        (_, code) => Err(AnswerError::Broker { code, message: None }),
                    };
                    (p.partition_index, leader)
                })
                .collect();
            Some((name, Ok(TopicMetadata { partitions })))
        })
        .collect();
    ClusterMetadata { brokers, topics }
}

// ---- FindCoordinator ----

pub fn find_coordinator_request(group: &str, version: i16) -> FindCoordinatorRequest {
    let request = FindCoordinatorRequest::default();
    match version {
        0 => request.with_key(s(group)),
        1..=3 => request.with_key(s(group)).with_key_type(GROUP_KEY_TYPE),
        // v4 batches keys (KIP-699).
        _ => request.with_key_type(GROUP_KEY_TYPE).with_coordinator_keys(vec![s(group)]),
    }
}

/// The coordinator's `host:port`.
pub fn coordinator_address(
    response: FindCoordinatorResponse,
    group: &str,
    version: i16,
) -> Result<String, AnswerError> {
    if version < 4 {
        check(response.error_code, response.error_message.as_ref())?;
        return Ok(broker_address(&response.host, response.port));
    }
    let Some(coordinator) = response.coordinators.iter().find(|c| c.key.as_str() == group) else {
        return Err(AnswerError::Incomplete("the answer names no coordinator for the group".into()));
    };
    check(coordinator.error_code, coordinator.error_message.as_ref())?;
    Ok(broker_address(&coordinator.host, coordinator.port))
}

// ---- ListGroups ----

pub fn list_groups_request(_version: i16) -> ListGroupsRequest {
    // No state or type filter: every group, as kafka-consumer-groups.sh --list shows.
    ListGroupsRequest::default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    /// Only v4+ answers carry it.
    pub state: Option<String>,
}

pub fn listed_groups(response: ListGroupsResponse, version: i16) -> Result<Vec<ListedGroup>, AnswerError> {
    check(response.error_code, None)?;
    Ok(response
        .groups
        .iter()
        .map(|g| ListedGroup {
            group_id: g.group_id.to_string(),
            state: (version >= 4).then(|| g.group_state.to_string()),
        })
        .collect())
}

// ---- DescribeGroups ----

pub fn describe_groups_request(group: &str, _version: i16) -> DescribeGroupsRequest {
    DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))])
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`.
    pub state: String,
    pub protocol_type: String,
    /// The chosen assignor (`range`, `roundrobin`, ...) when the protocol type is `consumer`.
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The partitions the member owns (empty while a rebalance has not assigned it any, or when
    /// the group is not a consumer group); an error when the assignment bytes do not decode.
    pub assignment: Result<Vec<TopicPartition>, String>,
}

impl GroupDescription {
    /// What the coordinator answers for a group it does not know.
    fn dead() -> Self {
        GroupDescription {
            state: "Dead".into(),
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        }
    }

    /// Whether offsets may be reset: nobody consumes (Kafka's ResetOffsets check).
    pub fn is_inactive(&self) -> bool {
        matches!(self.state.as_str(), "Empty" | "Dead")
    }
}

pub fn group_description(response: DescribeGroupsResponse, group: &str) -> Result<GroupDescription, AnswerError> {
    let Some(described) = response.groups.into_iter().find(|g| g.group_id.as_str() == group) else {
        return Err(AnswerError::Incomplete("the answer does not describe the group".into()));
    };
    // v6 answers an unknown group with GROUP_ID_NOT_FOUND where older versions say Dead.
    if described.error_code == ResponseError::GroupIdNotFound.code() {
        return Ok(GroupDescription::dead());
    }
    check(described.error_code, described.error_message.as_ref())?;
    let consumer = described.protocol_type.as_str() == "consumer";
    let members = described
        .members
        .iter()
        .map(|m| GroupMember {
            member_id: m.member_id.to_string(),
            group_instance_id: m.group_instance_id.as_ref().map(|id| id.to_string()),
            client_id: m.client_id.to_string(),
            client_host: m.client_host.to_string(),
            assignment: if consumer { decode_assignment(&m.member_assignment) } else { Ok(Vec::new()) },
        })
        .collect();
    Ok(GroupDescription {
        state: described.group_state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        protocol: described.protocol_data.to_string(),
        members,
    })
}

/// Decodes a consumer-protocol assignment: a 2-byte version, then the versioned body.
pub fn decode_assignment(bytes: &Bytes) -> Result<Vec<TopicPartition>, String> {
    // Empty until the member's first SyncGroup completes.
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = bytes.clone();
    if buf.len() < 2 {
        return Err(format!("an assignment of {} byte", buf.len()));
    }
    let version = buf.get_i16();
    if version < 0 {
        return Err(format!("assignment version {version}"));
    }
    // Like Kafka's ConsumerProtocol, read a newer version with the newest layout known: later
    // versions only append fields.
    let version = version.min(ConsumerProtocolAssignment::VERSIONS.max);
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version).map_err(|e| e.to_string())?;
    let mut partitions: Vec<TopicPartition> = assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| TopicPartition::new(t.topic.as_str(), p)))
        .collect();
    partitions.sort();
    partitions.dedup();
    Ok(partitions)
}

// ---- OffsetFetch ----

/// Asks for every partition the group has committed: a null topic list (v2+).
pub fn offset_fetch_request(group: &str, version: i16) -> OffsetFetchRequest {
    if version >= 8 {
        // v8 batches groups (KIP-709); the top-level fields must stay at their defaults.
        OffsetFetchRequest::default()
            .with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(GroupId(s(group))).with_topics(None)])
    } else {
        OffsetFetchRequest::default().with_group_id(GroupId(s(group))).with_topics(None)
    }
}

/// Committed offsets by partition. Partitions without a committed offset (-1) are left out.
pub fn committed_offsets(
    response: OffsetFetchResponse,
    group: &str,
    version: i16,
) -> Result<BTreeMap<TopicPartition, i64>, AnswerError> {
    let mut entries: Vec<(TopicPartition, i64, i16)> = Vec::new();
    if version >= 8 {
        let Some(answer) = response.groups.iter().find(|g| g.group_id.as_str() == group) else {
            return Err(AnswerError::Incomplete("the answer has no entry for the group".into()));
        };
        check(answer.error_code, None)?;
        for topic in &answer.topics {
            for p in &topic.partitions {
                entries.push((
                    TopicPartition::new(topic.name.as_str(), p.partition_index),
                    p.committed_offset,
                    p.error_code,
                ));
            }
        }
    } else {
        check(response.error_code, None)?;
        for topic in &response.topics {
            for p in &topic.partitions {
                entries.push((
                    TopicPartition::new(topic.name.as_str(), p.partition_index),
                    p.committed_offset,
                    p.error_code,
                ));
            }
        }
    }
    let mut offsets = BTreeMap::new();
    for (tp, offset, code) in entries {
        if code != 0 {
            return Err(AnswerError::Broker { code, message: Some(format!("partition {tp}")) });
        }
        if offset >= 0 {
            offsets.insert(tp, offset);
        }
    }
    Ok(offsets)
}

// ---- OffsetCommit ----

/// A standalone commit (generation -1, no member id), as kafka-consumer-groups.sh and the
/// Java AdminClient send it; the coordinator accepts it only while the group is empty.
pub fn offset_commit_request(
    group: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
    _version: i16,
) -> OffsetCommitRequest {
    let topics = by_topic(offsets.iter().map(|(tp, &offset)| (tp, offset)))
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetCommitRequestTopic::default().with_name(TopicName(s(topic))).with_partitions(
                partitions
                    .into_iter()
                    .map(|(partition, offset)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset)
                            .with_committed_metadata(Some(StrBytes::default()))
                    })
                    .collect(),
            )
        })
        .collect();
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::default())
        .with_topics(topics)
}

/// Every requested partition the commit failed for, in order.
pub fn commit_errors(
    response: &OffsetCommitResponse,
    requested: &BTreeMap<TopicPartition, i64>,
) -> Vec<(TopicPartition, AnswerError)> {
    let mut answered: BTreeMap<TopicPartition, i16> = BTreeMap::new();
    for topic in &response.topics {
        for p in &topic.partitions {
            answered.insert(TopicPartition::new(topic.name.as_str(), p.partition_index), p.error_code);
        }
    }
    requested
        .keys()
        .filter_map(|tp| match answered.get(tp) {
            Some(0) => None,
            Some(&code) => Some((tp.clone(), AnswerError::Broker { code, message: None })),
            None => Some((tp.clone(), AnswerError::Incomplete("missing from the answer".into()))),
        })
        .collect()
}

// ---- ListOffsets ----

/// `timestamp` is a time in ms since the epoch, or [`LATEST_TIMESTAMP`] / [`EARLIEST_TIMESTAMP`].
pub fn list_offsets_request(partitions: &[TopicPartition], timestamp: i64, _version: i16) -> ListOffsetsRequest {
    let topics = by_topic(partitions.iter().map(|tp| (tp, ())))
        .into_iter()
        .map(|(topic, partitions)| {
            ListOffsetsTopic::default().with_name(TopicName(s(topic))).with_partitions(
                partitions
                    .into_iter()
                    .map(|(partition, ())| {
                        ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(timestamp)
                    })
                    .collect(),
            )
        })
        .collect();
    // Replica id -1: a client, not a follower. Isolation level 0 (read_uncommitted), as
    // kafka-consumer-groups.sh asks for the log end.
    ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(topics)
}

/// The offset per answered partition: -1 for a timestamp no record reaches.
pub fn listed_offsets(response: ListOffsetsResponse) -> BTreeMap<TopicPartition, Result<i64, AnswerError>> {
    let mut offsets = BTreeMap::new();
    for topic in &response.topics {
        for p in &topic.partitions {
            let offset = check(p.error_code, None).map(|()| p.offset);
            offsets.insert(TopicPartition::new(topic.name.as_str(), p.partition_index), offset);
        }
    }
    offsets
}

// ---- DescribeUserScramCredentials, AlterUserScramCredentials ----

/// `users: None` describes every user with a SCRAM credential.
pub fn describe_user_scram_credentials_request(users: Option<&[String]>, _version: i16) -> DescribeUserScramCredentialsRequest {
    let users = users.map(|users| users.iter().map(|u| UserName::default().with_name(s(u))).collect());
    DescribeUserScramCredentialsRequest::default().with_users(users)
}

/// One SCRAM credential as the broker describes it: the mechanism's Kafka byte (1 = SHA-256,
/// 2 = SHA-512) and the iterations; the salt and keys never leave the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialInfo {
    pub mechanism: i8,
    pub iterations: i32,
}

/// A user of a DescribeUserScramCredentials answer with its credentials, or its error.
pub type DescribedUser = (String, Result<Vec<CredentialInfo>, AnswerError>);

pub fn described_scram_credentials(response: DescribeUserScramCredentialsResponse) -> Result<Vec<DescribedUser>, AnswerError> {
    check(response.error_code, response.error_message.as_ref())?;
    Ok(response
        .results
        .into_iter()
        .map(|r| {
            let described = check(r.error_code, r.error_message.as_ref()).map(|()| {
                r.credential_infos.iter().map(|i| CredentialInfo { mechanism: i.mechanism, iterations: i.iterations }).collect()
            });
            (r.user.to_string(), described)
        })
        .collect())
}

/// A credential to set: the password already salted (`Hi(password, salt, iterations)` of
/// RFC 5802), which is what KIP-554 has the client send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upsertion {
    pub user: String,
    pub mechanism: i8,
    pub iterations: i32,
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
}

pub fn alter_user_scram_credentials_request(
    deletions: &[(String, i8)],
    upsertions: &[Upsertion],
    _version: i16,
) -> AlterUserScramCredentialsRequest {
    AlterUserScramCredentialsRequest::default()
        .with_deletions(
            deletions.iter().map(|(user, m)| ScramCredentialDeletion::default().with_name(s(user)).with_mechanism(*m)).collect(),
        )
        .with_upsertions(
            upsertions
                .iter()
                .map(|u| {
                    ScramCredentialUpsertion::default()
                        .with_name(s(&u.user))
                        .with_mechanism(u.mechanism)
                        .with_iterations(u.iterations)
                        .with_salt(Bytes::copy_from_slice(&u.salt))
                        .with_salted_password(Bytes::copy_from_slice(&u.salted_password))
                })
                .collect(),
        )
}

/// `user`'s result in an AlterUserScramCredentials answer.
pub fn altered_user(response: &AlterUserScramCredentialsResponse, user: &str) -> Result<(), AnswerError> {
    match response.results.iter().find(|r| r.user.as_str() == user) {
        Some(r) => check(r.error_code, r.error_message.as_ref()),
        None => Err(AnswerError::Incomplete(format!("user '{user}' is missing from the answer"))),
    }
}

// ---- CreateAcls, DescribeAcls, DeleteAcls (KIP-140) ----

pub fn create_acls_request(acls: &[AclBinding], _version: i16) -> CreateAclsRequest {
    let creations = acls
        .iter()
        .map(|b| {
            AclCreation::default()
                .with_resource_type(b.resource_type.code())
                .with_resource_name(s(&b.resource_name))
                .with_resource_pattern_type(b.pattern_type.code())
                .with_principal(s(&b.principal))
                .with_host(s(&b.host))
                .with_operation(b.operation.code())
                .with_permission_type(b.permission.code())
        })
        .collect();
    CreateAclsRequest::default().with_creations(creations)
}

/// Each creation's outcome, in request order; an answer with another count is incomplete.
pub fn created_acls(response: &CreateAclsResponse, asked: usize) -> Result<Vec<Result<(), AnswerError>>, AnswerError> {
    if response.results.len() != asked {
        return Err(AnswerError::Incomplete(format!("{} results for {asked} ACLs", response.results.len())));
    }
    Ok(response.results.iter().map(|r| check(r.error_code, r.error_message.as_ref())).collect())
}

/// ANY (1) stands for an absent enum, as on the wire.
pub fn describe_acls_request(filter: &AclBindingFilter, _version: i16) -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_type_filter(filter.resource_type.map_or(1, ResourceType::code))
        .with_resource_name_filter(filter.resource_name.as_deref().map(s))
        .with_pattern_type_filter(filter.pattern.code())
        .with_principal_filter(filter.principal.as_deref().map(s))
        .with_host_filter(filter.host.as_deref().map(s))
        .with_operation(filter.operation.map_or(1, Operation::code))
        .with_permission_type(filter.permission.map_or(1, Permission::code))
}

/// A binding as a broker described it; codes this tool does not know are an error, not a guess.
fn answered_binding(
    resource_type: i8,
    resource_name: &str,
    pattern_type: i8,
    principal: &str,
    host: &str,
    operation: i8,
    permission: i8,
) -> Result<AclBinding, AnswerError> {
    let unknown = |what: &str, code: i8| AnswerError::Incomplete(format!("the answer holds an ACL with unknown {what} {code}"));
    Ok(AclBinding {
        resource_type: ResourceType::from_code(resource_type).ok_or_else(|| unknown("resource type", resource_type))?,
        resource_name: resource_name.to_owned(),
        pattern_type: PatternType::from_code(pattern_type).ok_or_else(|| unknown("pattern type", pattern_type))?,
        principal: principal.to_owned(),
        host: host.to_owned(),
        operation: Operation::from_code(operation).ok_or_else(|| unknown("operation", operation))?,
        permission: Permission::from_code(permission).ok_or_else(|| unknown("permission", permission))?,
    })
}

/// The described bindings, in the answer's order.
pub fn described_acls(response: &DescribeAclsResponse) -> Result<Vec<AclBinding>, AnswerError> {
    check(response.error_code, response.error_message.as_ref())?;
    let mut bindings = Vec::new();
    for r in &response.resources {
        for a in &r.acls {
            bindings.push(answered_binding(
                r.resource_type,
                &r.resource_name,
                r.pattern_type,
                &a.principal,
                &a.host,
                a.operation,
                a.permission_type,
            )?);
        }
    }
    Ok(bindings)
}

pub fn delete_acls_request(filters: &[AclBindingFilter], _version: i16) -> DeleteAclsRequest {
    let filters = filters
        .iter()
        .map(|f| {
            DeleteAclsFilter::default()
                .with_resource_type_filter(f.resource_type.map_or(1, ResourceType::code))
                .with_resource_name_filter(f.resource_name.as_deref().map(s))
                .with_pattern_type_filter(f.pattern.code())
                .with_principal_filter(f.principal.as_deref().map(s))
                .with_host_filter(f.host.as_deref().map(s))
                .with_operation(f.operation.map_or(1, Operation::code))
                .with_permission_type(f.permission.map_or(1, Permission::code))
        })
        .collect();
    DeleteAclsRequest::default().with_filters(filters)
}

/// Per filter, in request order, the bindings it deleted or its error.
pub fn deleted_acls(response: &DeleteAclsResponse, asked: usize) -> Result<Vec<Result<Vec<AclBinding>, AnswerError>>, AnswerError> {
    if response.filter_results.len() != asked {
        return Err(AnswerError::Incomplete(format!("{} results for {asked} filters", response.filter_results.len())));
    }
    let mut results = Vec::with_capacity(asked);
    for r in &response.filter_results {
        results.push(match check(r.error_code, r.error_message.as_ref()) {
            Err(error) => Err(error),
            Ok(()) => {
                let mut deleted = Vec::with_capacity(r.matching_acls.len());
                for m in &r.matching_acls {
                    check(m.error_code, m.error_message.as_ref())?;
                    deleted.push(answered_binding(
                        m.resource_type,
                        &m.resource_name,
                        m.pattern_type,
                        &m.principal,
                        &m.host,
                        m.operation,
                        m.permission_type,
                    )?);
                }
                Ok(deleted)
            }
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
    use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::list_groups_response::ListedGroup as WireListedGroup;
    use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
        OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    };
    use kafka_protocol::protocol::Encodable;

    fn versions(api_key: ApiKey) -> std::ops::RangeInclusive<i16> {
        let (min, max) = client_versions(api_key).unwrap();
        min..=max
    }

    /// Encodes at `version` and decodes back with kafka-protocol's decoder.
    fn round_trip<M: Encodable + Decodable>(message: &M, version: i16) -> M {
        let mut buf = BytesMut::new();
        message.encode(&mut buf, version).unwrap_or_else(|e| panic!("v{version}: {e}"));
        let mut bytes = buf.freeze();
        let decoded = M::decode(&mut bytes, version).unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert!(bytes.is_empty(), "v{version}: {} bytes left over", bytes.len());
        decoded
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    #[test]
    fn client_ranges_are_within_what_the_codec_encodes() {
        for (key, min, max) in CLIENT_VERSIONS {
            let codec = key.valid_versions();
            assert!(min <= max && codec.min <= min && max <= codec.max, "{key:?}");
        }
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate((0, 5), (0, 3)), Some(3));
        assert_eq!(negotiate((2, 9), (0, 12)), Some(9));
        assert_eq!(negotiate((2, 9), (9, 9)), Some(9));
        assert_eq!(negotiate((2, 9), (0, 1)), None);
        assert_eq!(negotiate((2, 9), (10, 12)), None);
    }

    #[test]
    fn error_names_match_kafka_spelling() {
        assert_eq!(error_name(16), "NOT_COORDINATOR (16)");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION (3)");
        assert_eq!(error_name(68), "NON_EMPTY_GROUP (68)");
        assert_eq!(error_name(25), "UNKNOWN_MEMBER_ID (25)");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR (-1)");
        assert_eq!(error_name(30000), "unknown error code 30000");
        let error = AnswerError::Broker { code: 15, message: Some("loading".into()) };
        assert_eq!(error.to_string(), "COORDINATOR_NOT_AVAILABLE (15) (loading)");
        assert!(error.is_coordinator_moving());
        assert!(!AnswerError::code(ResponseError::NonEmptyGroup).is_coordinator_moving());
    }

    #[test]
    fn find_coordinator_requests_name_the_group_in_every_version() {
        for version in versions(ApiKey::FindCoordinator) {
            let decoded = round_trip(&find_coordinator_request("g1", version), version);
            let keys: Vec<&str> = if version >= 4 {
                decoded.coordinator_keys.iter().map(|k| k.as_str()).collect()
            } else {
                vec![decoded.key.as_str()]
            };
            assert_eq!(keys, ["g1"], "v{version}");
            assert_eq!(decoded.key_type, GROUP_KEY_TYPE);
        }
    }

    #[test]
    fn coordinator_answers_read_in_every_version() {
        for version in versions(ApiKey::FindCoordinator) {
            let response = if version >= 4 {
                FindCoordinatorResponse::default().with_coordinators(vec![
                    Coordinator::default().with_key(s("other")).with_host(s("elsewhere")).with_port(1),
                    Coordinator::default().with_key(s("g1")).with_host(s("10.0.0.1")).with_port(9093),
                ])
            } else {
                FindCoordinatorResponse::default().with_host(s("10.0.0.1")).with_port(9093)
            };
            let response = round_trip(&response, version);
            assert_eq!(coordinator_address(response, "g1", version).unwrap(), "10.0.0.1:9093");

            let failed = if version >= 4 {
                FindCoordinatorResponse::default()
                    .with_coordinators(vec![Coordinator::default().with_key(s("g1")).with_error_code(15)])
            } else {
                FindCoordinatorResponse::default().with_error_code(15)
            };
            let error = coordinator_address(round_trip(&failed, version), "g1", version).unwrap_err();
            assert!(error.is_coordinator_moving(), "v{version}: {error}");
        }
        let none = FindCoordinatorResponse::default();
        assert!(matches!(coordinator_address(none, "g1", 4), Err(AnswerError::Incomplete(_))));
    }

    #[test]
    fn metadata_requests_never_create_topics() {
        let names = ["t1".to_owned(), "t2".to_owned()];
        for version in versions(ApiKey::Metadata) {
            let named = round_trip(&metadata_request(Some(&names), version), version);
            if version >= 4 {
                let asked: Vec<&str> =
                    named.topics.as_ref().unwrap().iter().map(|t| t.name.as_ref().unwrap().as_str()).collect();
                assert_eq!(asked, ["t1", "t2"]);
                assert!(!named.allow_auto_topic_creation);
            } else {
                // Naming topics could create them: every topic is asked for instead.
                assert_eq!(named.topics, None, "v{version}");
            }
            let none = round_trip(&metadata_request(Some(&[]), version), version);
            assert_eq!(none.topics, Some(Vec::new()));
            assert_eq!(round_trip(&metadata_request(None, version), version).topics, None);
        }
    }

    #[test]
    fn metadata_answers_give_leaders_and_errors() {
        let response = MetadataResponse::default()
            .with_brokers(vec![
                MetadataResponseBroker::default().with_node_id(BrokerId(1)).with_host(s("h1")).with_port(9092),
                MetadataResponseBroker::default().with_node_id(BrokerId(2)).with_host(s("::1")).with_port(9093),
            ])
            .with_topics(vec![
                MetadataResponseTopic::default().with_name(Some(TopicName(s("t")))).with_partitions(vec![
                    MetadataResponsePartition::default().with_partition_index(0).with_leader_id(BrokerId(2)),
                    MetadataResponsePartition::default()
                        .with_partition_index(1)
                        .with_leader_id(BrokerId(-1))
                        .with_error_code(5),
                    MetadataResponsePartition::default()
                        .with_partition_index(2)
                        .with_leader_id(BrokerId(1))
                        .with_error_code(9),
                ]),
                MetadataResponseTopic::default().with_name(Some(TopicName(s("gone")))).with_error_code(3),
            ]);
        for version in versions(ApiKey::Metadata) {
            let meta = cluster_metadata(round_trip(&response, version));
            assert_eq!(meta.brokers.get(&1).unwrap(), "h1:9092");
            assert_eq!(meta.brokers.get(&2).unwrap(), "[::1]:9093");
            assert_eq!(meta.leader(&tp("t", 0)), Ok(2));
            assert_eq!(meta.leader(&tp("t", 1)), Err(AnswerError::code(ResponseError::LeaderNotAvailable)));
            assert_eq!(meta.leader(&tp("t", 2)), Ok(1));
            assert_eq!(meta.leader(&tp("t", 3)), Err(AnswerError::code(ResponseError::UnknownTopicOrPartition)));
            assert_eq!(meta.leader(&tp("gone", 0)), Err(AnswerError::code(ResponseError::UnknownTopicOrPartition)));
            assert_eq!(meta.leader(&tp("never", 0)), Err(AnswerError::code(ResponseError::UnknownTopicOrPartition)));
        }
    }

    #[test]
    fn list_groups_reads_state_only_where_the_version_has_it() {
        let response = ListGroupsResponse::default().with_groups(vec![WireListedGroup::default()
            .with_group_id(GroupId(s("g1")))
            .with_protocol_type(s("consumer"))
            .with_group_state(s("Stable"))]);
        for version in versions(ApiKey::ListGroups) {
            round_trip(&list_groups_request(version), version);
            // The state field exists from v4 on; below it the encoder refuses to send it.
            let response = if version >= 4 {
                response.clone()
            } else {
                response.clone().with_groups(vec![WireListedGroup::default()
                    .with_group_id(GroupId(s("g1")))
                    .with_protocol_type(s("consumer"))])
            };
            let groups = listed_groups(round_trip(&response, version), version).unwrap();
            let state = (version >= 4).then(|| "Stable".to_owned());
            assert_eq!(groups, [ListedGroup { group_id: "g1".into(), state }], "v{version}");
        }
        let failed = ListGroupsResponse::default().with_error_code(14);
        assert!(listed_groups(failed, 4).unwrap_err().is_coordinator_moving());
    }

    fn assignment_bytes(version: i16, topics: &[(&str, &[i32])]) -> Bytes {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
            topics
                .iter()
                .map(|(t, ps)| AssignedTopic::default().with_topic(TopicName(s(t))).with_partitions(ps.to_vec()))
                .collect(),
        );
        let mut buf = BytesMut::new();
        bytes::BufMut::put_i16(&mut buf, version);
        assignment.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn consumer_assignments_decode_in_every_version() {
        for version in 0..=3 {
            let bytes = assignment_bytes(version, &[("b", &[1, 0]), ("a", &[2])]);
            assert_eq!(decode_assignment(&bytes).unwrap(), [tp("a", 2), tp("b", 0), tp("b", 1)]);
        }
        // A newer version than the codec knows is read with the newest layout (KIP-429 style
        // forward compatibility), as Kafka's ConsumerProtocol does.
        let mut newer = assignment_bytes(3, &[("a", &[0])]).to_vec();
        newer[0..2].copy_from_slice(&7i16.to_be_bytes());
        assert_eq!(decode_assignment(&Bytes::from(newer)).unwrap(), [tp("a", 0)]);
        assert_eq!(decode_assignment(&Bytes::new()).unwrap(), []);
        assert!(decode_assignment(&Bytes::from_static(&[0])).is_err());
        assert!(decode_assignment(&Bytes::from_static(&[0xff, 0xff, 0, 0, 0, 0])).is_err());
        // An array count far beyond the bytes: an error, not an allocation or a panic.
        assert!(decode_assignment(&Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff])).is_err());
    }

    #[test]
    fn describe_groups_reads_members_and_assignments() {
        let member = DescribedGroupMember::default()
            .with_member_id(s("m-1"))
            .with_client_id(s("c-1"))
            .with_client_host(s("/127.0.0.1"))
            .with_member_assignment(assignment_bytes(0, &[("t", &[0, 1])]));
        let described = DescribedGroup::default()
            .with_group_id(GroupId(s("g1")))
            .with_group_state(s("Stable"))
            .with_protocol_type(s("consumer"))
            .with_protocol_data(s("range"))
            .with_members(vec![member.clone()]);
        for version in versions(ApiKey::DescribeGroups) {
            let request = round_trip(&describe_groups_request("g1", version), version);
            assert_eq!(request.groups, [GroupId(s("g1"))]);

            let member =
                if version >= 4 { member.clone().with_group_instance_id(Some(s("static-1"))) } else { member.clone() };
            let response =
                DescribeGroupsResponse::default().with_groups(vec![described.clone().with_members(vec![member])]);
            let description = group_description(round_trip(&response, version), "g1").unwrap();
            assert_eq!((description.state.as_str(), description.protocol.as_str()), ("Stable", "range"));
            assert!(!description.is_inactive());
            let member = &description.members[0];
            assert_eq!(member.assignment, Ok(vec![tp("t", 0), tp("t", 1)]));
            assert_eq!(member.group_instance_id.as_deref(), (version >= 4).then_some("static-1"));
            assert_eq!((member.client_id.as_str(), member.client_host.as_str()), ("c-1", "/127.0.0.1"));
        }

        // Other protocol types carry assignments this tool cannot read.
        let connect =
            DescribeGroupsResponse::default().with_groups(vec![described.clone().with_protocol_type(s("connect"))]);
        assert_eq!(group_description(connect, "g1").unwrap().members[0].assignment, Ok(vec![]));

        let not_found = DescribeGroupsResponse::default()
            .with_groups(vec![DescribedGroup::default().with_group_id(GroupId(s("g1"))).with_error_code(69)]);
        assert!(group_description(not_found, "g1").unwrap().is_inactive());

        let loading = DescribeGroupsResponse::default()
            .with_groups(vec![DescribedGroup::default().with_group_id(GroupId(s("g1"))).with_error_code(14)]);
        assert!(group_description(loading, "g1").unwrap_err().is_coordinator_moving());
        assert!(matches!(group_description(DescribeGroupsResponse::default(), "g1"), Err(AnswerError::Incomplete(_))));
    }

    #[test]
    fn offset_fetch_asks_for_every_committed_partition() {
        for version in versions(ApiKey::OffsetFetch) {
            let request = round_trip(&offset_fetch_request("g1", version), version);
            if version >= 8 {
                assert_eq!(request.groups.len(), 1);
                assert_eq!(request.groups[0].group_id.as_str(), "g1");
                assert_eq!(request.groups[0].topics, None, "v{version}");
            } else {
                assert_eq!(request.group_id.as_str(), "g1");
                assert_eq!(request.topics, None, "v{version}");
            }
        }
    }

    #[test]
    fn offset_fetch_answers_read_in_every_version() {
        for version in versions(ApiKey::OffsetFetch) {
            let response = if version >= 8 {
                let partition = |index, offset| {
                    OffsetFetchResponsePartitions::default().with_partition_index(index).with_committed_offset(offset)
                };
                OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(s("g1")))
                    .with_topics(vec![OffsetFetchResponseTopics::default()
                        .with_name(TopicName(s("t")))
                        .with_partitions(vec![partition(0, 5), partition(1, -1)])])])
            } else {
                let partition = |index, offset| {
                    OffsetFetchResponsePartition::default().with_partition_index(index).with_committed_offset(offset)
                };
                OffsetFetchResponse::default().with_topics(vec![OffsetFetchResponseTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![partition(0, 5), partition(1, -1)])])
            };
            let offsets = committed_offsets(round_trip(&response, version), "g1", version).unwrap();
            assert_eq!(offsets, BTreeMap::from([(tp("t", 0), 5)]), "v{version}");
        }
        let failed = OffsetFetchResponse::default().with_error_code(16);
        assert!(committed_offsets(failed, "g1", 7).unwrap_err().is_coordinator_moving());
        let failed = OffsetFetchResponse::default()
            .with_groups(vec![OffsetFetchResponseGroup::default().with_group_id(GroupId(s("g1"))).with_error_code(14)]);
        assert!(committed_offsets(failed, "g1", 8).unwrap_err().is_coordinator_moving());
        assert!(matches!(committed_offsets(OffsetFetchResponse::default(), "g1", 8), Err(AnswerError::Incomplete(_))));
    }

    #[test]
    fn offset_commit_is_standalone_in_every_version() {
        let offsets = BTreeMap::from([(tp("b", 0), 7), (tp("a", 1), 3), (tp("a", 0), 2)]);
        for version in versions(ApiKey::OffsetCommit) {
            let request = round_trip(&offset_commit_request("g1", &offsets, version), version);
            assert_eq!(request.group_id.as_str(), "g1");
            assert_eq!(request.generation_id_or_member_epoch, -1);
            assert_eq!(request.member_id.as_str(), "");
            assert_eq!(request.group_instance_id, None);
            let sent: Vec<(String, i32, i64)> = request
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index, p.committed_offset))
                })
                .collect();
            assert_eq!(sent, [("a".into(), 0, 2), ("a".into(), 1, 3), ("b".into(), 0, 7)], "v{version}");
        }
    }

    #[test]
    fn offset_commit_errors_cover_every_requested_partition() {
        let offsets = BTreeMap::from([(tp("a", 0), 2), (tp("a", 1), 3), (tp("b", 0), 7)]);
        let response = OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
            .with_name(TopicName(s("a")))
            .with_partitions(vec![
                OffsetCommitResponsePartition::default().with_partition_index(0),
                OffsetCommitResponsePartition::default().with_partition_index(1).with_error_code(25),
            ])]);
        for version in versions(ApiKey::OffsetCommit) {
            let errors = commit_errors(&round_trip(&response, version), &offsets);
            assert_eq!(errors.len(), 2);
            assert_eq!(errors[0], (tp("a", 1), AnswerError::code(ResponseError::UnknownMemberId)));
            assert!(matches!(&errors[1], (p, AnswerError::Incomplete(_)) if *p == tp("b", 0)));
        }
    }

    #[test]
    fn list_offsets_asks_as_a_consumer_in_every_version() {
        let partitions = [tp("b", 0), tp("a", 1), tp("a", 0)];
        for version in versions(ApiKey::ListOffsets) {
            let request = round_trip(&list_offsets_request(&partitions, EARLIEST_TIMESTAMP, version), version);
            assert_eq!(request.replica_id, BrokerId(-1));
            assert_eq!(request.isolation_level, 0);
            let asked: Vec<(String, i32, i64)> = request
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index, p.timestamp)))
                .collect();
            assert_eq!(asked, [("a".into(), 0, -2), ("a".into(), 1, -2), ("b".into(), 0, -2)], "v{version}");

            let response = ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
                .with_name(TopicName(s("a")))
                .with_partitions(vec![
                    ListOffsetsPartitionResponse::default().with_partition_index(0).with_offset(42),
                    ListOffsetsPartitionResponse::default().with_partition_index(1).with_error_code(6).with_offset(-1),
                ])]);
            let offsets = listed_offsets(round_trip(&response, version));
            assert_eq!(offsets[&tp("a", 0)], Ok(42));
            assert_eq!(offsets[&tp("a", 1)], Err(AnswerError::code(ResponseError::NotLeaderOrFollower)));
        }
    }

    #[test]
    fn scram_requests_and_answers_read_back() {
        for version in versions(ApiKey::DescribeUserScramCredentials) {
            let all = round_trip(&describe_user_scram_credentials_request(None, version), version);
            assert_eq!(all.users, None);
            let named = round_trip(&describe_user_scram_credentials_request(Some(&["alice".into()]), version), version);
            assert_eq!(named.users.unwrap()[0].name.as_str(), "alice");
        }
        let upsertion = Upsertion { user: "alice".into(), mechanism: 2, iterations: 8192, salt: vec![1; 32], salted_password: vec![2; 64] };
        for version in versions(ApiKey::AlterUserScramCredentials) {
            let request = alter_user_scram_credentials_request(&[("bob".into(), 1)], std::slice::from_ref(&upsertion), version);
            let request = round_trip(&request, version);
            assert_eq!((request.deletions[0].name.as_str(), request.deletions[0].mechanism), ("bob", 1));
            let u = &request.upsertions[0];
            assert_eq!((u.name.as_str(), u.mechanism, u.iterations, &u.salt[..], &u.salted_password[..]), ("alice", 2, 8192, &[1; 32][..], &[2; 64][..]));
        }
        use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
        use kafka_protocol::messages::describe_user_scram_credentials_response::{
            CredentialInfo as WireInfo, DescribeUserScramCredentialsResult,
        };
        let altered = AlterUserScramCredentialsResponse::default().with_results(vec![
            AlterUserScramCredentialsResult::default().with_user(s("alice")),
            AlterUserScramCredentialsResult::default()
                .with_user(s("bob"))
                .with_error_code(ResponseError::ResourceNotFound.code())
                .with_error_message(Some(s("Attempt to delete a user credential that does not exist"))),
        ]);
        assert_eq!(altered_user(&altered, "alice"), Ok(()));
        assert_eq!(
            altered_user(&altered, "bob").unwrap_err().to_string(),
            "RESOURCE_NOT_FOUND (91) (Attempt to delete a user credential that does not exist)"
        );
        assert!(matches!(altered_user(&altered, "carol"), Err(AnswerError::Incomplete(_))));
        let described = DescribeUserScramCredentialsResponse::default().with_results(vec![
            DescribeUserScramCredentialsResult::default()
                .with_user(s("alice"))
                .with_credential_infos(vec![WireInfo::default().with_mechanism(1).with_iterations(4096)]),
            DescribeUserScramCredentialsResult::default().with_user(s("x")).with_error_code(ResponseError::ResourceNotFound.code()),
        ]);
        let read = described_scram_credentials(described).unwrap();
        assert_eq!(read[0], ("alice".to_owned(), Ok(vec![CredentialInfo { mechanism: 1, iterations: 4096 }])));
        assert_eq!(read[1].1, Err(AnswerError::code(ResponseError::ResourceNotFound)));
        let refused = DescribeUserScramCredentialsResponse::default().with_error_code(ResponseError::ClusterAuthorizationFailed.code());
        assert!(described_scram_credentials(refused).is_err());
    }

    #[test]
    fn acl_requests_and_answers_read_back() {
        use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
        use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
        use odradek_core::acl::PatternFilter;
        let binding = AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "pay".into(),
            pattern_type: PatternType::Prefixed,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Deny,
        };
        let filter = AclBindingFilter { resource_name: Some("pay".into()), pattern: PatternFilter::Match, ..AclBindingFilter::any() };
        for version in versions(ApiKey::CreateAcls) {
            let c = round_trip(&create_acls_request(std::slice::from_ref(&binding), version), version).creations.remove(0);
            let read = (c.resource_type, c.resource_name.as_str(), c.resource_pattern_type, c.principal.as_str(), c.host.as_str(), c.operation, c.permission_type);
            assert_eq!(read, (2, "pay", 4, "User:alice", "*", 4, 2), "v{version}");
        }
        for version in versions(ApiKey::DescribeAcls) {
            let d = round_trip(&describe_acls_request(&filter, version), version);
            assert_eq!((d.resource_type_filter, d.pattern_type_filter, d.operation, d.permission_type), (1, 2, 1, 1));
            assert_eq!((d.resource_name_filter.as_deref(), d.principal_filter, d.host_filter), (Some("pay"), None, None));
        }
        for version in versions(ApiKey::DeleteAcls) {
            let d = round_trip(&delete_acls_request(&[filter.clone(), AclBindingFilter::exact(&binding)], version), version);
            assert_eq!(d.filters.len(), 2);
            assert_eq!((d.filters[1].resource_type_filter, d.filters[1].pattern_type_filter, d.filters[1].permission_type), (2, 4, 2));
        }
        let described = DescribeAclsResponse::default().with_resources(vec![DescribeAclsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("pay"))
            .with_pattern_type(4)
            .with_acls(vec![AclDescription::default().with_principal(s("User:alice")).with_host(s("*")).with_operation(4).with_permission_type(2)])]);
        assert_eq!(described_acls(&described), Ok(vec![binding.clone()]));
        let odd = DescribeAclsResponse::default().with_resources(vec![DescribeAclsResource::default()
            .with_resource_type(9)
            .with_acls(vec![AclDescription::default().with_operation(4).with_permission_type(2)])]);
        assert!(matches!(described_acls(&odd), Err(AnswerError::Incomplete(_))));
        let disabled = DescribeAclsResponse::default().with_error_code(ResponseError::SecurityDisabled.code()).with_error_message(Some(s("No Authorizer is configured.")));
        assert_eq!(described_acls(&disabled).unwrap_err().to_string(), "SECURITY_DISABLED (54) (No Authorizer is configured.)");

        let created = CreateAclsResponse::default().with_results(vec![
            Default::default(),
            kafka_protocol::messages::create_acls_response::AclCreationResult::default().with_error_code(42).with_error_message(Some(s("bad"))),
        ]);
        let read = created_acls(&created, 2).unwrap();
        assert_eq!(read[0], Ok(()));
        assert_eq!(read[1], Err(AnswerError::Broker { code: 42, message: Some("bad".into()) }));
        assert!(created_acls(&created, 3).is_err());
        let deleted = DeleteAclsResponse::default().with_filter_results(vec![
            DeleteAclsFilterResult::default().with_matching_acls(vec![DeleteAclsMatchingAcl::default()
                .with_resource_type(2)
                .with_resource_name(s("pay"))
                .with_pattern_type(4)
                .with_principal(s("User:alice"))
                .with_host(s("*"))
                .with_operation(4)
                .with_permission_type(2)]),
            DeleteAclsFilterResult::default().with_error_code(42),
        ]);
        let read = deleted_acls(&deleted, 2).unwrap();
        assert_eq!(read[0], Ok(vec![binding]));
        assert_eq!(read[1], Err(AnswerError::code(ResponseError::InvalidRequest)));
    }
}
