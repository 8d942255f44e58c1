//! Record-level lookups that must look inside batches (and so decompress them). Only off the
//! hot path: ListOffsets by timestamp.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use crate::batch::scan_headers;

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
        let mut batch = buf.slice(position..position + header.total_len());
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| e.to_string())?;
        if let Some(record) = set.records.iter().find(|r| r.timestamp >= target) {
            return Ok(Some((record.offset, record.timestamp)));
        }
    }
    Ok(None)
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
}
