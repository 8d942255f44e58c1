//! The group APIs as the per-core state machine answers them. A decoded Kafka group request
//! becomes calls for the coordinators that own its groups (`join_group` … `offset_delete`,
//! each a [`Routed`]); the coordinator's answer becomes that API's Kafka response inside the
//! [`Shard`](super::Shard) that runs it; and the answers of a request split across cores merge
//! back in the client's order ([`Merge`]). The broker's connections and the simulator's nodes
//! only carry the parts to their cores and encode what comes back.

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::controller::MetadataImage;
use crate::error::{code, ErrorCode};
use crate::group::{self, Call, GroupState, Response, OFFSETS_TOPIC};
use crate::wire::{encode_response, regroup, Request, RequestError};

/// A group API's Kafka response, as the shard builds it whole.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupResponse {
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    LeaveGroup(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    OffsetFetch(OffsetFetchResponse),
    TxnOffsetCommit(TxnOffsetCommitResponse),
    DescribeGroups(DescribeGroupsResponse),
    ListGroups(ListGroupsResponse),
    DeleteGroups(DeleteGroupsResponse),
    OffsetDelete(OffsetDeleteResponse),
}

impl GroupResponse {
    /// The framed response to the request `correlation_id` of `version`.
    pub fn encode(&self, version: i16, correlation_id: i32) -> Result<Bytes, RequestError> {
        use GroupResponse::*;
        match self {
            JoinGroup(r) => encode_response(ApiKey::JoinGroup, version, correlation_id, r),
            SyncGroup(r) => encode_response(ApiKey::SyncGroup, version, correlation_id, r),
            Heartbeat(r) => encode_response(ApiKey::Heartbeat, version, correlation_id, r),
            LeaveGroup(r) => encode_response(ApiKey::LeaveGroup, version, correlation_id, r),
            OffsetCommit(r) => encode_response(ApiKey::OffsetCommit, version, correlation_id, r),
            OffsetFetch(r) => encode_response(ApiKey::OffsetFetch, version, correlation_id, r),
            TxnOffsetCommit(r) => encode_response(ApiKey::TxnOffsetCommit, version, correlation_id, r),
            DescribeGroups(r) => encode_response(ApiKey::DescribeGroups, version, correlation_id, r),
            ListGroups(r) => encode_response(ApiKey::ListGroups, version, correlation_id, r),
            DeleteGroups(r) => encode_response(ApiKey::DeleteGroups, version, correlation_id, r),
            OffsetDelete(r) => encode_response(ApiKey::OffsetDelete, version, correlation_id, r),
        }
    }
}

/// Where one part of a group request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// On the core owning this `__consumer_offsets` partition (the group's).
    Group(i32),
    /// On every core (ListGroups).
    EveryCore,
}

/// One coordinator call, with what its Kafka answer needs from the request.
#[derive(Debug, Clone)]
pub struct GroupRequest {
    pub(crate) call: Call,
    pub(crate) reply: Reply,
}

#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Join { version: i16 },
    Sync { version: i16 },
    Heartbeat,
    Leave { version: i16 },
    /// `unknown`: per partition in request order, whether it is not in the metadata (answered
    /// UNKNOWN_TOPIC_OR_PARTITION without reaching the coordinator).
    Commit { shape: Vec<(TopicName, Vec<i32>)>, unknown: Vec<bool> },
    TxnCommit { shape: Vec<(TopicName, Vec<i32>)> },
    Fetch { version: i16, wanted: Option<Vec<(String, i32)>> },
    Describe { version: i16, include_authorized_operations: bool },
    List { version: i16, states: Vec<String> },
    Delete,
    OffsetDelete { shape: Vec<(TopicName, Vec<i32>)> },
}

/// How the answers of a request's parts make its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// One part: its answer is the response.
    One,
    /// One part per group, their groups concatenated in request order.
    Describe,
    Delete,
    /// One part per core, their groups concatenated.
    List,
}

/// A group request split into the coordinator calls that answer it.
#[derive(Debug)]
pub struct Routed {
    pub parts: Vec<(Target, GroupRequest)>,
    pub merge: Merge,
}

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

