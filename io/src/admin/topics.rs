//! `odradek topics`: topics after Kafka's `kafka-topics.sh`, with its options: exactly one of
//! `--list`, `--describe`, `--create`, `--delete`, `--alter`, the topic in `--topic`.
//!
//! - `--list`: every topic name (Metadata), internal ones too unless `--exclude-internal`.
//! - `--describe`: per topic its id, partition count, replication factor and the configs that
//!   are not defaults (DescribeConfigs, as Kafka's tool filters them), then per partition the
//!   leader, replicas and ISR.
//! - `--create`: CreateTopics with `--partitions` and `--replication-factor` (the broker's
//!   defaults when left out) and each `--config name=value`.
//! - `--delete`: DeleteTopics.
//! - `--alter --partitions N`: CreatePartitions (KIP-195) up to N partitions in all.
//!
//! A topic that does not exist is an error ("does not exist as expected", Kafka's words)
//! unless `--if-exists` says it may be missing; one that does, for `--create`, unless
//! `--if-not-exists`.

use std::collections::BTreeMap;

use clap::{ArgGroup, Parser};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse, MetadataResponse, TopicName,
};
use kafka_protocol::ResponseError;
use serde_json::json;

use super::client::Cluster;
use super::messages::{self, check, s, AnswerError};
use super::{AdminError, ConnectArgs, Output};

/// DescribeConfigs resource type of a topic.
pub(super) const TOPIC_RESOURCE: i8 = 2;
/// DescribeConfigs `config_source` of a value nobody set (Kafka's `DEFAULT_CONFIG`).
const DEFAULT_CONFIG: i8 = 5;

/// Topics: list, describe, create, delete, add partitions.
#[derive(Parser, Debug)]
#[command(group(ArgGroup::new("action").required(true).args(["list", "describe", "create", "delete", "alter"])))]
pub struct TopicsArgs {
    /// List the topics.
    #[arg(long)]
    list: bool,
    /// Describe the topic given, or every topic: partitions, leaders, replicas, ISR, configs.
    #[arg(long)]
    describe: bool,
    /// Create the topic.
    #[arg(long)]
    create: bool,
    /// Delete the topic.
    #[arg(long)]
    delete: bool,
    /// Add partitions to the topic (`--partitions`: the count wanted in all).
    #[arg(long)]
    alter: bool,
    /// The topic.
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// The number of partitions (`--create`: default the broker's `num.partitions`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// The number of replicas of each partition (default the broker's
    /// `default.replication.factor`).
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(i16).range(1..))]
    replication_factor: Option<i16>,
    /// A topic config for `--create`; repeatable.
    #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_config)]
    configs: Vec<(String, String)>,
    /// With `--create`: a topic that already exists is not an error.
    #[arg(long)]
    if_not_exists: bool,
    /// With `--delete`, `--alter` or `--describe`: a topic that does not exist is not an error.
    #[arg(long)]
    if_exists: bool,
    /// With `--list` or `--describe`: leave out internal topics (`__consumer_offsets`, ...).
    #[arg(long)]
    exclude_internal: bool,
    /// How to print `--list` and `--describe`.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn parse_config(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not name=value")),
    }
}

