//! Kafka API handlers: decode a request, split its partitions per owning core, run the work
//! there, merge the answers back in the client's order, encode the response.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::produce_response::TopicProduceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use odradek_core::fetcher::TopicPartition;
use odradek_core::broker::{self, admin};
use odradek_core::fetcher;
use odradek_core::controller::Response as ControllerResponse;
use odradek_core::controller_rpc::ControllerRequest;
use odradek_core::error::code;
use odradek_core::topic::validate_topic_name;
use odradek_core::wire::{self, regroup, Request, RequestError};
use odradek_core::ErrorCode;
use tracing::warn;

use crate::clock::now_ms;
use crate::groups::{self, OFFSETS_TOPIC};
use crate::shard::{EpochEndPart, FetchPart, ListOffsetsPart, ProducePart, Shard};

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Handles one request. `Ok(None)` means no response is sent (acks=0 produce).
pub async fn handle(shard: &Rc<Shard>, request: Request, peer: &str) -> Result<Option<Bytes>, RequestError> {
    let version = request.version();
    let respond = |message: &dyn EncodeAny| message.encode_framed(request.api_key, version, request.correlation_id()).map(Some);
    match request.api_key {
        ApiKey::ApiVersions => {
            let _: ApiVersionsRequest = request.decode()?;
            respond(&wire::api_versions_response(None))
        }
        ApiKey::Metadata => respond(&metadata(shard, request.decode()?, version).await),
        ApiKey::Produce => {
            let produce: ProduceRequest = request.decode()?;
            let acks = produce.acks;
            let response = self::produce(shard, produce, version).await;
            if acks == 0 { Ok(None) } else { respond(&response) }
        }
        ApiKey::Fetch => respond(&fetch(shard, request.decode()?, version).await),
        ApiKey::ListOffsets => respond(&list_offsets(shard, request.decode()?, version).await),
        ApiKey::OffsetForLeaderEpoch => respond(&offset_for_leader_epoch(shard, request.decode()?).await),
        ApiKey::CreateTopics => respond(&create_topics(shard, request.decode()?, version).await),
        ApiKey::DeleteTopics => respond(&delete_topics(shard, request.decode()?, version).await),
        ApiKey::DescribeConfigs => respond(&describe_configs(shard, request.decode()?)),
        ApiKey::FindCoordinator => respond(&groups::find_coordinator(shard, request.decode()?, version)),
        key if broker::groups::is_group_api(key) => {
            let partitions = shard.shared.config.group.offsets_topic_partitions;
            let routed = broker::groups::route(&request, peer, partitions)?;
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
async fn metadata(shard: &Rc<Shard>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let config = &shard.shared.config;
    let (requested, auto_create) = requested_topics(config, request, version);
    if let (Some(names), true) = (&requested, auto_create) {
        let missing: Vec<String> = names
            .iter()
            .filter(|n| shard.image.borrow().topic_by_name(n).is_none() && n.as_str() != OFFSETS_TOPIC && validate_topic_name(n).is_ok())
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
                })
                .collect();
            let request = odradek_core::controller::CreateTopicsRequest { topics, validate_only: false };
            shard.controller_request(ControllerRequest::CreateTopics(request)).await;
            wait_until_served(shard, missing).await;
        }
    }
    let image = shard.image.borrow().clone();
    let controller_id = shard.shared.controller_id.load(std::sync::atomic::Ordering::Relaxed);
    broker::metadata_response(&image, requested.as_deref(), version, &shard.shared.cluster_id, controller_id)
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
    let answer = match admin::create_topics_request(&request) {
        Some(forwarded) => match shard.controller_request(ControllerRequest::CreateTopics(forwarded)).await {
            Some(ControllerResponse::CreateTopics(results)) => Some(results),
            _ => None,
        },
        None => None,
    };
    let response = admin::create_topics_response(&request, version, answer, &shard.shared.config.log);
    if !request.validate_only {
        let created: Vec<String> = response.topics.iter().filter(|r| r.error_code == 0).map(|r| r.name.0.to_string()).collect();
        wait_until_served(shard, created).await;
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


fn describe_configs(shard: &Rc<Shard>, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    const TOPIC: i8 = 2;
    const BROKER: i8 = 4;
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let wanted = |key: &str| resource.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == key));
            let entries: Vec<(String, String, bool)> = match resource.resource_type {
                TOPIC => match shard.topics.borrow().get(&name) {
                    Some(topic) => topic.config.describe().into_iter().map(|(k, v, o)| (k.to_owned(), v, o)).collect(),
                    None => {
                        return result
                            .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
                            .with_error_message(Some(s(format!("topic {name:?} does not exist"))))
                    }
                },
                BROKER if name.is_empty() || name == shard.shared.config.node_id.to_string() => broker_configs(shard),
                BROKER => {
                    return result
                        .with_error_code(ErrorCode::InvalidRequest.code())
                        .with_error_message(Some(s(format!("broker {name:?} is not this broker"))))
                }
                other => {
                    return result
                        .with_error_code(ErrorCode::InvalidRequest.code())
                        .with_error_message(Some(s(format!("resource type {other} is not supported"))))
                }
            };
            result.configs = entries
                .into_iter()
                .filter(|(k, _, _)| wanted(k))
                .map(|(k, v, is_override)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                        .with_read_only(resource.resource_type == BROKER)
                        .with_config_source(if resource.resource_type == BROKER { 4 } else { admin::config_source(is_override) })
                })
                .collect();
            result
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The broker settings clients and tools commonly ask for (source 4 = STATIC_BROKER_CONFIG).
fn broker_configs(shard: &Shard) -> Vec<(String, String, bool)> {
    let c = &shard.shared.config;
    [
        ("node.id", c.node_id.to_string()),
        ("num.partitions", c.num_partitions.to_string()),
        ("auto.create.topics.enable", c.auto_create_topics.to_string()),
        ("log.dirs", c.data_dir.display().to_string()),
        ("log.retention.ms", c.log.retention_ms.to_string()),
        ("log.retention.bytes", c.log.retention_bytes.to_string()),
        ("log.segment.bytes", c.log.segment_bytes.to_string()),
        ("log.roll.ms", c.log.segment_ms.to_string()),
        ("message.max.bytes", c.log.max_message_bytes.to_string()),
        ("socket.request.max.bytes", c.max_request_bytes.to_string()),
        ("log.retention.check.interval.ms", c.retention_check_interval_ms.to_string()),
        ("default.replication.factor", c.default_replication_factor.to_string()),
        ("min.insync.replicas", c.min_insync_replicas.to_string()),
        ("replica.lag.time.max.ms", c.replica_lag_time_max_ms.to_string()),
        ("broker.session.timeout.ms", c.broker_session_timeout_ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v, false))
    .collect()
}