fn opt(text: &Option<StrBytes>) -> Option<String> {
    text.as_ref().map(|t| t.to_string())
}

fn one(group_id: &str, partitions: i32, call: Call, reply: Reply) -> Routed {
    let target = Target::Group(group::partition_for(group_id, partitions));
    Routed { parts: vec![(target, GroupRequest { call, reply })], merge: Merge::One }
}

/// Each topic of a request with its partition indexes, for [`regroup`].
fn shape_of<'a, P: Iterator<Item = i32>>(topics: impl Iterator<Item = (&'a TopicName, P)>) -> Vec<(TopicName, Vec<i32>)> {
    topics.map(|(name, partitions)| (name.clone(), partitions.collect())).collect()
}

// ---- requests ----

/// Whether [`route`] takes requests of `api_key`: the APIs a group coordinator answers.
pub fn is_group_api(api_key: ApiKey) -> bool {
    matches!(
        api_key,
        ApiKey::JoinGroup
            | ApiKey::SyncGroup
            | ApiKey::Heartbeat
            | ApiKey::LeaveGroup
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::DescribeGroups
            | ApiKey::ListGroups
            | ApiKey::DeleteGroups
            | ApiKey::OffsetDelete
            | ApiKey::TxnOffsetCommit
    )
}

/// A decoded group API request (JoinGroup … OffsetDelete, not FindCoordinator) split into
/// its coordinators' calls. `peer` is the client's `host:port`, which JoinGroup reports as
/// the member's host; `partitions` is `offsets.topic.num.partitions`, which places every group;
/// `image` is the broker's metadata, against which OffsetCommit's partitions are checked.
pub fn route(request: &Request, peer: &str, partitions: i32, image: &MetadataImage) -> Result<Routed, RequestError> {
    let version = request.version();
    Ok(match request.api_key {
        ApiKey::JoinGroup => {
            let client_id = request.header.client_id.as_deref().unwrap_or_default().to_owned();
            let host = format!("/{}", peer.rsplit_once(':').map_or(peer, |(host, _)| host));
            join_group(request.decode()?, version, client_id, host, partitions)
        }
        ApiKey::SyncGroup => sync_group(request.decode()?, version, partitions),
        ApiKey::Heartbeat => heartbeat(request.decode()?, partitions),
        ApiKey::LeaveGroup => leave_group(request.decode()?, version, partitions),
        ApiKey::OffsetCommit => offset_commit(request.decode()?, partitions, |topic, partition| {
            image.topic_by_name(topic).is_some_and(|t| usize::try_from(partition).is_ok_and(|p| p < t.partitions.len()))
        }),
        ApiKey::OffsetFetch => offset_fetch(request.decode()?, version, partitions),
        ApiKey::DescribeGroups => describe_groups(request.decode()?, version, partitions),
        ApiKey::ListGroups => list_groups(request.decode()?, version),
        ApiKey::DeleteGroups => delete_groups(request.decode()?, partitions),
        ApiKey::OffsetDelete => offset_delete(request.decode()?, partitions),
        ApiKey::TxnOffsetCommit => txn_offset_commit(request.decode()?, version, partitions),
        other => return Err(RequestError::UnsupportedVersion { api_key: other, version }),
    })
}

/// `partitions` is `offsets.topic.num.partitions`, which places every group.
pub fn join_group(request: JoinGroupRequest, version: i16, client_id: String, client_host: String, partitions: i32) -> Routed {
    let group_id = request.group_id.0.to_string();
    let call = Call::Join(group::JoinRequest {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        group_instance_id: opt(&request.group_instance_id),
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 { request.rebalance_timeout_ms } else { request.session_timeout_ms },
        client_id,
        client_host,
        require_known_member_id: version >= 4,
    });
    one(&group_id, partitions, call, Reply::Join { version })
}