/// Runs a `topics` command; returns the process exit status.
pub fn run(args: TopicsArgs) -> i32 {
    super::finish(execute(&args), |_| 1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    List,
    Describe,
    Create,
    Delete,
    Alter,
}

impl TopicsArgs {
    /// The action, once the options that go with it are checked as `kafka-topics.sh` checks
    /// them.
    fn action(&self) -> Result<Action, AdminError> {
        let action = match (self.list, self.describe, self.create, self.delete, self.alter) {
            (true, false, false, false, false) => Action::List,
            (false, true, false, false, false) => Action::Describe,
            (false, false, true, false, false) => Action::Create,
            (false, false, false, true, false) => Action::Delete,
            (false, false, false, false, true) => Action::Alter,
            _ => return Err(usage("give exactly one of --list, --describe, --create, --delete, --alter")),
        };
        let needs_topic = matches!(action, Action::Create | Action::Delete | Action::Alter);
        if needs_topic && self.topic.is_none() {
            return Err(usage(&format!("--topic is required with --{}", action.flag())));
        }
        if let Some(topic) = &self.topic {
            if action != Action::List {
                odradek_core::topic::validate_topic_name(topic).map_err(|e| usage(&e.message))?;
            }
        }
        let only = |set: bool, flag: &str, allowed: &[Action]| match set && !allowed.contains(&action) {
            true => Err(usage(&format!("{flag} cannot be used with --{}", action.flag()))),
            false => Ok(()),
        };
        only(self.partitions.is_some(), "--partitions", &[Action::Create, Action::Alter])?;
        only(self.replication_factor.is_some(), "--replication-factor", &[Action::Create])?;
        only(!self.configs.is_empty(), "--config", &[Action::Create])?;
        only(self.if_not_exists, "--if-not-exists", &[Action::Create])?;
        only(self.if_exists, "--if-exists", &[Action::Delete, Action::Alter, Action::Describe])?;
        only(self.exclude_internal, "--exclude-internal", &[Action::List, Action::Describe])?;
        only(self.topic.is_some(), "--topic", &[Action::Describe, Action::Create, Action::Delete, Action::Alter])?;
        if action == Action::Alter && self.partitions.is_none() {
            return Err(usage("--alter needs --partitions (the count of partitions wanted in all)"));
        }
        Ok(action)
    }
}

impl Action {
    fn flag(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Describe => "describe",
            Action::Create => "create",
            Action::Delete => "delete",
            Action::Alter => "alter",
        }
    }
}

fn usage(message: &str) -> AdminError {
    AdminError::Usage(message.to_owned())
}

fn execute(args: &TopicsArgs) -> Result<String, AdminError> {
    let action = args.action()?;
    let mut cluster = args.connect.cluster();
    let timeout_ms = i32::try_from(args.connect.timeout_ms).unwrap_or(i32::MAX);
    let topic = args.topic.as_deref().unwrap_or_default();
    match action {
        Action::List => list(&mut cluster, args),
        Action::Describe => describe(&mut cluster, args),
        Action::Create => create(&mut cluster, args, topic, timeout_ms),
        Action::Delete => delete(&mut cluster, args, topic, timeout_ms),
        Action::Alter => alter(&mut cluster, args, topic, args.partitions.unwrap_or_default(), timeout_ms),
    }
}

fn does_not_exist(topic: &str) -> AdminError {
    AdminError::Refused(format!("Topic '{topic}' does not exist as expected"))
}

// ---- list, describe ----

