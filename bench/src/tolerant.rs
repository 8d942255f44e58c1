//! Tolerant decoding of flexible-version responses (KIP-482 tagged fields).
//!
//! kafka-protocol's generated decoders, like Kafka's generated Java ones, refuse a tag their
//! schema knows at other versions only: a FetchResponse v12 carrying tag 0 (`NodeEndpoints`,
//! defined from v16) fails with "Tag 0 is not valid for version 12", and so does a
//! ProduceResponse v9 carrying `NodeEndpoints` or a partition's `CurrentLeader` (both v10+).
//! Some brokers send them at every flexible version. librdkafka and franz-go skip every tagged
//! field they do not read, and so does this bench: it reads no tagged field of these answers,
//! so before decoding it cuts the tagged sections out, walking a schema of the version in use.
//! When no section carries a field (odradek's answers, Kafka's) the frame is decoded as it
//! came, without a copy.
//!
//! Only the answers whose decoders can refuse a tag at a version the bench negotiates need a
//! schema; a test checks the others decode unknown tags into `unknown_tagged_fields`.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

/// One field of a response schema, as far as its wire length goes.
#[derive(Debug, Clone, Copy)]
enum Field {
    Int16,
    Int32,
    Int64,
    /// Compact (nullable) string or bytes: unsigned varint length + 1, 0 for null.
    Compact,
    /// Compact (nullable) array of structs, each ending in a tagged-field section.
    Structs(&'static [Field]),
}

use Field::{Compact, Int16, Int32, Int64, Structs};

/// FetchResponse v12 (the first flexible version and the highest the bench asks for).
const FETCH_V12: &[Field] = &[
    Int32, // throttle_time_ms
    Int16, // error_code
    Int32, // session_id
    Structs(&[
        Compact, // topic
        Structs(&[
            Int32,                     // partition_index
            Int16,                     // error_code
            Int64,                     // high_watermark
            Int64,                     // last_stable_offset
            Int64,                     // log_start_offset
            Structs(&[Int64, Int64]), // aborted_transactions: producer_id, first_offset
            Int32,                     // preferred_read_replica
            Compact,                   // records
        ]),
    ]),
];

/// ProduceResponse v9 (the first flexible version and the highest the bench asks for).
const PRODUCE_V9: &[Field] = &[
    Structs(&[
        Compact, // name
        Structs(&[
            Int32,                      // index
            Int16,                      // error_code
            Int64,                      // base_offset
            Int64,                      // log_append_time_ms
            Int64,                      // log_start_offset
            Structs(&[Int32, Compact]), // record_errors: batch_index, message
            Compact,                    // error_message
        ]),
    ]),
    Int32, // throttle_time_ms
];

/// The schema of a response body whose decoder may refuse tags, for `api_key` at `version`.
fn schema(api_key: ApiKey, version: i16) -> Option<&'static [Field]> {
    match (api_key, version) {
        (ApiKey::Fetch, 12) => Some(FETCH_V12),
        (ApiKey::Produce, 9) => Some(PRODUCE_V9),
        _ => None,
    }
}

/// True when `schema` covers this answer, so `strip_tags` can walk it.
#[cfg(test)]
fn has_schema(api_key: ApiKey, version: i16) -> bool {
    schema(api_key, version).is_some()
}

/// The response body with every tagged field of every level dropped (each section left as
/// an empty one), or the body itself when none carries a field or no schema covers it.
/// A body the schema does not fit is an error: it would not decode either.
pub fn strip_tags(api_key: ApiKey, version: i16, body: Bytes) -> Result<Bytes, String> {
    let Some(schema) = schema(api_key, version) else { return Ok(body) };
    let mut walker = Walker { buf: &body, at: 0, cuts: Vec::new() };
    walker.strukt(schema, 0)?;
    if walker.at != body.len() {
        return Err(format!("{} bytes after the {api_key:?} v{version} body", body.len() - walker.at));
    }
    if walker.cuts.is_empty() {
        return Ok(body);
    }
    let mut out = BytesMut::with_capacity(body.len());
    let mut kept = 0;
    for cut in &walker.cuts {
        out.extend_from_slice(&body[kept..cut.start]);
        out.put_u8(0); // an empty tagged-field section
        kept = cut.end;
    }
    out.extend_from_slice(&body[kept..]);
    Ok(out.freeze())
}