pub fn sync_group(request: SyncGroupRequest, version: i16, partitions: i32) -> Routed {
    let group_id = request.group_id.0.to_string();
    let call = Call::Sync(group::SyncRequest {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: opt(&request.group_instance_id),
        protocol_type: opt(&request.protocol_type),
        protocol_name: opt(&request.protocol_name),
        assignments: request.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
    });
    one(&group_id, partitions, call, Reply::Sync { version })
}

pub fn heartbeat(request: HeartbeatRequest, partitions: i32) -> Routed {
    let group_id = request.group_id.0.to_string();
    let call = Call::Heartbeat(group::HeartbeatRequest {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: opt(&request.group_instance_id),
    });
    one(&group_id, partitions, call, Reply::Heartbeat)
}

pub fn leave_group(request: LeaveGroupRequest, version: i16, partitions: i32) -> Routed {
    let group_id = request.group_id.0.to_string();
    let members = if version >= 3 {
        request.members.iter().map(|m| (m.member_id.to_string(), opt(&m.group_instance_id))).collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let call = Call::Leave(group::LeaveRequest { group_id: group_id.clone(), members });
    one(&group_id, partitions, call, Reply::Leave { version })
}

/// `known`: whether a topic's partition exists; offsets for others are answered
/// UNKNOWN_TOPIC_OR_PARTITION and not stored, as Kafka's `handleOffsetCommitRequest` does.
pub fn offset_commit(request: OffsetCommitRequest, partitions: i32, known: impl Fn(&str, i32) -> bool) -> Routed {
    let group_id = request.group_id.0.to_string();
    let mut unknown = Vec::new();
    let offsets = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (t.name.0.to_string(), p.partition_index, p.committed_offset, p.committed_leader_epoch, opt(&p.committed_metadata))
            })
        })
        .filter(|(topic, partition, ..)| {
            let known = known(topic, *partition);
            unknown.push(!known);
            known
        })
        .collect();
    let shape = shape_of(request.topics.iter().map(|t| (&t.name, t.partitions.iter().map(|p| p.partition_index))));
    let call = Call::Commit(group::OffsetCommitRequest {
        group_id: group_id.clone(),
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.to_string(),
        group_instance_id: opt(&request.group_instance_id),
        offsets,
    });
    one(&group_id, partitions, call, Reply::Commit { shape, unknown })
}

/// TxnOffsetCommit v0–3: a transaction's offsets for the group, pending until the
/// transaction's marker (v3's member fields are checked when a generation is given).
pub fn txn_offset_commit(request: TxnOffsetCommitRequest, version: i16, partitions: i32) -> Routed {
    let group_id = request.group_id.0.to_string();
    let offsets = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (t.name.0.to_string(), p.partition_index, p.committed_offset, p.committed_leader_epoch, opt(&p.committed_metadata))
            })
        })
        .collect();
    let shape = shape_of(request.topics.iter().map(|t| (&t.name, t.partitions.iter().map(|p| p.partition_index))));
    let call = Call::TxnCommit(group::TxnOffsetCommitRequest {
        producer_id: request.producer_id.0,
        commit: group::OffsetCommitRequest {
            group_id: group_id.clone(),
            generation_id: if version >= 3 { request.generation_id } else { -1 },
            member_id: if version >= 3 { request.member_id.to_string() } else { String::new() },
            group_instance_id: if version >= 3 { opt(&request.group_instance_id) } else { None },
            offsets,
        },
    });
    one(&group_id, partitions, call, Reply::TxnCommit { shape })
}

pub fn offset_fetch(request: OffsetFetchRequest, version: i16, partitions: i32) -> Routed {
    let group_id = request.group_id.0.to_string();
    let wanted: Option<Vec<(String, i32)>> = request.topics.as_ref().map(|topics| {
        topics.iter().flat_map(|t| t.partition_indexes.iter().map(move |&p| (t.name.0.to_string(), p))).collect()
    });
    let call = Call::Fetch(group_id.clone(), wanted.clone(), version >= 7 && request.require_stable);
    one(&group_id, partitions, call, Reply::Fetch { version, wanted })
}

