//! Topic administration as the broker answers it: a decoded CreateTopics or DeleteTopics
//! request becomes the active controller's request, and the controller's answer becomes the
//! Kafka response. The executor carries the request to the controller, waits, and (for a
//! creation) waits until the new topics are served before it answers.

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::controller::{self, CreateTopicResult, DeleteTopicResult, MetadataImage};
use crate::error::{code, ErrorCode};
use crate::group::OFFSETS_TOPIC;
use crate::log::LogConfig;
use crate::topic::TopicConfig;

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Kafka's `ConfigSource` of a topic config: set on the topic, or the broker's default.
pub fn config_source(is_override: bool) -> i8 {
    if is_override {
        1
    } else {
        5
    }
}

/// Every config of `config`, with its source, as CreateTopics v5+ and DescribeConfigs list them.
pub fn describe_topic_configs(config: &TopicConfig) -> Vec<CreatableTopicConfigs> {
    config
        .describe()
        .into_iter()
        .map(|(name, value, is_override)| {
            CreatableTopicConfigs::default()
                .with_name(s(name))
                .with_value(Some(s(value)))
                .with_config_source(config_source(is_override))
        })
        .collect()
}

fn requested_configs(topic: &kafka_protocol::messages::create_topics_request::CreatableTopic) -> std::collections::BTreeMap<String, String> {
    topic.configs.iter().map(|c| (c.name.to_string(), c.value.as_deref().unwrap_or_default().to_owned())).collect()
}

fn asks_for_assignments(request: &CreateTopicsRequest) -> bool {
    request.topics.iter().any(|t| !t.assignments.is_empty())
}

/// The controller's CreateTopics for `request`, or `None` when it asks for manual replica
/// assignments, which odradek does not support (every topic then fails with
/// INVALID_REPLICA_ASSIGNMENT, see [`create_topics_response`]).
pub fn create_topics_request(request: &CreateTopicsRequest) -> Option<controller::CreateTopicsRequest> {
    if asks_for_assignments(request) {
        return None;
    }
    let topics = request
        .topics
        .iter()
        .map(|t| controller::CreatableTopic {
            name: t.name.0.to_string(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            configs: requested_configs(t),
        })
        .collect();
    Some(controller::CreateTopicsRequest { topics, validate_only: request.validate_only })
}

/// The Kafka response to `request` of `version`, from the controller's `answer` (`None`: the
/// request was not forwarded, or no controller answered). `log` holds the broker's defaults,
/// which v5+ report with each created topic's configs.
pub fn create_topics_response(
    request: &CreateTopicsRequest,
    version: i16,
    answer: Option<Vec<CreateTopicResult>>,
    log: &LogConfig,
) -> CreateTopicsResponse {
    let results = match answer {
        Some(results) => results
            .into_iter()
            .map(|r| match r.error {
                Some(e) => failed_topic(r.name, e.code(), e.to_string()),
                None => {
                    let mut result = CreatableTopicResult::default().with_name(s(r.name.clone()).into());
                    if version >= 5 {
                        let configs = request.topics.iter().find(|t| t.name.0.as_str() == r.name).map(requested_configs);
                        let described =
                            TopicConfig::new(log, configs.unwrap_or_default()).map(|c| describe_topic_configs(&c)).unwrap_or_default();
                        result = result
                            .with_num_partitions(r.num_partitions)
                            .with_replication_factor(r.replication_factor)
                            .with_configs(Some(described));
                    }
                    if version >= 7 {
                        result = result.with_topic_id(uuid::Uuid::from_bytes(r.topic_id));
                    }
                    result
                }
            })
            .collect(),
        None => {
            let unassignable = asks_for_assignments(request);
            request
                .topics
                .iter()
                .map(|t| {
                    let (error, message) = if unassignable {
                        (ErrorCode::InvalidReplicaAssignment, "manual replica assignment is not supported yet")
                    } else {
                        (ErrorCode::RequestTimedOut, "no active controller answered")
                    };
                    failed_topic(t.name.0.to_string(), error, message.into())
                })
                .collect()
        }
    };
    CreateTopicsResponse::default().with_topics(results)
}

fn failed_topic(name: String, error: ErrorCode, message: String) -> CreatableTopicResult {
    tracing::debug!(topic = %name, %message, "create topic refused");
    CreatableTopicResult::default().with_name(s(name).into()).with_error_code(error.code()).with_error_message(Some(s(message)))
}

/// The topics a DeleteTopics request of `version` names, in order: by name, or (v6+) by id
/// looked up in `image` (`None`: an id no topic has).
pub fn delete_topics_names(image: &MetadataImage, request: DeleteTopicsRequest, version: i16) -> Vec<Option<String>> {
    if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| {
                t.name.map(|n| n.0.to_string()).or_else(|| {
                    image.topics().values().find(|i| i.id == *t.topic_id.as_bytes()).map(|i| i.name.clone())
                })
            })
            .collect()
    } else {
        request.topic_names.into_iter().map(|n| Some(n.0.to_string())).collect()
    }
}

