//! Broker settings: embedded defaults, then a Kafka-style `server.properties` file, then flags.
//! Names follow Kafka's broker configs so an operator's knowledge carries over.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use std::path::PathBuf;

use clap::Args;
use odradek_core::group::GroupConfig;
use odradek_core::log::LogConfig;
use odradek_core::wire::DEFAULT_MAX_REQUEST_BYTES;

use crate::listeners::{Listener, ListenerSettings, NotApplied, Resolved};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node_id: i32,
    /// `listeners` and their security, as set.
    pub listener_settings: ListenerSettings,
    /// The client listeners, resolved from `listener_settings` once every setting is in.
    pub listeners: Vec<Listener>,
    /// Security settings read but not acted on, logged once at start.
    pub not_applied: NotApplied,
    /// The listener of `controller.listener.names`, when the controller listener is given that way.
    pub controller_listener: Option<Listener>,
    /// ACLs are enforced when `authorizer.class.name` names an authorizer; `super.users` and
    /// `allow.everyone.if.no.acl.found` shape the decisions (docs/security.md).
    pub authorizer: Option<odradek_core::acl::AuthorizerConfig>,
    /// `super.users` and `allow.everyone.if.no.acl.found` as set, applied if there is an authorizer.
    pub authorizer_settings: odradek_core::acl::AuthorizerConfig,
    /// The first of `log_dirs`, which also holds the node's metadata (`meta.properties`, the
    /// metadata log), as Kafka's `metadata.log.dir` defaults to the first of `log.dirs`.
    pub data_dir: PathBuf,
    /// `log.dirs`: the directories partition replicas are spread over (JBOD,
    /// `storage::LogDirs`).
    pub log_dirs: Vec<PathBuf>,
    pub cores: usize,
    /// Where the executors run (`cpuset`).
    pub cpuset: CpuSet,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    /// The topic defaults set here (`log.retention.hours`, `message.max.bytes`...), by broker
    /// setting name: the static layer under dynamic broker configs (docs/operations.md).
    pub topic_defaults: BTreeMap<String, String>,
    /// The topic defaults resolved (what a topic without overrides or dynamic configs gets).
    pub log: LogConfig,
    /// `unclean.leader.election.enable`, the default for topics that do not set it.
    pub unclean_leader_election_enable: bool,
    /// `auto.leader.rebalance.enable`: the active controller moves leaderships back to
    /// preferred replicas every `leader.imbalance.check.interval.seconds`.
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_interval_s: i64,
    /// `leader.imbalance.per.broker.percentage`
    pub leader_imbalance_per_broker_percentage: u32,
    /// `quota.window.num` and `quota.window.size.seconds`: what client quotas are measured over.
    pub quota_window: odradek_core::quota::QuotaWindow,
    pub group: GroupConfig,
    /// The transaction coordinator's settings (`transaction.*`).
    pub txn: odradek_core::txn::TxnConfig,
    pub retention_check_interval_ms: u64,
    pub max_request_bytes: usize,
    /// `connections.max.idle.ms`: a client connection that has not delivered a whole request
    /// this long after its last response (or its opening) is closed. Negative: never.
    pub connections_max_idle_ms: i64,
    /// `max.connections`: client connections the node holds at once, over all its cores.
    pub max_connections: i32,
    /// `max.connections.per.ip`: client connections one address may hold at once.
    pub max_connections_per_ip: i32,
    /// `max.connections.per.ip.overrides` (`host-or-ip:count,...`), by address.
    pub max_connections_per_ip_overrides: BTreeMap<IpAddr, i32>,
    pub fsync: bool,
    /// How segment files are written: direct IO unless `--buffered-writes`.
    pub write_mode: crate::storage::WriteMode,
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
    /// Replicas of a cluster's `__consumer_offsets`; it is not created with fewer brokers.
    pub offsets_topic_replication_factor: i16,
    /// `process.roles`: `broker`, `controller`, or both (the default).
    pub roles: Roles,
    /// `controller.quorum.voters` (`id@host:port,...`). Empty: this node alone is the quorum
    /// (one voter, no controller listener), on the same code path as a larger cluster.
    pub quorum_voters: Vec<(i32, SocketAddr)>,
    /// `controller.quorum.observers` (odradek's own, same form): broker-only nodes. The
    /// metadata log is pushed to them (push-style Raft, docs/controller.md), so the quorum
    /// must know where they listen.
    pub quorum_observers: Vec<(i32, SocketAddr)>,
    /// `controller.listener`: where this node accepts quorum and controller traffic. Defaults
    /// to its own entry in the voters (or observers) list.
    pub controller_listen: Option<SocketAddr>,
    /// `default.replication.factor`
    pub default_replication_factor: i16,
    /// `min.insync.replicas`, the default for topics that do not set it.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`
    pub replica_lag_time_max_ms: i64,
    /// `broker.session.timeout.ms`: the active controller fences a broker silent this long.
    pub broker_session_timeout_ms: i64,
    /// `broker.heartbeat.interval.ms`
    pub broker_heartbeat_interval_ms: u64,
    /// `controller.quorum.election.timeout.ms`
    pub quorum_election_timeout_ms: i64,
    /// `metrics.listen` (odradek's own): where `GET /metrics` answers in Prometheus' text
    /// format (docs/metrics.md); no endpoint when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// `broker.rack`: the rack (or zone) the broker registers in, which rack-aware replica
    /// placement spreads each partition's replicas over (docs/operations.md).
    pub broker_rack: Option<String>,
    /// `replication.quota.window.num` and `replication.quota.window.size.seconds`: the samples
    /// the replication throttles measure their rates over.
    pub replication_quota_window: odradek_core::replication_quota::QuotaWindow,
}

