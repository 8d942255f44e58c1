//! What every core of the node shares: its settings and the few flags cores signal each other
//! through. Read-only after start but for those flags, which are atomics and polled (a task
//! on one core must never be woken from another core's thread, see `shard::PeerMessage`).

use std::sync::Arc;

use crate::config::ServerConfig;

pub struct Shared {
    pub config: ServerConfig,
    /// TLS to and from this node's peers (`inter.broker.listener.name`, `controller.listener.names`).
    pub peer_tls: crate::tls::PeerTls,
    pub shard_count: usize,
    pub cluster_id: String,
    /// The metadata quorum's leader (the active controller's node id), -1 when unknown.
    pub controller_id: std::sync::atomic::AtomicI32,
    /// Set once this broker is registered, unfenced and holding the metadata, which is when
    /// the client listener opens (as a Kafka broker waits to catch up before serving).
    pub ready: std::sync::atomic::AtomicBool,
    /// Set by SIGTERM/SIGINT (a second signal exits at once): core 0 then runs the
    /// controlled shutdown (`cluster::Node::controlled_shutdown`).
    pub shutdown_requested: Arc<std::sync::atomic::AtomicBool>,
    /// Per core, its long polls between park and unpark (`Shard::parked_long_polls`). A core
    /// tells another of news only when that one has a long poll that could be waiting for it:
    /// without consumers, every append otherwise woke the other core for nothing (at 2,000
    /// msgs/s, a broker of two cores spent twice the CPU of one).
    pub parked_long_polls: Box<[std::sync::atomic::AtomicUsize]>,
    /// Where each partition replica lives among `log.dirs`, and which of them are offline.
    pub log_dirs: crate::storage::LogDirs,
}
