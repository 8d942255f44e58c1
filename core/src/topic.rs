//! Topic names and topic configs: validation with the error codes Kafka gives, and the table
//! of topics every shard holds.

use std::collections::BTreeMap;

use crate::compression::TopicCompression;
use crate::error::ErrorCode;
use crate::log::LogConfig;

/// Kafka's limit: longer names break the `<topic>-<partition>` directory name.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Why a topic or config was refused, with the message Kafka puts in the response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub code: ErrorCode,
    pub message: String,
}

fn invalid(code: ErrorCode, message: impl Into<String>) -> Invalid {
    Invalid { code, message: message.into() }
}

/// Kafka's `Topic.validate`: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), Invalid> {
    let bad = |why: &str| Err(invalid(ErrorCode::InvalidTopicException, format!("topic name {name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name == "." || name == ".." {
        return bad("cannot be '.' or '..'");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return bad("is longer than 249 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return bad("contains characters other than ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

/// Where a config's value comes from: Kafka's `ConfigSource` codes, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// Set on the topic (`DYNAMIC_TOPIC_CONFIG`).
    Topic = 1,
    /// Set on this broker through the admin API (`DYNAMIC_BROKER_CONFIG`).
    DynamicBroker = 2,
    /// Set for every broker through the admin API (`DYNAMIC_DEFAULT_BROKER_CONFIG`).
    DynamicDefault = 3,
    /// Set in the broker's properties file or flags (`STATIC_BROKER_CONFIG`).
    StaticBroker = 4,
    /// Kafka's default (`DEFAULT_CONFIG`).
    Default = 5,
}

impl Source {
    pub fn code(self) -> i8 {
        self as i8
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A whole number no smaller than the bound (and no larger, for an `int`).
    Long { min: i64 },
    Int { min: i64, max: i64 },
    Ratio,
    Bool,
    Choice(&'static [&'static str]),
    /// `cleanup.policy`: a non-empty list of `delete` and `compact`.
    Policy,
    /// `*` or `partition:broker` pairs, as the replication throttles take them.
    Replicas,
    /// Accepted as given (a deprecated message format version).
    Text,
}

/// One Kafka topic config: its broker-wide synonyms (most specific first, each with the factor
/// that turns its unit into the topic config's), Kafka's default, and whether odradek acts on it.
#[derive(Debug, Clone, Copy)]
struct Def {
    name: &'static str,
    synonyms: &'static [(&'static str, i64)],
    default: &'static str,
    kind: Kind,
    applied: bool,
}

const fn def(name: &'static str, synonyms: &'static [(&'static str, i64)], default: &'static str, kind: Kind, applied: bool) -> Def {
    Def { name, synonyms, default, kind, applied }
}

const HOUR_MS: i64 = 3_600_000;
const LONG_MAX: &str = "9223372036854775807";
const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

/// Every topic config of Kafka 3.x/4.x (`TopicConfig`, `LogConfig`, `ServerTopicConfigSynonyms`),
/// in the order DescribeConfigs lists them. A config odradek does not act on (`applied` false)
/// is still validated, stored and described, so tools that set it work; docs/protocol.md lists them.
const DEFS: &[Def] = &[
    def("cleanup.policy", &[("log.cleanup.policy", 1)], "delete", Kind::Policy, true),
    def("compression.type", &[("compression.type", 1)], "producer", Kind::Choice(COMPRESSION_TYPES), true),
    def("compression.gzip.level", &[("compression.gzip.level", 1)], "-1", Kind::Int { min: -1, max: 9 }, true),
    def("compression.lz4.level", &[("compression.lz4.level", 1)], "9", Kind::Int { min: 1, max: 17 }, true),
    def("compression.zstd.level", &[("compression.zstd.level", 1)], "3", Kind::Int { min: -131_072, max: 22 }, true),
    def("delete.retention.ms", &[("log.cleaner.delete.retention.ms", 1)], "86400000", Kind::Long { min: 0 }, true),
    def("file.delete.delay.ms", &[("log.segment.delete.delay.ms", 1)], "60000", Kind::Long { min: 0 }, false),
    def("flush.messages", &[("log.flush.interval.messages", 1)], LONG_MAX, Kind::Long { min: 1 }, false),
    def("flush.ms", &[("log.flush.interval.ms", 1)], LONG_MAX, Kind::Long { min: 0 }, false),
    def("follower.replication.throttled.replicas", &[], "", Kind::Replicas, true),
    def("index.interval.bytes", &[("log.index.interval.bytes", 1)], "4096", Kind::Int { min: 0, max: i32::MAX as i64 }, true),
    def("leader.replication.throttled.replicas", &[], "", Kind::Replicas, true),
    def("local.retention.bytes", &[("log.local.retention.bytes", 1)], "-2", Kind::Long { min: -2 }, false),
    def("local.retention.ms", &[("log.local.retention.ms", 1)], "-2", Kind::Long { min: -2 }, false),
    def("max.compaction.lag.ms", &[("log.cleaner.max.compaction.lag.ms", 1)], LONG_MAX, Kind::Long { min: 1 }, false),
    def("max.message.bytes", &[("message.max.bytes", 1)], "1048588", Kind::Int { min: 0, max: i32::MAX as i64 }, true),
    def("message.downconversion.enable", &[("log.message.downconversion.enable", 1)], "true", Kind::Bool, false),
    def("message.format.version", &[("log.message.format.version", 1)], "3.0-IV1", Kind::Text, false),
    def("message.timestamp.after.max.ms", &[("log.message.timestamp.after.max.ms", 1)], "3600000", Kind::Long { min: 0 }, true),
    def("message.timestamp.before.max.ms", &[("log.message.timestamp.before.max.ms", 1)], LONG_MAX, Kind::Long { min: 0 }, true),
    def("message.timestamp.difference.max.ms", &[("log.message.timestamp.difference.max.ms", 1)], LONG_MAX, Kind::Long { min: 0 }, false),
    def("message.timestamp.type", &[("log.message.timestamp.type", 1)], "CreateTime", Kind::Choice(&["CreateTime", "LogAppendTime"]), true),
    def("min.cleanable.dirty.ratio", &[("log.cleaner.min.cleanable.ratio", 1)], "0.5", Kind::Ratio, true),
    def("min.compaction.lag.ms", &[("log.cleaner.min.compaction.lag.ms", 1)], "0", Kind::Long { min: 0 }, true),
    def("min.insync.replicas", &[("min.insync.replicas", 1)], "1", Kind::Int { min: 1, max: i32::MAX as i64 }, true),
    def("preallocate", &[("log.preallocate", 1)], "false", Kind::Bool, false),
    def("remote.log.copy.disable", &[], "false", Kind::Bool, false),
    def("remote.log.delete.on.disable", &[], "false", Kind::Bool, false),
    def("remote.storage.enable", &[], "false", Kind::Bool, false),
    def("retention.bytes", &[("log.retention.bytes", 1)], "-1", Kind::Long { min: i64::MIN }, true),
    def(
        "retention.ms",
        &[("log.retention.ms", 1), ("log.retention.minutes", 60_000), ("log.retention.hours", HOUR_MS)],
        "604800000",
        Kind::Long { min: -1 },
        true,
    ),
    def("segment.bytes", &[("log.segment.bytes", 1)], "1073741824", Kind::Int { min: 1024, max: i32::MAX as i64 }, true),
    def("segment.index.bytes", &[("log.index.size.max.bytes", 1)], "10485760", Kind::Int { min: 4, max: i32::MAX as i64 }, false),
    def("segment.jitter.ms", &[("log.roll.jitter.ms", 1), ("log.roll.jitter.hours", HOUR_MS)], "0", Kind::Long { min: 0 }, false),
    def("segment.ms", &[("log.roll.ms", 1), ("log.roll.hours", HOUR_MS)], "604800000", Kind::Long { min: 1 }, true),
    def("unclean.leader.election.enable", &[("unclean.leader.election.enable", 1)], "false", Kind::Bool, true),
];

fn find(name: &str) -> Option<&'static Def> {
    DEFS.iter().find(|d| d.name == name)
}

/// The topic config a broker-wide setting is a default for, and its unit factor.
fn synonym_of(broker_name: &str) -> Option<(&'static Def, i64)> {
    DEFS.iter().find_map(|d| d.synonyms.iter().find(|(s, _)| *s == broker_name).map(|&(_, factor)| (d, factor)))
}

/// Whether `name` is a topic config Kafka knows.
pub fn is_topic_config(name: &str) -> bool {
    find(name).is_some()
}

/// Whether odradek acts on topic config `name` (the others are stored and described only).
pub fn is_applied(name: &str) -> bool {
    find(name).is_some_and(|d| d.applied)
}

/// The broker settings that are defaults of topic configs (`log.retention.ms`, `message.max.bytes`...):
/// settable in the properties file and, for the whole cluster or one broker, through the admin API.
pub fn is_topic_default(broker_name: &str) -> bool {
    synonym_of(broker_name).is_some()
}

/// Topic configs whose value is a list: the ones IncrementalAlterConfigs may APPEND to or SUBTRACT from.
pub fn is_list(name: &str) -> bool {
    find(name).is_some_and(|d| matches!(d.kind, Kind::Policy | Kind::Replicas))
}

fn check(def: &Def, value: &str) -> Result<(), Invalid> {
    let name = def.name;
    let bad = |why: String| Err(invalid(ErrorCode::InvalidConfig, format!("Invalid value {value} for configuration {name}: {why}")));
    let v = value.trim();
    match def.kind {
        Kind::Long { min } => match v.parse::<i64>() {
            Ok(n) if n >= min => Ok(()),
            Ok(_) => bad(format!("Value must be at least {min}")),
            Err(_) => bad("Not a number of type LONG".into()),
        },
        Kind::Int { min, max } => match v.parse::<i32>() {
            Ok(n) if (min..=max).contains(&i64::from(n)) => Ok(()),
            Ok(_) if max == i64::from(i32::MAX) => bad(format!("Value must be at least {min}")),
            Ok(_) => bad(format!("Value must be in [{min}, {max}]")),
            Err(_) => bad("Not a number of type INT".into()),
        },
        Kind::Ratio => match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
            Ok(_) => bad("Value must be between 0 and 1".into()),
            Err(_) => bad("Not a number of type DOUBLE".into()),
        },
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => bad("Expected value to be either true or false".into()),
        },
        Kind::Choice(choices) => {
            if choices.contains(&v) {
                Ok(())
            } else {
                bad(format!("String must be one of: {}", choices.join(", ")))
            }
        }
        Kind::Policy => {
            let policies: Vec<&str> = v.split(',').map(str::trim).collect();
            if policies.iter().all(|p| *p == "delete" || *p == "compact") && !v.is_empty() {
                Ok(())
            } else {
                bad("each policy must be delete or compact".into())
            }
        }
        Kind::Replicas => {
            let pair = |p: &str| p.split_once(':').is_some_and(|(a, b)| a.trim().parse::<i32>().is_ok() && b.trim().parse::<i32>().is_ok());
            if v.is_empty() || v == "*" || v.split(',').all(|p| pair(p.trim())) {
                Ok(())
            } else {
                bad("must be * or a list of partition:broker pairs".into())
            }
        }
        Kind::Text => Ok(()),
    }?;
    if def.name == "compression.gzip.level" && v == "0" {
        return Err(invalid(ErrorCode::InvalidConfig, format!("Invalid value 0 for configuration {name}: Value must be between 1 and 9 or equal to -1")));
    }
    if def.name == "remote.storage.enable" && v.eq_ignore_ascii_case("true") {
        return Err(invalid(ErrorCode::InvalidConfig, "Tiered Storage functionality is disabled in the broker"));
    }
    Ok(())
}

