//! Log compaction (`cleanup.policy=compact`): which records a cleaning pass keeps, and the
//! rewritten batches, without the files.
//!
//! A pass follows Kafka's `LogCleaner`: the driver builds an [`OffsetMap`] (key → offset of
//! its latest record) over the cleanable segments, then passes every batch of those segments
//! through [`clean_batch`] and writes what it returns into replacement segments. A record
//! survives if no later record in the map has its key; a tombstone (null value) also goes once
//! it is older than `delete.retention.ms`; a record without a key goes, as Kafka's cleaner
//! drops it. The active segment is never cleaned, so the log end offset never moves.
//!
//! Surviving records are copied byte for byte: a rewritten batch keeps the original header
//! (base offset, last offset delta, timestamps, producer fields, leader epoch) with the record
//! count, length and CRC recomputed, and is recompressed with its own codec. Keeping the last
//! offset delta is what Kafka does for v2 batches; it keeps every segment's offset range, and
//! a producer's last sequence, intact.
//!
//! Transactions: the records of aborted transactions (the partition's aborted list, given to
//! the [`OffsetMap`]) neither count as the latest of their key nor survive a pass, as in
//! Kafka's cleaner, so an aborted write never hides the committed value before it. The driver
//! cleans only below the last stable offset, so no batch of an open transaction is cleaned.
//! Markers stay (Kafka removes them once `delete.retention.ms` passes; odradek keeps them).
//!
//! Ordering rules for the driver:
//! - add to the map every segment it will clean, in offset order, before cleaning any of them;
//!   a segment not in the map must not be cleaned (its records could be the latest);
//! - clean only sealed segments, and only those [`cleanable_segments`] returns.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{scan_headers, BatchHeader, HEADER_LEN};
use crate::log::Segment;
use crate::validate::{RecordView, Records};

const CRC_START: usize = 21;
const RECORD_COUNT_AT: usize = 57;

/// Key → offset of the latest record with that key, over the segments a pass cleans.
///
/// Kafka bounds this map with `log.cleaner.dedupe.buffer.size`; here the bound is on the key
/// bytes held, and a pass that fills it cleans only the segments mapped so far.
#[derive(Debug, Default)]
pub struct OffsetMap {
    // Only looked up, never iterated: its order cannot reach an output.
    latest: HashMap<Bytes, i64>,
    /// The partition's aborted transactions.
    aborted: Vec<crate::producer::AbortedTxn>,
    key_bytes: usize,
    limit_bytes: usize,
}

impl OffsetMap {
    pub fn new(limit_bytes: usize) -> OffsetMap {
        OffsetMap { latest: HashMap::new(), key_bytes: 0, limit_bytes, aborted: Vec::new() }
    }

    /// A map for a partition with these aborted transactions.
    pub fn with_aborted(limit_bytes: usize, aborted: Vec<crate::producer::AbortedTxn>) -> OffsetMap {
        OffsetMap { aborted, ..OffsetMap::new(limit_bytes) }
    }

    /// Whether the data batch with `header` belongs to an aborted transaction.
    fn aborted(&self, header: &BatchHeader) -> bool {
        header.is_transactional()
            && !header.is_control()
            && self.aborted.iter().any(|t| {
                t.producer_id == header.producer_id && t.first_offset.0 <= header.base_offset && header.base_offset < t.last_offset.0
            })
    }

    /// Records every keyed record of the whole batches in `buf`.
    pub fn add_batches(&mut self, buf: &Bytes) -> Result<(), String> {
        for (position, header) in scan_headers(buf) {
            if header.is_control() || self.aborted(&header) {
                continue;
            }
            let batch = buf.slice(position..position + header.total_len());
            let section = records_section(&batch, &header)?;
            for record in records(&header, &section) {
                let record = record?;
                let Some(key) = record.key else { continue };
                let key = section.slice_ref(key);
                let offset = header.base_offset + i64::from(record.offset_delta);
                let size = key.len();
                if let Some(previous) = self.latest.insert(key, offset) {
                    if crate::INVARIANTS {
                        assert!(previous <= offset, "batches must be added in offset order");
                    }
                } else {
                    self.key_bytes += size;
                }
            }
        }
        Ok(())
    }

