//! Consumer groups: drives each core's `core::group::GroupCoordinator` (the groups whose
//! `__consumer_offsets` partition the core owns) and answers the group APIs.
//!
//! `__consumer_offsets` is a replicated topic like any other: the coordinator of a group is
//! the leader of its partition, which replays the partition when it becomes leader and drops
//! its groups when it stops leading; group records are written with acks=all.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use odradek_core::batch;
use odradek_core::fetcher::TopicPartition;
use odradek_core::controller::Response as ControllerResponse;
use odradek_core::controller_rpc::ControllerRequest;
use odradek_core::error::code;
use odradek_core::group::{self, Action, GroupRecord, GroupState, Response};
use odradek_core::controller::MetadataImage;
use odradek_core::ids::{LeaderEpoch, NodeId};
use odradek_core::records;
use odradek_core::shard::ShardId;
use odradek_core::ErrorCode;
use tracing::{info, warn};

use odradek_core::wire::regroup;
use crate::clock::now_ms;
use crate::group_state::Call;
use crate::shard::Shard;
use crate::storage::PartitionStore;

pub use odradek_core::group::OFFSETS_TOPIC;
/// How long a replicated group write waits for the ISR (Kafka's `offsets.commit.timeout.ms`).
const COMMIT_TIMEOUT_MS: i32 = 5_000;
const TICK: Duration = Duration::from_millis(100);
const LOAD_READ_BYTES: usize = 8 << 20;

impl Shard {
    /// Runs a group request on this core's coordinator and waits for its answer.
    pub async fn group_call(self: Rc<Self>, call: Call) -> Response {
        let id = self.groups.next_id.get();
        self.groups.next_id.set(id + 1);
        let (tx, rx) = futures_channel::oneshot::channel();
        self.groups.waiting.borrow_mut().insert(id, tx);
        let now = now_ms();
        {
            let mut c = self.groups.coordinator.borrow_mut();
            match call {
                Call::Join(r) => c.handle_join(now, id, r),
                Call::Sync(r) => c.handle_sync(now, id, r),
                Call::Heartbeat(r) => c.handle_heartbeat(now, id, r),
                Call::Leave(r) => c.handle_leave(now, id, r),
                Call::Commit(r) => c.handle_offset_commit(now, id, r),
                Call::Fetch(g, p) => c.handle_offset_fetch(id, &g, p),
                Call::Describe(g) => c.handle_describe(id, g),
                Call::List => c.handle_list(id),
                Call::Delete(g) => c.handle_delete(id, g),
                Call::OffsetDelete(g, p) => c.handle_offset_delete(id, &g, p),
            }
        }
        self.pump_groups();
        rx.await.expect("the coordinator answers every request")
    }

    /// Drains the coordinator's actions: answers go to their waiters, records are appended
    /// to `__consumer_offsets` and reported back once durable.
    fn pump_groups(self: &Rc<Self>) {
        loop {
            let Some(action) = self.groups.coordinator.borrow_mut().poll_action() else { return };
            match action {
                Action::Reply(id, response) => {
                    if let Some(waiter) = self.groups.waiting.borrow_mut().remove(&id) {
                        let _ = waiter.send(response);
                    }
                }
                Action::Persist { token, partition, records } => {
                    let shard = self.clone();
                    glommio::spawn_local(async move {
                        let ok = shard.persist_group_records(partition, records).await;
                        shard.groups.coordinator.borrow_mut().handle_persisted(token, ok);
                        shard.pump_groups();
                    })
                    .detach();
                }
            }
        }
    }

