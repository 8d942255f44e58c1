//! One core's share of the broker: the partition replicas it owns, its copy of the topic
//! table (from the metadata image), its group commit, and the channels to every other core.
//! Core 0 also runs the node's member of the metadata quorum (`cluster::Node`).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future::BoxedLocal;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::sync::Semaphore;
use odradek_core::compact;
use odradek_core::fetcher::{self, Delivery, TopicPartition};
use odradek_core::shard::{merge_in_order, shard_for, split_by_shard, ShardId};
use odradek_core::controller::{MetadataImage, Response as ControllerResponse};
use odradek_core::controller_rpc::ControllerRequest;
use odradek_core::ids::{LeaderEpoch, NodeId, Offset};
use odradek_core::replica::{FetchAnswer, FetchResponse, ProduceAck};
use odradek_core::topic::{TopicConfig, TopicMeta, TopicTable};
use odradek_core::ErrorCode;
use tracing::{info, warn};

use crate::clock::wall_ms;
use crate::fetcher::FetcherDriver;
use crate::group_state::Groups;
pub use crate::shared::Shared;
use odradek_core::group::OFFSETS_TOPIC;
use odradek_core::group::GroupCoordinator;
use crate::replication::{self, AlterPartitionCall, ReplicatedPartition};
use crate::storage::{join_all, GroupCommit, PartitionStore};

/// A replica fetch unanswered this long past its `max_wait_ms` has failed (the connection is
/// dropped and every partition it carried fetches again).
const FETCH_REQUEST_TIMEOUT_MS: i64 = 10_000;

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
    /// A partition's high watermark or written end moved on the sending core (`None`: any
    /// partition's may have).
    DataArrived(Option<(String, i32)>),
}

pub struct Shard {
    pub id: ShardId,
    pub shared: Arc<Shared>,
    pub topics: RefCell<TopicTable>,
    pub commit: Rc<GroupCommit>,
    peers: Vec<Option<ConnectedSender<PeerMessage>>>,
    /// Jobs sent to other cores, waiting for their answers.
    awaiting: RefCell<BTreeMap<u64, futures_channel::oneshot::Sender<Box<dyn Any + Send>>>>,
    next_job_id: Cell<u64>,
    /// The fetch purgatory, keyed by partition (Kafka's `DelayedFetch` keys): each event fires
    /// when that partition's high watermark or written end moves, here or on its owner core
    /// ([`PeerMessage::DataArrived`]), and wakes only the long polls reading it. Holds the
    /// partitions of known topics; the rest share `other_data`.
    watchers: RefCell<BTreeMap<(String, i32), event_listener::Event>>,
    /// Long polls on partitions this core's topic table does not know (they wait out their
    /// `max_wait_ms` or a wake-up of everything).
    other_data: event_listener::Event,
    /// Per peer: a wake-up of everything is waiting for room in its channel, so notices of
    /// single partitions to it would add nothing.
    notice_pending: Vec<Cell<bool>>,
    pub groups: Groups,
    /// Core 0 only: the metadata quorum member and the broker's link to the active controller.
    pub node: RefCell<Option<Rc<crate::cluster::Node>>>,
    /// The latest metadata image this core applied, and its log index.
    pub image: RefCell<Arc<MetadataImage>>,
    image_index: Cell<u64>,
    /// Serializes image application (it opens partitions, which awaits).
    image_lock: Semaphore,
    /// The partition replicas this core owns.
    replicas: RefCell<BTreeMap<(String, i32), Rc<ReplicatedPartition>>>,
    /// This core's replica fetchers: one request at a time per source broker, carrying every
    /// partition this core follows there.
    fetchers: Rc<FetcherDriver>,
}

/// One partition's part of a produce request.
pub struct ProducePart {
    pub topic: String,
    pub partition: i32,
    pub records: Option<Bytes>,
    pub acks: i16,
    pub timeout_ms: i32,
}


pub struct FetchPart {
    pub topic: String,
    pub partition: i32,
    pub request: odradek_core::replica::FetchRequest,
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
    /// The leader epoch (replicated partitions), -1 otherwise.
    pub leader_epoch: i32,
}

/// One partition of an OffsetForLeaderEpoch request.
pub struct EpochEndPart {
    pub topic: String,
    pub partition: i32,
    pub current_leader_epoch: i32,
    pub leader_epoch: i32,
}

pub struct EpochEndResult {
    pub error: Option<ErrorCode>,
    pub leader_epoch: i32,
    pub end_offset: i64,
}