/// One topic as Metadata and DescribeConfigs tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopicDescription {
    name: String,
    /// Kafka's base64 spelling; empty when the Metadata version carries none.
    topic_id: String,
    internal: bool,
    partitions: Vec<PartitionDescription>,
    /// The configs that are not defaults, by name.
    configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionDescription {
    partition: i32,
    /// -1 without one.
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

fn metadata(cluster: &mut Cluster, topics: Option<&[String]>) -> Result<MetadataResponse, AdminError> {
    let connection = cluster.any_broker()?;
    let (_, response) = connection.call(|v| messages::metadata_request(topics, v))?;
    Ok(response)
}

/// The topics of a Metadata answer, by name; an error answered for a topic stays an error.
fn topic_descriptions(response: &MetadataResponse) -> BTreeMap<String, Result<TopicDescription, AnswerError>> {
    let mut topics = BTreeMap::new();
    for topic in &response.topics {
        let Some(name) = topic.name.as_ref().map(|n| n.to_string()) else { continue };
        let described = check(topic.error_code, None).map(|()| {
            let mut partitions: Vec<PartitionDescription> = topic
                .partitions
                .iter()
                .map(|p| PartitionDescription {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                    isr: p.isr_nodes.iter().map(|r| r.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            TopicDescription {
                name: name.clone(),
                topic_id: if topic.topic_id.is_nil() { String::new() } else { kafka_uuid(topic.topic_id.as_bytes()) },
                internal: topic.is_internal || name.starts_with("__"),
                partitions,
                configs: BTreeMap::new(),
            }
        });
        topics.insert(name, described);
    }
    topics
}

/// A topic id as Kafka prints it (`Uuid.toString`): URL-safe base64 without padding.
fn kafka_uuid(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
        }
    }
    out
}

fn list(cluster: &mut Cluster, args: &TopicsArgs) -> Result<String, AdminError> {
    let topics = topic_descriptions(&metadata(cluster, None)?);
    let names: Vec<&String> =
        topics.iter().filter(|(_, t)| !args.exclude_internal || t.as_ref().is_ok_and(|t| !t.internal)).map(|(n, _)| n).collect();
    Ok(match args.output {
        Output::Human => names.iter().map(|n| format!("{n}\n")).collect(),
        Output::Json => format!("{}\n", json!(names)),
    })
}

fn describe(cluster: &mut Cluster, args: &TopicsArgs) -> Result<String, AdminError> {
    let named = args.topic.as_ref().map(std::slice::from_ref);
    let mut described = Vec::new();
    for (name, topic) in topic_descriptions(&metadata(cluster, named)?) {
        match topic {
            Ok(topic) if args.exclude_internal && topic.internal => {}
            Ok(topic) => described.push(topic),
            Err(e) if e.is(ResponseError::UnknownTopicOrPartition) => {}
            Err(error) => return Err(AdminError::Answer { context: format!("Metadata for topic '{name}'"), error }),
        }
    }
    if let Some(topic) = &args.topic {
        if described.is_empty() && !args.if_exists {
            return Err(does_not_exist(topic));
        }
    }
    if !described.is_empty() {
        let names: Vec<String> = described.iter().map(|t| t.name.clone()).collect();
        let mut configs = topic_configs(cluster, &names)?;
        for topic in &mut described {
            topic.configs = configs.remove(&topic.name).unwrap_or_default();
        }
    }
    Ok(match args.output {
        Output::Human => described.iter().map(render_description).collect(),
        Output::Json => format!("{}\n", serde_json::Value::Array(described.iter().map(description_json).collect())),
    })
}

/// The configs of each topic that are not defaults (`kafka-topics.sh` leaves those out).
fn topic_configs(cluster: &mut Cluster, topics: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, AdminError> {
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let (_, response) = connection.call(|v| describe_configs_request(TOPIC_RESOURCE, topics, v))?;
    let mut configs = BTreeMap::new();
    for (name, entries) in described_configs(response) {
        let entries = entries.map_err(|error| AdminError::Answer { context: format!("DescribeConfigs for topic '{name}' at {addr}"), error })?;
        let set = entries.into_iter().filter(|e| e.source != DEFAULT_CONFIG).map(|e| (e.name, e.value.unwrap_or_default()));
        configs.insert(name, set.collect());
    }
    Ok(configs)
}

/// DescribeConfigs for every config of each resource named.
pub(super) fn describe_configs_request(resource_type: i8, names: &[String], _version: i16) -> DescribeConfigsRequest {
    let resources = names
        .iter()
        .map(|name| DescribeConfigsResource::default().with_resource_type(resource_type).with_resource_name(s(name)).with_configuration_keys(None))
        .collect();
    DescribeConfigsRequest::default().with_resources(resources)
}

/// One config of a DescribeConfigs answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConfigEntry {
    pub name: String,
    /// `None` for a sensitive value, which brokers never send.
    pub value: Option<String>,
    /// Kafka's `ConfigSource` code.
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
}

/// Per resource name, its configs in name order or its error.
pub(super) fn described_configs(response: DescribeConfigsResponse) -> Vec<(String, Result<Vec<ConfigEntry>, AnswerError>)> {
    response
        .results
        .into_iter()
        .map(|result| {
            let entries = check(result.error_code, result.error_message.as_ref()).map(|()| {
                let mut entries: Vec<ConfigEntry> = result
                    .configs
                    .iter()
                    .map(|c| ConfigEntry {
                        name: c.name.to_string(),
                        value: c.value.as_ref().map(|v| v.to_string()),
                        source: c.config_source,
                        read_only: c.read_only,
                        sensitive: c.is_sensitive,
                    })
                    .collect();
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                entries
            });
            (result.resource_name.to_string(), entries)
        })
        .collect()
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Kafka's `--describe` lines: the topic, then one tab-indented line per partition.
fn render_description(topic: &TopicDescription) -> String {
    let replication_factor = topic.partitions.first().map_or(0, |p| p.replicas.len());
    let configs: Vec<String> = topic.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut out = format!(
        "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}\n",
        topic.name,
        topic.topic_id,
        topic.partitions.len(),
        replication_factor,
        configs.join(",")
    );
    for p in &topic.partitions {
        let leader = if p.leader < 0 { "none".to_owned() } else { p.leader.to_string() };
        out.push_str(&format!(
            "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}\n",
            topic.name,
            p.partition,
            leader,
            join_ids(&p.replicas),
            join_ids(&p.isr)
        ));
    }
    out
}

fn description_json(topic: &TopicDescription) -> serde_json::Value {
    json!({
        "name": topic.name,
        "topic_id": topic.topic_id,
        "internal": topic.internal,
        "partition_count": topic.partitions.len(),
        "replication_factor": topic.partitions.first().map_or(0, |p| p.replicas.len()),
        "configs": topic.configs,
        "partitions": topic.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "leader": if p.leader < 0 { serde_json::Value::Null } else { p.leader.into() },
            "replicas": p.replicas,
            "isr": p.isr,
        })).collect::<Vec<_>>(),
    })
}

