//! A blocking Kafka client for the admin commands: one `TcpStream` per broker, one request in
//! flight on it at a time, versions negotiated with ApiVersions v0 when it connects.
//!
//! Every byte read here comes from the network: frames are size-checked before anything is
//! buffered for them, and an answer that does not decode is an error, never a panic.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Encodable, Request};
use odradek_core::wire;

use super::messages::{self, AnswerError, ClusterMetadata};
use super::{AdminError, TopicPartition};

/// The client id brokers log for these connections.
const CLIENT_ID: &str = "odradek-admin";
/// The largest answer accepted. Kafka clients have no such limit, but an admin tool reading a
/// size prefix off the wire should not buffer gigabytes on its say-so.
const MAX_RESPONSE_BYTES: usize = wire::DEFAULT_MAX_REQUEST_BYTES;
/// Pause between attempts while a group coordinator loads or moves.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// One broker connection.
pub struct Connection {
    addr: String,
    stream: TcpStream,
    timeout: Duration,
    buf: BytesMut,
    next_correlation_id: i32,
    /// API key to the (min, max) versions the broker advertised.
    broker_versions: BTreeMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects to `addr` (`host:port`) and learns the broker's API versions.
    pub fn open(addr: &str, timeout: Duration) -> Result<Self, AdminError> {
        let connect_error = |reason: String| AdminError::Connect { addr: addr.to_owned(), reason };
        let candidates = addr.to_socket_addrs().map_err(|e| connect_error(e.to_string()))?;
        let mut last_error = None;
        let mut stream = None;
        for candidate in candidates {
            match TcpStream::connect_timeout(&candidate, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let Some(stream) = stream else {
            return Err(connect_error(last_error.map_or("the name resolves to no address".into(), |e| e.to_string())));
        };
        let setup = stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .and_then(|()| stream.set_nodelay(true));
        setup.map_err(|e| connect_error(e.to_string()))?;
        let mut connection = Connection {
            addr: addr.to_owned(),
            stream,
            timeout,
            buf: BytesMut::new(),
            next_correlation_id: 1,
            broker_versions: BTreeMap::new(),
        };
        let response: ApiVersionsResponse = connection.send(0, &ApiVersionsRequest::default())?;
        if response.error_code != 0 {
            return Err(AdminError::Answer {
                context: format!("ApiVersions at {addr}"),
                error: AnswerError::Broker { code: response.error_code, message: None },
            });
        }
        connection.broker_versions =
            response.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        Ok(connection)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The highest version of `api_key` both the broker and this tool speak.
    pub fn version(&self, api_key: ApiKey) -> Result<i16, AdminError> {
        let client =
            messages::client_versions(api_key).unwrap_or_else(|| panic!("{api_key:?} is missing from CLIENT_VERSIONS"));
        let unsupported = |detail: String| AdminError::Unsupported { addr: self.addr.clone(), api_key, detail };
        let Some(&broker) = self.broker_versions.get(&(api_key as i16)) else {
            return Err(unsupported("it does not advertise the API".into()));
        };
        messages::negotiate(client, broker).ok_or_else(|| {
            unsupported(format!(
                "it serves v{}-v{} and this tool speaks v{}-v{}",
                broker.0, broker.1, client.0, client.1
            ))
        })
    }

    /// Sends the request `build` makes for the negotiated version; returns that version and
    /// the answer.
    pub fn call<R: Request>(&mut self, build: impl FnOnce(i16) -> R) -> Result<(i16, R::Response), AdminError> {
        let version = self.version(api_key_of::<R>())?;
        let response = self.send(version, &build(version))?;
        Ok((version, response))
    }

    /// Sends a request the broker does not answer (a Produce with acks=0); returns the version
    /// it went out at.
    pub fn send_unanswered<R: Request>(&mut self, build: impl FnOnce(i16) -> R) -> Result<i16, AdminError> {
        let version = self.version(api_key_of::<R>())?;
        self.write_request(version, &build(version))?;
        Ok(version)
    }

    fn send<R: Request>(&mut self, version: i16, request: &R) -> Result<R::Response, AdminError> {
        let api_key = api_key_of::<R>();
        let correlation_id = self.write_request(version, request)?;
        let body = self.receive(api_key, version)?;
        wire::decode_response(body, api_key, version, correlation_id).map_err(|e| {
            let reason = match e {
                wire::ResponseError::Correlation { expected, got } => format!("correlation id {got} answers request {expected}"),
                wire::ResponseError::Malformed { reason, .. } => reason,
            };
            AdminError::Malformed { addr: self.addr.clone(), api_key, version, reason }
        })
    }

    /// Writes one request; returns its correlation id.
    fn write_request<R: Request>(&mut self, version: i16, request: &R) -> Result<i32, AdminError> {
        let api_key = api_key_of::<R>();
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(api_key, version, correlation_id, request).map_err(|reason| AdminError::Encode {
            api_key,
            version,
            reason,
        })?;
        self.stream.write_all(&frame).map_err(|e| self.network_error(api_key, version, e))?;
        Ok(correlation_id)
    }

    /// Reads one size-prefixed frame, whole within the timeout (a broker trickling bytes does
    /// not keep the tool waiting longer).
    fn receive(&mut self, api_key: ApiKey, version: i16) -> Result<Bytes, AdminError> {
        let deadline = Instant::now() + self.timeout;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(prefix) = wire::peek_prefix(&self.buf) {
                // Checked before split_frame, which trusts the prefix.
                wire::frame_size(prefix, MAX_RESPONSE_BYTES).map_err(|e| AdminError::Malformed {
                    addr: self.addr.clone(),
                    api_key,
                    version,
                    reason: e.to_string(),
                })?;
                if let Some(frame) = wire::split_frame(&mut self.buf) {
                    return Ok(frame);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.network_error(api_key, version, ErrorKind::TimedOut.into()));
            }
            let read = self
                .stream
                .set_read_timeout(Some(left))
                .and_then(|()| self.stream.read(&mut chunk))
                .map_err(|e| self.network_error(api_key, version, e))?;
            if read == 0 {
                return Err(AdminError::Closed { addr: self.addr.clone(), api_key, version });
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    fn network_error(&self, api_key: ApiKey, version: i16, error: std::io::Error) -> AdminError {
        let reason = match error.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                format!("no answer within {} ms", self.timeout.as_millis())
            }
            _ => error.to_string(),
        };
        AdminError::Network { addr: self.addr.clone(), api_key, version, reason }
    }
}

fn api_key_of<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).unwrap_or_else(|()| panic!("kafka-protocol request with unknown key {}", R::KEY))
}

fn encode_request<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &R,
) -> Result<Bytes, String> {
    wire::encode_request(api_key, version, correlation_id, CLIENT_ID, request).map_err(|e| e.to_string())
}

