//! A small blocking Kafka client: framing, version negotiation, metadata, topic creation,
//! offsets. Produce and fetch are driven by `producer` and `consumer` over the same
//! connections, plain or TLS (`transport`), split into a writer and a reader.
//!
//! Requests go to the partition's leader as the last Metadata answer named it, as Kafka's
//! clients send them. When an answer says the leader moved or is not serving the partition
//! yet (`stale_metadata`), the client asks for metadata again and resends, backing off
//! `RETRY_BACKOFF` between rounds (Kafka's `retry.backoff.ms`).
//!
//! Everything read off the socket is untrusted: a bad frame is an error, never a panic.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use odradek_core::wire;

use crate::tolerant;
use crate::transport::{Link, Security};

/// Frames larger than this are refused: a fetch answer is bounded by `fetch.max.bytes`.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;
const CLIENT_ID: &str = "odradek-bench";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("response frame of {0} bytes is out of range")]
    FrameSize(i64),
    #[error("decoding {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("encoding {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("correlation id {got}, expected {expected}")]
    Correlation { expected: i32, got: i32 },
    #[error("the broker does not serve {api:?} in versions {min}..={max}")]
    Unsupported { api: ApiKey, min: i16, max: i16 },
    #[error("{0}")]
    Broker(String),
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Kafka error codes this client acts on.
pub mod code {
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
}

/// Errors that say this client's picture of the partition is out of date (Kafka's
/// `InvalidMetadataException` family): the request was not applied, so it is safe to ask
/// for metadata again and resend it to the leader named then. A partition of a topic just
/// created answers them until its leader has taken office.
pub fn stale_metadata(error_code: i16) -> bool {
    matches!(
        error_code,
        code::UNKNOWN_TOPIC_OR_PARTITION
            | code::LEADER_NOT_AVAILABLE
            | code::NOT_LEADER_OR_FOLLOWER
            | code::FENCED_LEADER_EPOCH
            | code::UNKNOWN_LEADER_EPOCH
    )
}

/// Errors after which a produce may be resent as it is: nothing was appended. Kafka's
/// producer also retries timeouts, but a timed-out batch may have been appended, and the
/// bench's producer is not idempotent: a resend would be read twice.
pub fn produce_retriable(error_code: i16) -> bool {
    stale_metadata(error_code) || error_code == code::NOT_ENOUGH_REPLICAS
}

/// Kafka's `retry.backoff.ms` default: the least time between two metadata refreshes.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// The versions this client speaks, per API; the highest both sides serve is used.
pub const OUR_VERSIONS: [(ApiKey, i16, i16); 5] = [
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::CreateTopics, 2, 7),
];

/// Negotiated API versions for one broker.
#[derive(Debug, Clone, Copy)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub list_offsets: i16,
    pub create_topics: i16,
}

pub fn encode_request<M: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<Bytes> {
    wire::encode_request(api_key, version, correlation_id, CLIENT_ID, body)
        .map_err(|e| ClientError::Encode { what: "request", reason: e.to_string() })
}

/// Reads one size-prefixed frame.
pub fn read_frame(stream: &mut impl Read) -> Result<Bytes> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix)?;
    let size = i32::from_be_bytes(prefix);
    if size < 4 || size as usize > MAX_RESPONSE_BYTES {
        return Err(ClientError::FrameSize(size.into()));
    }
    let mut frame = vec![0u8; size as usize];
    stream.read_exact(&mut frame)?;
    Ok(Bytes::from(frame))
}

/// Splits the response header off a frame, checks the correlation id, decodes the body,
/// skipping tagged fields the decoder would refuse (see `tolerant`).
pub fn decode_response<M: Decodable>(
    mut frame: Bytes,
    api_key: ApiKey,
    version: i16,
    expected_correlation: i32,
) -> Result<M> {
    let malformed = |reason: String| ClientError::Decode { what: api_name(api_key), reason };
    // ApiVersions answers with header v0 whatever its version (KIP-511).
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
    let header = ResponseHeader::decode(&mut frame, header_version).map_err(|e| malformed(e.to_string()))?;
    if header.correlation_id != expected_correlation {
        return Err(ClientError::Correlation { expected: expected_correlation, got: header.correlation_id });
    }
    let mut body = tolerant::strip_tags(api_key, version, frame).map_err(malformed)?;
    M::decode(&mut body, version).map_err(|e| malformed(e.to_string()))
}

