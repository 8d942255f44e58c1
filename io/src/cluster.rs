//! The driver of the controller quorum and the metadata log, on core 0 of every clustered node.
//!
//! It owns one `core::quorum::Quorum`: a `raft::Raft` (a voter on controller nodes, an observer
//! on broker-only ones) and the `controller::Controller` over it (on an observer it never
//! becomes active and serves as the replayed `MetadataImage`), joined by the rules the
//! simulator runs too. It performs the quorum's outputs as `core/src/quorum.rs` says: the Raft
//! log and hard state are written and fsynced before their completions are reported, messages
//! go out on the controller listener, answers go to their requesters. After entries are
//! applied the new image is pushed to every core, which drives its partition replicas from it
//! (`crate::replication`).
//!
//! Brokers reach the active controller through [`Node::controller_request`]: locally when this
//! node is the Raft leader, otherwise as a [`Frame::Request`] to the leader's controller
//! listener (the deviation from Kafka's RPCs is described in `core/src/controller_rpc.rs`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_channel::{mpsc, oneshot};
use futures_lite::future::BoxedLocal;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use glommio::io::BufferedFile;
use glommio::net::{TcpListener, TcpStream};
use odradek_core::broker::producer_ids::ProducerIdBlock;
use odradek_core::controller::{
    AllocateProducerIdsRequest,
    Controller, ControllerConfig, ControllerError, CreatableTopic,
    CreateTopicsRequest, Endpoint, MetadataImage, Response, TopicId,
};
use odradek_core::controller_rpc::{ControllerRequest, Frame};
use odradek_core::ids::{BrokerEpoch, NodeId};
use odradek_core::lifecycle::{self, BrokerLifecycle, Shutdown};
use odradek_core::quorum::{self, Quorum};
use odradek_core::raft::{self, Entry, HardState, Index, Raft, RaftConfig};
use odradek_core::topic::TopicTable;
use odradek_core::ErrorCode;
use tracing::{debug, info, warn};

use odradek_core::group::OFFSETS_TOPIC;
use crate::clock::now_ms;
use crate::shared::Shared;
use crate::storage::{log_dir_failed, write_file};

