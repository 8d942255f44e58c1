//! The driver of one partition replica (`core::replica::Replica`) on the core that owns the
//! partition: it performs the replica's actions on the partition's `PartitionStore` in queue
//! order, reports completions in order, hands follower fetches to its core's replica fetchers
//! (`crate::fetcher`, one connection per source broker), forwards
//! AlterPartition to the active controller through core 0, and answers produce requests when
//! the replica says so. All replication decisions are the replica's (runbook on its type).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::future::BoxedLocal;
use odradek_core::controller::{self, TopicId};
use odradek_core::fetcher::TopicPartition;
use odradek_core::ids::{LeaderEpoch, NodeId, Offset};
use odradek_core::replica::driver::PartitionDriver;
use odradek_core::replica::{
    Action, Completion, EpochCache, EpochEndOffset, FetchAnswer, FetchRequest, FetchResponse, LeaderAndIsr,
    PersistedState, ProduceAck, Replica, ReplicaConfig,
};
use odradek_core::log::LogConfig;
use odradek_core::ErrorCode;
use tracing::{debug, info, warn};

use crate::clock::{now_ms, wall_ms};
use crate::config::ServerConfig;
use crate::storage::{log_dir_failed, off_reactor, write_file, GroupCommit, PartitionStore};

const EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
/// Kafka's name for the file tying a partition directory to its topic id.
const PARTITION_METADATA: &str = "partition.metadata";
const HIGH_WATERMARK_CHECKPOINT: &str = "high-watermark-checkpoint";
/// The replica's log start (Kafka's `log-start-offset-checkpoint`, one number here): after a
/// restart the log must not serve offsets below a start that retention or the leader set.
const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";

/// What a replica's driver needs from the core it runs on (the core's `Shard` provides it).
pub trait Host {
    fn config(&self) -> &ServerConfig;
    /// A topic's log settings: its overrides over the broker defaults.
    fn topic_log_config(&self, topic: &str) -> LogConfig;
    fn group_commit(&self) -> &Rc<GroupCommit>;
    /// Wakes the long-polling fetches reading this partition, on every core.
    fn announce_data(self: Rc<Self>, topic: &str, partition: i32);
    /// A follower's fetch, for the replica fetcher of its core and source broker.
    fn send_fetch(self: Rc<Self>, leader: NodeId, partition: TopicPartition, fetch_id: u64, request: FetchRequest);
    /// An AlterPartition for this broker, sent to the active controller; its answer and the
    /// partition's replicas in the image, `None` when no controller answered.
    fn alter_partition(self: Rc<Self>, request: AlterPartitionCall) -> BoxedLocal<Option<(controller::Response, Vec<NodeId>)>>;
}

/// The partition and the replica's proposal, for [`Host::alter_partition`].
pub struct AlterPartitionCall {
    pub topic_id: TopicId,
    pub partition: i32,
    pub request: odradek_core::replica::AlterPartitionRequest,
}

pub struct ReplicatedPartition {
    pub topic: String,
    pub partition: i32,
    pub topic_id: TopicId,
    pub store: Rc<PartitionStore>,
    driver: RefCell<PartitionDriver>,
    waiters: RefCell<BTreeMap<u64, oneshot::Sender<Result<ProduceAck, ErrorCode>>>>,
    next_id: Cell<u64>,
    kick: event_listener::Event,
    stopped: Cell<bool>,
    /// Controlled shutdown: new produces are refused before they reach the log.
    draining: Cell<bool>,
}

