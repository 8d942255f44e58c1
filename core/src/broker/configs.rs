//! Configs as the broker answers them: DescribeConfigs from the image and the broker's own
//! settings, and IncrementalAlterConfigs / AlterConfigs checked here, then forwarded to the
//! active controller as one [`AlterConfigsRequest`] (which commits them as ConfigRecords).

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest as KafkaAlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::controller::{AlterConfigsRequest, ConfigAlteration, ConfigOp, ConfigResource, ControllerError};
use crate::error::ErrorCode;
use crate::ids::NodeId;
use crate::topic::{self, BrokerLayers, Source, Synonym, TopicTable};

/// Kafka's `ConfigResource.Type` codes.
pub const TOPIC: i8 = 2;
pub const BROKER: i8 = 4;

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Why one resource of an alter request was refused before it reached the controller.
pub type Refused = (ErrorCode, String);

/// The resource a request names, or why it cannot be altered: a broker is named by its id, or
/// by the empty name for the cluster-wide default.
fn resource(resource_type: i8, name: &str) -> Result<ConfigResource, Refused> {
    match resource_type {
        TOPIC => Ok(ConfigResource::Topic(name.to_owned())),
        BROKER if name.is_empty() => Ok(ConfigResource::Broker(None)),
        BROKER => name
            .parse::<i32>()
            .map(|id| ConfigResource::Broker(Some(NodeId(id))))
            .map_err(|_| (ErrorCode::InvalidRequest, format!("broker {name:?} is not a broker id"))),
        other => Err((ErrorCode::InvalidRequest, format!("resource type {other} cannot be altered here (topics and brokers can)"))),
    }
}

/// Kafka refuses a resource named twice in one request, and a config named twice for one resource.
fn check_duplicates<'a>(seen: &mut BTreeSet<(i8, String)>, resource_type: i8, name: &str, keys: impl Iterator<Item = &'a str>) -> Result<(), Refused> {
    if !seen.insert((resource_type, name.to_owned())) {
        return Err((ErrorCode::InvalidRequest, format!("resource {name:?} is named more than once")));
    }
    let mut names = BTreeSet::new();
    for key in keys {
        if !names.insert(key) {
            return Err((ErrorCode::InvalidRequest, format!("Error due to duplicate config keys: {key}")));
        }
    }
    Ok(())
}

/// IncrementalAlterConfigs' resources, each as the controller's alteration or why not.
pub fn incremental_alterations(request: &IncrementalAlterConfigsRequest) -> Vec<Result<ConfigAlteration, Refused>> {
    let mut seen = BTreeSet::new();
    request
        .resources
        .iter()
        .map(|r| {
            check_duplicates(&mut seen, r.resource_type, r.resource_name.as_str(), r.configs.iter().map(|c| c.name.as_str()))?;
            let resource = resource(r.resource_type, r.resource_name.as_str())?;
            let changes = r
                .configs
                .iter()
                .map(|c| {
                    let name = c.name.to_string();
                    let value = || {
                        c.value.as_ref().map(|v| v.to_string()).ok_or_else(|| (ErrorCode::InvalidRequest, format!("Null value not supported for : {name}")))
                    };
                    let op = match c.config_operation {
                        0 => ConfigOp::Set(value()?),
                        1 => ConfigOp::Delete,
                        2 => ConfigOp::Append(value()?),
                        3 => ConfigOp::Subtract(value()?),
                        other => return Err((ErrorCode::InvalidRequest, format!("unknown config operation {other}"))),
                    };
                    Ok((name, op))
                })
                .collect::<Result<Vec<_>, Refused>>()?;
            Ok(ConfigAlteration { resource, changes, replace: false })
        })
        .collect()
}

/// AlterConfigs' resources: each replaces the resource's whole dynamic config (a null value
/// is left out, as Kafka's `AlterConfigs` does).
pub fn legacy_alterations(request: &KafkaAlterConfigsRequest) -> Vec<Result<ConfigAlteration, Refused>> {
    let mut seen = BTreeSet::new();
    request
        .resources
        .iter()
        .map(|r| {
            check_duplicates(&mut seen, r.resource_type, r.resource_name.as_str(), r.configs.iter().map(|c| c.name.as_str()))?;
            let resource = resource(r.resource_type, r.resource_name.as_str())?;
            let changes = r
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), ConfigOp::Set(v.to_string()))))
                .collect();
            Ok(ConfigAlteration { resource, changes, replace: true })
        })
        .collect()
}