// ---- create, delete, alter ----

fn create_topics_request(args: &TopicsArgs, topic: &str, timeout_ms: i32, _version: i16) -> CreateTopicsRequest {
    let configs = args
        .configs
        .iter()
        .map(|(name, value)| CreatableTopicConfig::default().with_name(s(name)).with_value(Some(s(value))))
        .collect();
    let creatable = CreatableTopic::default()
        .with_name(TopicName(s(topic)))
        .with_num_partitions(args.partitions.unwrap_or(-1))
        .with_replication_factor(args.replication_factor.unwrap_or(-1))
        .with_configs(configs);
    CreateTopicsRequest::default().with_topics(vec![creatable]).with_timeout_ms(timeout_ms)
}

fn created(response: &CreateTopicsResponse, topic: &str) -> Result<(), AnswerError> {
    match response.topics.iter().find(|t| t.name.as_str() == topic) {
        Some(t) => check(t.error_code, t.error_message.as_ref()),
        None => Err(AnswerError::Incomplete(format!("topic '{topic}' is missing from the answer"))),
    }
}

fn create(cluster: &mut Cluster, args: &TopicsArgs, topic: &str, timeout_ms: i32) -> Result<String, AdminError> {
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let (_, response) = connection.call(|v| create_topics_request(args, topic, timeout_ms, v))?;
    match created(&response, topic) {
        Ok(()) => Ok(format!("Created topic {topic}.\n")),
        Err(e) if args.if_not_exists && e.is(ResponseError::TopicAlreadyExists) => Ok(String::new()),
        Err(error) => Err(AdminError::Answer { context: format!("CreateTopics for topic '{topic}' at {addr}"), error }),
    }
}

fn delete_topics_request(topic: &str, timeout_ms: i32, version: i16) -> DeleteTopicsRequest {
    let request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
    // v6 names topics by name or id in `topics`; before, by name in `topic_names`.
    match version >= 6 {
        true => request.with_topics(vec![DeleteTopicState::default().with_name(Some(TopicName(s(topic))))]),
        false => request.with_topic_names(vec![TopicName(s(topic))]),
    }
}

fn deleted(response: &DeleteTopicsResponse, topic: &str) -> Result<(), AnswerError> {
    match response.responses.iter().find(|r| r.name.as_ref().is_some_and(|n| n.as_str() == topic)) {
        Some(r) => check(r.error_code, r.error_message.as_ref()),
        None => Err(AnswerError::Incomplete(format!("topic '{topic}' is missing from the answer"))),
    }
}

fn delete(cluster: &mut Cluster, args: &TopicsArgs, topic: &str, timeout_ms: i32) -> Result<String, AdminError> {
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let (_, response) = connection.call(|v| delete_topics_request(topic, timeout_ms, v))?;
    match deleted(&response, topic) {
        Ok(()) => Ok(format!("Deleted topic {topic}.\n")),
        Err(e) if e.is(ResponseError::UnknownTopicOrPartition) => match args.if_exists {
            true => Ok(String::new()),
            false => Err(does_not_exist(topic)),
        },
        Err(error) => Err(AdminError::Answer { context: format!("DeleteTopics for topic '{topic}' at {addr}"), error }),
    }
}

/// CreatePartitions to `count` partitions in all, the broker placing the new replicas.
fn create_partitions_request(topic: &str, count: i32, timeout_ms: i32, _version: i16) -> CreatePartitionsRequest {
    let topic = CreatePartitionsTopic::default().with_name(TopicName(s(topic))).with_count(count).with_assignments(None);
    CreatePartitionsRequest::default().with_topics(vec![topic]).with_timeout_ms(timeout_ms).with_validate_only(false)
}

