//! One core's replica fetchers: `core::fetcher::Fetchers` performed over one TCP connection
//! per source broker. Batching, routing and every replication rule are core's; this module
//! only moves the requests and answers and times them out.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, FetchResponse};
use odradek_core::fetcher::{Delivery, Fetchers, Outgoing, TopicPartition, CLIENT_ID, FOLLOWER_FETCH_VERSION};
use odradek_core::ids::NodeId;
use odradek_core::replica::FetchRequest;
use odradek_core::{wire, ErrorCode};
use tracing::debug;

use crate::clock::now_ms;

/// Answers above this are refused: a fetch answer is bounded by `replica.fetch.response.max.bytes`.
const MAX_RESPONSE_BYTES: i32 = 256 << 20;
/// After a failed connect, before the failure is reported (the replicas back off as well).
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// What the fetchers need from the core they run on.
pub trait Host {
    /// Where broker `node` serves Kafka clients, from the metadata image.
    fn broker_address(&self, node: NodeId) -> Option<SocketAddr>;
    /// One partition's answer, for its replica.
    fn deliver(&self, delivery: Delivery);
}

pub struct FetcherDriver {
    fetchers: RefCell<Fetchers>,
    kick: event_listener::Event,
    connections: RefCell<BTreeMap<NodeId, TcpStream>>,
    running: Cell<bool>,
}

impl FetcherDriver {
    pub fn new(local: NodeId, response_max_bytes: i32, request_timeout_ms: i64) -> Rc<Self> {
        Rc::new(FetcherDriver {
            fetchers: RefCell::new(Fetchers::new(local, response_max_bytes, request_timeout_ms)),
            kick: event_listener::Event::new(),
            connections: RefCell::default(),
            running: Cell::new(false),
        })
    }

    /// A replica's next fetch, for its leader's next request.
    pub fn enqueue(self: &Rc<Self>, host: Rc<dyn Host>, leader: NodeId, partition: TopicPartition, fetch_id: u64, request: FetchRequest) {
        self.fetchers.borrow_mut().enqueue(leader, partition, fetch_id, request);
        if !self.running.replace(true) {
            glommio::spawn_local(self.clone().run(host)).detach();
        }
        self.kick.notify(usize::MAX);
    }

    pub fn remove(&self, partition: &TopicPartition) {
        self.fetchers.borrow_mut().remove(partition);
    }

    async fn run(self: Rc<Self>, host: Rc<dyn Host>) {
        loop {
            let listener = self.kick.listen();
            let expired = self.fetchers.borrow_mut().handle_timeout(now_ms());
            for delivery in expired {
                host.deliver(delivery);
            }
            loop {
                let next = self.fetchers.borrow_mut().poll_request(now_ms());
                let Some(out) = next else { break };
                glommio::spawn_local(self.clone().exchange(host.clone(), out)).detach();
            }
            let due = self.fetchers.borrow().poll_timeout();
            crate::clock::wait_until(listener, due, now_ms()).await;
        }
    }

    async fn exchange(self: Rc<Self>, host: Rc<dyn Host>, out: Outgoing) {
        let answer = self.call(&*host, &out).await;
        let deliveries = self.fetchers.borrow_mut().handle_response(now_ms(), out.leader, out.request_id, answer);
        for delivery in deliveries {
            host.deliver(delivery);
        }
        self.kick.notify(usize::MAX);
    }

    /// One request over the connection to its leader (opened on demand, dropped on any error).
    async fn call(&self, host: &dyn Host, out: &Outgoing) -> Result<FetchResponse, ErrorCode> {
        let leader = out.leader;
        let Some(addr) = host.broker_address(leader) else {
            glommio::timer::sleep(RECONNECT_PAUSE).await;
            return Err(ErrorCode::LeaderNotAvailable);
        };
        let existing = self.connections.borrow_mut().remove(&leader);
        let mut stream = match existing {
            Some(stream) => stream,
            None => match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s
                }
                Err(e) => {
                    debug!(%leader, %addr, error = %e, "replica fetcher could not connect");
                    glommio::timer::sleep(RECONNECT_PAUSE).await;
                    return Err(ErrorCode::NetworkException);
                }
            },
        };
        // The connection carries one request at a time, so the id's low bits are unique on it.
        let correlation_id = out.request_id as i32;
        let exchange = async {
            let frame = wire::encode_request(ApiKey::Fetch, FOLLOWER_FETCH_VERSION, correlation_id, CLIENT_ID, &out.request)
                .map_err(|e| e.to_string())?;
            stream.write_all(&frame).await.map_err(|e| e.to_string())?;
            let mut prefix = [0u8; 4];
            stream.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
            let size = i32::from_be_bytes(prefix);
            if !(0..=MAX_RESPONSE_BYTES).contains(&size) {
                return Err(format!("response size {size}"));
            }
            let mut body = vec![0u8; size as usize];
            stream.read_exact(&mut body).await.map_err(|e| e.to_string())?;
            wire::decode_response(body.into(), ApiKey::Fetch, FOLLOWER_FETCH_VERSION, correlation_id).map_err(|e| e.to_string())
        };
        let timeout = async {
            let left = u64::try_from(out.deadline_ms - now_ms()).unwrap_or(0);
            glommio::timer::sleep(Duration::from_millis(left)).await;
            Err("timed out".to_owned())
        };
        match exchange.or(timeout).await {
            Ok(response) => {
                self.connections.borrow_mut().insert(leader, stream);
                Ok(response)
            }
            Err(e) => {
                debug!(%leader, error = %e, "follower fetch failed");
                Err(ErrorCode::NetworkException)
            }
        }
    }
}