/// Checks one broker-wide setting that is a topic default (see [`is_topic_default`]).
pub fn check_topic_default(broker_name: &str, value: &str) -> Result<(), Invalid> {
    let (def, factor) = synonym_of(broker_name)
        .ok_or_else(|| invalid(ErrorCode::InvalidConfig, format!("{broker_name} is not a topic default")))?;
    if factor == 1 {
        return check(def, value).map_err(|e| Invalid { message: e.message.replace(def.name, broker_name), ..e });
    }
    match value.trim().parse::<i64>() {
        Ok(n) if n >= -1 => Ok(()),
        _ => Err(invalid(ErrorCode::InvalidConfig, format!("Invalid value {value} for configuration {broker_name}: Value must be at least -1"))),
    }
}

/// The broker-wide layers a topic's configs fall back on, each keyed by broker setting name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerLayers {
    /// This broker's dynamic settings, from the metadata log.
    pub dynamic_broker: BTreeMap<String, String>,
    /// The cluster's dynamic defaults, from the metadata log.
    pub dynamic_default: BTreeMap<String, String>,
    /// The properties file and flags.
    pub static_broker: BTreeMap<String, String>,
}

impl BrokerLayers {
    fn layers(&self) -> [(Source, &BTreeMap<String, String>); 3] {
        [(Source::DynamicBroker, &self.dynamic_broker), (Source::DynamicDefault, &self.dynamic_default), (Source::StaticBroker, &self.static_broker)]
    }

