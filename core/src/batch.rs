//! Record batch v2 headers: parsing, validation and the in-place patches the broker makes.
//!
//! The broker never re-encodes records. It reads the fixed 61-byte header of each batch a
//! producer sent, checks what Kafka's `LogValidator` checks for magic 2 without decompressing
//! (size, magic, CRC32C over attributes..end, offset deltas, record count), then patches the
//! fields that sit outside the CRC (base offset, partition leader epoch). Only for
//! `LogAppendTime` topics does it rewrite covered fields and recompute the CRC, as Kafka does.
//!
//! Layout (all big endian), from Kafka's `DefaultRecordBatch`:
//! ```text
//! 0  baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
//! 17 crc u32 | 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64
//! 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32
//! 57 recordCount i32 | 61 records...
//! ```

use crate::error::ErrorCode;

/// Bytes before `batchLength` counts: base offset and the length field itself.
pub const LOG_OVERHEAD: usize = 12;
/// Size of a v2 batch header, including `LOG_OVERHEAD`.
pub const HEADER_LEN: usize = 61;
const CRC_START: usize = 21;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a batch was refused. Each maps to the Kafka error code clients expect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record set of {len} bytes ends inside a batch header")]
    Truncated { len: usize },
    #[error("batch length {length} is out of range (remaining {remaining} bytes)")]
    InvalidLength { length: i32, remaining: usize },
    #[error("unsupported record batch magic {0} (only v2)")]
    UnsupportedMagic(i8),
    #[error("CRC mismatch: header says {expected:#010x}, data gives {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record count {record_count} does not match last offset delta {last_offset_delta}")]
    InvalidRecordCount { record_count: i32, last_offset_delta: i32 },
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("empty record set")]
    Empty,
    #[error("base offset {base_offset} is negative or its range passes the largest offset")]
    InvalidOffset { base_offset: i64 },
}

impl BatchError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BatchError::Truncated { .. }
            | BatchError::InvalidLength { .. }
            | BatchError::CrcMismatch { .. }
            | BatchError::InvalidOffset { .. } => ErrorCode::CorruptMessage,
            BatchError::UnsupportedMagic(_) => ErrorCode::UnsupportedForMessageFormat,
            BatchError::InvalidRecordCount { .. } | BatchError::Empty => ErrorCode::InvalidRecord,
            BatchError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        }
    }
}

/// The fields of a v2 batch header the broker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `buf` without checking the CRC.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < LOG_OVERHEAD + 5 {
            return Err(BatchError::Truncated { len: buf.len() });
        }
        let batch_length = be_i32(buf, 8);
        let magic = buf[16] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::InvalidLength { length: batch_length, remaining: buf.len() });
        }
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated { len: buf.len() });
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: u32::from_be_bytes(buf[17..21].try_into().expect("4 bytes")),
            attributes: i16::from_be_bytes(buf[21..23].try_into().expect("2 bytes")),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: i16::from_be_bytes(buf[51..53].try_into().expect("2 bytes")),
            base_sequence: be_i32(buf, 53),
            record_count: be_i32(buf, 57),
        })
    }

    /// Whole size of the batch on disk and on the wire.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression_codec(&self) -> i16 {
        self.attributes & 0x07
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// Validates one batch as a producer must send it: [`validate_stored_batch`], and one record
/// per offset in its range.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate_stored_batch(buf)?;
    if header.record_count < 1 || header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::InvalidRecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Validates one batch as it may sit in a log (header, length, CRC): compaction leaves batches