fn api_name(api_key: ApiKey) -> &'static str {
    match api_key {
        ApiKey::Produce => "Produce response",
        ApiKey::Fetch => "Fetch response",
        ApiKey::Metadata => "Metadata response",
        ApiKey::ListOffsets => "ListOffsets response",
        ApiKey::CreateTopics => "CreateTopics response",
        ApiKey::ApiVersions => "ApiVersions response",
        _ => "response",
    }
}

/// A connection for one request at a time. Producers take its link apart.
pub struct Connection {
    pub link: Link,
    pub versions: Versions,
    next_correlation: i32,
}

impl Connection {
    /// Connects to the first address of a bootstrap list that answers.
    pub fn connect_any(bootstrap: &Bootstrap) -> Result<Connection> {
        let mut last = ClientError::Broker("empty bootstrap list".into());
        for address in &bootstrap.servers {
            match Connection::connect(address, &bootstrap.security) {
                Ok(c) => return Ok(c),
                Err(e) => last = ClientError::Broker(format!("{address}: {e}")),
            }
        }
        Err(last)
    }

    pub fn connect(address: &str, security: &Security) -> Result<Connection> {
        let mut conn = Connection {
            link: Link::connect(address, security)?,
            versions: Versions { produce: 0, fetch: 0, metadata: 0, list_offsets: 0, create_topics: 0 },
            next_correlation: 1,
        };
        conn.versions = conn.negotiate()?;
        Ok(conn)
    }

    pub fn next_correlation(&mut self) -> i32 {
        let id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        id
    }

    pub fn round_trip<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp> {
        let correlation = self.next_correlation();
        let frame = encode_request(api_key, version, correlation, request)?;
        self.link.write_all(&frame)?;
        let response = read_frame(&mut self.link)?;
        decode_response(response, api_key, version, correlation)
    }

    fn negotiate(&mut self) -> Result<Versions> {
        // v0 needs no knowledge of the broker and every Kafka broker since 0.10 serves it.
        let response: ApiVersionsResponse =
            self.round_trip(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?;
        if response.error_code != 0 {
            return Err(ClientError::Broker(format!("ApiVersions error {}", response.error_code)));
        }
        let pick = |api: ApiKey| -> Result<i16> {
            let &(_, our_min, our_max) =
                OUR_VERSIONS.iter().find(|(k, _, _)| *k == api).expect("listed above");
            let theirs = response.api_keys.iter().find(|k| k.api_key == api as i16);
            match theirs {
                Some(k) if k.max_version >= our_min && k.min_version <= our_max => {
                    Ok(k.max_version.min(our_max))
                }
                _ => Err(ClientError::Unsupported { api, min: our_min, max: our_max }),
            }
        };
        Ok(Versions {
            produce: pick(ApiKey::Produce)?,
            fetch: pick(ApiKey::Fetch)?,
            metadata: pick(ApiKey::Metadata)?,
            list_offsets: pick(ApiKey::ListOffsets)?,
            create_topics: pick(ApiKey::CreateTopics)?,
        })
    }

    pub fn metadata(&mut self, topics: &[String]) -> Result<Cluster> {
        let request = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let version = self.versions.metadata;
        let response: MetadataResponse = self.round_trip(ApiKey::Metadata, version, &request)?;
        let brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let mut cluster = Cluster { brokers, controller_id: response.controller_id.0, topics: BTreeMap::new() };
        for topic in &response.topics {
            let Some(name) = &topic.name else { continue };
            let mut leaders = BTreeMap::new();
            if topic.error_code == 0 {
                for p in &topic.partitions {
                    leaders.insert(p.partition_index, (p.error_code, p.leader_id.0));
                }
            }
            cluster.topics.insert(name.0.to_string(), TopicMeta { leaders });
        }
        Ok(cluster)
    }

    /// Creates topics; one that already exists is fine. A replication factor of -1 takes the
    /// broker's default; `configs` are topic configs such as `min.insync.replicas`.
    /// Ok(false) when this broker is not the controller (a broker older than KIP-590 does not
    /// forward): the caller sends it to the controller instead.
    pub fn create_topics(
        &mut self,
        topics: &[String],
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<bool> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(topic_name(t))
                            .with_num_partitions(partitions)
                            .with_replication_factor(replication_factor)
                            .with_configs(
                                configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let version = self.versions.create_topics;
        let response: CreateTopicsResponse =
            self.round_trip(ApiKey::CreateTopics, version, &request)?;
        if response.topics.iter().any(|t| t.error_code == code::NOT_CONTROLLER) {
            return Ok(false);
        }
        for t in &response.topics {
            if t.error_code != 0 && t.error_code != code::TOPIC_ALREADY_EXISTS {
                return Err(ClientError::Broker(format!(
                    "CreateTopics {}: error {} {}",
                    t.name.0.as_str(),
                    t.error_code,
                    t.error_message.as_ref().map_or("", |m| m.as_str())
                )));
            }
        }
        Ok(true)
    }

    /// Log end offsets (timestamp -1) or log start offsets (-2) of partitions of one topic,
    /// each an offset or the partition's error code.
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, std::result::Result<i64, i16>>> {
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            ),
        ]);
        let version = self.versions.list_offsets;
        let response: ListOffsetsResponse =
            self.round_trip(ApiKey::ListOffsets, version, &request)?;
        let mut out = BTreeMap::new();
        for t in &response.topics {
            for p in &t.partitions {
                let answer = if p.error_code == 0 { Ok(p.offset) } else { Err(p.error_code) };
                out.insert(p.partition_index, answer);
            }
        }
        Ok(out)
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// What metadata says about the brokers and the workload's topics.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub brokers: BTreeMap<i32, String>,
    pub controller_id: i32,
    pub topics: BTreeMap<String, TopicMeta>,
}