/// `process.roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

impl ServerConfig {
    /// No quorum configured: a one-voter quorum of this node, which is then the only broker.
    pub fn standalone(&self) -> bool {
        self.quorum_voters.is_empty()
    }

    /// The quorum's voters: the configured ones, or this node alone.
    pub fn voters(&self) -> Vec<i32> {
        if self.standalone() {
            return vec![self.node_id];
        }
        let mut voters: Vec<i32> = self.quorum_voters.iter().map(|(id, _)| *id).collect();
        voters.sort_unstable();
        voters
    }

    /// Replicas `__consumer_offsets` is created with: `offsets.topic.replication.factor`,
    /// capped at the nodes the quorum configuration names (the only brokers there can be, as
    /// the voter set is static), so a standalone node gets 1 where Kafka's dev configs set it.
    pub fn offsets_topic_replicas(&self) -> i16 {
        let nodes = if self.standalone() { 1 } else { self.quorum_voters.len() + self.quorum_observers.len() };
        self.offsets_topic_replication_factor.min(i16::try_from(nodes).unwrap_or(i16::MAX))
    }

    /// `__consumer_offsets` as Kafka creates it: compacted (the coordinator rebuilds groups by
    /// replaying it, so only each key's latest record matters), `offsets.topic.segment.bytes`
    /// segments, `offsets.topic.replication.factor` replicas.
    pub fn offsets_topic(&self) -> odradek_core::controller::CreatableTopic {
        odradek_core::controller::CreatableTopic {
            name: odradek_core::group::OFFSETS_TOPIC.to_owned(),
            num_partitions: self.group.offsets_topic_partitions,
            replication_factor: self.offsets_topic_replicas(),
            configs: BTreeMap::from([
                ("cleanup.policy".to_owned(), "compact".to_owned()),
                ("segment.bytes".to_owned(), self.offsets_topic_segment_bytes.to_string()),
            ]),
            assignments: Vec::new(),
        }
    }

    /// `__transaction_state` as Kafka creates it: compacted, `transaction.state.log.num.partitions`
    /// partitions, as many replicas as `__consumer_offsets` (Kafka's
    /// `transaction.state.log.replication.factor` has the same default), and Kafka's
    /// `transaction.state.log.min.isr` of 2 where there are that many replicas.
    pub fn transaction_state_topic(&self) -> odradek_core::controller::CreatableTopic {
        let replicas = self.offsets_topic_replicas();
        odradek_core::controller::CreatableTopic {
            name: odradek_core::txn::TXN_TOPIC.to_owned(),
            num_partitions: self.txn.partitions,
            replication_factor: replicas,
            configs: BTreeMap::from([
                ("cleanup.policy".to_owned(), "compact".to_owned()),
                ("segment.bytes".to_owned(), self.offsets_topic_segment_bytes.to_string()),
                ("min.insync.replicas".to_owned(), replicas.min(2).to_string()),
            ]),
            assignments: Vec::new(),
        }
    }

    /// `connections.max.idle.ms` as a duration; `None` when idle connections stay open. Kafka
    /// takes any long; beyond a year is taken as a year, which timers can add to `Instant`s.
    pub fn connections_max_idle(&self) -> Option<Duration> {
        const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
        u64::try_from(self.connections_max_idle_ms).ok().map(|ms| Duration::from_millis(ms.min(YEAR_MS)))
    }