    pub fn is_full(&self) -> bool {
        self.key_bytes >= self.limit_bytes
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    fn keeps(&self, key: &[u8], offset: i64) -> bool {
        self.latest.get(key).is_none_or(|&latest| latest <= offset)
    }
}

/// What cleaning did to one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleaned {
    /// Every record survives: copy the batch unchanged.
    Keep,
    /// No record survives.
    Remove,
    /// Some records survive, in this new batch.
    Rewrite(Bytes),
}

/// Cleans one whole batch: keeps the records `map` says are the latest for their key, drops
/// tombstones in batches whose max timestamp is below `tombstone_horizon_ms`.
pub fn clean_batch(batch: &Bytes, map: &OffsetMap, tombstone_horizon_ms: i64) -> Result<Cleaned, String> {
    let header = BatchHeader::parse(batch).map_err(|e| e.to_string())?;
    if header.is_control() {
        return Ok(Cleaned::Keep);
    }
    if map.aborted(&header) {
        return Ok(Cleaned::Remove);
    }
    let section = records_section(batch, &header)?;
    let tombstones_expired = header.max_timestamp < tombstone_horizon_ms;
    let mut kept = BytesMut::new();
    let (mut count, mut total) = (0i32, 0i32);
    for record in records(&header, &section) {
        let record = record?;
        total += 1;
        let offset = header.base_offset + i64::from(record.offset_delta);
        let keep = match record.key {
            None => false,
            Some(key) => map.keeps(key, offset) && !(record.value.is_none() && tombstones_expired),
        };
        if keep {
            kept.put_slice(record.raw);
            count += 1;
        }
    }
    if count == total {
        return Ok(Cleaned::Keep);
    }
    if count == 0 {
        return Ok(Cleaned::Remove);
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + kept.len());
    out.put_slice(&batch[..HEADER_LEN]);
    compress(header.compression_codec(), kept.freeze(), &mut out)?;
    let batch_length = i32::try_from(out.len() - crate::batch::LOG_OVERHEAD).map_err(|e| e.to_string())?;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[RECORD_COUNT_AT..HEADER_LEN].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Cleaned::Rewrite(out.freeze()))
}

/// The leading sealed segments a pass may clean: all but the active one, stopping at the first
/// segment holding a record newer than `min.compaction.lag.ms` (Kafka's first uncleanable
/// offset).
pub fn cleanable_segments(segments: &[Segment], now_ms: i64, min_compaction_lag_ms: i64) -> usize {
    let sealed = &segments[..segments.len().saturating_sub(1)];
    sealed.iter().take_while(|s| s.max_timestamp <= now_ms.saturating_sub(min_compaction_lag_ms)).count()
}