    /// Group records are appended to the leader's replica with acks=all, so a commit is
    /// acknowledged only once the ISR holds it (Kafka writes them the same way).
    async fn persist_group_records(self: &Rc<Self>, partition: i32, records: Vec<GroupRecord>) -> bool {
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
        let encoded: Vec<(Bytes, Option<Bytes>)> = records.iter().map(GroupRecord::encode).collect();
        let batch = records::encode_batch(&encoded, now_ms());
        match self.produce_local(&tp, batch, -1, COMMIT_TIMEOUT_MS).await {
            Ok(_) => true,
            Err(e) => {
                warn!(partition, error = ?e, "replicating group records failed");
                false
            }
        }
    }

    /// Replays `store` from its start to `end()` into the coordinator (the partition must
    /// be loading), stopping early once `wanted()` turns false.
    async fn replay_partition(
        &self,
        partition: i32,
        store: &PartitionStore,
        end: impl Fn() -> i64,
        wanted: impl Fn() -> bool,
    ) -> std::io::Result<usize> {
        let mut loaded = 0usize;
        let mut offset = store.log_start_offset();
        while offset < end() && wanted() {
            let chunk = store
                .read_upto(offset, LOAD_READ_BYTES, end())
                .await
                .map_err(|e| std::io::Error::other(format!("{OFFSETS_TOPIC}-{partition} at {offset}: {e}")))?;
            let Some(next) = batch::scan_headers(&chunk).last().map(|(_, h)| h.next_offset()) else { break };
            let pairs = records::decode_key_values(&chunk).map_err(std::io::Error::other)?;
            if !wanted() {
                break;
            }
            let mut coordinator = self.groups.coordinator.borrow_mut();
            for (key, value) in pairs {
                match GroupRecord::decode(key, value) {
                    Ok(record) => coordinator.load(now_ms(), record),
                    Err(e) => warn!(partition, offset, error = %e, "skipping an unreadable group record"),
                }
                loaded += 1;
            }
            offset = next;
        }
        Ok(loaded)
    }

    /// Runs the coordinator's timers. Its groups load as this core's replicas of
    /// `__consumer_offsets` gain leadership (`offsets_leadership`).
    pub fn start_group_timers(self: &Rc<Self>) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(TICK).await;
                shard.groups.coordinator.borrow_mut().handle_timeout(now_ms());
                shard.pump_groups();
            }
        })
        .detach();
    }

    /// This core's replica of `__consumer_offsets-{partition}` now leads at
    /// `epoch` (`Some`) or does not lead (`None`). A new leadership replays the partition to
    /// its log end (the leader never truncates its own log, so all of it becomes committed or
    /// this node loses leadership first); a lost one drops the partition's groups.
    pub fn offsets_leadership(self: &Rc<Self>, partition: i32, epoch: Option<LeaderEpoch>) {
        let previous = self.groups.leading.borrow().get(&partition).copied();
        if previous == epoch {
            return;
        }
        match epoch {
            None => {
                let expected = self.groups.coordinator.borrow().owned_partitions().contains(&partition);
                if previous.is_none() && !expected {
                    return;
                }
                self.groups.leading.borrow_mut().remove(&partition);
                self.groups.coordinator.borrow_mut().unload(partition);
                self.pump_groups();
                info!(partition, "no longer coordinating the groups of {OFFSETS_TOPIC}-{partition}");
            }
            Some(epoch) => {
                self.groups.leading.borrow_mut().insert(partition, epoch);
                self.groups.coordinator.borrow_mut().begin_load(partition);
                self.pump_groups();
                let shard = self.clone();
                glommio::spawn_local(async move { shard.load_led_partition(partition, epoch).await }).detach();
            }
        }
    }

    /// FindCoordinator names this node as soon as `image` is published, before its replicas
    /// act on it: the partitions it now leads answer COORDINATOR_LOAD_IN_PROGRESS (which
    /// clients retry) rather than NOT_COORDINATOR until [`Self::offsets_leadership`] loads
    /// them. Called in the same step that publishes the image.
    pub fn expect_offsets_leadership(&self, image: &MetadataImage) {
        let Some(topic) = image.topic_by_name(OFFSETS_TOPIC) else { return };
        let me = NodeId(self.shared.config.node_id);
        for (p, state) in topic.partitions.iter().enumerate() {
            let p = p as i32;
            let loaded_for = self.groups.leading.borrow().get(&p).copied();
            if state.leader == me && self.owner(OFFSETS_TOPIC, p) == self.id && loaded_for != Some(state.leader_epoch) {
                self.groups.coordinator.borrow_mut().begin_load(p);
            }
        }
    }

    async fn load_led_partition(self: Rc<Self>, partition: i32, epoch: LeaderEpoch) {
        let wanted = || self.groups.leading.borrow().get(&partition) == Some(&epoch);
        let Some(store) = self.store(OFFSETS_TOPIC, partition) else { return };
        let started = std::time::Instant::now();
        match self.replay_partition(partition, &store, || store.log_end_offset(), wanted).await {
            Ok(records) if wanted() => {
                self.groups.coordinator.borrow_mut().finish_load(partition);
                self.pump_groups();
                info!(partition, %epoch, records, ms = started.elapsed().as_millis() as u64, "loaded the groups of {OFFSETS_TOPIC}-{partition}");
            }
            Ok(_) => {}
            Err(e) => {
                // Stays loading: clients retry elsewhere once leadership moves, as Kafka's do.
                warn!(partition, error = %e, "loading group state failed");
            }
        }
    }

    fn group_owner(&self, group_id: &str) -> ShardId {
        let partitions = self.shared.config.group.offsets_topic_partitions;
        self.owner(OFFSETS_TOPIC, group::partition_for(group_id, partitions))
    }

    async fn call_group(self: &Rc<Self>, group_id: &str, call: Call) -> Response {
        let owner = self.group_owner(group_id);
        self.on_shard(owner, move |shard| shard.group_call(call)).await
    }
}

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Each topic of a request with its partition indexes, for [`regroup`].
fn shape_of<'a, P: Iterator<Item = i32>>(
    topics: impl Iterator<Item = (&'a TopicName, P)>,
) -> Vec<(TopicName, Vec<i32>)> {
    topics.map(|(name, partitions)| (name.clone(), partitions.collect())).collect()
}