pub fn describe_groups(request: DescribeGroupsRequest, version: i16, partitions: i32) -> Routed {
    let include_authorized_operations = request.include_authorized_operations && version >= 3;
    let parts = request
        .groups
        .into_iter()
        .map(|group_id| {
            let name = group_id.0.to_string();
            let target = Target::Group(group::partition_for(&name, partitions));
            let reply = Reply::Describe { version, include_authorized_operations };
            (target, GroupRequest { call: Call::Describe(vec![name]), reply })
        })
        .collect();
    Routed { parts, merge: Merge::Describe }
}

/// One part, run on every core.
pub fn list_groups(request: ListGroupsRequest, version: i16) -> Routed {
    let states: Vec<String> = request.states_filter.iter().map(|f| f.to_string().to_lowercase()).collect();
    let part = GroupRequest { call: Call::List, reply: Reply::List { version, states } };
    Routed { parts: vec![(Target::EveryCore, part)], merge: Merge::List }
}

pub fn delete_groups(request: DeleteGroupsRequest, partitions: i32) -> Routed {
    let parts = request
        .groups_names
        .into_iter()
        .map(|group_id| {
            let name = group_id.0.to_string();
            let target = Target::Group(group::partition_for(&name, partitions));
            (target, GroupRequest { call: Call::Delete(vec![name]), reply: Reply::Delete })
        })
        .collect();
    Routed { parts, merge: Merge::Delete }
}

pub fn offset_delete(request: OffsetDeleteRequest, partitions: i32) -> Routed {
    let group_id = request.group_id.0.to_string();
    let wanted: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), p.partition_index)))
        .collect();
    let shape = shape_of(request.topics.iter().map(|t| (&t.name, t.partitions.iter().map(|p| p.partition_index))));
    one(&group_id, partitions, Call::OffsetDelete(group_id.clone(), wanted), Reply::OffsetDelete { shape })
}

/// FindCoordinator from the committed image: the leader of the group's `__consumer_offsets`
/// partition (key type 0) or the transactional id's `__transaction_state` partition (key type
/// 1), or COORDINATOR_NOT_AVAILABLE (which clients retry) while there is none. The second
/// value names the internal topic when it does not exist yet: Kafka creates it on first use,
/// and so should the caller.
pub fn find_coordinator(
    image: &MetadataImage,
    request: &FindCoordinatorRequest,
    version: i16,
    offsets_partitions: i32,
    txn_partitions: i32,
    listener: &str,
) -> (FindCoordinatorResponse, Option<&'static str>) {
    let (topic_name, partitions) = match request.key_type {
        0 => (OFFSETS_TOPIC, offsets_partitions),
        1 => (crate::txn::TXN_TOPIC, txn_partitions),
        _ => ("", 0),
    };
    let missing = (partitions > 0 && image.topic_by_name(topic_name).is_none()).then_some(topic_name);
    let locate = |key: &str| -> Result<(i32, String, i32), ErrorCode> {
        if partitions == 0 {
            return Err(ErrorCode::InvalidRequest);
        }
        let topic = image.topic_by_name(topic_name).ok_or(ErrorCode::CoordinatorNotAvailable)?;
        let partition = group::partition_for(key, partitions);
        let leader = topic.partitions.get(partition as usize).map(|p| p.leader).ok_or(ErrorCode::CoordinatorNotAvailable)?;
        let endpoint = image
            .brokers()
            .get(&leader)
            .filter(|b| !b.fenced)
            .and_then(|b| b.endpoint(listener))
            .ok_or(ErrorCode::CoordinatorNotAvailable)?;
        Ok((leader.0, endpoint.host.clone(), i32::from(endpoint.port)))
    };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match locate(key) {
                    Ok((node, host, port)) => c.with_node_id(node.into()).with_host(s(host)).with_port(port),
                    Err(e) => c.with_error_code(e.code()).with_node_id((-1).into()).with_port(-1),
                }
            })
            .collect();
        return (FindCoordinatorResponse::default().with_coordinators(coordinators), missing);
    }
    let response = match locate(&request.key) {
        Ok((node, host, port)) => FindCoordinatorResponse::default().with_node_id(node.into()).with_host(s(host)).with_port(port),
        Err(e) => FindCoordinatorResponse::default().with_error_code(e.code()).with_node_id((-1).into()).with_port(-1),
    };
    (response, missing)
}

