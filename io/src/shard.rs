//! One core's share of the broker: the partition replicas it owns, its copy of the topic
//! table (from the metadata image), its group commit, and the channels to every other core.
//! Core 0 also runs the node's member of the metadata quorum (`cluster::Node`).

use std::cell::{Cell, RefCell, RefMut};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future::BoxedLocal;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::sync::Semaphore;
use odradek_core::broker::groups::GroupResponse;
use odradek_core::broker::{self, Output};
use odradek_core::fetcher::{self, TopicPartition};
use odradek_core::broker::partitions::{
    Answers, DeleteRecordsPart, EpochEndPart, FetchGroup, ListOffsetsPart, ListOffsetsResult, OffsetLookup, PartRead, Parts, ProducePart,
};
use odradek_core::shard::{shard_for, ShardId};
use odradek_core::controller::{MetadataImage, Response as ControllerResponse};
use odradek_core::controller_rpc::ControllerRequest;
use odradek_core::ids::{LeaderEpoch, NodeId, Offset};
use odradek_core::replica::{EpochEndOffset, FetchResponse, ProduceAck};
use odradek_core::validate::Refusal;
use futures_channel::oneshot;
use odradek_core::topic::{BrokerLayers, TopicConfig, TopicMeta, TopicTable};
use odradek_core::ErrorCode;
use tracing::{info, warn};

use crate::clock::{now_ms, wall_ms};
use crate::fetcher::FetcherDriver;
pub use crate::shared::Shared;
use odradek_core::group::GroupCoordinator;
use crate::replication;
use crate::storage::{join_all, GroupCommit, PartitionStore};

/// A replica fetch unanswered this long past its `max_wait_ms` has failed (the connection is
/// dropped and every partition it carried fetches again).
const FETCH_REQUEST_TIMEOUT_MS: i64 = 10_000;

/// Work sent to another core: runs there with that core's [`Shard`] and yields the delivery
/// of its answer, which the asking core runs.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = Delivery>>> + Send>;

/// A job's answer on its way back: run on the asking core, it hands the answer to the task
/// waiting there, typed, through that core's own oneshot.
pub type Delivery = Box<dyn FnOnce() + Send>;

/// One core's answers to its parts of a produce, with the parts' places in the request.
type ProduceShare = Vec<(usize, Result<ProduceAck, Refusal>)>;

/// What cores send each other over their shared channels.
///
/// Every wake-up stays on the core that owns the waker: an answer travels back as a message
/// and completes a oneshot on its own core, and data arriving on one core reaches another's
/// long polls as a message. glommio task wakers woken or dropped from another thread race on
/// the task's reference count (observed as a double free under load), so no future on one
/// core may ever be woken by another core's thread.
pub enum PeerMessage {
    Job { from: ShardId, job: Job },
    Answer(Delivery),
    /// Partitions whose high watermark or written end moved on the sending core (`None`: any
    /// partition's may have).
    DataArrived(Option<Vec<TopicPartition>>),
}

pub struct Shard {
    pub id: ShardId,
    pub shared: Arc<Shared>,
    pub topics: RefCell<TopicTable>,
    pub commit: Rc<GroupCommit>,
    peers: Vec<Option<ConnectedSender<PeerMessage>>>,
    /// Per peer: a wake-up of everything is waiting for room in its channel, so notices of
    /// single partitions to it would add nothing.
    notice_pending: Vec<Cell<bool>>,
    /// Group requests waiting for the machine's answer, by id.
    group_waiters: RefCell<BTreeMap<u64, oneshot::Sender<GroupResponse>>>,
    pub(crate) txn_waiters: RefCell<BTreeMap<u64, oneshot::Sender<odradek_core::txn::Response>>>,
    pub creating_txn_topic: Cell<bool>,
    /// A request to create `__consumer_offsets` is on its way to the controller.
    pub creating_offsets_topic: Cell<bool>,
    /// Core 0 only: the metadata quorum member and the broker's link to the active controller.
    pub node: RefCell<Option<Rc<crate::cluster::Node>>>,
    /// The latest metadata image this core applied, and its log index.
    pub image: RefCell<Arc<MetadataImage>>,
    image_index: Cell<u64>,
    /// Serializes image application (it opens partitions, which awaits).
    image_lock: Semaphore,
    /// This core's data plane: its partition replicas, replica fetchers, waiting produces and
    /// fetch purgatory (`core::broker::Shard`); this type performs its outputs.
    machine: RefCell<broker::Shard>,
    /// The store of every partition the machine holds.
    stores: RefCell<BTreeMap<TopicPartition, Rc<PartitionStore>>>,
    /// Produces waiting for the machine's answer, by token.
    pub(crate) produce_waiters: RefCell<BTreeMap<u64, oneshot::Sender<Result<ProduceAck, ErrorCode>>>>,
    /// DeleteRecords partitions waiting for the machine's answer, by token.
    delete_waiters: RefCell<BTreeMap<u64, oneshot::Sender<Result<Offset, ErrorCode>>>>,
    /// Long polls parked in the machine's purgatory, by wait id.
    fetch_waits: RefCell<BTreeMap<u64, oneshot::Sender<()>>>,
    next_token: Cell<u64>,
    /// An output loop is running (outputs that call back in leave the rest to it).
    pumping: Cell<bool>,
    /// Partitions made visible during this pump, for the other cores.
    news: RefCell<Vec<TopicPartition>>,
    /// Wakes the timer task when the machine's next timer moved earlier than it sleeps for.
    timer_kick: event_listener::Event,
    timer_armed: Cell<Option<i64>>,
    /// The transport of the machine's replica fetchers: one connection per source broker.
    fetchers: Rc<FetcherDriver>,
    /// This core's counters, summed over the cores when `/metrics` is scraped.
    pub metrics: Rc<crate::metrics::counters::CoreMetrics>,
    /// The usage of the clients connected to this core, against their quotas.
    quotas: RefCell<odradek_core::quota::ClientQuotas>,
}