fn opt(text: &Option<StrBytes>) -> Option<String> {
    text.as_ref().map(|t| t.to_string())
}

// ---- API handlers ----

/// Where a group's coordinator is, or why there is none yet: this node on a single node;
/// on a cluster the leader of the group's `__consumer_offsets` partition, creating the topic
/// on first use as Kafka does (clients retry on COORDINATOR_NOT_AVAILABLE meanwhile).
async fn locate_coordinator(shard: &Rc<Shard>, key_type: i8, key: &str) -> Result<(i32, String, i32), ErrorCode> {
    let config = &shard.shared.config;
    if key_type != 0 {
        // Transactions are not coordinated.
        return Err(ErrorCode::CoordinatorNotAvailable);
    }
    let image = shard.image.borrow().clone();
    let Some(topic) = image.topic_by_name(OFFSETS_TOPIC) else {
        shard.create_offsets_topic();
        return Err(ErrorCode::CoordinatorNotAvailable);
    };
    let partition = group::partition_for(key, config.group.offsets_topic_partitions);
    let leader = topic.partitions.get(partition as usize).map(|p| p.leader).ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let endpoint = image
        .brokers()
        .get(&leader)
        .filter(|b| !b.fenced)
        .and_then(|b| b.endpoints.first())
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    Ok((leader.0, endpoint.host.clone(), i32::from(endpoint.port)))
}

