//! `odradek configs`: topic and broker configs, and client quotas, after Kafka's
//! `kafka-configs.sh`.
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
//!
//! Client quotas (KIP-546), `--entity-type users|clients|ips` or the shortcuts `--user X`,
//! `--client X`, `--ip X`, `--user-defaults`, `--client-defaults`, `--ip-defaults`; users with
//! clients name their combined entity. As Kafka's tool pairs them, the n-th `--entity-name` or
//! `--entity-default` names the n-th `--entity-type`, and the shortcuts add theirs after.
//! - `--describe`: DescribeClientQuotas, strict (only entities of exactly the types given, as
//!   Kafka's `ClientQuotaFilter.containsOnly`); per type the name (exact match), the default,
//!   or, without either, any name of the type. Kafka's lines, `Quota configs for
//!   user-principal 'alice' are producer_byte_rate=1024.0`.
//! - `--alter`: one AlterClientQuotas with one entry, a set op per `--add-config` (the value a
//!   number) and a remove op per `--delete-config`. The broker checks the keys.
//!
//! Any broker answers both: it forwards AlterClientQuotas to the controller and describes
//! quotas from its metadata image.

use clap::{Arg, ArgAction, ArgGroup, ArgMatches, Command, Parser, ValueEnum};
use kafka_protocol::messages::alter_client_quotas_request::{self, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
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
/// DescribeClientQuotas match types of a filter component (KIP-546).
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

/// Topic and broker configs and client quotas: describe them, set and remove them.
#[derive(Parser, Debug)]
#[command(group(ArgGroup::new("action").required(true).args(["describe", "alter"])))]
pub struct ConfigsArgs {
    /// Show the configs of the entity.
    #[arg(long)]
    describe: bool,
    /// Change the configs of the entity.
    #[arg(long)]
    alter: bool,
    #[command(flatten)]
    entity: EntityArgs,
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
    Users,
    Clients,
    Ips,
}

impl EntityType {
    fn name(self) -> &'static str {
        match self {
            EntityType::Topics => "topics",
            EntityType::Brokers => "brokers",
            EntityType::Users => "users",
            EntityType::Clients => "clients",
            EntityType::Ips => "ips",
        }
    }
}

/// The entity options as given. Kafka's tool pairs the n-th `--entity-name` or
/// `--entity-default` with the n-th `--entity-type`, an order clap's derive does not keep, so
/// these are read from the matches by hand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct EntityArgs {
    /// Each `--entity-type`, in order.
    types: Vec<EntityType>,
    /// Each `--entity-name` (`Some`) and `--entity-default` (`None`), in command-line order.
    names: Vec<Option<String>>,
    user: Option<String>,
    client: Option<String>,
    ip: Option<String>,
    user_defaults: bool,
    client_defaults: bool,
    ip_defaults: bool,
}

impl clap::FromArgMatches for EntityArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = EntityArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        let mut names: Vec<(usize, Option<String>)> = Vec::new();
        if let (Some(values), Some(indices)) = (matches.get_many::<String>("entity_name"), matches.indices_of("entity_name")) {
            names.extend(indices.zip(values.cloned().map(Some)));
        }
        if let Some(indices) = matches.indices_of("entity_default") {
            names.extend(indices.map(|i| (i, None)));
        }
        names.sort_by_key(|(i, _)| *i);
        *self = EntityArgs {
            types: matches.get_many::<EntityType>("entity_type").map(|t| t.copied().collect()).unwrap_or_default(),
            names: names.into_iter().map(|(_, name)| name).collect(),
            user: matches.get_one::<String>("user").cloned(),
            client: matches.get_one::<String>("client").cloned(),
            ip: matches.get_one::<String>("ip").cloned(),
            user_defaults: matches.get_flag("user_defaults"),
            client_defaults: matches.get_flag("client_defaults"),
            ip_defaults: matches.get_flag("ip_defaults"),
        };
        Ok(())
    }
}

