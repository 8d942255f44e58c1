//! Kafka API handlers: decode a request, split its partitions per owning core, run the work
//! there, merge the answers back in the client's order, encode the response.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use odradek_core::broker::partitions::{DeleteRecordsCall, DescribeProducersCall, EpochEndCall, FetchCall, ListOffsetsCall, ProduceCall};
use odradek_core::broker::{self, admin, authz, producer_ids};
use odradek_core::controller::Response as ControllerResponse;
use odradek_core::controller_rpc::ControllerRequest;
use odradek_core::quota::QuotaType;
use odradek_core::shard::ShardId;
use odradek_core::topic::validate_topic_name;
use odradek_core::wire::{self, Request, RequestError};
use odradek_core::ErrorCode;

use crate::clock::now_ms;
use crate::groups::{self, OFFSETS_TOPIC};
use crate::session::Session;
use crate::shard::Shard;
use crate::txns;

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// A request's answer still being worked on: `Ok(None)` means no response is sent.
pub type Pending = futures_lite::future::BoxedLocal<Result<Option<Bytes>, RequestError>>;

/// Starts one request of a connection whose requests are pipelined (`server`): a Produce is
/// handed to its partitions' cores before this returns, so the next request of the
/// connection cannot overtake it there, and answers once its records are durable and
/// replicated as acks asks; a Fetch runs on its own, so a long poll or a produce's sync does
/// not hold the requests behind it; every other request is handled here, in order.
/// Answers still leave in request order (the connection writes them so).
pub async fn start(shard: &Rc<Shard>, request: Request, session: &Session) -> Result<Pending, RequestError> {
    let version = request.version();
    let correlation_id = request.correlation_id();
    match request.api_key {
        ApiKey::Produce => {
            let mut produce: ProduceRequest = request.decode()?;
            let acks = produce.acks;
            let refused = session.with_access(shard, |access| authz::produce(&mut produce, access));
            let (refused, error) = match refused {
                None => (Vec::new(), ErrorCode::TopicAuthorizationFailed),
                Some(Ok(topics)) => (topics, ErrorCode::TopicAuthorizationFailed),
                Some(Err(error)) => (std::mem::take(&mut produce.topic_data), error),
            };
            let (call, parts) = ProduceCall::new(produce, version, shard.shared.shard_count);
            let answers = shard.start_produce(parts).await;
            Ok(Box::pin(async move {
                let mut response = call.answer(answers.await);
                authz::refuse_produce(&mut response, &refused, error);
                if acks == 0 {
                    Ok(None)
                } else {
                    wire::encode_response(ApiKey::Produce, version, correlation_id, &response).map(Some)
                }
            }))
        }
        ApiKey::Fetch => {
            let mut fetch: FetchRequest = request.decode()?;
            let refused = match session.with_access(shard, |access| authz::fetch(&mut fetch, access)) {
                None => Vec::new(),
                Some(Ok(topics)) => topics,
                Some(Err(error)) => {
                    let response = FetchResponse::default().with_error_code(error.code());
                    return Ok(Box::pin(async move { wire::encode_response(ApiKey::Fetch, version, correlation_id, &response).map(Some) }));
                }
            };
            // Nothing left to read: the refusals need no long poll.
            let nothing_left = !refused.is_empty() && fetch.topics.is_empty();
            let follower = fetch.replica_id.0 >= 0 || fetch.replica_state.replica_id.0 >= 0;
            // A consumer's byte-rate quota (follower fetches have none): one answer carries at
            // most a quota window's worth, as Kafka bounds it.
            let quota = (!follower && shard.has_client_quotas()).then(|| (session.quota_user(), request.header.client_id.as_deref().unwrap_or_default().to_owned(), session.mute.clone()));
            if let Some(max) = quota.as_ref().and_then(|(user, client_id, _)| shard.quota_window_max(QuotaType::Fetch, user, client_id)) {
                fetch.max_bytes = fetch.max_bytes.min(max.clamp(1.0, i32::MAX as f64) as i32);
            }
            let shard = shard.clone();
            let task = glommio::spawn_local(async move {
                let mut response = if nothing_left { FetchResponse::default() } else { self::fetch(&shard, fetch, version).await };
                authz::refuse_fetch(&mut response, &refused, ErrorCode::TopicAuthorizationFailed);
                if let Some((user, client_id, mute)) = quota {
                    response = throttle_fetch(&shard, response, version, &user, &client_id, &mute);
                }
                shard.metrics.fetched(&response, follower, &shard.image.borrow());
                response
            });
            Ok(Box::pin(async move { wire::encode_response(ApiKey::Fetch, version, correlation_id, &task.await).map(Some) }))
        }
        _ => {
            let answer = handle(shard, request, session).await?;
            Ok(Box::pin(async move { Ok(answer) }))
        }
    }
}

