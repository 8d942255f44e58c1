//! A null sink: a Kafka listener on loopback that reads every request and throws the records
//! away, answering at once as if it were the leader of every partition. A run against it
//! shows what the client alone can do on this machine (encoding, batching, framing, the
//! loopback socket), the ceiling any broker's figures are read against.
//!
//! It serves what the bench asks: ApiVersions, Metadata, CreateTopics, ListOffsets, Produce
//! (acknowledged without looking into the batches) and Fetch (always empty). Each connection
//! gets a thread; a request it cannot parse closes the connection.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use odradek_core::wire;

use crate::client::{read_frame, topic_name};

/// Node id the sink gives itself in Metadata.
const NODE_ID: i32 = 0;
/// A fetch waits at most this long for data that never comes, so consumers idle cheaply.
const FETCH_WAIT_MAX: Duration = Duration::from_millis(100);

pub struct NullSink {
    address: String,
    stop: Arc<AtomicBool>,
}

impl NullSink {
    /// Listens on an ephemeral loopback port; every topic has `partitions` partitions.
    pub fn start(partitions: i32) -> Result<NullSink, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("null sink: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let address = local.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let accept_stop = stop.clone();
        let port = i32::from(local.port());
        std::thread::Builder::new()
            .name("null-sink".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = std::thread::Builder::new()
                        .name("null-sink-conn".into())
                        .spawn(move || serve(stream, port, partitions));
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(NullSink { address, stop })
    }

    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for NullSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag; the connection threads end with their
        // clients' sockets.
        let _ = TcpStream::connect(&self.address);
    }
}

fn serve(mut stream: TcpStream, port: i32, partitions: i32) {
    let _ = stream.set_nodelay(true);
    while let Ok(frame) = read_frame(&mut stream) {
        let Ok(request) = wire::parse_request(frame) else { return };
        let answer = match answer(&request, port, partitions) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue, // acks=0
            Err(_) => return,
        };
        if stream.write_all(&answer).is_err() {
            return;
        }
    }
}

fn answer(request: &wire::Request, port: i32, partitions: i32) -> Result<Option<Bytes>, String> {
    let (api, version, correlation) = (request.api_key, request.version(), request.correlation_id());
    let e = |e: wire::RequestError| e.to_string();
    fn encode<M: Encodable>(api: ApiKey, version: i16, correlation: i32, m: &M) -> Result<Option<Bytes>, String> {
        wire::encode_response(api, version, correlation, m).map(Some).map_err(|e| e.to_string())
    }
    match api {
        ApiKey::ApiVersions => encode(api, version, correlation, &wire::api_versions_response(None)),
        ApiKey::Metadata => {
            let m: MetadataRequest = request.decode().map_err(e)?;
            let topics = m.topics.unwrap_or_default().into_iter().filter_map(|t| t.name).map(|name| {
                MetadataResponseTopic::default().with_name(Some(name)).with_partitions(
                    (0..partitions)
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_id(BrokerId(NODE_ID))
                                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                                .with_isr_nodes(vec![BrokerId(NODE_ID)])
                        })
                        .collect(),
                )
            });
            let response = MetadataResponse::default()
                .with_brokers(vec![MetadataResponseBroker::default()
                    .with_node_id(BrokerId(NODE_ID))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(port)])
                .with_controller_id(BrokerId(NODE_ID))
                .with_topics(topics.collect());
            encode(api, version, correlation, &response)
        }
        ApiKey::CreateTopics => {
            let m: CreateTopicsRequest = request.decode().map_err(e)?;
            let topics = m.topics.into_iter().map(|t| CreatableTopicResult::default().with_name(t.name)).collect();
            encode(api, version, correlation, &CreateTopicsResponse::default().with_topics(topics))
        }
        ApiKey::ListOffsets => {
            let m: ListOffsetsRequest = request.decode().map_err(e)?;
            let topics = m
                .topics
                .into_iter()
                .map(|t| {
                    ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index))
                            .collect(),
                    )
                })
                .collect();
            encode(api, version, correlation, &ListOffsetsResponse::default().with_topics(topics))
        }
        ApiKey::Produce => {
            let m: ProduceRequest = request.decode().map_err(e)?;
            if m.acks == 0 {
                return Ok(None);
            }
            let responses = m
                .topic_data
                .into_iter()
                .map(|t| {
                    TopicProduceResponse::default().with_name(t.name).with_partition_responses(
                        t.partition_data.iter().map(|p| PartitionProduceResponse::default().with_index(p.index)).collect(),
                    )
                })
                .collect();
            encode(api, version, correlation, &ProduceResponse::default().with_responses(responses))
        }
        ApiKey::Fetch => {
            let m: FetchRequest = request.decode().map_err(e)?;
            std::thread::sleep(Duration::from_millis(m.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX));
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for t in &m.topics {
                by_topic.entry(t.topic.0.to_string()).or_default().extend(t.partitions.iter().map(|p| p.partition));
            }
            let responses = by_topic
                .into_iter()
                .map(|(t, ps)| {
                    FetchableTopicResponse::default().with_topic(topic_name(&t)).with_partitions(
                        ps.into_iter()
                            .map(|p| PartitionData::default().with_partition_index(p).with_records(Some(Bytes::new())))
                            .collect(),
                    )
                })
                .collect();
            encode(api, version, correlation, &FetchResponse::default().with_responses(responses))
        }
        _ => Err(format!("the null sink does not serve {api:?}")),
    }
}
