//! The executor of one partition replica's disk actions on the core that owns it: opening and
//! recovering the partition's `PartitionStore`, and performing the appends, truncations,
//! group-committed syncs and checkpoints that `core::broker::Shard` hands out. Every rule of
//! when and in which order is core's (`core::replica`, its `PartitionDriver`).

use std::net::SocketAddr;
use std::rc::Rc;

use odradek_core::controller::{self, TopicId};
use odradek_core::ids::{NodeId, Offset};
use odradek_core::log::LogConfig;
use odradek_core::producer::ProducerStates;
use odradek_core::replica::{Action, Completion, EpochCache, LeaderAndIsr, PersistedState, ReplicaConfig};
use odradek_core::ErrorCode;
use tracing::{info, warn};

use crate::clock::{now_ms, wall_ms};
use crate::config::ServerConfig;
use crate::storage::{off_reactor, write_file, GroupCommit, LogDirs, PartitionStore};

const EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
/// Kafka's name for the file tying a partition directory to its topic id.
const PARTITION_METADATA: &str = "partition.metadata";
const HIGH_WATERMARK_CHECKPOINT: &str = "high-watermark-checkpoint";
/// The replica's log start (Kafka's `log-start-offset-checkpoint`, one number here): after a
/// restart the log must not serve offsets below a start that retention or the leader set.
const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";

/// A partition replica's store, opened and recovered, with what its `Replica` starts from.
pub struct Opened {
    pub store: Rc<PartitionStore>,
    pub config: ReplicaConfig,
    pub persisted: PersistedState,
}

/// Opens the partition's store in `dir` (its directory, `LogDirs::place`), recovers it and its
/// checkpoints, and says what the replica starts from (for `core::broker::Shard::open`).
pub async fn open(
    config: &ServerConfig,
    dir: &std::path::Path,
    log_config: LogConfig,
    topic: &str,
    partition: i32,
    topic_id: TopicId,
    min_isr: usize,
) -> std::io::Result<Opened> {
    let log_dir = dir.parent().expect("a partition directory is inside its log directory").to_path_buf();
    let dir = dir.to_path_buf();
    let stamp = off_reactor(move || discard_stale_directory(&dir, topic_id)).await?;
    let store = Rc::new(PartitionStore::open(&log_dir, topic, partition, log_config.clone(), config.write_mode).await?);
    if let Some(stamp) = stamp {
        write_file(&store.dir().join(PARTITION_METADATA), stamp).await?;
    }
    let recorded_start = read_number(store.dir().join(LOG_START_CHECKPOINT)).await.unwrap_or(0);
    if recorded_start > store.log_start_offset() {
        store.advance_log_start(recorded_start).await?;
    }
    let epoch_path = store.dir().join(EPOCH_CHECKPOINT);
    let mut epoch_cache = match off_reactor(move || std::fs::read(epoch_path)).await {
        Ok(bytes) => EpochCache::decode(&bytes).map_err(|e| std::io::Error::other(format!("{EPOCH_CHECKPOINT}: {e:?}")))?,
        Err(_) => EpochCache::new(),
    };
    // Rule 6 of the Replica runbook: every recovered batch's epoch goes into the cache, in
    // case a crash came before the checkpoint caught up with the log (or it is missing).
    let scan_from = epoch_cache.recovery_scan_start(Offset(store.log_start_offset()));
    // One walk over the log's batch headers: the idempotent producers' state from the newest
    // producer snapshot (written at each segment roll) on, or from the whole log without one,
    // and the epochs from `scan_from`.
    let opened_ms = now_ms();
    let (replay_from, mut producers) = match store.load_producer_snapshot(opened_ms).await {
        Some((base, state)) => {
            info!(%topic, partition, base, producers = state.len(), "producer state from its snapshot, replaying the log after it");
            (base, state)
        }
        None => (store.log_start_offset(), ProducerStates::default()),
    };
    producers.advance_log_start(Offset(store.log_start_offset()));
    let mut epochs: Vec<(i32, i64)> = Vec::new();
    store
        .for_each_header_from(replay_from.min(scan_from.0), |header, batch| {
            if header.base_offset >= replay_from {
                producers.replay(opened_ms, header, batch);
            }
            let in_scan = header.next_offset() > scan_from.0;
            if in_scan && epochs.last().is_none_or(|&(epoch, _)| epoch != header.partition_leader_epoch) {
                epochs.push((header.partition_leader_epoch, header.base_offset));
            }
        })
        .await?;
    if epoch_cache.assign_recovered(epochs) {
        info!(%topic, partition, entries = ?epoch_cache.entries(), "leader epoch cache rebuilt from the log");
        write_file(&store.dir().join(EPOCH_CHECKPOINT), epoch_cache.encode()).await?;
    }
    let high_watermark = read_number(store.dir().join(HIGH_WATERMARK_CHECKPOINT)).await.unwrap_or(0);
    let end = Offset(store.log_end_offset());
    let persisted = PersistedState {
        log_start_offset: Offset(store.log_start_offset()),
        log_end_offset: end,
        // Recovery rescanned and fsynced what it kept.
        durable_offset: end,
        epoch_cache,
        high_watermark: Offset(high_watermark),
        producers,
    };
    let replica_config = ReplicaConfig {
        min_insync_replicas: min_isr,
        replica_lag_time_max_ms: config.replica_lag_time_max_ms,
        ack_after_fsync: config.fsync,
        max_message_bytes: log_config.max_message_bytes,
        log_append_time: log_config.log_append_time,
        compacted: log_config.compact,
        cleanup_delete: log_config.delete,
        timestamp_before_max_ms: log_config.timestamp_before_max_ms,
        timestamp_after_max_ms: log_config.timestamp_after_max_ms,
        ..ReplicaConfig::default()
    };
    Ok(Opened { store, config: replica_config, persisted })
}

