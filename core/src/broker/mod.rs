//! The parts of answering clients that need no IO, shared by the broker's handlers (`io/`)
//! and the simulator's nodes, so both give clients the same Kafka responses: Metadata from
//! the committed image, the refusals a Produce gets before any partition sees it, and a
//! partition's Produce answer. (A Fetch partition's answer is `fetcher::partition_data`.)

use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::produce_response::{BatchIndexAndErrorMessage, PartitionProduceResponse};
use kafka_protocol::messages::{BrokerId, MetadataResponse, ProduceRequest};
use kafka_protocol::protocol::StrBytes;

pub mod acls;
pub mod admin;
pub mod authz;
pub mod configs;
pub mod groups;
pub mod partitions;
pub mod producer_ids;
pub mod quotas;
pub mod txn;
mod shard;

pub use shard::{ImagePlan, Opening, Output, Shard};

use crate::controller::MetadataImage;
use crate::error::ErrorCode;
use crate::group::OFFSETS_TOPIC;
use crate::ids::NodeId;
use crate::replica::{FetchResponse, ProduceAck};
use crate::topic::validate_topic_name;
use crate::validate::Refusal;

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

fn broker_id(id: NodeId) -> BrokerId {
    id.0.into()
}

/// A Metadata answer of `version` from `image`: every unfenced broker with its first
/// endpoint, and the requested topics (`None`: all) with each partition's committed leader,
/// leader epoch (v7+), replicas and ISR. A partition without a leader has
/// LEADER_NOT_AVAILABLE; an unknown topic UNKNOWN_TOPIC_OR_PARTITION, or the name's
/// validation error.
pub fn metadata_response(
    image: &MetadataImage,
    requested: Option<&[String]>,
    version: i16,
    cluster_id: &str,
    controller_id: i32,
    listener: &str,
) -> MetadataResponse {
    let topics = match requested {
        None => image.topics().values().map(|t| describe_topic(image, &t.name, version)).collect(),
        Some(names) => names.iter().map(|n| describe_topic(image, n, version)).collect(),
    };
    let brokers = image
        .brokers()
        .values()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let e = b.endpoint(listener)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(broker_id(b.broker_id))
                    .with_host(s(e.host.clone()))
                    .with_port(i32::from(e.port))
                    .with_rack(b.rack.as_deref().map(s)),
            )
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id((version >= 2).then(|| s(cluster_id)))
        .with_controller_id(if version >= 1 { controller_id.into() } else { (-1).into() })
        .with_topics(topics)
}