// ---- answers ----

/// The Kafka response for the coordinator's `response` to a call made as `reply`.
pub(crate) fn answer(reply: Reply, response: Response) -> GroupResponse {
    match (reply, response) {
        (Reply::Join { version }, Response::Join(r)) => {
            let mut response = JoinGroupResponse::default()
                .with_error_code(code(r.error))
                .with_generation_id(r.generation_id)
                .with_protocol_name(r.protocol_name.map(s).or(if version >= 7 { None } else { Some(s("")) }))
                .with_leader(s(r.leader))
                .with_member_id(s(r.member_id))
                .with_members(
                    r.members
                        .into_iter()
                        .map(|m| {
                            JoinGroupResponseMember::default()
                                .with_member_id(s(m.member_id))
                                .with_group_instance_id(if version >= 5 { m.group_instance_id.map(s) } else { None })
                                .with_metadata(m.metadata)
                        })
                        .collect(),
                );
            if version >= 7 {
                response = response.with_protocol_type(r.protocol_type.map(s));
            }
            GroupResponse::JoinGroup(response)
        }
        (Reply::Sync { version }, Response::Sync(r)) => {
            let response = SyncGroupResponse::default().with_error_code(code(r.error)).with_assignment(r.assignment);
            GroupResponse::SyncGroup(if version >= 5 {
                response.with_protocol_type(r.protocol_type.map(s)).with_protocol_name(r.protocol_name.map(s))
            } else {
                response
            })
        }
        (Reply::Heartbeat, Response::Heartbeat(error)) => {
            GroupResponse::Heartbeat(HeartbeatResponse::default().with_error_code(code(error)))
        }
        (Reply::Leave { version }, Response::Leave(r)) => {
            if version < 3 {
                return GroupResponse::LeaveGroup(LeaveGroupResponse::default().with_error_code(code(r.error)));
            }
            GroupResponse::LeaveGroup(
                LeaveGroupResponse::default().with_members(
                    r.members
                        .into_iter()
                        .map(|(member_id, instance, error)| {
                            MemberResponse::default()
                                .with_member_id(s(member_id))
                                .with_group_instance_id(instance.map(s))
                                .with_error_code(code(error))
                        })
                        .collect(),
                ),
            )
        }
        (Reply::Commit { shape, unknown }, Response::OffsetCommit(results)) => {
            let mut stored = results.into_iter().map(|(_, _, error)| error);
            let errors: Vec<Option<ErrorCode>> =
                unknown.iter().map(|&u| if u { Some(ErrorCode::UnknownTopicOrPartition) } else { stored.next().flatten() }).collect();
            let topics = regroup(
                shape,
                errors,
                |index, error| OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code(error)),
                |name, partitions| OffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions),
            );
            GroupResponse::OffsetCommit(OffsetCommitResponse::default().with_topics(topics))
        }
        (Reply::TxnCommit { shape }, Response::TxnOffsetCommit(results)) => GroupResponse::TxnOffsetCommit(txn_commit_response(shape, results)),
        (Reply::Fetch { version, wanted }, Response::OffsetFetch(result)) => {
            GroupResponse::OffsetFetch(offset_fetch_response(version, wanted, result))
        }
        (Reply::Describe { version, include_authorized_operations }, Response::Describe(described)) => {
            let groups = described
                .into_iter()
                .map(|g| {
                    DescribedGroup::default()
                        .with_group_id(s(g.group_id).into())
                        .with_error_code(code(g.error))
                        // Without an authorizer Kafka reports READ, DELETE and DESCRIBE (bits 3, 6, 8).
                        .with_authorized_operations(if include_authorized_operations { 0x148 } else { i32::MIN })
                        .with_group_state(s(g.state.name()))
                        .with_protocol_type(s(g.protocol_type))
                        .with_protocol_data(s(g.protocol))
                        .with_members(
                            g.members
                                .into_iter()
                                .map(|m| {
                                    DescribedGroupMember::default()
                                        .with_member_id(s(m.member_id))
                                        .with_group_instance_id(if version >= 4 { m.group_instance_id.map(s) } else { None })
                                        .with_client_id(s(m.client_id))
                                        .with_client_host(s(m.client_host))
                                        .with_member_metadata(m.metadata)
                                        .with_member_assignment(m.assignment)
                                })
                                .collect(),
                        )
                })
                .collect();
            GroupResponse::DescribeGroups(DescribeGroupsResponse::default().with_groups(groups))
        }
        (Reply::List { version, states }, Response::List(groups)) => {
            let groups = groups
                .into_iter()
                .filter(|(_, _, state)| states.is_empty() || states.contains(&state.name().to_lowercase()))
                .map(|(group_id, protocol_type, state): (String, String, GroupState)| {
                    let listed = ListedGroup::default().with_group_id(s(group_id).into()).with_protocol_type(s(protocol_type));
                    if version >= 4 { listed.with_group_state(s(state.name())) } else { listed }
                })
                .collect();
            GroupResponse::ListGroups(ListGroupsResponse::default().with_groups(groups))
        }
        (Reply::Delete, Response::Delete(results)) => {
            let results = results
                .into_iter()
                .map(|(group_id, error)| DeletableGroupResult::default().with_group_id(s(group_id).into()).with_error_code(code(error)))
                .collect();
            GroupResponse::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
        }
        (Reply::OffsetDelete { shape }, Response::OffsetDelete(error, results)) => {
            if error.is_some() {
                return GroupResponse::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code(error)));
            }
            let topics = regroup(
                shape,
                results,
                |index, (_, _, error)| OffsetDeleteResponsePartition::default().with_partition_index(index).with_error_code(code(error)),
                |name, partitions| OffsetDeleteResponseTopic::default().with_name(name).with_partitions(partitions),
            );
            GroupResponse::OffsetDelete(OffsetDeleteResponse::default().with_topics(topics))
        }
        (reply, response) => {
            // The coordinator answers each call in kind; a mismatch is a bug here, which the
            // client hears of as an error rather than the core panicking.
            tracing::error!(?reply, ?response, "the group coordinator answered a call with another kind");
            failed(reply, ErrorCode::UnknownServerError)
        }
    }
}

