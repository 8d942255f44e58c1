//! Topic names and topic configs: validation with the error codes Kafka gives, and the table
//! of topics every shard holds.

use std::collections::BTreeMap;

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

/// The topic configs odradek understands, in the order DescribeConfigs lists them.
pub const TOPIC_CONFIG_NAMES: [&str; 15] = [
    "cleanup.policy",
    "delete.retention.ms",
    "min.compaction.lag.ms",
    "min.cleanable.dirty.ratio",
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "index.interval.bytes",
    "min.insync.replicas",
    "unclean.leader.election.enable",
];

/// A topic's settings: the broker defaults with the topic's own overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub log: LogConfig,
    pub min_insync_replicas: i32,
    /// Whether the controller may elect a leader from outside the ISR (off by default).
    pub unclean_leader_election_enable: bool,
    /// Values set on the topic itself (Kafka's `DYNAMIC_TOPIC_CONFIG` source).
    pub overrides: BTreeMap<String, String>,
}

impl TopicConfig {
    /// Applies `overrides` on top of `defaults`, refusing unknown names and bad values with
    /// INVALID_CONFIG, as CreateTopics must.
    pub fn new(
        defaults: &LogConfig,
        overrides: BTreeMap<String, String>,
    ) -> Result<TopicConfig, Invalid> {
        let mut config =
            TopicConfig {
            log: defaults.clone(),
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
            overrides: BTreeMap::new(),
        };
        for (name, value) in overrides {
            config.set(&name, &value)?;
            config.overrides.insert(name, value);
        }
        Ok(config)
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), Invalid> {
        let log = &mut self.log;
        match name {
            "cleanup.policy" => {
                // Kafka takes a comma-separated list of `delete` and `compact`, at least one.
                let (mut delete, mut compact) = (false, false);
                for policy in value.split(',').map(str::trim) {
                    match policy {
                        "delete" => delete = true,
                        "compact" => compact = true,
                        _ => {
                            return Err(invalid(
                                ErrorCode::InvalidConfig,
                                format!("cleanup.policy={value:?}: each policy must be delete or compact"),
                            ))
                        }
                    }
                }
                (log.delete, log.compact) = (delete, compact);
            }
            "delete.retention.ms" => log.delete_retention_ms = parse(name, value, 0)?,
            "min.compaction.lag.ms" => log.min_compaction_lag_ms = parse(name, value, 0)?,
            "min.cleanable.dirty.ratio" => {
                let ratio: f64 = parse(name, value, 0.0)?;
                if ratio > 1.0 {
                    return Err(invalid(ErrorCode::InvalidConfig, format!("{name}={value} is above the maximum 1")));
                }
                log.min_cleanable_dirty_permille = (ratio * 1000.0).round() as u32;
            }
            "retention.ms" => log.retention_ms = parse(name, value, -1)?,
            "retention.bytes" => log.retention_bytes = parse(name, value, -1)?,
            "segment.bytes" => log.segment_bytes = parse(name, value, 1024)?,
            "segment.ms" => log.segment_ms = parse(name, value, 1)?,
            "max.message.bytes" => log.max_message_bytes = parse(name, value, 0)?,
            "message.timestamp.before.max.ms" => log.timestamp_before_max_ms = parse(name, value, 0)?,
            "message.timestamp.after.max.ms" => log.timestamp_after_max_ms = parse(name, value, 0)?,
            "index.interval.bytes" => log.index_interval_bytes = parse(name, value, 0)?,
            "min.insync.replicas" => self.min_insync_replicas = parse(name, value, 1)?,
            "unclean.leader.election.enable" => {
                self.unclean_leader_election_enable = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(invalid(
                            ErrorCode::InvalidConfig,
                            format!("unclean.leader.election.enable must be true or false, not {value:?}"),
                        ))
                    }
                }
            }
            "message.timestamp.type" => {
                log.log_append_time = match value {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => {
                        return Err(invalid(
                            ErrorCode::InvalidConfig,
                            format!("message.timestamp.type must be CreateTime or LogAppendTime, not {value:?}"),
                        ))
                    }
                }
            }
            _ => return Err(invalid(ErrorCode::InvalidConfig, format!("unknown topic config {name:?}"))),
        }
        Ok(())
    }

    /// Current value of each config in [`TOPIC_CONFIG_NAMES`], and whether it is the topic's own.
    pub fn describe(&self) -> Vec<(&'static str, String, bool)> {
        let log = &self.log;
        TOPIC_CONFIG_NAMES
            .iter()
            .map(|&name| {
                let value = match name {
                    "cleanup.policy" => match (log.delete, log.compact) {
                        (true, true) => "compact,delete".to_owned(),
                        (false, true) => "compact".to_owned(),
                        _ => "delete".to_owned(),
                    },
                    "delete.retention.ms" => log.delete_retention_ms.to_string(),
                    "min.compaction.lag.ms" => log.min_compaction_lag_ms.to_string(),
                    "min.cleanable.dirty.ratio" => (f64::from(log.min_cleanable_dirty_permille) / 1000.0).to_string(),
                    "retention.ms" => log.retention_ms.to_string(),
                    "retention.bytes" => log.retention_bytes.to_string(),
                    "segment.bytes" => log.segment_bytes.to_string(),
                    "segment.ms" => log.segment_ms.to_string(),
                    "max.message.bytes" => log.max_message_bytes.to_string(),
                    "message.timestamp.type" => {
                        if log.log_append_time { "LogAppendTime" } else { "CreateTime" }.to_owned()
                    }
                    "message.timestamp.before.max.ms" => log.timestamp_before_max_ms.to_string(),
                    "message.timestamp.after.max.ms" => log.timestamp_after_max_ms.to_string(),
                    "index.interval.bytes" => log.index_interval_bytes.to_string(),
                    "min.insync.replicas" => self.min_insync_replicas.to_string(),
                    "unclean.leader.election.enable" => self.unclean_leader_election_enable.to_string(),
                    _ => unreachable!("every listed name has a value"),
                };
                (name, value, self.overrides.contains_key(name))
            })
            .collect()
    }
}

