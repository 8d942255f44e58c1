//! Kafka framing and request headers, and the API versions odradek advertises.
//!
//! Message bodies are encoded and decoded by the `kafka-protocol` crate. This module owns what
//! surrounds them: the 4-byte size prefix and its limit, the request header (whose version
//! depends on the API and its version), the answer to an unsupported version, and response
//! framing. Every input here comes off the network, so nothing panics on it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::error::ErrorCode;

/// Kafka's `socket.request.max.bytes` default.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// The APIs odradek implements and the versions it serves, each fully: a client picks features
/// from these ranges (KAFKA-APIS.md). Ceilings are deliberate: Produce 12 and Fetch 13 bring
/// transactions v2 and topic ids, and ListOffsets 7 the max-timestamp query, which odradek
/// does not serve yet.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    // KIP-455; v1 adds KIP-860's allow_replication_factor_change.
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    // KIP-460: preferred and unclean elections.
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    // KIP-339; AlterConfigs (the older API) replaces a resource's whole dynamic config.
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // v5 and later belong to transactions v2 (KIP-890) and two-phase commit (KIP-939).
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeProducers, 0, 0),
    // v4+ is the brokers' batched verification (KIP-890), which odradek's leaders do not use.
    (ApiKey::AddPartitionsToTxn, 0, 4),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    // v4 adds TRANSACTION_ABORTABLE and v5 the per-transaction epoch bump (KIP-890 part 2).
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 0),
    // v0–1 predate current_leader_epoch (KIP-320) and kafka-protocol 0.18 has no codec for
    // them; clients that validate positions use v2+.
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    // After a v0 handshake the tokens come bare, not in SaslAuthenticate; librdkafka takes v0
    // in the range as the sign that the broker speaks SASL at all.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    // KIP-554; v0 is the only version.
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // KIP-140. Kafka 4.0 dropped v0 (KIP-896) and kafka-protocol 0.18 has no codec for it.
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    // KIP-700. v2 lists fenced brokers (KIP-1073), which a broker's image leaves out.
    (ApiKey::DescribeCluster, 0, 1),
    // KIP-113; v0 has no codec in kafka-protocol 0.18, v4 adds the volume's sizes (KIP-827).
    (ApiKey::DescribeLogDirs, 1, 4),
    // KIP-546; v1 is the flexible encoding.
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::DescribeClientQuotas, 0, 1),
];

pub fn supported_versions(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS.iter().find(|(k, _, _)| *k == api_key).map(|&(_, min, max)| (min, max))
}

/// Why a frame could not be taken. Every variant closes the connection except
/// [`RequestError::UnsupportedApiVersions`], which Kafka answers (KIP-511).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("frame size {size} is outside 0..={max}")]
    FrameSize { size: i64, max: usize },
    #[error("a TLS handshake on a PLAINTEXT listener (the client is set to security.protocol SSL or SASL_SSL)")]
    TlsOnPlaintext,
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api_key:?} v{version} is not supported")]
    UnsupportedVersion { api_key: ApiKey, version: i16 },
    #[error("ApiVersions v{version} is not supported; answering with v0")]
    UnsupportedApiVersions { correlation_id: i32, version: i16 },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("could not encode the {api_key:?} v{version} response: {reason}")]
    Encode { api_key: ApiKey, version: i16, reason: String },
}

/// Length of the frame announced by a 4-byte size prefix.
pub fn frame_size(prefix: [u8; 4], max_request_bytes: usize) -> Result<usize, RequestError> {
    let size = i32::from_be_bytes(prefix);
    if size < 0 || size as usize > max_request_bytes {
        // A TLS record header (handshake, version 3.x) read as a size is ~369 MB: name it,
        // since "frame size 369295616" tells a user nothing.
        if prefix[..2] == [0x16, 0x03] {
            return Err(RequestError::TlsOnPlaintext);
        }
        return Err(RequestError::FrameSize { size: i64::from(size), max: max_request_bytes });
    }
    Ok(size as usize)
}

/// A request whose header was read; `body` still holds the encoded message.
#[derive(Debug, Clone)]
pub struct Request {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: Bytes,
}

impl Request {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }

    /// Decodes the body. Record sets inside stay `Bytes` slices of the received frame.
    pub fn decode<T: Decodable>(&self) -> Result<T, RequestError> {
        let mut body = self.body.clone();
        let message = T::decode(&mut body, self.version())
            .map_err(|e| malformed("request body", e))?;
        Ok(message)
    }
}