impl Shard {
    pub fn new(
        id: ShardId,
        shared: Arc<Shared>,
        peers: Vec<Option<ConnectedSender<PeerMessage>>>,
    ) -> Rc<Shard> {
        let fsync = shared.config.fsync;
        let node_id = NodeId(shared.config.node_id);
        let group_config = shared.config.group.clone();
        // Member ids must differ across restarts; the seed is the only randomness they use.
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        Rc::new(Shard {
            id,
            shared,
            topics: RefCell::new(TopicTable::new()),
            commit: GroupCommit::new(fsync),
            notice_pending: peers.iter().map(|_| Cell::new(false)).collect(),
            peers,
            awaiting: RefCell::default(),
            next_job_id: Cell::new(0),
            watchers: RefCell::default(),
            other_data: event_listener::Event::new(),
            groups: Groups::new(GroupCoordinator::new(group_config, seed ^ id.0 as u64)),
            node: RefCell::new(None),
            image: RefCell::new(Arc::new(MetadataImage::default())),
            image_index: Cell::new(0),
            image_lock: Semaphore::new(1),
            replicas: RefCell::default(),
            fetchers: FetcherDriver::new(node_id, fetcher::DEFAULT_RESPONSE_MAX_BYTES, FETCH_REQUEST_TIMEOUT_MS),
        })
    }

    /// Wakes the long polls reading `partition` (`None`: every long poll) here and on every
    /// other core.
    pub(crate) fn announce_data(self: &Rc<Self>, partition: Option<(String, i32)>) {
        self.wake(partition.as_ref());
        for (peer, sender) in self.peers.iter().enumerate() {
            let Some(sender) = sender else { continue };
            if self.notice_pending[peer].get() {
                continue;
            }
            if sender.try_send(PeerMessage::DataArrived(partition.clone())).is_err() {
                // The channel is full: the peer is busy with our messages and gets one wake-up
                // of everything once it has room; a long poll there waits at most that long.
                self.notice_pending[peer].set(true);
                let this = self.clone();
                glommio::spawn_local(async move {
                    let sender = this.peers[peer].as_ref().expect("a channel to every other core");
                    if sender.send(PeerMessage::DataArrived(None)).await.is_err() {
                        warn!(core = this.id.0, peer, "a core stopped listening");
                    }
                    this.notice_pending[peer].set(false);
                })
                .detach();
            }
        }
    }

    fn wake(&self, partition: Option<&(String, i32)>) {
        let watchers = self.watchers.borrow();
        match partition {
            Some(key) => {
                if let Some(event) = watchers.get(key) {
                    event.notify(usize::MAX);
                }
            }
            None => {
                watchers.values().for_each(|event| {
                    event.notify(usize::MAX);
                });
                self.other_data.notify(usize::MAX);
            }
        }
    }

    /// A long poll's wait for news of `partition` (register before reading, so no change
    /// between the read and the wait is missed).
    pub fn watch(&self, topic: &str, partition: i32) -> event_listener::EventListener {
        let known = self.topics.borrow().get(topic).is_some_and(|t| (0..t.partitions).contains(&partition));
        if !known {
            return self.other_data.listen();
        }
        self.watchers.borrow_mut().entry((topic.to_owned(), partition)).or_default().listen()
    }

    pub fn replica(&self, topic: &str, partition: i32) -> Option<Rc<ReplicatedPartition>> {
        self.replicas.borrow().get(&(topic.to_owned(), partition)).cloned()
    }

    /// Controlled shutdown: whether this core still leads a partition, by its metadata image
    /// or by a replica that has not yet applied the image that moved its leadership away. A
    /// partition the image leaves leaderless (this broker was its only ISR member) does not
    /// count: no other broker can take it.
    pub fn still_leading(&self) -> bool {
        let me = NodeId(self.shared.config.node_id);
        let image = self.image.borrow();
        let by_image = image.topics().values().any(|t| t.partitions.iter().any(|p| p.leader == me));
        let by_replica = self.replicas.borrow().values().any(|rp| {
            rp.is_leader() && image.partition(&rp.topic_id, rp.partition).is_some_and(|p| p.leader != NodeId::NONE)
        });
        by_image || by_replica
    }

    /// Whether every partition of `topics` that this core's image says this node leads has
    /// its replica open here and leading (a topic not yet in the image counts as not served).
    pub fn leads_what_image_says(&self, topics: &[String]) -> bool {
        let me = NodeId(self.shared.config.node_id);
        let image = self.image.borrow();
        topics.iter().all(|name| {
            image.topic_by_name(name).is_some_and(|topic| {
                topic.partitions.iter().enumerate().all(|(p, state)| {
                    let p = p as i32;
                    state.leader != me
                        || self.owner(name, p) != self.id
                        || self.replica(name, p).is_some_and(|rp| rp.is_leader() && rp.leader_epoch() >= state.leader_epoch)
                })
            })
        })
    }