    /// Every broker-wide value of `def`, most specific first, in the topic config's unit.
    fn synonyms(&self, def: &Def) -> Vec<Synonym> {
        let mut out = Vec::new();
        for (source, layer) in self.layers() {
            for &(name, _) in def.synonyms {
                if let Some(value) = layer.get(name) {
                    out.push(Synonym { name: name.to_owned(), value: value.trim().to_owned(), source });
                }
            }
        }
        out
    }
}

/// One synonym of a config as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    pub name: String,
    pub value: String,
    pub source: Source,
}

/// A topic config's effective value, where it comes from, and every value it overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    pub source: Source,
    /// The topic's own value (if any), then the broker-wide ones, then Kafka's default.
    pub synonyms: Vec<Synonym>,
}

/// A topic's settings: Kafka's defaults, under the broker's, under the topic's own overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub log: LogConfig,
    pub min_insync_replicas: i32,
    /// Whether the controller may elect a leader from outside the ISR (off by default).
    pub unclean_leader_election_enable: bool,
    /// `compression.type` with its levels: the codec the leader recompresses batches to.
    pub compression: TopicCompression,
    /// Values set on the topic itself (Kafka's `DYNAMIC_TOPIC_CONFIG` source).
    pub overrides: BTreeMap<String, String>,
    entries: Vec<ConfigEntry>,
}