// ---- Produce, Fetch, ListOffsets: partition work on the owning cores ----

async fn produce(shard: &Rc<Shard>, request: ProduceRequest, version: i16) -> ProduceResponse {
    let acks = request.acks;
    let refuse = broker::produce_refusal(&request);
    let mut shape: Vec<(TopicName, Vec<i32>)> = Vec::new();
    let mut items = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        shape.push((topic.name.clone(), topic.partition_data.iter().map(|p| p.index).collect()));
        for p in topic.partition_data {
            let part = ProducePart {
                topic: name.clone(),
                partition: p.index,
                records: p.records,
                acks,
                timeout_ms: request.timeout_ms,
            };
            items.push((shard.owner(&name, p.index), part));
        }
    }
    let results = match refuse {
        Some(error) => {
            warn!(acks, ?error, "refused produce");
            (0..items.len()).map(|_| broker::produce_partition(Err(error), version)).collect()
        }
        None => shard
            .scatter(items, Shard::produce_partition)
            .await
            .into_iter()
            .map(|r| broker::produce_partition(r, version))
            .collect::<Vec<_>>(),
    };
    let responses = regroup(shape, results, |index, r| r.with_index(index), |name, partitions| {
        TopicProduceResponse::default().with_name(name).with_partition_responses(partitions)
    });
    ProduceResponse::default().with_responses(responses)
}