/// with fewer records than offsets, so only `record_count <= last_offset_delta + 1` holds.
pub fn validate_stored_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_len();
    if total > buf.len() {
        return Err(BatchError::InvalidLength { length: header.batch_length, remaining: buf.len() });
    }
    let actual = crc32c::crc32c(&buf[CRC_START..total]);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch { expected: header.crc, actual });
    }
    // The base offset lies outside the CRC: one whose range would pass i64::MAX is corrupt,
    // and every offset computed from the header below stays in range.
    if header.base_offset < 0 || header.base_offset.checked_add(i64::from(header.last_offset_delta) + 1).is_none() {
        return Err(BatchError::InvalidOffset { base_offset: header.base_offset });
    }
    if header.record_count < 0 || header.last_offset_delta < 0 || header.record_count > header.last_offset_delta.saturating_add(1) {
        return Err(BatchError::InvalidRecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Result of validating the records a producer sent for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedRecords {
    /// Byte position and header of each batch, in order.
    pub batches: Vec<(usize, BatchHeader)>,
    pub record_count: i64,
    pub max_timestamp: i64,
}

/// Validates every batch of a produce request's record set for one partition.
pub fn validate_records(
    buf: &[u8],
    max_message_bytes: usize,
) -> Result<ValidatedRecords, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut batches = Vec::new();
    let mut position = 0;
    let mut record_count = 0i64;
    let mut max_timestamp = -1i64;
    while position < buf.len() {
        let header = validate_batch(&buf[position..])?;
        if header.total_len() > max_message_bytes {
            return Err(BatchError::TooLarge { size: header.total_len(), max: max_message_bytes });
        }
        record_count += i64::from(header.record_count);
        max_timestamp = max_timestamp.max(header.max_timestamp);
        batches.push((position, header));
        position += header.total_len();
    }
    Ok(ValidatedRecords { batches, record_count, max_timestamp })
}

/// Stamps broker-assigned fields into validated batches, in place, starting at `first_offset`.
///
/// Base offset and partition leader epoch lie outside the CRC, so the client's CRC stays valid.
/// With `log_append_time_ms` set, the timestamp type bit and max timestamp are rewritten and the
/// CRC recomputed (Kafka's `message.timestamp.type=LogAppendTime`), as is a max timestamp that
/// differs from the header's (Kafka's `setMaxTimestamp`). Returns the next offset.
pub fn assign_offsets(
    buf: &mut [u8],
    records: &mut ValidatedRecords,
    first_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: Option<i64>,
) -> i64 {
    let mut next = first_offset;
    for (position, header) in &mut records.batches {
        let batch = &mut buf[*position..*position + header.total_len()];
        batch[0..8].copy_from_slice(&next.to_be_bytes());
        batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
        header.base_offset = next;
        header.partition_leader_epoch = leader_epoch;
        if let Some(now_ms) = log_append_time_ms {
            header.attributes |= ATTR_TIMESTAMP_TYPE;
            header.max_timestamp = now_ms;
            batch[21..23].copy_from_slice(&header.attributes.to_be_bytes());
        }
        // LogAppendTime, or a producer's max timestamp that its records do not bear out
        // (validation puts the records' own in the header): rewritten under a new CRC.
        if header.max_timestamp != be_i64(batch, 35) {
            batch[35..43].copy_from_slice(&header.max_timestamp.to_be_bytes());
            header.crc = crc32c::crc32c(&batch[CRC_START..]);
            batch[17..21].copy_from_slice(&header.crc.to_be_bytes());
        } else if log_append_time_ms.is_some() {
            header.crc = crc32c::crc32c(&batch[CRC_START..]);
            batch[17..21].copy_from_slice(&header.crc.to_be_bytes());
        }
        next = header.next_offset();
    }
    if let Some(now_ms) = log_append_time_ms {
        records.max_timestamp = now_ms;
    }
    next
}

/// Walks batch headers in a byte range read from a log (no CRC check) and returns
/// `(position, header)` for each complete batch. A trailing partial batch is left out.
pub fn scan_headers(buf: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut position = 0;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(&buf[position..]).ok()?;
        if position + header.total_len() > buf.len() {
            return None;
        }
        let item = (position, header);
        position += header.total_len();
        Some(item)
    })
}