/// A coordinator error is top-level with no partitions from v2; v1 has only partition
/// errors, so it goes on each requested partition (Kafka's getErrorResponse).
fn offset_fetch_response(
    version: i16,
    wanted: Option<Vec<(String, i32)>>,
    result: Result<Vec<group::OffsetFetchEntry>, ErrorCode>,
) -> OffsetFetchResponse {
    let (error, entries) = match result {
        Ok(entries) => {
            (None, entries.into_iter().map(|e| { let error = e.unstable.then_some(ErrorCode::UnstableOffsetCommit); (e, error) }).collect())
        }
        Err(error) if version >= 2 => (Some(error), Vec::new()),
        Err(error) => {
            let failed = wanted.unwrap_or_default().into_iter().map(|(topic, partition)| {
                let entry = group::OffsetFetchEntry { topic, partition, offset: -1, leader_epoch: -1, metadata: String::new(), unstable: false };
                (entry, Some(error))
            });
            (Some(error), failed.collect::<Vec<_>>())
        }
    };
    let mut by_topic: Vec<(String, Vec<OffsetFetchResponsePartition>)> = Vec::new();
    for (e, partition_error) in entries {
        let partition = OffsetFetchResponsePartition::default()
            .with_partition_index(e.partition)
            .with_committed_offset(e.offset)
            .with_committed_leader_epoch(if version >= 5 { e.leader_epoch } else { -1 })
            .with_metadata(Some(s(e.metadata)))
            .with_error_code(code(partition_error));
        match by_topic.last_mut() {
            Some((topic, partitions)) if *topic == e.topic => partitions.push(partition),
            _ => by_topic.push((e.topic, vec![partition])),
        }
    }
    OffsetFetchResponse::default().with_error_code(if version >= 2 { code(error) } else { 0 }).with_topics(
        by_topic
            .into_iter()
            .map(|(topic, partitions)| OffsetFetchResponseTopic::default().with_name(s(topic).into()).with_partitions(partitions))
            .collect(),
    )
}

