//! Kafka's `LogValidator` for what a producer sends: every record of the batch is walked, a
//! compressed batch inflated under a bound, and each record checked for what Kafka checks
//! (structure, count, offset deltas, timestamps, keys on compacted topics). A valid batch is
//! stored as sent, with the broker's fields patched in place ([`crate::batch::assign_offsets`]),
//! unless the topic's `compression.type` names another codec than the producer's: then its
//! records are re-encoded in the topic's ([`validate_and_recompress`], [`crate::compression`]).
//!
//! Everything here reads untrusted bytes: every length is checked against the bytes present
//! before it is used, and nothing allocates what a header claims.


use bytes::Bytes;

use crate::batch::{self, BatchError, BatchHeader, ValidatedRecords, HEADER_LEN};
use crate::compression::{self, RecompressError, TopicCompression};
use crate::error::ErrorCode;
pub use crate::inflate::{inflate, InflateError};

/// A compressed batch may inflate to this many times the topic's `max.message.bytes` (at
/// least 1 MiB): far above what producers' batching makes (a Java producer's `batch.size` counts
/// compressed bytes, so ratios of 10–20 happen), far below what one crafted batch of zeros asks
/// for. Beyond it the batch is MESSAGE_TOO_LARGE, on which a Java producer splits the batch.
pub const INFLATE_FACTOR: usize = 32;

/// What a batch read back from a log may inflate to: it was bounded when it was produced (by
/// its topic's `max.message.bytes` then), so this only keeps a batch written before that bound
/// existed, or a topic's later lower setting, from taking the memory a bomb asks for.
pub const STORED_INFLATE_LIMIT: usize = 128 << 20;

/// At most this many record errors are listed in a refusal (Kafka lists every one; a 1 MiB
/// batch of empty records would make a response of megabytes).
pub const MAX_RECORD_ERRORS: usize = 100;

/// The most bytes a batch of a topic with `max_message_bytes` may inflate to.
pub fn inflate_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.max(1 << 20).saturating_mul(INFLATE_FACTOR)
}