/// A consumer's Fetch answer against its byte-rate quota, as Kafka's `handleFetchRequest`
/// treats it: over the quota, the data is not sent (and not counted), and the answer is an
/// empty one telling the client how long to hold off; the connection is muted that long.
fn throttle_fetch(shard: &Shard, response: FetchResponse, version: i16, user: &str, client_id: &str, mute: &crate::session::Mute) -> FetchResponse {
    let size = response.compute_size(version).unwrap_or(0) as f64;
    let throttle_ms = shard.record_quota(QuotaType::Fetch, user, client_id, size);
    if throttle_ms == 0 {
        return response;
    }
    shard.unrecord_quota(QuotaType::Fetch, user, client_id, size);
    mute.throttle(throttle_ms);
    FetchResponse::default()
        .with_throttle_time_ms(i32::try_from(throttle_ms).unwrap_or(i32::MAX))
        .with_session_id(response.session_id)
}

/// Handles one request other than Produce and Fetch ([`start`] runs those), in full.
async fn handle(shard: &Rc<Shard>, request: Request, session: &Session) -> Result<Option<Bytes>, RequestError> {
    let (peer, listener) = (session.peer.as_str(), session.listener.name.as_str());
    let version = request.version();
    let respond = |message: &dyn EncodeAny| message.encode_framed(request.api_key, version, request.correlation_id()).map(Some);
    match request.api_key {
        ApiKey::ApiVersions => {
            let _: ApiVersionsRequest = request.decode()?;
            respond(&wire::api_versions_response(None))
        }
        ApiKey::Metadata => respond(&metadata(shard, request.decode()?, version, session).await),
        ApiKey::ListOffsets => respond(&list_offsets(shard, request.decode()?, version).await),
        ApiKey::OffsetForLeaderEpoch => respond(&offset_for_leader_epoch(shard, request.decode()?).await),
        ApiKey::DeleteRecords => respond(&delete_records(shard, request.decode()?).await),
        ApiKey::CreateTopics => {
            let mut create: CreateTopicsRequest = request.decode()?;
            let refused = session.with_access(shard, |access| authz::create_topics(&mut create, access)).unwrap_or_default();
            let mut response = create_topics(shard, create, version).await;
            authz::refuse_create_topics(&mut response, refused);
            respond(&response)
        }
        ApiKey::DeleteTopics => respond(&delete_topics(shard, request.decode()?, version).await),
        ApiKey::CreatePartitions => respond(&create_partitions(shard, request.decode()?).await),
        ApiKey::AlterPartitionReassignments => {
            let reassign: AlterPartitionReassignmentsRequest = request.decode()?;
            let partitions = admin::reassignments_request(&reassign, version);
            let answer = match shard.controller_request(ControllerRequest::AlterPartitionReassignments(partitions)).await {
                Some(ControllerResponse::AlterPartitionReassignments(results)) => Some(results),
                _ => None,
            };
            respond(&admin::reassignments_response(&reassign, answer))
        }
        ApiKey::ElectLeaders => {
            let elect: ElectLeadersRequest = request.decode()?;
            let answer = match admin::elect_leaders_request(&elect, version) {
                Ok(forwarded) => match shard.controller_request(ControllerRequest::ElectLeaders(forwarded)).await {
                    Some(ControllerResponse::ElectLeaders(results)) => Ok(results),
                    _ => Err(ErrorCode::RequestTimedOut),
                },
                Err(e) => Err(e),
            };
            respond(&admin::elect_leaders_response(&elect, version, answer))
        }
        ApiKey::ListPartitionReassignments => respond(&admin::list_reassignments(&shard.image.borrow(), &request.decode()?)),
        ApiKey::DescribeConfigs => respond(&describe_configs(shard, request.decode()?, version)),
        ApiKey::IncrementalAlterConfigs => {
            let alter: IncrementalAlterConfigsRequest = request.decode()?;
            let alterations = broker::configs::incremental_alterations(&alter);
            let answer = alter_configs(shard, &alterations, alter.validate_only).await;
            respond(&broker::configs::incremental_response(&alter, &alterations, answer))
        }
        ApiKey::AlterConfigs => {
            let alter: AlterConfigsRequest = request.decode()?;
            let alterations = broker::configs::legacy_alterations(&alter);
            let answer = alter_configs(shard, &alterations, alter.validate_only).await;
            respond(&broker::configs::legacy_response(&alter, &alterations, answer))
        }
        ApiKey::AlterClientQuotas => {
            let alter: AlterClientQuotasRequest = request.decode()?;
            let (forwarded, placed) = broker::quotas::alter_request(&alter);
            let results = if forwarded.entries.is_empty() {
                Some(Vec::new())
            } else {
                match shard.controller_request(ControllerRequest::AlterClientQuotas(forwarded)).await {
                    Some(ControllerResponse::AlterClientQuotas(results)) => Some(results),
                    _ => None,
                }
            };
            respond(&broker::quotas::alter_response(&alter, placed, results, odradek_core::controller::ControllerError::Busy))
        }
        ApiKey::DescribeClientQuotas => respond(&broker::quotas::describe(&shard.image.borrow(), &request.decode()?)),
        ApiKey::FindCoordinator => respond(&groups::find_coordinator(shard, request.decode()?, version, listener)),
        ApiKey::InitProducerId => {
            let init: InitProducerIdRequest = request.decode()?;
            if broker::txn::is_transactional_init(&init) {
                let routed = broker::txn::route_init(&init, version, &shard.shared.config.txn);
                return txns::answer(shard, routed).await.encode(version, request.correlation_id()).map(Some);
            }
            respond(&init_producer_id(shard, init).await)
        }
        ApiKey::WriteTxnMarkers => respond(&shard.write_txn_markers(request.decode()?).await),
        key if broker::txn::is_txn_api(key) => {
            let image = shard.image.borrow().clone();
            let routed = broker::txn::route(&request, &image, &shard.shared.config.txn)?;
            txns::answer(shard, routed).await.encode(version, request.correlation_id()).map(Some)
        }
        ApiKey::DescribeProducers => {
            let (call, parts) = DescribeProducersCall::new(&request.decode()?, shard.shared.shard_count);
            respond(&call.answer(shard.scatter(parts, Shard::describe_producers_partition).await))
        }
        ApiKey::AlterUserScramCredentials => respond(&alter_user_scram_credentials(shard, request.decode()?).await),
        ApiKey::DescribeUserScramCredentials => {
            respond(&admin::describe_user_scram_credentials(&shard.image.borrow(), &request.decode()?))
        }
        ApiKey::CreateAcls => respond(&create_acls(shard, request.decode()?).await),
        ApiKey::DescribeAcls => respond(&describe_acls(shard, &request.decode()?)),
        ApiKey::DeleteAcls => respond(&delete_acls(shard, request.decode()?).await),
        ApiKey::DescribeCluster => respond(&describe_cluster(shard, request.decode()?, version, session)),
        ApiKey::DescribeLogDirs => respond(&describe_log_dirs(shard, request.decode()?).await),
        key if broker::groups::is_group_api(key) => {
            let partitions = shard.shared.config.group.offsets_topic_partitions;
            let routed = broker::groups::route(&request, peer, partitions, &shard.image.borrow())?;
            groups::answer(shard, routed).await.encode(version, request.correlation_id()).map(Some)
        }
        other => Err(RequestError::UnsupportedVersion { api_key: other, version }),
    }
}

