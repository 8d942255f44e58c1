//! Start-up and the network: one glommio executor pinned per core, each with its own listener
//! on the same port (SO_REUSEPORT spreads connections), channels between every pair of cores.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::shared_channel::{self, ConnectedReceiver, SharedReceiver, SharedSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use odradek_core::shard::ShardId;
use odradek_core::topic::TopicTable;
use odradek_core::wire::{self, RequestError};
use odradek_core::ErrorCode;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use odradek_core::group::OFFSETS_TOPIC;
use crate::handlers;
use crate::meta;
use crate::shard::{PeerMessage, Shard, Shared};

const PEER_CHANNEL_CAPACITY: usize = 1024;

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
    info!(
        listen = %config.listen, data_dir = %data_dir.display(), cores, fsync = config.fsync,
        voters = ?config.voters(), %cluster_id, "starting odradek"
    );
    let shared = Arc::new(Shared {
        config,
        shard_count: cores,
        cluster_id,
        controller_id: std::sync::atomic::AtomicI32::new(-1),
        ready: std::sync::atomic::AtomicBool::new(false),
        shutdown_requested: Arc::new(std::sync::atomic::AtomicBool::new(false)),
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
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    for (id, (my_senders, my_receivers)) in senders.into_iter().zip(receivers).enumerate() {
        let shared = shared.clone();
        // Core 0 runs the quorum, which migrates a legacy topic table into the metadata log.
        let legacy = if id == 0 { legacy.clone() } else { None };
        let placement = if cores <= online { Placement::Fixed(id) } else { Placement::Unbound };
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
                run_shard(shard, connected, legacy).await
            })
            .map_err(|e| format!("starting core {id}: {e}"))?;
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
    }
    if !shard.shared.config.roles.broker {
        // A controller-only node serves no Kafka clients.
        futures_lite::future::pending::<()>().await;
    }
    // Polled: the flag is set on core 0, and no task here may be woken from there.
    while !shard.shared.ready.load(std::sync::atomic::Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    let listen = shard.shared.config.listen;
    let listener = TcpListener::bind(listen).map_err(|e| format!("listening on {listen}: {e}"))?;
    info!(core = shard.id.0, %listen, "serving");
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve_connection(shard.clone(), stream)).detach();
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One client connection. Requests are handled one at a time, in order, as Kafka does, so
/// responses need no reordering. Any error ends this connection only.
async fn serve_connection(shard: Rc<Shard>, mut stream: TcpStream) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "unknown".into());
    let _ = stream.set_nodelay(true);
    debug!(%peer, core = shard.id.0, "connection opened");
    let reason = match connection_loop(&shard, &mut stream, &peer).await {
        Ok(()) => {
            debug!(%peer, "connection closed by client");
            return;
        }
        Err(reason) => reason,
    };
    warn!(%peer, %reason, "closing connection");
}

async fn connection_loop(shard: &Rc<Shard>, stream: &mut TcpStream, peer: &str) -> Result<(), String> {
    let max = shard.shared.config.max_request_bytes;
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        if !fill(stream, &mut buf, 4).await? {
            return if buf.is_empty() { Ok(()) } else { Err("connection closed inside a size prefix".into()) };
        }
        let prefix = wire::peek_prefix(&buf).expect("4 bytes buffered");
        let size = wire::frame_size(prefix, max).map_err(|e| e.to_string())?;
        if !fill(stream, &mut buf, 4 + size).await? {
            return Err(format!("connection closed inside a {size}-byte request"));
        }
        buf.advance(4);
        let frame = buf.split_to(size).freeze();
        let response = match wire::parse_request(frame) {
            Ok(request) => {
                let api = request.api_key;
                handlers::handle(shard, request, peer).await.map_err(|e| format!("{api:?}: {e}"))?
            }
            Err(RequestError::UnsupportedApiVersions { correlation_id, version }) => {
                debug!(version, "ApiVersions version not supported; answering v0");
                let body = wire::api_versions_response(Some(ErrorCode::UnsupportedVersion));
                Some(
                    wire::encode_response(kafka_protocol::messages::ApiKey::ApiVersions, 0, correlation_id, &body)
                        .map_err(|e| e.to_string())?,
                )
            }
            Err(e) => return Err(e.to_string()),
        };
        if let Some(response) = response {
            stream.write_all(&response).await.map_err(|e| format!("write failed: {e}"))?;
        }
    }
}

/// Reads until `buf` holds `want` bytes. `Ok(false)` on a clean end of stream.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, want: usize) -> Result<bool, String> {
    while buf.len() < want {
        let old = buf.len();
        let grow = (want - old).max(64 << 10);
        buf.resize(old + grow, 0);
        let n = stream.read(&mut buf[old..]).await.map_err(|e| {
            buf.truncate(old);
            format!("read failed: {e}")
        })?;
        buf.truncate(old + n);
        if n == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

