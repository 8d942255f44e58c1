//! `odradek configs`: topic and broker configs after Kafka's `kafka-configs.sh`.
//!
//! - `--describe --entity-type topics|brokers [--entity-name X | --entity-default]`:
//!   DescribeConfigs. As Kafka's tool, only the dynamic values (those set on the entity) unless
//!   `--all`; each line `name=value` and the value's source. Without a name, every topic or
//!   broker in the Metadata.
//! - `--alter ... --add-config k=v,k2=[a,b] --delete-config k`: IncrementalAlterConfigs
//!   (KIP-339), SET for each added and DELETE for each deleted name, in one request. Values in
//!   square brackets may hold commas, as Kafka's tool parses them.
//!
//! A broker's own configs are asked of that broker (Kafka routes them so); the cluster-wide
//! broker default (`--entity-default`) and topics of any broker.

use clap::{ArgGroup, Parser, ValueEnum};
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use serde_json::json;

use super::client::Cluster;
use super::messages::{check, s, AnswerError};
use super::topics::{describe_configs_request, described_configs, ConfigEntry, TOPIC_RESOURCE};
use super::{AdminError, ConnectArgs, Output};

/// Config resource type of a broker (2 is a topic).
const BROKER_RESOURCE: i8 = 4;
/// IncrementalAlterConfigs operations (KIP-339).
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// Topic and broker configs: describe them, set and remove them.
#[derive(Parser, Debug)]
#[command(group(ArgGroup::new("action").required(true).args(["describe", "alter"])))]
pub struct ConfigsArgs {
    /// Show the configs of the entity.
    #[arg(long)]
    describe: bool,
    /// Change the configs of the entity.
    #[arg(long)]
    alter: bool,
    /// topics or brokers.
    #[arg(long, value_enum)]
    entity_type: EntityType,
    /// The topic name or the broker id (default with `--describe`: every one).
    #[arg(long, value_name = "NAME", conflicts_with = "entity_default")]
    entity_name: Option<String>,
    /// The cluster-wide default of every broker.
    #[arg(long)]
    entity_default: bool,
    /// Configs to set, `name=value` separated by commas; a value with commas goes in square
    /// brackets (`k=[a,b]`). Repeatable.
    #[arg(long, value_name = "K=V[,K=V...]")]
    add_config: Vec<String>,
    /// Config names to remove (back to their default), separated by commas. Repeatable.
    #[arg(long, value_name = "K[,K...]")]
    delete_config: Vec<String>,
    /// With `--describe`: every config, not only those set on the entity.
    #[arg(long)]
    all: bool,
    /// How to print `--describe`.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EntityType {
    Topics,
    Brokers,
}

/// What `--alter` does: (name, value) pairs to set, then names to remove.
type Alterations = (Vec<(String, String)>, Vec<String>);

/// One entity's configs, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entity {
    resource_type: i8,
    /// A topic name, a broker id, or "" for the broker default.
    name: String,
}

impl Entity {
    /// How Kafka's tool names it in its messages.
    fn describe(&self) -> String {
        match (self.resource_type, self.name.as_str()) {
            (BROKER_RESOURCE, "") => "the broker default".to_owned(),
            (BROKER_RESOURCE, id) => format!("broker {id}"),
            (_, topic) => format!("topic {topic}"),
        }
    }

    /// The config source of a value set on this entity (Kafka's `ConfigSource`).
    fn dynamic_source(&self) -> i8 {
        match (self.resource_type, self.name.as_str()) {
            (BROKER_RESOURCE, "") => 3,
            (BROKER_RESOURCE, _) => 2,
            _ => 1,
        }
    }
}

/// Kafka's `ConfigSource` names.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// Runs a `configs` command; returns the process exit status.
pub fn run(args: ConfigsArgs) -> i32 {
    super::finish(execute(&args), |_| 1)
}

fn usage(message: &str) -> AdminError {
    AdminError::Usage(message.to_owned())
}

/// `a=1,b=[x,y],c=` as (name, value) pairs: commas inside square brackets belong to the
/// value, and the brackets are dropped (Kafka's `parseConfigsToBeAdded`).
fn parse_add_config(text: &str) -> Result<Vec<(String, String)>, AdminError> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            let Some((name, value)) = item.split_once('=') else {
                return Err(usage(&format!("{item:?} in --add-config is not name=value")));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(usage(&format!("{item:?} in --add-config has no name")));
            }
            let value = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(value);
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

