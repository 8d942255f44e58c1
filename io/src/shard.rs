//! One core's share of the broker: the partitions it owns, its copy of the topic table, its
//! group commit, and the channels to every other core. Shard 0 also runs the controller,
//! which owns topic creation and deletion and persists the topic table.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::sync::Semaphore;
use odradek_core::{batch, compact};
use odradek_core::shard::{merge_in_order, shard_for, split_by_shard, ShardId};
use odradek_core::topic::{TopicMeta, TopicTable};
use odradek_core::ErrorCode;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::groups::{Groups, OFFSETS_TOPIC};
use odradek_core::group::GroupCoordinator;
use crate::meta;
use crate::storage::{join_all, GroupCommit, PartitionStore, ReadError};

/// Work sent to another core: runs there with that core's [`Shard`] and yields its answer.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = Box<dyn Any + Send>>>> + Send>;

/// What cores send each other over their shared channels.
///
/// Every wake-up stays on the core that owns the waker: an answer travels back as a message
/// and completes a oneshot on its own core, and data arriving on one core reaches another's
/// long polls as a message. glommio task wakers woken or dropped from another thread race on
/// the task's reference count (observed as a double free under load), so no future on one
/// core may ever be woken by another core's thread.
pub enum PeerMessage {
    Job { id: u64, from: ShardId, job: Job },
    Answer { id: u64, answer: Box<dyn Any + Send> },
    /// A high watermark advanced on the sending core.
    DataArrived,
}

/// What all cores share. Read-only after start.
pub struct Shared {
    pub config: ServerConfig,
    pub shard_count: usize,
    pub cluster_id: String,
}

pub struct Shard {
    pub id: ShardId,
    pub shared: Arc<Shared>,
    pub topics: RefCell<TopicTable>,
    partitions: RefCell<BTreeMap<(String, i32), Rc<PartitionStore>>>,
    pub commit: Rc<GroupCommit>,
    peers: Vec<Option<ConnectedSender<PeerMessage>>>,
    /// Jobs sent to other cores, waiting for their answers.
    awaiting: RefCell<BTreeMap<u64, futures_channel::oneshot::Sender<Box<dyn Any + Send>>>>,
    next_job_id: Cell<u64>,
    /// Fired when a high watermark advances on any core (this one directly, others through
    /// [`PeerMessage::DataArrived`]), to wake this core's long-polling fetches.
    pub data_arrived: event_listener::Event,
    /// Per peer: a [`PeerMessage::DataArrived`] is already waiting for room in its channel.
    notice_pending: Vec<Cell<bool>>,
    /// Serializes the controller's writes of the topic table (shard 0 only).
    controller_lock: Semaphore,
    pub groups: Groups,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One partition's part of a produce request.
pub struct ProducePart {
    pub topic: String,
    pub partition: i32,
    pub records: Option<Bytes>,
}

pub struct ProduceResult {
    pub error: Option<ErrorCode>,
    pub base_offset: i64,
    pub log_start_offset: i64,
    /// -1 unless the topic uses `LogAppendTime`.
    pub log_append_time_ms: i64,
}

pub struct FetchPart {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
}

pub struct FetchResult {
    pub error: Option<ErrorCode>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
}

pub struct ListOffsetsPart {
    pub topic: String,
    pub partition: i32,
    pub timestamp: i64,
}

pub struct ListOffsetsResult {
    pub error: Option<ErrorCode>,
    pub offset: i64,
    pub timestamp: i64,
}

pub enum TopicChange {
    Created(TopicMeta),
    Deleted(String),
}

impl Shard {
    pub fn new(
        id: ShardId,
        shared: Arc<Shared>,
        topics: TopicTable,
        peers: Vec<Option<ConnectedSender<PeerMessage>>>,
    ) -> Rc<Shard> {
        let fsync = shared.config.fsync;
        let group_config = shared.config.group.clone();
        // Member ids must differ across restarts; the seed is the only randomness they use.
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        Rc::new_cyclic(|this: &Weak<Shard>| {
            let this = this.clone();
            Shard {
                id,
                shared,
                topics: RefCell::new(topics),
                partitions: RefCell::default(),
                commit: GroupCommit::new(fsync, Box::new(move || {
                    if let Some(shard) = this.upgrade() {
                        shard.announce_data();
                    }
                })),
                notice_pending: peers.iter().map(|_| Cell::new(false)).collect(),
                peers,
                awaiting: RefCell::default(),
                next_job_id: Cell::new(0),
                data_arrived: event_listener::Event::new(),
                controller_lock: Semaphore::new(1),
                groups: Groups::new(GroupCoordinator::new(group_config, seed ^ id.0 as u64)),
            }
        })
    }