impl TopicConfig {
    /// Applies `overrides` on top of the broker's `defaults`, refusing unknown names and bad
    /// values with INVALID_CONFIG, as CreateTopics and AlterConfigs must. A bad broker-wide
    /// value (checked where it was set) falls back to the next layer.
    pub fn new(defaults: &BrokerLayers, overrides: BTreeMap<String, String>) -> Result<TopicConfig, Invalid> {
        for (name, value) in &overrides {
            let def = find(name).ok_or_else(|| invalid(ErrorCode::InvalidConfig, format!("Unknown topic config name: {name}")))?;
            check(def, value)?;
        }
        let mut entries = Vec::with_capacity(DEFS.len());
        for def in DEFS {
            let mut synonyms = Vec::new();
            if let Some(value) = overrides.get(def.name) {
                synonyms.push(Synonym { name: def.name.to_owned(), value: value.trim().to_owned(), source: Source::Topic });
            }
            synonyms.extend(defaults.synonyms(def));
            let (default_name, default_value) = match def.synonyms.last() {
                Some(&(name, factor)) if factor != 1 => (name, (def.default.parse::<i64>().unwrap_or(0) / factor).to_string()),
                Some(&(name, _)) => (name, def.default.to_owned()),
                None => (def.name, def.default.to_owned()),
            };
            synonyms.push(Synonym { name: default_name.to_owned(), value: default_value, source: Source::Default });
            let chosen = synonyms.iter().find_map(|s| {
                let value = if s.source == Source::Topic || s.source == Source::Default {
                    Some(if s.source == Source::Default { def.default.to_owned() } else { s.value.clone() })
                } else {
                    in_topic_unit(def, &s.name, &s.value)
                };
                value.filter(|v| check(def, v).is_ok()).map(|v| (v, s.source))
            });
            let (value, source) = chosen.unwrap_or_else(|| (def.default.to_owned(), Source::Default));
            entries.push(ConfigEntry { name: def.name, value, source, synonyms });
        }
        let mut config = TopicConfig {
            log: LogConfig::default(),
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
            compression: TopicCompression::Producer,
            overrides,
            entries,
        };
        config.derive()?;
        Ok(config)
    }