/// A transaction marker: the one record of a control batch a transaction coordinator's
/// WriteTxnMarkers has a partition leader write (Kafka's `EndTransactionMarker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMarker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The marker of the control batch at the start of `batch` (whole batch bytes): `None` for a
/// data batch, or a control batch whose record is not a commit or abort marker (Kafka writes
/// control batches uncompressed with one record, key: version i16, type i16 (0 abort,
/// 1 commit); value: version i16, coordinator epoch i32).
pub fn control_marker(batch: &[u8]) -> Option<ControlMarker> {
    let header = BatchHeader::parse(batch).ok()?;
    if !header.is_control() || header.compression_codec() != 0 || header.record_count < 1 {
        return None;
    }
    let end = header.total_len().min(batch.len());
    let mut at = HEADER_LEN;
    let varint = |at: &mut usize| -> Option<i64> {
        let mut raw = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *batch[..end].get(*at)?;
            *at += 1;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        None
    };
    let _length = varint(&mut at)?;
    at += 1; // attributes
    let _timestamp_delta = varint(&mut at)?;
    let _offset_delta = varint(&mut at)?;
    let key_len = usize::try_from(varint(&mut at)?).ok()?;
    let key = batch[..end].get(at..at.checked_add(key_len)?)?;
    at += key_len;
    if key_len < 4 {
        return None;
    }
    let kind = i16::from_be_bytes([key[2], key[3]]);
    let value_len = usize::try_from(varint(&mut at)?).ok()?;
    let value = batch[..end].get(at..at.checked_add(value_len)?)?;
    let coordinator_epoch = if value_len >= 6 { i32::from_be_bytes(value[2..6].try_into().ok()?) } else { -1 };
    match kind {
        0 => Some(ControlMarker { commit: false, coordinator_epoch }),
        1 => Some(ControlMarker { commit: true, coordinator_epoch }),
        _ => None,
    }
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Encodes a real batch with the codec clients use, `count` records from `first_ts`.
    pub(crate) fn encode_batch(count: i32, first_ts: i64, compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(i),
                sequence: i,
                timestamp: first_ts + i64::from(i),
                key: Some(format!("k{i}").into_bytes().into()),
                value: Some(vec![b'v'; 20].into()),
                headers: [(StrBytes::from_static_str("h"), Some(vec![1u8].into()))]
                    .into_iter()
                    .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions { version: 2, compression },
        )
        .expect("encode");
        buf.to_vec()
    }

    /// A batch of an idempotent producer: `count` records from sequence `first_seq`.
    pub(crate) fn encode_idempotent_batch(count: i32, producer_id: i64, epoch: i16, first_seq: i32) -> Vec<u8> {
        let records: Vec<_> = (0..count).map(|i| (Some(format!("k{i}").into()), Some(vec![b'v'; 20].into()))).collect();
        let sequenced = crate::records::Sequenced { producer_id, epoch, first_seq, transactional: false };
        crate::records::encode_producer_records(&records, 1_000, Compression::None, Some(sequenced)).to_vec()
    }

    #[test]
    fn validates_batches_from_every_codec() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let buf = encode_batch(10, 1_000, compression);
            let records = validate_records(&buf, 1 << 20).expect("valid");
            assert_eq!(records.batches.len(), 1);
            assert_eq!(records.record_count, 10);
            assert_eq!(records.max_timestamp, 1_009);
            assert_eq!(records.batches[0].1.compression_codec(), compression as i16);
        }
    }

    #[test]
    fn flipped_payload_bit_is_a_crc_mismatch() {
        let mut buf = encode_batch(3, 0, Compression::None);
        let last = buf.len() - 1;
        buf[last] ^= 0x01;
        let err = validate_records(&buf, 1 << 20).unwrap_err();
        assert!(matches!(err, BatchError::CrcMismatch { .. }), "{err}");
        assert_eq!(err.code(), ErrorCode::CorruptMessage);
    }

    #[test]
    fn truncated_and_oversized_lengths_are_rejected() {
        let buf = encode_batch(3, 0, Compression::None);
        let err = validate_records(&buf[..buf.len() - 1], 1 << 20).unwrap_err();
        assert!(matches!(err, BatchError::InvalidLength { .. }), "{err}");
        assert!(matches!(validate_records(&buf[..20], 1 << 20), Err(BatchError::Truncated { .. })));
        let err = validate_records(&buf, 10).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MessageTooLarge);
        assert_eq!(validate_records(&[], 10).unwrap_err(), BatchError::Empty);
    }

    #[test]
    fn a_base_offset_whose_range_passes_the_largest_offset_is_corrupt() {
        let mut buf = encode_batch(2, 0, Compression::None);
        buf[0..8].copy_from_slice(&(i64::MAX - 1).to_be_bytes());
        assert_eq!(validate_stored_batch(&buf).unwrap_err(), BatchError::InvalidOffset { base_offset: i64::MAX - 1 });
        buf[0..8].copy_from_slice(&(i64::MAX - 2).to_be_bytes());
        assert_eq!(validate_stored_batch(&buf).unwrap().next_offset(), i64::MAX);
    }

    #[test]
    fn old_magic_is_unsupported() {
        let mut buf = encode_batch(1, 0, Compression::None);
        buf[16] = 1;
        assert_eq!(validate_records(&buf, 1 << 20).unwrap_err(), BatchError::UnsupportedMagic(1));
    }

    #[test]
    fn count_must_match_offset_delta() {
        let mut buf = encode_batch(2, 0, Compression::None);
        buf[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&buf[CRC_START..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = validate_records(&buf, 1 << 20).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRecord);
    }

    #[test]
    fn assigned_offsets_keep_the_crc_valid_and_are_contiguous() {
        let mut buf = encode_batch(4, 0, Compression::Lz4);
        buf.extend(encode_batch(3, 10, Compression::None));
        let mut records = validate_records(&buf, 1 << 20).expect("valid");
        let next = assign_offsets(&mut buf, &mut records, 100, 7, None);
        assert_eq!(next, 107);
        let again = validate_records(&buf, 1 << 20).expect("still valid");
        assert_eq!(again.batches[0].1.base_offset, 100);
        assert_eq!(again.batches[1].1.base_offset, 104);
        assert_eq!(again.batches[1].1.partition_leader_epoch, 7);
        assert_eq!(again.batches[1].1.last_offset(), 106);
    }

    #[test]
    fn log_append_time_rewrites_timestamp_and_crc() {
        let mut buf = encode_batch(2, 5, Compression::None);
        let mut records = validate_records(&buf, 1 << 20).expect("valid");
        assign_offsets(&mut buf, &mut records, 0, 0, Some(99_000));
        let header = validate_batch(&buf).expect("crc recomputed");
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, 99_000);
        assert_eq!(records.max_timestamp, 99_000);
    }

    #[test]
    fn scan_stops_before_a_partial_batch() {
        let mut buf = encode_batch(2, 0, Compression::None);
        let first = buf.len();
        buf.extend(encode_batch(2, 0, Compression::None));
        let found: Vec<_> = scan_headers(&buf[..buf.len() - 3]).map(|(p, _)| p).collect();
        assert_eq!(found, vec![0]);
        let found: Vec<_> = scan_headers(&buf).map(|(p, _)| p).collect();
        assert_eq!(found, vec![0, first]);
    }
}