    /// This node's quorum address (controller listener).
    pub fn quorum_address(&self) -> Option<SocketAddr> {
        self.controller_listen.or_else(|| {
            self.quorum_voters.iter().chain(&self.quorum_observers).find(|(id, _)| *id == self.node_id).map(|(_, a)| *a)
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        let listener_settings = ListenerSettings::default_listener();
        let Resolved { listeners, controller, not_applied } = listener_settings.resolve().expect("the default listener resolves");
        ServerConfig {
            node_id: 0,
            listener_settings,
            listeners,
            not_applied,
            controller_listener: controller,
            authorizer: None,
            authorizer_settings: Default::default(),
            data_dir: PathBuf::from("data"),
            log_dirs: vec![PathBuf::from("data")],
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpuset: CpuSet::Auto,
            num_partitions: 1,
            auto_create_topics: true,
            topic_defaults: BTreeMap::new(),
            log: LogConfig::default(),
            unclean_leader_election_enable: false,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_s: 300,
            leader_imbalance_per_broker_percentage: 10,
            quota_window: odradek_core::quota::QuotaWindow::default(),
            group: GroupConfig::default(),
            txn: odradek_core::txn::TxnConfig::default(),
            retention_check_interval_ms: 300_000,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            connections_max_idle_ms: 600_000,
            max_connections: i32::MAX,
            max_connections_per_ip: i32::MAX,
            max_connections_per_ip_overrides: BTreeMap::new(),
            fsync: true,
            write_mode: crate::storage::WriteMode::Direct,
            spin_before_park_us: 0,
            cleaner_enable: true,
            cleaner_backoff_ms: 15_000,
            cleaner_dedupe_buffer_bytes: 128 << 20,
            offsets_topic_segment_bytes: 100 << 20,
            offsets_topic_replication_factor: 3,
            roles: Roles { broker: true, controller: true },
            quorum_voters: Vec::new(),
            quorum_observers: Vec::new(),
            controller_listen: None,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            quorum_election_timeout_ms: 1_000,
            metrics_listen: None,
            broker_rack: None,
            replication_quota_window: Default::default(),
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
    /// Addresses to listen on for Kafka clients, host:port or NAME://host:port,... (listeners)
    /// [default: 127.0.0.1:9092]
    #[arg(long)]
    pub listen: Option<String>,
    /// host:port or NAME://host:port,... clients are told to use (advertised.listeners)
    /// [default: each listener's own address]
    #[arg(long)]
    pub advertised_listener: Option<String>,
    /// Directory for logs and metadata (log.dirs); several, repeated or comma-separated, spread
    /// the partitions over them, the first holding the metadata too [default: ./data]
    #[arg(long, value_delimiter = ',')]
    pub data_dir: Vec<PathBuf>,
    /// Cores to run on, one executor pinned per core [default: all, or the --cpuset's]
    #[arg(long)]
    pub cores: Option<usize>,
    /// CPUs the executors are pinned to, in core order ("2-3", "0,2"), or "none" to leave
    /// them to the OS scheduler [default: core i on CPU i with a core on every CPU, else none]
    #[arg(long)]
    pub cpuset: Option<String>,
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
    /// Write segment files through the page cache instead of with direct IO (the default)
    #[arg(long)]
    pub buffered_writes: bool,
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
    /// Replicas of __consumer_offsets on a cluster, created on first FindCoordinator once
    /// this many brokers are registered (offsets.topic.replication.factor) [default: 3]
    #[arg(long)]
    pub offsets_topic_replication_factor: Option<i16>,
    /// Pause between compaction passes (log.cleaner.backoff.ms) [default: 15000]
    #[arg(long)]
    pub log_cleaner_backoff_ms: Option<u64>,
    /// Roles of this process: broker, controller, or both (process.roles) [default: both]
    #[arg(long)]
    pub process_roles: Option<String>,
    /// The controller quorum, id@host:port,... (controller.quorum.voters) [default: this node
    /// alone, a one-voter quorum]
    #[arg(long)]
    pub controller_quorum_voters: Option<String>,
    /// Broker-only nodes the metadata log is pushed to, id@host:port,...
    /// (controller.quorum.observers)
    #[arg(long)]
    pub controller_quorum_observers: Option<String>,
    /// Address for quorum and controller traffic (controller.listener) [default: this node's
    /// entry in the voters]
    #[arg(long)]
    pub controller_listen: Option<SocketAddr>,
    /// Replication factor of auto-created topics and of CreateTopics asking for -1
    /// (default.replication.factor) [default: 1]
    #[arg(long)]
    pub default_replication_factor: Option<i16>,
    /// Smallest ISR for acks=all (min.insync.replicas) [default: 1]
    #[arg(long)]
    pub min_insync_replicas: Option<usize>,
    /// Fence a broker silent this long (broker.session.timeout.ms) [default: 9000]
    #[arg(long)]
    pub broker_session_timeout_ms: Option<i64>,
    /// Drop an ISR follower not caught up this long (replica.lag.time.max.ms) [default: 30000]
    #[arg(long)]
    pub replica_lag_time_max_ms: Option<i64>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (metrics.listen) [default: off]
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
    /// The rack this broker registers in, for rack-aware replica placement (broker.rack)
    /// [default: none]
    #[arg(long)]
    pub broker_rack: Option<String>,
}

impl ServeArgs {
    pub fn resolve(&self) -> Result<ServerConfig, String> {
        let mut config = ServerConfig::default();
        let mut ignored = Vec::new();
        let mut cores_set = self.cores.is_some();
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for (key, value) in parse_properties(&text)? {
                cores_set |= key == "cores";
                // A stock Kafka server.properties starts the broker: settings odradek has no use
                // for are named once at start, as Kafka names those it does not know.
                if !config.set(&key, &value).map_err(|e| format!("{}: {key}: {e}", path.display()))? {
                    ignored.push(key);
                }
            }
        }
        let flags: [(&str, Option<String>); 30] = [
            ("node.id", self.node_id.map(|v| v.to_string())),
            ("listeners", self.listen.clone()),
            ("advertised.listeners", self.advertised_listener.clone()),
            ("log.dirs", (!self.data_dir.is_empty()).then(|| join_paths(&self.data_dir))),
            ("cores", self.cores.map(|v| v.to_string())),
            ("cpuset", self.cpuset.clone()),
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
            ("offsets.topic.replication.factor", self.offsets_topic_replication_factor.map(|v| v.to_string())),
            ("log.cleaner.backoff.ms", self.log_cleaner_backoff_ms.map(|v| v.to_string())),
            ("process.roles", self.process_roles.clone()),
            ("controller.quorum.voters", self.controller_quorum_voters.clone()),
            ("controller.quorum.observers", self.controller_quorum_observers.clone()),
            ("controller.listener", self.controller_listen.map(|v| v.to_string())),
            ("default.replication.factor", self.default_replication_factor.map(|v| v.to_string())),
            ("min.insync.replicas", self.min_insync_replicas.map(|v| v.to_string())),
            ("broker.session.timeout.ms", self.broker_session_timeout_ms.map(|v| v.to_string())),
            ("replica.lag.time.max.ms", self.replica_lag_time_max_ms.map(|v| v.to_string())),
            ("metrics.listen", self.metrics_listen.clone()),
            ("broker.rack", self.broker_rack.clone()),
        ];
        for (key, value) in flags {
            if let Some(value) = value {
                config.set(key, &value).map_err(|e| format!("--{}: {e}", key.replace('.', "-")))?;
            }
        }
        if self.no_fsync {
            config.fsync = false;
        }
        if self.buffered_writes {
            config.write_mode = crate::storage::WriteMode::Buffered;
        }
        if let Some(us) = self.spin_before_park_us {
            config.spin_before_park_us = us;
        }
        let resolved = config.listener_settings.resolve()?;
        (config.listeners, config.not_applied) = (resolved.listeners, resolved.not_applied);
        config.not_applied.extend(ignored.into_iter().map(|key| (key, "odradek does not act on this setting; it is ignored")));
        config.resolve_topic_defaults();
        if let Some(controller) = &resolved.controller {
            if config.controller_listen.is_some_and(|addr| addr != controller.addr) {
                return Err(format!("controller.listener and controller.listener.names' {} name different addresses", controller.name));
            }
            config.controller_listen = Some(controller.addr);
        }
        config.controller_listener = resolved.controller;
        if config.authorizer.is_some() {
            config.authorizer = Some(config.authorizer_settings.clone());
        }
        if let (CpuSet::Cpus(cpus), false) = (&config.cpuset, cores_set) {
            config.cores = cpus.len();
        }
        config.validate()?;
        Ok(config)
    }
}

/// Where a node's executors run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuSet {
    /// Core `i` pinned to CPU `i` when the node runs a core on every CPU, else not pinned.
    Auto,
    /// Not pinned: several brokers on one machine each pinning to CPUs 0.. would all share
    /// CPU 0 while the others idle.
    Unpinned,
    /// Core `i` pinned to the `i`-th CPU named.
    Cpus(Vec<usize>),
}

impl CpuSet {
    /// `none`, or CPUs and ranges separated by commas (`0-3,6`), each CPU once.
    pub fn parse(value: &str) -> Result<CpuSet, String> {
        let value = value.trim();
        if value == "none" {
            return Ok(CpuSet::Unpinned);
        }
        let cpu = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("{s:?} is not a CPU number"));
        let mut cpus = Vec::new();
        for part in value.split(',') {
            match part.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (cpu(first)?, cpu(last)?);
                    if first > last {
                        return Err(format!("{part:?} is an empty range"));
                    }
                    cpus.extend(first..=last);
                }
                None => cpus.push(cpu(part)?),
            }
        }
        let mut seen = cpus.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != cpus.len() {
            return Err(format!("{value:?} names a CPU twice"));
        }
        Ok(CpuSet::Cpus(cpus))
    }

    /// The CPU core `core` is pinned to, if any, on a machine with `online` CPUs of which the
    /// node runs `cores`.
    pub fn cpu_for(&self, core: usize, cores: usize, online: usize) -> Option<usize> {
        match self {
            CpuSet::Auto => (cores == online).then_some(core),
            CpuSet::Unpinned => None,
            CpuSet::Cpus(cpus) => cpus.get(core).copied(),
        }
    }
}