/// The topic settings a leader checks a producer's records against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceRules {
    /// `max.message.bytes`: the largest batch, compressed, both as sent and as stored, and
    /// (times [`INFLATE_FACTOR`]) the most it may inflate to.
    pub max_message_bytes: usize,
    /// `cleanup.policy` includes `compact`: every record needs a key.
    pub compacted: bool,
    /// `message.timestamp.type=LogAppendTime`: record timestamps are not checked, the broker
    /// stamps the batch.
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms`: how far in the past a CreateTime timestamp may be.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future a CreateTime timestamp may be.
    pub timestamp_after_max_ms: i64,
    /// `compression.type` and its level: the codec batches are stored in
    /// ([`validate_and_recompress`]).
    pub compression: TopicCompression,
}

impl Default for ProduceRules {
    fn default() -> Self {
        ProduceRules {
            max_message_bytes: 1_048_588,
            compacted: false,
            log_append_time: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: DEFAULT_TIMESTAMP_AFTER_MAX_MS,
            compression: TopicCompression::Producer,
        }
    }
}

/// Kafka 4.0's default `log.message.timestamp.after.max.ms` (KIP-1030): one hour.
pub const DEFAULT_TIMESTAMP_AFTER_MAX_MS: i64 = 3_600_000;

/// One refused record (Produce v8+ `record_errors`): its index in the batch and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

/// Why a producer's records for one partition were refused: the partition's error code, the
/// message (Produce v8+ `error_message`) and the records at fault, if the fault is in records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: Option<String>,
    pub record_errors: Vec<RecordError>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal { code, message: Some(message.into()), record_errors: Vec::new() }
    }

    fn invalid(message: impl Into<String>) -> Refusal {
        Refusal::new(ErrorCode::InvalidRecord, message)
    }
}

/// Any other error of a produce: a code alone.
impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Refusal {
        Refusal { code, message: None, record_errors: Vec::new() }
    }
}

impl From<BatchError> for Refusal {
    fn from(error: BatchError) -> Refusal {
        Refusal::new(error.code(), error.to_string())
    }
}

/// Validates the record set a producer sent for one partition, as Kafka's `LogValidator`
/// (Produce v3+): exactly one batch of magic 2, its CRC, size, offset range and count, not a
/// control batch, and then every record in it. `now_ms` is the broker's wall clock, for
/// CreateTime bounds. The batch header's max timestamp is the records' (the one sent is not
/// trusted); [`batch::assign_offsets`] writes it back if it differs.
///
/// This validates the batch as sent and ignores `rules.compression`: a leader appends what
/// [`validate_and_recompress`] gives it.
pub fn validate_produce(buf: &[u8], rules: &ProduceRules, now_ms: i64) -> Result<ValidatedRecords, Refusal> {
    validate(buf, rules, now_ms, &TopicCompression::Producer).map(|(validated, _)| validated)
}

/// [`validate_produce`], and then what the leader appends in place of `buf`: `None` when the
/// batch is appended as sent (the topic keeps the producer's codec, or it is the topic's
/// already; nothing more is done than [`validate_produce`] does), else the batch re-encoded in
/// the topic's codec ([`compression::recompress`]'s rules), which the returned
/// [`ValidatedRecords`] then describes. As Kafka (`UnifiedLog.append`), a re-encoded batch is
/// held to `max.message.bytes` again.
pub fn validate_and_recompress(buf: &[u8], rules: &ProduceRules, now_ms: i64) -> Result<(ValidatedRecords, Option<Bytes>), Refusal> {
    let (validated, rebuilt) = validate(buf, rules, now_ms, &rules.compression)?;
    Ok((validated, rebuilt.map(Bytes::from)))
}

/// [`validate_produce`], re-encoding the batch in `target`'s codec when it names another one:
/// the records' section, inflated once for the walk, is what is compressed again.
fn validate(buf: &[u8], rules: &ProduceRules, now_ms: i64, target: &TopicCompression) -> Result<(ValidatedRecords, Option<Vec<u8>>), Refusal> {
    if buf.is_empty() {
        return Err(Refusal::invalid("Produce requests must have at least one record batch per partition"));
    }
    let mut header = match batch::validate_batch(buf) {
        Ok(header) => header,
        Err(BatchError::UnsupportedMagic(magic)) => {
            return Err(Refusal::invalid(format!(
                "Produce requests are only allowed to contain record batches with magic version 2, not {magic}"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if header.total_len() > rules.max_message_bytes {
        return Err(BatchError::TooLarge { size: header.total_len(), max: rules.max_message_bytes }.into());
    }
    if header.total_len() != buf.len() {
        return Err(Refusal::invalid("Produce requests are only allowed to contain exactly one record batch"));
    }
    if header.is_control() {
        return Err(Refusal::invalid("Clients are not allowed to write control records"));
    }
    if header.producer_id >= 0 && header.base_sequence < 0 {
        return Err(Refusal::invalid(format!(
            "Invalid sequence number {} in record batch with producerId {}",
            header.base_sequence, header.producer_id
        )));
    }
    if header.is_transactional() && header.producer_id < 0 {
        return Err(Refusal::invalid("A transactional record batch needs a producer id"));
    }
    let body = &buf[HEADER_LEN..header.total_len()];
    let section = inflate(header.compression_codec(), body, inflate_limit(rules.max_message_bytes))
        .map_err(inflate_refusal)?;
    let max_timestamp = check_records(&header, &section, rules, now_ms)?;
    let mut rebuilt = None;
    if target.recompresses(&header) {
        let batch = compression::rebuild(&buf[..HEADER_LEN], &section, target).map_err(recompress_refusal)?;
        if batch.len() > rules.max_message_bytes {
            return Err(BatchError::TooLarge { size: batch.len(), max: rules.max_message_bytes }.into());
        }
        header = batch::BatchHeader::parse(&batch).map_err(|e| recompress_refusal(e.into()))?;
        rebuilt = Some(batch);
    }
    header.max_timestamp = max_timestamp;
    let validated = ValidatedRecords { batches: vec![(0, header)], record_count: i64::from(header.record_count), max_timestamp };
    Ok((validated, rebuilt))
}

/// A batch that passed validation and still could not be re-encoded: the broker's failure, not
/// the producer's (only a batch whose re-encoding passes the largest batch length is theirs).
fn recompress_refusal(error: RecompressError) -> Refusal {
    let code = match error {
        RecompressError::TooLong { .. } => ErrorCode::MessageTooLarge,
        _ => ErrorCode::UnknownServerError,
    };
    Refusal::new(code, error.to_string())
}

/// Walks every record of a batch's (inflated) records section: count and offset deltas as
/// the header says, each record well formed, CreateTime timestamps within bounds, keys on a
/// compacted topic. Returns the records' max timestamp.
fn check_records(header: &BatchHeader, section: &[u8], rules: &ProduceRules, now_ms: i64) -> Result<i64, Refusal> {
    let mut record_errors = Vec::new();
    let mut failed = 0usize;
    let mut timestamp_failed = false;
    let mut max_timestamp = -1i64;
    let mut walked: i32 = 0;
    for record in Records::new(section) {
        let record = record.map_err(|e| Refusal::invalid(format!("Found invalid record structure: {e}")))?;
        if walked >= header.record_count {
            return Err(Refusal::invalid(format!(
                "Incorrect declared batch size: more than {} records in the batch",
                header.record_count
            )));
        }
        if record.offset_delta != walked {
            return Err(Refusal::invalid(format!(
                "Record {walked} has offset delta {}: inner offsets must count up from 0",
                record.offset_delta
            )));
        }
        let timestamp = header.base_timestamp.wrapping_add(record.timestamp_delta);
        max_timestamp = max_timestamp.max(timestamp);
        let mut fault = None;
        if rules.compacted && record.key.is_none() {
            fault = Some("Compacted topic cannot accept message without key".to_owned());
        } else if !rules.log_append_time && timestamp != -1 {
            let (before, after) = (now_ms.saturating_sub(timestamp), timestamp.saturating_sub(now_ms));
            if before > rules.timestamp_before_max_ms || after > rules.timestamp_after_max_ms {
                timestamp_failed = true;
                fault = Some(format!(
                    "Timestamp {timestamp} of message with offset {walked} is out of range. The timestamp should be within [{}, {}]",
                    now_ms.saturating_sub(rules.timestamp_before_max_ms),
                    now_ms.saturating_add(rules.timestamp_after_max_ms)
                ));
            }
        } else if header.is_log_append_time() && !rules.log_append_time {
            timestamp_failed = true;
            fault = Some("Producer should not set timestamp type to LogAppendTime".to_owned());
        }
        if let Some(message) = fault {
            failed += 1;
            if record_errors.len() < MAX_RECORD_ERRORS {
                record_errors.push(RecordError { batch_index: walked, message });
            }
        }
        walked += 1;
    }
    if walked != header.record_count {
        return Err(Refusal::invalid(format!(
            "Incorrect declared batch size: {} records declared, {walked} present",
            header.record_count
        )));
    }
    if failed > 0 {
        let (code, message) = if timestamp_failed {
            (ErrorCode::InvalidTimestamp, "One or more records have been rejected due to invalid timestamp".to_owned())
        } else {
            let first: Vec<&str> = record_errors.iter().take(3).map(|e| e.message.as_str()).collect();
            (
                ErrorCode::InvalidRecord,
                format!(
                    "One or more records have been rejected due to {failed} record errors in total, and only showing the first three errors at most: {first:?}"
                ),
            )
        };
        return Err(Refusal { code, message: Some(message), record_errors });
    }
    Ok(max_timestamp)
}

/// What a batch whose records cannot be inflated is refused with.
fn inflate_refusal(error: InflateError) -> Refusal {
    let code = match error {
        InflateError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        InflateError::UnknownCodec(_) | InflateError::Corrupt(_) => ErrorCode::CorruptMessage,
    };
    Refusal::new(code, error.to_string())
}

/// One record of a v2 batch, as it sits in the records section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's whole bytes, length prefix included.
    pub raw: &'a [u8],
}

/// Walks the records of an (inflated) records section to its end. A record that is not well
/// formed (lengths overrunning, a body longer or shorter than its length says, a null header
/// key) ends the walk with an error.
pub struct Records<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Records<'a> {
    pub fn new(section: &'a [u8]) -> Records<'a> {
        Records { rest: section, failed: false }
    }

    fn parse(&mut self) -> Result<RecordView<'a>, String> {
        let start = self.rest;
        let mut at = Cursor(self.rest);
        let length = at.varint()?;
        let length = usize::try_from(length).map_err(|_| format!("negative record length {length}"))?;
        let body = at.take(length).ok_or_else(|| format!("record of {length} bytes overruns the batch"))?;
        self.rest = at.0;
        let raw = &start[..start.len() - self.rest.len()];
        let mut body = Cursor(body);
        let attributes = body.take(1).ok_or("record ends before its attributes")?[0] as i8;
        let timestamp_delta = body.varint()?;
        let offset_delta = i32::try_from(body.varint()?).map_err(|_| "offset delta out of range".to_owned())?;
        let key = body.nullable("key")?;
        let value = body.nullable("value")?;
        let headers = body.varint()?;
        if headers < 0 {
            return Err(format!("negative header count {headers}"));
        }
        for _ in 0..headers {
            if body.nullable("header key")?.is_none() {
                return Err("null header key".to_owned());
            }
            body.nullable("header value")?;
        }
        if !body.0.is_empty() {
            return Err(format!("{} bytes left over in a record of {length} bytes", body.0.len()));
        }
        Ok(RecordView { attributes, timestamp_delta, offset_delta, key, value, raw })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let record = self.parse();
        self.failed = record.is_err();
        Some(record)
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    /// A zig-zag varint or varlong, as `i64`.
    fn varint(&mut self) -> Result<i64, String> {
        let mut raw = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first().ok_or("record ends inside a varint")?;
            self.0 = rest;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes".to_owned())
    }

    /// A varint length (-1 for null) and that many bytes.
    fn nullable(&mut self, what: &str) -> Result<Option<&'a [u8]>, String> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        let n = usize::try_from(len).map_err(|_| format!("negative {what} length {len}"))?;
        self.take(n).map(Some).ok_or_else(|| format!("{what} of {n} bytes overruns its record"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::encode_batch;
    use kafka_protocol::records::Compression;

    const NOW: i64 = 1_700_000_000_000;

    fn rules() -> ProduceRules {
        ProduceRules::default()
    }

    /// Rewrites header fields covered by the CRC and recomputes it, as a crafted client would.
    fn patch(buf: &mut [u8], at: usize, bytes: &[u8]) {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        recrc(buf);
    }

    fn recrc(buf: &mut [u8]) {
        let crc = crc32c::crc32c(&buf[21..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    fn refused(buf: &[u8]) -> Refusal {
        validate_produce(buf, &rules(), NOW).expect_err("refused")
    }

    #[test]
    fn batches_of_every_codec_are_walked_and_accepted() {
        for compression in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let buf = encode_batch(10, NOW, compression);
            let validated = validate_produce(&buf, &rules(), NOW).unwrap_or_else(|e| panic!("{compression:?}: {e:?}"));
            assert_eq!(validated.record_count, 10);
            assert_eq!(validated.max_timestamp, NOW + 9);
        }
    }

    #[test]
    fn a_count_claiming_more_records_than_present_is_refused() {
        // One record whose header claims i32::MAX, offset range to match, CRC valid.
        let mut buf = encode_batch(1, NOW, Compression::None);
        patch(&mut buf, 23, &(i32::MAX - 1).to_be_bytes());
        patch(&mut buf, 57, &i32::MAX.to_be_bytes());
        let refusal = refused(&buf);
        assert_eq!(refusal.code, ErrorCode::InvalidRecord, "{refusal:?}");
        // Three claimed, one present.
        let mut buf = encode_batch(1, NOW, Compression::None);
        patch(&mut buf, 23, &2i32.to_be_bytes());
        patch(&mut buf, 57, &3i32.to_be_bytes());
        assert_eq!(refused(&buf).code, ErrorCode::InvalidRecord);
        // Fewer claimed than present.
        let mut buf = encode_batch(3, NOW, Compression::Gzip);
        patch(&mut buf, 23, &1i32.to_be_bytes());
        patch(&mut buf, 57, &2i32.to_be_bytes());
        assert_eq!(refused(&buf).code, ErrorCode::InvalidRecord);
    }

    #[test]
    fn control_batches_from_clients_are_refused() {
        let mut buf = encode_batch(1, NOW, Compression::None);
        let attributes = i16::from_be_bytes([buf[21], buf[22]]) | 0x20;
        patch(&mut buf, 21, &attributes.to_be_bytes());
        let refusal = refused(&buf);
        assert_eq!(refusal.code, ErrorCode::InvalidRecord);
        assert!(refusal.message.unwrap().contains("control"));
    }

    #[test]
    fn a_transactional_batch_without_a_producer_is_refused() {
        // encode_batch writes producer id -1; bit 4 marks the batch transactional.
        let mut buf = encode_batch(1, NOW, Compression::None);
        let attributes = i16::from_be_bytes([buf[21], buf[22]]) | 0x10;
        patch(&mut buf, 21, &attributes.to_be_bytes());
        let refusal = refused(&buf);
        assert_eq!(refusal.code, ErrorCode::InvalidRecord);
        assert!(refusal.message.unwrap().contains("producer id"));
    }

    #[test]
    fn a_bomb_is_refused_without_inflating_it_whole() {
        let limit = inflate_limit(1 << 20);
        for codec in [1i16, 2, 3, 4] {
            let zeros = vec![0u8; limit + 1];
            let compressed = compress(codec, &zeros);
            // Snappy's blocks cap its ratio near 21; the others reach hundreds or more.
            assert!(compressed.len() < limit / 16, "codec {codec}: {} bytes", compressed.len());
            assert_eq!(inflate(codec, &compressed, limit), Err(InflateError::TooLarge { limit }), "codec {codec}");
            assert_eq!(inflate(codec, &compressed, limit + 1).map(|c| c.len()), Ok(limit + 1), "codec {codec}");
        }
    }

    fn compress(codec: i16, data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match codec {
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            2 => {
                let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
                for chunk in data.chunks(32 << 10) {
                    let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
                    out.extend((block.len() as u32).to_be_bytes());
                    out.extend(block);
                }
                out
            }
            3 => {
                let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                e.write_all(data).unwrap();
                e.finish().0
            }
            4 => zstd::stream::encode_all(data, 3).unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_snappy_block_announcing_more_than_it_can_hold_is_refused_before_allocating() {
        // A raw block whose header announces 32 MiB over two bytes of data.
        let mut lying = Vec::new();
        let mut n = 32u64 << 20;
        while n >= 0x80 {
            lying.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        lying.push(n as u8);
        lying.extend([0x00, 0x00]);
        assert!(matches!(inflate(2, &lying, 64 << 20), Err(InflateError::Corrupt(_))));
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        framed.extend((lying.len() as u32).to_be_bytes());
        framed.extend(&lying);
        assert!(matches!(inflate(2, &framed, 64 << 20), Err(InflateError::Corrupt(_))));
    }

    #[test]
    fn timestamps_out_of_bounds_get_record_errors() {
        let future = encode_batch(3, NOW + 2 * 3_600_000, Compression::None);
        let refusal = refused(&future);
        assert_eq!(refusal.code, ErrorCode::InvalidTimestamp);
        assert_eq!(refusal.record_errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(), vec![0, 1, 2]);
        let past = encode_batch(2, NOW - 10_000, Compression::Lz4);
        assert!(validate_produce(&past, &rules(), NOW).is_ok());
        let strict = ProduceRules { timestamp_before_max_ms: 5_000, ..rules() };
        assert_eq!(validate_produce(&past, &strict, NOW).unwrap_err().code, ErrorCode::InvalidTimestamp);
        let append_time = ProduceRules { log_append_time: true, ..rules() };
        assert!(validate_produce(&future, &append_time, NOW).is_ok());
    }

    #[test]
    fn compacted_topics_need_keys() {
        let records = vec![(Some(bytes::Bytes::from_static(b"k")), None), (None, Some(bytes::Bytes::from_static(b"v")))];
        let buf = crate::records::encode_records(&records, NOW, Compression::Snappy);
        assert!(validate_produce(&buf, &rules(), NOW).is_ok());
        let compacted = ProduceRules { compacted: true, ..rules() };
        let refusal = validate_produce(&buf, &compacted, NOW).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::InvalidRecord);
        assert_eq!(refusal.record_errors, vec![RecordError {
            batch_index: 1,
            message: "Compacted topic cannot accept message without key".into()
        }]);
    }

    #[test]
    fn a_second_batch_and_old_magic_are_refused() {
        let mut two = encode_batch(1, NOW, Compression::None);
        two.extend(encode_batch(1, NOW, Compression::None));
        assert_eq!(refused(&two).code, ErrorCode::InvalidRecord);
        let mut old = encode_batch(1, NOW, Compression::None);
        old[16] = 1;
        assert_eq!(refused(&old).code, ErrorCode::InvalidRecord);
        assert_eq!(refused(&[]).code, ErrorCode::InvalidRecord);
    }

    #[test]
    fn malformed_records_are_refused() {
        // A record's length one byte short of its body: the body is misread from there on.
        let mut buf = encode_batch(2, NOW, Compression::None);
        buf[HEADER_LEN] -= 2; // zig-zag: one less
        recrc(&mut buf);
        assert_eq!(refused(&buf).code, ErrorCode::InvalidRecord);
        // Offset deltas not counting from 0.
        let mut buf = encode_batch(1, NOW, Compression::None);
        let delta_at = HEADER_LEN + 1 + 1 + 1; // length, attributes, timestamp delta 0
        buf[delta_at] = 2;
        recrc(&mut buf);
        assert_eq!(refused(&buf).code, ErrorCode::InvalidRecord);
    }

    #[test]
    fn the_records_max_timestamp_replaces_the_header_claim() {
        let mut buf = encode_batch(3, NOW, Compression::None);
        patch(&mut buf, 35, &(NOW + 500).to_be_bytes());
        let mut validated = validate_produce(&buf, &rules(), NOW).expect("valid");
        assert_eq!(validated.max_timestamp, NOW + 2);
        batch::assign_offsets(&mut buf, &mut validated, 0, 0, None);
        let header = batch::validate_batch(&buf).expect("CRC recomputed");
        assert_eq!(header.max_timestamp, NOW + 2);
    }
}