fn malformed(what: &'static str, reason: impl std::fmt::Display) -> RequestError {
    RequestError::Malformed { what, reason: reason.to_string() }
}

/// Reads the request header from a frame (without its size prefix) and checks the API and
/// version are ones odradek serves.
pub fn parse_request(mut frame: Bytes) -> Result<Request, RequestError> {
    if frame.len() < 8 {
        return Err(malformed("request header", format!("frame of {} bytes", frame.len())));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(key).map_err(|()| RequestError::UnknownApiKey(key))?;
    let Some((min, max)) = supported_versions(api_key) else {
        return Err(RequestError::UnsupportedVersion { api_key, version });
    };
    if version < min || version > max {
        if api_key == ApiKey::ApiVersions {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            return Err(RequestError::UnsupportedApiVersions { correlation_id, version });
        }
        return Err(RequestError::UnsupportedVersion { api_key, version });
    }
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| malformed("request header", e))?;
    Ok(Request { api_key, header, body: frame })
}

/// A framed response: size prefix, response header, body. Fails when the message sets a field
/// the version lacks: a broker bug, which closes that connection rather than the broker.
pub fn encode_response<M: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    message: &M,
) -> Result<Bytes, RequestError> {
    // ApiVersions always answers with header v0, whatever its version (KIP-511).
    let header_version =
        if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
    let encode_error = |e: anyhow::Error| RequestError::Encode { api_key, version, reason: e.to_string() };
    // Sized before it is written: a buffer grown as a fetch answer's records are copied in
    // copied them again at every doubling.
    let body = message.compute_size(version).map_err(encode_error)?;
    let mut buf = BytesMut::with_capacity(4 + 4 + 1 + body);
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    if header_version >= 1 {
        buf.put_u8(0); // no tagged fields
    }
    message.encode(&mut buf, version).map_err(encode_error)?;
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// `frame` (a framed response of `api_key` at `version`, as [`encode_response`] makes it) with
/// its `throttle_time_ms` raised to `throttle_ms` (KIP-219), re-encoded; the frame unchanged
/// when the API or its version has no such field (SASL, WriteTxnMarkers, old versions).
pub fn with_throttle_time(api_key: ApiKey, version: i16, frame: Bytes, throttle_ms: i32) -> Result<Bytes, RequestError> {
    use kafka_protocol::messages::*;
    if frame.len() < 8 {
        return Ok(frame);
    }
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let malformed = |e: ResponseError| RequestError::Encode { api_key, version, reason: e.to_string() };
    macro_rules! rethrottle {
        ($($key:ident => $ty:ty),* $(,)?) => {
            match api_key {
                $(ApiKey::$key => {
                    let mut message: $ty = decode_response(frame.slice(4..), api_key, version, correlation_id).map_err(malformed)?;
                    message.throttle_time_ms = message.throttle_time_ms.max(throttle_ms);
                    // Versions before the field (it is not in every version) keep the frame.
                    encode_response(api_key, version, correlation_id, &message).or(Ok(frame))
                })*
                _ => Ok(frame),
            }
        };
    }
    rethrottle!(
        Produce => ProduceResponse, Fetch => FetchResponse, ListOffsets => ListOffsetsResponse,
        DeleteRecords => DeleteRecordsResponse, Metadata => MetadataResponse, ApiVersions => ApiVersionsResponse,
        CreateTopics => CreateTopicsResponse, DeleteTopics => DeleteTopicsResponse, CreatePartitions => CreatePartitionsResponse,
        AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
        ListPartitionReassignments => ListPartitionReassignmentsResponse, ElectLeaders => ElectLeadersResponse,
        DescribeConfigs => DescribeConfigsResponse, AlterConfigs => AlterConfigsResponse,
        IncrementalAlterConfigs => IncrementalAlterConfigsResponse, FindCoordinator => FindCoordinatorResponse,
        JoinGroup => JoinGroupResponse, SyncGroup => SyncGroupResponse, Heartbeat => HeartbeatResponse,
        LeaveGroup => LeaveGroupResponse, OffsetCommit => OffsetCommitResponse, OffsetFetch => OffsetFetchResponse,
        DescribeGroups => DescribeGroupsResponse, ListGroups => ListGroupsResponse, DeleteGroups => DeleteGroupsResponse,
        OffsetDelete => OffsetDeleteResponse, InitProducerId => InitProducerIdResponse,
        DescribeProducers => DescribeProducersResponse, AddPartitionsToTxn => AddPartitionsToTxnResponse,
        AddOffsetsToTxn => AddOffsetsToTxnResponse, EndTxn => EndTxnResponse, TxnOffsetCommit => TxnOffsetCommitResponse,
        DescribeTransactions => DescribeTransactionsResponse, ListTransactions => ListTransactionsResponse,
        OffsetForLeaderEpoch => OffsetForLeaderEpochResponse,
        DescribeUserScramCredentials => DescribeUserScramCredentialsResponse,
        AlterUserScramCredentials => AlterUserScramCredentialsResponse, DescribeAcls => DescribeAclsResponse,
        CreateAcls => CreateAclsResponse, DeleteAcls => DeleteAclsResponse, DescribeCluster => DescribeClusterResponse,
        DescribeLogDirs => DescribeLogDirsResponse, AlterClientQuotas => AlterClientQuotasResponse,
        DescribeClientQuotas => DescribeClientQuotasResponse,
    )
}

/// Whether a Fetch comes from a follower replica, which client quotas leave alone, read
/// without decoding the request: up to v14 `replica_id` is the body's first field.
pub fn is_follower_fetch(request: &Request) -> bool {
    request.api_key == ApiKey::Fetch
        && request.version() <= 14
        && request.body.get(..4).is_some_and(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]) >= 0)
}