#[derive(Debug, Clone)]
pub struct TopicMeta {
    /// partition -> (error code, leader node id)
    pub leaders: BTreeMap<i32, (i16, i32)>,
}

impl Cluster {
    /// Address of the leader of `topic`/`partition`, once every partition has one.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<(i32, &str)> {
        let (error, leader) = *self.topics.get(topic)?.leaders.get(&partition)?;
        if error != 0 || leader < 0 {
            return None;
        }
        self.brokers.get(&leader).map(|a| (leader, a.as_str()))
    }

    pub fn controller_address(&self) -> Option<&str> {
        self.brokers.get(&self.controller_id).map(String::as_str)
    }
}

/// A comma-separated bootstrap list, as Kafka's `bootstrap.servers`.
pub fn bootstrap_list(spec: &str) -> Vec<String> {
    spec.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Where a cluster is and how to speak to each of its brokers: Kafka's `bootstrap.servers`
/// and `security.protocol`. The brokers Metadata names are reached the same way.
#[derive(Clone)]
pub struct Bootstrap {
    pub servers: Vec<String>,
    pub security: Security,
}

/// The cluster as the last Metadata answer described it, refreshed on demand from any broker
/// that answers: the one asked last, else the bootstrap list, else the brokers it named.
pub struct Router {
    bootstrap: Bootstrap,
    topics: Vec<String>,
    connection: Option<Connection>,
    cluster: Cluster,
    refreshed_at: Option<Instant>,
}

impl Router {
    pub fn new(bootstrap: Bootstrap, topics: Vec<String>, cluster: Cluster) -> Router {
        Router { bootstrap, topics, connection: None, cluster, refreshed_at: None }
    }

    pub fn connect(bootstrap: Bootstrap, topics: Vec<String>) -> Result<Router> {
        let empty = Cluster { brokers: BTreeMap::new(), controller_id: -1, topics: BTreeMap::new() };
        let mut router = Router::new(bootstrap, topics, empty);
        router.refresh()?;
        Ok(router)
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn security(&self) -> &Security {
        &self.bootstrap.security
    }

    /// Asks for metadata again, no sooner than `RETRY_BACKOFF` after the last time.
    pub fn refresh(&mut self) -> Result<&Cluster> {
        if let Some(at) = self.refreshed_at {
            let since = at.elapsed();
            if since < RETRY_BACKOFF {
                std::thread::sleep(RETRY_BACKOFF - since);
            }
        }
        self.refreshed_at = Some(Instant::now());
        if let Some(conn) = &mut self.connection {
            match conn.metadata(&self.topics) {
                Ok(cluster) => {
                    self.cluster = cluster;
                    return Ok(&self.cluster);
                }
                Err(_) => self.connection = None,
            }
        }
        let mut candidates = self.bootstrap.servers.clone();
        candidates.extend(self.cluster.brokers.values().cloned());
        let mut last = ClientError::Broker("no broker to ask for metadata".into());
        for address in candidates {
            let attempt = Connection::connect(&address, self.security()).and_then(|mut c| c.metadata(&self.topics).map(|m| (c, m)));
            match attempt {
                Ok((conn, cluster)) => {
                    self.connection = Some(conn);
                    self.cluster = cluster;
                    return Ok(&self.cluster);
                }
                Err(e) => last = ClientError::Broker(format!("metadata from {address}: {e}")),
            }
        }
        Err(last)
    }

    /// Refreshes until every partition of every topic has a leader, or the deadline.
    pub fn wait_for_leaders(&mut self, partitions: i32, deadline: Instant) -> Result<&Cluster> {
        loop {
            let topics = &self.topics;
            let ready = topics.iter().all(|t| (0..partitions).all(|p| self.cluster.leader(t, p).is_some()));
            if ready {
                return Ok(&self.cluster);
            }
            if Instant::now() > deadline {
                return Err(ClientError::Broker(format!(
                    "not every partition of {topics:?} has a leader after waiting"
                )));
            }
            self.refresh()?;
        }
    }

    /// Creates the router's topics, at the controller if the broker asked says it is not it.
    pub fn create_topics(&mut self, partitions: i32, replication_factor: i16, configs: &[(String, String)]) -> Result<()> {
        let topics = self.topics.clone();
        let mut conn = Connection::connect_any(&self.bootstrap)?;
        if conn.create_topics(&topics, partitions, replication_factor, configs)? {
            return Ok(());
        }
        let controller = self.refresh()?.controller_address().map(str::to_owned);
        let controller = controller.ok_or_else(|| ClientError::Broker("Metadata names no controller".into()))?;
        if Connection::connect(&controller, self.security())?.create_topics(&topics, partitions, replication_factor, configs)? {
            Ok(())
        } else {
            Err(ClientError::Broker(format!("{controller}, named controller, says it is not")))
        }
    }

    /// Each partition's log end offset, asked of its leader; partitions whose leader moved or
    /// is not serving yet are asked again after a refresh, until the deadline.
    pub fn end_offsets(&mut self, topic: &str, partitions: &[i32], deadline: Instant) -> Result<BTreeMap<i32, i64>> {
        let mut ends = BTreeMap::new();
        let mut pending: Vec<i32> = partitions.to_vec();
        let mut connections: BTreeMap<String, Connection> = BTreeMap::new();
        let mut last_error = String::new();
        loop {
            let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            let mut unled = Vec::new();
            for &p in &pending {
                match self.cluster.leader(topic, p) {
                    Some((_, address)) => by_leader.entry(address.to_owned()).or_default().push(p),
                    None => unled.push(p),
                }
            }
            pending = unled;
            for (address, parts) in by_leader {
                let answer = match connections.entry(address.clone()) {
                    std::collections::btree_map::Entry::Occupied(c) => c.into_mut().list_offsets(topic, &parts, -1),
                    std::collections::btree_map::Entry::Vacant(slot) => Connection::connect(&address, &self.bootstrap.security)
                        .and_then(|c| slot.insert(c).list_offsets(topic, &parts, -1)),
                };
                match answer {
                    Ok(found) => {
                        for &p in &parts {
                            match found.get(&p) {
                                Some(Ok(offset)) => {
                                    ends.insert(p, *offset);
                                }
                                Some(Err(code)) if stale_metadata(*code) => {
                                    last_error = format!("{topic}-{p}: error {code} from {address}");
                                    pending.push(p);
                                }
                                Some(Err(code)) => {
                                    return Err(ClientError::Broker(format!("ListOffsets {topic}-{p}: error {code}")));
                                }
                                None => return Err(ClientError::Broker(format!("ListOffsets left {topic}-{p} out"))),
                            }
                        }
                    }
                    Err(e) => {
                        // The broker went away or the stream is out of step: ask another.
                        connections.remove(&address);
                        last_error = format!("{address}: {e}");
                        pending.extend(parts);
                    }
                }
            }
            if pending.is_empty() {
                return Ok(ends);
            }
            if Instant::now() > deadline {
                return Err(ClientError::Broker(format!(
                    "ListOffsets {topic}: {} partitions without an answer ({last_error})",
                    pending.len()
                )));
            }
            self.refresh()?;
        }
    }
}