/// What the controller is asked to delete: the named topics but `__consumer_offsets`, whose
/// records are the groups (it cannot be deleted, as in Kafka).
pub fn deletable(names: &[Option<String>]) -> Vec<String> {
    names.iter().flatten().filter(|n| n.as_str() != OFFSETS_TOPIC).cloned().collect()
}

/// The Kafka response for `names` ([`delete_topics_names`]) from the controller's `answer`
/// (`None`: no controller answered, REQUEST_TIMED_OUT for each).
pub fn delete_topics_response(names: Vec<Option<String>>, version: i16, answer: Option<Vec<DeleteTopicResult>>) -> DeleteTopicsResponse {
    let results = answer.unwrap_or_default();
    let responses = names
        .into_iter()
        .map(|name| match name {
            None => DeletableTopicResult::default().with_error_code(ErrorCode::UnknownTopicId.code()),
            Some(name) => {
                let found = results.iter().find(|r| r.name == name);
                let error = match found {
                    _ if name == OFFSETS_TOPIC => Some(ErrorCode::InvalidTopicException),
                    Some(r) => r.error.as_ref().map(|e| e.code()),
                    None => Some(ErrorCode::RequestTimedOut),
                };
                let topic_id = match found {
                    Some(r) if version >= 6 => uuid::Uuid::from_bytes(r.topic_id),
                    _ => uuid::Uuid::nil(),
                };
                DeletableTopicResult::default().with_name(Some(s(name).into())).with_topic_id(topic_id).with_error_code(code(error))
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TopicName;

    #[test]
    fn deleting_the_offsets_topic_is_refused_and_unknown_ids_are_reported() {
        let request = DeleteTopicsRequest::default().with_topic_names(vec![
            TopicName(s("t")),
            TopicName(s(OFFSETS_TOPIC)),
        ]);
        let names = delete_topics_names(&MetadataImage::default(), request, 5);
        assert_eq!(deletable(&names), vec!["t".to_owned()]);
        let answer = vec![DeleteTopicResult { name: "t".into(), error: None, topic_id: [7; 16] }];
        let response = delete_topics_response(names, 5, Some(answer));
        let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![0, ErrorCode::InvalidTopicException.code()]);
        let timed_out = delete_topics_response(vec![Some("t".into()), None], 6, None);
        let codes: Vec<i16> = timed_out.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![ErrorCode::RequestTimedOut.code(), ErrorCode::UnknownTopicId.code()]);
    }

    #[test]
    fn manual_assignments_are_refused_before_the_controller() {
        use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
        let topic = CreatableTopic::default()
            .with_name(TopicName(s("t")))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![CreatableReplicaAssignment::default().with_partition_index(0)]);
        let request = CreateTopicsRequest::default().with_topics(vec![topic]);
        assert!(create_topics_request(&request).is_none());
        let response = create_topics_response(&request, 7, None, &LogConfig::default());
        assert_eq!(response.topics[0].error_code, ErrorCode::InvalidReplicaAssignment.code());
    }
}