/// A framed request, as every client of the wire sends it (the admin CLI, the bench, the
/// replica fetcher, the simulator's clients): size prefix, request header of the version the
/// API and its version call for, body. Fails when the body sets a field the version lacks.
pub fn encode_request<M: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    body: &M,
) -> Result<Bytes, RequestError> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)));
    let header_version = api_key.request_header_version(version);
    let encode_error = |e: anyhow::Error| RequestError::Encode { api_key, version, reason: e.to_string() };
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + body.compute_size(version)?))
        .map_err(encode_error)?;
    let prefix = i32::try_from(size)
        .map_err(|_| RequestError::Encode { api_key, version, reason: format!("a {size}-byte request") })?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(prefix);
    header.encode(&mut buf, header_version).and_then(|()| body.encode(&mut buf, version)).map_err(encode_error)?;
    Ok(buf.freeze())
}

/// Why a response frame could not be taken by a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("response for correlation id {got}, expected {expected}")]
    Correlation { expected: i32, got: i32 },
    #[error("malformed {api_key:?} v{version} response: {reason}")]
    Malformed { api_key: ApiKey, version: i16, reason: String },
}

/// Decodes a response frame (without its size prefix) to the request sent with
/// `correlation_id`: header of the version the API calls for, then the body.
pub fn decode_response<M: Decodable>(
    mut frame: Bytes,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<M, ResponseError> {
    let malformed = |e: anyhow::Error| ResponseError::Malformed { api_key, version, reason: e.to_string() };
    // ApiVersions answers with header v0 whatever its version (KIP-511).
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
    let header = ResponseHeader::decode(&mut frame, header_version).map_err(malformed)?;
    if header.correlation_id != correlation_id {
        return Err(ResponseError::Correlation { expected: correlation_id, got: header.correlation_id });
    }
    M::decode(&mut frame, version).map_err(malformed)
}

/// The ApiVersions answer: every supported API and its range. Only fields clients read are
/// set; default-valued tagged fields stay out (librdkafka 2.0 rejects them).
pub fn api_versions_response(error: Option<ErrorCode>) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_api_keys(
            SUPPORTED_APIS
                .iter()
                .map(|&(key, min, max)| {
                    ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
                })
                .collect(),
        )
}

/// Reads a frame's size prefix from the start of `buf`, if there are 4 bytes.
pub fn peek_prefix(buf: &[u8]) -> Option<[u8; 4]> {
    buf.get(..4).map(|p| [p[0], p[1], p[2], p[3]])
}

/// Splits one size-prefixed frame off the front of `buf` (for clients and tests).
pub fn split_frame(buf: &mut BytesMut) -> Option<Bytes> {
    // A negative prefix is no frame (callers that take frames from strangers check it first).
    let size = usize::try_from(i32::from_be_bytes(peek_prefix(buf)?)).ok()?;
    if buf.len() - 4 < size {
        return None;
    }
    buf.advance(4);
    Some(buf.split_to(size).freeze())
}