    /// Wakes long polls here and on every other core.
    fn announce_data(self: &Rc<Self>) {
        self.data_arrived.notify(usize::MAX);
        for (peer, sender) in self.peers.iter().enumerate() {
            let Some(sender) = sender else { continue };
            if self.notice_pending[peer].get() {
                continue;
            }
            if sender.try_send(PeerMessage::DataArrived).is_err() {
                // The channel is full: the peer is busy with our messages and gets one notice
                // once it has room; a long poll there waits at most that long.
                self.notice_pending[peer].set(true);
                let this = self.clone();
                glommio::spawn_local(async move {
                    let sender = this.peers[peer].as_ref().expect("a channel to every other core");
                    if sender.send(PeerMessage::DataArrived).await.is_err() {
                        warn!(core = this.id.0, peer, "a core stopped listening");
                    }
                    this.notice_pending[peer].set(false);
                })
                .detach();
            }
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.shared.config.data_dir.clone()
    }

    pub fn owner(&self, topic: &str, partition: i32) -> ShardId {
        shard_for(topic, partition, self.shared.shard_count)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<PartitionStore>> {
        self.partitions.borrow().get(&(topic.to_owned(), partition)).cloned()
    }

    /// Opens every partition of `topics` this core owns; at start-up, before serving.
    pub async fn open_owned_partitions(self: &Rc<Self>) -> std::io::Result<()> {
        let topics: Vec<TopicMeta> = self.topics.borrow().values().cloned().collect();
        for topic in topics {
            self.open_topic(&topic).await?;
        }
        Ok(())
    }

    async fn open_topic(&self, topic: &TopicMeta) -> std::io::Result<()> {
        for p in 0..topic.partitions {
            if self.owner(&topic.name, p) != self.id {
                continue;
            }
            let store =
                PartitionStore::open(&self.data_dir(), &topic.name, p, topic.config.log.clone()).await?;
            debug!(topic = %topic.name, partition = p, log_end_offset = store.log_end_offset(), "opened partition");
            self.partitions.borrow_mut().insert((topic.name.clone(), p), Rc::new(store));
        }
        Ok(())
    }

    /// Runs `job` on `target` and returns its result; directly when `target` is this core.
    pub async fn on_shard<R, F, Fut>(self: &Rc<Self>, target: ShardId, job: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if target == self.id {
            return job(self.clone()).await;
        }
        let id = self.next_job_id.get();
        self.next_job_id.set(id + 1);
        let (tx, rx) = futures_channel::oneshot::channel();
        self.awaiting.borrow_mut().insert(id, tx);
        let boxed: Job = Box::new(move |shard| Box::pin(async move { Box::new(job(shard).await) as Box<dyn Any + Send> }));
        let sender = self.peers[target.0].as_ref().expect("a channel to every other core");
        if sender.send(PeerMessage::Job { id, from: self.id, job: boxed }).await.is_err() {
            panic!("core {} stopped serving", target.0);
        }
        let answer = rx.await.unwrap_or_else(|_| panic!("core {} dropped a request", target.0));
        *answer.downcast::<R>().expect("an answer of the job's own type")
    }

    /// Runs `job` on every core, this one included, concurrently.
    pub async fn on_every_shard<R, F, Fut>(self: &Rc<Self>, job: F) -> Vec<R>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let calls = (0..self.shared.shard_count).map(|s| {
            let this = self.clone();
            let job = job.clone();
            async move { this.on_shard(ShardId(s), job).await }
        });
        join_all(calls).await
    }

    /// Serves what another core sends here. Never waits on a send itself (a job's answer is
    /// sent from the job's own task), so two cores answering each other cannot deadlock on
    /// full channels.
    pub async fn serve_peer(self: Rc<Self>, receiver: ConnectedReceiver<PeerMessage>) {
        while let Some(message) = receiver.recv().await {
            match message {
                PeerMessage::Job { id, from, job } => {
                    let this = self.clone();
                    glommio::spawn_local(async move {
                        let answer = job(this.clone()).await;
                        let sender = this.peers[from.0].as_ref().expect("a channel to every other core");
                        if sender.send(PeerMessage::Answer { id, answer }).await.is_err() {
                            warn!(core = this.id.0, to = from.0, "a core stopped listening for answers");
                        }
                    })
                    .detach();
                }
                PeerMessage::Answer { id, answer } => {
                    if let Some(tx) = self.awaiting.borrow_mut().remove(&id) {
                        let _ = tx.send(answer);
                    }
                }
                PeerMessage::DataArrived => {
                    self.data_arrived.notify(usize::MAX);
                }
            }
        }
    }

    /// Runs `work` for every part on the core owning its partition, all concurrently, and
    /// returns the results in the order of `parts` (the client's order).
    pub async fn scatter<P, R, W, Fut>(self: &Rc<Self>, parts: Vec<(ShardId, P)>, work: W) -> Vec<R>
    where
        P: Send + 'static,
        R: Send + 'static,
        W: Fn(Rc<Shard>, P) -> Fut + Copy + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let total = parts.len();
        let groups = split_by_shard(parts).into_iter().map(|(target, group)| {
            let this = self.clone();
            async move {
                let on_owner = move |owner: Rc<Shard>| async move {
                    let calls = group.into_iter().map(|(position, part)| {
                        let owner = owner.clone();
                        async move { (position, work(owner, part).await) }
                    });
                    join_all(calls).await
                };
                this.on_shard(target, on_owner).await
            }
        });
        merge_in_order(total, join_all(groups).await)
    }