    /// The typed settings odradek acts on, from the effective values (each checked already;
    /// the compression levels are checked together here, as Kafka checks them).
    fn derive(&mut self) -> Result<(), Invalid> {
        let values: BTreeMap<&str, &str> = self.entries.iter().map(|e| (e.name, e.value.trim())).collect();
        let long = |name: &str| values[name].parse::<i64>().expect("checked");
        let log = &mut self.log;
        let policy = values["cleanup.policy"];
        log.delete = policy.split(',').any(|p| p.trim() == "delete");
        log.compact = policy.split(',').any(|p| p.trim() == "compact");
        log.delete_retention_ms = long("delete.retention.ms");
        log.min_compaction_lag_ms = long("min.compaction.lag.ms");
        log.min_cleanable_dirty_permille = (values["min.cleanable.dirty.ratio"].parse::<f64>().expect("checked") * 1000.0).round() as u32;
        log.retention_ms = long("retention.ms");
        log.retention_bytes = long("retention.bytes");
        log.segment_bytes = long("segment.bytes") as u64;
        log.segment_ms = long("segment.ms");
        log.max_message_bytes = long("max.message.bytes") as usize;
        log.timestamp_before_max_ms = long("message.timestamp.before.max.ms");
        log.timestamp_after_max_ms = long("message.timestamp.after.max.ms");
        log.index_interval_bytes = long("index.interval.bytes") as u64;
        log.log_append_time = values["message.timestamp.type"] == "LogAppendTime";
        self.min_insync_replicas = long("min.insync.replicas") as i32;
        self.unclean_leader_election_enable = values["unclean.leader.election.enable"].eq_ignore_ascii_case("true");
        self.compression = TopicCompression::from_configs(
            values["compression.type"],
            values["compression.gzip.level"],
            values["compression.lz4.level"],
            values["compression.zstd.level"],
        )
        .map_err(|message| invalid(ErrorCode::InvalidConfig, message))?;
        Ok(())
    }

    /// Sets the replica settings that come from topic configs.
    pub fn apply_to(&self, replica: &mut crate::replica::ReplicaConfig) {
        replica.min_insync_replicas = usize::try_from(self.min_insync_replicas).unwrap_or(1).max(1);
        replica.max_message_bytes = self.log.max_message_bytes;
        replica.log_append_time = self.log.log_append_time;
        replica.compacted = self.log.compact;
        replica.cleanup_delete = self.log.delete;
        replica.timestamp_before_max_ms = self.log.timestamp_before_max_ms;
        replica.timestamp_after_max_ms = self.log.timestamp_after_max_ms;
        replica.compression = self.compression;
    }

    /// The effective value of topic config `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|e| e.name == name).map(|e| e.value.as_str())
    }

    /// Every topic config with its effective value, source and synonyms, in Kafka's order.
    pub fn entries(&self) -> &[ConfigEntry] {
        &self.entries
    }
}

/// Kafka's `ConfigType` code of topic config or topic default `name` (DescribeConfigs v3+).
pub fn config_type(name: &str) -> i8 {
    const BOOLEAN: i8 = 1;
    const STRING: i8 = 2;
    const INT: i8 = 3;
    const LONG: i8 = 5;
    const DOUBLE: i8 = 6;
    const LIST: i8 = 7;
    if name.ends_with(".replication.throttled.rate") {
        return LONG;
    }
    let kind = find(name).or_else(|| synonym_of(name).map(|(d, _)| d)).map(|d| d.kind);
    match kind {
        Some(Kind::Long { .. }) if synonym_of(name).is_some_and(|(_, factor)| factor != 1) => INT,
        Some(Kind::Long { .. }) => LONG,
        Some(Kind::Int { .. }) => INT,
        Some(Kind::Ratio) => DOUBLE,
        Some(Kind::Bool) => BOOLEAN,
        Some(Kind::Policy | Kind::Replicas) => LIST,
        Some(Kind::Choice(_) | Kind::Text) | None => STRING,
    }
}