/// Per-partition results, in request order, put back under their topics as the request
/// listed them (`shape`: each topic with its partition indexes).
pub fn regroup<N, R, P, T>(
    shape: Vec<(N, Vec<i32>)>,
    results: Vec<R>,
    mut partition: impl FnMut(i32, R) -> P,
    topic: impl Fn(N, Vec<P>) -> T,
) -> Vec<T> {
    let mut results = results.into_iter();
    shape
        .into_iter()
        .map(|(name, indexes)| {
            let partitions = indexes
                .into_iter()
                .map(|index| partition(index, results.next().expect("one result per partition")))
                .collect();
            topic(name, partitions)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse, ProduceRequest};

    fn frame(api_key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut framed = BytesMut::from(&encode_request(api_key, version, 42, "test", body).unwrap()[..]);
        let frame = split_frame(&mut framed).unwrap();
        assert!(framed.is_empty(), "the size prefix covers the whole request");
        frame
    }

    #[test]
    fn advertised_ranges_are_within_what_the_codec_decodes() {
        for &(key, min, max) in SUPPORTED_APIS {
            let codec = key.valid_versions();
            assert!(min <= max && codec.min <= min && max <= codec.max, "{key:?}");
        }
    }

    #[test]
    fn parses_flexible_and_non_flexible_headers() {
        for version in [0, 9, 12] {
            let req = parse_request(frame(ApiKey::Metadata, version, &MetadataRequest::default())).unwrap();
            assert_eq!((req.correlation_id(), req.version()), (42, version));
            assert_eq!(req.header.client_id.as_deref(), Some("test"));
            let _: MetadataRequest = req.decode().unwrap();
        }
    }

    #[test]
    fn rejects_what_kafka_rejects() {
        let mut unknown = frame(ApiKey::Metadata, 1, &MetadataRequest::default()).to_vec();
        unknown[0..2].copy_from_slice(&999i16.to_be_bytes());
        assert_eq!(parse_request(unknown.into()).unwrap_err(), RequestError::UnknownApiKey(999));

        let too_new = frame(ApiKey::Produce, 13, &ProduceRequest::default());
        assert!(matches!(parse_request(too_new), Err(RequestError::UnsupportedVersion { .. })));

        let mut api_versions = frame(ApiKey::ApiVersions, 3, &kafka_protocol::messages::ApiVersionsRequest::default()).to_vec();
        api_versions[2..4].copy_from_slice(&127i16.to_be_bytes());
        assert_eq!(
            parse_request(api_versions.into()).unwrap_err(),
            RequestError::UnsupportedApiVersions { correlation_id: 42, version: 127 }
        );

        let unsupported_api = frame(ApiKey::DescribeDelegationToken, 0, &MetadataRequest::default());
        assert!(matches!(parse_request(unsupported_api), Err(RequestError::UnsupportedVersion { .. })));
        assert!(matches!(parse_request(Bytes::from_static(&[0, 3, 0])), Err(RequestError::Malformed { .. })));

        let mut truncated = frame(ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(Some(vec![]))).to_vec();
        truncated.truncate(truncated.len() - 2);
        let req = parse_request(truncated.into()).unwrap();
        assert!(matches!(req.decode::<MetadataRequest>(), Err(RequestError::Malformed { .. })));
    }

    #[test]
    fn a_throttle_time_is_set_in_the_versions_that_carry_it() {
        use kafka_protocol::messages::{DescribeClientQuotasResponse, FetchResponse, ProduceResponse};
        fn check<M: Encodable + Decodable + Default>(api: ApiKey, version: i16, throttle: impl Fn(&M) -> i32, carries: bool) {
            let plain = encode_response(api, version, 7, &M::default()).unwrap();
            let throttled = with_throttle_time(api, version, plain.clone(), 1234).unwrap();
            let decoded: M = decode_response(throttled.slice(4..), api, version, 7).unwrap();
            assert_eq!(throttle(&decoded), if carries { 1234 } else { 0 }, "{api:?} v{version}");
            assert_eq!(throttled == plain, !carries, "{api:?} v{version}");
            assert_eq!(i32::from_be_bytes(throttled[..4].try_into().unwrap()) as usize, throttled.len() - 4);
        }
        for version in [3, 9, 11] {
            check::<ProduceResponse>(ApiKey::Produce, version, |m| m.throttle_time_ms, true);
        }
        for version in [4, 12] {
            check::<FetchResponse>(ApiKey::Fetch, version, |m| m.throttle_time_ms, true);
        }
        check::<MetadataResponse>(ApiKey::Metadata, 0, |m| m.throttle_time_ms, false);
        check::<MetadataResponse>(ApiKey::Metadata, 12, |m| m.throttle_time_ms, true);
        check::<DescribeClientQuotasResponse>(ApiKey::DescribeClientQuotas, 1, |m| m.throttle_time_ms, true);
        let sasl = encode_response(ApiKey::SaslHandshake, 1, 7, &kafka_protocol::messages::SaslHandshakeResponse::default()).unwrap();
        assert_eq!(with_throttle_time(ApiKey::SaslHandshake, 1, sasl.clone(), 5).unwrap(), sasl);
    }

    // A count read off the wire must not become an allocation: 2^31-1 topics in a 40-byte
    // frame once made the broker abort (third_party/README.md).
    #[test]
    fn huge_array_counts_are_malformed_not_fatal() {
        let mut produce = frame(ApiKey::Produce, 3, &ProduceRequest::default()).to_vec();
        let len = produce.len();
        produce[len - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
        let req = parse_request(produce.into()).unwrap();
        assert!(matches!(req.decode::<ProduceRequest>(), Err(RequestError::Malformed { .. })));
    }

    #[test]
    fn frame_size_limits() {
        assert_eq!(frame_size(10i32.to_be_bytes(), 100), Ok(10));
        assert!(frame_size((-1i32).to_be_bytes(), 100).is_err());
        assert!(frame_size(101i32.to_be_bytes(), 100).is_err());
        // The first bytes of a TLS 1.2/1.3 ClientHello.
        assert_eq!(frame_size([0x16, 0x03, 0x01, 0x02], 100 << 20), Err(RequestError::TlsOnPlaintext));
        assert!(matches!(frame_size([0x16, 0x03, 0x01, 0x02], usize::MAX), Ok(_)), "a size the limit allows is a size");
    }

    #[test]
    fn responses_round_trip_with_the_right_header() {
        let response = MetadataResponse::default().with_controller_id(0.into());
        for version in [1, 12] {
            let mut framed = BytesMut::from(&encode_response(ApiKey::Metadata, version, 7, &response).unwrap()[..]);
            let mut body = split_frame(&mut framed).unwrap();
            assert_eq!(body.get_i32(), 7);
            if version >= 9 {
                assert_eq!(body.get_u8(), 0);
            }
            assert_eq!(MetadataResponse::decode(&mut body, version).unwrap(), response);
            assert!(body.is_empty());
        }
    }

    #[test]
    fn a_client_decodes_what_the_broker_encodes() {
        let response = MetadataResponse::default().with_controller_id(3.into());
        for version in [1, 12] {
            let mut framed = BytesMut::from(&encode_response(ApiKey::Metadata, version, 9, &response).unwrap()[..]);
            let frame = split_frame(&mut framed).unwrap();
            let decoded: MetadataResponse = decode_response(frame.clone(), ApiKey::Metadata, version, 9).unwrap();
            assert_eq!(decoded, response);
            assert_eq!(
                decode_response::<MetadataResponse>(frame, ApiKey::Metadata, version, 8).unwrap_err(),
                ResponseError::Correlation { expected: 8, got: 9 }
            );
        }
        let truncated = Bytes::from_static(&[0, 0]);
        assert!(matches!(
            decode_response::<MetadataResponse>(truncated, ApiKey::Metadata, 1, 0),
            Err(ResponseError::Malformed { .. })
        ));
    }

    #[test]
    fn api_versions_writes_no_default_tagged_fields() {
        let framed = encode_response(ApiKey::ApiVersions, 3, 1, &api_versions_response(None)).unwrap();
        // size, correlation id, error code, compact array length, 8 × (key, min, max, tags),
        // throttle time, tagged-field count of zero.
        assert_eq!(framed.len(), 4 + 4 + 2 + 1 + SUPPORTED_APIS.len() * 7 + 4 + 1);
        assert_eq!(*framed.last().unwrap(), 0);
    }
}