/// Largest frame accepted on the controller listener (a Raft Append carries at most 1 MiB of
/// entries plus their headers).
const MAX_FRAME_BYTES: usize = 16 << 20;
const OUTBOUND_QUEUE: usize = 4096;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the quorum member needs from the broker it runs in (core 0's `Shard` provides it).
pub trait Broker {
    fn shared(&self) -> &Arc<Shared>;
    /// Hands the image committed at `index` to every core.
    fn publish(self: Rc<Self>, index: u64, image: Arc<MetadataImage>) -> BoxedLocal<()>;
    /// The image this core applied last.
    fn applied_image(&self) -> Arc<MetadataImage>;
    /// Controlled shutdown: refuses new produces on every core; how many still wait.
    fn drain_every_core(self: Rc<Self>) -> BoxedLocal<usize>;
    /// Controlled shutdown: whether any core still leads a partition another broker could.
    fn any_core_leading(self: Rc<Self>) -> BoxedLocal<bool>;
    /// Whether every partition of `topics` this node leads is open and leading on its core.
    fn every_core_serves(self: Rc<Self>, topics: Vec<String>) -> BoxedLocal<bool>;
}

/// The quorum member on core 0 of every node; `None` on other cores.
pub struct Node {
    pub id: NodeId,
    broker: Rc<dyn Broker>,
    /// Raft and the controller, joined by `core::quorum`'s rules.
    quorum: RefCell<Quorum>,
    /// Raft's disk actions, in order, for `log_writer`: the reactor never blocks on the
    /// metadata log's writes and fsyncs.
    log_ops: RefCell<VecDeque<LogOp>>,
    log_kick: event_listener::Event,
    /// Quorum addresses of every other voter and observer.
    peers: BTreeMap<NodeId, SocketAddr>,
    outbound: RefCell<BTreeMap<NodeId, mpsc::Sender<Bytes>>>,
    next_request_id: Cell<u64>,
    /// Requests this node's own controller will answer: local callers, or a remote caller's
    /// connection and its request id.
    waiting: RefCell<BTreeMap<u64, Waiter>>,
    /// Requests sent to a remote active controller, by the id we gave them.
    remote: RefCell<BTreeMap<u64, oneshot::Sender<Response>>>,
    /// Wakes the timer task when an input may have moved the next deadline.
    wake: event_listener::Event,
    published: Cell<u64>,
    /// Registration, heartbeats and the serving gate (`core::lifecycle`, which the simulator
    /// runs too): images are published once this incarnation is registered and unfenced.
    lifecycle: RefCell<BrokerLifecycle>,
    /// Wakes the broker loop when the lifecycle may have a request sooner than it sleeps for
    /// (controlled shutdown began).
    lifecycle_kick: event_listener::Event,
    /// This broker's block of producer ids (`core::broker::producer_ids`).
    producer_ids: RefCell<ProducerIdBlock>,
    /// A legacy topic table to re-create in the metadata log before serving (`meta`).
    legacy: RefCell<Option<TopicTable>>,
}

enum Waiter {
    Local(oneshot::Sender<Response>),
    Remote { reply: mpsc::Sender<Bytes>, id: u64 },
}

/// The Raft log and hard state files under `<data>/__cluster_metadata/`.
struct RaftLog {
    dir: PathBuf,
    /// The records Raft restored from, handed over once at start.
    restored: Vec<Entry>,
    /// Byte length of each entry's record, in index order (truncation needs them).
    record_lens: Vec<u64>,
    /// End of the valid records: where the next append goes.
    len: u64,
    /// Opened on first use: start-up runs before the executor serves anything.
    file: Option<Rc<BufferedFile>>,
}

/// One of Raft's disk actions, queued in the order Raft emitted it for the log writer task.
enum LogOp {
    Vote(HardState),
    Truncate(Index),
    Append(Vec<Entry>),
}

fn encode_records(entries: &[Entry]) -> (Vec<u8>, Vec<u64>) {
    let mut buf = Vec::new();
    let mut lens = Vec::with_capacity(entries.len());
    for entry in entries {
        let bytes = entry.encode();
        buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        buf.extend_from_slice(&bytes);
        lens.push(4 + bytes.len() as u64);
    }
    (buf, lens)
}

impl RaftLog {
    /// Loads the log; a torn last record (a crash mid-append, never acknowledged) is cut off.
    /// Runs once at start-up, before the node serves, so it reads with plain blocking calls.
    fn open(dir: PathBuf) -> Result<(RaftLog, HardState), String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let hard = match std::fs::read(dir.join("hard-state")) {
            Ok(bytes) => HardState::decode(&bytes).map_err(|e| format!("hard-state: {e}"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HardState::default(),
            Err(e) => return Err(format!("hard-state: {e}")),
        };
        let path = dir.join("raft.log");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut entries = Vec::new();
        let mut record_lens = Vec::new();
        let mut at = 0usize;
        while at + 4 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            if at + 4 + len > bytes.len() {
                break;
            }
            match Entry::decode(&Bytes::copy_from_slice(&bytes[at + 4..at + 4 + len])) {
                Ok(entry) if entry.index.0 == entries.len() as u64 + 1 => entries.push(entry),
                _ => break,
            }
            record_lens.push(4 + len as u64);
            at += 4 + len;
        }
        if at < bytes.len() {
            warn!(valid = at, len = bytes.len(), "metadata log has a torn tail; truncating it");
            let file = std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            file.set_len(at as u64).map_err(|e| format!("{}: {e}", path.display()))?;
            file.sync_all().map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok((RaftLog { dir, restored: entries, record_lens, len: at as u64, file: None }, hard))
    }

    async fn file(&mut self) -> std::io::Result<Rc<BufferedFile>> {
        if let Some(file) = &self.file {
            return Ok(file.clone());
        }
        let path = self.dir.join("raft.log");
        let file = Rc::new(glommio::io::OpenOptions::new().read(true).write(true).create(true).buffered_open(&path).await?);
        self.file = Some(file.clone());
        Ok(file)
    }

    async fn persist_vote(dir: &Path, hard: HardState) -> std::io::Result<()> {
        write_file(&dir.join("hard-state"), hard.encode().to_vec()).await
    }

    /// Writes records at the end (not yet durable: [`RaftLog::sync`] makes them so).
    async fn write(&mut self, buf: Vec<u8>, lens: Vec<u64>) -> std::io::Result<()> {
        let file = self.file().await?;
        let want = buf.len();
        let written = file.write_at(buf, self.len).await?;
        if written != want {
            return Err(std::io::Error::other(format!("short write: {written} of {want} bytes")));
        }
        self.len += want as u64;
        self.record_lens.extend(lens);
        Ok(())
    }

    async fn sync(&mut self) -> std::io::Result<()> {
        Ok(self.file().await?.fdatasync().await?)
    }

    /// Rare (a follower's conflicting uncommitted suffix): cuts the file back.
    async fn truncate(&mut self, from: Index) -> std::io::Result<()> {
        let keep = (from.0.saturating_sub(1) as usize).min(self.record_lens.len());
        self.record_lens.truncate(keep);
        self.len = self.record_lens.iter().sum();
        let file = self.file().await?;
        file.truncate(self.len).await?;
        Ok(file.fdatasync().await?)
    }
}

impl Node {
    /// Restores the quorum member from disk and starts its network and timer tasks.
    pub fn start(broker: Rc<dyn Broker>, legacy: Option<TopicTable>) -> Result<Rc<Node>, String> {
        let shared = broker.shared().clone();
        let config = &shared.config;
        let id = NodeId(config.node_id);
        let voters: Vec<NodeId> = config.voters().into_iter().map(NodeId).collect();
        let observers: Vec<NodeId> = config.quorum_observers.iter().map(|(id, _)| NodeId(*id)).collect();
        let peers = config
            .quorum_voters
            .iter()
            .chain(&config.quorum_observers)
            .filter(|(n, _)| *n != config.node_id)
            .map(|(n, a)| (NodeId(*n), *a))
            .collect();
        let mut raft_config = RaftConfig::new(id, voters, observers);
        raft_config.election_timeout_ms = config.quorum_election_timeout_ms;
        raft_config.heartbeat_interval_ms = (config.quorum_election_timeout_ms / 5).max(10);
        let (mut log, hard) = RaftLog::open(config.data_dir.join("__cluster_metadata"))?;
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        let restored = std::mem::take(&mut log.restored);
        let raft = Raft::restore(raft_config, seed, now_ms(), hard, restored).map_err(|e| e.to_string())?;
        let mut controller_config = ControllerConfig::new(id);
        controller_config.broker_session_timeout_ms = config.broker_session_timeout_ms;
        controller_config.default_replication_factor = config.default_replication_factor;
        controller_config.num_partitions = config.num_partitions;
        controller_config.unclean_leader_election_enable = config.unclean_leader_election_enable;
        controller_config.leader_imbalance_check_interval_ms =
            config.auto_leader_rebalance.then_some(config.leader_imbalance_check_interval_s * 1000);
        controller_config.leader_imbalance_per_broker_percentage = config.leader_imbalance_per_broker_percentage;
        let controller = Controller::new(controller_config, seed.rotate_left(17));
        let node = Rc::new(Node {
            id,
            broker,
            quorum: RefCell::new(Quorum::new(raft, controller)),
            log_ops: RefCell::default(),
            log_kick: event_listener::Event::new(),
            peers,
            outbound: RefCell::default(),
            next_request_id: Cell::new(1),
            waiting: RefCell::default(),
            remote: RefCell::default(),
            wake: event_listener::Event::new(),
            published: Cell::new(0),
            lifecycle: RefCell::new(BrokerLifecycle::new(
                id,
                *uuid::Uuid::new_v4().as_bytes(),
                config
                    .listeners
                    .iter()
                    .map(|l| Endpoint { name: l.name.clone(), host: l.advertised.0.clone(), port: l.advertised.1 })
                    .collect(),
                config.broker_heartbeat_interval_ms.min(config.broker_session_timeout_ms as u64 / 3).max(50) as i64,
                now_ms(),
            )
            .with_rack(config.broker_rack.clone())),
            lifecycle_kick: event_listener::Event::new(),
            producer_ids: RefCell::new(ProducerIdBlock::default()),
            legacy: RefCell::new(legacy),
        });
        for (&peer, &addr) in &node.peers {
            let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
            node.outbound.borrow_mut().insert(peer, tx);
            let tls = shared.peer_tls.controller_client.clone();
            glommio::spawn_local(node.clone().outbound_loop(peer, addr, tls, rx)).detach();
        }
        // A standalone node is the whole quorum: nothing would ever connect to a listener.
        if !config.standalone() || config.controller_listen.is_some() {
            let listen = config.quorum_address().ok_or("no controller listener address")?;
            let listener = TcpListener::bind(listen).map_err(|e| format!("controller listener {listen}: {e}"))?;
            let tls = shared.peer_tls.controller_server.clone();
            info!(%listen, node = %id, tls = tls.is_some(), "controller listener up");
            glommio::spawn_local(node.clone().accept_loop(listener, tls)).detach();
        }
        glommio::spawn_local(node.clone().timer_loop()).detach();
        glommio::spawn_local(node.clone().log_writer(log)).detach();
        if config.roles.broker {
            glommio::spawn_local(node.clone().broker_loop()).detach();
        }
        glommio::spawn_local(node.clone().shutdown_watch()).detach();
        node.pump();
        Ok(node)
    }

    /// This broker's current registration epoch (for AlterPartition).
    /// The next producer id of this broker's block, with a new block from the controller when
    /// it is used up. Unreachable controller: COORDINATOR_LOAD_IN_PROGRESS, which producers retry.
    pub async fn next_producer_id(self: &Rc<Self>) -> Result<i64, ErrorCode> {
        if let Some(id) = self.producer_ids.borrow_mut().take() {
            return Ok(id);
        }
        let broker_epoch = self.broker_epoch().ok_or(ErrorCode::CoordinatorLoadInProgress)?;
        let request = ControllerRequest::AllocateProducerIds(AllocateProducerIdsRequest { broker_id: self.id, broker_epoch });
        match self.controller_request(request, Duration::from_secs(10)).await {
            Some(Response::AllocateProducerIds(r)) if r.error.is_none() => {
                info!(first = r.first_producer_id, count = r.count, "producer id block allocated");
                let mut block = self.producer_ids.borrow_mut();
                block.refill(r.first_producer_id, r.count);
                block.take().ok_or(ErrorCode::CoordinatorLoadInProgress)
            }
            other => {
                warn!(answer = ?other, "no producer id block from the controller");
                Err(ErrorCode::CoordinatorLoadInProgress)
            }
        }
    }

    pub fn broker_epoch(&self) -> Option<BrokerEpoch> {
        self.lifecycle.borrow().broker_epoch()
    }

    pub fn image(&self) -> MetadataImage {
        self.quorum.borrow().controller().image().clone()
    }

    // ---- pumping the state machines ----

    fn queue_log_op(&self, op: LogOp) {
        self.log_ops.borrow_mut().push_back(op);
        self.log_kick.notify(1);
    }

    /// Performs Raft's disk actions in the order it emitted them (its runbook, rule 2), and
    /// reports each completion once durable. Appends queued together share one write and one
    /// fdatasync; a vote is written atomically to `hard-state`. Any failure takes the node down
    /// (`log_dir_failed`): Raft must not vote or acknowledge what it could not persist.
    async fn log_writer(self: Rc<Self>, mut log: RaftLog) {
        let dir = log.dir.clone();
        loop {
            let listener = self.log_kick.listen();
            let ops: Vec<LogOp> = self.log_ops.borrow_mut().drain(..).collect();
            if ops.is_empty() {
                listener.await;
                continue;
            }
            let mut ops = ops.into_iter().peekable();
            while let Some(op) = ops.next() {
                let completion = match op {
                    LogOp::Vote(hard) => {
                        if let Err(e) = RaftLog::persist_vote(&dir, hard).await {
                            log_dir_failed("persisting the quorum vote", &dir, &e);
                        }
                        raft::Completion::VotePersisted { term: hard.term, voted_for: hard.voted_for }
                    }
                    LogOp::Truncate(from) => {
                        if let Err(e) = log.truncate(from).await {
                            log_dir_failed("truncating the metadata log", &dir, &e);
                        }
                        continue;
                    }
                    LogOp::Append(mut entries) => {
                        while let Some(LogOp::Append(more)) = ops.peek_mut() {
                            entries.append(more);
                            ops.next();
                        }
                        let Some(last) = entries.last().map(|e| (e.index, e.term)) else { continue };
                        let (buf, lens) = encode_records(&entries);
                        let result = match log.write(buf, lens).await {
                            Ok(()) => log.sync().await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = result {
                            log_dir_failed("appending to the metadata log", &dir, &e);
                        }
                        raft::Completion::Persisted { through: last.0, term: last.1 }
                    }
                };
                self.quorum.borrow_mut().handle_completion(now_ms(), completion);
                self.pump();
            }
        }
    }

    /// Performs the quorum member's outputs until it is quiet (`core::quorum`'s runbook).
    fn pump(self: &Rc<Self>) {
        let mut applied = false;
        loop {
            let output = self.quorum.borrow_mut().poll_output(now_ms());
            let Some(output) = output else { break };
            match output {
                // Performed by `log_writer`, which reports the completions.
                quorum::Output::PersistVote { term, voted_for } => self.queue_log_op(LogOp::Vote(HardState { term, voted_for })),
                quorum::Output::Truncate { from } => self.queue_log_op(LogOp::Truncate(from)),
                quorum::Output::Append { entries } => self.queue_log_op(LogOp::Append(entries)),
                quorum::Output::Send { to, message } => {
                    let frame = Frame::Raft { from: self.id, message }.encode();
                    if let Some(tx) = self.outbound.borrow_mut().get_mut(&to) {
                        // A full queue drops the message: Raft tolerates loss.
                        let _ = tx.try_send(frame);
                    }
                }
                quorum::Output::Applied { .. } => applied = true,
                quorum::Output::Leader { term, leader } => {
                    info!(%term, ?leader, "metadata quorum leader");
                    self.broker.shared().controller_id.store(leader.map_or(-1, |l| l.0), Ordering::Relaxed);
                    // Requests waiting on a former leader will not be answered: dropping
                    // their senders makes them retry with the new one at once.
                    self.remote.borrow_mut().clear();
                }
                quorum::Output::Reply { id, response } => self.reply(id, response),
            }
        }
        if applied {
            self.publish();
        }
        self.wake.notify(usize::MAX);
    }

    fn reply(&self, id: u64, response: Response) {
        match self.waiting.borrow_mut().remove(&id) {
            Some(Waiter::Local(tx)) => {
                let _ = tx.send(response);
            }
            Some(Waiter::Remote { mut reply, id }) => {
                let _ = reply.try_send(Frame::Response { id, response }.encode());
            }
            None => {}
        }
    }

    /// Pushes the image to every core; each keeps only the newest it has seen. A broker
    /// publishes nothing until this incarnation is registered and unfenced in its image
    /// (`MetadataImage::serves`, the rule the simulator runs): before that, the image may
    /// still make it the leader of an epoch whose unsynced tail this process lost.
    fn publish(self: &Rc<Self>) {
        if self.broker.shared().config.roles.broker {
            let quorum = self.quorum.borrow();
            if !self.lifecycle.borrow_mut().serves(quorum.controller().image()) {
                return;
            }
        }
        let applied = self.quorum.borrow().controller().applied_index().0;
        if applied <= self.published.get() {
            return;
        }
        self.published.set(applied);
        let image = Arc::new(self.image());
        glommio::spawn_local(self.broker.clone().publish(applied, image)).detach();
    }

    async fn timer_loop(self: Rc<Self>) {
        loop {
            let listener = self.wake.listen();
            let due = {
                self.quorum.borrow().poll_timeout()
            };
            let now = now_ms();
            match due {
                Some(due) if due <= now => {
                    self.quorum.borrow_mut().handle_timeout(now);
                    self.pump();
                    // Never spin without yielding: the client listener shares this core.
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                due => crate::clock::wait_until(listener, due, now).await,
            }
        }
    }

    // ---- the network ----

    /// One connection to `peer`, re-dialled after any failure; frames that cannot be sent are
    /// dropped (Raft resends, requests time out and retry).
    async fn outbound_loop(
        self: Rc<Self>,
        peer: NodeId,
        addr: SocketAddr,
        tls: Option<futures_rustls::TlsConnector>,
        mut rx: mpsc::Receiver<Bytes>,
    ) {
        let mut last_error = None;
        loop {
            let stream = match crate::tls::connect(addr, tls.as_ref()).await {
                Ok(s) => s,
                Err(e) => {
                    // A TLS failure (rustls reports them as invalid data) repeats on every
                    // attempt: said once, not every 100 ms. A peer not up yet is routine.
                    let error = e.to_string();
                    if e.kind() == std::io::ErrorKind::InvalidData && last_error.as_ref() != Some(&error) {
                        warn!(%peer, %addr, "cannot reach the quorum peer's controller listener: {error}");
                    }
                    last_error = Some(error);
                    // Drop what queued up meanwhile rather than deliver stale votes later.
                    while rx.try_recv().is_ok() {}
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            last_error = None;
            debug!(%peer, %addr, "connected to quorum peer");
            let (reader, mut writer) = futures_lite::io::split(stream);
            let this = self.clone();
            let (dead_tx, dead_rx) = oneshot::channel::<()>();
            glommio::spawn_local(async move {
                let _ = this.read_frames(reader, None).await;
                let _ = dead_tx.send(());
            })
            .detach();
            let mut dead = dead_rx;
            loop {
                let next = async { Some(rx.next().await) };
                let closed = async {
                    let _ = (&mut dead).await;
                    None
                };
                match next.or(closed).await {
                    Some(Some(frame)) => {
                        let mut out = Vec::with_capacity(frame.len() + 4);
                        out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                        out.extend_from_slice(&frame);
                        // TLS holds a record back until flushed; a plain socket flushes at no cost.
                        if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
                            break;
                        }
                    }
                    Some(None) => return,
                    None => break,
                }
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn accept_loop(self: Rc<Self>, listener: TcpListener, tls: Option<futures_rustls::TlsAcceptor>) {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let this = self.clone();
                    let tls = tls.clone();
                    glommio::spawn_local(async move { this.serve_controller_connection(stream, tls).await }).detach();
                }
                Err(e) => {
                    warn!(error = %e, "controller listener accept failed");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// One connection on the controller listener, after its TLS handshake if it has one: only a
    /// peer with a certificate of the controller listener's CAs gets to send quorum traffic.
    async fn serve_controller_connection(self: Rc<Self>, stream: TcpStream, tls: Option<futures_rustls::TlsAcceptor>) {
        let peer = stream.peer_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let stream = match tls {
            None => crate::tls::Stream::Plain(stream),
            Some(acceptor) => match crate::tls::accept(&acceptor, stream, crate::tls::HANDSHAKE_TIMEOUT).await {
                Ok(stream) => stream,
                Err(e) => {
                    warn!(%peer, "closing controller connection: TLS handshake failed: {e}");
                    return;
                }
            },
        };
        let (reader, mut writer) = futures_lite::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Bytes>(OUTBOUND_QUEUE);
        glommio::spawn_local(async move {
            while let Some(frame) = rx.next().await {
                let mut out = Vec::with_capacity(frame.len() + 4);
                out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                out.extend_from_slice(&frame);
                if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
        })
        .detach();
        if let Err(e) = self.read_frames(reader, Some(tx)).await {
            debug!(%peer, error = %e, "quorum connection closed");
        }
    }

    /// Reads frames until the connection ends. Untrusted input: a bad frame closes the
    /// connection, nothing panics.
    async fn read_frames(
        self: &Rc<Self>,
        mut reader: impl futures_lite::AsyncRead + Unpin,
        reply: Option<mpsc::Sender<Bytes>>,
    ) -> Result<(), String> {
        let mut buf = BytesMut::new();
        loop {
            while buf.len() < 4 {
                if !read_more(&mut reader, &mut buf).await? {
                    return Ok(());
                }
            }
            let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            if len > MAX_FRAME_BYTES {
                return Err(format!("a {len}-byte frame"));
            }
            while buf.len() < 4 + len {
                if !read_more(&mut reader, &mut buf).await? {
                    return Err("connection closed inside a frame".into());
                }
            }
            buf.advance(4);
            let bytes = buf.split_to(len);
            let frame = Frame::decode(&bytes).map_err(|e| format!("bad frame: {e}"))?;
            self.on_frame(frame, reply.clone());
        }
    }

    fn on_frame(self: &Rc<Self>, frame: Frame, reply: Option<mpsc::Sender<Bytes>>) {
        match frame {
            Frame::Raft { from, message } => {
                if !self.peers.contains_key(&from) {
                    return;
                }
                self.quorum.borrow_mut().handle_message(now_ms(), from, message);
                self.pump();
            }
            Frame::Request { id, request } => {
                let Some(reply) = reply else { return };
                let local = self.next_id();
                self.waiting.borrow_mut().insert(local, Waiter::Remote { reply, id });
                self.submit(local, request);
            }
            Frame::Response { id, response } => {
                if let Some(tx) = self.remote.borrow_mut().remove(&id) {
                    let _ = tx.send(response);
                }
            }
        }
    }

    fn next_id(&self) -> u64 {
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        id
    }

    fn submit(self: &Rc<Self>, id: u64, request: ControllerRequest) {
        self.quorum.borrow_mut().request(now_ms(), id, request);
        self.pump();
    }

    /// Sends `request` to the active controller (this node's own or a remote one) and waits
    /// for its answer, retrying while no controller is known or the one asked is not active.
    /// `None` when no answer came within `deadline`.
    pub async fn controller_request(self: &Rc<Self>, request: ControllerRequest, deadline: Duration) -> Option<Response> {
        let until = std::time::Instant::now() + deadline;
        loop {
            if std::time::Instant::now() >= until {
                return None;
            }
            let leader = self.quorum.borrow().raft().leader();
            let (tx, rx) = oneshot::channel();
            let id = self.next_id();
            match leader {
                Some(leader) if leader == self.id => {
                    self.waiting.borrow_mut().insert(id, Waiter::Local(tx));
                    self.submit(id, request.clone());
                }
                Some(leader) => {
                    let frame = Frame::Request { id, request: request.clone() }.encode();
                    let sent = self.outbound.borrow_mut().get_mut(&leader).is_some_and(|q| q.try_send(frame).is_ok());
                    if !sent {
                        glommio::timer::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    self.remote.borrow_mut().insert(id, tx);
                }
                None => {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            let timeout = async {
                glommio::timer::sleep(REQUEST_TIMEOUT.min(until.saturating_duration_since(std::time::Instant::now()))).await;
                None
            };
            let answer = async { rx.await.ok() }.or(timeout).await;
            self.remote.borrow_mut().remove(&id);
            self.waiting.borrow_mut().remove(&id);
            match answer {
                Some(response) if !not_controller(&response) => return Some(response),
                _ => glommio::timer::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    // ---- the broker's registration and heartbeats ----

    /// This broker's replicas in failed log directories, by topic id as the controller knows
    /// them (a directory holds partitions by name; the image has their current ids). Picked
    /// up within a second of a failure: the loop below never sleeps longer.
    fn offline_replicas(&self) -> Vec<(TopicId, i32)> {
        let partitions = self.broker.shared().log_dirs.offline_partitions();
        if partitions.is_empty() {
            return Vec::new();
        }
        let quorum = self.quorum.borrow();
        let image = quorum.controller().image();
        let mut replicas: Vec<(TopicId, i32)> = partitions
            .iter()
            .filter_map(|(topic, partition)| {
                let topic = image.topic_by_name(topic)?;
                let state = topic.partitions.get(usize::try_from(*partition).ok()?)?;
                state.replicas.contains(&self.id).then_some((topic.id, *partition))
            })
            .collect();
        replicas.sort_unstable();
        replicas
    }

    async fn broker_loop(self: Rc<Self>) {
        let config = self.broker.shared().config.clone();
        let interval = Duration::from_millis(self.lifecycle.borrow().heartbeat_interval_ms() as u64);
        loop {
            let listener = self.lifecycle_kick.listen();
            let now = now_ms();
            let applied = self.quorum.borrow().controller().applied_index();
            let offline = self.offline_replicas();
            self.lifecycle.borrow_mut().set_offline_replicas(now, offline);
            let next = self.lifecycle.borrow_mut().poll_request(now, applied);
            let Some((id, request)) = next else {
                let due = self.lifecycle.borrow().poll_timeout().map_or(now + 1_000, |due| due.min(now + 1_000));
                crate::clock::wait_until(listener, Some(due), now).await;
                continue;
            };
            // A heartbeat stuck on a dead controller must not outlive the session.
            let heartbeat = matches!(request, ControllerRequest::Heartbeat(_));
            let answer = self.controller_request(request, if heartbeat { interval } else { REQUEST_TIMEOUT }).await;
            let event = self.lifecycle.borrow_mut().handle_response(now_ms(), id, answer);
            match event {
                Some(lifecycle::Event::Registered(epoch)) => {
                    info!(broker_epoch = %epoch, "registered with the controller");
                    // The image may already hold the registration.
                    self.publish();
                }
                Some(lifecycle::Event::Unfenced) => {
                    info!("unfenced by the controller");
                    self.wait_until_applied_unfenced().await;
                    let legacy = self.legacy.borrow_mut().take();
                    if let Some(legacy) = legacy {
                        self.migrate(legacy).await;
                    }
                    if config.standalone() {
                        self.create_offsets_topic().await;
                    }
                    let shared = self.broker.shared();
                    shared.ready.store(true, Ordering::Release);
                }
                Some(lifecycle::Event::Lost) => {
                    warn!("the controller no longer knows this registration; registering again");
                }
                Some(lifecycle::Event::ShutdownAcknowledged) => {
                    info!("controlled shutdown acknowledged: the controller moved this broker's leaderships");
                }
                None => {}
            }
        }
    }
}

/// How long a controlled shutdown may wait for the controller to move this broker's
/// leaderships (Kafka's `controlled.shutdown` retries are bounded the same way).
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The part of it spent waiting for produces already appended to be answered.
const PRODUCE_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Node {
    /// Waits for SIGTERM/SIGINT (`Shared::shutdown_requested`), then shuts down: a broker
    /// first hands its partition leaderships over (`controlled_shutdown`), then the process
    /// exits with status 0. Acknowledged data is already durable (fsync before every ack).
    async fn shutdown_watch(self: Rc<Self>) {
        let shared = self.broker.shared().clone();
        while !shared.shutdown_requested.load(Ordering::Acquire) {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        if shared.config.standalone() {
            // Nobody to hand leaderships to: let produces already appended be answered.
            self.drain_produces(std::time::Instant::now()).await;
        } else if shared.config.roles.broker {
            self.controlled_shutdown().await;
        }
        info!("shutting down");
        std::process::exit(0);
    }

    /// KRaft's controlled shutdown (`core::lifecycle`: heartbeats with `want_shutdown` until
    /// the active controller answers `should_shutdown`, having committed new leaders for this
    /// broker's partitions and taken it out of every ISR), then a wait until every core's
    /// image and replicas show this broker leading nothing, within
    /// [`CONTROLLED_SHUTDOWN_TIMEOUT`]. A partition whose only ISR member is this broker goes
    /// leaderless (nobody else may lead it cleanly).
    async fn controlled_shutdown(self: &Rc<Self>) {
        info!("controlled shutdown: moving partition leaderships to other brokers");
        let started = std::time::Instant::now();
        // Let produces already appended finish here before the leaderships move (see
        // `broker::Shard::drain`); new ones go to the next leaders.
        self.drain_produces(started).await;
        if self.lifecycle.borrow_mut().begin_shutdown(now_ms()) == Shutdown::Acknowledged {
            info!("controlled shutdown: not registered, nothing to move");
            return;
        }
        self.lifecycle_kick.notify(1);
        while started.elapsed() < CONTROLLED_SHUTDOWN_TIMEOUT {
            let acknowledged = self.lifecycle.borrow().shutdown() == Shutdown::Acknowledged;
            if acknowledged && !self.broker.clone().any_core_leading().await {
                info!(elapsed_ms = started.elapsed().as_millis() as u64, "controlled shutdown complete: leading no partition");
                return;
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        warn!("controlled shutdown timed out; exiting with leaderships not moved");
    }

    /// Re-creates the topics of a legacy topic table (`meta::take_legacy_topics`) through the
    /// controller with their names, partition counts and overrides, one replica each (this
    /// node); their partition directories carry no topic id yet, so the replicas adopt the
    /// logs in them. Retried until every topic is in the image, then the file is retired.
    async fn migrate(self: &Rc<Self>, legacy: TopicTable) {
        loop {
            let image = self.image();
            let missing: Vec<CreatableTopic> = legacy
                .values()
                .filter(|t| image.topic_by_name(&t.name).is_none())
                .map(|t| CreatableTopic {
                    name: t.name.clone(),
                    num_partitions: t.partitions,
                    replication_factor: 1,
                    configs: t.config.overrides.clone(),
                    assignments: Vec::new(),
                })
                .collect();
            if missing.is_empty() {
                break;
            }
            let request = ControllerRequest::CreateTopics(CreateTopicsRequest { topics: missing, validate_only: false });
            match self.controller_request(request, REQUEST_TIMEOUT).await {
                Some(Response::CreateTopics(results)) => {
                    for r in results {
                        match r.error {
                            None => info!(topic = %r.name, "migrated topic into the metadata log"),
                            Some(e) => warn!(topic = %r.name, error = %e, "migrating topic refused; retrying"),
                        }
                    }
                }
                other => debug!(?other, "topic migration not answered yet"),
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        if let Err(e) = crate::meta::finish_migration(&self.broker.shared().config.data_dir) {
            warn!(error = %e, "could not retire the migrated topic table; it is migrated again at the next start");
        }
    }

    /// A standalone node has all the brokers `__consumer_offsets` needs from the start, so it
    /// creates the topic before serving (Kafka waits for the first FindCoordinator; clients
    /// retry meanwhile, but a node that can serve groups at once should).
    async fn create_offsets_topic(self: &Rc<Self>) {
        let topic = self.broker.shared().config.offsets_topic();
        while self.image().topic_by_name(OFFSETS_TOPIC).is_none() {
            let request = ControllerRequest::CreateTopics(CreateTopicsRequest { topics: vec![topic.clone()], validate_only: false });
            let answer = self.controller_request(request, REQUEST_TIMEOUT).await;
            debug!(?answer, "creating {OFFSETS_TOPIC}");
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..500 {
            if self.broker.clone().every_core_serves(vec![OFFSETS_TOPIC.to_owned()]).await {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        warn!("serving before every partition of {OFFSETS_TOPIC} is open");
    }

    /// Refuses new produces on every core and waits for the appended ones to be answered.
    async fn drain_produces(&self, started: std::time::Instant) {
        loop {
            let waiting = self.broker.clone().drain_every_core().await;
            if waiting == 0 || started.elapsed() >= PRODUCE_DRAIN_TIMEOUT {
                debug!(waiting, "produces drained");
                return;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until this node's own image shows it unfenced and every core has that image.
    async fn wait_until_applied_unfenced(&self) {
        for _ in 0..200 {
            let unfenced = self.quorum.borrow().controller().image().brokers().get(&self.id).is_some_and(|b| !b.fenced);
            if unfenced && self.broker.applied_image().brokers().get(&self.id).is_some_and(|b| !b.fenced) {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn not_controller(response: &Response) -> bool {
    let e = Some(ControllerError::NotController);
    match response {
        Response::RegisterBroker(r) => r.error == e,
        Response::Heartbeat(r) => r.error == e,
        Response::CreateTopics(r) => r.iter().any(|t| t.error == e),
        Response::DeleteTopics(r) => r.iter().any(|t| t.error == e),
        Response::AlterPartition(r) => r.error == e,
        Response::AllocateProducerIds(r) => r.error == e,
        Response::AlterUserScramCredentials(r) => r.iter().any(|u| u.error == e),
        Response::CreateAcls(r) => r.iter().any(|a| a.error == e),
        Response::DeleteAcls(r) => r.iter().any(|f| f.error == e),
        Response::AlterConfigs(r)
        | Response::CreatePartitions(r)
        | Response::AlterPartitionReassignments(r)
        | Response::AlterClientQuotas(r) => r.contains(&e),
        Response::ElectLeaders(r) => r.iter().any(|(_, _, c)| *c == e),
    }
}

async fn read_more(reader: &mut (impl futures_lite::AsyncRead + Unpin), buf: &mut BytesMut) -> Result<bool, String> {
    let mut chunk = [0u8; 64 << 10];
    let n = reader.read(&mut chunk).await.map_err(|e| e.to_string())?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use odradek_core::ids::Term;

    fn entry(index: u64, term: i32) -> Entry {
        Entry { index: Index(index), term: Term(term), data: Bytes::from(vec![index as u8; index as usize]) }
    }

    fn on_executor(test: impl FnOnce() -> BoxedLocal<()> + Send + 'static) {
        glommio::LocalExecutorBuilder::default().spawn(move || test()).unwrap().join().unwrap();
    }

    async fn append(log: &mut RaftLog, entries: &[Entry]) {
        let (buf, lens) = encode_records(entries);
        log.write(buf, lens).await.unwrap();
        log.sync().await.unwrap();
    }

    #[test]
    fn raft_log_survives_reopen_truncation_and_a_torn_tail() {
        on_executor(|| {
            Box::pin(async {
                let dir = std::env::temp_dir().join(format!("odradek-raftlog-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let (mut log, hard) = RaftLog::open(dir.clone()).unwrap();
                assert_eq!(hard, HardState::default());
                append(&mut log, &[entry(1, 1), entry(2, 1), entry(3, 2)]).await;
                RaftLog::persist_vote(&dir, HardState { term: Term(2), voted_for: Some(NodeId(3)) }).await.unwrap();
                log.truncate(Index(3)).await.unwrap();
                append(&mut log, &[entry(3, 3)]).await;
                drop(log);
                let (log, hard) = RaftLog::open(dir.clone()).unwrap();
                assert_eq!(log.restored, vec![entry(1, 1), entry(2, 1), entry(3, 3)]);
                assert_eq!(hard, HardState { term: Term(2), voted_for: Some(NodeId(3)) });
                drop(log);
                // A crash mid-append leaves a partial record: it was never acknowledged, so it goes.
                let path = dir.join("raft.log");
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2]);
                std::fs::write(&path, &bytes).unwrap();
                let (mut log, _) = RaftLog::open(dir.clone()).unwrap();
                assert_eq!(log.restored.len(), 3);
                append(&mut log, &[entry(4, 3)]).await;
                drop(log);
                let (log, _) = RaftLog::open(dir.clone()).unwrap();
                assert_eq!(log.restored.last(), Some(&entry(4, 3)));
                assert_eq!(log.len, std::fs::metadata(&path).unwrap().len());
                std::fs::remove_dir_all(dir).unwrap();
            })
        });
    }
}