/// Object-safe framing, so `handle` can answer every API through one closure.
trait EncodeAny {
    fn encode_framed(&self, api_key: ApiKey, version: i16, correlation_id: i32) -> Result<Bytes, RequestError>;
}

impl<M: Encodable> EncodeAny for M {
    fn encode_framed(&self, api_key: ApiKey, version: i16, correlation_id: i32) -> Result<Bytes, RequestError> {
        wire::encode_response(api_key, version, correlation_id, self)
    }
}

// ---- Metadata and topic administration ----

/// The topics a Metadata request names (`None`: all of them), and whether missing ones may
/// be created.
fn requested_topics(config: &crate::config::ServerConfig, request: MetadataRequest, version: i16) -> (Option<Vec<String>>, bool) {
    let auto_create = config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    // v0 asks for every topic with an empty list; later versions with a null one.
    let requested = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(topics.into_iter().filter_map(|t| t.name.map(|n| n.0.to_string())).collect()),
    };
    (requested, auto_create)
}

/// Metadata from this node's metadata image: every unfenced broker, the active controller,
/// and per partition the leader, leader epoch, replicas and ISR the controller committed,
/// `__consumer_offsets` included.
async fn metadata(shard: &Rc<Shard>, request: MetadataRequest, version: i16, session: &Session) -> MetadataResponse {
    let config = &shard.shared.config;
    let include_operations = version >= 8 && request.include_topic_authorized_operations;
    // Metadata v8–10 carry the cluster's too (later versions moved it to DescribeCluster).
    let include_cluster_operations = (8..=10).contains(&version) && request.include_cluster_authorized_operations;
    let (requested, auto_create) = requested_topics(config, request, version);
    if let (Some(names), true) = (&requested, auto_create) {
        let missing: Vec<String> = names
            .iter()
            .filter(|n| shard.image.borrow().topic_by_name(n).is_none() && n.as_str() != OFFSETS_TOPIC && validate_topic_name(n).is_ok())
            // Auto-creation needs CREATE, as an explicit CreateTopics does.
            .filter(|n| session.with_access(shard, |access| access.may_create_topic(n)).unwrap_or(true))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let topics = missing
                .iter()
                .map(|name| odradek_core::controller::CreatableTopic {
                    name: name.clone(),
                    num_partitions: -1,
                    replication_factor: -1,
                    configs: Default::default(),
                    assignments: Vec::new(),
                })
                .collect();
            let request = odradek_core::controller::CreateTopicsRequest { topics, validate_only: false };
            shard.controller_request(ControllerRequest::CreateTopics(request)).await;
            wait_until_served(shard, missing).await;
        }
    }
    let image = shard.image.borrow().clone();
    let controller_id = shard.shared.controller_id.load(std::sync::atomic::Ordering::Relaxed);
    let mut response =
        broker::metadata_response(&image, requested.as_deref(), version, &shard.shared.cluster_id, controller_id, &session.listener.name);
    session.with_access(shard, |access| authz::filter_metadata(&mut response, requested.is_none(), access));
    if include_cluster_operations {
        response.cluster_authorized_operations = session
            .with_access(shard, |access| authz::cluster_authorized_operations(Some(access)))
            .unwrap_or_else(|| authz::cluster_authorized_operations(None));
    }
    if include_operations {
        for topic in response.topics.iter_mut().filter(|t| t.error_code == 0) {
            let name = topic.name.as_ref().map_or("", |n| n.as_str());
            topic.topic_authorized_operations = session
                .with_access(shard, |access| authz::topic_authorized_operations(Some(access), name))
                .unwrap_or_else(|| authz::topic_authorized_operations(None, name));
        }
    }
    response
}

