//! Start-up and the network: one glommio executor pinned per core, each with its own listener
//! on the same port (SO_REUSEPORT spreads connections), channels between every pair of cores.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::shared_channel::{self, ConnectedReceiver, SharedReceiver, SharedSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use odradek_core::shard::ShardId;
use odradek_core::topic::TopicTable;
use odradek_core::wire::{self, RequestError};
use odradek_core::ErrorCode;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::listeners::Listener;
use crate::session::{SaslOutcome, Session};
use crate::tls::Stream;
use odradek_core::group::OFFSETS_TOPIC;
use crate::handlers;
use crate::meta;
use crate::shard::{PeerMessage, Shard, Shared};

const PEER_CHANNEL_CAPACITY: usize = 1024;
/// The room a read gets while a request is small or its size not known yet, and about what
/// a connection keeps between requests: most requests fit in one read.
const READ_CHUNK_BYTES: usize = 16 << 10;
/// Refused connections are logged at most this often per core, with a count of the others,
/// so that a flood of connections does not become a flood of log lines.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the broker until the process is killed.
pub fn serve(mut config: ServerConfig) -> Result<(), String> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let quorum = (!config.standalone()).then(|| {
        let mut voters: Vec<String> = config.quorum_voters.iter().map(|(id, a)| format!("{id}@{a}")).collect();
        voters.sort();
        voters.join(",")
    });
    let cluster_id = meta::load_or_create_cluster_id(&data_dir, config.node_id, quorum.as_deref()).map_err(|e| e.to_string())?;
    let legacy = meta::take_legacy_topics(&data_dir, &config).map_err(|e| e.to_string())?;
    let log_dirs = crate::storage::LogDirs::open(&config.log_dirs)?;
    // Group placement follows the partitions the internal topic was created with. (On a
    // cluster every node must share offsets.topic.num.partitions.)
    let offsets_partitions =
        legacy.as_ref().and_then(|t| t.get(OFFSETS_TOPIC)).map_or(config.group.offsets_topic_partitions, |t| t.partitions);
    if offsets_partitions != config.group.offsets_topic_partitions {
        warn!(
            configured = config.group.offsets_topic_partitions, existing = offsets_partitions,
            "offsets.topic.num.partitions cannot change once {OFFSETS_TOPIC} exists; using the existing count"
        );
        config.group.offsets_topic_partitions = offsets_partitions;
    }
    let cores = config.cores;
    let listeners: Vec<String> = config.listeners.iter().map(|l| format!("{}://{} ({})", l.name, l.addr, l.protocol.name())).collect();
    for (setting, why) in &config.not_applied {
        warn!(setting, "{why}");
    }
    let peer_tls = crate::tls::PeerTls::new(&config)?;
    // A listener whose certificate or key cannot be read stops the broker here, not at the first client.
    let tls: Vec<Option<futures_rustls::TlsAcceptor>> = config
        .listeners
        .iter()
        .map(|l| l.ssl.as_ref().map(|ssl| crate::tls::acceptor(&l.name, ssl)).transpose())
        .collect::<Result<_, _>>()?;
    info!(
        listeners = %listeners.join(", "), log_dirs = ?config.log_dirs, cores, fsync = config.fsync,
        voters = ?config.voters(), %cluster_id, "starting odradek"
    );
    let shared = Arc::new(Shared {
        peer_tls,
        config,
        shard_count: cores,
        cluster_id,
        controller_id: std::sync::atomic::AtomicI32::new(-1),
        ready: std::sync::atomic::AtomicBool::new(false),
        shutdown_requested: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        parked_long_polls: (0..cores).map(|_| std::sync::atomic::AtomicUsize::new(0)).collect(),
        log_dirs,
    });
    // A broker hands its leaderships over before it exits (controlled shutdown); a second
    // signal exits at once with status 1.
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, shared.shutdown_requested.clone())
            .map_err(|e| format!("signal handler: {e}"))?;
        signal_hook::flag::register(signal, shared.shutdown_requested.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }

    // senders[from][to] and receivers[to][from] for every ordered pair of distinct cores.
    let mut senders: Vec<Vec<Option<SharedSender<PeerMessage>>>> = (0..cores).map(|_| (0..cores).map(|_| None).collect()).collect();
    let mut receivers: Vec<Vec<SharedReceiver<PeerMessage>>> = (0..cores).map(|_| Vec::new()).collect();
    for (from, row) in senders.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(PEER_CHANNEL_CAPACITY);
                *slot = Some(tx);
                receivers[to].push(rx);
            }
        }
    }
    let connections = Arc::new(Connections::new(&shared.config));
    let tls = Arc::new(tls);
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    for (id, (my_senders, my_receivers)) in senders.into_iter().zip(receivers).enumerate() {
        let shared = shared.clone();
        let connections = connections.clone();
        let tls = tls.clone();
        // Core 0 runs the quorum, which migrates a legacy topic table into the metadata log.
        let legacy = if id == 0 { legacy.clone() } else { None };
        let cpu = shared.config.cpuset.cpu_for(id, cores, online);
        let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
        let spin = Duration::from_micros(shared.config.spin_before_park_us);
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("odradek-{id}"))
            .spin_before_park(spin)
            .spawn(move || async move {
                // A sender's connect waits for its receiver's, so both sides connect at once.
                let receivers: Vec<_> =
                    my_receivers.into_iter().map(|r| glommio::spawn_local(r.connect())).collect();
                let mut peers = Vec::new();
                for sender in my_senders {
                    peers.push(match sender {
                        Some(s) => Some(s.connect().await),
                        None => None,
                    });
                }
                let mut connected = Vec::new();
                for receiver in receivers {
                    connected.push(receiver.await);
                }
                let shard = Shard::new(ShardId(id), shared, peers);
                run_shard(shard, connected, legacy, connections, tls).await
            })
            .map_err(|e| match cpu {
                Some(cpu) => format!("starting core {id} on CPU {cpu}: {e}"),
                None => format!("starting core {id}: {e}"),
            })?;
        handles.push(handle);
    }
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("a core stopped: {e}")),
        }
    }
    Ok(())
}