impl BrokerLayers {
    /// Every broker setting that is a topic default, with its value here and where it comes
    /// from, most specific first; Kafka's default shows under the setting that carries it
    /// (`log.retention.hours=168`, not `log.retention.ms`, which has none).
    pub fn describe(&self) -> Vec<(&'static str, Option<String>, Source, Vec<Synonym>)> {
        let mut out = Vec::new();
        for def in DEFS {
            for (i, &(name, factor)) in def.synonyms.iter().enumerate() {
                let mut synonyms: Vec<Synonym> = self
                    .layers()
                    .into_iter()
                    .filter_map(|(source, layer)| layer.get(name).map(|v| Synonym { name: name.to_owned(), value: v.trim().to_owned(), source }))
                    .collect();
                if i + 1 == def.synonyms.len() {
                    let value = if factor == 1 { def.default.to_owned() } else { (def.default.parse::<i64>().unwrap_or(0) / factor).to_string() };
                    synonyms.push(Synonym { name: name.to_owned(), value, source: Source::Default });
                }
                let (value, source) = synonyms.first().map_or((None, Source::Default), |s| (Some(s.value.clone()), s.source));
                out.push((name, value, source, synonyms));
            }
        }
        out
    }
}

/// A broker-wide value in the topic config's unit (`log.retention.hours=1` → `3600000`).
fn in_topic_unit(def: &Def, broker_name: &str, value: &str) -> Option<String> {
    let factor = def.synonyms.iter().find(|(s, _)| *s == broker_name)?.1;
    if factor == 1 {
        return Some(value.to_owned());
    }
    let n: i64 = value.trim().parse().ok()?;
    Some(if n < 0 { n.to_string() } else { n.checked_mul(factor)?.to_string() })
}

/// What every shard knows about a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: i32,
    pub config: TopicConfig,
}

