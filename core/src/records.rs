//! Record-level lookups that must look inside batches (and so decompress them, under a bound).
//! Only off the hot path: ListOffsets by timestamp, coordinators loading their partitions.

use bytes::Bytes;
use bytes::BytesMut;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use crate::batch::{scan_headers, BatchHeader, HEADER_LEN};
use crate::validate;

/// In batches read from a log starting at a batch boundary, the offset and timestamp of the
/// first record whose timestamp is at or after `target` (Kafka's `offsetsForTimes`).
/// Batches are assumed valid: they were validated on append and at recovery.
pub fn first_at_or_after(buf: &Bytes, target: i64) -> Result<Option<(i64, i64)>, String> {
    for (position, header) in scan_headers(buf) {
        if header.max_timestamp < target || header.is_control() {
            continue;
        }
        if header.is_log_append_time() {
            return Ok(Some((header.base_offset, header.max_timestamp)));
        }
        for record in stored_records(&buf[position..position + header.total_len()], &header)?.iter() {
            let timestamp = header.base_timestamp.wrapping_add(record.timestamp_delta);
            if timestamp >= target {
                return Ok(Some((header.base_offset + i64::from(record.offset_delta), timestamp)));
            }
        }
    }
    Ok(None)
}

/// The records of one whole batch read from a log, inflated under
/// [`validate::STORED_INFLATE_LIMIT`].
fn stored_records<'a>(batch: &'a [u8], header: &BatchHeader) -> Result<StoredRecords<'a>, String> {
    let section = validate::inflate(header.compression_codec(), &batch[HEADER_LEN..], validate::STORED_INFLATE_LIMIT)
        .map_err(|e| format!("batch at offset {}: {e}", header.base_offset))?;
    Ok(StoredRecords { section, base_offset: header.base_offset })
}

struct StoredRecords<'a> {
    section: std::borrow::Cow<'a, [u8]>,
    base_offset: i64,
}

impl StoredRecords<'_> {
    /// Its records; one that does not parse ends the walk (the batch passed its CRC, so that
    /// is a bug elsewhere, logged, not a reason to fail the whole read).
    fn iter(&self) -> impl Iterator<Item = validate::RecordView<'_>> + '_ {
        let base_offset = self.base_offset;
        validate::Records::new(&self.section).map_while(move |r| {
            r.map_err(|e| tracing::warn!(base_offset, error = %e, "a stored batch's records do not parse")).ok()
        })
    }
}

/// An uncompressed batch of key/value records stamped `now_ms`, for the broker's own
/// internal topics (`__consumer_offsets`).
pub fn encode_batch(records: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Bytes {
    let records: Vec<(Option<Bytes>, Option<Bytes>)> = records.iter().map(|(k, v)| (Some(k.clone()), v.clone())).collect();
    encode_records(&records, now_ms, Compression::None)
}

/// One batch of records with offsets from 0 and timestamps `first_ms`, `first_ms + 1`, ...,
/// as a producer would send it.
pub fn encode_records(records: &[(Option<Bytes>, Option<Bytes>)], first_ms: i64, compression: Compression) -> Bytes {
    encode_producer_records(records, first_ms, compression, None)
}

/// An idempotent producer's batch: `producer_id`, `epoch` and sequences from `first_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequenced {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    /// Part of a transaction (the batch's transactional bit).
    pub transactional: bool,
}

/// As [`encode_records`], for an idempotent producer when `sequenced` is set.
pub fn encode_producer_records(
    records: &[(Option<Bytes>, Option<Bytes>)],
    first_ms: i64,
    compression: Compression,
    sequenced: Option<Sequenced>,
) -> Bytes {
    let (producer_id, producer_epoch, first_seq) = sequenced.map_or((-1, -1, 0), |s| (s.producer_id, s.epoch, s.first_seq));
    let transactional = sequenced.is_some_and(|s| s.transactional);
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever offset - sequence changes.
            sequence: first_seq.wrapping_add(i as i32),
            timestamp: first_ms + i as i64,
            key: key.clone(),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression })
        .expect("the encoder supports every codec it is built with");
    buf.freeze()
}

/// A transaction marker's control batch for `producer_id`/`epoch` at offset 0, stamped
/// `now_ms`, as a partition leader writes it on WriteTxnMarkers (Kafka's
/// `MemoryRecords.withEndTransactionMarker`).
pub fn encode_marker(producer_id: i64, epoch: i16, marker: crate::batch::ControlMarker, now_ms: i64) -> Bytes {
    let kind: i16 = if marker.commit { 1 } else { 0 };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now_ms,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &[record], &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("an uncompressed batch always encodes");
    buf.freeze()
}

/// Keys and values of every record in `buf` (whole batches read from a log), in order.
pub fn decode_key_values(buf: &Bytes) -> Result<Vec<(Bytes, Option<Bytes>)>, String> {
    let mut out = Vec::new();
    for (position, header) in scan_headers(buf) {
        if header.is_control() {
            continue;
        }
        let records = stored_records(&buf[position..position + header.total_len()], &header)?;
        for record in records.iter() {
            let copy = |b: &[u8]| Bytes::copy_from_slice(b);
            out.push((record.key.map(copy).unwrap_or_default(), record.value.map(copy)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::encode_batch;
    use crate::batch::{assign_offsets, validate_records};
    use kafka_protocol::records::Compression;

    #[test]
    fn finds_the_first_record_inside_compressed_batches() {
        // Two batches: timestamps 100..110 at offsets 0..10, 200..210 at offsets 10..20.
        let mut buf = encode_batch(10, 100, Compression::Zstd);
        buf.extend(encode_batch(10, 200, Compression::Gzip));
        let mut records = validate_records(&buf, 1 << 20).unwrap();
        assign_offsets(&mut buf, &mut records, 0, 0, None);
        let buf = Bytes::from(buf);
        assert_eq!(first_at_or_after(&buf, 0).unwrap(), Some((0, 100)));
        assert_eq!(first_at_or_after(&buf, 105).unwrap(), Some((5, 105)));
        assert_eq!(first_at_or_after(&buf, 110).unwrap(), Some((10, 200)));
        assert_eq!(first_at_or_after(&buf, 209).unwrap(), Some((19, 209)));
        assert_eq!(first_at_or_after(&buf, 210).unwrap(), None);
    }

    #[test]
    fn a_marker_reads_back_from_its_control_batch() {
        let marker = crate::batch::ControlMarker { commit: true, coordinator_epoch: 7 };
        let batch = encode_marker(42, 3, marker, 1_000);
        let header = crate::batch::validate_batch(&batch).expect("a valid batch");
        assert!(header.is_control() && header.is_transactional());
        assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
        assert_eq!(crate::batch::control_marker(&batch), Some(marker));
        let abort = encode_marker(42, 3, crate::batch::ControlMarker { commit: false, coordinator_epoch: 0 }, 1_000);
        assert_eq!(crate::batch::control_marker(&abort).map(|m| m.commit), Some(false));
        assert_eq!(crate::batch::control_marker(&encode_records(&[(None, Some(Bytes::from("v")))], 0, Compression::None)), None);
        for cut in 0..batch.len() {
            let _ = crate::batch::control_marker(&batch[..cut]);
        }
    }

    #[test]
    fn internal_batches_round_trip_with_tombstones() {
        let records = vec![(Bytes::from("k1"), Some(Bytes::from("v1"))), (Bytes::from("k2"), None)];
        let batch = super::encode_batch(&records, 5);
        crate::batch::validate_records(&batch, 1 << 20).expect("a valid batch");
        assert_eq!(decode_key_values(&batch).unwrap(), records);
    }
}
