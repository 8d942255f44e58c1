//! odradek's core: everything about the Kafka protocol and the log that does no IO.
//!
//! Nothing here reads a clock, draws randomness, touches a file or a socket, or lets hash-map
//! order reach an output. Time comes in as `now_ms` arguments; the drivers (`io/`, and later
//! `sim/`) do the IO and feed results back.

pub mod acl;
pub mod batch;
pub mod broker;
pub mod compact;
pub mod compression;
pub mod controller;
pub mod controller_rpc;
pub mod error;
pub mod fetcher;
pub mod group;
pub mod ids;
pub mod inflate;
pub mod lifecycle;
pub mod log;
pub mod principal;
pub mod producer;
pub mod quorum;
pub mod quota;
pub mod raft;
pub mod replica;
pub mod replication_quota;
pub mod sasl;
pub mod records;
pub mod shard;
pub mod topic;
pub mod txn;
pub mod validate;
pub mod wire;

pub use error::ErrorCode;

/// Whether the state machines check their invariants after every input: in core's own tests
/// and wherever the `invariants` feature is on (the simulator). The broker builds without it:
/// the checks walk whole logs, ISRs and group maps on every input of its hot path.
pub const INVARIANTS: bool = cfg!(any(test, feature = "invariants"));