/// A failed write, truncation, fsync or checkpoint: the partition's log directory went
/// offline (`LogDirs::fail`) and the action never completes.
pub struct DirFailed {
    /// The directory was online until this failure: its partitions leave every core now.
    pub newly: bool,
}

/// Performs one of a replica's disk actions on its store; -> its completion for the replica.
/// A failed write or fsync takes the log directory offline, and the broker with it when it
/// was the last one online: nothing the action covered may ever count as durable.
pub async fn perform(
    log_dirs: &LogDirs,
    store: &Rc<PartitionStore>,
    commit: &Rc<GroupCommit>,
    action: Action,
) -> Result<Option<Completion>, DirFailed> {
    let fail = |what: &str, e: std::io::Error| -> Result<Option<Completion>, DirFailed> {
        Err(DirFailed { newly: log_dirs.fail(&store.topic, store.partition, what, store.dir(), &e) })
    };
    let completion = match action {
        Action::Append { base_offset, end_offset, records } => {
            if let Err(e) = store.append_assigned(wall_ms(), base_offset.0, &records).await {
                return fail("append", e);
            }
            Some(Completion::Appended { end_offset })
        }
        Action::Truncate { to } => {
            if let Err(e) = store.truncate_to(to.0).await {
                return fail("truncate", e);
            }
            Some(Completion::Truncated { to })
        }
        Action::ResetLog { start_offset } => {
            if let Err(e) = store.reset_to(start_offset.0).await {
                return fail("reset", e);
            }
            Some(Completion::Truncated { to: start_offset })
        }
        Action::Sync { .. } => {
            // One group-commit round covers every partition of this core asking now,
            // leaders and followers alike.
            match commit.sync(store).await {
                Ok(through) => Some(Completion::Synced { through: Offset(through) }),
                Err(e) => return fail("fsync", e),
            }
        }
        Action::PersistEpochCache { cache } => {
            if let Err(e) = write_file(&store.dir().join(EPOCH_CHECKPOINT), cache.encode()).await {
                return fail("writing the leader epoch checkpoint", e);
            }
            None
        }
        Action::PersistHighWatermark { high_watermark } => {
            let path = store.dir().join(HIGH_WATERMARK_CHECKPOINT);
            if let Err(e) = write_file(&path, format!("{}\n", high_watermark.0).into_bytes()).await {
                warn!(topic = %store.topic, partition = store.partition, error = %e, "high watermark checkpoint failed");
            }
            None
        }
        Action::AdvanceLogStart { start_offset } => {
            if let Err(e) = store.advance_log_start(start_offset.0).await {
                return fail("advancing the log start", e);
            }
            // DeleteRecords moves the start inside a segment, and its answer says the records
            // below are gone: without the checkpoint a restart would serve them again (Kafka
            // takes a log dir offline when a checkpoint write fails, too).
            let path = store.dir().join(LOG_START_CHECKPOINT);
            if let Err(e) = write_file(&path, format!("{}\n", start_offset.0).into_bytes()).await {
                return fail("writing the log start checkpoint", e);
            }
            None
        }
        other => unreachable!("not a disk action: {other:?}"),
    };
    Ok(completion)
}

/// The controller's answer to an AlterPartition, as the replica takes it (`None`: no
/// controller answered, a transport failure, which is still one answer).
pub fn alter_partition_result(answer: Option<(controller::Response, Vec<NodeId>)>) -> Result<LeaderAndIsr, ErrorCode> {
    match answer {
        Some((controller::Response::AlterPartition(r), replicas)) => match (r.error, r.state) {
            (None, Some(state)) => Ok(LeaderAndIsr {
                leader_epoch: state.leader_epoch,
                partition_epoch: state.partition_epoch,
                isr: state.isr,
                replicas,
            }),
            (Some(e), _) => Err(e.code()),
            (None, None) => Err(ErrorCode::UnknownServerError),
        },
        _ => Err(ErrorCode::RequestTimedOut),
    }
}

/// A checkpoint holding one number; `None` when missing or unreadable (recovery does without).
async fn read_number(path: std::path::PathBuf) -> Option<i64> {
    off_reactor(move || std::fs::read_to_string(path).ok()?.trim().parse().ok()).await
}

/// A topic deleted and created again under the same name while this node was down leaves
/// the old topic's directory behind: its records must not pass for the new topic's. The
/// directory names its topic id in `partition.metadata` (as Kafka's do); one naming another
/// id is removed. -> the file's contents when it must be written.
fn discard_stale_directory(dir: &std::path::Path, topic_id: TopicId) -> std::io::Result<Option<Vec<u8>>> {
    let stamp = format!("version: 0\ntopic_id: {}\n", uuid::Uuid::from_bytes(topic_id)).into_bytes();
    match std::fs::read(dir.join(PARTITION_METADATA)) {
        Ok(existing) if existing == stamp => Ok(None),
        Ok(_) => {
            warn!(dir = %dir.display(), "removing a partition directory of an earlier topic with the same name");
            std::fs::remove_dir_all(dir)?;
            Ok(Some(stamp))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(stamp)),
        Err(e) => Err(e),
    }
}

/// Where a broker serves the inter-broker listener, from its registration in the image.
pub fn endpoint_address(image: &controller::MetadataImage, broker: NodeId, listener: &str) -> Option<SocketAddr> {
    let registration = image.brokers().get(&broker)?;
    let endpoint = registration.endpoint(listener)?;
    std::net::ToSocketAddrs::to_socket_addrs(&(endpoint.host.as_str(), endpoint.port)).ok()?.next()
}
