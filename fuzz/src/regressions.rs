//! Hostile lengths and counts through the broker's own entry points, each refused without
//! allocating what it announces. The request ones made allocations of gigabytes before the
//! bounds in third_party/kafka-protocol (see its README); the stored-batch ones guard the
//! record walk ListOffsets uses.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, MetadataRequest};
use kafka_protocol::records::Compression;
use odradek_core::{records, wire};

use crate::alloc::largest_allocation;

/// Far below what any of these announce; above what an error's captured backtrace takes when
/// `RUST_BACKTRACE` is set.
const SMALL: usize = 64 << 10;

/// A request frame: header v1 or v2 for `api_key`/`version`, then `body`.
fn frame(api_key: ApiKey, version: i16, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(api_key as i16);
    buf.put_i16(version);
    buf.put_i32(1); // correlation id
    buf.put_i16(-1); // client id
    if api_key.request_header_version(version) >= 2 {
        buf.put_u8(0); // no tagged fields
    }
    buf.put_slice(body);
    buf.freeze()
}

fn decode_allocation<M: kafka_protocol::protocol::Decodable>(frame: Bytes) -> usize {
    let request = wire::parse_request(frame).expect("a supported API and version");
    let (decoded, largest) = largest_allocation(|| request.decode::<M>());
    assert!(decoded.is_err());
    largest
}

#[test]
fn a_metadata_request_announcing_u32_max_topics_is_refused_without_allocating_them() {
    // Compact array length varint 0xffff_ffff (u32::MAX - 1 topics), then nothing.
    let largest = decode_allocation::<MetadataRequest>(frame(ApiKey::Metadata, 12, &[0xff, 0xff, 0xff, 0xff, 0x0f]));
    assert!(largest < SMALL, "allocated {largest} bytes");
    let largest = decode_allocation::<MetadataRequest>(frame(ApiKey::Metadata, 1, &i32::MAX.to_be_bytes()));
    assert!(largest < SMALL, "allocated {largest} bytes");
}

#[test]
fn an_array_count_within_the_bytes_present_reserves_no_more_than_those_bytes() {
    // 4096 topics announced over 4096 bytes, so the count is plausible, but the first topic's
    // name announces more than is left. A topic decodes to far more than one byte: reserving
    // one per byte (the earlier bound) took 80 times the input up front.
    let mut body = 4096i32.to_be_bytes().to_vec();
    body.extend_from_slice(&i16::MAX.to_be_bytes());
    body.resize(4 + 4096, 0);
    let request = wire::parse_request(frame(ApiKey::Metadata, 1, &body)).unwrap();
    let (decoded, largest) = largest_allocation(|| request.decode::<MetadataRequest>());
    assert!(decoded.is_err());
    assert!(largest <= 4096, "reserved {largest} bytes up front for 4 KiB of input");
}

#[test]
fn a_topic_name_announcing_four_gigabytes_is_refused_without_allocating_it() {
    // CreateTopics v5: one topic (compact array length 2) whose compact string name announces
    // u32::MAX - 1 bytes.
    let largest = decode_allocation::<CreateTopicsRequest>(frame(ApiKey::CreateTopics, 5, &[0x02, 0xff, 0xff, 0xff, 0xff, 0x0f, b'x']));
    assert!(largest < SMALL, "allocated {largest} bytes");
}

/// A one-record batch as a producer sends it, with `patch` applied and its CRC fixed.
fn stored_batch(compression: Compression, patch: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let records = [(Some(Bytes::from_static(b"k")), Some(Bytes::from_static(b"v")))];
    let mut batch = records::encode_records(&records, 1_000, compression).to_vec();
    patch(&mut batch);
    crate::fix_crcs(&mut batch);
    Bytes::from(batch)
}

// ListOffsets by timestamp reads the records of batches in the log, which passed their CRC and
// are otherwise as the producer (or a corrupted disk) made them.

#[test]
fn list_offsets_by_time_over_a_batch_announcing_i32_max_records_does_not_reserve_them() {
    let batch = stored_batch(Compression::None, |b| b[57..61].copy_from_slice(&i32::MAX.to_be_bytes()));
    let (_, largest) = largest_allocation(|| records::first_at_or_after(&batch, 0));
    assert!(largest < SMALL, "allocated {largest} bytes");
}

#[test]
fn list_offsets_by_time_over_a_snappy_batch_announcing_four_gigabytes_does_not_allocate_them() {
    let batch = stored_batch(Compression::Snappy, |b| {
        b.truncate(61);
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0]);
        let length = i32::try_from(b.len() - 12).unwrap();
        b[8..12].copy_from_slice(&length.to_be_bytes());
    });
    let (found, largest) = largest_allocation(|| records::first_at_or_after(&batch, 0));
    assert!(found.is_err(), "{found:?}");
    assert!(largest < SMALL, "allocated {largest} bytes");
}

#[test]
fn list_offsets_by_time_over_a_timestamp_delta_past_i64_max_wraps_instead_of_aborting_the_broker() {
    // Base timestamp (header bytes 27..35) i64::MAX, and the record's timestamp delta varint
    // rewritten from 0 to +1: both are the producer's, and the sum must not overflow.
    let batch = stored_batch(Compression::None, |b| {
        b[27..35].copy_from_slice(&i64::MAX.to_be_bytes());
        assert_eq!(b[63], 0, "a zero timestamp delta");
        b[63] = 2;
    });
    assert_eq!(records::first_at_or_after(&batch, i64::MIN), Ok(Some((0, i64::MIN))));
}

#[test]
fn an_alter_client_quotas_value_that_is_nan_survives_the_harness_round_trip() {
    // Found by the request fuzzer: producer_byte_rate's f64 bytes ff ff ff ff ff ff ff 0a are
    // a NaN, which is never equal to itself, so the harness's round trip compares encodings.
    let input = b"\x00\x31\x00\x01\x00\x00\x00\x07\x00\x04fuzz\x00\x02\x03\x05user\x06alice\x00\x0aclient-id\x00\x00\x02\x13producer_byte_rate\xff\xff\xff\xff\xff\xff\xff\x0a\x00\x00\x00\x00\x00";
    crate::Target::Request.run(input);
}