impl Shard {
    /// Asks the controller, once at a time, to create `__consumer_offsets` with Kafka's
    /// settings for it: compacted, `offsets.topic.replication.factor` replicas.
    fn create_offsets_topic(self: &Rc<Self>) {
        if self.groups.creating_topic.replace(true) {
            return;
        }
        let topic = self.shared.config.offsets_topic();
        let shard = self.clone();
        glommio::spawn_local(async move {
            let request = odradek_core::controller::CreateTopicsRequest { topics: vec![topic], validate_only: false };
            let answer = shard.controller_request(ControllerRequest::CreateTopics(request)).await;
            match answer {
                Some(ControllerResponse::CreateTopics(results)) => {
                    for r in results.into_iter().filter(|r| r.error.is_some()) {
                        warn!(error = ?r.error, "creating {OFFSETS_TOPIC} failed; retrying on the next FindCoordinator");
                    }
                }
                _ => warn!("no controller answered the creation of {OFFSETS_TOPIC}"),
            }
            shard.groups.creating_topic.set(false);
        })
        .detach();
    }
}

pub async fn find_coordinator(shard: &Rc<Shard>, request: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    if version >= 4 {
        let mut coordinators = Vec::new();
        for key in &request.coordinator_keys {
            let c = Coordinator::default().with_key(key.clone());
            coordinators.push(match locate_coordinator(shard, request.key_type, key).await {
                Ok((node, host, port)) => c.with_node_id(node.into()).with_host(s(host)).with_port(port),
                Err(e) => c.with_error_code(e.code()).with_node_id((-1).into()).with_port(-1),
            });
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match locate_coordinator(shard, request.key_type, &request.key).await {
        Ok((node, host, port)) => FindCoordinatorResponse::default().with_node_id(node.into()).with_host(s(host)).with_port(port),
        Err(e) => FindCoordinatorResponse::default().with_error_code(e.code()).with_node_id((-1).into()).with_port(-1),
    }
}

pub async fn join_group(shard: &Rc<Shard>, request: JoinGroupRequest, version: i16, client_id: String, client_host: String) -> JoinGroupResponse {
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
    let Response::Join(r) = shard.call_group(&group_id, call).await else { unreachable!("join answers a join") };
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
    response
}

pub async fn sync_group(shard: &Rc<Shard>, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
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
    let Response::Sync(r) = shard.call_group(&group_id, call).await else { unreachable!("sync answers a sync") };
    let response = SyncGroupResponse::default().with_error_code(code(r.error)).with_assignment(r.assignment);
    if version >= 5 {
        response.with_protocol_type(r.protocol_type.map(s)).with_protocol_name(r.protocol_name.map(s))
    } else {
        response
    }
}

pub async fn heartbeat(shard: &Rc<Shard>, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let call = Call::Heartbeat(group::HeartbeatRequest {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: opt(&request.group_instance_id),
    });
    let Response::Heartbeat(error) = shard.call_group(&group_id, call).await else { unreachable!() };
    HeartbeatResponse::default().with_error_code(code(error))
}

pub async fn leave_group(shard: &Rc<Shard>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    let members = if version >= 3 {
        request.members.iter().map(|m| (m.member_id.to_string(), opt(&m.group_instance_id))).collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let call = Call::Leave(group::LeaveRequest { group_id: group_id.clone(), members });
    let Response::Leave(r) = shard.call_group(&group_id, call).await else { unreachable!() };
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(code(r.error));
    }
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
    )
}

pub async fn offset_commit(shard: &Rc<Shard>, request: OffsetCommitRequest) -> OffsetCommitResponse {
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
    let call = Call::Commit(group::OffsetCommitRequest {
        group_id: group_id.clone(),
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.to_string(),
        group_instance_id: opt(&request.group_instance_id),
        offsets,
    });
    let Response::OffsetCommit(results) = shard.call_group(&group_id, call).await else { unreachable!() };
    let topics = regroup(
        shape_of(request.topics.iter().map(|t| (&t.name, t.partitions.iter().map(|p| p.partition_index)))),
        results,
        |index, (_, _, error)| OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code(error)),
        |name, partitions| OffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions),
    );
    OffsetCommitResponse::default().with_topics(topics)
}