impl ServerConfig {
    /// The typed topic defaults, from `topic_defaults` over Kafka's.
    fn resolve_topic_defaults(&mut self) {
        let layers = odradek_core::topic::BrokerLayers { static_broker: self.topic_defaults.clone(), ..Default::default() };
        let topic = odradek_core::topic::TopicConfig::new(&layers, BTreeMap::new()).expect("no overrides to refuse");
        self.log = topic.log;
        self.min_insync_replicas = topic.min_insync_replicas as usize;
        self.unclean_leader_election_enable = topic.unclean_leader_election_enable;
    }

    /// Sets one setting by its Kafka name; `false` for a setting odradek does not act on.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        if odradek_core::topic::is_topic_default(key) {
            odradek_core::topic::check_topic_default(key, value).map_err(|e| e.message)?;
            self.topic_defaults.insert(key.to_owned(), value.trim().to_owned());
            self.resolve_topic_defaults();
            return Ok(true);
        }
        fn num<T: std::str::FromStr>(value: &str) -> Result<T, String> {
            value.trim().parse().map_err(|_| format!("{value:?} is not a valid number"))
        }
        match key {
            "node.id" | "broker.id" => self.node_id = num(value)?,
            _ if self.listener_settings.set(key, value)? => {}
            "authorizer.class.name" => {
                self.authorizer = match value.trim() {
                    "" => None,
                    // Kafka's two ACL authorizers (KRaft's and ZooKeeper's) behave alike here.
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer" | "kafka.security.authorizer.AclAuthorizer" => {
                        Some(Default::default())
                    }
                    other => return Err(format!("{other} is not supported: odradek has Kafka's StandardAuthorizer (org.apache.kafka.metadata.authorizer.StandardAuthorizer)")),
                }
            }
            "super.users" => self.authorizer_settings.super_users = odradek_core::acl::AuthorizerConfig::parse_super_users(value)?,
            "allow.everyone.if.no.acl.found" => self.authorizer_settings.allow_everyone_if_no_acl_found = parse_bool(value)?,
            "log.dirs" | "log.dir" => {
                self.log_dirs = parse_log_dirs(value)?;
                self.data_dir = self.log_dirs[0].clone();
            }
            "cores" => self.cores = num(value)?,
            "cpuset" => self.cpuset = CpuSet::parse(value)?,
            "num.partitions" => self.num_partitions = num(value)?,
            "auto.create.topics.enable" => self.auto_create_topics = parse_bool(value)?,
            "log.retention.check.interval.ms" => self.retention_check_interval_ms = num(value)?,
            "log.cleaner.enable" => self.cleaner_enable = parse_bool(value)?,
            "log.cleaner.backoff.ms" => self.cleaner_backoff_ms = num(value)?,
            "log.cleaner.dedupe.buffer.size" => self.cleaner_dedupe_buffer_bytes = num(value)?,
            "offsets.topic.segment.bytes" => self.offsets_topic_segment_bytes = num(value)?,
            "offsets.topic.replication.factor" => self.offsets_topic_replication_factor = num(value)?,
            "socket.request.max.bytes" => self.max_request_bytes = num(value)?,
            "connections.max.idle.ms" => self.connections_max_idle_ms = num(value)?,
            "max.connections" => self.max_connections = num(value)?,
            "max.connections.per.ip" => self.max_connections_per_ip = num(value)?,
            "max.connections.per.ip.overrides" => self.max_connections_per_ip_overrides = parse_ip_overrides(value)?,
            "group.initial.rebalance.delay.ms" => self.group.initial_rebalance_delay_ms = num(value)?,
            "group.min.session.timeout.ms" => self.group.min_session_timeout_ms = num(value)?,
            "group.max.session.timeout.ms" => self.group.max_session_timeout_ms = num(value)?,
            "offsets.topic.num.partitions" => {
                self.group.offsets_topic_partitions = num(value)?;
                self.txn.offsets_topic_partitions = self.group.offsets_topic_partitions;
            }
            "transaction.state.log.num.partitions" => self.txn.partitions = positive(num(value)?)?,
            "transaction.max.timeout.ms" => self.txn.max_timeout_ms = positive(num(value)?)?,
            "transactional.id.expiration.ms" => self.txn.id_expiration_ms = positive(num(value)?)?,
            "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                self.txn.abort_check_interval_ms = positive(num(value)?)?
            }
            "offsets.retention.minutes" => self.group.offsets_retention_ms = num::<i64>(value)? * 60_000,
            "offset.metadata.max.bytes" => self.group.offset_metadata_max_bytes = num(value)?,
            "process.roles" => {
                let mut roles = Roles { broker: false, controller: false };
                for role in value.split(',').map(str::trim) {
                    match role {
                        "broker" => roles.broker = true,
                        "controller" => roles.controller = true,
                        _ => return Err(format!("{role:?} is not broker or controller")),
                    }
                }
                self.roles = roles;
            }
            "controller.quorum.voters" => self.quorum_voters = parse_nodes(value)?,
            "controller.quorum.observers" => self.quorum_observers = parse_nodes(value)?,
            "controller.listener" | "controller.listeners" => self.controller_listen = Some(parse_listener(value)?),
            "default.replication.factor" => self.default_replication_factor = num(value)?,
            "auto.leader.rebalance.enable" => self.auto_leader_rebalance = parse_bool(value)?,
            "leader.imbalance.check.interval.seconds" => self.leader_imbalance_check_interval_s = positive(num(value)?)?,
            "leader.imbalance.per.broker.percentage" => self.leader_imbalance_per_broker_percentage = num(value)?,
            "quota.window.num" => {
                let samples: u32 = num(value)?;
                if !(1..=odradek_core::replication_quota::WINDOW_NUM_MAX).contains(&samples) {
                    return Err(format!("must be in [1, {}]", odradek_core::replication_quota::WINDOW_NUM_MAX));
                }
                self.quota_window.samples = samples as usize;
            }
            "quota.window.size.seconds" => self.quota_window.window_ms = positive(num::<i64>(value)?)? * 1000,
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = num(value)?,
            "broker.session.timeout.ms" => self.broker_session_timeout_ms = num(value)?,
            "broker.heartbeat.interval.ms" => self.broker_heartbeat_interval_ms = num(value)?,
            "controller.quorum.election.timeout.ms" => self.quorum_election_timeout_ms = num(value)?,
            "replication.quota.window.num" => {
                let samples: u32 = num(value)?;
                if !(1..=odradek_core::replication_quota::WINDOW_NUM_MAX).contains(&samples) {
                    return Err(format!("must be in [1, {}]", odradek_core::replication_quota::WINDOW_NUM_MAX));
                }
                self.replication_quota_window.samples = samples as usize;
            }
            "replication.quota.window.size.seconds" => {
                self.replication_quota_window.window_ms = positive(num::<i64>(value)?)?.saturating_mul(1000)
            }
            // Kafka takes the value as is; an empty one is read as no rack, which is what an
            // operator blanking it in a template means.
            "broker.rack" => self.broker_rack = Some(value.trim()).filter(|r| !r.is_empty()).map(str::to_owned),
            "metrics.listen" => {
                self.metrics_listen = match value.trim() {
                    "" => None,
                    addr => Some(
                        std::net::ToSocketAddrs::to_socket_addrs(addr)
                            .ok()
                            .and_then(|mut a| a.next())
                            .ok_or_else(|| format!("{addr:?} is not host:port"))?,
                    ),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn validate(&self) -> Result<(), String> {
        let inter_broker = self.listener_settings.inter_broker_listener();
        if let Some(l) = self.listeners.iter().find(|l| l.name == inter_broker && l.protocol.sasl()) {
            // Brokers fetch from each other and send transaction markers over it, with a
            // client that speaks TLS but not SASL yet.
            return Err(format!(
                "the inter-broker listener {} is {}: inter-broker traffic runs over PLAINTEXT or SSL only for now; \
                 add one of those and name it in inter.broker.listener.name",
                l.name,
                l.protocol.name()
            ));
        }
        if self.cores == 0 {
            return Err("cores must be at least 1".into());
        }
        if let CpuSet::Cpus(cpus) = &self.cpuset {
            if cpus.len() < self.cores {
                return Err(format!("cpuset names {} CPUs, fewer than the {} cores", cpus.len(), self.cores));
            }
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
        if self.connections_max_idle_ms == 0 {
            // Kafka takes 0, and closes every connection before its first request can arrive.
            return Err("connections.max.idle.ms must be positive, or negative to keep idle connections".into());
        }
        if self.max_connections < 0 || self.max_connections_per_ip < 0 {
            return Err("max.connections and max.connections.per.ip must not be negative".into());
        }
        if self.max_connections_per_ip == 0 && self.max_connections_per_ip_overrides.is_empty() {
            // Kafka's rule: 0 admits nobody unless some addresses are let in by name.
            return Err("max.connections.per.ip can be 0 only if max.connections.per.ip.overrides is set".into());
        }
        if !self.roles.broker && !self.roles.controller {
            return Err("process.roles must name broker, controller or both".into());
        }
        if self.default_replication_factor < 1 || self.min_insync_replicas < 1 || self.offsets_topic_replication_factor < 1 {
            return Err("default.replication.factor, offsets.topic.replication.factor and min.insync.replicas must be at least 1".into());
        }
        if self.replica_lag_time_max_ms < 2 || self.broker_session_timeout_ms < 1 || self.broker_heartbeat_interval_ms < 1 {
            return Err("replica.lag.time.max.ms, broker.session.timeout.ms and broker.heartbeat.interval.ms must be positive".into());
        }
        if self.quorum_election_timeout_ms < 100 {
            return Err("controller.quorum.election.timeout.ms must be at least 100".into());
        }
        if !self.standalone() {
            let voter = self.quorum_voters.iter().any(|(id, _)| *id == self.node_id);
            let observer = self.quorum_observers.iter().any(|(id, _)| *id == self.node_id);
            if self.roles.controller != voter {
                return Err(format!(
                    "node {} has the controller role {} but is {} controller.quorum.voters",
                    self.node_id,
                    if self.roles.controller { "on" } else { "off" },
                    if voter { "in" } else { "not in" }
                ));
            }
            if !voter && !observer {
                return Err(format!("broker-only node {} must be listed in controller.quorum.observers", self.node_id));
            }
            let mut ids: Vec<i32> = self.quorum_voters.iter().chain(&self.quorum_observers).map(|(id, _)| *id).collect();
            ids.sort_unstable();
            if ids.windows(2).any(|w| w[0] == w[1]) || ids.iter().any(|id| *id < 0) {
                return Err("node ids in controller.quorum.voters/observers must be distinct and not negative".into());
            }
        } else if !(self.roles.broker && self.roles.controller) {
            return Err("a node without controller.quorum.voters runs both roles".into());
        } else if !self.quorum_observers.is_empty() {
            return Err("controller.quorum.observers needs controller.quorum.voters".into());
        }
        Ok(())
    }
}

fn parse_listener(value: &str) -> Result<SocketAddr, String> {
    let addr = value.trim().trim_start_matches("PLAINTEXT://");
    addr.parse().map_err(|_| format!("{value:?} is not an ip:port listener"))
}

/// Kafka's `controller.quorum.voters` form: `1@host:port,2@host:port`.
fn parse_nodes(value: &str) -> Result<Vec<(i32, SocketAddr)>, String> {
    let mut nodes = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, addr) = item.split_once('@').ok_or_else(|| format!("{item:?} is not id@host:port"))?;
        let id: i32 = id.trim().parse().map_err(|_| format!("{item:?}: {id:?} is not a node id"))?;
        let addr = std::net::ToSocketAddrs::to_socket_addrs(addr.trim())
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("{item:?}: {addr:?} is not host:port"))?;
        nodes.push((id, addr));
    }
    Ok(nodes)
}