fn describe_topic(image: &MetadataImage, name: &str, version: i16) -> MetadataResponseTopic {
    let Some(topic) = image.topic_by_name(name) else { return unknown_topic(name) };
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(p, state)| {
            let leaderless = state.leader == NodeId::NONE;
            MetadataResponsePartition::default()
                .with_error_code(if leaderless { ErrorCode::LeaderNotAvailable.code() } else { 0 })
                .with_partition_index(p as i32)
                .with_leader_id(broker_id(state.leader))
                .with_leader_epoch(if version >= 7 { state.leader_epoch.0 } else { -1 })
                .with_replica_nodes(state.replicas.iter().map(|r| broker_id(*r)).collect())
                .with_isr_nodes(state.isr.iter().map(|r| broker_id(*r)).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(s(name).into()))
        .with_is_internal(version >= 1 && name == OFFSETS_TOPIC)
        .with_topic_id(uuid::Uuid::from_bytes(if version >= 10 { topic.id } else { [0; 16] }))
        .with_partitions(partitions)
}

/// A topic the image does not hold: UNKNOWN_TOPIC_OR_PARTITION, or why its name is invalid.
pub fn unknown_topic(name: &str) -> MetadataResponseTopic {
    let error = match validate_topic_name(name) {
        Ok(()) => ErrorCode::UnknownTopicOrPartition,
        Err(e) => e.code,
    };
    MetadataResponseTopic::default().with_name(Some(s(name).into())).with_error_code(error.code())
}

/// Why a whole Produce is refused before any partition sees it: `acks` other than -1, 0 or
/// 1 (INVALID_REQUIRED_ACKS), a transactional produce that does not wait for the ISR
/// (INVALID_REQUIRED_ACKS, as Kafka: a transaction's writes must be acks=all), or
/// transactional batches without a transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
/// as Kafka's `KafkaApis` answers: no coordinator could ever end what they open).
pub fn produce_refusal(request: &ProduceRequest) -> Option<ErrorCode> {
    if !matches!(request.acks, -1..=1) || (request.transactional_id.is_some() && request.acks != -1) {
        return Some(ErrorCode::InvalidRequiredAcks);
    }
    let transactional = || {
        request.topic_data.iter().flat_map(|t| &t.partition_data).filter_map(|p| p.records.as_ref()).any(|records| {
            crate::batch::scan_headers(records).any(|(_, h)| h.is_transactional())
        })
    };
    if request.transactional_id.is_none() && transactional() {
        return Some(ErrorCode::TransactionalIdAuthorizationFailed);
    }
    None
}

/// One partition's Produce answer of `version` (the index is set by the caller). A refusal's
/// message and record errors go out from v8, which has the fields.
pub fn produce_partition(result: Result<ProduceAck, Refusal>, version: i16) -> PartitionProduceResponse {
    match result {
        Ok(ack) => PartitionProduceResponse::default()
            .with_base_offset(ack.base_offset.0)
            .with_log_start_offset(if version >= 5 { ack.log_start_offset.0 } else { -1 })
            .with_log_append_time_ms(ack.log_append_time_ms.unwrap_or(-1)),
        Err(refusal) => {
            let mut response = PartitionProduceResponse::default()
                .with_error_code(refusal.code.code())
                .with_base_offset(-1)
                .with_log_start_offset(-1)
                .with_log_append_time_ms(-1);
            if version >= 8 {
                response.error_message = refusal.message.map(StrBytes::from_string);
                response.record_errors = refusal
                    .record_errors
                    .into_iter()
                    .map(|e| {
                        BatchIndexAndErrorMessage::default()
                            .with_batch_index(e.batch_index)
                            .with_batch_index_error_message(Some(StrBytes::from_string(e.message)))
                    })
                    .collect();
            }
            response
        }
    }
}

/// Whether a Fetch's long poll is over, given each partition's answer so far: Kafka answers
/// once `min_bytes` are ready (at once for 0), on any partition's error or divergence, and at
/// the request's `max_wait_ms` (`deadline_ms`).
pub fn fetch_complete(answers: &[FetchResponse], min_bytes: usize, now_ms: i64, deadline_ms: i64) -> bool {
    let bytes: usize = answers.iter().map(|a| a.records.len()).sum();
    let errors = answers.iter().any(|a| a.error.is_some() || a.diverging_epoch.is_some());
    bytes >= min_bytes || errors || now_ms >= deadline_ms
}

/// Applies a Fetch's response `max_bytes` (KIP-74) to the answers, in request order: whole
/// partitions are kept while they fit, and always the first non-empty one, so a consumer makes
/// progress; the records of the rest are dropped (those partitions come back empty).
pub fn fit_fetch_budget(answers: &mut [FetchResponse], max_bytes: i32) {
    let max = if max_bytes <= 0 { usize::MAX } else { max_bytes as usize };
    let mut budget = max;
    for answer in answers {
        if answer.records.len() <= budget || budget == max {
            budget = budget.saturating_sub(answer.records.len());
        } else {
            answer.records = bytes::Bytes::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Offset;

    #[test]
    fn unknown_and_invalid_topics_get_their_error() {
        let image = MetadataImage::default();
        let names = ["missing".to_string(), "bad/name".to_string()];
        let r = metadata_response(&image, Some(&names), 12, "c", 1, "PLAINTEXT");
        let codes: Vec<i16> = r.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(codes[0], ErrorCode::UnknownTopicOrPartition.code());
        assert_eq!(codes[1], ErrorCode::InvalidTopicException.code());
        assert_eq!(r.controller_id.0, 1);
        assert_eq!(metadata_response(&image, None, 0, "c", 1, "PLAINTEXT").controller_id.0, -1);
    }

    #[test]
    fn produce_answers_and_refusals() {
        let ack = ProduceAck { base_offset: Offset(7), log_append_time_ms: None, log_start_offset: Offset(2) };
        let ok = produce_partition(Ok(ack), 9);
        assert_eq!((ok.error_code, ok.base_offset, ok.log_start_offset, ok.log_append_time_ms), (0, 7, 2, -1));
        assert_eq!(produce_partition(Ok(ack), 4).log_start_offset, -1);
        let failed = produce_partition(Err(ErrorCode::NotLeaderOrFollower.into()), 9);
        assert_eq!((failed.error_code, failed.base_offset), (ErrorCode::NotLeaderOrFollower.code(), -1));
        assert_eq!(produce_refusal(&ProduceRequest::default().with_acks(2)), Some(ErrorCode::InvalidRequiredAcks));
        assert_eq!(produce_refusal(&ProduceRequest::default().with_acks(-1)), None);
    }
}