    // ---- partition work, run on the owning core ----

    /// Every produce waits for durability, acks=0 too: consumers may only see durable data.
    pub async fn produce_partition(self: Rc<Self>, part: ProducePart) -> ProduceResult {
        let failed = |error| ProduceResult { error: Some(error), base_offset: -1, log_start_offset: -1, log_append_time_ms: -1 };
        let Some(store) = self.partition(&part.topic, part.partition) else {
            return failed(ErrorCode::UnknownTopicOrPartition);
        };
        let records = part.records.unwrap_or_default();
        let validated = match batch::validate_records(&records, store.config().max_message_bytes) {
            Ok(v) => v,
            Err(e) => {
                warn!(topic = %part.topic, partition = part.partition, error = %e, "rejected produce");
                return failed(e.code());
            }
        };
        if store.config().compact {
            // Kafka's LogValidator: "Compacted topic cannot accept message without key".
            match compact::all_records_keyed(&records) {
                Ok(true) => {}
                Ok(false) => {
                    warn!(topic = %part.topic, partition = part.partition, "rejected produce: a record without a key on a compacted topic");
                    return failed(ErrorCode::InvalidRecord);
                }
                Err(e) => {
                    warn!(topic = %part.topic, partition = part.partition, error = %e, "rejected produce: undecodable records");
                    return failed(ErrorCode::CorruptMessage);
                }
            }
        }
        let appended = match store.append(now_ms(), records, validated).await {
            Ok(a) => a,
            Err(e) => {
                warn!(topic = %part.topic, partition = part.partition, error = %e, "append failed");
                return failed(ErrorCode::KafkaStorageError);
            }
        };
        if let Err(e) = self.commit.sync(&store).await {
            warn!(topic = %part.topic, partition = part.partition, error = %e, "sync failed");
            return failed(ErrorCode::KafkaStorageError);
        }
        ProduceResult {
            error: None,
            base_offset: appended.base_offset,
            log_start_offset: store.log_start_offset(),
            log_append_time_ms: appended.log_append_time_ms.unwrap_or(-1),
        }
    }