impl clap::Args for EntityArgs {
    fn augment_args(cmd: Command) -> Command {
        let shortcut = |long: &'static str, help: &'static str| Arg::new(long).long(long).value_name("NAME").help(help);
        let default =
            |id: &'static str, long: &'static str, help: &'static str| Arg::new(id).long(long).action(ArgAction::SetTrue).help(help);
        cmd.arg(
            Arg::new("entity_type")
                .long("entity-type")
                .value_name("TYPE")
                .value_parser(clap::value_parser!(EntityType))
                .action(ArgAction::Append)
                .help("topics, brokers, users, clients or ips; users and clients together name their combined entity"),
        )
        .arg(
            Arg::new("entity_name")
                .long("entity-name")
                .value_name("NAME")
                .action(ArgAction::Append)
                .help("The name for the --entity-type in the same place (default with --describe: every one)"),
        )
        .arg(
            Arg::new("entity_default")
                .long("entity-default")
                .num_args(0)
                .default_missing_value("")
                .action(ArgAction::Append)
                .help("The default for the --entity-type in the same place: every broker, user, client or ip"),
        )
        .arg(shortcut("user", "Quotas of this user: --entity-type users --entity-name NAME"))
        .arg(shortcut("client", "Quotas of this client id: --entity-type clients --entity-name NAME"))
        .arg(shortcut("ip", "Quotas of this ip: --entity-type ips --entity-name NAME"))
        .arg(default("user_defaults", "user-defaults", "The default user's quotas: --entity-type users --entity-default"))
        .arg(default("client_defaults", "client-defaults", "The default client id's quotas: --entity-type clients --entity-default"))
        .arg(default("ip_defaults", "ip-defaults", "The default ip's quotas: --entity-type ips --entity-default"))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// An entity type with its name as given: `None` when none was, `Some(None)` for the default.
type NamedType = (EntityType, Option<Option<String>>);

/// What the entity options name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A topic or broker, `None` for every one of the type.
    Configs(EntityType, Option<Entity>),
    /// A client-quota entity (or filter, with `--describe`): one part per type.
    Quotas(Vec<QuotaPart>),
}

/// One type of a client-quota entity with its name as given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QuotaPart {
    /// Kafka's entity type: `user`, `client-id` or `ip`.
    entity_type: &'static str,
    name: QuotaName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum QuotaName {
    Named(String),
    Default,
    /// No name: with `--describe`, every name of the type (the default too).
    Any,
}

/// An entity of the answers: (type, name) sorted by type, `None` for the default.
type QuotaEntity = Vec<(String, Option<String>)>;

/// One entity's quotas as DescribeClientQuotas answers them, sorted by key.
#[derive(Debug, Clone, PartialEq)]
struct DescribedQuotas {
    entity: QuotaEntity,
    values: Vec<(String, f64)>,
}

/// How Kafka's tool names a quota entity type in its lines.
fn quota_type_text(entity_type: &str) -> &str {
    match entity_type {
        "user" => "user-principal",
        other => other,
    }
}

/// `user-principal 'alice', the default client-id`: user, then client id, then ip, as Kafka's
/// tool prints an entity.
fn quota_entity_text(entity: &[(String, Option<String>)]) -> String {
    let mut parts: Vec<&(String, Option<String>)> = entity.iter().collect();
    let rank = |t: &str| ["user", "client-id", "ip"].iter().position(|k| *k == t).unwrap_or(3);
    parts.sort_by_key(|(t, _)| rank(t));
    parts
        .iter()
        .map(|(t, name)| match name {
            Some(name) => format!("{} '{name}'", quota_type_text(t)),
            None => format!("the default {}", quota_type_text(t)),
        })
        .collect::<Vec<_>>()
        .join(", ")
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
    /// Each entity type with its name, as Kafka's tool pairs them: the n-th `--entity-name` or
    /// `--entity-default` with the n-th `--entity-type`, then the shortcuts. The name is `None`
    /// when none was given, `Some(None)` for the default.
    fn entity_list(&self) -> Result<Vec<NamedType>, AdminError> {
        let e = &self.entity;
        if e.names.len() > e.types.len() {
            return Err(usage("more --entity-name and --entity-default than --entity-type"));
        }
        let mut list: Vec<NamedType> =
            e.types.iter().enumerate().map(|(i, t)| (*t, e.names.get(i).cloned())).collect();
        for (t, name) in [(EntityType::Users, &e.user), (EntityType::Clients, &e.client), (EntityType::Ips, &e.ip)] {
            if let Some(name) = name {
                list.push((t, Some(Some(name.clone()))));
            }
        }
        for (t, set) in [(EntityType::Users, e.user_defaults), (EntityType::Clients, e.client_defaults), (EntityType::Ips, e.ip_defaults)] {
            if set {
                list.push((t, Some(None)));
            }
        }
        if list.is_empty() {
            return Err(usage("give --entity-type (or --user, --client, --ip, --user-defaults, --client-defaults, --ip-defaults)"));
        }
        for (i, (t, _)) in list.iter().enumerate() {
            if list[..i].iter().any(|(seen, _)| seen == t) {
                return Err(usage(&format!("the entity type {} is given more than once", t.name())));
            }
        }
        Ok(list)
    }

    /// The entity to describe or alter, checked as `kafka-configs.sh` checks it.
    fn target(&self) -> Result<Target, AdminError> {
        let list = self.entity_list()?;
        if let [(t @ (EntityType::Topics | EntityType::Brokers), name)] = list.as_slice() {
            return Ok(Target::Configs(*t, self.config_entity(*t, name.clone())?));
        }
        if list.iter().any(|(t, _)| matches!(t, EntityType::Topics | EntityType::Brokers)) {
            return Err(usage("topics and brokers take one --entity-type; only users and clients combine"));
        }
        if list.len() > 1 && list.iter().any(|(t, _)| *t == EntityType::Ips) {
            return Err(usage("ips cannot be combined with users or clients"));
        }
        if self.all {
            return Err(usage("--all applies to topics and brokers"));
        }
        if self.alter && list.iter().any(|(_, name)| name.is_none()) {
            return Err(usage("--alter needs --entity-name or --entity-default for each --entity-type"));
        }
        let parts = list
            .into_iter()
            .map(|(t, name)| QuotaPart {
                entity_type: match t {
                    EntityType::Users => "user",
                    EntityType::Clients => "client-id",
                    _ => "ip",
                },
                name: match name {
                    Some(Some(name)) => QuotaName::Named(name),
                    Some(None) => QuotaName::Default,
                    None => QuotaName::Any,
                },
            })
            .collect();
        Ok(Target::Quotas(parts))
    }

    /// A topic or broker; `None` for every entity of the type.
    fn config_entity(&self, entity_type: EntityType, name: Option<Option<String>>) -> Result<Option<Entity>, AdminError> {
        let resource_type = if entity_type == EntityType::Topics { TOPIC_RESOURCE } else { BROKER_RESOURCE };
        match (name, entity_type) {
            (Some(None), EntityType::Topics) => Err(usage("--entity-default applies to brokers, not topics")),
            (Some(None), _) => Ok(Some(Entity { resource_type, name: String::new() })),
            (None, _) if self.alter => Err(usage("--alter needs --entity-name (or --entity-default for brokers)")),
            (None, _) => Ok(None),
            (Some(Some(name)), EntityType::Topics) => {
                odradek_core::topic::validate_topic_name(&name).map_err(|e| usage(&e.message))?;
                Ok(Some(Entity { resource_type, name }))
            }
            (Some(Some(id)), _) => match id.parse::<i32>() {
                Ok(n) if n >= 0 => Ok(Some(Entity { resource_type, name: id })),
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

/// Kafka's tool reads quota values as doubles.
fn quota_values(added: &[(String, String)]) -> Result<Vec<(String, f64)>, AdminError> {
    added
        .iter()
        .map(|(key, value)| match value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok((key.clone(), v)),
            _ => Err(usage(&format!("Cannot parse quota configuration value for {key}: {value}"))),
        })
        .collect()
}

fn execute(args: &ConfigsArgs) -> Result<String, AdminError> {
    let target = args.target()?;
    let (added, deleted) = args.alterations()?;
    let entity = match target {
        Target::Quotas(parts) if args.alter => {
            let set = quota_values(&added)?;
            return alter_quotas(&mut args.connect.cluster(), &parts, &set, &deleted);
        }
        Target::Quotas(parts) => return describe_quotas(&mut args.connect.cluster(), &parts, args.output),
        Target::Configs(entity_type, entity) => (entity_type, entity),
    };
    let mut cluster = args.connect.cluster();
    match (args.alter, entity) {
        (true, (_, Some(entity))) => alter(&mut cluster, &entity, &added, &deleted),
        (true, (_, None)) => unreachable!("target() requires a name with --alter"),
        (false, (_, Some(entity))) => describe(&mut cluster, args, vec![entity]),
        (false, (entity_type, None)) => {
            let metadata = cluster.metadata(if entity_type == EntityType::Topics { None } else { Some(&[]) })?;
            let entities = match entity_type {
                EntityType::Topics => metadata.topics.keys().map(|t| Entity { resource_type: TOPIC_RESOURCE, name: t.clone() }).collect(),
                _ => metadata.brokers.keys().map(|id| Entity { resource_type: BROKER_RESOURCE, name: id.to_string() }).collect(),
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

// ---- client quotas ----

fn describe_quotas_request(parts: &[QuotaPart], _version: i16) -> DescribeClientQuotasRequest {
    let components = parts
        .iter()
        .map(|p| {
            let (match_type, name) = match &p.name {
                QuotaName::Named(name) => (MATCH_EXACT, Some(s(name))),
                QuotaName::Default => (MATCH_DEFAULT, None),
                QuotaName::Any => (MATCH_SPECIFIED, None),
            };
            ComponentData::default().with_entity_type(s(p.entity_type)).with_match_type(match_type).with_match(name)
        })
        .collect();
    // Kafka's tool asks with `ClientQuotaFilter.containsOnly`: entities of exactly these types.
    DescribeClientQuotasRequest::default().with_components(components).with_strict(true)
}

fn described_quotas(response: DescribeClientQuotasResponse) -> Result<Vec<DescribedQuotas>, AnswerError> {
    check(response.error_code, response.error_message.as_ref())?;
    let entries = response.entries.ok_or_else(|| AnswerError::Incomplete("the answer has no entries".into()))?;
    let mut described: Vec<DescribedQuotas> = entries
        .into_iter()
        .map(|entry| {
            let mut entity: QuotaEntity =
                entry.entity.iter().map(|e| (e.entity_type.to_string(), e.entity_name.as_ref().map(|n| n.to_string()))).collect();
            entity.sort();
            let mut values: Vec<(String, f64)> = entry.values.iter().map(|v| (v.key.to_string(), v.value)).collect();
            values.sort_by(|a, b| a.0.cmp(&b.0));
            DescribedQuotas { entity, values }
        })
        .collect();
    described.sort_by(|a, b| a.entity.cmp(&b.entity));
    Ok(described)
}

/// Kafka's lines, one per entity: `Quota configs for user-principal 'alice' are
/// producer_byte_rate=1024.0, request_percentage=50.0`. Nothing when no entity matches.
fn render_quotas(described: &[DescribedQuotas]) -> String {
    described
        .iter()
        .map(|d| {
            let values: Vec<String> = d.values.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("Quota configs for {} are {}\n", quota_entity_text(&d.entity), values.join(", "))
        })
        .collect()
}

fn quotas_json(described: &[DescribedQuotas]) -> serde_json::Value {
    described
        .iter()
        .map(|d| {
            let entity: serde_json::Map<String, serde_json::Value> =
                d.entity.iter().map(|(t, n)| (t.clone(), n.clone().map_or(serde_json::Value::Null, Into::into))).collect();
            json!({
                "entity": entity,
                "configs": d.values.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn describe_quotas(cluster: &mut Cluster, parts: &[QuotaPart], output: Output) -> Result<String, AdminError> {
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let (_, response) = connection.call(|v| describe_quotas_request(parts, v))?;
    let described =
        described_quotas(response).map_err(|error| AdminError::Answer { context: format!("DescribeClientQuotas at {addr}"), error })?;
    Ok(match output {
        Output::Human => render_quotas(&described),
        Output::Json => format!("{}\n", quotas_json(&described)),
    })
}

/// The entity of an alteration (every part named or the default) as the answers spell it.
fn quota_entity(parts: &[QuotaPart]) -> QuotaEntity {
    let mut entity: QuotaEntity = parts
        .iter()
        .map(|p| {
            let name = match &p.name {
                QuotaName::Named(name) => Some(name.clone()),
                QuotaName::Default | QuotaName::Any => None,
            };
            (p.entity_type.to_owned(), name)
        })
        .collect();
    entity.sort();
    entity
}

fn alter_quotas_request(parts: &[QuotaPart], set: &[(String, f64)], deleted: &[String], _version: i16) -> AlterClientQuotasRequest {
    let entity = quota_entity(parts)
        .iter()
        .map(|(t, name)| alter_client_quotas_request::EntityData::default().with_entity_type(s(t)).with_entity_name(name.as_deref().map(s)))
        .collect();
    let ops = set
        .iter()
        .map(|(k, v)| OpData::default().with_key(s(k)).with_value(*v).with_remove(false))
        .chain(deleted.iter().map(|k| OpData::default().with_key(s(k)).with_value(0.0).with_remove(true)))
        .collect();
    let entry = alter_client_quotas_request::EntryData::default().with_entity(entity).with_ops(ops);
    AlterClientQuotasRequest::default().with_entries(vec![entry]).with_validate_only(false)
}

fn altered_quotas(response: &AlterClientQuotasResponse, entity: &[(String, Option<String>)]) -> Result<(), AnswerError> {
    let answered = response.entries.iter().find(|e| {
        let mut named: QuotaEntity =
            e.entity.iter().map(|p| (p.entity_type.to_string(), p.entity_name.as_ref().map(|n| n.to_string()))).collect();
        named.sort();
        named == entity
    });
    match answered {
        Some(e) => check(e.error_code, e.error_message.as_ref()),
        None => Err(AnswerError::Incomplete("the answer does not name the entity".into())),
    }
}

/// Kafka's line after an alteration: `Completed updating config for user alice.`, or for a
/// default alone `Completed updating default config for users in the cluster.`
fn quotas_altered_text(parts: &[QuotaPart]) -> String {
    let singular = |t: &str| match t {
        "user" => "user",
        "client-id" => "client",
        _ => "ip",
    };
    match parts {
        [QuotaPart { entity_type, name: QuotaName::Default }] => {
            format!("Completed updating default config for {}s in the cluster.\n", singular(entity_type))
        }
        _ => {
            let each: Vec<String> = parts
                .iter()
                .map(|p| match &p.name {
                    QuotaName::Named(name) => format!("{} {name}", singular(p.entity_type)),
                    QuotaName::Default | QuotaName::Any => format!("the default {}", singular(p.entity_type)),
                })
                .collect();
            format!("Completed updating config for {}.\n", each.join(", "))
        }
    }
}

fn alter_quotas(cluster: &mut Cluster, parts: &[QuotaPart], set: &[(String, f64)], deleted: &[String]) -> Result<String, AdminError> {
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let (_, response) = connection.call(|v| alter_quotas_request(parts, set, deleted, v))?;
    let entity = quota_entity(parts);
    altered_quotas(&response, &entity).map_err(|error| AdminError::Answer {
        context: format!("AlterClientQuotas for {} at {addr}", quota_entity_text(&entity)),
        error,
    })?;
    Ok(quotas_altered_text(parts))
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

    impl ConfigsArgs {
        /// The topic or broker named; `None` for every one.
        fn entity(&self) -> Result<Option<Entity>, AdminError> {
            match self.target()? {
                Target::Configs(_, entity) => Ok(entity),
                other => panic!("not a topic or broker: {other:?}"),
            }
        }

        fn quota_parts(&self) -> Result<Vec<QuotaPart>, AdminError> {
            match self.target()? {
                Target::Quotas(parts) => Ok(parts),
                other => panic!("not a quota entity: {other:?}"),
            }
        }
    }

    fn part(entity_type: &'static str, name: QuotaName) -> QuotaPart {
        QuotaPart { entity_type, name }
    }

    fn named(name: &str) -> QuotaName {
        QuotaName::Named(name.into())
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
            (&["--describe", "--entity-type", "brokers", "--entity-name", "1", "--entity-default"][..], "more --entity-name and --entity-default"),
            (&["--describe"][..], "give --entity-type"),
            (&["--describe", "--entity-type", "topics", "--entity-type", "users"][..], "topics and brokers take one --entity-type"),
            (&["--describe", "--entity-type", "users", "--user", "u"][..], "the entity type users is given more than once"),
            (&["--describe", "--ip", "1.2.3.4", "--user", "u"][..], "ips cannot be combined"),
            (&["--describe", "--user", "u", "--all"][..], "--all applies to topics and brokers"),
            (&["--alter", "--entity-type", "users", "--add-config", "producer_byte_rate=1"][..], "--alter needs --entity-name or --entity-default for each"),
            (&["--alter", "--entity-type", "users", "--entity-type", "clients", "--entity-name", "u", "--add-config", "producer_byte_rate=1"][..],
             "--alter needs --entity-name or --entity-default for each"),
        ] {
            let parsed = parse(args).unwrap();
            let error = parsed.target().and_then(|_| parsed.alterations()).unwrap_err().to_string();
            assert!(error.starts_with(message), "{args:?}: {error}");
        }
        assert!(parse(&["--describe", "--alter", "--entity-type", "topics"]).is_err());
        assert!(parse(&["--describe", "--entity-type", "groups"]).is_err());
    }

    #[test]
    fn quota_entities_pair_names_with_types_in_order() {
        let parse_parts = |args: &[&str]| parse(args).unwrap().quota_parts().unwrap();
        assert_eq!(parse_parts(&["--describe", "--entity-type", "users", "--entity-name", "alice"]), [part("user", named("alice"))]);
        assert_eq!(parse_parts(&["--describe", "--entity-type", "clients"]), [part("client-id", QuotaName::Any)]);
        assert_eq!(parse_parts(&["--describe", "--ip-defaults"]), [part("ip", QuotaName::Default)]);
        // The n-th name or default goes with the n-th type, wherever the types are.
        assert_eq!(
            parse_parts(&["--alter", "--entity-type", "users", "--entity-type", "clients", "--entity-default", "--entity-name", "app",
                          "--add-config", "request_percentage=5"]),
            [part("user", QuotaName::Default), part("client-id", named("app"))]
        );
        assert_eq!(
            parse_parts(&["--alter", "--entity-type", "users", "--entity-name", "u", "--entity-type", "clients", "--entity-default",
                          "--add-config", "request_percentage=5"]),
            [part("user", named("u")), part("client-id", QuotaName::Default)]
        );
        assert_eq!(
            parse_parts(&["--describe", "--entity-type", "users", "--entity-default", "--entity-type", "clients"]),
            [part("user", QuotaName::Default), part("client-id", QuotaName::Any)]
        );
        assert_eq!(parse_parts(&["--describe", "--client", "c", "--user", "u"]), [part("user", named("u")), part("client-id", named("c"))]);
        assert_eq!(
            parse_parts(&["--describe", "--entity-type", "users", "--entity-name", "u", "--client-defaults"]),
            [part("user", named("u")), part("client-id", QuotaName::Default)]
        );
        let error = quota_values(&[("producer_byte_rate".into(), "fast".into())]).unwrap_err().to_string();
        assert_eq!(error, "Cannot parse quota configuration value for producer_byte_rate: fast");
        assert_eq!(quota_values(&[("request_percentage".into(), "12.5".into())]).unwrap(), [("request_percentage".into(), 12.5)]);
    }

    #[test]
    fn quota_requests_encode_in_every_version() {
        let parts = [part("user", named("u")), part("client-id", QuotaName::Default)];
        let (min, max) = super::super::messages::client_versions(ApiKey::AlterClientQuotas).unwrap();
        for version in min..=max {
            let request = alter_quotas_request(&parts, &[("producer_byte_rate".into(), 1024.0)], &["consumer_byte_rate".into()], version);
            let mut buf = bytes::BytesMut::new();
            request.encode(&mut buf, version).unwrap();
            let decoded = AlterClientQuotasRequest::decode(&mut buf.freeze(), version).unwrap();
            let entry = &decoded.entries[0];
            let entity: Vec<(String, Option<String>)> =
                entry.entity.iter().map(|e| (e.entity_type.to_string(), e.entity_name.as_ref().map(|n| n.to_string()))).collect();
            assert_eq!(entity, [("client-id".into(), None), ("user".into(), Some("u".into()))]);
            let ops: Vec<(String, f64, bool)> = entry.ops.iter().map(|o| (o.key.to_string(), o.value, o.remove)).collect();
            assert_eq!(ops, [("producer_byte_rate".into(), 1024.0, false), ("consumer_byte_rate".into(), 0.0, true)]);
        }
        let filter = [part("user", named("u")), part("client-id", QuotaName::Default), part("ip", QuotaName::Any)];
        let (min, max) = super::super::messages::client_versions(ApiKey::DescribeClientQuotas).unwrap();
        for version in min..=max {
            let mut buf = bytes::BytesMut::new();
            describe_quotas_request(&filter, version).encode(&mut buf, version).unwrap();
            let decoded = DescribeClientQuotasRequest::decode(&mut buf.freeze(), version).unwrap();
            let components: Vec<(String, i8, Option<String>)> =
                decoded.components.iter().map(|c| (c.entity_type.to_string(), c.match_type, c._match.as_ref().map(|m| m.to_string()))).collect();
            assert_eq!(components, [("user".into(), 0, Some("u".into())), ("client-id".into(), 1, None), ("ip".into(), 2, None)]);
            assert!(decoded.strict);
        }
    }

    #[test]
    fn quotas_print_as_kafka_configs_prints_them() {
        use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
        let entity = |parts: &[(&str, Option<&str>)]| {
            parts.iter().map(|(t, n)| EntityData::default().with_entity_type(s(t)).with_entity_name(n.map(s))).collect::<Vec<_>>()
        };
        let values = |kv: &[(&str, f64)]| kv.iter().map(|(k, v)| ValueData::default().with_key(s(k)).with_value(*v)).collect::<Vec<_>>();
        let response = DescribeClientQuotasResponse::default().with_entries(Some(vec![
            EntryData::default()
                .with_entity(entity(&[("user", Some("alice"))]))
                .with_values(values(&[("request_percentage", 50.0), ("producer_byte_rate", 1048576.0)])),
            EntryData::default().with_entity(entity(&[("client-id", Some("app")), ("user", None)])).with_values(values(&[("consumer_byte_rate", 2048.0)])),
        ]));
        let described = described_quotas(response).unwrap();
        assert_eq!(
            render_quotas(&described),
            "Quota configs for the default user-principal, client-id 'app' are consumer_byte_rate=2048.0\n\
             Quota configs for user-principal 'alice' are producer_byte_rate=1048576.0, request_percentage=50.0\n"
        );
        assert_eq!(
            quotas_json(&described),
            json!([
                {"entity": {"client-id": "app", "user": null}, "configs": [{"name": "consumer_byte_rate", "value": 2048.0}]},
                {"entity": {"user": "alice"}, "configs": [{"name": "producer_byte_rate", "value": 1048576.0}, {"name": "request_percentage", "value": 50.0}]},
            ])
        );
        let refused = DescribeClientQuotasResponse::default().with_error_code(42).with_error_message(Some(s("bad filter"))).with_entries(None);
        assert_eq!(described_quotas(refused).unwrap_err().to_string(), "INVALID_REQUEST (42) (bad filter)");
        assert_eq!(quotas_altered_text(&[part("user", named("alice"))]), "Completed updating config for user alice.\n");
        assert_eq!(quotas_altered_text(&[part("client-id", QuotaName::Default)]), "Completed updating default config for clients in the cluster.\n");
        assert_eq!(
            quotas_altered_text(&[part("user", named("u")), part("client-id", QuotaName::Default)]),
            "Completed updating config for user u, the default client.\n"
        );
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