fn parse<T>(name: &str, value: &str, min: T) -> Result<T, Invalid>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match value.trim().parse::<T>() {
        Ok(v) if v >= min => Ok(v),
        Ok(_) => Err(invalid(ErrorCode::InvalidConfig, format!("{name}={value} is below the minimum {min}"))),
        Err(_) => Err(invalid(ErrorCode::InvalidConfig, format!("{name}={value:?} is not a valid number"))),
    }
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
        TopicConfig::new(&LogConfig::default(), overrides)
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
        let described = config.describe();
        assert!(described.contains(&("retention.ms", "1000".into(), true)));
        assert!(described.contains(&("segment.bytes", (1u64 << 30).to_string(), false)));
        assert_eq!(described.len(), TOPIC_CONFIG_NAMES.len());
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
        ] {
            assert_eq!(with(&pairs).unwrap_err().code, ErrorCode::InvalidConfig, "{pairs:?}");
        }
    }

    #[test]
    fn cleanup_policy_takes_kafka_policy_lists() {
        let compact = with(&[("cleanup.policy", "compact")]).unwrap();
        assert!(compact.log.compact && !compact.log.delete);
        let both = with(&[("cleanup.policy", "delete, compact"), ("min.cleanable.dirty.ratio", "0.25")]).unwrap();
        assert!(both.log.compact && both.log.delete);
        assert_eq!(both.log.min_cleanable_dirty_permille, 250);
        let described = both.describe();
        assert!(described.contains(&("cleanup.policy", "compact,delete".into(), true)));
        assert!(described.contains(&("min.cleanable.dirty.ratio", "0.25".into(), true)));
        let default = with(&[]).unwrap();
        assert!(default.describe().contains(&("cleanup.policy", "delete".into(), false)));
    }
}
