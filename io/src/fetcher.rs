//! The transport of one core's replica fetchers (`core::fetcher::Fetchers`, inside
//! `core::broker::Shard`): one TCP connection per source broker. Batching, routing and every
//! replication rule are core's; this module only moves the requests and answers and times
//! them out.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, FetchResponse};
use odradek_core::fetcher::{Outgoing, CLIENT_ID, FOLLOWER_FETCH_VERSION};
use odradek_core::ids::NodeId;
use odradek_core::{wire, ErrorCode};
use tracing::debug;

use crate::clock::now_ms;

/// Answers above this are refused: a fetch answer is bounded by `replica.fetch.response.max.bytes`.
const MAX_RESPONSE_BYTES: i32 = 256 << 20;
/// After a failed connect, before the failure is reported (the replicas back off as well).
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// What the transport needs from the core it runs on.
pub trait Host {
    /// Where broker `node` serves Kafka clients, from the metadata image.
    fn broker_address(&self, node: NodeId) -> Option<SocketAddr>;
    /// The answer to a request from [`FetcherDriver::send`], or the transport's failure.
    fn fetch_answered(self: Rc<Self>, leader: NodeId, request_id: u64, answer: Result<FetchResponse, ErrorCode>);
}

#[derive(Default)]
pub struct FetcherDriver {
    connections: RefCell<BTreeMap<NodeId, TcpStream>>,
}

impl FetcherDriver {
    /// Sends one of the fetchers' requests (`core::broker::Output::Fetch`); its answer goes to
    /// [`Host::fetch_answered`]. The fetchers keep one request in flight per source broker, so
    /// each connection carries one request at a time.
    pub fn send<H: Host + 'static>(self: &Rc<Self>, host: Rc<H>, out: Outgoing) {
        let this = self.clone();
        glommio::spawn_local(async move {
            let answer = this.call(&*host, &out).await;
            host.fetch_answered(out.leader, out.request_id, answer);
        })
        .detach();
    }

    /// One request over the connection to its leader (opened on demand, dropped on any error).
    async fn call<H: Host>(&self, host: &H, out: &Outgoing) -> Result<FetchResponse, ErrorCode> {
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