/// Kafka's `max.connections.per.ip.overrides` form: `hostName:100,127.0.0.1:200`. A host name
/// counts for every address it resolves to at start; an IPv6 address may be bracketed.
fn parse_ip_overrides(value: &str) -> Result<BTreeMap<IpAddr, i32>, String> {
    let mut overrides = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (host, count) = item.rsplit_once(':').ok_or_else(|| format!("{item:?} is not host:count"))?;
        let count: i32 = count
            .trim()
            .parse()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| format!("{item:?}: {count:?} is not a connection count"))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
                .map_err(|e| format!("{item:?}: {host:?} does not resolve: {e}"))?
                .map(|a| a.ip())
                .collect(),
        };
        for ip in addresses {
            overrides.insert(ip.to_canonical(), count);
        }
    }
    Ok(overrides)
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

fn positive<T: PartialOrd + Default + std::fmt::Display>(value: T) -> Result<T, String> {
    if value > T::default() {
        Ok(value)
    } else {
        Err(format!("expected a positive number, got {value}"))
    }
}

/// `log.dirs`: comma-separated directories, at least one, none twice.
fn parse_log_dirs(value: &str) -> Result<Vec<PathBuf>, String> {
    let dirs: Vec<PathBuf> = value.split(',').map(str::trim).filter(|d| !d.is_empty()).map(PathBuf::from).collect();
    if dirs.is_empty() {
        return Err("names no directory".into());
    }
    for (i, dir) in dirs.iter().enumerate() {
        if dirs[..i].contains(dir) {
            return Err(format!("{} is named twice", dir.display()));
        }
    }
    Ok(dirs)
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")
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
            data_dir: Vec::new(),
            cores: None,
            cpuset: None,
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
            buffered_writes: false,
            spin_before_park_us: None,
            group_initial_rebalance_delay_ms: None,
            offsets_topic_num_partitions: None,
            offsets_topic_segment_bytes: None,
            offsets_topic_replication_factor: None,
            log_cleaner_backoff_ms: None,
            process_roles: None,
            controller_quorum_voters: None,
            controller_quorum_observers: None,
            controller_listen: None,
            default_replication_factor: None,
            min_insync_replicas: None,
            broker_session_timeout_ms: None,
            replica_lag_time_max_ms: None,
            metrics_listen: None,
            broker_rack: None,
        }
    }

    #[test]
    fn quorum_voters_take_kafkas_form_and_must_name_controllers() {
        let mut a = args(None);
        a.node_id = Some(2);
        a.controller_quorum_voters = Some("1@127.0.0.1:19093, 2@127.0.0.1:29093,3@127.0.0.1:39093".into());
        a.min_insync_replicas = Some(2);
        let config = a.resolve().unwrap();
        assert!(!config.standalone());
        assert_eq!(config.voters(), vec![1, 2, 3]);
        assert_eq!(config.offsets_topic_replicas(), 3);
        assert_eq!(config.quorum_address().unwrap().port(), 29093);
        assert_eq!(config.min_insync_replicas, 2);
        a.process_roles = Some("broker".into());
        assert!(a.resolve().unwrap_err().contains("controller role"));
        a.node_id = Some(4);
        a.controller_quorum_observers = Some("4@127.0.0.1:49093".into());
        assert!(a.resolve().is_ok());
        a.controller_quorum_voters = Some("1@nowhere".into());
        assert!(a.resolve().is_err());
        let alone = args(None).resolve().unwrap();
        assert!(alone.standalone());
        assert_eq!((alone.voters(), alone.offsets_topic_replicas()), (vec![0], 1));
    }

    #[test]
    fn a_cpuset_pins_cores_in_order_and_sets_their_number_unless_given() {
        let mut a = args(None);
        a.cpuset = Some("3,0-1".into());
        let config = a.resolve().unwrap();
        assert_eq!(config.cores, 3);
        let pinned: Vec<_> = (0..3).map(|core| config.cpuset.cpu_for(core, 3, 4)).collect();
        assert_eq!(pinned, [Some(3), Some(0), Some(1)]);
        a.cores = Some(2);
        assert_eq!(a.resolve().unwrap().cores, 2);
        a.cores = Some(4);
        assert!(a.resolve().unwrap_err().contains("fewer than the 4 cores"));
        for bad in ["", "1,1", "2-1", "x", "0-"] {
            a.cpuset = Some(bad.into());
            assert!(a.resolve().unwrap_err().contains("--cpuset"), "{bad:?}");
        }
        let auto = CpuSet::Auto;
        assert_eq!((auto.cpu_for(1, 2, 2), auto.cpu_for(0, 1, 2), auto.cpu_for(0, 3, 2)), (Some(1), None, None));
        assert_eq!(CpuSet::parse(" none ").unwrap().cpu_for(0, 2, 2), None);
    }

    #[test]
    fn defaults_are_a_local_dev_node() {
        let config = args(None).resolve().unwrap();
        assert_eq!(config.listeners[0].addr.to_string(), "127.0.0.1:9092");
        assert_eq!(config.listeners[0].advertised, ("127.0.0.1".to_owned(), 9092));
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert!(config.fsync && config.auto_create_topics);
    }

    #[test]
    fn connection_limits_take_kafkas_names_forms_and_rules() {
        let mut config = ServerConfig::default();
        assert_eq!(config.connections_max_idle(), Some(Duration::from_secs(600)));
        assert_eq!((config.max_connections, config.max_connections_per_ip), (i32::MAX, i32::MAX));
        config.set("connections.max.idle.ms", &i64::MAX.to_string()).unwrap();
        assert!(config.connections_max_idle().is_some_and(|idle| std::time::Instant::now().checked_add(idle).is_some()));
        config.set("connections.max.idle.ms", "-1").unwrap();
        assert_eq!(config.connections_max_idle(), None);
        config.set("max.connections.per.ip.overrides", "127.0.0.1:5, [::1]:7 ,::ffff:10.0.0.1:0,localhost:9").unwrap();
        let overrides = &config.max_connections_per_ip_overrides;
        assert_eq!(overrides.get(&"127.0.0.1".parse().unwrap()), Some(&9), "localhost comes later and wins");
        assert_eq!(overrides.get(&"10.0.0.1".parse().unwrap()), Some(&0), "an IPv4-mapped address is its IPv4 one");
        assert!(overrides.contains_key(&"::1".parse().unwrap()));
        config.set("max.connections.per.ip", "0").unwrap();
        config.validate().unwrap();
        config.set("max.connections.per.ip.overrides", "").unwrap();
        assert!(config.validate().unwrap_err().contains("max.connections.per.ip.overrides"));
        for bad in ["127.0.0.1", "127.0.0.1:-1", "127.0.0.1:many"] {
            assert!(config.set("max.connections.per.ip.overrides", bad).is_err(), "{bad}");
        }
        for (key, bad) in [("connections.max.idle.ms", "0"), ("max.connections", "-1"), ("max.connections.per.ip", "-5")] {
            let mut config = ServerConfig::default();
            config.set(key, bad).unwrap();
            assert!(config.validate().unwrap_err().contains(key), "{key}={bad}");
        }
    }

    #[test]
    fn data_dir_flags_repeat_or_separate_with_commas_into_log_dirs() {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        let dirs = |flags: &[&str]| {
            let parsed = <Serve as clap::Parser>::try_parse_from(std::iter::once("serve").chain(flags.iter().copied())).unwrap();
            let config = parsed.args.resolve().unwrap();
            (config.data_dir, config.log_dirs)
        };
        let (a, b, c) = (PathBuf::from("/a"), PathBuf::from("/b"), PathBuf::from("/c"));
        assert_eq!(dirs(&["--data-dir", "/a"]), (a.clone(), vec![a.clone()]));
        assert_eq!(dirs(&["--data-dir", "/a", "--data-dir", "/b,/c"]), (a.clone(), vec![a.clone(), b.clone(), c.clone()]));
        assert_eq!(dirs(&[]), (PathBuf::from("data"), vec![PathBuf::from("data")]));
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
        assert_eq!((config.listeners[0].addr.port(), config.listeners[0].advertised.1), (9500, 9500));
        assert_eq!(config.num_partitions, 5);
        assert_eq!(config.log.retention_ms, 3_600_000);

        std::fs::write(&file, "num.partitions=many\n").unwrap();
        assert!(args(Some(file.clone())).resolve().unwrap_err().contains("num.partitions"));
        std::fs::write(&file, "no.such.setting=1\nnum.network.threads=3\nmin.insync.replicas=2\n").unwrap();
        let config = args(Some(file.clone())).resolve().unwrap();
        let ignored: Vec<&str> = config.not_applied.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(ignored, ["no.such.setting", "num.network.threads"]);
        assert_eq!(config.min_insync_replicas, 2);
        std::fs::write(&file, "log.retention.hours=soon\n").unwrap();
        assert!(args(Some(file.clone())).resolve().unwrap_err().contains("log.retention.hours"));
        std::fs::write(&file, "log.dirs=/a, /b\n").unwrap();
        let config = args(Some(file.clone())).resolve().unwrap();
        assert_eq!((config.data_dir.clone(), config.log_dirs), (PathBuf::from("/a"), vec![PathBuf::from("/a"), PathBuf::from("/b")]));
        let mut a = args(Some(file.clone()));
        a.data_dir = vec![PathBuf::from("/c"), PathBuf::from("/d")];
        assert_eq!(a.resolve().unwrap().log_dirs, [PathBuf::from("/c"), PathBuf::from("/d")], "flags replace the file's list");
        for bad in ["log.dirs=/a,/a\n", "log.dirs= , \n"] {
            std::fs::write(&file, bad).unwrap();
            assert!(args(Some(file.clone())).resolve().unwrap_err().contains("log.dirs"), "{bad}");
        }
        let mut a = args(None);
        a.num_partitions = Some(0);
        assert!(a.resolve().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    // Guards that broker.rack and the replication quota windows are applied, not named as
    // ignored: a stock server.properties with a rack must place rack-aware.
    #[test]
    fn broker_rack_and_replication_quota_windows_are_taken() {
        let dir = std::env::temp_dir().join(format!("odradek-config-rack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("server.properties");
        std::fs::write(&file, "broker.rack=eu-1a\nreplication.quota.window.num=3\nreplication.quota.window.size.seconds=2\n").unwrap();
        let config = args(Some(file.clone())).resolve().unwrap();
        assert_eq!(config.broker_rack.as_deref(), Some("eu-1a"));
        assert_eq!((config.replication_quota_window.samples, config.replication_quota_window.window_ms), (3, 2_000));
        assert!(config.not_applied.iter().all(|(k, _)| !k.starts_with("broker.rack") && !k.starts_with("replication.quota")));
        let mut a = args(Some(file.clone()));
        a.broker_rack = Some("eu-1b".into());
        assert_eq!(a.resolve().unwrap().broker_rack.as_deref(), Some("eu-1b"), "the flag wins");
        std::fs::write(&file, "broker.rack=\n").unwrap();
        assert_eq!(args(Some(file.clone())).resolve().unwrap().broker_rack, None);
        assert_eq!(args(None).resolve().unwrap().replication_quota_window, Default::default());
        for bad in ["replication.quota.window.num=0", "replication.quota.window.size.seconds=0"] {
            std::fs::write(&file, format!("{bad}\n")).unwrap();
            assert!(args(Some(file.clone())).resolve().is_err(), "{bad}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