impl Shard {
    /// Records a client's use against its quota: -> how long to throttle it, in milliseconds.
    /// Quotas are per core: a client whose connections land on several cores has the quota
    /// on each (docs/operations.md).
    pub fn record_quota(&self, quota_type: odradek_core::quota::QuotaType, user: &str, client_id: &str, value: f64) -> i64 {
        let image = self.image.borrow();
        if image.client_quotas().is_empty() {
            return 0;
        }
        self.quotas.borrow_mut().record(image.client_quotas(), crate::clock::now_ms(), quota_type, user, client_id, value)
    }

    /// Whether any client quota is set: without one a request has nothing to record.
    pub fn has_client_quotas(&self) -> bool {
        !self.image.borrow().client_quotas().is_empty()
    }

    /// Takes back a recorded use (a throttled fetch sends no data).
    pub fn unrecord_quota(&self, quota_type: odradek_core::quota::QuotaType, user: &str, client_id: &str, value: f64) {
        let image = self.image.borrow();
        self.quotas.borrow_mut().unrecord(image.client_quotas(), crate::clock::now_ms(), quota_type, user, client_id, value);
    }

    /// The most one answer may carry under the client's quota, if one applies.
    pub fn quota_window_max(&self, quota_type: odradek_core::quota::QuotaType, user: &str, client_id: &str) -> Option<f64> {
        let image = self.image.borrow();
        self.quotas.borrow().max_value_in_window(image.client_quotas(), quota_type, user, client_id)
    }

    pub fn new(
        id: ShardId,
        shared: Arc<Shared>,
        peers: Vec<Option<ConnectedSender<PeerMessage>>>,
    ) -> Rc<Shard> {
        let fsync = shared.config.fsync;
        let client_quota_window = shared.config.quota_window;
        let node_id = NodeId(shared.config.node_id);
        let group_config = shared.config.group.clone();
        let txn_config = shared.config.txn.clone();
        let quota_window = shared.config.replication_quota_window;
        // Member ids must differ across restarts; the seed is the only randomness they use.
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        let listener_names: Vec<String> = shared.config.listeners.iter().map(|l| l.name.clone()).collect();
        let metrics = Rc::new(crate::metrics::counters::CoreMetrics::new(shared.config.metrics_listen.is_some(), &listener_names));
        Rc::new(Shard {
            id,
            shared,
            topics: RefCell::new(TopicTable::new()),
            commit: GroupCommit::new(fsync),
            notice_pending: peers.iter().map(|_| Cell::new(false)).collect(),
            peers,
            group_waiters: RefCell::default(),
            txn_waiters: RefCell::default(),
            creating_txn_topic: Cell::new(false),
            creating_offsets_topic: Cell::new(false),
            node: RefCell::new(None),
            image: RefCell::new(Arc::new(MetadataImage::default())),
            image_index: Cell::new(0),
            image_lock: Semaphore::new(1),
            machine: RefCell::new({
                let mut machine = broker::Shard::new(
                    node_id,
                    fetcher::DEFAULT_RESPONSE_MAX_BYTES,
                    FETCH_REQUEST_TIMEOUT_MS,
                    GroupCoordinator::new(group_config, seed ^ id.0 as u64),
                    odradek_core::txn::TxnCoordinator::new(txn_config),
                );
                machine.set_replication_quota_window(quota_window);
                machine
            }),
            stores: RefCell::default(),
            produce_waiters: RefCell::default(),
            delete_waiters: RefCell::default(),
            fetch_waits: RefCell::default(),
            next_token: Cell::new(0),
            pumping: Cell::new(false),
            news: RefCell::default(),
            timer_kick: event_listener::Event::new(),
            timer_armed: Cell::new(None),
            fetchers: Rc::new(FetcherDriver::default()),
            metrics,
            quotas: RefCell::new(odradek_core::quota::ClientQuotas::new(client_quota_window)),
        })
    }