/// The brokers of one cluster, reached from a bootstrap list, with a connection per address.
pub struct Cluster {
    bootstrap: Vec<String>,
    timeout: Duration,
    connections: BTreeMap<String, Connection>,
}

impl Cluster {
    pub fn new(bootstrap: Vec<String>, timeout: Duration) -> Self {
        assert!(!bootstrap.is_empty(), "an empty bootstrap list passed argument validation");
        Cluster { bootstrap, timeout, connections: BTreeMap::new() }
    }

    /// The connection to `addr`, opened on first use.
    pub fn connection(&mut self, addr: &str) -> Result<&mut Connection, AdminError> {
        match self.connections.entry(addr.to_owned()) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => Ok(entry.insert(Connection::open(addr, self.timeout)?)),
        }
    }

    /// The first bootstrap server that answers.
    pub fn any_broker(&mut self) -> Result<&mut Connection, AdminError> {
        let mut last_error = None;
        let mut reached = None;
        for addr in self.bootstrap.clone() {
            match self.connection(&addr) {
                Ok(_) => {
                    reached = Some(addr);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        match (reached, last_error) {
            (Some(addr), _) => self.connection(&addr),
            (None, Some(e)) => Err(e),
            (None, None) => unreachable!("the bootstrap list is not empty"),
        }
    }

    /// `topics: None` for every topic, `Some(&[])` for brokers only.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<ClusterMetadata, AdminError> {
        let connection = self.any_broker()?;
        let (_, response) = connection.call(|v| messages::metadata_request(topics, v))?;
        Ok(messages::cluster_metadata(response))
    }

    /// The address of `group`'s coordinator.
    pub fn coordinator(&mut self, group: &str) -> Result<String, AdminError> {
        let connection = self.any_broker()?;
        let addr = connection.addr().to_owned();
        let (version, response) = connection.call(|v| messages::find_coordinator_request(group, v))?;
        messages::coordinator_address(response, group, version).map_err(|error| AdminError::Answer {
            context: format!("FindCoordinator for group '{group}' at {addr}"),
            error,
        })
    }

    /// Runs `op` on the group coordinator's connection, finding the coordinator again and
    /// retrying while it loads or moves, until the timeout.
    pub fn with_coordinator<T>(
        &mut self,
        group: &str,
        mut op: impl FnMut(&mut Connection) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        self.retrying(|cluster| {
            let addr = cluster.coordinator(group)?;
            op(cluster.connection(&addr)?)
        })
    }

    /// Runs `op` until it succeeds, fails for another reason than a coordinator that loads or
    /// moves, or the timeout passes.
    pub fn retrying<T>(&mut self, mut op: impl FnMut(&mut Self) -> Result<T, AdminError>) -> Result<T, AdminError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match op(self) {
                Err(e) if e.is_coordinator_moving() && Instant::now() + RETRY_BACKOFF < deadline => {
                    std::thread::sleep(RETRY_BACKOFF);
                }
                result => return result,
            }
        }
    }

    /// The offset per partition for `timestamp` (ms since the epoch, or
    /// [`messages::LATEST_TIMESTAMP`] / [`messages::EARLIEST_TIMESTAMP`]), each asked of its
    /// leader. A partition that fails keeps its error; only a failed connection fails the call.
    pub fn list_offsets(
        &mut self,
        metadata: &ClusterMetadata,
        partitions: &BTreeSet<TopicPartition>,
        timestamp: i64,
    ) -> Result<BTreeMap<TopicPartition, Result<i64, AnswerError>>, AdminError> {
        let mut results = BTreeMap::new();
        let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
        for tp in partitions {
            match metadata.leader(tp) {
                Ok(leader) => by_leader.entry(leader).or_default().push(tp.clone()),
                Err(e) => {
                    results.insert(tp.clone(), Err(e));
                }
            }
        }
        for (leader, tps) in by_leader {
            let Some(addr) = metadata.brokers.get(&leader) else {
                let missing = AnswerError::Incomplete(format!("its leader, node {leader}, is not in the metadata"));
                results.extend(tps.into_iter().map(|tp| (tp, Err(missing.clone()))));
                continue;
            };
            let (_, response) = self.connection(addr)?.call(|v| messages::list_offsets_request(&tps, timestamp, v))?;
            let mut answered = messages::listed_offsets(response);
            for tp in tps {
                let offset = answered
                    .remove(&tp)
                    .unwrap_or_else(|| Err(AnswerError::Incomplete("missing from the ListOffsets answer".into())));
                results.insert(tp, offset);
            }
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::{OffsetFetchRequest, RequestHeader};
    use kafka_protocol::protocol::Decodable;

    // The frame a broker reads: prefix, header at the version the API needs, body.
    #[test]
    fn request_frames_decode_with_the_broker_side_parser() {
        for version in 2..=9 {
            let request = messages::offset_fetch_request("g1", version);
            let frame = encode_request(ApiKey::OffsetFetch, version, 77, &request).unwrap();
            let mut buf = BytesMut::from(&frame[..]);
            let body = wire::split_frame(&mut buf).unwrap();
            assert!(buf.is_empty());
            let mut rest = body;
            let header = RequestHeader::decode(&mut rest, ApiKey::OffsetFetch.request_header_version(version)).unwrap();
            assert_eq!(header.request_api_key, ApiKey::OffsetFetch as i16);
            assert_eq!(header.request_api_version, version);
            assert_eq!(header.correlation_id, 77);
            assert_eq!(header.client_id.as_deref(), Some(CLIENT_ID));
            assert_eq!(OffsetFetchRequest::decode(&mut rest, version).unwrap(), request);
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn api_versions_v0_goes_out_with_header_v1_and_is_read_with_header_v0() {
        let frame = encode_request(ApiKey::ApiVersions, 0, 1, &ApiVersionsRequest::default()).unwrap();
        // prefix, key, version, correlation id, client id (i16 length + bytes), empty body
        assert_eq!(frame.len(), 4 + 2 + 2 + 4 + 2 + CLIENT_ID.len());
        // A v3 answer: correlation id, then the body at once (no header tagged fields).
        let answer = ApiVersionsResponse::default().with_error_code(35);
        let mut frame = BytesMut::new();
        frame.put_i32(1);
        answer.encode(&mut frame, 3).unwrap();
        let decoded: ApiVersionsResponse = wire::decode_response(frame.freeze(), ApiKey::ApiVersions, 3, 1).unwrap();
        assert_eq!(decoded, answer);
    }
}