/// The topics, by name. A `BTreeMap` so Metadata lists them in a stable order.
pub type TopicTable = BTreeMap<String, TopicMeta>;

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<TopicConfig, Invalid> {
        let overrides = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TopicConfig::new(&BrokerLayers::default(), overrides)
    }

    fn entry<'a>(config: &'a TopicConfig, name: &str) -> &'a ConfigEntry {
        config.entries().iter().find(|e| e.name == name).unwrap()
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        for ok in ["a", "orders.v1", "A_b-c", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "ü", "a/b", &"x".repeat(250)] {
            assert_eq!(validate_topic_name(bad).unwrap_err().code, ErrorCode::InvalidTopicException);
        }
    }

    #[test]
    fn overrides_apply_and_are_reported_as_topic_level() {
        let config = with(&[("retention.ms", "1000"), ("message.timestamp.type", "LogAppendTime")]).unwrap();
        assert_eq!(config.log.retention_ms, 1000);
        assert!(config.log.log_append_time);
        assert_eq!((entry(&config, "retention.ms").value.as_str(), entry(&config, "retention.ms").source), ("1000", Source::Topic));
        let segment = entry(&config, "segment.bytes");
        assert_eq!((segment.value.as_str(), segment.source), ("1073741824", Source::Default));
        assert_eq!(config.entries().len(), DEFS.len());
    }

    #[test]
    fn bad_configs_are_invalid_config() {
        for pairs in [
            vec![("retention.ms", "soon")],
            vec![("segment.bytes", "10")],
            vec![("no.such.config", "1")],
            vec![("cleanup.policy", "compact,shred")],
            vec![("cleanup.policy", "")],
            vec![("min.cleanable.dirty.ratio", "1.5")],
            vec![("message.timestamp.type", "Later")],
            vec![("min.insync.replicas", "0")],
            vec![("unclean.leader.election.enable", "sometimes")],
            vec![("compression.type", "brotli")],
            vec![("compression.gzip.level", "10")],
            vec![("leader.replication.throttled.replicas", "0:x")],
            vec![("remote.storage.enable", "true")],
        ] {
            assert_eq!(with(&pairs).unwrap_err().code, ErrorCode::InvalidConfig, "{pairs:?}");
        }
    }

    #[test]
    fn every_kafka_topic_config_is_accepted_even_those_not_acted_on() {
        let config = with(&[
            ("compression.type", "zstd"),
            ("preallocate", "true"),
            ("flush.messages", "1"),
            ("leader.replication.throttled.replicas", "0:1,1:2"),
            ("follower.replication.throttled.replicas", "*"),
            ("message.format.version", "2.8"),
        ])
        .unwrap();
        assert_eq!(config.value("compression.type"), Some("zstd"));
        assert_eq!(entry(&config, "preallocate").source, Source::Topic);
        assert!(is_applied("compression.type") && !is_applied("preallocate"));
    }

    #[test]
    fn cleanup_policy_takes_kafka_policy_lists() {
        let compact = with(&[("cleanup.policy", "compact")]).unwrap();
        assert!(compact.log.compact && !compact.log.delete);
        let both = with(&[("cleanup.policy", "delete, compact"), ("min.cleanable.dirty.ratio", "0.25")]).unwrap();
        assert!(both.log.compact && both.log.delete);
        assert_eq!(both.log.min_cleanable_dirty_permille, 250);
        assert_eq!(with(&[]).unwrap().value("cleanup.policy"), Some("delete"));
    }

    #[test]
    fn broker_layers_apply_in_kafkas_order_with_units_and_synonyms() {
        let mut layers = BrokerLayers::default();
        layers.static_broker.insert("log.retention.hours".into(), "2".into());
        layers.static_broker.insert("min.insync.replicas".into(), "2".into());
        let config = TopicConfig::new(&layers, BTreeMap::new()).unwrap();
        assert_eq!(config.log.retention_ms, 2 * HOUR_MS);
        assert_eq!(config.min_insync_replicas, 2);
        let retention = entry(&config, "retention.ms");
        assert_eq!(retention.source, Source::StaticBroker);
        assert_eq!(retention.synonyms[0], Synonym { name: "log.retention.hours".into(), value: "2".into(), source: Source::StaticBroker });
        assert_eq!(retention.synonyms.last().unwrap(), &Synonym { name: "log.retention.hours".into(), value: "168".into(), source: Source::Default });

        // ms beats hours within a layer; a dynamic default beats the file; this broker's beats both.
        layers.static_broker.insert("log.retention.ms".into(), "5000".into());
        assert_eq!(TopicConfig::new(&layers, BTreeMap::new()).unwrap().log.retention_ms, 5000);
        layers.dynamic_default.insert("log.retention.ms".into(), "6000".into());
        let config = TopicConfig::new(&layers, BTreeMap::new()).unwrap();
        assert_eq!((config.log.retention_ms, entry(&config, "retention.ms").source), (6000, Source::DynamicDefault));
        layers.dynamic_broker.insert("log.retention.minutes".into(), "1".into());
        assert_eq!(TopicConfig::new(&layers, BTreeMap::new()).unwrap().log.retention_ms, 60_000);
        let topic = TopicConfig::new(&layers, [("retention.ms".to_owned(), "7".to_owned())].into()).unwrap();
        assert_eq!(topic.log.retention_ms, 7);
        let synonyms: Vec<(&str, Source)> = entry(&topic, "retention.ms").synonyms.iter().map(|s| (s.name.as_str(), s.source)).collect();
        assert_eq!(
            synonyms,
            [
                ("retention.ms", Source::Topic),
                ("log.retention.minutes", Source::DynamicBroker),
                ("log.retention.ms", Source::DynamicDefault),
                ("log.retention.ms", Source::StaticBroker),
                ("log.retention.hours", Source::StaticBroker),
                ("log.retention.hours", Source::Default),
            ]
        );
    }

    #[test]
    fn topic_defaults_are_checked_under_their_broker_names() {
        assert!(check_topic_default("log.retention.hours", "24").is_ok());
        assert!(check_topic_default("log.retention.hours", "soon").is_err());
        assert!(check_topic_default("message.max.bytes", "-5").unwrap_err().message.contains("message.max.bytes"));
        assert!(check_topic_default("log.cleanup.policy", "compact").is_ok());
        assert!(!is_topic_default("num.network.threads"));
        assert!(is_list("cleanup.policy") && !is_list("retention.ms"));
    }
}