    /// Tells every other core's purgatory that `partitions` (`None`: any partition) have
    /// news; this core's own machine woke its long polls already.
    fn announce_to_peers(self: &Rc<Self>, partitions: Option<Vec<TopicPartition>>) {
        for (peer, sender) in self.peers.iter().enumerate() {
            let Some(sender) = sender else { continue };
            // A long poll parks (and counts) before it asks for its reads, and this core
            // serves a read after the pump that made the news visible: one parked after this
            // load reads the news itself.
            if self.notice_pending[peer].get() || self.shared.parked_long_polls[peer].load(Ordering::SeqCst) == 0 {
                continue;
            }
            let notice = partitions.clone();
            if sender.try_send(PeerMessage::DataArrived(notice)).is_err() {
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

    /// Performs the machine's outputs until it has none. Re-entrant calls (an output whose
    /// performance feeds the machine again) leave the work to the loop already running.
    pub(crate) fn pump(self: &Rc<Self>) {
        if self.pumping.replace(true) {
            return;
        }
        loop {
            let output = self.machine.borrow_mut().poll_output(now_ms());
            let Some(output) = output else { break };
            self.perform(output);
        }
        self.pumping.set(false);
        // One notice per peer for everything this pump made visible: a group-commit round
        // moves many partitions at once, and every message may wake the peer's reactor.
        let news = std::mem::take(&mut *self.news.borrow_mut());
        if !news.is_empty() {
            self.announce_to_peers(Some(news));
        }
        let due = self.machine.borrow().poll_timeout();
        if due.is_some_and(|due| self.timer_armed.get().is_none_or(|armed| due < armed)) {
            self.timer_kick.notify(1);
        }
    }

    fn perform(self: &Rc<Self>, output: Output) {
        match output {
            Output::Disk { partition, generation, action } => {
                let Some(store) = self.stores.borrow().get(&partition).cloned() else { return };
                let this = self.clone();
                glommio::spawn_local(async move {
                    let completion = match replication::perform(&this.shared.log_dirs, &store, &this.commit, action).await {
                        Ok(completion) => completion,
                        Err(failed) => {
                            // Never finished: the replica waits for a completion that does not
                            // come, until its removal answers what waited on it.
                            this.dir_failed(failed.newly).await;
                            return;
                        }
                    };
                    // Before the partition's next disk action (which `finish` lets start), so a
                    // truncation cannot overtake a snapshot of what it removes.
                    if let Some(base) = store.take_rolled() {
                        let snapshot = this.machine.borrow().replica(&partition).map(|r| r.producers().at(Offset(base)).encode_snapshot());
                        if let Some(bytes) = snapshot {
                            if let Err(e) = store.write_producer_snapshot(base, bytes).await {
                                // Only costs a longer replay when the partition opens.
                                warn!(topic = %partition.topic, partition = partition.partition, base, error = %e, "producer snapshot not written");
                            }
                        }
                    }
                    this.machine.borrow_mut().finish(now_ms(), &partition, generation, completion);
                    this.pump();
                })
                .detach();
            }
            Output::Fetch(outgoing) => self.fetchers.send(self.clone(), outgoing),
            Output::EpochQuery { partition, generation, request_id, .. } => {
                // Not used: followers truncate from Fetch v12's diverging_epoch
                // (`truncate_with_offset_for_leader_epoch` is off in the broker).
                self.machine.borrow_mut().handle_epoch_answer(
                    now_ms(),
                    &partition,
                    generation,
                    request_id,
                    Err(ErrorCode::UnsupportedVersion),
                );
            }
            Output::AlterPartition { partition, generation, topic_id, request_id, request } => {
                let this = self.clone();
                let isr_before = self.machine.borrow().replica(&partition).map_or(0, |r| r.isr().len());
                glommio::spawn_local(async move {
                    let answer = this.alter_partition(topic_id, partition.partition, request).await;
                    let result = replication::alter_partition_result(answer);
                    if let Ok(state) = &result {
                        this.metrics.isr_changed(isr_before, state.isr.len());
                    }
                    this.machine.borrow_mut().handle_alter_partition_response(now_ms(), &partition, generation, request_id, result);
                    this.pump();
                })
                .detach();
            }
            Output::Produced { token, result } => {
                if let Some(waiter) = self.produce_waiters.borrow_mut().remove(&token) {
                    let _ = waiter.send(result);
                }
            }
            Output::RecordsDeleted { token, result } => {
                if let Some(waiter) = self.delete_waiters.borrow_mut().remove(&token) {
                    let _ = waiter.send(result);
                }
            }
            Output::Visible { partition, high_watermark } => {
                if let Some(store) = self.stores.borrow().get(&partition) {
                    store.set_high_watermark(high_watermark.0);
                }
                self.news.borrow_mut().push(partition);
            }
            Output::Woken { wait } => {
                if let Some(waiter) = self.fetch_waits.borrow_mut().remove(&wait) {
                    let _ = waiter.send(());
                }
            }
            Output::GroupReply { id, response } => {
                if let Some(waiter) = self.group_waiters.borrow_mut().remove(&id) {
                    let _ = waiter.send(response);
                }
            }
            Output::TxnReply { id, response } => {
                if let Some(waiter) = self.txn_waiters.borrow_mut().remove(&id) {
                    let _ = waiter.send(response);
                }
            }
            Output::NewProducerId { token } => self.fetch_producer_id(token),
            Output::WriteMarkers { token, producer_id, producer_epoch, marker, partitions } => {
                self.send_markers(token, producer_id, producer_epoch, marker, partitions);
            }
            Output::VerifyTxn { token, transactional_id, producer_id, producer_epoch, partition } => {
                self.verify_txn(token, transactional_id, producer_id, producer_epoch, partition);
            }
            Output::ReadCoordinatorLog { partition, generation, from, upto, max_bytes } => {
                let Some(store) = self.stores.borrow().get(&partition).cloned() else { return };
                let this = self.clone();
                glommio::spawn_local(async move {
                    let read = store
                        .read_upto(from.0, max_bytes, upto.0)
                        .await
                        .map_err(|e| format!("{}-{} at {}: {e}", partition.topic, partition.partition, from.0));
                    this.machine.borrow_mut().handle_coordinator_read(now_ms(), &partition, generation, read);
                    this.pump();
                })
                .detach();
            }
        }
    }

    /// Runs the machine's timers (replica lag and produce deadlines, fetch rounds and
    /// timeouts, long-poll deadlines) on the monotonic clock.
    pub async fn timer_loop(self: Rc<Self>) {
        loop {
            let listener = self.timer_kick.listen();
            let due = self.machine.borrow().poll_timeout();
            self.timer_armed.set(due);
            let now = now_ms();
            if due.is_some_and(|due| due <= now) {
                self.machine.borrow_mut().handle_timeout(now);
                self.pump();
                if self.machine.borrow().poll_timeout().is_some_and(|due| due <= now) {
                    // Never spin without yielding: other tasks share this core.
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            crate::clock::wait_until(listener, due, now).await;
        }
    }

    /// An id for a long poll, which parks under it read after read until [`Self::unpark`].
    pub fn fetch_wait(&self) -> u64 {
        self.token()
    }

    /// Parks a long poll on `partitions` until news of one of them or `deadline_ms`; park
    /// before reading, so news between the read and the wait is not missed.
    pub fn park(self: &Rc<Self>, wait: u64, partitions: Arc<[TopicPartition]>, deadline_ms: i64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.fetch_waits.borrow_mut().insert(wait, tx);
        self.machine.borrow_mut().park(wait, partitions, deadline_ms);
        self.count_long_polls();
        self.pump();
        rx
    }

    pub fn unpark(&self, wait: u64) {
        self.fetch_waits.borrow_mut().remove(&wait);
        self.machine.borrow_mut().unpark(wait);
        self.count_long_polls();
    }

    fn count_long_polls(&self) {
        let parked = self.machine.borrow().parked_long_polls();
        self.shared.parked_long_polls[self.id.0].store(parked, Ordering::SeqCst);
    }

    /// An id for a group request, and where its answer will come.
    pub(crate) fn await_group_reply(&self) -> (u64, oneshot::Receiver<GroupResponse>) {
        let id = self.token();
        let (tx, rx) = oneshot::channel();
        self.group_waiters.borrow_mut().insert(id, tx);
        (id, rx)
    }

    pub(crate) fn machine(&self) -> RefMut<'_, broker::Shard> {
        self.machine.borrow_mut()
    }

    pub(crate) fn stores(&self) -> std::cell::Ref<'_, BTreeMap<TopicPartition, Rc<PartitionStore>>> {
        self.stores.borrow()
    }

    pub(crate) fn token(&self) -> u64 {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        token
    }

    /// Whether this core's replica of the partition leads, and in which epoch.
    pub fn leadership(&self, topic: &str, partition: i32) -> Option<LeaderEpoch> {
        let machine = self.machine.borrow();
        let replica = machine.replica(&TopicPartition::new(topic, partition))?;
        (replica.role() == odradek_core::replica::Role::Leader).then(|| replica.leader_epoch())
    }

    /// Controlled shutdown: whether this core still leads a partition, by its metadata image
    /// or by a replica that has not yet applied the image that moved its leadership away. A
    /// partition the image leaves leaderless (this broker was its only ISR member) does not
    /// count: no other broker can take it.
    pub fn still_leading(&self) -> bool {
        let me = NodeId(self.shared.config.node_id);
        let image = self.image.borrow();
        let by_image = image.topics().values().any(|t| t.partitions.iter().any(|p| p.leader == me));
        let by_replica = self.machine.borrow().partitions().any(|(tp, topic_id, replica)| {
            replica.role() == odradek_core::replica::Role::Leader
                && image.partition(&topic_id, tp.partition).is_some_and(|p| p.leader != NodeId::NONE)
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
                        || self.leadership(name, p).is_some_and(|epoch| epoch >= state.leader_epoch)
                })
            })
        })
    }

    /// Controlled shutdown: stops this core's replicas from taking produces; returns how many
    /// produces are still waiting for an answer (`core::broker::Shard::drain`).
    pub fn drain_produces(&self) -> usize {
        self.machine.borrow_mut().drain()
    }

    /// Applies a metadata image: rebuilds this core's topic table, opens
    /// the replicas it owns of new partitions, hands every owned replica the controller's
    /// decision, and drops the partitions of deleted topics. Older images are ignored.
    pub async fn apply_image(self: Rc<Self>, index: u64, image: Arc<MetadataImage>) {
        let _permit = self.image_lock.acquire_permit(1).await.expect("image lock");
        if index <= self.image_index.get() {
            return;
        }
        // Partitions of the first image this core applies were this node's before it started
        // (a broker publishes only once caught up): one that no directory holds then may be in
        // an offline one. Those of later images are new here (`LogDirs::place`).
        let first_image = self.image_index.get() == 0;
        self.image_index.set(index);
        *self.image.borrow_mut() = image.clone();
        let defaults = self.shared.config.log.clone();
        let layers = self.broker_layers(&image);
        {
            let mut topics = self.topics.borrow_mut();
            topics.clear();
            for topic in image.topics().values() {
                let config = TopicConfig::new(&layers, topic.configs.clone())
                    .unwrap_or_else(|_| TopicConfig::new(&layers, BTreeMap::new()).expect("defaults are valid"));
                topics.insert(
                    topic.name.clone(),
                    TopicMeta { name: topic.name.clone(), id: topic.id, partitions: topic.partitions.len() as i32, config },
                );
            }
        }
        let plan = self.machine.borrow_mut().plan_image(&image, |tp| self.owner(&tp.topic, tp.partition) == self.id);
        self.pump();
        for tp in &plan.remove {
            let removed = self.stores.borrow_mut().remove(tp);
            if let Some(store) = removed {
                info!(topic = %tp.topic, partition = tp.partition, "removing partition replica");
                if let Err(e) = store.delete().await {
                    warn!(topic = %tp.topic, partition = tp.partition, error = %e, "could not remove partition directory");
                }
                self.shared.log_dirs.forget(&tp.topic, tp.partition);
            }
        }
        let mut failed = false;
        for opening in &plan.open {
            let tp = &opening.partition;
            let log_config = self.topics.borrow().get(&*tp.topic).map_or_else(|| defaults.clone(), |t| t.config.log.clone());
            let min_isr = self.topics.borrow().get(&*tp.topic).map_or(self.shared.config.min_insync_replicas, |t| t.config.min_insync_replicas as usize);
            let log_dirs = &self.shared.log_dirs;
            if log_dirs.is_offline(&tp.topic, tp.partition) {
                continue;
            }
            let dir = match log_dirs.place(&tp.topic, tp.partition, first_image) {
                Ok(dir) => dir,
                Err(reason) => {
                    warn!(topic = %tp.topic, partition = tp.partition, %reason, "partition replica offline (KAFKA_STORAGE_ERROR)");
                    continue;
                }
            };
            match replication::open(&self.shared.config, &dir, log_config, &tp.topic, tp.partition, opening.topic_id, min_isr).await {
                Ok(opened) => {
                    info!(topic = %tp.topic, partition = tp.partition, log_end_offset = opened.store.log_end_offset(), "opened partition replica");
                    let mut machine = self.machine.borrow_mut();
                    machine.open(tp.clone(), opening.topic_id, opened.config, opened.persisted);
                    let high_watermark = machine.replica(tp).expect("just opened").high_watermark();
                    opened.store.set_high_watermark(high_watermark.0);
                    self.stores.borrow_mut().insert(tp.clone(), opened.store);
                }
                // Kafka takes the log directory offline when loading a log fails.
                Err(e) => failed |= log_dirs.fail(&tp.topic, tp.partition, "opening the partition", &dir, &e),
            }
        }
        if failed {
            self.dir_failed(true).await;
        }
        self.reconfigure_partitions();
        self.machine.borrow_mut().apply_image(now_ms(), plan);
        self.pump();
        self.announce_to_peers(None);
    }

    /// A log directory went offline (`LogDirs::fail`): the replicas it holds leave this core's
    /// machine (what waited on them is answered, their long polls read again) and their stores
    /// close, leaving the files as they are for whoever repairs the disk; from now on they
    /// answer KAFKA_STORAGE_ERROR (`offline_refusal`). `everywhere`: every core does so.
    async fn dir_failed(self: &Rc<Self>, everywhere: bool) {
        if everywhere {
            self.on_every_shard(|shard| async move { shard.close_offline_partitions() }).await;
        } else {
            self.close_offline_partitions();
        }
    }

    fn close_offline_partitions(self: &Rc<Self>) {
        let log_dirs = &self.shared.log_dirs;
        let offline: Vec<TopicPartition> =
            self.stores.borrow().keys().filter(|tp| log_dirs.is_offline(&tp.topic, tp.partition)).cloned().collect();
        if offline.is_empty() {
            return;
        }
        for tp in &offline {
            self.stores.borrow_mut().remove(tp);
            self.machine.borrow_mut().remove(tp);
        }
        info!(partitions = offline.len(), "replicas of an offline log directory closed");
        self.pump();
    }

    /// KAFKA_STORAGE_ERROR for a partition whose log directory is offline: Kafka's answer
    /// for its produces and fetches until its leadership moves (the next heartbeat reports
    /// the replica offline and the controller elects another leader; clients then find it in
    /// the metadata).
    pub fn offline_refusal(&self, partition: &TopicPartition) -> Option<ErrorCode> {
        self.shared.log_dirs.is_offline(&partition.topic, partition.partition).then_some(ErrorCode::KafkaStorageError)
    }

    /// The broker-wide layers topic configs fall back on: this node's dynamic settings and the
    /// cluster's from `image`, over the properties file's.
    pub fn broker_layers(&self, image: &MetadataImage) -> BrokerLayers {
        let node = odradek_core::ids::NodeId(self.shared.config.node_id);
        BrokerLayers {
            dynamic_broker: image.broker_configs(Some(node)).clone(),
            dynamic_default: image.broker_configs(None).clone(),
            static_broker: self.shared.config.topic_defaults.clone(),
        }
    }

    /// Hands every open partition its topic's current configs (they change live with
    /// AlterConfigs): the log's roll, retention and cleaning settings, the replica's produce
    /// rules and min.insync.replicas, and the replication throttles with the broker's rates.
    fn reconfigure_partitions(&self) {
        let topics = self.topics.borrow();
        let stores = self.stores.borrow();
        let mut machine = self.machine.borrow_mut();
        let now = now_ms();
        machine.set_replication_throttle_rates(&self.broker_layers(&self.image.borrow()), self.shared.shard_count);
        for (tp, store) in stores.iter() {
            let Some(topic) = topics.get(&*tp.topic) else { continue };
            if store.config() != topic.config.log {
                info!(topic = %tp.topic, partition = tp.partition, "topic configs changed; the partition follows them");
                store.set_config(topic.config.log.clone());
            }
            if let Some(replica) = machine.replica(tp) {
                let mut config = replica.config().clone();
                topic.config.apply_to(&mut config);
                machine.reconfigure(now, tp, config);
            }
            machine.set_replication_throttled(tp, &topic.config);
        }
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
        self.send_job(target, job).await.await
    }

    /// Hands `job` to core `target`'s queue and returns once it is there (the other core runs
    /// its jobs in the order they arrive); the returned future is the job's answer.
    async fn send_job<R, F, Fut>(self: &Rc<Self>, target: ShardId, job: F) -> impl Future<Output = R> + 'static
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let (tx, rx) = futures_channel::oneshot::channel::<R>();
        // The sender travels to the target and back inside the delivery, and is used (or
        // dropped) only when the delivery runs here, so the waiting task is woken on its own
        // core's thread.
        let boxed: Job = Box::new(move |shard| {
            Box::pin(async move {
                let answer = job(shard).await;
                Box::new(move || {
                    let _ = tx.send(answer);
                }) as Delivery
            })
        });
        let sender = self.peers[target.0].as_ref().expect("a channel to every other core");
        if sender.send(PeerMessage::Job { from: self.id, job: boxed }).await.is_err() {
            panic!("core {} stopped serving", target.0);
        }
        async move { rx.await.unwrap_or_else(|_| panic!("core {} dropped a request", target.0)) }
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
                PeerMessage::Job { from, job } => {
                    let this = self.clone();
                    glommio::spawn_local(async move {
                        let answer = job(this.clone()).await;
                        let sender = this.peers[from.0].as_ref().expect("a channel to every other core");
                        if let Err(unsent) = sender.send(PeerMessage::Answer(answer)).await {
                            // Dropping it here would wake the asking task from this thread.
                            std::mem::forget(unsent);
                            warn!(core = this.id.0, to = from.0, "a core stopped listening for answers");
                        }
                    })
                    .detach();
                }
                PeerMessage::Answer(deliver) => deliver(),
                PeerMessage::DataArrived(partitions) => {
                    {
                        let mut machine = self.machine.borrow_mut();
                        match partitions {
                            Some(partitions) => partitions.iter().for_each(|tp| machine.notify(Some(tp))),
                            None => machine.notify(None),
                        }
                    }
                    self.pump();
                }
            }
        }
    }

    /// Runs `work` for every part on the core owning its partition, all concurrently; the
    /// answers come back per core, for the call to merge into the client's order.
    pub async fn scatter<P, R, W, Fut>(self: &Rc<Self>, parts: Parts<P>, work: W) -> Answers<R>
    where
        P: Send + 'static,
        R: Send + 'static,
        W: Fn(Rc<Shard>, P) -> Fut + Copy + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let groups = parts.into_iter().map(|(target, group)| {
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
        join_all(groups).await
    }

    /// Runs `work` on each share's owning core, with the whole share at once.
    pub async fn scatter_groups<G, R, W, Fut>(self: &Rc<Self>, groups: &[(ShardId, G)], work: W) -> Answers<R>
    where
        G: Clone + Send + 'static,
        R: Send + 'static,
        W: Fn(Rc<Shard>, G) -> Fut + Copy + Send + 'static,
        Fut: Future<Output = Vec<(usize, R)>> + 'static,
    {
        let calls = groups.iter().map(|&(target, ref group)| {
            let (this, group) = (self.clone(), group.clone());
            async move { this.on_shard(target, move |owner| work(owner, group)).await }
        });
        // A share on one core alone needs no task of its own.
        if let [_] = groups {
            return vec![calls.into_iter().next().expect("one share").await];
        }
        join_all(calls).await
    }

    // ---- partition work, run on the owning core ----

    /// One partition of a produce, with its replica when this returns; the returned future is
    /// its answer (none for acks=0, which is answered only on failure: its connection gets no
    /// response anyway).
    fn start_produce_partition(self: &Rc<Self>, part: ProducePart) -> impl Future<Output = Result<ProduceAck, Refusal>> + 'static {
        let acks = part.acks;
        let counted = self.metrics.enabled().then(|| (self.metrics.clone(), part.partition.topic.clone(), part.records.clone()));
        let token = self.token();
        let (tx, rx) = oneshot::channel();
        if acks != 0 {
            self.produce_waiters.borrow_mut().insert(token, tx);
        }
        let started = match self.offline_refusal(&part.partition) {
            Some(code) => Err(Refusal::from(code)),
            None => self.machine.borrow_mut().produce_part(now_ms(), part, token),
        };
        let early = match started {
            Err(error) => {
                self.produce_waiters.borrow_mut().remove(&token);
                Some(Err(error))
            }
            Ok(()) => {
                self.pump();
                (acks == 0).then_some(Ok(ProduceAck { base_offset: Offset(-1), log_append_time_ms: None, log_start_offset: Offset(-1) }))
            }
        };
        async move {
            let answer = match early {
                Some(answer) => answer,
                None => rx.await.unwrap_or(Err(ErrorCode::NotLeaderOrFollower)).map_err(Refusal::from),
            };
            // What the client is told it wrote (acks=0: what was taken for appending).
            if let Some((metrics, topic, records)) = counted {
                match &answer {
                    Ok(_) => metrics.produced(&topic, &records),
                    Err(refusal) => metrics.error(kafka_protocol::messages::ApiKey::Produce, refusal.code.code()),
                }
            }
            answer
        }
    }

    /// A core's parts of a produce, with their replicas when this returns; the returned future
    /// answers them in order.
    fn start_produce_group(self: &Rc<Self>, group: Vec<(usize, ProducePart)>) -> impl Future<Output = ProduceShare> + 'static {
        let started: Vec<_> = group.into_iter().map(|(position, part)| (position, self.start_produce_partition(part))).collect();
        async move {
            let mut out = Vec::with_capacity(started.len());
            for (position, answer) in started {
                out.push((position, answer.await));
            }
            out
        }
    }

    /// A Produce's parts handed to their owning cores, one core after another: this core's are
    /// with their replicas and another core's in its queue when this returns, so the produces a
    /// connection starts one after another reach each replica in that order (an idempotent
    /// producer's batches in flight keep their sequence order). The returned future answers.
    pub async fn start_produce(self: &Rc<Self>, parts: Parts<ProducePart>) -> BoxedLocal<Answers<Result<ProduceAck, Refusal>>> {
        let mut answers: Vec<BoxedLocal<ProduceShare>> = Vec::with_capacity(parts.len());
        for (target, group) in parts {
            if target == self.id {
                answers.push(Box::pin(self.start_produce_group(group)));
            } else {
                // The other core starts the group when it runs the job, in arrival order.
                let job = move |owner: Rc<Shard>| async move { owner.start_produce_group(group).await };
                answers.push(Box::pin(self.send_job(target, job).await));
            }
        }
        Box::pin(async move {
            let mut out = Vec::with_capacity(answers.len());
            for answer in answers {
                out.push(answer.await);
            }
            out
        })
    }

    /// One read of a Fetch's share on this core ([`FetchCall::groups`]): the replicas answer
    /// together, and only the partitions with something to return read their logs.
    pub async fn fetch_partitions(self: Rc<Self>, group: FetchGroup) -> Vec<(usize, FetchResponse)> {
        let now = now_ms();
        let reads: Vec<PartRead> = {
            let mut machine = self.machine.borrow_mut();
            group.iter().map(|(_, part)| machine.fetch_part(now, part)).collect()
        };
        let offline: Vec<bool> = group.iter().map(|(_, part)| self.offline_refusal(&part.partition).is_some()).collect();
        // Only a follower's fetch gives the replica something to do (`Shard::fetch`).
        if group.iter().any(|(_, part)| part.request.replica_id != NodeId::NONE) {
            self.pump();
        }
        let throttled: Vec<usize> =
            group.iter().zip(&reads).filter(|(_, read)| read.leader_throttled()).map(|((position, _), _)| *position).collect();
        let mut answers = Vec::with_capacity(group.len());
        let mut pending = Vec::new();
        for (((position, part), read), offline) in group.iter().zip(reads).zip(offline) {
            if offline {
                // As a failed read answers (`PartRead::into_response`).
                answers.push((*position, read.into_response(Err(()))));
                continue;
            }
            match read.range() {
                None => answers.push((*position, read.into_response(Ok(Bytes::new())))),
                Some(range) => {
                    // The replica and its store are opened and removed together: a range means a store.
                    let store = self.stores.borrow().get(&part.partition).cloned();
                    let (position, tp) = (*position, part.partition.clone());
                    pending.push(async move {
                        let Some(store) = store else { return (position, read.into_response(Err(()))) };
                        let records = store.read_upto(range.from.0, range.max_bytes, range.upto.0).await.map_err(|e| {
                            warn!(topic = %tp.topic, partition = tp.partition, error = %e, "read failed");
                        });
                        (position, read.into_response(records))
                    });
                }
            }
        }
        match pending.len() {
            0 => {}
            1 => answers.push(pending.pop().expect("one read").await),
            _ => answers.extend(join_all(pending).await),
        }
        if !throttled.is_empty() {
            let bytes: usize = answers.iter().filter(|(position, _)| throttled.contains(position)).map(|(_, r)| r.records.len()).sum();
            self.machine.borrow_mut().record_leader_throttled(now_ms(), bytes as u64);
        }
        answers
    }

    /// One partition of a ListOffsets, answered by the leader's replica, or by a search of
    /// its store's time index.
    pub async fn list_offsets_partition(self: Rc<Self>, part: ListOffsetsPart) -> ListOffsetsResult {
        if let Some(code) = self.offline_refusal(&part.partition) {
            return ListOffsetsResult::error(code);
        }
        let lookup = self.machine.borrow().list_offsets(&part);
        let (timestamp, leader_epoch) = match lookup {
            OffsetLookup::Answered(result) => return result,
            OffsetLookup::ByTimestamp { timestamp, leader_epoch } => (timestamp, leader_epoch),
        };
        let tp = &part.partition;
        let store = self.stores.borrow().get(tp).cloned();
        let found = match store {
            Some(store) => store.offset_for_timestamp(timestamp).await.map_err(|e| {
                warn!(topic = %tp.topic, partition = tp.partition, error = %e, "timestamp lookup failed");
            }),
            None => Err(()),
        };
        ListOffsetsResult::found(found, leader_epoch)
    }

    /// One partition of a DeleteRecords: its new low watermark once its leader recorded it.
    pub async fn delete_records_partition(self: Rc<Self>, part: DeleteRecordsPart) -> Result<Offset, ErrorCode> {
        if let Some(code) = self.offline_refusal(&part.partition) {
            return Err(code);
        }
        let token = self.token();
        let (tx, rx) = oneshot::channel();
        self.delete_waiters.borrow_mut().insert(token, tx);
        let started = self.machine.borrow_mut().delete_records_part(now_ms(), &part, token);
        if let Err(error) = started {
            self.delete_waiters.borrow_mut().remove(&token);
            return Err(error);
        }
        self.pump();
        rx.await.unwrap_or(Err(ErrorCode::NotLeaderOrFollower))
    }

    /// A partition's idempotent producers, from its leader (DescribeProducers).
    pub async fn describe_producers_partition(self: Rc<Self>, part: TopicPartition) -> Result<Vec<(i64, i16, i32)>, ErrorCode> {
        self.machine.borrow().describe_producers(&part)
    }

    /// Where an epoch ends in a partition's log (OffsetForLeaderEpoch, KIP-101/320).
    pub async fn offset_for_leader_epoch_partition(self: Rc<Self>, part: EpochEndPart) -> Result<EpochEndOffset, ErrorCode> {
        self.machine.borrow().epoch_end(&part)
    }

    /// Retention for this core's partitions, every `log.retention.check.interval.ms`.
    pub async fn retention_loop(self: Rc<Self>) {
        let interval = Duration::from_millis(self.shared.config.retention_check_interval_ms);
        loop {
            glommio::timer::sleep(interval).await;
            // Every replica, leader or follower, applies retention to its own log, never above
            // its high watermark; the replica's log start follows.
            let stores: Vec<_> = self.stores.borrow().iter().map(|(tp, s)| (tp.clone(), s.clone())).collect();
            for (tp, store) in stores {
                let Some(high_watermark) = self.machine.borrow().replica(&tp).map(|r| r.high_watermark().0) else { continue };
                if let Some(start) = store.apply_retention(wall_ms(), high_watermark).await {
                    self.machine.borrow_mut().handle_log_start_advanced(now_ms(), &tp, Offset(start));
                    self.pump();
                }
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
            let stores: Vec<_> = self.stores.borrow().values().filter(|s| s.config().compact).cloned().collect();
            for store in stores {
                let partition = TopicPartition::new(store.topic.as_str(), store.partition);
                let stable = self.machine.borrow().replica(&partition).map_or_else(crate::storage::Stable::none, |r| {
                    crate::storage::Stable {
                        last_stable_offset: r.last_stable_offset().0,
                        aborted: r.producers().aborted_between(Offset(0), Offset(i64::MAX)),
                    }
                });
                if let Err(e) = store.clean(wall_ms(), map_limit_bytes, stable).await {
                    // The swap protocol leaves the old segments in place on any failure.
                    warn!(topic = %store.topic, partition = store.partition, error = %e, "cleaning failed; will retry");
                }
                glommio::executor().yield_if_needed().await;
            }
        }
    }

}