impl ConfigsArgs {
    /// The entities to describe or alter, checked as `kafka-configs.sh` checks them; `None`
    /// for every entity of the type.
    fn entity(&self) -> Result<Option<Entity>, AdminError> {
        let resource_type = match self.entity_type {
            EntityType::Topics => TOPIC_RESOURCE,
            EntityType::Brokers => BROKER_RESOURCE,
        };
        match (&self.entity_name, self.entity_default, self.entity_type) {
            (_, true, EntityType::Topics) => Err(usage("--entity-default applies to brokers, not topics")),
            (None, true, EntityType::Brokers) => Ok(Some(Entity { resource_type, name: String::new() })),
            (None, false, _) if self.alter => Err(usage("--alter needs --entity-name (or --entity-default for brokers)")),
            (None, false, _) => Ok(None),
            (Some(name), _, EntityType::Topics) => {
                odradek_core::topic::validate_topic_name(name).map_err(|e| usage(&e.message))?;
                Ok(Some(Entity { resource_type, name: name.clone() }))
            }
            (Some(id), _, EntityType::Brokers) => match id.parse::<i32>() {
                Ok(n) if n >= 0 => Ok(Some(Entity { resource_type, name: id.clone() })),
                _ => Err(usage(&format!("the broker's entity name must be its node id, not {id:?}"))),
            },
        }
    }

    /// (name, value) to set and names to remove.
    fn alterations(&self) -> Result<Alterations, AdminError> {
        if !self.alter && (!self.add_config.is_empty() || !self.delete_config.is_empty()) {
            return Err(usage("--add-config and --delete-config go with --alter"));
        }
        let mut added = Vec::new();
        for text in &self.add_config {
            added.extend(parse_add_config(text)?);
        }
        let deleted: Vec<String> =
            self.delete_config.iter().flat_map(|d| d.split(',')).map(str::trim).filter(|d| !d.is_empty()).map(str::to_owned).collect();
        if self.alter && added.is_empty() && deleted.is_empty() {
            return Err(usage("--alter needs --add-config or --delete-config"));
        }
        if let Some((name, _)) = added.iter().find(|(name, _)| deleted.contains(name)) {
            return Err(usage(&format!("{name} is both added and deleted")));
        }
        Ok((added, deleted))
    }
}

fn execute(args: &ConfigsArgs) -> Result<String, AdminError> {
    let entity = args.entity()?;
    let (added, deleted) = args.alterations()?;
    let mut cluster = args.connect.cluster();
    match (args.alter, entity) {
        (true, Some(entity)) => alter(&mut cluster, &entity, &added, &deleted),
        (true, None) => unreachable!("entity() requires a name with --alter"),
        (false, Some(entity)) => describe(&mut cluster, args, vec![entity]),
        (false, None) => {
            let metadata = cluster.metadata(if args.entity_type == EntityType::Topics { None } else { Some(&[]) })?;
            let entities = match args.entity_type {
                EntityType::Topics => metadata.topics.keys().map(|t| Entity { resource_type: TOPIC_RESOURCE, name: t.clone() }).collect(),
                EntityType::Brokers => {
                    metadata.brokers.keys().map(|id| Entity { resource_type: BROKER_RESOURCE, name: id.to_string() }).collect()
                }
            };
            describe(&mut cluster, args, entities)
        }
    }
}

/// The address to ask about `entity`: the broker itself for its own configs, else any.
fn address_for(cluster: &mut Cluster, entity: &Entity) -> Result<String, AdminError> {
    if entity.resource_type == BROKER_RESOURCE && !entity.name.is_empty() {
        let metadata = cluster.metadata(Some(&[]))?;
        let id: i32 = entity.name.parse().expect("checked by entity()");
        return metadata.brokers.get(&id).cloned().ok_or_else(|| AdminError::Refused(format!("broker {id} is not in the cluster metadata")));
    }
    Ok(cluster.any_broker()?.addr().to_owned())
}