async fn run_shard(
    shard: Rc<Shard>,
    receivers: Vec<ConnectedReceiver<PeerMessage>>,
    legacy: Option<TopicTable>,
    connections: Arc<Connections>,
    tls: Arc<Vec<Option<futures_rustls::TlsAcceptor>>>,
) -> Result<(), String> {
    for receiver in receivers {
        glommio::spawn_local(shard.clone().serve_peer(receiver)).detach();
    }
    glommio::spawn_local(shard.clone().timer_loop()).detach();
    glommio::spawn_local(shard.clone().retention_loop()).detach();
    if shard.shared.config.cleaner_enable {
        glommio::spawn_local(shard.clone().cleaner_loop()).detach();
    }
    if shard.id == ShardId(0) {
        let node = crate::cluster::Node::start(shard.clone(), legacy)?;
        *shard.node.borrow_mut() = Some(node);
        // Before the client listeners: a node still starting, or a controller-only one, is
        // worth watching too.
        if let Some(addr) = shard.shared.config.metrics_listen {
            let bound = TcpListener::bind(addr).map_err(|e| format!("metrics listener on {addr}: {e}"))?;
            info!(%addr, "serving metrics at /metrics");
            glommio::spawn_local(crate::metrics::serve(shard.clone(), bound)).detach();
        }
    }
    if !shard.shared.config.roles.broker {
        // A controller-only node serves no Kafka clients.
        futures_lite::future::pending::<()>().await;
    }
    // Polled: the flag is set on core 0, and no task here may be woken from there.
    while !shard.shared.ready.load(std::sync::atomic::Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    let mut accepting = Vec::new();
    for (listener, tls) in shard.shared.config.listeners.iter().zip(tls.iter()) {
        let bound = TcpListener::bind(listener.addr).map_err(|e| format!("listener {} on {}: {e}", listener.name, listener.addr))?;
        info!(core = shard.id.0, listener = %listener.name, addr = %listener.addr, protocol = listener.protocol.name(), "serving");
        let accept = accept_loop(shard.clone(), bound, Rc::new(listener.clone()), tls.clone(), connections.clone());
        accepting.push(glommio::spawn_local(accept));
    }
    for task in accepting {
        task.await;
    }
    Ok(())
}

async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    spec: Rc<Listener>,
    tls: Option<futures_rustls::TlsAcceptor>,
    connections: Arc<Connections>,
) {
    let mut refusals = RefusalLog::default();
    loop {
        match listener.accept().await {
            Ok(stream) => {
                // A connection reset before it is looked at needs no serving.
                let Ok(peer) = stream.peer_addr() else { continue };
                match connections.admit(peer.ip()) {
                    Ok(admitted) => {
                        let connection = serve_connection(shard.clone(), stream, peer, spec.clone(), tls.clone(), admitted);
                        glommio::spawn_local(connection).detach();
                    }
                    // Closed at once, as Kafka closes a connection beyond max.connections.per.ip.
                    Err(refusal) => {
                        if let Some(unlogged) = refusals.note(Instant::now()) {
                            warn!(%peer, refused_since_last_line = unlogged, "refusing connection: {refusal}");
                        }
                    }
                }
            }
            Err(e) => {
                warn!(listener = %spec.name, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Why the broker ends a connection.
#[derive(Debug)]
enum Close {
    /// No byte of a request within `connections.max.idle.ms` of the last response: Kafka closes
    /// idle connections as routine, and clients reconnect when they need to.
    Idle,
    /// Bad input, a stalled request or response, or a failed read or write.
    Error(String),
}

impl From<String> for Close {
    fn from(reason: String) -> Self {
        Close::Error(reason)
    }
}

/// One client connection. Its requests are pipelined (`handlers::start`): the next request is
/// read and started while earlier ones wait for their sync or replication, and the answers
/// leave in request order, as Kafka promises per connection. Any error ends this connection
/// only, after the answers of the requests before it.
async fn serve_connection(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Rc<Listener>,
    tls: Option<futures_rustls::TlsAcceptor>,
    admitted: Admitted,
) {
    let peer = peer.to_string();
    let _counted = crate::metrics::counters::OpenConnection::new(&shard.metrics, &listener.name);
    let _ = stream.set_nodelay(true);
    debug!(%peer, core = shard.id.0, listener = %listener.name, "connection opened");
    let stream = match tls {
        None => Stream::Plain(stream),
        Some(acceptor) => match handshake(&shard, acceptor, stream).await {
            Ok(stream) => stream,
            Err(reason) => {
                warn!(%peer, listener = %listener.name, "closing connection: TLS handshake failed: {reason}");
                return;
            }
        },
    };
    let mapper = listener.ssl.as_ref().map(|ssl| &ssl.principal_mapper);
    let subject = match (stream.peer_subject(), mapper) {
        (None, _) | (_, None) => None,
        (Some(Ok(subject)), Some(mapper)) => match mapper.map(&subject) {
            Ok(name) => Some(name),
            Err(e) => {
                warn!(%peer, listener = %listener.name, "closing connection: {e}");
                return;
            }
        },
        (Some(Err(e)), _) => {
            warn!(%peer, listener = %listener.name, "closing connection: its certificate's subject cannot be read: {e}");
            return;
        }
    };
    let reauth = listener.sasl.as_ref().and_then(|sasl| sasl.max_reauth);
    let session = Session::new(peer, listener, subject, reauth);
    let peer = &session.peer;
    debug!(%peer, principal = %session.principal(), "connection secured");
    let socket = Socket(Rc::new(RefCell::new(stream)));
    match connection_loop(&shard, &socket, &session).await {
        Ok(()) => debug!(%peer, "connection closed by client"),
        Err(Close::Idle) => debug!(%peer, "closing idle connection (connections.max.idle.ms)"),
        Err(Close::Error(reason)) => warn!(%peer, %reason, "closing connection"),
    }
    // Its place is free once the socket is closed, not before.
    drop(socket);
    drop(admitted);
}

/// The requests a connection may have started and not yet answered. librdkafka and the Java
/// client keep at most 5 in flight per connection with idempotence (librdkafka up to a million
/// without), so this bounds memory without holding back a real client.
const PIPELINE_DEPTH: usize = 16;

/// The TLS handshake, bounded like a request: a client that stalls in it holds a connection.
async fn handshake(shard: &Shard, acceptor: futures_rustls::TlsAcceptor, stream: TcpStream) -> Result<Stream, String> {
    let bound = shard.shared.config.connections_max_idle().unwrap_or(crate::tls::HANDSHAKE_TIMEOUT).min(crate::tls::HANDSHAKE_TIMEOUT);
    crate::tls::accept(&acceptor, stream, bound).await
}


async fn connection_loop(shard: &Rc<Shard>, socket: &Socket, session: &Session) -> Result<(), Close> {
    let idle = shard.shared.config.connections_max_idle();
    // A response the client leaves untaken this long holds the connection as an unsent
    // request would: Kafka counts reads and writes alike as activity.
    if idle.is_some() {
        socket.0.borrow().tcp().set_write_timeout(idle).map_err(|e| format!("write timeout: {e}"))?;
    }
    // Holds PIPELINE_DEPTH answers, and one more while the reader waits for room.
    let (mut answers, mut pending) = futures_channel::mpsc::channel::<Answer>(PIPELINE_DEPTH - 1);
    let activity = Activity::default();
    let reading = async {
        let read = read_requests(shard, socket, session, idle, &activity, &mut answers).await;
        // The answers of the requests read so far still go out, then the writer stops.
        drop(answers);
        read
    };
    // Owning the receiving end: once the writer stops, a request started after that finds
    // no one to answer it and the reader stops too.
    let activity = &activity;
    let writing = async move {
        let mut out = socket.clone();
        while let Some(answer) = futures_lite::StreamExt::next(&mut pending).await {
            let response = answer.await?;
            if let Some(response) = response {
                let written = async {
                    out.write_all(&response).await?;
                    // TLS may hold the last record back until flushed; plain sockets flush at no cost.
                    out.flush().await
                };
                written.await.map_err(|e| match e.kind() {
                    std::io::ErrorKind::TimedOut => {
                        format!("the client took none of a {}-byte response for connections.max.idle.ms", response.len())
                    }
                    _ => format!("write failed: {e}"),
                })?;
            }
            activity.answered();
        }
        Ok::<(), Close>(())
    };
    // The writer failing ends the connection at once (the client is gone or takes nothing);
    // the reader ending (the client closed, or bad input) lets the writer finish the answers
    // owed for the requests before.
    let mut reading = std::pin::pin!(reading);
    let mut writing = std::pin::pin!(writing);
    let first = futures_lite::future::or(async { Ok((&mut reading).await) }, async { Err((&mut writing).await) }).await;
    match first {
        Ok(read) => {
            writing.await?;
            read
        }
        Err(written) => {
            written?;
            // The writer ends without an error only once the reader closed its end.
            reading.await
        }
    }
}

/// A started request's response (none for acks=0), or why the connection must close.
type Answer = futures_lite::future::BoxedLocal<Result<Option<Bytes>, String>>;

/// Reads the connection's requests and starts each in turn, handing its answer to the writer.
async fn read_requests(
    shard: &Rc<Shard>,
    socket: &Socket,
    session: &Session,
    idle: Option<Duration>,
    activity: &Activity,
    answers: &mut futures_channel::mpsc::Sender<Answer>,
) -> Result<(), Close> {
    let max = shard.shared.config.max_request_bytes;
    let mut reader = RequestReader::default();
    loop {
        // A throttled client's next request waits (KIP-219's muted channel).
        if let Some(until) = session.mute.until() {
            glommio::timer::sleep(until.saturating_duration_since(Instant::now())).await;
        }
        // Kafka closes a connection with no read or write for connections.max.idle.ms. Counted
        // from the last request or answer rather than from the last byte, the same bound also
        // closes a client trickling a request in a byte at a time (slow loris), whom every
        // byte would keep alive; a request that takes the broker long to answer (a long-poll
        // fetch) is not idle time.
        let deadline = idle.map(|idle| Instant::now() + idle);
        let extend = || idle.and_then(|idle| activity.extended(idle));
        if !reader.fill(socket, 4, deadline, extend).await? {
            return if reader.received().is_empty() {
                Ok(())
            } else {
                Err(Close::Error("connection closed inside a size prefix".into()))
            };
        }
        let prefix = wire::peek_prefix(reader.received()).expect("4 bytes buffered");
        let size = wire::frame_size(prefix, max).map_err(|e| e.to_string())?;
        if !reader.fill(socket, 4 + size, deadline, extend).await? {
            return Err(Close::Error(format!("connection closed inside a {size}-byte request")));
        }
        let frame = reader.take_frame(size);
        let frame_bytes = frame.len();
        if session.expects_raw_token() {
            let token = session.raw_token(&frame, &shard.image.borrow()).map_err(Close::Error)?;
            if futures_lite::future::poll_fn(|cx| answers.poll_ready(cx)).await.is_err()
                || answers.try_send(Box::pin(async move { Ok(Some(token)) })).is_err()
            {
                return Ok(());
            }
            activity.outstanding.set(activity.outstanding.get() + 1);
            continue;
        }
        let mut close_after = None;
        let mut timed = None;
        let mut quota = None;
        let answer: Answer = match wire::parse_request(frame) {
            Ok(request) => {
                let api = request.api_key;
                // Nothing to measure (and nothing allocated per request) without a quota set.
                if shard.has_client_quotas() {
                    quota = Some(QuotaUse::of(&request, frame_bytes));
                }
                // From here: most requests are handled in full before their answer is queued.
                timed = Some((api, Instant::now()));
                session.admits(api)?;
                // Its own statement: the image's borrow must end before any await below.
                let sasl = session.sasl(&request, &shard.image.borrow());
                match sasl {
                    Some(outcome) => {
                        let response = match outcome.map_err(|e| format!("{api:?}: {e}"))? {
                            SaslOutcome::Answer(response) => response,
                            SaslOutcome::AnswerAndClose(response, reason) => {
                                close_after = Some(reason);
                                response
                            }
                        };
                        Box::pin(async move { Ok(Some(response)) })
                    }
                    // Authorized as a whole before it starts (with an authorizer configured);
                    // Produce, Fetch, Metadata and CreateTopics topic by topic in their handlers.
                    None => match session.refuse(shard, &request).map_err(|e| format!("{api:?}: {e}"))? {
                        Some(refusal) => Box::pin(async move { Ok(Some(refusal)) }),
                        None => {
                            let started = handlers::start(shard, request, session).await.map_err(|e| format!("{api:?}: {e}"))?;
                            Box::pin(async move { started.await.map_err(|e| format!("{api:?}: {e}")) })
                        }
                    },
                }
            }
            Err(RequestError::UnsupportedApiVersions { correlation_id, version }) => {
                debug!(version, "ApiVersions version not supported; answering v0");
                let body = wire::api_versions_response(Some(ErrorCode::UnsupportedVersion));
                let response = wire::encode_response(kafka_protocol::messages::ApiKey::ApiVersions, 0, correlation_id, &body)
                    .map_err(|e| e.to_string())?;
                Box::pin(async move { Ok(Some(response)) })
            }
            Err(e) => return Err(Close::Error(e.to_string())),
        };
        let answer = match (quota, timed) {
            (Some(quota), Some((_, started))) => quota.throttle(shard, session, started, answer),
            _ => answer,
        };
        let answer = match timed {
            Some((api, started)) => shard.metrics.time_request(api, started, answer),
            None => answer,
        };
        // Room for it, or the writer stopped (its error ends the connection).
        if futures_lite::future::poll_fn(|cx| answers.poll_ready(cx)).await.is_err() || answers.try_send(answer).is_err() {
            return Ok(());
        }
        activity.outstanding.set(activity.outstanding.get() + 1);
        if let Some(reason) = close_after {
            return Err(Close::Error(reason));
        }
    }
}

/// What a request counts against its client's quotas (KIP-13, KIP-124): the time this core
/// spent starting it and, for a Produce, its size. A Fetch's bytes are counted where its answer
/// is made (`handlers::start`). The SASL exchange and follower fetches count against nothing,
/// as in Kafka.
struct QuotaUse {
    api: kafka_protocol::messages::ApiKey,
    version: i16,
    client_id: String,
    exempt: bool,
    produce_bytes: Option<usize>,
}

impl QuotaUse {
    fn of(request: &wire::Request, frame_bytes: usize) -> QuotaUse {
        use kafka_protocol::messages::ApiKey;
        let api = request.api_key;
        QuotaUse {
            api,
            version: request.version(),
            client_id: request.header.client_id.as_deref().unwrap_or_default().to_owned(),
            exempt: matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) || wire::is_follower_fetch(request),
            produce_bytes: (api == ApiKey::Produce).then_some(frame_bytes),
        }
    }

    /// Records the request and, if the client is over a quota, sets the answer's
    /// `throttle_time_ms` and mutes the connection for that long.
    fn throttle(self, shard: &Shard, session: &Session, started: Instant, answer: Answer) -> Answer {
        use odradek_core::quota::{nanos_to_percentage, QuotaType};
        if self.exempt {
            return answer;
        }
        let user = session.quota_user();
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let request_ms = shard.record_quota(QuotaType::Request, &user, &self.client_id, nanos_to_percentage(nanos));
        let produce_ms = self.produce_bytes.map_or(0, |b| shard.record_quota(QuotaType::Produce, &user, &self.client_id, b as f64));
        let throttle_ms = request_ms.max(produce_ms);
        if throttle_ms == 0 {
            return answer;
        }
        // Muted from now, not from the answer: the requests pipelined behind this one stay
        // unread, as they would behind Kafka's one request in flight per connection.
        session.mute.throttle(throttle_ms);
        let (api, version) = (self.api, self.version);
        Box::pin(async move {
            match answer.await? {
                Some(frame) => {
                    let ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
                    wire::with_throttle_time(api, version, frame, ms).map(Some).map_err(|e| format!("{api:?}: {e}"))
                }
                None => Ok(None),
            }
        })
    }
}

/// A connection's answers, for its idle bound: the reader waits on for the next request while
/// an answer is outstanding or was written less than `connections.max.idle.ms` ago.
#[derive(Default)]
struct Activity {
    outstanding: Cell<usize>,
    last_answer: Cell<Option<Instant>>,
}

impl Activity {
    fn answered(&self) {
        self.outstanding.set(self.outstanding.get().saturating_sub(1));
        self.last_answer.set(Some(Instant::now()));
    }

    /// The next deadline of a read that reached its own, if the connection is not idle.
    fn extended(&self, idle: Duration) -> Option<Instant> {
        let now = Instant::now();
        if self.outstanding.get() > 0 {
            return Some(now + idle);
        }
        self.last_answer.get().map(|at| at + idle).filter(|at| *at > now)
    }
}

/// The connection's socket, read by its request loop and written by its answer loop at once:
/// both run on this core's thread, and each poll borrows the socket only for its call.
#[derive(Clone)]
struct Socket(Rc<RefCell<Stream>>);

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// A connection's incoming bytes. Its memory follows the bytes that have arrived, never the
/// size a prefix announces: 4 bytes announce a `socket.request.max.bytes` frame, and a few
/// hundred connections each announcing one would otherwise pin tens of GiB.
#[derive(Default)]
struct RequestReader {
    /// `filled` bytes received, from the start of the current request, then room for the
    /// next read. Reads need initialized memory; the room is zeroed once and kept across reads,
    /// so a client sending a byte at a time costs a byte of zeroing per byte, not a chunk.
    buf: BytesMut,
    filled: usize,
}

impl RequestReader {
    /// The bytes received of the current request (and of any after it).
    fn received(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    /// Reads until `want` bytes are received, or `deadline` passes. `Ok(false)`: the client
    /// closed the connection first.
    /// `extend` gives a later deadline when the connection is not idle after all (an answer
    /// still outstanding, or written lately).
    async fn fill(
        &mut self,
        socket: &Socket,
        want: usize,
        mut deadline: Option<Instant>,
        extend: impl Fn() -> Option<Instant>,
    ) -> Result<bool, Close> {
        while self.filled < want {
            let missing = want - self.filled;
            // Room to finish a small request in one read, or for a worthwhile read of a large one.
            let enough = if missing <= READ_CHUNK_BYTES { missing } else { READ_CHUNK_BYTES / 2 };
            if self.buf.len() - self.filled < enough {
                self.buf.resize(self.filled + read_room(self.filled, want), 0);
            }
            if let Some(at) = deadline {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    deadline = Some(extend().ok_or_else(|| self.timed_out())?);
                    continue;
                }
                // Armed only while a read waits: a read that finds bytes costs no timer.
                socket.0.borrow().tcp().set_read_timeout(Some(left)).map_err(|e| format!("read timeout: {e}"))?;
            }
            let n = match socket.clone().read(&mut self.buf[self.filled..]).await {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    deadline = Some(extend().ok_or_else(|| self.timed_out())?);
                    continue;
                }
                Err(e) => return Err(Close::Error(format!("read failed: {e}"))),
            };
            if n == 0 {
                return Ok(false);
            }
            self.filled += n;
        }
        Ok(true)
    }

    fn timed_out(&self) -> Close {
        if self.filled == 0 {
            Close::Idle
        } else {
            Close::Error(format!(
                "a request stalled: {} bytes of it came within connections.max.idle.ms",
                self.filled
            ))
        }
    }

    /// Takes the request of `size` bytes after its 4-byte prefix, all received.
    fn take_frame(&mut self, size: usize) -> Bytes {
        assert!(self.filled >= 4 + size, "taking a {size}-byte request of which {} bytes came", self.filled);
        self.buf.advance(4);
        let frame = self.buf.split_to(size).freeze();
        self.filled -= 4 + size;
        if size > READ_CHUNK_BYTES {
            // The frame shares its allocation with what is left: the rest of a large
            // request's buffer would stay pinned as long as the client stays connected. Keep
            // only the bytes of the requests after it (less than a chunk: reads are sized not
            // to run past a large request by more).
            self.buf = BytesMut::from(self.received());
        }
        frame
    }
}

/// The room the next read gets, `filled` bytes of `want` received: a chunk while the request
/// is small or its size unknown (the chunk may take the next requests too), then at most as
/// much again as has arrived. Memory doubles with the bytes received (amortised copying, few
/// reads for a large produce) instead of following the size the client announced.
fn read_room(filled: usize, want: usize) -> usize {
    let missing = want - filled;
    if missing <= READ_CHUNK_BYTES {
        READ_CHUNK_BYTES
    } else {
        missing.min(filled.max(READ_CHUNK_BYTES))
    }
}

/// The client connections the node holds, over every core's listener: `max.connections` and
/// `max.connections.per.ip` bound a broker, and SO_REUSEPORT spreads one client's connections
/// over the cores, so no core can count them alone. Connections are accepted far less often
/// than requests arrive, so one lock serves.
pub struct Connections {
    max: usize,
    max_per_ip: usize,
    per_ip_overrides: BTreeMap<IpAddr, usize>,
    open: Mutex<OpenConnections>,
}

#[derive(Default)]
struct OpenConnections {
    total: usize,
    /// Looked up and counted, never iterated: its order reaches nothing.
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Node { max: usize },
    Ip { max: usize },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Node { max } => write!(f, "the broker already holds max.connections={max} connections"),
            Refusal::Ip { max } => write!(f, "its address already holds max.connections.per.ip={max} connections"),
        }
    }
}

/// An admitted connection's place in the counts, given back when dropped.
pub struct Admitted {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    pub fn new(config: &ServerConfig) -> Self {
        let count = |n: i32| usize::try_from(n).expect("validated: not negative");
        Connections {
            max: count(config.max_connections),
            max_per_ip: count(config.max_connections_per_ip),
            per_ip_overrides: config.max_connections_per_ip_overrides.iter().map(|(ip, n)| (*ip, count(*n))).collect(),
            open: Mutex::new(OpenConnections::default()),
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        // A client reaching an IPv6 listener over IPv4 is the same client as over IPv4.
        let ip = ip.to_canonical();
        let max_from_ip = self.per_ip_overrides.get(&ip).copied().unwrap_or(self.max_per_ip);
        let mut open = self.open();
        if open.per_ip.get(&ip).copied().unwrap_or(0) >= max_from_ip {
            return Err(Refusal::Ip { max: max_from_ip });
        }
        if open.total >= self.max {
            return Err(Refusal::Node { max: self.max });
        }
        open.total += 1;
        *open.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Admitted { connections: self.clone(), ip })
    }

    fn open(&self) -> MutexGuard<'_, OpenConnections> {
        // The counts are whole after every update, so a panic elsewhere leaves them usable.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.connections.open();
        let from_ip = open.per_ip.get_mut(&self.ip);
        let from_ip = from_ip.unwrap_or_else(|| panic!("an admitted connection from {} is not counted", self.ip));
        *from_ip -= 1;
        if *from_ip == 0 {
            open.per_ip.remove(&self.ip);
        }
        assert!(open.total > 0, "an admitted connection from {} is not in the total", self.ip);
        open.total -= 1;
    }
}

