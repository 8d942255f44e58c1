//! Workload files: the OpenMessaging Benchmark (OMB) workload shape, in JSON.
//!
//! Field names are OMB's (`partitionsPerTopic`, `keyDistributor`, `producerRate`, ...), so an
//! OMB workload converts line by line. JSON rather than YAML keeps the dependency tree to
//! `serde_json`, which the workspace already has. OMB keeps client settings in a separate
//! driver file; here they sit in `producerConfig`/`consumerConfig` under Kafka's own property
//! names (`acks`, `linger.ms`, `batch.size`, `compression.type`), so the workload file alone
//! says what was run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    #[serde(default = "one")]
    pub topics: u32,
    pub partitions_per_topic: u32,
    /// Value size in bytes. The first 8 bytes carry the intended send time.
    #[serde(default = "default_message_size")]
    pub message_size: usize,
    /// A file whose bytes fill values (after the timestamp), as OMB's `payloadFile`.
    /// Relative paths resolve against the workload file. Default: pseudo-random bytes.
    #[serde(default)]
    pub payload_file: Option<PathBuf>,
    #[serde(default)]
    pub key_distributor: KeyDistributor,
    #[serde(default = "one")]
    pub subscriptions_per_topic: u32,
    #[serde(default = "one")]
    pub consumer_per_subscription: u32,
    #[serde(default = "one")]
    pub producers_per_topic: u32,
    /// Messages per second across all producers. 0 searches the highest sustainable rate and
    /// runs there (OMB's meaning of 0).
    #[serde(default)]
    pub producer_rate: f64,
    /// With `producerRate: 0`: run the measured phase at this fraction of the rate found.
    #[serde(default)]
    pub producer_rate_fraction_of_max: Option<f64>,
    /// Consumers hold back until this much has been produced, then drain it while producers
    /// go on (OMB's backlog test). 0: consumers read from the start.
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    #[serde(default)]
    pub warmup_duration_minutes: Option<f64>,
    #[serde(default)]
    pub test_duration_minutes: Option<f64>,
    /// Short runs on a shared machine: seconds win over minutes when both are given.
    #[serde(default)]
    pub warmup_duration_seconds: Option<f64>,
    #[serde(default)]
    pub test_duration_seconds: Option<f64>,
    #[serde(default)]
    pub producer_config: ProducerConfig,
    #[serde(default)]
    pub consumer_config: ConsumerConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    /// No key: Kafka's sticky partitioner fills one partition's batch, then moves on.
    #[default]
    NoKey,
    /// Keys cycle through a fixed set; the partition is murmur2(key), as Kafka's default.
    KeyRoundRobin,
    /// A fresh pseudo-random key per message.
    RandomNano,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerConfig {
    /// "0", "1" or "all" (also -1).
    #[serde(default = "default_acks")]
    pub acks: String,
    #[serde(rename = "linger.ms", default)]
    pub linger_ms: f64,
    #[serde(rename = "batch.size", default = "default_batch_size")]
    pub batch_size: usize,
    /// none, gzip, snappy, lz4, zstd.
    #[serde(rename = "compression.type", default = "default_compression")]
    pub compression_type: String,
    #[serde(rename = "max.in.flight.requests.per.connection", default = "default_in_flight")]
    pub max_in_flight: usize,
    #[serde(rename = "request.timeout.ms", default = "default_request_timeout")]
    pub request_timeout_ms: i32,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: default_acks(),
            linger_ms: 0.0,
            batch_size: default_batch_size(),
            compression_type: default_compression(),
            max_in_flight: default_in_flight(),
            request_timeout_ms: default_request_timeout(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    #[serde(rename = "fetch.max.wait.ms", default = "default_fetch_wait")]
    pub fetch_max_wait_ms: i32,
    #[serde(rename = "fetch.min.bytes", default = "one_i32")]
    pub fetch_min_bytes: i32,
    #[serde(rename = "max.partition.fetch.bytes", default = "default_partition_fetch")]
    pub max_partition_fetch_bytes: i32,
    #[serde(rename = "fetch.max.bytes", default = "default_fetch_max")]
    pub fetch_max_bytes: i32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_wait_ms: default_fetch_wait(),
            fetch_min_bytes: 1,
            max_partition_fetch_bytes: default_partition_fetch(),
            fetch_max_bytes: default_fetch_max(),
        }
    }
}

