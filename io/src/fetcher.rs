//! The transport of one core's replica fetchers (`core::fetcher::Fetchers`, inside
//! `core::broker::Shard`): one TCP connection per source broker. Batching, routing and every
//! replication rule are core's; this module only moves the requests and answers and times
//! them out.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt, FutureExt};
use crate::tls::Stream;
use kafka_protocol::messages::{ApiKey, FetchResponse};
use odradek_core::fetcher::{Outgoing, CLIENT_ID, FOLLOWER_FETCH_VERSION};
use odradek_core::ids::NodeId;
use odradek_core::{wire, ErrorCode};
use tracing::debug;

use crate::clock::now_ms;

/// Answers above this are refused: a fetch answer is bounded by `replica.fetch.response.max.bytes`.
const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// The largest answer read into a buffer of its announced size; larger ones grow with the bytes
/// that arrive. Above `replica.fetch.response.max.bytes` (10 MiB).
const EAGER_RESPONSE_BYTES: usize = 16 << 20;
/// After a failed connect, before the failure is reported (the replicas back off as well).
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// What the transport needs from the core it runs on.
pub trait Host {
    /// Where broker `node` serves Kafka clients, from the metadata image.
    fn broker_address(&self, node: NodeId) -> Option<SocketAddr>;
    /// TLS to the inter-broker listener, if it is an SSL one.
    fn inter_broker_tls(&self) -> Option<&futures_rustls::TlsConnector>;
    /// The answer to a request from [`FetcherDriver::send`], or the transport's failure.
    fn fetch_answered(self: Rc<Self>, leader: NodeId, request_id: u64, answer: Result<FetchResponse, ErrorCode>);
}

#[derive(Default)]
pub struct FetcherDriver {
    connections: RefCell<BTreeMap<NodeId, Stream>>,
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
            None => match crate::tls::connect(addr, host.inter_broker_tls()).await {
                Ok(s) => s,
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
            stream.flush().await.map_err(|e| e.to_string())?;
            let body = read_response(&mut stream, MAX_RESPONSE_BYTES).await?;
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

/// Reads one size-prefixed response from a peer broker into one buffer. Answers up to
/// [`EAGER_RESPONSE_BYTES`] (above the `max_bytes` the fetchers ask for) get their whole size at
/// once: growing the buffer as bytes arrive copied every answer about once more (8% of a
/// follower's CPU at 250 MB/s). Beyond that the size comes off the network unchecked, so the
/// buffer doubles with the bytes that arrive rather than following the prefix: a peer
/// announcing `max_bytes` and sending nothing more costs [`EAGER_RESPONSE_BYTES`], not `max_bytes`.
pub(crate) async fn read_response(reader: &mut (impl AsyncRead + Unpin), max_bytes: usize) -> Result<Vec<u8>, String> {
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
    let size = wire::frame_size(prefix, max_bytes).map_err(|e| format!("response {e}"))?;
    let mut body = vec![0u8; size.min(EAGER_RESPONSE_BYTES)];
    let mut filled = 0;
    while filled < size {
        if filled == body.len() {
            body.resize(size.min(body.len() * 2), 0);
        }
        let n = reader.read(&mut body[filled..]).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("connection closed after {filled} of a {size}-byte response"));
        }
        filled += n;
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A peer that sends `bytes` then closes, noting the largest buffer it was asked to fill.
    struct Peer {
        bytes: Vec<u8>,
        at: usize,
        largest_read: usize,
    }

    impl AsyncRead for Peer {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
            self.largest_read = self.largest_read.max(buf.len());
            let n = buf.len().min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    fn peer(size: i32, body: &[u8]) -> Peer {
        let mut bytes = size.to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        Peer { bytes, at: 0, largest_read: 0 }
    }

    #[test]
    fn a_response_announcing_the_maximum_and_closing_early_costs_no_more_than_the_eager_buffer() {
        // An announced 256 MiB is not allocated (nor handed to read) before it arrives.
        let mut peer = peer(MAX_RESPONSE_BYTES as i32, b"only this");
        let read = futures_lite::future::block_on(read_response(&mut peer, MAX_RESPONSE_BYTES));
        assert!(read.unwrap_err().contains("closed after 9 of"));
        assert!(peer.largest_read <= EAGER_RESPONSE_BYTES, "asked to fill {} bytes", peer.largest_read);
    }

    #[test]
    fn a_whole_response_is_read_and_an_oversized_or_negative_one_refused() {
        let body: Vec<u8> = (0..EAGER_RESPONSE_BYTES * 5 / 2).map(|i| i as u8).collect();
        let read = futures_lite::future::block_on(read_response(&mut peer(body.len() as i32, &body), MAX_RESPONSE_BYTES));
        assert_eq!(read.unwrap(), body);
        for size in [-1, MAX_RESPONSE_BYTES as i32 + 1] {
            let read = futures_lite::future::block_on(read_response(&mut peer(size, b""), MAX_RESPONSE_BYTES));
            assert!(read.unwrap_err().contains("frame size"));
        }
    }
}