impl ReplicatedPartition {
    /// Opens the store, restores the replica from it and the checkpoints, starts its driver.
    pub async fn open(host: &Rc<dyn Host>, topic: &str, partition: i32, topic_id: TopicId, min_isr: usize) -> std::io::Result<Rc<Self>> {
        let config = host.topic_log_config(topic);
        let data_dir = &host.config().data_dir;
        let dir = data_dir.join(format!("{topic}-{partition}"));
        let stamp = off_reactor(move || discard_stale_directory(&dir, topic_id)).await?;
        let store = Rc::new(PartitionStore::open(data_dir, topic, partition, config.clone()).await?);
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
        if epoch_cache.assign_recovered(store.batch_epochs_from(scan_from.0).await?) {
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
        };
        let cluster = host.config();
        let replica_config = ReplicaConfig {
            min_insync_replicas: min_isr,
            replica_lag_time_max_ms: cluster.replica_lag_time_max_ms,
            ack_after_fsync: cluster.fsync,
            max_message_bytes: config.max_message_bytes,
            log_append_time: config.log_append_time,
            ..ReplicaConfig::default()
        };
        let replica = Replica::new(NodeId(cluster.node_id), replica_config, persisted);
        store.set_high_watermark(replica.high_watermark().0);
        let this = Rc::new(ReplicatedPartition {
            topic: topic.to_owned(),
            partition,
            topic_id,
            store,
            driver: RefCell::new(PartitionDriver::new(replica)),
            waiters: RefCell::default(),
            next_id: Cell::new(1),
            kick: event_listener::Event::new(),
            stopped: Cell::new(false),
            draining: Cell::new(false),
        });
        glommio::spawn_local(this.clone().drive(host.clone())).detach();
        Ok(this)
    }

    /// The answer to this follower's fetch, from its core's replica fetchers.
    pub fn deliver_fetch(&self, fetch_id: u64, response: FetchResponse) {
        self.driver.borrow_mut().replica_mut().handle_fetch_response(now_ms(), fetch_id, response);
        self.after_input();
    }

    pub fn stop(&self) {
        self.stopped.set(true);
        self.kick.notify(usize::MAX);
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.driver.borrow().replica().leader_epoch()
    }

    pub fn is_leader(&self) -> bool {
        self.driver.borrow().replica().role() == odradek_core::replica::Role::Leader
    }

    pub fn high_watermark(&self) -> i64 {
        self.driver.borrow().replica().high_watermark().0
    }

    /// The controller's decision for this partition, from the metadata image.
    pub fn apply_state(&self, state: &controller::PartitionState) {
        let me = self.driver.borrow().replica().local();
        let now = now_ms();
        let result = if state.leader == me {
            self.driver.borrow_mut().replica_mut().become_leader(
                now,
                LeaderAndIsr {
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    isr: state.isr.clone(),
                    replicas: state.replicas.clone(),
                },
            )
        } else if state.leader != NodeId::NONE {
            self.driver.borrow_mut().replica_mut().become_follower(now, state.leader, state.leader_epoch, state.partition_epoch)
        } else {
            Ok(())
        };
        if let Err(e) = result {
            debug!(topic = %self.topic, partition = self.partition, error = ?e, "partition decision not applied");
        }
        self.after_input();
    }

    fn after_input(&self) {
        self.kick.notify(usize::MAX);
    }