fn txn_commit_response(shape: Vec<(TopicName, Vec<i32>)>, results: Vec<(String, i32, Option<ErrorCode>)>) -> TxnOffsetCommitResponse {
    use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
    let topics = regroup(
        shape,
        results,
        |index, (_, _, error)| TxnOffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code(error)),
        |name, partitions| TxnOffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions),
    );
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// The answer of a call that failed as a whole.
fn failed(reply: Reply, error: ErrorCode) -> GroupResponse {
    let e = error.code();
    match reply {
        Reply::Join { .. } => GroupResponse::JoinGroup(JoinGroupResponse::default().with_error_code(e).with_generation_id(-1)),
        Reply::Sync { .. } => GroupResponse::SyncGroup(SyncGroupResponse::default().with_error_code(e)),
        Reply::Heartbeat => GroupResponse::Heartbeat(HeartbeatResponse::default().with_error_code(e)),
        Reply::Leave { .. } => GroupResponse::LeaveGroup(LeaveGroupResponse::default().with_error_code(e)),
        Reply::Commit { shape, unknown } => {
            let mut unknown = unknown.into_iter();
            let topics = shape
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetCommitResponseTopic::default().with_name(name).with_partitions(
                        partitions
                            .into_iter()
                            .map(|p| {
                                let e = if unknown.next().unwrap_or(false) { ErrorCode::UnknownTopicOrPartition.code() } else { e };
                                OffsetCommitResponsePartition::default().with_partition_index(p).with_error_code(e)
                            })
                            .collect(),
                    )
                })
                .collect();
            GroupResponse::OffsetCommit(OffsetCommitResponse::default().with_topics(topics))
        }
        Reply::TxnCommit { shape } => {
            let results = shape.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.0.to_string(), *p, Some(error)))).collect();
            GroupResponse::TxnOffsetCommit(txn_commit_response(shape, results))
        }
        Reply::Fetch { version, wanted } => GroupResponse::OffsetFetch(offset_fetch_response(version, wanted, Err(error))),
        Reply::Describe { .. } => GroupResponse::DescribeGroups(DescribeGroupsResponse::default()),
        Reply::List { .. } => GroupResponse::ListGroups(ListGroupsResponse::default().with_error_code(e)),
        Reply::Delete => GroupResponse::DeleteGroups(DeleteGroupsResponse::default()),
        Reply::OffsetDelete { .. } => GroupResponse::OffsetDelete(OffsetDeleteResponse::default().with_error_code(e)),
    }
}

impl Merge {
    /// The response from the answers of the parts, in the order of [`Routed::parts`] (for
    /// [`Target::EveryCore`], one answer per core).
    pub fn merge(self, answers: Vec<GroupResponse>) -> GroupResponse {
        let mut answers = answers.into_iter();
        match self {
            Merge::One => answers.next().expect("a routed request has one part"),
            Merge::Describe => {
                let mut merged = DescribeGroupsResponse::default();
                for answer in answers {
                    if let GroupResponse::DescribeGroups(part) = answer {
                        merged.groups.extend(part.groups);
                    }
                }
                GroupResponse::DescribeGroups(merged)
            }
            Merge::Delete => {
                let mut merged = DeleteGroupsResponse::default();
                for answer in answers {
                    if let GroupResponse::DeleteGroups(part) = answer {
                        merged.results.extend(part.results);
                    }
                }
                GroupResponse::DeleteGroups(merged)
            }
            Merge::List => {
                let mut merged = ListGroupsResponse::default();
                for answer in answers {
                    if let GroupResponse::ListGroups(part) = answer {
                        if part.error_code != 0 {
                            merged.error_code = part.error_code;
                        }
                        merged.groups.extend(part.groups);
                    }
                }
                GroupResponse::ListGroups(merged)
            }
        }
    }
}
