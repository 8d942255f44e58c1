//! A small blocking Kafka client: framing, version negotiation, metadata, topic creation,
//! offsets. Produce and fetch are driven by `producer` and `consumer` over the same
//! connections, split into a writer and a reader with `TcpStream::try_clone`.
//!
//! Everything read off the socket is untrusted: a bad frame is an error, never a panic.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use odradek_core::wire;

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

/// The versions this client speaks, per API; the highest both sides serve is used.
const OUR_VERSIONS: [(ApiKey, i16, i16); 5] = [
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

/// Splits the response header off a frame, checks the correlation id, decodes the body.
pub fn decode_response<M: Decodable>(
    frame: Bytes,
    api_key: ApiKey,
    version: i16,
    expected_correlation: i32,
) -> Result<M> {
    wire::decode_response(frame, api_key, version, expected_correlation).map_err(|e| match e {
        wire::ResponseError::Correlation { expected, got } => ClientError::Correlation { expected, got },
        wire::ResponseError::Malformed { reason, .. } => ClientError::Decode { what: api_name(api_key), reason },
    })
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

/// A connection for one request at a time. Producers and consumers take its stream apart.
pub struct Connection {
    pub stream: TcpStream,
    pub versions: Versions,
    next_correlation: i32,
}

impl Connection {
    pub fn connect(address: &str) -> Result<Connection> {
        let addr = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| ClientError::Broker(format!("{address} resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        // Batching is the client's job; Nagle would add a delay to every small request.
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            stream,
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
        self.stream.write_all(&frame)?;
        let response = read_frame(&mut self.stream)?;
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
        let mut cluster = Cluster { brokers, topics: BTreeMap::new() };
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

    /// Creates topics; one that already exists with the same partition count is fine.
    pub fn create_topics(&mut self, topics: &[String], partitions: i32) -> Result<()> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(topic_name(t))
                            .with_num_partitions(partitions)
                            .with_replication_factor(-1)
                    })
                    .collect(),
            );
        let version = self.versions.create_topics;
        let response: CreateTopicsResponse =
            self.round_trip(ApiKey::CreateTopics, version, &request)?;
        const TOPIC_ALREADY_EXISTS: i16 = 36;
        for t in &response.topics {
            if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
                return Err(ClientError::Broker(format!(
                    "CreateTopics {}: error {} {}",
                    t.name.0.as_str(),
                    t.error_code,
                    t.error_message.as_ref().map_or("", |m| m.as_str())
                )));
            }
        }
        Ok(())
    }

    /// Log end offsets (timestamp -1) or log start offsets (-2) of partitions of one topic.
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>> {
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
                if p.error_code != 0 {
                    return Err(ClientError::Broker(format!(
                        "ListOffsets {topic}-{}: error {}",
                        p.partition_index, p.error_code
                    )));
                }
                out.insert(p.partition_index, p.offset);
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
}