    /// A produce for this partition; waits for the replica's answer (none for acks=0).
    pub async fn produce(&self, records: Bytes, acks: i16, timeout_ms: i32) -> Result<ProduceAck, ErrorCode> {
        if self.draining.get() {
            // Nothing was appended, so the client may safely send it to the next leader.
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        if acks != 0 {
            // acks=0 is answered only on failure, and its connection gets no response anyway.
            self.waiters.borrow_mut().insert(id, tx);
        }
        self.driver.borrow_mut().replica_mut().handle_produce(now_ms(), id, records, acks, timeout_ms);
        self.after_input();
        if acks == 0 {
            return Ok(ProduceAck { base_offset: Offset(-1), log_append_time_ms: None, log_start_offset: Offset(-1) });
        }
        rx.await.unwrap_or(Err(ErrorCode::NotLeaderOrFollower))
    }

    /// One partition of a Fetch (a follower's or a consumer's), answered from the replica.
    pub async fn fetch(&self, request: FetchRequest) -> FetchResponse {
        let answer = self.driver.borrow_mut().replica_mut().handle_fetch(now_ms(), &request);
        self.after_input();
        // An error carries the log start: a follower that fell behind it starts over there.
        let log_start = self.driver.borrow().replica().log_start_offset();
        let records = match answer.read_to() {
            Some(read_to) if read_to > request.fetch_offset => {
                let max = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
                match self.store.read_upto(request.fetch_offset.0, max, read_to.0).await {
                    Ok(records) => records,
                    Err(e) => {
                        warn!(topic = %self.topic, partition = self.partition, error = %e, "read failed");
                        return FetchAnswer::Error(ErrorCode::KafkaStorageError).into_response(Bytes::new(), log_start);
                    }
                }
            }
            _ => Bytes::new(),
        };
        answer.into_response(records, log_start)
    }

    /// Controlled shutdown, before leadership moves: refuse new produces and return how many
    /// are still waiting for their answer. A produce still waiting for the high watermark when
    /// leadership moves is answered NOT_LEADER_OR_FOLLOWER although the new leader may commit
    /// its records, and clients resend on that error (librdkafka without counting a retry), so
    /// a non-idempotent producer would write them twice. Draining first avoids that.
    pub fn drain(&self) -> usize {
        self.draining.set(true);
        self.waiters.borrow().len()
    }

    /// OffsetForLeaderEpoch for this partition, answered by the leader's epoch cache.
    pub fn offset_for_leader_epoch(&self, current: LeaderEpoch, requested: LeaderEpoch) -> Result<EpochEndOffset, ErrorCode> {
        self.driver.borrow().replica().handle_offset_for_leader_epoch(current, requested)
    }

    /// Retention (`retention.ms`, `retention.bytes`) on this replica's own log, never above
    /// its high watermark; the replica's log start follows.
    pub async fn apply_retention(&self, wall_ms: i64) {
        let high_watermark = self.driver.borrow().replica().high_watermark().0;
        if let Some(start) = self.store.apply_retention(wall_ms, high_watermark).await {
            self.driver.borrow_mut().replica_mut().handle_log_start_advanced(now_ms(), Offset(start));
            self.after_input();
        }
    }

    /// Performs the replica's actions in the driver's order and runs its timer, until stopped.
    async fn drive(self: Rc<Self>, host: Rc<dyn Host>) {
        while !self.stopped.get() {
            let listener = self.kick.listen();
            // The order and the group-commit rule are core's (`PartitionDriver`).
            loop {
                let action = self.driver.borrow_mut().poll_action();
                let Some(action) = action else { break };
                self.perform(&host, action).await;
            }
            let visible = self.driver.borrow_mut().poll_visible();
            if let Some((high_watermark, _)) = visible {
                self.store.set_high_watermark(high_watermark.0);
                // Wakes long-polling fetches: consumers wait for the HW, followers for data.
                host.clone().announce_data(&self.topic, self.partition);
            }
            let due = self.driver.borrow().replica().poll_timeout();
            let now = now_ms();
            match due {
                Some(due) if due <= now => {
                    self.driver.borrow_mut().replica_mut().handle_timeout(now);
                    if self.driver.borrow().replica().poll_timeout().is_some_and(|d| d <= now) {
                        // Never spin without yielding: other tasks share this core.
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    continue;
                }
                due => crate::clock::wait_until(listener, due, now).await,
            }
            if self.driver.borrow().replica().poll_timeout().is_some_and(|d| d <= now_ms()) {
                self.driver.borrow_mut().replica_mut().handle_timeout(now_ms());
            }
        }
        for (_, waiter) in std::mem::take(&mut *self.waiters.borrow_mut()) {
            let _ = waiter.send(Err(ErrorCode::NotLeaderOrFollower));
        }
    }

    async fn perform(self: &Rc<Self>, host: &Rc<dyn Host>, action: Action) {
        let fail = |what: &str, e: std::io::Error| -> ! { log_dir_failed(what, self.store.dir(), &e) };
        match action {
            Action::Append { base_offset, end_offset, records } => {
                if let Err(e) = self.store.append_assigned(wall_ms(), base_offset.0, records).await {
                    fail("append", e);
                }
                self.driver.borrow_mut().finish(now_ms(), Some(Completion::Appended { end_offset }));
            }
            Action::Truncate { to } => {
                if let Err(e) = self.store.truncate_to(to.0).await {
                    fail("truncate", e);
                }
                self.driver.borrow_mut().finish(now_ms(), Some(Completion::Truncated { to }));
            }
            Action::ResetLog { start_offset } => {
                if let Err(e) = self.store.reset_to(start_offset.0).await {
                    fail("reset", e);
                }
                self.driver.borrow_mut().finish(now_ms(), Some(Completion::Truncated { to: start_offset }));
            }
            Action::Sync { .. } => {
                // One group-commit round covers every partition of this core asking now,
                // leaders and followers alike.
                let through = match host.group_commit().sync(&self.store).await {
                    Ok(end) => end,
                    Err(e) => fail("fsync", e),
                };
                self.driver.borrow_mut().finish(now_ms(), Some(Completion::Synced { through: Offset(through) }));
            }
            Action::PersistEpochCache { cache } => {
                if let Err(e) = write_file(&self.store.dir().join(EPOCH_CHECKPOINT), cache.encode()).await {
                    fail("writing the leader epoch checkpoint", e);
                }
                self.driver.borrow_mut().finish(now_ms(), None);
            }
            Action::PersistHighWatermark { high_watermark } => {
                let path = self.store.dir().join(HIGH_WATERMARK_CHECKPOINT);
                if let Err(e) = write_file(&path, format!("{}\n", high_watermark.0).into_bytes()).await {
                    warn!(topic = %self.topic, partition = self.partition, error = %e, "high watermark checkpoint failed");
                }
                self.driver.borrow_mut().finish(now_ms(), None);
            }
            Action::AdvanceLogStart { start_offset } => {
                if let Err(e) = self.store.advance_log_start(start_offset.0).await {
                    fail("advancing the log start", e);
                }
                let path = self.store.dir().join(LOG_START_CHECKPOINT);
                if let Err(e) = write_file(&path, format!("{}\n", start_offset.0).into_bytes()).await {
                    warn!(topic = %self.topic, partition = self.partition, error = %e, "log start checkpoint failed");
                }
                self.driver.borrow_mut().finish(now_ms(), None);
            }
            Action::SendFetch { to, fetch_id, request } => {
                host.clone().send_fetch(to, TopicPartition::new(self.topic.clone(), self.partition), fetch_id, request);
            }
            Action::SendOffsetForLeaderEpoch { request_id, .. } => {
                // Not used: followers truncate from Fetch v12's diverging_epoch
                // (`truncate_with_offset_for_leader_epoch` is off).
                self.driver.borrow_mut().replica_mut().handle_offset_for_leader_epoch_response(
                    now_ms(),
                    request_id,
                    Err(ErrorCode::UnsupportedVersion),
                );
            }
            Action::SendAlterPartition { request_id, request } => {
                let this = self.clone();
                let host = host.clone();
                glommio::spawn_local(async move {
                    let result = this.alter_partition(host, request).await;
                    this.driver.borrow_mut().replica_mut().handle_alter_partition_response(now_ms(), request_id, result);
                    this.after_input();
                })
                .detach();
            }
            Action::ReplyProduce { request_id, result } => {
                if let Some(waiter) = self.waiters.borrow_mut().remove(&request_id) {
                    let _ = waiter.send(result);
                }
            }
        }
    }

    async fn alter_partition(
        &self,
        host: Rc<dyn Host>,
        request: odradek_core::replica::AlterPartitionRequest,
    ) -> Result<LeaderAndIsr, ErrorCode> {
        let call = AlterPartitionCall { topic_id: self.topic_id, partition: self.partition, request };
        let answer = host.alter_partition(call).await;
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
            // A transport failure is still one answer, as the replica requires.
            _ => Err(ErrorCode::RequestTimedOut),
        }
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

/// Where a broker serves clients, from its registration in the image.
pub fn endpoint_address(image: &controller::MetadataImage, broker: NodeId) -> Option<SocketAddr> {
    let registration = image.brokers().get(&broker)?;
    let endpoint = registration.endpoints.first()?;
    std::net::ToSocketAddrs::to_socket_addrs(&(endpoint.host.as_str(), endpoint.port)).ok()?.next()
}