    /// Controlled shutdown: stops this core's replicas from taking produces; returns how many
    /// produces are still waiting for an answer (`ReplicatedPartition::drain`).
    pub fn drain_produces(&self) -> usize {
        self.replicas.borrow().values().map(|rp| rp.drain()).sum()
    }

    /// Applies a metadata image: rebuilds this core's topic table, opens
    /// the replicas it owns of new partitions, hands every owned replica the controller's
    /// decision, and drops the partitions of deleted topics. Older images are ignored.
    pub async fn apply_image(self: Rc<Self>, index: u64, image: Arc<MetadataImage>) {
        let _permit = self.image_lock.acquire_permit(1).await.expect("image lock");
        if index <= self.image_index.get() {
            return;
        }
        self.image_index.set(index);
        *self.image.borrow_mut() = image.clone();
        self.expect_offsets_leadership(&image);
        let me = NodeId(self.shared.config.node_id);
        let defaults = self.shared.config.log.clone();
        {
            let mut topics = self.topics.borrow_mut();
            topics.clear();
            for topic in image.topics().values() {
                let config = TopicConfig::new(&defaults, topic.configs.clone())
                    .unwrap_or_else(|_| TopicConfig::new(&defaults, BTreeMap::new()).expect("defaults are valid"));
                topics.insert(
                    topic.name.clone(),
                    TopicMeta { name: topic.name.clone(), id: topic.id, partitions: topic.partitions.len() as i32, config },
                );
            }
        }
        let mut wanted = Vec::new();
        for topic in image.topics().values() {
            for (p, state) in topic.partitions.iter().enumerate() {
                let p = p as i32;
                if self.owner(&topic.name, p) == self.id && state.replicas.contains(&me) {
                    wanted.push((topic.name.clone(), p, topic.id, state.clone()));
                }
            }
        }
        let stale: Vec<(String, i32)> = self
            .replicas
            .borrow()
            .iter()
            .filter(|(key, rp)| !wanted.iter().any(|(t, p, id, _)| (t, *p) == (&key.0, key.1) && *id == rp.topic_id))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if key.0 == OFFSETS_TOPIC {
                self.offsets_leadership(key.1, None);
            }
            let removed = self.replicas.borrow_mut().remove(&key);
            if let Some(rp) = removed {
                rp.stop();
                self.fetchers.remove(&TopicPartition::new(key.0.clone(), key.1));
                info!(topic = %key.0, partition = key.1, "removing partition replica");
                if let Err(e) = rp.store.delete().await {
                    warn!(topic = %key.0, partition = key.1, error = %e, "could not remove partition directory");
                }
            }
        }
        for (topic, p, topic_id, state) in wanted {
            let existing = self.replica(&topic, p);
            let rp = match existing {
                Some(rp) => rp,
                None => {
                    let min_isr = self
                        .topics
                        .borrow()
                        .get(&topic)
                        .and_then(|t| t.config.overrides.get("min.insync.replicas").and_then(|v| v.parse().ok()))
                        .unwrap_or(self.shared.config.min_insync_replicas);
                    let host: Rc<dyn replication::Host> = self.clone();
                    match ReplicatedPartition::open(&host, &topic, p, topic_id, min_isr).await {
                        Ok(rp) => {
                            info!(%topic, partition = p, log_end_offset = rp.store.log_end_offset(), "opened partition replica");
                            self.replicas.borrow_mut().insert((topic.clone(), p), rp.clone());
                            rp
                        }
                        Err(e) => {
                            warn!(%topic, partition = p, error = %e, "could not open partition replica");
                            continue;
                        }
                    }
                }
            };
            rp.apply_state(&state);
            if topic == OFFSETS_TOPIC {
                self.offsets_leadership(p, rp.is_leader().then(|| rp.leader_epoch()));
            }
        }
        // Partitions of deleted topics leave the purgatory; leaderships may have moved, so
        // every long poll reads again.
        self.watchers.borrow_mut().retain(|(topic, _), _| image.topic_by_name(topic).is_some());
        self.announce_data(None);
    }

    pub fn owner(&self, topic: &str, partition: i32) -> ShardId {
        shard_for(topic, partition, self.shared.shard_count)
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

    /// Sends a request to the active controller through core 0; `None` when none answered.
    pub async fn controller_request(self: &Rc<Self>, request: ControllerRequest) -> Option<ControllerResponse> {
        self.on_shard(ShardId(0), move |core0| async move {
            let node = core0.node.borrow().clone()?;
            node.controller_request(request, Duration::from_secs(10)).await
        })
        .await
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
                PeerMessage::DataArrived(partition) => self.wake(partition.as_ref()),
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

    /// One partition of a produce, answered by its replica.
    pub async fn produce_partition(self: Rc<Self>, part: ProducePart) -> Result<ProduceAck, ErrorCode> {
        let Some(rp) = self.replica(&part.topic, part.partition) else {
            return Err(self.missing_partition_error(&part.topic, part.partition));
        };
        let records = part.records.unwrap_or_default();
        if rp.store.config().compact {
            if let Some(error) = keyless_records_error(&records, &part.topic, part.partition) {
                return Err(error);
            }
        }
        rp.produce(records, part.acks, part.timeout_ms).await
    }

    pub async fn fetch_partition(self: Rc<Self>, part: FetchPart) -> FetchResponse {
        let Some(rp) = self.replica(&part.topic, part.partition) else {
            let error = self.missing_partition_error(&part.topic, part.partition);
            return FetchAnswer::Error(error).into_response(Bytes::new(), Offset(-1));
        };
        rp.fetch(part.request).await
    }

    pub async fn list_offsets_partition(self: Rc<Self>, part: ListOffsetsPart) -> ListOffsetsResult {
        let answer = |error, offset, timestamp| ListOffsetsResult { error, offset, timestamp, leader_epoch: -1 };
        let Some(rp) = self.replica(&part.topic, part.partition).filter(|rp| rp.is_leader()) else {
            return answer(Some(self.missing_partition_error(&part.topic, part.partition)), -1, -1);
        };
        let epoch = rp.leader_epoch().0;
        let mut result = match part.timestamp {
            -1 => answer(None, rp.high_watermark(), -1),
            _ => Box::pin(self.clone().list_offsets_store(rp.store.clone(), part)).await,
        };
        result.leader_epoch = epoch;
        result
    }

    /// Where `leader_epoch` ends in this partition's log (OffsetForLeaderEpoch, KIP-101/320),
    /// answered by the leader's `Replica` (followers and brokers without the partition get
    /// NOT_LEADER_OR_FOLLOWER).
    pub async fn offset_for_leader_epoch_partition(self: Rc<Self>, part: EpochEndPart) -> EpochEndResult {
        let current = LeaderEpoch(part.current_leader_epoch);
        let requested = LeaderEpoch(part.leader_epoch);
        let answer = match self.replica(&part.topic, part.partition) {
            Some(rp) => rp.offset_for_leader_epoch(current, requested),
            None => Err(self.missing_partition_error(&part.topic, part.partition)),
        };
        match answer {
            Ok(end) => EpochEndResult { error: None, leader_epoch: end.epoch.0, end_offset: end.end_offset.0 },
            Err(error) => EpochEndResult { error: Some(error), leader_epoch: -1, end_offset: -1 },
        }
    }

    /// NOT_LEADER_OR_FOLLOWER for a known partition this broker does not hold (clients
    /// refresh their metadata), UNKNOWN_TOPIC_OR_PARTITION otherwise.
    fn missing_partition_error(&self, topic: &str, partition: i32) -> ErrorCode {
        if self.topics.borrow().get(topic).is_some_and(|t| (0..t.partitions).contains(&partition)) {
            ErrorCode::NotLeaderOrFollower
        } else {
            ErrorCode::UnknownTopicOrPartition
        }
    }

    async fn list_offsets_store(self: Rc<Self>, store: Rc<PartitionStore>, part: ListOffsetsPart) -> ListOffsetsResult {
        let answer = |error, offset, timestamp| ListOffsetsResult { error, offset, timestamp, leader_epoch: -1 };
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

    /// Retention for this core's partitions, every `log.retention.check.interval.ms`.
    pub async fn retention_loop(self: Rc<Self>) {
        let interval = Duration::from_millis(self.shared.config.retention_check_interval_ms);
        loop {
            glommio::timer::sleep(interval).await;
            // Every replica, leader or follower, applies retention to its own log.
            let replicas: Vec<_> = self.replicas.borrow().values().cloned().collect();
            for rp in replicas {
                rp.apply_retention(wall_ms()).await;
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
            // Replicated partitions too: each replica compacts its own log below its high
            // watermark (the store's visible end), as every Kafka replica runs its own cleaner.
            let stores: Vec<_> = self
                .replicas
                .borrow()
                .values()
                .map(|rp| &rp.store)
                .filter(|s| s.config().compact)
                .cloned()
                .collect();
            for store in stores {
                if let Err(e) = store.clean(wall_ms(), map_limit_bytes).await {
                    // The swap protocol leaves the old segments in place on any failure.
                    warn!(topic = %store.topic, partition = store.partition, error = %e, "cleaning failed; will retry");
                }
                glommio::executor().yield_if_needed().await;
            }
        }
    }

}

impl replication::Host for Shard {
    fn config(&self) -> &crate::config::ServerConfig {
        &self.shared.config
    }

    fn topic_log_config(&self, topic: &str) -> odradek_core::log::LogConfig {
        self.topics.borrow().get(topic).map_or_else(|| self.shared.config.log.clone(), |t| t.config.log.clone())
    }

    fn group_commit(&self) -> &Rc<GroupCommit> {
        &self.commit
    }

    fn announce_data(self: Rc<Self>, topic: &str, partition: i32) {
        Shard::announce_data(&self, Some((topic.to_owned(), partition)));
    }

    fn send_fetch(self: Rc<Self>, leader: NodeId, partition: TopicPartition, fetch_id: u64, request: odradek_core::replica::FetchRequest) {
        let fetchers = self.fetchers.clone();
        fetchers.enqueue(self, leader, partition, fetch_id, request);
    }

    /// Sent from core 0, which holds this broker's registration and the controller link.
    fn alter_partition(self: Rc<Self>, call: AlterPartitionCall) -> BoxedLocal<Option<(ControllerResponse, Vec<NodeId>)>> {
        Box::pin(async move {
            self.on_shard(ShardId(0), move |core0| async move {
                let node = core0.node.borrow().clone()?;
                let broker_epoch = node.broker_epoch.get()?;
                let AlterPartitionCall { topic_id, partition, request } = call;
                let wire = ControllerRequest::AlterPartition(odradek_core::controller::AlterPartitionRequest {
                    broker_id: node.id,
                    broker_epoch,
                    topic_id,
                    partition,
                    leader_epoch: request.leader_epoch,
                    partition_epoch: request.partition_epoch,
                    new_isr: request.new_isr,
                });
                let response = node.controller_request(wire, Duration::from_secs(5)).await?;
                let replicas = node.image().partition(&topic_id, partition).map(|p| p.replicas.clone()).unwrap_or_default();
                Some((response, replicas))
            })
            .await
        })
    }
}

impl crate::fetcher::Host for Shard {
    fn broker_address(&self, node: NodeId) -> Option<std::net::SocketAddr> {
        replication::endpoint_address(&self.image.borrow(), node)
    }

    fn deliver(&self, delivery: Delivery) {
        if let Some(rp) = self.replica(&delivery.partition.topic, delivery.partition.partition) {
            rp.deliver_fetch(delivery.fetch_id, delivery.response);
        }
    }
}

impl crate::cluster::Broker for Shard {
    fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn publish(self: Rc<Self>, index: u64, image: Arc<MetadataImage>) -> BoxedLocal<()> {
        Box::pin(async move {
            self.on_every_shard(move |s| async move { s.apply_image(index, image).await }).await;
        })
    }

    fn applied_image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    fn drain_every_core(self: Rc<Self>) -> BoxedLocal<usize> {
        Box::pin(async move { self.on_every_shard(|s| async move { s.drain_produces() }).await.into_iter().sum() })
    }

    fn any_core_leading(self: Rc<Self>) -> BoxedLocal<bool> {
        Box::pin(async move { self.on_every_shard(|s| async move { s.still_leading() }).await.contains(&true) })
    }

    fn every_core_serves(self: Rc<Self>, topics: Vec<String>) -> BoxedLocal<bool> {
        Box::pin(async move {
            let served = self.on_every_shard(move |s| async move { s.leads_what_image_says(&topics) }).await;
            served.iter().all(|ok| *ok)
        })
    }
}

/// Kafka's LogValidator: "Compacted topic cannot accept message without key" (INVALID_RECORD);
/// records that do not decode are CORRUPT_MESSAGE.
fn keyless_records_error(records: &Bytes, topic: &str, partition: i32) -> Option<ErrorCode> {
    match compact::all_records_keyed(records) {
        Ok(true) => None,
        Ok(false) => {
            warn!(%topic, partition, "rejected produce: a record without a key on a compacted topic");
            Some(ErrorCode::InvalidRecord)
        }
        Err(e) => {
            warn!(%topic, partition, error = %e, "rejected produce: undecodable records");
            Some(ErrorCode::CorruptMessage)
        }
    }
}