pub async fn offset_fetch(shard: &Rc<Shard>, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let group_id = request.group_id.0.to_string();
    let wanted: Option<Vec<(String, i32)>> = request.topics.as_ref().map(|topics| {
        topics.iter().flat_map(|t| t.partition_indexes.iter().map(move |&p| (t.name.0.to_string(), p))).collect()
    });
    let Response::OffsetFetch(result) = shard.call_group(&group_id, Call::Fetch(group_id.clone(), wanted.clone())).await else {
        unreachable!()
    };
    // A coordinator error is top-level with no partitions from v2; v1 has only partition
    // errors, so it goes on each requested partition (Kafka's getErrorResponse).
    let (error, entries) = match result {
        Ok(entries) => (None, entries.into_iter().map(|e| (e, None)).collect()),
        Err(error) if version >= 2 => (Some(error), Vec::new()),
        Err(error) => {
            let failed = wanted.unwrap_or_default().into_iter().map(|(topic, partition)| {
                (group::OffsetFetchEntry { topic, partition, offset: -1, leader_epoch: -1, metadata: String::new() }, Some(error))
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

pub async fn describe_groups(shard: &Rc<Shard>, request: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let mut groups = Vec::new();
    for group_id in request.groups {
        let name = group_id.0.to_string();
        let Response::Describe(mut described) = shard.call_group(&name, Call::Describe(vec![name.clone()])).await else {
            unreachable!()
        };
        let g = described.pop().expect("one group described");
        groups.push(
            DescribedGroup::default()
                .with_group_id(group_id)
                .with_error_code(code(g.error))
                // Without an authorizer Kafka reports READ, DELETE and DESCRIBE (bits 3, 6, 8).
                .with_authorized_operations(if request.include_authorized_operations && version >= 3 { 0x148 } else { i32::MIN })
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
                ),
        );
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn list_groups(shard: &Rc<Shard>, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let per_core = shard.on_every_shard(|s| s.group_call(Call::List)).await;
    let states: Vec<String> = request.states_filter.iter().map(|f| f.to_string().to_lowercase()).collect();
    let groups = per_core
        .into_iter()
        .flat_map(|r| match r {
            Response::List(groups) => groups,
            _ => unreachable!(),
        })
        .filter(|(_, _, state)| states.is_empty() || states.contains(&state.name().to_lowercase()))
        .map(|(group_id, protocol_type, state): (String, String, GroupState)| {
            let listed = ListedGroup::default().with_group_id(s(group_id).into()).with_protocol_type(s(protocol_type));
            if version >= 4 { listed.with_group_state(s(state.name())) } else { listed }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(shard: &Rc<Shard>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for group_id in request.groups_names {
        let name = group_id.0.to_string();
        let Response::Delete(mut r) = shard.call_group(&name, Call::Delete(vec![name.clone()])).await else { unreachable!() };
        let (_, error) = r.pop().expect("one result");
        results.push(DeletableGroupResult::default().with_group_id(group_id).with_error_code(code(error)));
    }
    DeleteGroupsResponse::default().with_results(results)
}

pub async fn offset_delete(shard: &Rc<Shard>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), p.partition_index)))
        .collect();
    let Response::OffsetDelete(error, results) =
        shard.call_group(&group_id, Call::OffsetDelete(group_id.clone(), partitions)).await
    else {
        unreachable!()
    };
    if error.is_some() {
        return OffsetDeleteResponse::default().with_error_code(code(error));
    }
    let topics = regroup(
        shape_of(request.topics.iter().map(|t| (&t.name, t.partitions.iter().map(|p| p.partition_index)))),
        results,
        |index, (_, _, error)| OffsetDeleteResponsePartition::default().with_partition_index(index).with_error_code(code(error)),
        |name, partitions| OffsetDeleteResponseTopic::default().with_name(name).with_partitions(partitions),
    );
    OffsetDeleteResponse::default().with_topics(topics)
}
