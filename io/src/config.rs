//! Broker settings: embedded defaults, then a Kafka-style `server.properties` file, then flags.
//! Names follow Kafka's broker configs so an operator's knowledge carries over.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use odradek_core::group::GroupConfig;
use odradek_core::log::LogConfig;
use odradek_core::wire::DEFAULT_MAX_REQUEST_BYTES;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node_id: i32,
    pub listen: SocketAddr,
    /// Host and port clients are told to connect to (Metadata).
    pub advertised: (String, u16),
    pub data_dir: PathBuf,
    pub cores: usize,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub log: LogConfig,
    pub group: GroupConfig,
    pub retention_check_interval_ms: u64,
    pub max_request_bytes: usize,
    pub fsync: bool,
    pub spin_before_park_us: u64,
    /// `log.cleaner.enable`: run compaction for `cleanup.policy=compact` topics.
    pub cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: pause between cleaning passes over a core's partitions.
    pub cleaner_backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: key bytes one cleaning pass may map, per broker.
    pub cleaner_dedupe_buffer_bytes: usize,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets`, kept small so
    /// compaction has sealed segments to work on.
    pub offsets_topic_segment_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let listen: SocketAddr = "127.0.0.1:9092".parse().expect("valid address");
        ServerConfig {
            node_id: 0,
            listen,
            advertised: (listen.ip().to_string(), listen.port()),
            data_dir: PathBuf::from("data"),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            num_partitions: 1,
            auto_create_topics: true,
            log: LogConfig::default(),
            group: GroupConfig::default(),
            retention_check_interval_ms: 300_000,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            fsync: true,
            spin_before_park_us: 0,
            cleaner_enable: true,
            cleaner_backoff_ms: 15_000,
            cleaner_dedupe_buffer_bytes: 128 << 20,
            offsets_topic_segment_bytes: 100 << 20,
        }
    }
}

/// `odradek serve` flags. Each overrides the config file's value of the Kafka name shown.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A server.properties file (Kafka names, see docs/operations.md)
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Node id (node.id)
    #[arg(long)]
    pub node_id: Option<i32>,
    /// Address to listen on for Kafka clients (listeners) [default: 127.0.0.1:9092]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// host:port clients are told to use (advertised.listeners) [default: the listen address]
    #[arg(long)]
    pub advertised_listener: Option<String>,
    /// Directory for logs and metadata (log.dirs) [default: ./data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Cores to run on, one executor pinned per core [default: all]
    #[arg(long)]
    pub cores: Option<usize>,
    /// Partitions of auto-created topics (num.partitions) [default: 1]
    #[arg(long)]
    pub num_partitions: Option<i32>,
    /// Do not create topics on first use (auto.create.topics.enable=false)
    #[arg(long)]
    pub no_auto_create_topics: bool,
    /// Default retention.ms of topics (log.retention.ms) [default: 7 days]
    #[arg(long)]
    pub log_retention_ms: Option<i64>,
    /// Default retention.bytes of topics (log.retention.bytes) [default: -1, unlimited]
    #[arg(long)]
    pub log_retention_bytes: Option<i64>,
    /// Default segment.bytes of topics (log.segment.bytes) [default: 1 GiB]
    #[arg(long)]
    pub log_segment_bytes: Option<u64>,
    /// Default segment.ms of topics (log.roll.ms) [default: 7 days]
    #[arg(long)]
    pub log_roll_ms: Option<i64>,
    /// Default max.message.bytes of topics (message.max.bytes) [default: 1048588]
    #[arg(long)]
    pub message_max_bytes: Option<usize>,
    /// How often retention runs (log.retention.check.interval.ms) [default: 300000]
    #[arg(long)]
    pub log_retention_check_interval_ms: Option<u64>,
    /// Largest request accepted (socket.request.max.bytes) [default: 104857600]
    #[arg(long)]
    pub max_request_bytes: Option<usize>,
    /// Acknowledge writes without fsync: faster, but a power loss can lose acknowledged data
    #[arg(long)]
    pub no_fsync: bool,
    /// Spin this long before an idle core parks; trades CPU for fsync wake-up latency
    #[arg(long)]
    pub spin_before_park_us: Option<u64>,
    /// Wait for more members before a new group's first rebalance
    /// (group.initial.rebalance.delay.ms) [default: 3000]
    #[arg(long)]
    pub group_initial_rebalance_delay_ms: Option<i64>,
    /// Partitions of the internal __consumer_offsets topic, fixed once created
    /// (offsets.topic.num.partitions) [default: 50]
    #[arg(long)]
    pub offsets_topic_num_partitions: Option<i32>,
    /// Segment size of __consumer_offsets (offsets.topic.segment.bytes) [default: 104857600]
    #[arg(long)]
    pub offsets_topic_segment_bytes: Option<u64>,
    /// Pause between compaction passes (log.cleaner.backoff.ms) [default: 15000]
    #[arg(long)]
    pub log_cleaner_backoff_ms: Option<u64>,
}

impl ServeArgs {
    pub fn resolve(&self) -> Result<ServerConfig, String> {
        let mut config = ServerConfig::default();
        let mut advertised_set = false;
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for (key, value) in parse_properties(&text)? {
                advertised_set |= key == "advertised.listeners";
                config.set(&key, &value).map_err(|e| format!("{}: {key}: {e}", path.display()))?;
            }
        }
        let flags: [(&str, Option<String>); 18] = [
            ("node.id", self.node_id.map(|v| v.to_string())),
            ("listeners", self.listen.map(|v| v.to_string())),
            ("advertised.listeners", self.advertised_listener.clone()),
            ("log.dirs", self.data_dir.as_ref().map(|v| v.display().to_string())),
            ("cores", self.cores.map(|v| v.to_string())),
            ("num.partitions", self.num_partitions.map(|v| v.to_string())),
            ("auto.create.topics.enable", self.no_auto_create_topics.then(|| "false".into())),
            ("log.retention.ms", self.log_retention_ms.map(|v| v.to_string())),
            ("log.retention.bytes", self.log_retention_bytes.map(|v| v.to_string())),
            ("log.segment.bytes", self.log_segment_bytes.map(|v| v.to_string())),
            ("log.roll.ms", self.log_roll_ms.map(|v| v.to_string())),
            ("message.max.bytes", self.message_max_bytes.map(|v| v.to_string())),
            ("log.retention.check.interval.ms", self.log_retention_check_interval_ms.map(|v| v.to_string())),
            ("socket.request.max.bytes", self.max_request_bytes.map(|v| v.to_string())),
            ("group.initial.rebalance.delay.ms", self.group_initial_rebalance_delay_ms.map(|v| v.to_string())),
            ("offsets.topic.num.partitions", self.offsets_topic_num_partitions.map(|v| v.to_string())),
            ("offsets.topic.segment.bytes", self.offsets_topic_segment_bytes.map(|v| v.to_string())),
            ("log.cleaner.backoff.ms", self.log_cleaner_backoff_ms.map(|v| v.to_string())),
        ];
        for (key, value) in flags {
            if let Some(value) = value {
                advertised_set |= key == "advertised.listeners";
                config.set(key, &value).map_err(|e| format!("--{}: {e}", key.replace('.', "-")))?;
            }
        }
        if self.no_fsync {
            config.fsync = false;
        }
        if let Some(us) = self.spin_before_park_us {
            config.spin_before_park_us = us;
        }
        if !advertised_set {
            config.advertised = (config.listen.ip().to_string(), config.listen.port());
        }
        config.validate()?;
        Ok(config)
    }
}

impl ServerConfig {
    /// Sets one setting by its Kafka name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn num<T: std::str::FromStr>(value: &str) -> Result<T, String> {
            value.trim().parse().map_err(|_| format!("{value:?} is not a valid number"))
        }
        match key {
            "node.id" | "broker.id" => self.node_id = num(value)?,
            "listeners" => self.listen = parse_listener(value)?,
            "advertised.listeners" => {
                let addr = value.trim().trim_start_matches("PLAINTEXT://");
                let (host, port) = addr.rsplit_once(':').ok_or("expected host:port")?;
                self.advertised = (host.to_owned(), num(port)?);
            }
            "log.dirs" | "log.dir" => self.data_dir = PathBuf::from(value.trim()),
            "cores" => self.cores = num(value)?,
            "num.partitions" => self.num_partitions = num(value)?,
            "auto.create.topics.enable" => self.auto_create_topics = parse_bool(value)?,
            "log.retention.ms" => self.log.retention_ms = num(value)?,
            "log.retention.minutes" => self.log.retention_ms = num::<i64>(value)? * 60_000,
            "log.retention.hours" => self.log.retention_ms = num::<i64>(value)? * 3_600_000,
            "log.retention.bytes" => self.log.retention_bytes = num(value)?,
            "log.segment.bytes" => self.log.segment_bytes = num(value)?,
            "log.roll.ms" => self.log.segment_ms = num(value)?,
            "log.roll.hours" => self.log.segment_ms = num::<i64>(value)? * 3_600_000,
            "log.index.interval.bytes" => self.log.index_interval_bytes = num(value)?,
            "message.max.bytes" => self.log.max_message_bytes = num(value)?,
            "log.message.timestamp.type" => {
                self.log.log_append_time = match value.trim() {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err("expected CreateTime or LogAppendTime".into()),
                }
            }
            "log.retention.check.interval.ms" => self.retention_check_interval_ms = num(value)?,
            "log.cleanup.policy" => {
                let topic = odradek_core::topic::TopicConfig::new(
                    &self.log,
                    BTreeMap::from([("cleanup.policy".to_owned(), value.to_owned())]),
                )
                .map_err(|e| e.to_string())?;
                (self.log.delete, self.log.compact) = (topic.log.delete, topic.log.compact);
            }
            "log.cleaner.enable" => self.cleaner_enable = parse_bool(value)?,
            "log.cleaner.backoff.ms" => self.cleaner_backoff_ms = num(value)?,
            "log.cleaner.dedupe.buffer.size" => self.cleaner_dedupe_buffer_bytes = num(value)?,
            "log.cleaner.delete.retention.ms" => self.log.delete_retention_ms = num(value)?,
            "log.cleaner.min.compaction.lag.ms" => self.log.min_compaction_lag_ms = num(value)?,
            "log.cleaner.min.cleanable.ratio" => {
                let ratio: f64 = num(value)?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err("expected a ratio between 0 and 1".into());
                }
                self.log.min_cleanable_dirty_permille = (ratio * 1000.0).round() as u32;
            }
            "offsets.topic.segment.bytes" => self.offsets_topic_segment_bytes = num(value)?,
            "socket.request.max.bytes" => self.max_request_bytes = num(value)?,
            "group.initial.rebalance.delay.ms" => self.group.initial_rebalance_delay_ms = num(value)?,
            "group.min.session.timeout.ms" => self.group.min_session_timeout_ms = num(value)?,
            "group.max.session.timeout.ms" => self.group.max_session_timeout_ms = num(value)?,
            "offsets.topic.num.partitions" => self.group.offsets_topic_partitions = num(value)?,
            "offsets.retention.minutes" => self.group.offsets_retention_ms = num::<i64>(value)? * 60_000,
            "offset.metadata.max.bytes" => self.group.offset_metadata_max_bytes = num(value)?,
            _ => return Err("unknown setting".into()),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), String> {
        if self.cores == 0 {
            return Err("cores must be at least 1".into());
        }
        if self.num_partitions < 1 {
            return Err("num.partitions must be at least 1".into());
        }
        if self.log.segment_bytes < 1024 {
            return Err("log.segment.bytes must be at least 1024".into());
        }
        if self.log.segment_ms < 1 {
            return Err("log.roll.ms must be at least 1".into());
        }
        if self.retention_check_interval_ms < 1 {
            return Err("log.retention.check.interval.ms must be at least 1".into());
        }
        if self.group.offsets_topic_partitions < 1 {
            return Err("offsets.topic.num.partitions must be at least 1".into());
        }
        if self.group.initial_rebalance_delay_ms < 0 {
            return Err("group.initial.rebalance.delay.ms must not be negative".into());
        }
        if self.group.min_session_timeout_ms > self.group.max_session_timeout_ms {
            return Err("group.min.session.timeout.ms must not exceed group.max.session.timeout.ms".into());
        }
        if self.cleaner_backoff_ms < 1 {
            return Err("log.cleaner.backoff.ms must be at least 1".into());
        }
        if self.offsets_topic_segment_bytes < 1024 {
            return Err("offsets.topic.segment.bytes must be at least 1024".into());
        }
        if self.max_request_bytes < 1024 {
            return Err("socket.request.max.bytes must be at least 1024".into());
        }
        Ok(())
    }
}

fn parse_listener(value: &str) -> Result<SocketAddr, String> {
    let addr = value.trim().trim_start_matches("PLAINTEXT://");
    addr.parse().map_err(|_| format!("{value:?} is not an ip:port listener"))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

/// Java-properties subset: `key=value` or `key: value` lines, `#`/`!` comments.
pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (key, value) = line
            .split_once(['=', ':'])
            .ok_or_else(|| format!("line {}: expected key=value", n + 1))?;
        out.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<PathBuf>) -> ServeArgs {
        ServeArgs {
            config,
            node_id: None,
            listen: None,
            advertised_listener: None,
            data_dir: None,
            cores: None,
            num_partitions: None,
            no_auto_create_topics: false,
            log_retention_ms: None,
            log_retention_bytes: None,
            log_segment_bytes: None,
            log_roll_ms: None,
            message_max_bytes: None,
            log_retention_check_interval_ms: None,
            max_request_bytes: None,
            no_fsync: false,
            spin_before_park_us: None,
            group_initial_rebalance_delay_ms: None,
            offsets_topic_num_partitions: None,
            offsets_topic_segment_bytes: None,
            log_cleaner_backoff_ms: None,
        }
    }

    #[test]
    fn defaults_are_a_local_dev_node() {
        let config = args(None).resolve().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.advertised, ("127.0.0.1".to_owned(), 9092));
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert!(config.fsync && config.auto_create_topics);
    }

    #[test]
    fn flags_override_the_file_and_bad_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("odradek-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("server.properties");
        std::fs::write(&file, "# dev\nlisteners=PLAINTEXT://127.0.0.1:9500\nnum.partitions=3\nlog.retention.hours=1\n").unwrap();
        let mut a = args(Some(file.clone()));
        a.num_partitions = Some(5);
        let config = a.resolve().unwrap();
        assert_eq!((config.listen.port(), config.advertised.1), (9500, 9500));
        assert_eq!(config.num_partitions, 5);
        assert_eq!(config.log.retention_ms, 3_600_000);

        std::fs::write(&file, "num.partitions=many\n").unwrap();
        assert!(args(Some(file.clone())).resolve().unwrap_err().contains("num.partitions"));
        std::fs::write(&file, "no.such.setting=1\n").unwrap();
        assert!(args(Some(file.clone())).resolve().unwrap_err().contains("unknown setting"));
        let mut a = args(None);
        a.num_partitions = Some(0);
        assert!(a.resolve().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