/// The controller request for the alterations that passed, or `None` if none did.
pub fn controller_request(alterations: &[Result<ConfigAlteration, Refused>], validate_only: bool) -> Option<AlterConfigsRequest> {
    let resources: Vec<ConfigAlteration> = alterations.iter().filter_map(|a| a.as_ref().ok().cloned()).collect();
    (!resources.is_empty()).then_some(AlterConfigsRequest { resources, validate_only })
}

/// Each resource's outcome, in request order: its refusal here, else the controller's answer
/// (`None`: no controller answered).
fn outcomes(alterations: &[Result<ConfigAlteration, Refused>], answer: Option<Vec<Option<ControllerError>>>) -> Vec<Option<Refused>> {
    let mut answers = answer.map(|a| a.into_iter());
    alterations
        .iter()
        .map(|a| match a {
            Err(refused) => Some(refused.clone()),
            Ok(_) => match answers.as_mut().map(|a| a.next()) {
                Some(Some(None)) => None,
                Some(Some(Some(e))) => Some((e.code(), e.to_string())),
                Some(None) | None => Some((ErrorCode::RequestTimedOut, "no active controller answered".into())),
            },
        })
        .collect()
}

pub fn incremental_response(
    request: &IncrementalAlterConfigsRequest,
    alterations: &[Result<ConfigAlteration, Refused>],
    answer: Option<Vec<Option<ControllerError>>>,
) -> IncrementalAlterConfigsResponse {
    let responses = request
        .resources
        .iter()
        .zip(outcomes(alterations, answer))
        .map(|(r, outcome)| {
            let (error, message) = outcome.map_or((0, None), |(e, m)| (e.code(), Some(s(m))));
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

pub fn legacy_response(
    request: &KafkaAlterConfigsRequest,
    alterations: &[Result<ConfigAlteration, Refused>],
    answer: Option<Vec<Option<ControllerError>>>,
) -> AlterConfigsResponse {
    let responses = request
        .resources
        .iter()
        .zip(outcomes(alterations, answer))
        .map(|(r, outcome)| {
            let (error, message) = outcome.map_or((0, None), |(e, m)| (e.code(), Some(s(m))));
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// Whether this node's image already shows what `alterations` set and deleted (appends and
/// subtractions are not checked), so a DescribeConfigs right after the answer sees them.
pub fn alterations_applied(image: &crate::controller::MetadataImage, alterations: &[Result<ConfigAlteration, Refused>]) -> bool {
    alterations.iter().filter_map(|a| a.as_ref().ok()).all(|a| {
        let configs = match &a.resource {
            ConfigResource::Topic(name) => match image.topic_by_name(name) {
                Some(t) => &t.configs,
                None => return true,
            },
            ConfigResource::Broker(broker) => image.broker_configs(*broker),
        };
        a.changes.iter().all(|(name, op)| match op {
            ConfigOp::Set(v) => configs.get(name) == Some(v),
            ConfigOp::Delete => !configs.contains_key(name),
            ConfigOp::Append(_) | ConfigOp::Subtract(_) => true,
        })
    })
}

/// The replication throttle rates (dynamic broker configs that are no topic's default): this
/// broker's value, the cluster default, Kafka's default of `Long.MAX_VALUE`.
fn throttle_rates(layers: &BrokerLayers) -> Vec<Described> {
    use crate::replication_quota::{FOLLOWER_THROTTLED_RATE, LEADER_THROTTLED_RATE};
    [LEADER_THROTTLED_RATE, FOLLOWER_THROTTLED_RATE]
        .into_iter()
        .map(|name| {
            let mut synonyms: Vec<Synonym> = [(Source::DynamicBroker, &layers.dynamic_broker), (Source::DynamicDefault, &layers.dynamic_default)]
                .into_iter()
                .filter_map(|(source, layer)| layer.get(name).map(|v| Synonym { name: name.to_owned(), value: v.trim().to_owned(), source }))
                .collect();
            synonyms.push(Synonym { name: name.to_owned(), value: i64::MAX.to_string(), source: Source::Default });
            let first = synonyms.first().expect("the default at least");
            Described { name: name.to_owned(), value: Some(first.value.clone()), source: first.source, read_only: false, synonyms }
        })
        .collect()
}

/// One config as DescribeConfigs lists it.
struct Described {
    name: String,
    value: Option<String>,
    source: Source,
    read_only: bool,
    synonyms: Vec<Synonym>,
}

/// DescribeConfigs for this broker: topics from `topics` (their configs resolved over
/// `layers`), this broker (`node_id`, or the empty name) from `layers` and `static_settings`
/// (the read-only settings read at start).
pub fn describe_configs(
    request: &DescribeConfigsRequest,
    version: i16,
    topics: &TopicTable,
    layers: &BrokerLayers,
    node_id: NodeId,
    static_settings: &[(&str, String)],
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.as_str();
            let result = DescribeConfigsResult::default().with_resource_type(resource.resource_type).with_resource_name(resource.resource_name.clone());
            let refuse = |code: ErrorCode, message: String| result.clone().with_error_code(code.code()).with_error_message(Some(s(message)));
            let described: Vec<Described> = match resource.resource_type {
                TOPIC => match topics.get(name) {
                    Some(topic) => topic
                        .config
                        .entries()
                        .iter()
                        .map(|e| Described { name: e.name.to_owned(), value: Some(e.value.clone()), source: e.source, read_only: false, synonyms: e.synonyms.clone() })
                        .collect(),
                    None => return refuse(ErrorCode::UnknownTopicOrPartition, format!("Topic {name} does not exist")),
                },
                BROKER if name.is_empty() || name == node_id.0.to_string() => {
                    let mut described: Vec<Described> = static_settings
                        .iter()
                        .map(|(k, v)| Described {
                            name: (*k).to_owned(),
                            value: Some(v.clone()),
                            source: Source::StaticBroker,
                            read_only: true,
                            synonyms: vec![Synonym { name: (*k).to_owned(), value: v.clone(), source: Source::StaticBroker }],
                        })
                        .collect();
                    described.extend(layers.describe().into_iter().map(|(k, value, source, synonyms)| Described {
                        name: k.to_owned(),
                        value,
                        source,
                        read_only: false,
                        synonyms,
                    }));
                    described.extend(throttle_rates(layers));
                    described.sort_by(|a, b| a.name.cmp(&b.name));
                    described
                }
                BROKER => return refuse(ErrorCode::InvalidRequest, format!("broker {name:?} is not this broker; ask it")),
                other => return refuse(ErrorCode::InvalidRequest, format!("resource type {other} is not supported")),
            };
            let wanted = |key: &str| resource.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == key));
            let configs = described
                .into_iter()
                .filter(|d| wanted(&d.name))
                .map(|d| {
                    let mut entry = DescribeConfigsResourceResult::default()
                        .with_name(s(d.name.clone()))
                        .with_value(d.value.map(s))
                        .with_read_only(d.read_only)
                        .with_config_source(d.source.code());
                    if version >= 1 && request.include_synonyms {
                        entry = entry.with_synonyms(
                            d.synonyms
                                .into_iter()
                                .map(|syn| DescribeConfigsSynonym::default().with_name(s(syn.name)).with_value(Some(s(syn.value))).with_source(syn.source.code()))
                                .collect(),
                        );
                    }
                    if version >= 3 {
                        entry = entry.with_config_type(topic::config_type(&d.name));
                    }
                    entry
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};

    use super::*;
    use crate::topic::{TopicConfig, TopicMeta};

    fn alterable(name: &str, op: i8, value: Option<&str>) -> AlterableConfig {
        AlterableConfig::default().with_name(s(name)).with_config_operation(op).with_value(value.map(s))
    }

    #[test]
    fn incremental_requests_become_controller_alterations_or_refusals() {
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default().with_resource_type(TOPIC).with_resource_name(s("t")).with_configs(vec![
                alterable("retention.ms", 0, Some("1000")),
                alterable("segment.ms", 1, None),
                alterable("cleanup.policy", 2, Some("compact")),
            ]),
            AlterConfigsResource::default().with_resource_type(BROKER).with_resource_name(s("")).with_configs(vec![alterable("log.retention.ms", 0, Some("5"))]),
            AlterConfigsResource::default().with_resource_type(BROKER).with_resource_name(s("x")),
            AlterConfigsResource::default().with_resource_type(TOPIC).with_resource_name(s("t")),
            AlterConfigsResource::default().with_resource_type(TOPIC).with_resource_name(s("u")).with_configs(vec![alterable("retention.ms", 0, None)]),
            AlterConfigsResource::default().with_resource_type(TOPIC).with_resource_name(s("v")).with_configs(vec![
                alterable("retention.ms", 0, Some("1")),
                alterable("retention.ms", 1, None),
            ]),
            AlterConfigsResource::default().with_resource_type(8).with_resource_name(s("1")),
        ]);
        let alterations = incremental_alterations(&request);
        let first = alterations[0].as_ref().unwrap();
        assert_eq!(first.resource, ConfigResource::Topic("t".into()));
        assert_eq!(first.changes[1], ("segment.ms".into(), ConfigOp::Delete));
        assert_eq!(first.changes[2], ("cleanup.policy".into(), ConfigOp::Append("compact".into())));
        assert_eq!(alterations[1].as_ref().unwrap().resource, ConfigResource::Broker(None));
        for refused in &alterations[2..] {
            assert_eq!(refused.as_ref().unwrap_err().0, ErrorCode::InvalidRequest, "{refused:?}");
        }
        let forwarded = controller_request(&alterations, false).unwrap();
        assert_eq!(forwarded.resources.len(), 2);

        let response = incremental_response(&request, &alterations, Some(vec![None, Some(ControllerError::InvalidConfig("bad".into()))]));
        let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, [0, ErrorCode::InvalidConfig.code(), 42, 42, 42, 42, 42]);
        let unanswered = incremental_response(&request, &alterations, None);
        assert_eq!(unanswered.responses[0].error_code, ErrorCode::RequestTimedOut.code());
    }

    #[test]
    fn described_topic_configs_carry_source_synonyms_and_type() {
        let mut layers = BrokerLayers::default();
        layers.static_broker.insert("min.insync.replicas".into(), "2".into());
        let config = TopicConfig::new(&layers, BTreeMap::from([("retention.ms".into(), "1000".into())])).unwrap();
        let topics = TopicTable::from([("t".into(), TopicMeta { name: "t".into(), id: [1; 16], partitions: 1, config })]);
        let request = DescribeConfigsRequest::default().with_include_synonyms(true).with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(s("t"))
                .with_configuration_keys(Some(vec![s("retention.ms"), s("min.insync.replicas")])),
            DescribeConfigsResource::default().with_resource_type(TOPIC).with_resource_name(s("nope")),
            DescribeConfigsResource::default().with_resource_type(BROKER).with_resource_name(s("1")).with_configuration_keys(Some(vec![s("min.insync.replicas"), s("node.id")])),
        ]);
        let response = describe_configs(&request, 4, &topics, &layers, NodeId(1), &[("node.id", "1".into())]);
        let topic = &response.results[0].configs;
        assert_eq!(topic.len(), 2);
        let min_isr = topic.iter().find(|c| c.name.as_str() == "min.insync.replicas").unwrap();
        assert_eq!((min_isr.value.as_ref().map(|v| v.to_string()), min_isr.config_source, min_isr.config_type), (Some("2".to_owned()), 4, 3));
        let sources: Vec<i8> = min_isr.synonyms.iter().map(|s| s.source).collect();
        assert_eq!(sources, [4, 5]);
        let retention = topic.iter().find(|c| c.name.as_str() == "retention.ms").unwrap();
        assert_eq!((retention.config_source, retention.config_type, retention.synonyms[0].source), (1, 5, 1));
        assert_eq!(response.results[1].error_code, ErrorCode::UnknownTopicOrPartition.code());
        let broker = &response.results[2].configs;
        let names: Vec<&str> = broker.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["min.insync.replicas", "node.id"]);
        assert!(!broker[0].read_only && broker[1].read_only);
        assert_eq!(broker[0].config_source, 4);
    }
}