    pub async fn fetch_partition(self: Rc<Self>, part: FetchPart) -> FetchResult {
        let Some(store) = self.partition(&part.topic, part.partition) else {
            return FetchResult { error: Some(ErrorCode::UnknownTopicOrPartition), high_watermark: -1, log_start_offset: -1, records: Bytes::new() };
        };
        let result = store.read(part.offset, part.max_bytes).await;
        let error = match &result {
            Ok(_) => None,
            Err(ReadError::OutOfRange) => Some(ErrorCode::OffsetOutOfRange),
            Err(e) => {
                warn!(topic = %part.topic, partition = part.partition, error = %e, "read failed");
                Some(ErrorCode::KafkaStorageError)
            }
        };
        FetchResult {
            error,
            high_watermark: store.high_watermark(),
            log_start_offset: store.log_start_offset(),
            records: result.unwrap_or_default(),
        }
    }

    pub async fn list_offsets_partition(self: Rc<Self>, part: ListOffsetsPart) -> ListOffsetsResult {
        let answer = |error, offset, timestamp| ListOffsetsResult { error, offset, timestamp };
        let Some(store) = self.partition(&part.topic, part.partition) else {
            return answer(Some(ErrorCode::UnknownTopicOrPartition), -1, -1);
        };
        match part.timestamp {
            -2 => answer(None, store.log_start_offset(), -1),
            -1 => answer(None, store.high_watermark(), -1),
            t if t < 0 => answer(Some(ErrorCode::UnsupportedVersion), -1, -1),
            t => match store.offset_for_timestamp(t).await {
                Ok(Some((offset, timestamp))) => answer(None, offset, timestamp),
                Ok(None) => answer(None, -1, -1),
                Err(e) => {
                    warn!(topic = %part.topic, partition = part.partition, error = %e, "timestamp lookup failed");
                    answer(Some(ErrorCode::KafkaStorageError), -1, -1)
                }
            },
        }
    }

    /// Applies a topic change the controller committed: updates this core's table and opens
    /// or removes the partitions it owns.
    pub async fn apply(self: Rc<Self>, change: Arc<TopicChange>) -> Result<(), String> {
        match &*change {
            TopicChange::Created(topic) => {
                self.topics.borrow_mut().insert(topic.name.clone(), topic.clone());
                self.open_topic(topic).await.map_err(|e| format!("opening {}: {e}", topic.name))
            }
            TopicChange::Deleted(name) => {
                self.topics.borrow_mut().remove(name);
                let removed: Vec<Rc<PartitionStore>> = {
                    let mut partitions = self.partitions.borrow_mut();
                    let keys: Vec<_> = partitions.keys().filter(|(t, _)| t == name).cloned().collect();
                    keys.iter().filter_map(|k| partitions.remove(k)).collect()
                };
                for store in removed {
                    if let Err(e) = store.delete() {
                        warn!(topic = %name, partition = store.partition, error = %e, "could not remove partition directory");
                    }
                }
                Ok(())
            }
        }
    }

    /// Retention for this core's partitions, every `log.retention.check.interval.ms`.
    pub async fn retention_loop(self: Rc<Self>) {
        let interval = Duration::from_millis(self.shared.config.retention_check_interval_ms);
        loop {
            glommio::timer::sleep(interval).await;
            let stores: Vec<_> = self.partitions.borrow().values().cloned().collect();
            for store in stores {
                store.apply_retention(now_ms());
            }
        }
    }