/// Groups the first `count` segments into runs whose sizes add up to at most `segment_bytes`,
/// each to be replaced by one cleaned segment (Kafka's `groupSegmentsBySize`), so repeated
/// passes merge small cleaned segments. A run is given as `start..end` indexes.
pub fn group_by_size(segments: &[Segment], count: usize, segment_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < count {
        let mut end = start + 1;
        let mut size = segments[start].size;
        while end < count && size + segments[end].size <= segment_bytes {
            size += segments[end].size;
            end += 1;
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// The batch's record bytes, decompressed (never more than
/// [`crate::validate::STORED_INFLATE_LIMIT`]).
fn records_section(batch: &Bytes, header: &BatchHeader) -> Result<Bytes, String> {
    let body = batch.slice(HEADER_LEN..header.total_len());
    if header.compression_codec() == 0 {
        return Ok(body);
    }
    crate::validate::inflate(header.compression_codec(), &body, crate::validate::STORED_INFLATE_LIMIT)
        .map(|inflated| Bytes::from(inflated.into_owned()))
        .map_err(|e| format!("batch at offset {}: {e}", header.base_offset))
}

fn compress(codec: i16, records: Bytes, out: &mut BytesMut) -> Result<(), String> {
    let put = |buf: &mut BytesMut| -> anyhow::Result<()> {
        buf.put_slice(&records);
        Ok(())
    };
    let done = match codec {
        0 => {
            out.put_slice(&records);
            Ok(())
        }
        1 => Gzip::compress(out, put),
        2 => Snappy::compress(out, put),
        3 => Lz4::compress(out, put),
        4 => Zstd::compress(out, put),
        other => return Err(format!("unknown compression codec {other}")),
    };
    done.map_err(|e| format!("cannot recompress batch: {e}"))
}

/// The records of a stored batch's (inflated) records section, at most as many as its header
/// counts (produce validation made the two agree).
fn records<'a>(header: &BatchHeader, section: &'a Bytes) -> impl Iterator<Item = Result<RecordView<'a>, String>> {
    Records::new(section).take(usize::try_from(header.record_count).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{assign_offsets, validate_records, validate_stored_batch};
    use crate::ids::Offset;
    use crate::records::{decode_key_values, encode_producer_records, encode_records, Sequenced};
    use kafka_protocol::records::Compression;

    /// A batch of `(key, value)` records at `base_offset`, as a producer would send it and the
    /// broker would stamp it.
    fn batch(base_offset: i64, records: &[(Option<&str>, Option<&str>)], compression: Compression, ts: i64) -> Bytes {
        let owned = |s: &Option<&str>| s.map(|s| Bytes::copy_from_slice(s.as_bytes()));
        let records: Vec<_> = records.iter().map(|(k, v)| (owned(k), owned(v))).collect();
        let mut buf = encode_records(&records, ts, compression).to_vec();
        let mut validated = validate_records(&buf, 1 << 20).unwrap();
        assign_offsets(&mut buf, &mut validated, base_offset, 3, None);
        Bytes::from(buf)
    }

    fn keys_values(buf: &Bytes) -> Vec<(String, Option<String>)> {
        decode_key_values(buf)
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                (String::from_utf8(k.to_vec()).unwrap(), v.map(|v| String::from_utf8(v.to_vec()).unwrap()))
            })
            .collect()
    }

    #[test]
    fn keeps_only_the_latest_record_per_key_in_every_codec() {
        for compression in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let first = batch(10, &[(Some("a"), Some("1")), (Some("b"), Some("1")), (Some("a"), Some("2"))], compression, 1000);
            let second = batch(13, &[(Some("b"), Some("2")), (Some("c"), Some("1"))], compression, 2000);
            let mut map = OffsetMap::new(1 << 20);
            map.add_batches(&first).unwrap();
            map.add_batches(&second).unwrap();
            assert_eq!(map.len(), 3);

            let Cleaned::Rewrite(cleaned) = clean_batch(&first, &map, 0).unwrap() else {
                panic!("{compression:?}: the first batch loses a and b's old values")
            };
            let header = validate_stored_batch(&cleaned).expect("the rewritten batch is valid, CRC included");
            assert_eq!(header.record_count, 1);
            assert_eq!((header.base_offset, header.last_offset()), (10, 12), "offset range kept");
            assert_eq!(header.compression_codec(), compression as i16);
            assert_eq!(header.partition_leader_epoch, 3);
            assert_eq!(keys_values(&cleaned), vec![("a".into(), Some("2".into()))]);
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut cleaned.clone()).unwrap();
            assert_eq!(set.records[0].offset, 12, "records keep their offsets");
            assert_eq!(set.records[0].timestamp, 1002, "and their timestamps");

            assert_eq!(clean_batch(&second, &map, 0).unwrap(), Cleaned::Keep);
        }
    }

    #[test]
    fn a_batch_whose_records_are_all_superseded_is_removed() {
        let old = batch(0, &[(Some("k"), Some("1")), (Some("k"), Some("2"))], Compression::None, 0);
        let new = batch(2, &[(Some("k"), Some("3"))], Compression::None, 0);
        let mut map = OffsetMap::new(1 << 20);
        map.add_batches(&old).unwrap();
        map.add_batches(&new).unwrap();
        assert_eq!(clean_batch(&old, &map, 0).unwrap(), Cleaned::Remove);
        assert_eq!(clean_batch(&new, &map, 0).unwrap(), Cleaned::Keep);
    }

    #[test]
    fn tombstones_stay_until_delete_retention_passes() {
        let tombstone = batch(0, &[(Some("k"), None), (Some("j"), Some("1"))], Compression::None, 5_000);
        let mut map = OffsetMap::new(1 << 20);
        map.add_batches(&tombstone).unwrap();
        assert_eq!(clean_batch(&tombstone, &map, 5_000).unwrap(), Cleaned::Keep, "max timestamp 5001 is recent");
        let Cleaned::Rewrite(cleaned) = clean_batch(&tombstone, &map, 6_000).unwrap() else { panic!("expired") };
        assert_eq!(keys_values(&cleaned), vec![("j".into(), Some("1".into()))]);
    }

    #[test]
    fn an_aborted_write_neither_hides_the_committed_value_nor_survives() {
        let committed = batch(0, &[(Some("k"), Some("committed"))], Compression::None, 0);
        let mut aborted = encode_producer_records(
            &[(Some(Bytes::from("k")), Some(Bytes::from("aborted")))],
            0,
            Compression::None,
            Some(Sequenced { producer_id: 7, epoch: 0, first_seq: 0, transactional: true }),
        )
        .to_vec();
        let mut validated = validate_records(&aborted, 1 << 20).unwrap();
        assign_offsets(&mut aborted, &mut validated, 1, 3, None);
        let aborted = Bytes::from(aborted);
        let txn = crate::producer::AbortedTxn { producer_id: 7, first_offset: Offset(1), last_offset: Offset(2) };
        let mut map = OffsetMap::with_aborted(1 << 20, vec![txn]);
        map.add_batches(&committed).unwrap();
        map.add_batches(&aborted).unwrap();
        assert_eq!(clean_batch(&committed, &map, 0).unwrap(), Cleaned::Keep);
        assert_eq!(clean_batch(&aborted, &map, 0).unwrap(), Cleaned::Remove);
        let mut unaware = OffsetMap::new(1 << 20);
        unaware.add_batches(&committed).unwrap();
        unaware.add_batches(&aborted).unwrap();
        assert_eq!(clean_batch(&committed, &unaware, 0).unwrap(), Cleaned::Remove, "what the list prevents");
    }

    #[test]
    fn records_without_keys_are_dropped() {
        let mixed = batch(0, &[(None, Some("x")), (Some("k"), Some("1"))], Compression::Lz4, 0);
        let mut map = OffsetMap::new(1 << 20);
        map.add_batches(&mixed).unwrap();
        let Cleaned::Rewrite(cleaned) = clean_batch(&mixed, &map, 0).unwrap() else { panic!("keyless goes") };
        assert_eq!(keys_values(&cleaned), vec![("k".into(), Some("1".into()))]);
    }

    #[test]
    fn corrupt_record_bytes_are_an_error_not_a_panic() {
        let good = batch(0, &[(Some("key"), Some("value"))], Compression::None, 0);
        for cut in HEADER_LEN..good.len() {
            let mut bad = good[..cut].to_vec();
            let len = (bad.len() - crate::batch::LOG_OVERHEAD) as i32;
            bad[8..12].copy_from_slice(&len.to_be_bytes());
            let bad = Bytes::from(bad);
            let _ = OffsetMap::new(1 << 20).add_batches(&bad);
            let _ = clean_batch(&bad, &OffsetMap::new(1 << 20), 0);
        }
    }

    #[test]
    fn the_map_reports_full_at_its_key_byte_bound() {
        let mut map = OffsetMap::new(4);
        map.add_batches(&batch(0, &[(Some("ab"), Some("1")), (Some("ab"), Some("2"))], Compression::None, 0)).unwrap();
        assert!(!map.is_full(), "a repeated key is counted once");
        map.add_batches(&batch(2, &[(Some("cd"), Some("1"))], Compression::None, 0)).unwrap();
        assert!(map.is_full());
    }

    fn segment(base: i64, size: u64, max_timestamp: i64) -> Segment {
        let mut s = Segment::new(base);
        s.size = size;
        s.max_timestamp = max_timestamp;
        s
    }

    #[test]
    fn cleaning_stops_at_the_active_segment_and_the_compaction_lag() {
        let segments = [segment(0, 10, 100), segment(5, 10, 200), segment(9, 10, 900), segment(12, 0, -1)];
        assert_eq!(cleanable_segments(&segments, 1000, 0), 3, "never the active one");
        assert_eq!(cleanable_segments(&segments, 1000, 500), 2, "segment 9 is too recent");
        assert_eq!(cleanable_segments(&segments, 1000, 950), 0);
    }

    #[test]
    fn runs_stay_within_segment_bytes() {
        let segments: Vec<Segment> = [40, 30, 50, 10, 10, 90, 5].iter().enumerate().map(|(i, &size)| segment(i as i64, size, 0)).collect();
        assert_eq!(group_by_size(&segments, 6, 100), vec![0..2, 2..5, 5..6]);
        assert_eq!(group_by_size(&segments, 0, 100), Vec::<std::ops::Range<usize>>::new());
    }
}