fn one() -> u32 {
    1
}
fn one_i32() -> i32 {
    1
}
fn default_message_size() -> usize {
    1024
}
fn default_acks() -> String {
    "all".into()
}
fn default_batch_size() -> usize {
    // Kafka's default is 16 KiB; OMB's Kafka driver raises it to 1 MiB with linger 1 ms.
    131_072
}
fn default_compression() -> String {
    "none".into()
}
fn default_in_flight() -> usize {
    5
}
fn default_request_timeout() -> i32 {
    30_000
}
fn default_fetch_wait() -> i32 {
    100
}
fn default_partition_fetch() -> i32 {
    1 << 20
}
fn default_fetch_max() -> i32 {
    50 << 20
}

/// Compression codecs, numbered as in the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

/// Timestamp bytes at the start of each value.
pub const TIMESTAMP_LEN: usize = 8;

impl Workload {
    pub fn load(path: &Path) -> Result<Workload, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut workload: Workload =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(payload) = &workload.payload_file {
            if payload.is_relative() {
                let base = path.parent().unwrap_or(Path::new("."));
                workload.payload_file = Some(base.join(payload));
            }
        }
        workload.validate()?;
        Ok(workload)
    }

    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("topics", self.topics),
            ("partitionsPerTopic", self.partitions_per_topic),
            ("producersPerTopic", self.producers_per_topic),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.message_size < TIMESTAMP_LEN {
            return Err(format!("messageSize must be at least {TIMESTAMP_LEN} (the timestamp)"));
        }
        if !(self.producer_rate >= 0.0 && self.producer_rate.is_finite()) {
            return Err("producerRate must be a finite rate >= 0".into());
        }
        if let Some(f) = self.producer_rate_fraction_of_max {
            if !(f > 0.0 && f <= 1.0) || self.producer_rate != 0.0 {
                return Err("producerRateFractionOfMax needs producerRate 0 and 0 < f <= 1".into());
            }
        }
        self.acks()?;
        self.compression()?;
        if self.producer_config.max_in_flight == 0 {
            return Err("max.in.flight.requests.per.connection must be at least 1".into());
        }
        if self.producer_config.batch_size < self.message_size + 100 {
            // One record per batch at least; a smaller batch.size would send oversized batches.
            return Err("batch.size must exceed messageSize".into());
        }
        if self.warmup().is_nan() || self.duration() <= 0.0 {
            return Err("the test duration must be positive".into());
        }
        Ok(())
    }

    pub fn acks(&self) -> Result<i16, String> {
        match self.producer_config.acks.as_str() {
            "0" => Ok(0),
            "1" => Ok(1),
            "all" | "-1" => Ok(-1),
            other => Err(format!("acks must be 0, 1 or all, not {other:?}")),
        }
    }

    pub fn compression(&self) -> Result<Compression, String> {
        match self.producer_config.compression_type.as_str() {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("unknown compression.type {other:?}")),
        }
    }

    /// Warm-up in seconds (default 10 s; OMB's default is one minute).
    pub fn warmup(&self) -> f64 {
        self.warmup_duration_seconds
            .or(self.warmup_duration_minutes.map(|m| m * 60.0))
            .unwrap_or(10.0)
    }

    /// Measured phase in seconds (default 60 s).
    pub fn duration(&self) -> f64 {
        self.test_duration_seconds.or(self.test_duration_minutes.map(|m| m * 60.0)).unwrap_or(60.0)
    }

    pub fn backlog_bytes(&self) -> u64 {
        (self.consumer_backlog_size_gb * 1e9) as u64
    }

    pub fn topic_names(&self, prefix: &str) -> Vec<String> {
        (0..self.topics).map(|i| format!("{prefix}-{i}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_workload_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                Workload::load(&path).unwrap_or_else(|e| panic!("{e}"));
                count += 1;
            }
        }
        assert!(count >= 5, "only {count} workloads shipped");
    }

    #[test]
    fn rejects_unknown_fields_and_bad_acks() {
        let bad = r#"{"name":"x","partitionsPerTopic":1,"partitonsPerTopic":2}"#;
        assert!(serde_json::from_str::<Workload>(bad).is_err());
        let w: Workload = serde_json::from_str(
            r#"{"name":"x","partitionsPerTopic":1,"producerConfig":{"acks":"2"}}"#,
        )
        .unwrap();
        assert!(w.validate().is_err());
    }
}