fn describe(cluster: &mut Cluster, args: &ConfigsArgs, entities: Vec<Entity>) -> Result<String, AdminError> {
    let mut described = Vec::new();
    for entity in entities {
        let addr = address_for(cluster, &entity)?;
        let (_, response) = cluster.connection(&addr)?.call(|v| describe_configs_request(entity.resource_type, std::slice::from_ref(&entity.name), v))?;
        let context = || format!("DescribeConfigs for {} at {addr}", entity.describe());
        let entries = described_configs(response)
            .into_iter()
            .find(|(name, _)| *name == entity.name)
            .ok_or_else(|| AdminError::Answer { context: context(), error: AnswerError::Incomplete("the answer does not describe it".into()) })?
            .1
            .map_err(|error| AdminError::Answer { context: context(), error })?;
        let shown: Vec<ConfigEntry> = entries.into_iter().filter(|e| args.all || e.source == entity.dynamic_source()).collect();
        described.push((entity, shown));
    }
    Ok(match args.output {
        Output::Human => described.iter().map(|(entity, entries)| render_configs(entity, entries, args.all)).collect(),
        Output::Json => {
            let entities: Vec<serde_json::Value> = described
                .iter()
                .map(|(entity, entries)| {
                    json!({
                        "entity_type": if entity.resource_type == BROKER_RESOURCE { "brokers" } else { "topics" },
                        "entity_name": if entity.name.is_empty() { serde_json::Value::Null } else { entity.name.clone().into() },
                        "configs": entries.iter().map(|e| json!({
                            "name": e.name,
                            "value": e.value,
                            "source": source_name(e.source),
                            "read_only": e.read_only,
                            "sensitive": e.sensitive,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            format!("{}\n", serde_json::Value::Array(entities))
        }
    })
}

/// Kafka's `--describe` block: a heading, then one indented line per config.
fn render_configs(entity: &Entity, entries: &[ConfigEntry], all: bool) -> String {
    let mut out = match (entity.resource_type, entity.name.as_str(), all) {
        (BROKER_RESOURCE, "", _) => "Default configs for brokers in the cluster are:\n".to_owned(),
        (_, _, all) => format!("{} configs for {} are:\n", if all { "All" } else { "Dynamic" }, entity.describe()),
    };
    for e in entries {
        let value = if e.sensitive { "null" } else { e.value.as_deref().unwrap_or("null") };
        out.push_str(&format!("  {}={} sensitive={} source={}\n", e.name, value, e.sensitive, source_name(e.source)));
    }
    out
}

fn alter_configs_request(entity: &Entity, added: &[(String, String)], deleted: &[String], _version: i16) -> IncrementalAlterConfigsRequest {
    let set = added.iter().map(|(k, v)| AlterableConfig::default().with_name(s(k)).with_config_operation(OP_SET).with_value(Some(s(v))));
    let removed = deleted.iter().map(|k| AlterableConfig::default().with_name(s(k)).with_config_operation(OP_DELETE).with_value(None));
    let resource = AlterConfigsResource::default()
        .with_resource_type(entity.resource_type)
        .with_resource_name(s(&entity.name))
        .with_configs(set.chain(removed).collect());
    IncrementalAlterConfigsRequest::default().with_resources(vec![resource]).with_validate_only(false)
}

fn altered(response: &IncrementalAlterConfigsResponse, entity: &Entity) -> Result<(), AnswerError> {
    match response.responses.iter().find(|r| r.resource_type == entity.resource_type && r.resource_name.as_str() == entity.name) {
        Some(r) => check(r.error_code, r.error_message.as_ref()),
        None => Err(AnswerError::Incomplete("the answer does not name the entity".into())),
    }
}

fn alter(cluster: &mut Cluster, entity: &Entity, added: &[(String, String)], deleted: &[String]) -> Result<String, AdminError> {
    let addr = address_for(cluster, entity)?;
    let (_, response) = cluster.connection(&addr)?.call(|v| alter_configs_request(entity, added, deleted, v))?;
    altered(&response, entity)
        .map_err(|error| AdminError::Answer { context: format!("IncrementalAlterConfigs for {} at {addr}", entity.describe()), error })?;
    Ok(match (entity.resource_type, entity.name.as_str()) {
        (BROKER_RESOURCE, "") => "Completed updating default config for brokers in the cluster.\n".to_owned(),
        _ => format!("Completed updating config for {}.\n", entity.describe()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn parse(args: &[&str]) -> Result<ConfigsArgs, clap::Error> {
        ConfigsArgs::try_parse_from(std::iter::once("configs").chain(args.iter().copied()))
    }

    #[test]
    fn add_config_splits_on_commas_outside_brackets() {
        let parsed = parse_add_config("retention.ms=1000,cleanup.policy=[compact,delete],x=a=b,empty=").unwrap();
        assert_eq!(
            parsed,
            [
                ("retention.ms".into(), "1000".into()),
                ("cleanup.policy".into(), "compact,delete".into()),
                ("x".into(), "a=b".into()),
                ("empty".into(), String::new()),
            ]
        );
        assert!(parse_add_config("novalue").is_err());
        assert!(parse_add_config("=v").is_err());
    }

    #[test]
    fn entities_and_alterations_are_checked_as_kafka_configs_does() {
        let args = parse(&["--alter", "--entity-type", "topics", "--entity-name", "t", "--add-config", "a=1,b=2", "--delete-config", "c"]).unwrap();
        assert_eq!(args.entity().unwrap(), Some(Entity { resource_type: 2, name: "t".into() }));
        assert_eq!(args.alterations().unwrap(), (vec![("a".into(), "1".into()), ("b".into(), "2".into())], vec!["c".into()]));
        let default = parse(&["--describe", "--entity-type", "brokers", "--entity-default"]).unwrap();
        assert_eq!(default.entity().unwrap(), Some(Entity { resource_type: 4, name: String::new() }));
        assert_eq!(parse(&["--describe", "--entity-type", "topics"]).unwrap().entity().unwrap(), None);
        for (args, message) in [
            (&["--alter", "--entity-type", "topics", "--add-config", "a=1"][..], "--alter needs --entity-name"),
            (&["--alter", "--entity-type", "topics", "--entity-name", "t"][..], "--alter needs --add-config or --delete-config"),
            (&["--describe", "--entity-type", "topics", "--entity-default"][..], "--entity-default applies to brokers"),
            (&["--describe", "--entity-type", "brokers", "--entity-name", "one"][..], "the broker's entity name must be its node id"),
            (&["--describe", "--entity-type", "topics", "--entity-name", "t", "--add-config", "a=1"][..], "--add-config and --delete-config go with --alter"),
            (&["--alter", "--entity-type", "topics", "--entity-name", "t", "--add-config", "a=1", "--delete-config", "a"][..], "a is both added and deleted"),
        ] {
            let parsed = parse(args).unwrap();
            let error = parsed.entity().and_then(|_| parsed.alterations()).unwrap_err().to_string();
            assert!(error.starts_with(message), "{args:?}: {error}");
        }
        assert!(parse(&["--describe", "--alter", "--entity-type", "topics"]).is_err());
        assert!(parse(&["--describe", "--entity-type", "users"]).is_err());
        assert!(parse(&["--describe", "--entity-type", "brokers", "--entity-name", "1", "--entity-default"]).is_err());
    }

    #[test]
    fn alter_request_sets_and_deletes_in_every_version() {
        let entity = Entity { resource_type: 4, name: String::new() };
        let (min, max) = super::super::messages::client_versions(ApiKey::IncrementalAlterConfigs).unwrap();
        for version in min..=max {
            let request = alter_configs_request(&entity, &[("a".into(), "1".into())], &["b".into()], version);
            let mut buf = bytes::BytesMut::new();
            request.encode(&mut buf, version).unwrap();
            let decoded = IncrementalAlterConfigsRequest::decode(&mut buf.freeze(), version).unwrap();
            let configs: Vec<(String, i8, Option<String>)> = decoded.resources[0]
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.config_operation, c.value.as_ref().map(|v| v.to_string())))
                .collect();
            assert_eq!(configs, [("a".into(), 0, Some("1".into())), ("b".into(), 1, None)]);
            assert_eq!((decoded.resources[0].resource_type, decoded.resources[0].resource_name.as_str()), (4, ""));
        }
    }

    #[test]
    fn describe_prints_name_value_and_source() {
        let entity = Entity { resource_type: 2, name: "t".into() };
        let entries = [
            ConfigEntry { name: "cleanup.policy".into(), value: Some("compact".into()), source: 1, read_only: false, sensitive: false },
            ConfigEntry { name: "secret".into(), value: None, source: 1, read_only: false, sensitive: true },
        ];
        assert_eq!(
            render_configs(&entity, &entries, false),
            "Dynamic configs for topic t are:\n  cleanup.policy=compact sensitive=false source=DYNAMIC_TOPIC_CONFIG\n  \
             secret=null sensitive=true source=DYNAMIC_TOPIC_CONFIG\n"
        );
        assert_eq!(render_configs(&Entity { resource_type: 4, name: "1".into() }, &[], true), "All configs for broker 1 are:\n");
    }
}