async fn fetch(shard: &Rc<Shard>, request: FetchRequest, version: i16) -> FetchResponse {
    if request.session_id != 0 {
        // odradek creates no fetch sessions (KIP-227), so a client can only name one it
        // invented; it falls back to full fetches on this error.
        return FetchResponse::default().with_error_code(ErrorCode::FetchSessionIdNotFound.code());
    }
    let deadline_ms = now_ms() + i64::from(request.max_wait_ms.max(0));
    // Kafka answers at once when min_bytes is 0, and otherwise waits for at least one byte.
    let min_bytes = request.min_bytes.max(0) as usize;
    let shape: Vec<(TopicName, Vec<i32>)> =
        request.topics.iter().map(|t| (t.topic.clone(), t.partitions.iter().map(|p| p.partition).collect())).collect();
    let parts: Vec<FetchPart> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| FetchPart {
                topic: t.topic.0.to_string(),
                partition: p.partition,
                request: fetcher::partition_request(&request, version, p),
            })
        })
        .collect();
    let watched: Vec<TopicPartition> = parts.iter().map(|p| TopicPartition::new(p.topic.clone(), p.partition)).collect();
    let mut results = loop {
        // Parked before reading, so news between the read and the wait is not missed.
        let (wait, woken) = shard.park(watched.clone(), deadline_ms);
        let items = parts.iter().map(|part| {
            let part = FetchPart { topic: part.topic.clone(), partition: part.partition, request: part.request };
            (shard.owner(&part.topic, part.partition), part)
        });
        let results = shard.scatter(items.collect(), Shard::fetch_partition).await;
        if broker::fetch_complete(&results, min_bytes, now_ms(), deadline_ms) {
            shard.unpark(wait);
            break results;
        }
        // News of one of these partitions, or the deadline, then read again.
        let _ = woken.await;
    };
    broker::fit_fetch_budget(&mut results, request.max_bytes);
    let responses = regroup(
        shape,
        results,
        |index, r| fetcher::partition_data(index, version, r),
        |name, partitions| FetchableTopicResponse::default().with_topic(name).with_partitions(partitions),
    );
    FetchResponse::default().with_responses(responses)
}

async fn list_offsets(shard: &Rc<Shard>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let shape: Vec<(TopicName, Vec<i32>)> =
        request.topics.iter().map(|t| (t.name.clone(), t.partitions.iter().map(|p| p.partition_index).collect())).collect();
    let items: Vec<_> = request
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions.iter().map(move |p| {
                let part = ListOffsetsPart { topic: name.clone(), partition: p.partition_index, timestamp: p.timestamp };
                (part.topic.clone(), part)
            })
        })
        .map(|(topic, part)| (shard.owner(&topic, part.partition), part))
        .collect();
    let results = shard.scatter(items, Shard::list_offsets_partition).await;
    let topics = regroup(
        shape,
        results,
        |index, r| {
            ListOffsetsPartitionResponse::default()
                .with_partition_index(index)
                .with_error_code(code(r.error))
                .with_offset(r.offset)
                .with_timestamp(r.timestamp)
                .with_leader_epoch(if r.offset >= 0 && version >= 4 { r.leader_epoch.max(0) } else { -1 })
        },
        |name, partitions| ListOffsetsTopicResponse::default().with_name(name).with_partitions(partitions),
    );
    ListOffsetsResponse::default().with_topics(topics)
}

/// OffsetForLeaderEpoch v2–4 (KIP-320): consumers validate their position after a leader
/// change, and a follower could ask where its last epoch ends. Every partition is answered by
/// its owning core. `replica_id` (v3+) is not needed: Kafka lets only its debugging id (-2)
/// read a follower's cache, and odradek always answers from the leader.
async fn offset_for_leader_epoch(shard: &Rc<Shard>, request: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
    let shape: Vec<(TopicName, Vec<i32>)> =
        request.topics.iter().map(|t| (t.topic.clone(), t.partitions.iter().map(|p| p.partition).collect())).collect();
    let items: Vec<_> = request
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.topic.0.to_string();
            t.partitions.iter().map(move |p| EpochEndPart {
                topic: name.clone(),
                partition: p.partition,
                current_leader_epoch: p.current_leader_epoch,
                leader_epoch: p.leader_epoch,
            })
        })
        .map(|part| (shard.owner(&part.topic, part.partition), part))
        .collect();
    let results = shard.scatter(items, Shard::offset_for_leader_epoch_partition).await;
    let topics = regroup(
        shape,
        results,
        |index, r| {
            EpochEndOffset::default()
                .with_partition(index)
                .with_error_code(code(r.error))
                .with_leader_epoch(r.leader_epoch)
                .with_end_offset(r.end_offset)
        },
        |name, partitions| OffsetForLeaderTopicResult::default().with_topic(name).with_partitions(partitions),
    );
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