/// Nesting deeper than any schema here is a bug in the schema, not in the input.
const DEPTH_MAX: usize = 4;

struct Walker<'a> {
    buf: &'a [u8],
    at: usize,
    /// Tagged-field sections holding at least one field, in order.
    cuts: Vec<Range<usize>>,
}

impl Walker<'_> {
    fn strukt(&mut self, fields: &[Field], depth: usize) -> Result<(), String> {
        assert!(depth <= DEPTH_MAX, "schema nested {depth} deep");
        for field in fields {
            match *field {
                Int16 => self.skip(2)?,
                Int32 => self.skip(4)?,
                Int64 => self.skip(8)?,
                Compact => {
                    let len = self.varint()?;
                    if len > 0 {
                        self.skip(len as usize - 1)?;
                    }
                }
                Structs(inner) => {
                    let len = self.varint()?;
                    for _ in 1..len {
                        // Every element takes at least a byte: a count beyond what is left is
                        // refused by `skip` before the loop can run long.
                        if self.at >= self.buf.len() {
                            return Err("array longer than the frame".into());
                        }
                        self.strukt(inner, depth + 1)?;
                    }
                }
            }
        }
        self.tagged_fields()
    }

    fn tagged_fields(&mut self) -> Result<(), String> {
        let start = self.at;
        let count = self.varint()?;
        for _ in 0..count {
            let _tag = self.varint()?;
            let size = self.varint()?;
            self.skip(size as usize)?;
        }
        if count > 0 {
            self.cuts.push(start..self.at);
        }
        Ok(())
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if self.buf.len() - self.at < n {
            return Err(format!("field of {n} bytes runs past the frame"));
        }
        self.at += n;
        Ok(())
    }

    /// An unsigned varint of at most 5 bytes (a u32).
    fn varint(&mut self) -> Result<u32, String> {
        let mut value = 0u32;
        for i in 0..5 {
            let byte = *self.buf.get(self.at).ok_or("varint runs past the frame")?;
            self.at += 1;
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 5 bytes".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::produce_response::{BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse};
    use kafka_protocol::messages::{FetchResponse, ProduceResponse, ProducerId};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    fn encode(m: &impl Encodable, version: i16) -> Bytes {
        let mut b = BytesMut::new();
        m.encode(&mut b, version).expect("encodes");
        b.freeze()
    }

    fn tag(n: i32, value: &'static [u8]) -> std::collections::BTreeMap<i32, Bytes> {
        [(n, Bytes::from_static(value))].into_iter().collect()
    }

    /// The body with a top-level tag 0 (an empty `NodeEndpoints`) in its last, empty, tagged
    /// section, as a broker writing it at every flexible version sends it. kafka-protocol's
    /// encoder writes only tags past its known ones from `unknown_tagged_fields`.
    fn with_top_level_tag_0(body: Bytes) -> Bytes {
        assert_eq!(body.last(), Some(&0), "an empty tagged section ends the body");
        let mut b = BytesMut::from(&body[..body.len() - 1]);
        b.extend_from_slice(&[1, 0, 1, 1]); // one field: tag 0, 1 byte, an empty compact array
        b.freeze()
    }

    fn fetch_v12() -> FetchResponse {
        FetchResponse::default().with_session_id(7).with_responses(vec![FetchableTopicResponse::default()
            .with_topic(crate::client::topic_name("t"))
            .with_partitions(vec![
                PartitionData::default()
                    .with_partition_index(3)
                    .with_high_watermark(10)
                    .with_aborted_transactions(Some(vec![AbortedTransaction::default().with_producer_id(ProducerId(1))]))
                    .with_records(Some(Bytes::from_static(b"0123456789"))),
                PartitionData::default().with_partition_index(4).with_records(None),
            ])])
    }

    fn produce_v9() -> ProduceResponse {
        ProduceResponse::default().with_throttle_time_ms(5).with_responses(vec![TopicProduceResponse::default()
            .with_name(crate::client::topic_name("t"))
            .with_partition_responses(vec![PartitionProduceResponse::default()
                .with_index(2)
                .with_base_offset(40)
                .with_record_errors(vec![BatchIndexAndErrorMessage::default()
                    .with_batch_index(1)
                    .with_batch_index_error_message(Some(StrBytes::from_static_str("bad")))])
                .with_error_message(None)])])
    }

    #[test]
    fn answers_without_tagged_fields_pass_through_uncopied() {
        for (api, version, body) in
            [(ApiKey::Fetch, 12, encode(&fetch_v12(), 12)), (ApiKey::Produce, 9, encode(&produce_v9(), 9))]
        {
            let stripped = strip_tags(api, version, body.clone()).expect("the schema fits");
            assert_eq!(stripped.as_ptr(), body.as_ptr(), "{api:?} was copied");
        }
    }

    // A broker writing NodeEndpoints (tag 0, v16+) into a v12 Fetch answer stopped every
    // consumer of the bench with "Tag 0 is not valid for version 12".
    #[test]
    fn fetch_v12_with_node_endpoints_tag_decodes_once_stripped() {
        let mut sent = fetch_v12();
        sent.responses[0].partitions[0].unknown_tagged_fields = tag(9, b"xyz");
        let body = with_top_level_tag_0(encode(&sent, 12));
        let refused = FetchResponse::decode(&mut body.clone(), 12).expect_err("kafka-protocol refuses tag 0 at v12");
        assert!(refused.to_string().contains("Tag 0 is not valid"), "{refused}");
        let stripped = strip_tags(ApiKey::Fetch, 12, body).expect("the schema fits");
        let decoded = FetchResponse::decode(&mut stripped.clone(), 12).expect("decodes once stripped");
        assert_eq!(decoded, fetch_v12());
    }

    #[test]
    fn produce_v9_with_node_endpoints_tag_decodes_once_stripped() {
        let mut sent = produce_v9();
        sent.responses[0].partition_responses[0].unknown_tagged_fields = tag(7, b"\x00\x01");
        let body = with_top_level_tag_0(encode(&sent, 9));
        let refused = ProduceResponse::decode(&mut body.clone(), 9).expect_err("kafka-protocol refuses tag 0 at v9");
        assert!(refused.to_string().contains("Tag 0 is not valid"), "{refused}");
        let stripped = strip_tags(ApiKey::Produce, 9, body).expect("the schema fits");
        assert_eq!(ProduceResponse::decode(&mut stripped.clone(), 9).expect("decodes"), produce_v9());
    }

    #[test]
    fn a_body_the_schema_does_not_fit_is_refused_not_panicked_on() {
        let body = encode(&fetch_v12(), 12);
        for cut in 0..body.len() {
            assert!(strip_tags(ApiKey::Fetch, 12, body.slice(..cut)).is_err(), "cut at {cut}");
        }
        let huge_array = Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(strip_tags(ApiKey::Fetch, 12, huge_array).is_err());
    }

    /// Every flexible version the bench can negotiate for an answer whose decoder refuses
    /// known tags at other versions has a schema here.
    #[test]
    fn every_flexible_version_the_bench_asks_for_is_covered() {
        for (api, min, max) in crate::client::OUR_VERSIONS {
            for v in min..=max {
                let refuses_tags = matches!(api, ApiKey::Fetch | ApiKey::Produce);
                let flexible = api.request_header_version(v) >= 2;
                if refuses_tags && flexible {
                    assert!(has_schema(api, v), "{api:?} v{v} has no schema");
                }
            }
        }
    }
}