    /// Compaction for this core's `cleanup.policy=compact` partitions, one partition at a time,
    /// every `log.cleaner.backoff.ms`. The dedupe buffer is split evenly between cores.
    pub async fn cleaner_loop(self: Rc<Self>) {
        let config = &self.shared.config;
        let interval = Duration::from_millis(config.cleaner_backoff_ms);
        let map_limit_bytes = config.cleaner_dedupe_buffer_bytes / config.cores.max(1);
        loop {
            glommio::timer::sleep(interval).await;
            let stores: Vec<_> = self.partitions.borrow().values().filter(|s| s.config().compact).cloned().collect();
            for store in stores {
                if let Err(e) = store.clean(now_ms(), map_limit_bytes).await {
                    // The swap protocol leaves the old segments in place on any failure.
                    warn!(topic = %store.topic, partition = store.partition, error = %e, "cleaning failed; will retry");
                }
                glommio::executor().yield_if_needed().await;
            }
        }
    }

    // ---- controller, shard 0 only ----

    /// Creates topics (validated by the caller) and waits until every core serves them.
    pub async fn create_topics(self: Rc<Self>, topics: Vec<TopicMeta>) -> Vec<Result<(), (ErrorCode, String)>> {
        assert_eq!(self.id, ShardId(0), "the controller runs on shard 0");
        let _permit = self.controller_lock.acquire_permit(1).await.expect("controller lock");
        let mut results = Vec::with_capacity(topics.len());
        let mut created = Vec::new();
        for topic in topics {
            if self.topics.borrow().contains_key(&topic.name) {
                results.push(Err((ErrorCode::TopicAlreadyExists, format!("topic {:?} already exists", topic.name))));
                continue;
            }
            self.topics.borrow_mut().insert(topic.name.clone(), topic.clone());
            created.push(topic);
            results.push(Ok(()));
        }
        if created.is_empty() {
            return results;
        }
        let snapshot = self.topics.borrow().clone();
        if let Err(e) = meta::save_topics(&self.data_dir(), &snapshot).await {
            warn!(error = %e, "could not persist the topic table");
            for topic in &created {
                self.topics.borrow_mut().remove(&topic.name);
            }
            return results
                .into_iter()
                .map(|r| r.and(Err((ErrorCode::KafkaStorageError, format!("persisting topics: {e}")))))
                .collect();
        }
        for topic in created {
            info!(topic = %topic.name, partitions = topic.partitions, "created topic");
            // Partition directories of a topic deleted earlier under the same name must not
            // come back as data of the new one.
            for p in 0..topic.partitions {
                let _ = std::fs::remove_dir_all(self.data_dir().join(format!("{}-{p}", topic.name)));
            }
            let change = Arc::new(TopicChange::Created(topic));
            for outcome in self.on_every_shard(move |shard| shard.apply(change)).await {
                if let Err(e) = outcome {
                    warn!(error = %e, "a core failed to open a new topic");
                }
            }
        }
        results
    }

    pub async fn delete_topic(self: Rc<Self>, name: String) -> Result<(), ErrorCode> {
        assert_eq!(self.id, ShardId(0), "the controller runs on shard 0");
        let _permit = self.controller_lock.acquire_permit(1).await.expect("controller lock");
        if name == OFFSETS_TOPIC {
            return Err(ErrorCode::InvalidTopicException);
        }
        let Some(old) = self.topics.borrow_mut().remove(&name) else {
            return Err(ErrorCode::UnknownTopicOrPartition);
        };
        let snapshot = self.topics.borrow().clone();
        if let Err(e) = meta::save_topics(&self.data_dir(), &snapshot).await {
            warn!(error = %e, "could not persist the topic table");
            self.topics.borrow_mut().insert(name, old);
            return Err(ErrorCode::KafkaStorageError);
        }
        info!(topic = %name, "deleted topic");
        let change = Arc::new(TopicChange::Deleted(name));
        for outcome in self.on_every_shard(move |shard| shard.apply(change)).await {
            if let Err(e) = outcome {
                warn!(error = %e, "a core failed to delete a topic");
            }
        }
        Ok(())
    }
}