/// Waits (briefly) until new topics are served: in this core's metadata image, and every
/// partition this node leads open and leading on its core. A committed topic reaches every
/// node's image, and then its replicas, a moment after the controller answers; clients that
/// produce right after creating a topic (as most tools do) should not meet that window.
async fn wait_until_served(shard: &Rc<Shard>, topics: Vec<String>) {
    for _ in 0..100 {
        let in_image = topics.iter().all(|n| shard.image.borrow().topic_by_name(n).is_some());
        if in_image && crate::cluster::Broker::every_core_serves(shard.clone(), topics.clone()).await {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// CreateTopics: forwarded to the active controller, which validates, places replicas and
/// commits the topic to the metadata log; answered once every core serves the new topics.
async fn create_topics(shard: &Rc<Shard>, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let answer = match shard.controller_request(ControllerRequest::CreateTopics(admin::create_topics_request(&request))).await {
        Some(ControllerResponse::CreateTopics(results)) => Some(results),
        _ => None,
    };
    let response = admin::create_topics_response(&request, version, answer, &shard.broker_layers(&shard.image.borrow()));
    if !request.validate_only {
        let created: Vec<String> = response.topics.iter().filter(|r| r.error_code == 0).map(|r| r.name.0.to_string()).collect();
        wait_until_served(shard, created).await;
    }
    response
}

/// CreatePartitions: forwarded to the active controller, which places the new partitions and
/// commits them; answered once every core serves them, so a producer that refreshes its
/// metadata right after can use them.
async fn create_partitions(shard: &Rc<Shard>, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let answer = match shard.controller_request(ControllerRequest::CreatePartitions(admin::create_partitions_request(&request))).await {
        Some(ControllerResponse::CreatePartitions(results)) => Some(results),
        _ => None,
    };
    let response = admin::create_partitions_response(&request, answer);
    if !request.validate_only {
        let grown: Vec<(String, usize)> = response
            .results
            .iter()
            .zip(&request.topics)
            .filter(|(r, _)| r.error_code == 0)
            .map(|(r, t)| (r.name.0.to_string(), t.count.max(0) as usize))
            .collect();
        for _ in 0..100 {
            let image = shard.image.borrow().clone();
            if grown.iter().all(|(n, count)| image.topic_by_name(n).is_none_or(|t| t.partitions.len() >= *count)) {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        wait_until_served(shard, grown.into_iter().map(|(n, _)| n).collect()).await;
    }
    response
}

async fn delete_topics(shard: &Rc<Shard>, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let names = admin::delete_topics_names(&shard.image.borrow(), request, version);
    let answer = match shard.controller_request(ControllerRequest::DeleteTopics(admin::deletable(&names))).await {
        Some(ControllerResponse::DeleteTopics(results)) => Some(results),
        _ => None,
    };
    admin::delete_topics_response(names, version, answer)
}


/// DescribeConfigs: topics from this core's table, this broker from its settings and the
/// dynamic ones in the image (core's `broker::configs`).
fn describe_configs(shard: &Rc<Shard>, request: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let layers = shard.broker_layers(&shard.image.borrow());
    let settings = static_broker_settings(shard);
    let settings: Vec<(&str, String)> = settings.iter().map(|(k, v)| (*k, v.clone())).collect();
    broker::configs::describe_configs(
        &request,
        version,
        &shard.topics.borrow(),
        &layers,
        odradek_core::ids::NodeId(shard.shared.config.node_id),
        &settings,
    )
}

/// The broker settings read once at start that tools commonly ask for; the topic defaults
/// (`log.retention.ms`...) are listed with their layers by core.
fn static_broker_settings(shard: &Shard) -> Vec<(&'static str, String)> {
    let c = &shard.shared.config;
    vec![
        ("node.id", c.node_id.to_string()),
        ("num.partitions", c.num_partitions.to_string()),
        ("auto.create.topics.enable", c.auto_create_topics.to_string()),
        ("log.dirs", c.log_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(",")),
        ("socket.request.max.bytes", c.max_request_bytes.to_string()),
        ("connections.max.idle.ms", c.connections_max_idle_ms.to_string()),
        ("max.connections", c.max_connections.to_string()),
        ("max.connections.per.ip", c.max_connections_per_ip.to_string()),
        ("log.retention.check.interval.ms", c.retention_check_interval_ms.to_string()),
        ("default.replication.factor", c.default_replication_factor.to_string()),
        ("replica.lag.time.max.ms", c.replica_lag_time_max_ms.to_string()),
        ("broker.session.timeout.ms", c.broker_session_timeout_ms.to_string()),
    ]
}

/// IncrementalAlterConfigs and AlterConfigs: each resource checked here, the rest forwarded to
/// the active controller, which commits them; the answer waits (briefly) until this core's
/// image shows them, so a DescribeConfigs right after sees the change.
async fn alter_configs(
    shard: &Rc<Shard>,
    alterations: &[Result<odradek_core::controller::ConfigAlteration, broker::configs::Refused>],
    validate_only: bool,
) -> Option<Vec<Option<odradek_core::controller::ControllerError>>> {
    let Some(request) = broker::configs::controller_request(alterations, validate_only) else { return Some(Vec::new()) };
    let answer = match shard.controller_request(ControllerRequest::AlterConfigs(request)).await {
        Some(ControllerResponse::AlterConfigs(results)) => results,
        _ => return None,
    };
    if !validate_only && answer.iter().all(Option::is_none) {
        for _ in 0..100 {
            if broker::configs::alterations_applied(&shard.image.borrow(), alterations) {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }
    Some(answer)
}

// ---- Idempotent producers ----

/// InitProducerId without a transactional id: a fresh producer id from this broker's block
/// (core 0 holds it and asks the controller for the next one).
async fn init_producer_id(shard: &Rc<Shard>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    if let Some(refused) = producer_ids::init_refusal(&request) {
        return refused;
    }
    let id = shard
        .on_shard(ShardId(0), |core0| async move {
            let node = core0.node.borrow().clone().ok_or(ErrorCode::CoordinatorNotAvailable)?;
            node.next_producer_id().await
        })
        .await;
    producer_ids::init_answer(id)
}

// ---- Produce, Fetch, ListOffsets: partition work on the owning cores ----

async fn fetch(shard: &Rc<Shard>, request: FetchRequest, version: i16) -> FetchResponse {
    let call = match FetchCall::new(&request, version, now_ms(), shard.shared.shard_count) {
        Ok(call) => call,
        Err(refused) => return refused,
    };
    let wait = shard.fetch_wait();
    loop {
        // Parked before reading, so news between the read and the wait is not missed.
        let woken = shard.park(wait, call.watched(), call.deadline_ms());
        let answers = call.merge(shard.scatter_groups(call.groups(), Shard::fetch_partitions).await);
        if call.complete(&answers, now_ms()) {
            shard.unpark(wait);
            return call.answer(answers);
        }
        // News of one of these partitions, or the deadline, then read again.
        let _ = woken.await;
    }
}

async fn list_offsets(shard: &Rc<Shard>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let (call, parts) = ListOffsetsCall::new(&request, version, shard.shared.shard_count);
    call.answer(shard.scatter(parts, Shard::list_offsets_partition).await)
}

/// OffsetForLeaderEpoch v2–4 (KIP-320): consumers validate their position after a leader
/// change. Every partition is answered by its owning core.
async fn offset_for_leader_epoch(shard: &Rc<Shard>, request: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let (call, parts) = EpochEndCall::new(&request, shard.shared.shard_count);
    call.answer(shard.scatter(parts, Shard::offset_for_leader_epoch_partition).await)
}

/// DeleteRecords: each partition's leader moves its log start up, answered once recorded there.
async fn delete_records(shard: &Rc<Shard>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let (call, parts) = DeleteRecordsCall::new(&request, shard.shared.shard_count);
    call.answer(shard.scatter(parts, Shard::delete_records_partition).await)
}

// ---- SCRAM credentials (KIP-554) ----

/// AlterUserScramCredentials: forwarded to the active controller, which commits the accepted
/// credentials to the metadata log. Answered once this core's image shows them (briefly
/// waited for), so a DescribeUserScramCredentials to this broker right after sees them.
async fn alter_user_scram_credentials(shard: &Rc<Shard>, request: AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse {
    let answer = match admin::alter_user_scram_credentials_request(&request) {
        Ok(forwarded) => {
            let answer = match shard.controller_request(ControllerRequest::AlterUserScramCredentials(forwarded.clone())).await {
                Some(ControllerResponse::AlterUserScramCredentials(results)) => Some(results),
                _ => None,
            };
            if let Some(results) = &answer {
                for _ in 0..100 {
                    if admin::scram_alterations_applied(&shard.image.borrow(), &forwarded, results) {
                        break;
                    }
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
            answer
        }
        Err(refused) => Some(refused),
    };
    admin::alter_user_scram_credentials_response(&request, answer)
}

// ---- ACLs (KIP-140) ----

/// Kafka refuses the ACL APIs with SECURITY_DISABLED on a broker without an authorizer: the
/// ACLs would be stored but never enforced.
fn authorizer_configured(shard: &Shard) -> bool {
    shard.shared.config.authorizer.is_some()
}

/// Waits (briefly) until this core's image shows what the controller committed, so that a
/// DescribeAcls to this broker right after a CreateAcls or DeleteAcls sees it.
async fn wait_for_acls(shard: &Rc<Shard>, created: &[&odradek_core::acl::AclBinding], deleted: &[&odradek_core::acl::AclBinding]) {
    for _ in 0..100 {
        if broker::acls::acl_changes_applied(shard.image.borrow().acls(), created, deleted) {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// CreateAcls: each binding checked here, the valid ones forwarded to the active controller,
/// which commits the new ones to the metadata log.
async fn create_acls(shard: &Rc<Shard>, request: CreateAclsRequest) -> CreateAclsResponse {
    if !authorizer_configured(shard) {
        return broker::acls::create_acls_refused(&request, ErrorCode::SecurityDisabled, broker::acls::NO_AUTHORIZER);
    }
    let bindings = broker::acls::create_acls_bindings(&request);
    let valid: Vec<_> = bindings.iter().filter_map(|b| b.as_ref().ok().cloned()).collect();
    let answer = if valid.is_empty() {
        Some(Vec::new())
    } else {
        match shard.controller_request(ControllerRequest::CreateAcls(valid)).await {
            Some(ControllerResponse::CreateAcls(results)) => Some(results),
            _ => None,
        }
    };
    if let Some(results) = &answer {
        wait_for_acls(shard, &broker::acls::created_bindings(&bindings, results), &[]).await;
    }
    broker::acls::create_acls_response(&bindings, answer)
}

/// DescribeAcls, from this node's metadata image.
fn describe_acls(shard: &Rc<Shard>, request: &DescribeAclsRequest) -> DescribeAclsResponse {
    if !authorizer_configured(shard) {
        return broker::acls::describe_acls_refused(ErrorCode::SecurityDisabled, broker::acls::NO_AUTHORIZER);
    }
    broker::acls::describe_acls(shard.image.borrow().acls(), request)
}

/// DeleteAcls: each filter checked here, the valid ones forwarded to the active controller,
/// which removes every binding they match in one metadata-log entry.
async fn delete_acls(shard: &Rc<Shard>, request: DeleteAclsRequest) -> DeleteAclsResponse {
    if !authorizer_configured(shard) {
        return broker::acls::delete_acls_refused(&request, ErrorCode::SecurityDisabled, broker::acls::NO_AUTHORIZER);
    }
    let filters = broker::acls::delete_acls_filters(&request);
    let valid: Vec<_> = filters.iter().filter_map(|f| f.as_ref().ok().cloned()).collect();
    let answer = if valid.is_empty() {
        Some(Vec::new())
    } else {
        match shard.controller_request(ControllerRequest::DeleteAcls(valid)).await {
            Some(ControllerResponse::DeleteAcls(results)) => Some(results),
            _ => None,
        }
    };
    if let Some(results) = &answer {
        let deleted: Vec<_> = results.iter().flat_map(|r| &r.deleted).collect();
        wait_for_acls(shard, &[], &deleted).await;
    }
    broker::acls::delete_acls_response(&filters, answer)
}

// ---- DescribeCluster (KIP-700), DescribeLogDirs (KIP-113) ----

/// DescribeCluster v1's endpoint types (KIP-919): a broker answers for brokers only.
const BROKER_ENDPOINTS: i8 = 1;
const CONTROLLER_ENDPOINTS: i8 = 2;

/// DescribeCluster: the brokers Metadata lists on the listener the request came in on, the
/// cluster id and controller, and on request what the principal may do to the cluster.
fn describe_cluster(shard: &Rc<Shard>, request: DescribeClusterRequest, version: i16, session: &Session) -> DescribeClusterResponse {
    // Kafka's `computeDescribeClusterResponse`: v0 cannot name a type, so it is always brokers.
    let refusal = match request.endpoint_type {
        BROKER_ENDPOINTS => None,
        CONTROLLER_ENDPOINTS => Some((
            ErrorCode::MismatchedEndpointType,
            "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER".to_owned(),
        )),
        other => Some((ErrorCode::UnsupportedEndpointType, format!("Unsupported endpoint type {other}"))),
    };
    let response = DescribeClusterResponse::default().with_endpoint_type(BROKER_ENDPOINTS);
    if let Some((error, message)) = refusal {
        return response.with_error_code(error.code()).with_error_message(Some(s(message)));
    }
    let controller_id = shard.shared.controller_id.load(std::sync::atomic::Ordering::Relaxed);
    // Metadata's broker list, so that both APIs name the same brokers at the same addresses.
    let metadata =
        broker::metadata_response(&shard.image.borrow(), Some(&[]), version, &shard.shared.cluster_id, controller_id, &session.listener.name);
    let brokers = metadata
        .brokers
        .into_iter()
        .map(|b| {
            describe_cluster_response::DescribeClusterBroker::default()
                .with_broker_id(b.node_id)
                .with_host(b.host)
                .with_port(b.port)
                .with_rack(b.rack)
        })
        .collect();
    let authorized_operations = match request.include_cluster_authorized_operations {
        true => session
            .with_access(shard, |access| authz::cluster_authorized_operations(Some(access)))
            .unwrap_or_else(|| authz::cluster_authorized_operations(None)),
        false => i32::MIN,
    };
    response
        .with_cluster_id(s(shard.shared.cluster_id.clone()))
        .with_controller_id(controller_id.into())
        .with_brokers(brokers)
        .with_cluster_authorized_operations(authorized_operations)
}

/// DescribeLogDirs: each of this broker's log dirs (`log.dirs`) and, per partition it holds a
/// replica of there, the bytes of its segment files; an offline dir answers
/// KAFKA_STORAGE_ERROR with no partitions, as Kafka's does. A follower's lag is not tracked
/// per partition here: offset_lag is 0, as Kafka reports for every replica that is not a
/// future one.
async fn describe_log_dirs(shard: &Rc<Shard>, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let config = &shard.shared.config;
    let node = odradek_core::ids::NodeId(config.node_id);
    // Null asks for every partition; a list only for those it names (Kafka's
    // `isAllTopicPartitions`).
    let wanted: Option<std::collections::BTreeSet<(String, i32)>> = request
        .topics
        .map(|topics| topics.iter().flat_map(|t| t.partitions.iter().map(|&p| (t.topic.to_string(), p))).collect());
    let hosted: std::collections::BTreeSet<(String, i32)> = shard
        .image
        .borrow()
        .topics()
        .values()
        .flat_map(|topic| {
            let held = topic.partitions.iter().enumerate().filter(|(_, state)| state.replicas.contains(&node));
            held.map(|(p, _)| (topic.name.clone(), p as i32)).collect::<Vec<_>>()
        })
        .filter(|tp| wanted.as_ref().is_none_or(|wanted| wanted.contains(tp)))
        .collect();
    let dirs: Vec<_> = shard
        .shared
        .log_dirs
        .describe()
        .into_iter()
        .map(|(path, offline, held)| (path, offline, held.into_iter().filter(|tp| hosted.contains(tp)).collect::<Vec<_>>()))
        .collect();
    let described = crate::storage::off_reactor(move || {
        dirs.into_iter().map(|(path, offline, held)| (offline, log_dir_sizes(&path, held))).collect::<Vec<_>>()
    })
    .await;
    let results = described
        .into_iter()
        .map(|(offline, (log_dir, sizes))| {
            let result = describe_log_dirs_response::DescribeLogDirsResult::default()
                .with_log_dir(s(log_dir.clone()))
                // No statvfs without unsafe code or another dependency: -1 is Kafka's "not known".
                .with_total_bytes(-1)
                .with_usable_bytes(-1);
            match (offline, sizes) {
                (Some(_), _) => result.with_error_code(ErrorCode::KafkaStorageError.code()),
                (None, Err(e)) => {
                    tracing::warn!(dir = %log_dir, error = %e, "DescribeLogDirs could not read the log dir");
                    result.with_error_code(ErrorCode::KafkaStorageError.code())
                }
                (None, Ok(sizes)) => {
                    let mut topics: std::collections::BTreeMap<String, Vec<describe_log_dirs_response::DescribeLogDirsPartition>> =
                        std::collections::BTreeMap::new();
                    for ((topic, partition), size) in sizes {
                        topics.entry(topic).or_default().push(
                            describe_log_dirs_response::DescribeLogDirsPartition::default()
                                .with_partition_index(partition)
                                .with_partition_size(size as i64)
                                .with_offset_lag(0)
                                .with_is_future_key(false),
                        );
                    }
                    result.with_topics(
                        topics
                            .into_iter()
                            .map(|(name, partitions)| {
                                describe_log_dirs_response::DescribeLogDirsTopic::default()
                                    .with_name(TopicName(s(name)))
                                    .with_partitions(partitions)
                            })
                            .collect(),
                    )
                }
            }
        })
        .collect();
    DescribeLogDirsResponse::default().with_results(results)
}

/// Bytes on disk per (topic, partition).
type PartitionSizes = std::collections::BTreeMap<(String, i32), u64>;

/// The log dir's absolute path, and the bytes of the `.log` segment files of each partition
/// whose directory exists (a replica not opened yet has none, and Kafka would not list it).
/// Blocking file-system calls: run off the reactor.
fn log_dir_sizes(data_dir: &std::path::Path, partitions: Vec<(String, i32)>) -> (String, std::io::Result<PartitionSizes>) {
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let sizes = std::fs::metadata(&path).and_then(|_| {
        let mut sizes = std::collections::BTreeMap::new();
        for (topic, partition) in partitions {
            let Ok(entries) = std::fs::read_dir(path.join(format!("{topic}-{partition}"))) else { continue };
            let mut bytes = 0;
            for entry in entries {
                let entry = entry?;
                // Segments only: `.log.cleaned` and `.log.swap` are a compaction pass's copies.
                if entry.file_name().to_string_lossy().ends_with(".log") {
                    bytes += entry.metadata()?.len();
                }
            }
            sizes.insert((topic, partition), bytes);
        }
        Ok(sizes)
    });
    (path.display().to_string(), sizes)
}