fn partitions_created(response: &CreatePartitionsResponse, topic: &str) -> Result<(), AnswerError> {
    match response.results.iter().find(|r| r.name.as_str() == topic) {
        Some(r) => check(r.error_code, r.error_message.as_ref()),
        None => Err(AnswerError::Incomplete(format!("topic '{topic}' is missing from the answer"))),
    }
}

fn alter(cluster: &mut Cluster, args: &TopicsArgs, topic: &str, count: i32, timeout_ms: i32) -> Result<String, AdminError> {
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let (_, response) = connection.call(|v| create_partitions_request(topic, count, timeout_ms, v))?;
    match partitions_created(&response, topic) {
        Ok(()) => Ok(format!("Topic {topic} now has {count} partitions.\n")),
        Err(e) if e.is(ResponseError::UnknownTopicOrPartition) => match args.if_exists {
            true => Ok(String::new()),
            false => Err(does_not_exist(topic)),
        },
        Err(error) => Err(AdminError::Answer { context: format!("CreatePartitions for topic '{topic}' at {addr}"), error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{MetadataResponsePartition, MetadataResponseTopic};
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn parse(args: &[&str]) -> Result<TopicsArgs, clap::Error> {
        TopicsArgs::try_parse_from(std::iter::once("topics").chain(args.iter().copied()))
    }

    fn action(args: &[&str]) -> Result<Action, String> {
        parse(args).map_err(|e| e.to_string())?.action().map_err(|e| e.to_string())
    }

    fn round_trip<M: Encodable + Decodable>(message: &M, version: i16) -> M {
        let mut buf = bytes::BytesMut::new();
        message.encode(&mut buf, version).unwrap_or_else(|e| panic!("v{version}: {e}"));
        let mut bytes = buf.freeze();
        let decoded = M::decode(&mut bytes, version).unwrap();
        assert!(bytes.is_empty());
        decoded
    }

    fn versions(api_key: ApiKey) -> std::ops::RangeInclusive<i16> {
        let (min, max) = messages::client_versions(api_key).unwrap();
        min..=max
    }

    #[test]
    fn actions_take_the_options_kafka_topics_takes() {
        assert_eq!(action(&["--list"]), Ok(Action::List));
        assert_eq!(action(&["--describe"]), Ok(Action::Describe));
        assert_eq!(action(&["--describe", "--topic", "t"]), Ok(Action::Describe));
        assert_eq!(action(&["--create", "--topic", "t", "--partitions", "3", "--replication-factor", "1"]), Ok(Action::Create));
        assert_eq!(action(&["--delete", "--topic", "t", "--if-exists"]), Ok(Action::Delete));
        assert_eq!(action(&["--alter", "--topic", "t", "--partitions", "4"]), Ok(Action::Alter));
        // Exactly one action.
        assert!(parse(&[]).is_err());
        assert!(parse(&["--list", "--describe"]).is_err());
        for (args, message) in [
            (&["--create"][..], "--topic is required with --create"),
            (&["--alter", "--topic", "t"][..], "--alter needs --partitions"),
            (&["--list", "--partitions", "3"][..], "--partitions cannot be used with --list"),
            (&["--delete", "--topic", "t", "--config", "a=b"][..], "--config cannot be used with --delete"),
            (&["--create", "--topic", "t", "--if-exists"][..], "--if-exists cannot be used with --create"),
            (&["--create", "--topic", "bad name"][..], "topic name \"bad name\" contains characters"),
        ] {
            let error = action(args).unwrap_err();
            assert!(error.starts_with(message), "{args:?}: {error}");
        }
        assert!(parse(&["--create", "--topic", "t", "--partitions", "0"]).is_err());
        assert!(parse(&["--create", "--topic", "t", "--config", "novalue"]).is_err());
        let args = parse(&["--create", "--topic", "t", "--config", "cleanup.policy=compact", "--config", "x=a=b"]).unwrap();
        assert_eq!(args.configs, [("cleanup.policy".into(), "compact".into()), ("x".into(), "a=b".into())]);
    }

    #[test]
    fn create_delete_and_alter_requests_in_every_version() {
        let args = parse(&["--create", "--topic", "t", "--partitions", "3", "--config", "retention.ms=1000"]).unwrap();
        for version in versions(ApiKey::CreateTopics) {
            let request = round_trip(&create_topics_request(&args, "t", 5000, version), version);
            let topic = &request.topics[0];
            assert_eq!((topic.name.as_str(), topic.num_partitions, topic.replication_factor), ("t", 3, -1));
            assert_eq!((topic.configs[0].name.as_str(), topic.configs[0].value.as_deref()), ("retention.ms", Some("1000")));
            assert_eq!(request.timeout_ms, 5000);
        }
        for version in versions(ApiKey::DeleteTopics) {
            let request = round_trip(&delete_topics_request("t", 5000, version), version);
            let names: Vec<String> = match version >= 6 {
                true => request.topics.iter().map(|t| t.name.as_ref().unwrap().to_string()).collect(),
                false => request.topic_names.iter().map(|n| n.to_string()).collect(),
            };
            assert_eq!(names, ["t"], "v{version}");
        }
        for version in versions(ApiKey::CreatePartitions) {
            let request = round_trip(&create_partitions_request("t", 6, 5000, version), version);
            assert_eq!((request.topics[0].name.as_str(), request.topics[0].count, request.topics[0].assignments.is_none()), ("t", 6, true));
        }
        for version in versions(ApiKey::DescribeConfigs) {
            let request = round_trip(&describe_configs_request(TOPIC_RESOURCE, &["a".into(), "b".into()], version), version);
            assert_eq!(request.resources.len(), 2);
            assert_eq!((request.resources[1].resource_type, request.resources[1].resource_name.as_str()), (2, "b"));
            assert_eq!(request.resources[1].configuration_keys, None);
        }
    }

    #[test]
    fn answers_name_the_topic_error() {
        use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
        let response = CreateTopicsResponse::default().with_topics(vec![CreatableTopicResult::default()
            .with_name(TopicName(s("t")))
            .with_error_code(36)
            .with_error_message(Some(s("Topic 't' already exists.")))]);
        assert_eq!(created(&response, "t").unwrap_err().to_string(), "TOPIC_ALREADY_EXISTS (36) (Topic 't' already exists.)");
        assert!(matches!(created(&response, "u"), Err(AnswerError::Incomplete(_))));
    }

    #[test]
    fn describe_prints_as_kafka_topics_does() {
        let partition = |index: i32, leader: i32| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(leader.into())
                .with_replica_nodes(vec![1.into(), 2.into()])
                .with_isr_nodes(vec![1.into()])
        };
        let response = MetadataResponse::default().with_topics(vec![
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(s("orders"))))
                .with_topic_id(uuid::Uuid::from_bytes([0xdb, 0x2e, 0xe0, 0x55, 0xa1, 0x3b, 0x43, 0x4a, 0xae, 0x06, 0xa4, 0x1d, 0x9c, 0xb2, 0xf6, 0x0f]))
                .with_partitions(vec![partition(1, -1), partition(0, 1)]),
            MetadataResponseTopic::default().with_name(Some(TopicName(s("gone")))).with_error_code(3),
        ]);
        let mut topics = topic_descriptions(&response);
        assert_eq!(topics["gone"], Err(AnswerError::code(ResponseError::UnknownTopicOrPartition)));
        let mut orders = topics.remove("orders").unwrap().unwrap();
        orders.configs = BTreeMap::from([("cleanup.policy".into(), "compact".into()), ("retention.ms".into(), "5".into())]);
        assert_eq!(
            render_description(&orders),
            "Topic: orders\tTopicId: 2y7gVaE7Q0quBqQdnLL2Dw\tPartitionCount: 2\tReplicationFactor: 2\t\
             Configs: cleanup.policy=compact,retention.ms=5\n\
             \tTopic: orders\tPartition: 0\tLeader: 1\tReplicas: 1,2\tIsr: 1\n\
             \tTopic: orders\tPartition: 1\tLeader: none\tReplicas: 1,2\tIsr: 1\n"
        );
        let json = description_json(&orders);
        assert_eq!(json["partitions"][1]["leader"], serde_json::Value::Null);
        assert_eq!(json["configs"]["retention.ms"], "5");
        assert_eq!(json["replication_factor"], 2);
    }

    #[test]
    fn topic_ids_print_in_kafka_base64() {
        assert_eq!(kafka_uuid(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(kafka_uuid(&[0xff; 16]), "_____________________w");
    }
}