impl Shard {
    /// An AlterPartition for this broker, sent to the active controller from core 0 (which
    /// holds this broker's registration and the controller link); its answer and the
    /// partition's replicas in the image, `None` when no controller answered.
    async fn alter_partition(
        self: &Rc<Self>,
        topic_id: odradek_core::controller::TopicId,
        partition: i32,
        request: odradek_core::replica::AlterPartitionRequest,
    ) -> Option<(ControllerResponse, Vec<NodeId>)> {
        self.on_shard(ShardId(0), move |core0| async move {
            let node = core0.node.borrow().clone()?;
            let broker_epoch = node.broker_epoch()?;
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
    }
}

impl crate::fetcher::Host for Shard {
    fn inter_broker_tls(&self) -> Option<&futures_rustls::TlsConnector> {
        self.shared.peer_tls.inter_broker.as_ref()
    }

    fn broker_address(&self, node: NodeId) -> Option<std::net::SocketAddr> {
        replication::endpoint_address(&self.image.borrow(), node, self.shared.config.listener_settings.inter_broker_listener())
    }

    fn fetch_answered(self: Rc<Self>, leader: NodeId, request_id: u64, answer: Result<kafka_protocol::messages::FetchResponse, ErrorCode>) {
        self.machine.borrow_mut().handle_fetch_response(now_ms(), leader, request_id, answer);
        self.pump();
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