/// When a core logs the connections it refuses: the first at once, then at most one line per
/// `REFUSAL_LOG_INTERVAL`, which counts the refusals not logged since the line before.
#[derive(Default)]
struct RefusalLog {
    last_line: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    /// A refusal at `now`: `Some(refusals not logged before it)` if it is to be logged.
    fn note(&mut self, now: Instant) -> Option<u64> {
        if self.last_line.is_some_and(|last| now.saturating_duration_since(last) < REFUSAL_LOG_INTERVAL) {
            self.unlogged += 1;
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(max: i32, max_per_ip: i32, overrides: &[(&str, i32)]) -> Arc<Connections> {
        let config = ServerConfig {
            max_connections: max,
            max_connections_per_ip: max_per_ip,
            max_connections_per_ip_overrides: overrides.iter().map(|(ip, n)| (ip.parse().unwrap(), *n)).collect(),
            ..ServerConfig::default()
        };
        Arc::new(Connections::new(&config))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    // Guards against a connection flood: one address, or all of them, holding every file
    // descriptor and buffer of the broker (Kafka's ConnectionQuotas).
    #[test]
    fn connections_beyond_a_limit_are_refused_until_one_closes() {
        let limits = connections(3, 2, &[("10.0.0.9", 0), ("10.0.0.8", 3)]);
        let a1 = limits.admit(ip("10.0.0.1")).unwrap();
        let _a2 = limits.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(limits.admit(ip("10.0.0.1")).err(), Some(Refusal::Ip { max: 2 }));
        assert_eq!(limits.admit(ip("10.0.0.9")).err(), Some(Refusal::Ip { max: 0 }), "an override of 0 bars an address");
        // Through an IPv6 listener the same client is the same address.
        assert_eq!(limits.admit(ip("::ffff:10.0.0.1")).err(), Some(Refusal::Ip { max: 2 }));
        let _b1 = limits.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(limits.admit(ip("10.0.0.3")).err(), Some(Refusal::Node { max: 3 }));
        drop(a1);
        let _a3 = limits.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(limits.admit(ip("10.0.0.8")).err(), Some(Refusal::Node { max: 3 }));
        assert_eq!(limits.open().total, 3);

        let overridden = connections(i32::MAX, 1, &[("10.0.0.8", 3)]);
        let held: Vec<_> = (0..3).map(|_| overridden.admit(ip("10.0.0.8")).unwrap()).collect();
        assert_eq!(overridden.admit(ip("10.0.0.8")).err(), Some(Refusal::Ip { max: 3 }));
        drop(held);
        let open = overridden.open();
        assert_eq!((open.total, open.per_ip.len()), (0, 0), "closed connections leave no trace");
    }

    // Guards against a 4-byte prefix announcing socket.request.max.bytes reserving that much:
    // the room follows what arrived, so the buffer stays within twice that plus a chunk.
    #[test]
    fn read_room_follows_the_bytes_received_not_the_size_announced() {
        const ANNOUNCED: usize = 4 + (100 << 20);
        assert_eq!(read_room(0, 4), READ_CHUNK_BYTES);
        assert_eq!(read_room(8, ANNOUNCED), READ_CHUNK_BYTES);
        assert_eq!(read_room(4 + 100, 4 + 200), READ_CHUNK_BYTES, "a small request may bring the next ones along");
        let mut filled = 8;
        let mut reads = 0;
        while filled < ANNOUNCED {
            let room = read_room(filled, ANNOUNCED);
            assert!(room <= filled.max(READ_CHUNK_BYTES) && filled + room <= ANNOUNCED.max(filled + READ_CHUNK_BYTES));
            filled += room; // every read filling its room
            reads += 1;
        }
        assert!(reads <= 14, "a 100 MiB request in {reads} reads");
    }

    /// Runs `test` on a glommio executor with the broker's end of a loopback connection whose
    /// client end `client` drives from a thread of its own.
    fn with_connection<F>(
        client: impl FnOnce(std::net::TcpStream) + Send + 'static,
        test: impl FnOnce(TcpStream) -> F + Send + 'static,
    ) where
        F: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let client = std::thread::spawn(move || client(std::net::TcpStream::connect(addr).unwrap()));
                test(listener.accept().await.unwrap()).await;
                client.join().unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    // The issue this guards against: a 4-byte prefix announcing a 100 MiB frame zero-filled
    // 100 MiB at once, so a few hundred such connections pinned tens of GiB.
    #[test]
    fn a_frame_announced_but_not_sent_costs_a_chunk() {
        with_connection(
            |mut client| {
                use std::io::Write;
                client.write_all(&(100u32 << 20).to_be_bytes()).unwrap();
                client.write_all(b"not much more").unwrap();
            },
            |stream| async move {
                let socket = Socket(Rc::new(RefCell::new(Stream::Plain(stream))));
                let mut reader = RequestReader::default();
                assert!(reader.fill(&socket, 4, None, || None).await.unwrap());
                assert!(!reader.fill(&socket, 4 + (100 << 20), None, || None).await.unwrap(), "the client closed");
                assert_eq!(reader.received().len(), 4 + 13);
                assert!(reader.buf.capacity() <= READ_CHUNK_BYTES, "{} bytes reserved", reader.buf.capacity());
            },
        );
    }

    #[test]
    fn pipelined_requests_small_and_large_come_out_whole_and_a_large_one_is_not_kept() {
        let large: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
        let expected = large.clone();
        with_connection(
            move |mut client| {
                use std::io::Write;
                let mut bytes = frame(b"first");
                bytes.extend(frame(&large));
                bytes.extend(frame(b"third"));
                // In pieces, as a network delivers them.
                for piece in bytes.chunks(100_000) {
                    client.write_all(piece).unwrap();
                }
            },
            move |stream| async move {
                let socket = Socket(Rc::new(RefCell::new(Stream::Plain(stream))));
                let mut reader = RequestReader::default();
                let mut frames = Vec::new();
                while reader.fill(&socket, 4, None, || None).await.unwrap() {
                    let size = u32::from_be_bytes(reader.received()[..4].try_into().unwrap()) as usize;
                    assert!(reader.fill(&socket, 4 + size, None, || None).await.unwrap());
                    frames.push(reader.take_frame(size));
                    assert!(reader.buf.capacity() <= 2 * READ_CHUNK_BYTES, "{} bytes kept", reader.buf.capacity());
                }
                assert_eq!(frames.len(), 3);
                assert_eq!((&frames[0][..], &frames[2][..]), (&b"first"[..], &b"third"[..]));
                assert!(frames[1][..] == expected[..], "the large request arrived changed");
            },
        );
    }

    // A client silent after its last response is idle (Kafka's connections.max.idle.ms); one
    // that sent part of a request and no more within the same bound has stalled: a slow-loris
    // client is closed by that bound, however regularly its bytes come.
    #[test]
    fn a_deadline_closes_an_idle_connection_and_a_stalled_request() {
        with_connection(
            |mut client| {
                use std::io::Write;
                std::thread::sleep(Duration::from_millis(300));
                client.write_all(&[0, 0]).unwrap();
                // Open past both deadlines: the broker's end must give up first.
                std::thread::sleep(Duration::from_millis(700));
            },
            |stream| async move {
                let socket = Socket(Rc::new(RefCell::new(Stream::Plain(stream))));
                let mut reader = RequestReader::default();
                let deadline = Instant::now() + Duration::from_millis(100);
                assert!(matches!(reader.fill(&socket, 4, Some(deadline), || None).await, Err(Close::Idle)));
                let started = Instant::now();
                let deadline = started + Duration::from_millis(400);
                match reader.fill(&socket, 4, Some(deadline), || None).await {
                    Err(Close::Error(reason)) => assert!(reason.contains("2 bytes"), "{reason}"),
                    other => panic!("expected a stalled request, got {:?}", other.map_err(|e| format!("{e:?}"))),
                }
                assert!(started.elapsed() >= Duration::from_millis(350), "closed before its deadline");
            },
        );
    }

    #[test]
    fn refusals_are_logged_at_most_once_a_second_with_a_count_of_the_rest() {
        let start = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.note(start), Some(0));
        assert_eq!(log.note(start + Duration::from_millis(10)), None);
        assert_eq!(log.note(start + Duration::from_millis(999)), None);
        assert_eq!(log.note(start + Duration::from_millis(1000)), Some(2));
        assert_eq!(log.note(start + Duration::from_millis(3000)), Some(0));
    }
}
