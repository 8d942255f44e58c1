//! The layout of one partition's segmented log, without the files.
//!
//! [`Log`] knows every segment's base offset, size, next offset and sparse indexes. The driver
//! asks it where an append goes ([`Log::needs_roll`], [`Log::roll`], [`Log::append`]), where a
//! read starts ([`Log::locate`], [`Log::locate_timestamp`]) and which segments retention drops
//! ([`Log::expired_segments`]), then does the file IO itself. [`recover_segment`] rebuilds a
//! segment from its bytes after an unclean shutdown, stopping at the first invalid batch.
//!
//! Ordering rules for the driver:
//! - call [`Log::roll`] (and create the new file) before appending when `needs_roll` says so;
//!   seal the old segment's file (fsync, write its index files) before deleting or trusting it;
//! - call [`Log::append`] only after the bytes are written at the position it returned;
//! - delete files only for bases returned by [`Log::delete_oldest`].

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::error::ErrorCode;

/// Per-topic log settings, named after Kafka's topic configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// `-1` keeps data forever.
    pub retention_ms: i64,
    /// `-1` means no size limit.
    pub retention_bytes: i64,
    pub index_interval_bytes: u64,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms` / `after`: how far a CreateTime record's timestamp
    /// may lie before or after the broker's clock.
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// `cleanup.policy` contains `delete`: retention applies.
    pub delete: bool,
    /// `cleanup.policy` contains `compact`: the log cleaner keeps the latest record per key.
    pub compact: bool,
    /// How long a tombstone outlives the records it deletes (`delete.retention.ms`).
    pub delete_retention_ms: i64,
    /// Records younger than this are not compacted (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio` in thousandths, so the config stays `Eq`.
    pub min_cleanable_dirty_permille: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: crate::validate::DEFAULT_TIMESTAMP_AFTER_MAX_MS,
            delete: true,
            compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_permille: 500,
        }
    }
}

/// Sparse map from offset to byte position, one entry every `index.interval.bytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(i64, u64)>,
}

impl OffsetIndex {
    /// Position of the last indexed batch starting at or before `offset`.
    pub fn lookup(&self, offset: i64) -> Option<u64> {
        let idx = self.entries.partition_point(|&(o, _)| o <= offset);
        idx.checked_sub(1).map(|i| self.entries[i].1)
    }

    /// Kafka's on-disk format: 4-byte offset relative to the segment base, 4-byte position.
    pub fn encode(&self, base_offset: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8);
        for &(offset, position) in &self.entries {
            out.extend_from_slice(&((offset - base_offset) as u32).to_be_bytes());
            out.extend_from_slice(&(position as u32).to_be_bytes());
        }
        out
    }

    /// `None` for an index that is not one: its segment is then rescanned. The base offset
    /// comes from the file's name, so an entry may lie past `i64::MAX`.
    pub fn decode(base_offset: i64, bytes: &[u8]) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(8) {
            return None;
        }
        let entries: Vec<(i64, u64)> = bytes
            .chunks_exact(8)
            .map(|c| {
                let rel = u32::from_be_bytes(c[0..4].try_into().expect("4 bytes"));
                let pos = u32::from_be_bytes(c[4..8].try_into().expect("4 bytes"));
                Some((base_offset.checked_add(i64::from(rel))?, u64::from(pos)))
            })
            .collect::<Option<_>>()?;
        let sorted = entries.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        sorted.then_some(OffsetIndex { entries })
    }
}

/// Sparse map from the largest timestamp seen so far to the offset of the batch holding it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, i64)>,
}

impl TimeIndex {
    /// Offset to scan from for the first record with timestamp >= `timestamp`: the last entry
    /// whose timestamp is below it (records before that entry all have smaller timestamps).
    pub fn lookup(&self, timestamp: i64) -> Option<i64> {
        let idx = self.entries.partition_point(|&(t, _)| t < timestamp);
        idx.checked_sub(1).map(|i| self.entries[i].1)
    }

    fn push(&mut self, timestamp: i64, offset: i64) {
        if self.entries.last().is_none_or(|&(t, _)| timestamp > t) {
            self.entries.push((timestamp, offset));
        }
    }

    /// Kafka's on-disk format: 8-byte timestamp, 4-byte relative offset.
    pub fn encode(&self, base_offset: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for &(timestamp, offset) in &self.entries {
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.extend_from_slice(&((offset - base_offset) as u32).to_be_bytes());
        }
        out
    }

    /// As [`OffsetIndex::decode`].
    pub fn decode(base_offset: i64, bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(12) {
            return None;
        }
        let entries: Vec<(i64, i64)> = bytes
            .chunks_exact(12)
            .map(|c| {
                let ts = i64::from_be_bytes(c[0..8].try_into().expect("8 bytes"));
                let rel = u32::from_be_bytes(c[8..12].try_into().expect("4 bytes"));
                Some((ts, base_offset.checked_add(i64::from(rel))?))
            })
            .collect::<Option<_>>()?;
        let sorted = entries.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        sorted.then_some(TimeIndex { entries })
    }
}

/// One segment: a `<base offset>.log` file and its indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub base_offset: i64,
    pub size: u64,
    pub next_offset: i64,
    /// Largest batch max timestamp in the segment, -1 when empty.
    pub max_timestamp: i64,
    /// Wall time of the first append, the clock `segment.ms` runs on.
    pub first_append_ms: Option<i64>,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index: u64,
}

impl Segment {
    pub fn new(base_offset: i64) -> Segment {
        Segment {
            base_offset,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            first_append_ms: None,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
        }
    }

    /// A sealed segment rebuilt from its index files instead of a rescan. `next_offset` is the
    /// following segment's base. The time index's last entry carries the segment's max
    /// timestamp because [`Segment::seal`] writes one.
    pub fn from_indexes(
        base_offset: i64,
        size: u64,
        next_offset: i64,
        offset_index: &[u8],
        time_index: &[u8],
    ) -> Option<Segment> {
        let offset_index = OffsetIndex::decode(base_offset, offset_index)?;
        let time_index = TimeIndex::decode(base_offset, time_index)?;
        let max_timestamp = time_index.entries.last().map_or(-1, |&(t, _)| t);
        let in_range = offset_index.entries.iter().all(|&(o, p)| o < next_offset && p < size);
        in_range.then_some(Segment {
            base_offset,
            size,
            next_offset,
            max_timestamp,
            first_append_ms: None,
            offset_index,
            time_index,
            bytes_since_index: 0,
        })
    }

    pub fn add_batch(&mut self, position: u64, header: &BatchHeader, index_interval_bytes: u64) {
        if self.size == 0 || self.bytes_since_index >= index_interval_bytes {
            self.offset_index.entries.push((header.base_offset, position));
            self.time_index.push(self.max_timestamp.max(header.max_timestamp), header.base_offset);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_len() as u64;
        self.size = position + header.total_len() as u64;
        self.next_offset = header.next_offset();
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
    }

    /// Makes the time index end with the max timestamp, so a reload recovers it.
    pub fn seal(&mut self) {
        let last_offset = self.next_offset - 1;
        if self.max_timestamp >= 0 {
            self.time_index.push(self.max_timestamp, last_offset.max(self.base_offset));
        }
    }
}

/// Where a read starts: the segment, and a byte position at or before the wanted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStart {
    pub segment_base: i64,
    pub position: u64,
    pub segment_size: u64,
}

/// Where an append lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAt {
    pub segment_base: i64,
    pub position: u64,
}

/// A partition's segments in offset order; the last one is active.
#[derive(Debug, Clone)]
pub struct Log {
    segments: Vec<Segment>,
    log_start_offset: i64,
    pub config: LogConfig,
}

impl Log {
    /// A log over recovered segments (sorted by base offset); empty means a new partition.
    pub fn new(config: LogConfig, mut segments: Vec<Segment>, log_start_offset: i64) -> Log {
        if segments.is_empty() {
            segments.push(Segment::new(log_start_offset.max(0)));
        }
        assert!(
            segments.windows(2).all(|w| w[0].next_offset == w[1].base_offset),
            "segments must be contiguous: {:?}",
            segments.iter().map(|s| (s.base_offset, s.next_offset)).collect::<Vec<_>>()
        );
        let log_start_offset = log_start_offset.max(segments[0].base_offset);
        Log { segments, log_start_offset, config }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has an active segment")
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Kafka rolls when the active segment would pass `segment.bytes`, or has been open for
    /// `segment.ms` since its first append. An empty segment never rolls.
    pub fn needs_roll(&self, now_ms: i64, incoming_bytes: u64) -> bool {
        self.needs_roll_after(now_ms, 0, incoming_bytes)
    }

    /// [`Log::needs_roll`] once `written` more bytes are in the active segment: appends that
    /// go to disk in one write are placed before any of them is recorded.
    pub fn needs_roll_after(&self, now_ms: i64, written: u64, incoming_bytes: u64) -> bool {
        let active = self.active();
        let size = active.size + written;
        if size == 0 {
            return false;
        }
        let too_big = size + incoming_bytes > self.config.segment_bytes;
        let too_old = active.first_append_ms.is_some_and(|t| now_ms - t >= self.config.segment_ms);
        too_big || too_old || size + incoming_bytes > u64::from(u32::MAX)
    }

    /// Seals the active segment and opens a new one at the log end offset; returns its base.
    pub fn roll(&mut self) -> i64 {
        let base = self.log_end_offset();
        self.segments.last_mut().expect("active").seal();
        self.segments.push(Segment::new(base));
        base
    }

    /// Where the next append goes (the end of the active segment).
    pub fn append_position(&self) -> AppendAt {
        let active = self.active();
        AppendAt { segment_base: active.base_offset, position: active.size }
    }

    /// Records batches already written at `at` (their offsets assigned from the log end).
    pub fn append(&mut self, now_ms: i64, at: AppendAt, batches: &[(usize, BatchHeader)]) {
        let interval = self.config.index_interval_bytes;
        let active = self.segments.last_mut().expect("active");
        assert_eq!((active.base_offset, active.size), (at.segment_base, at.position));
        active.first_append_ms.get_or_insert(now_ms);
        for (relative, header) in batches {
            assert_eq!(header.base_offset, active.next_offset, "offsets must be contiguous");
            active.add_batch(at.position + *relative as u64, header, interval);
        }
    }

    /// Start of a read at `offset`. `Ok(None)` when `offset` is the log end (nothing yet).
    pub fn locate(&self, offset: i64) -> Result<Option<ReadStart>, ErrorCode> {
        if offset < self.log_start_offset || offset > self.log_end_offset() {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        if offset == self.log_end_offset() {
            return Ok(None);
        }
        let idx = self.segments.partition_point(|s| s.base_offset <= offset) - 1;
        let segment = &self.segments[idx];
        Ok(Some(ReadStart {
            segment_base: segment.base_offset,
            position: segment.offset_index.lookup(offset).unwrap_or(0),
            segment_size: segment.size,
        }))
    }

    /// Start of the scan for the first record with timestamp >= `timestamp`: the first segment
    /// whose max timestamp reaches it. `None` when no record does.
    pub fn locate_timestamp(&self, timestamp: i64) -> Option<ReadStart> {
        let segment = self.segments.iter().find(|s| s.max_timestamp >= timestamp)?;
        let from_offset = segment.time_index.lookup(timestamp).unwrap_or(segment.base_offset);
        Some(ReadStart {
            segment_base: segment.base_offset,
            position: segment.offset_index.lookup(from_offset).unwrap_or(0),
            segment_size: segment.size,
        })
    }

    /// How many of the oldest segments retention removes. The active segment always stays.
    pub fn expired_segments(&self, now_ms: i64) -> usize {
        if !self.config.delete {
            return 0;
        }
        let sealed = &self.segments[..self.segments.len() - 1];
        let by_time = if self.config.retention_ms < 0 {
            0
        } else {
            let cutoff = now_ms - self.config.retention_ms;
            sealed.iter().take_while(|s| s.max_timestamp < cutoff).count()
        };
        let by_size = if self.config.retention_bytes < 0 {
            0
        } else {
            let mut excess = self.size_bytes() as i64 - self.config.retention_bytes;
            sealed
                .iter()
                .take_while(|s| {
                    let drop = excess >= s.size as i64;
                    excess -= s.size as i64;
                    drop
                })
                .count()
        };
        by_time.max(by_size)
    }

    /// Replaces the sealed segments `run` (indexes) by `cleaned`, their compacted rewrite, which
    /// starts at the run's first base offset and spans its whole offset range.
    pub fn replace_segments(&mut self, run: std::ops::Range<usize>, mut cleaned: Segment) -> Vec<i64> {
        assert!(run.end < self.segments.len() && !run.is_empty(), "only sealed segments are replaced: {run:?}");
        let first = &self.segments[run.start];
        let last = &self.segments[run.end - 1];
        assert_eq!(cleaned.base_offset, first.base_offset, "a cleaned segment keeps its base offset");
        assert!(cleaned.next_offset <= last.next_offset, "cleaning never adds offsets");
        cleaned.next_offset = last.next_offset;
        self.segments.splice(run, [cleaned]).skip(1).map(|s| s.base_offset).collect()
    }

    /// How many of the oldest segments end at or below `offset` (the active one never counts):
    /// what retention may delete without passing a replica's high watermark.
    pub fn segments_ending_by(&self, offset: i64) -> usize {
        self.segments[..self.segments.len() - 1].iter().take_while(|s| s.next_offset <= offset).count()
    }

    /// Moves the log start up to `offset` (a replicated partition following its leader's log
    /// start, or restoring its recorded one): segments wholly below it go and their base
    /// offsets are returned; reads below it are out of range. Never past the log end.
    pub fn advance_log_start(&mut self, offset: i64) -> Vec<i64> {
        let offset = offset.min(self.log_end_offset());
        if offset <= self.log_start_offset {
            return Vec::new();
        }
        let count = self.segments_ending_by(offset);
        let removed: Vec<i64> = self.segments.drain(..count).map(|s| s.base_offset).collect();
        self.log_start_offset = offset;
        removed
    }

    /// Drops the `count` oldest segments and returns their base offsets.
    pub fn delete_oldest(&mut self, count: usize) -> Vec<i64> {
        assert!(count < self.segments.len(), "the active segment is never deleted");
        let removed: Vec<i64> = self.segments.drain(..count).map(|s| s.base_offset).collect();
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset);
        removed
    }
}

/// Outcome of rescanning a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub segment: Segment,
    /// Bytes past this are invalid and must be truncated.
    pub valid_len: u64,
    /// Why the scan stopped early, if it did.
    pub stop_reason: Option<String>,
}

/// Rebuilds a segment from its bytes, validating every batch (CRC included) and requiring
/// increasing offsets from `base_offset` (with gaps where compaction removed batches). Stops at the first invalid or torn batch, which is
/// where an unclean shutdown left the tail.
pub fn recover_segment(base_offset: i64, bytes: &[u8], index_interval_bytes: u64) -> Recovered {
    let mut segment = Segment::new(base_offset);
    let step = recover_chunk(&mut segment, bytes, index_interval_bytes, true);
    Recovered { segment, valid_len: step.consumed as u64, stop_reason: step.stop_reason }
}

/// Progress of [`recover_chunk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryStep {
    /// Bytes of `chunk` holding whole valid batches, now added to the segment.
    pub consumed: usize,
    /// Set when the scan hit an invalid batch; the segment ends at `consumed`.
    pub stop_reason: Option<String>,
}

/// Incremental form of [`recover_segment`] so a driver can scan a large file in chunks. `chunk`
/// starts at byte `segment.size` of the file. A batch cut off by the end of the chunk is left
/// for the next call, unless `at_eof`, where it is a torn write.
pub fn recover_chunk(
    segment: &mut Segment,
    chunk: &[u8],
    index_interval_bytes: u64,
    at_eof: bool,
) -> RecoveryStep {
    let start = segment.size;
    let mut position = 0usize;
    let mut stop_reason = None;
    while position < chunk.len() {
        let rest = &chunk[position..];
        if !at_eof {
            let complete = BatchHeader::parse(rest).is_ok_and(|h| h.total_len() <= rest.len());
            if rest.len() < HEADER_LEN || (!complete && BatchHeader::parse(rest).is_ok()) {
                break;
            }
        }
        match batch::validate_stored_batch(rest) {
            // The base offset lies outside the CRC: a corrupted one can put the batch's offsets
            // past i64::MAX.
            Ok(header) if header.base_offset.checked_add(i64::from(header.last_offset_delta) + 1).is_none() => {
                stop_reason = Some(format!(
                    "batch at byte {} has base offset {}, its offsets pass i64::MAX",
                    start + position as u64,
                    header.base_offset
                ));
                break;
            }
            Ok(header) if header.base_offset >= segment.next_offset => {
                segment.add_batch(start + position as u64, &header, index_interval_bytes);
                position += header.total_len();
            }
            Ok(header) => {
                stop_reason = Some(format!(
                    "batch at byte {} has base offset {}, expected at least {}",
                    start + position as u64,
                    header.base_offset,
                    segment.next_offset
                ));
                break;
            }
            Err(err) => {
                stop_reason = Some(format!("invalid batch at byte {}: {err}", start + position as u64));
                break;
            }
        }
    }
    RecoveryStep { consumed: position, stop_reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::encode_batch;
    use crate::batch::{assign_offsets, validate_records};
    use kafka_protocol::records::Compression;

    /// Appends `batches` batches of `per_batch` records to `log` and to `file`, like the driver.
    fn append(log: &mut Log, file: &mut Vec<u8>, now_ms: i64, batches: usize, per_batch: i32) {
        for _ in 0..batches {
            let mut buf = encode_batch(per_batch, now_ms, Compression::None);
            let mut records = validate_records(&buf, 1 << 20).expect("valid");
            if log.needs_roll(now_ms, buf.len() as u64) {
                log.roll();
                file.clear();
            }
            assign_offsets(&mut buf, &mut records, log.log_end_offset(), 0, None);
            let at = log.append_position();
            assert_eq!(at.position, file.len() as u64);
            file.extend_from_slice(&buf);
            log.append(now_ms, at, &records.batches);
        }
    }

    fn small_config() -> LogConfig {
        LogConfig { segment_bytes: 1000, index_interval_bytes: 200, ..LogConfig::default() }
    }

    #[test]
    fn offsets_are_contiguous_across_rolls() {
        let mut log = Log::new(small_config(), vec![], 0);
        let mut file = Vec::new();
        append(&mut log, &mut file, 0, 40, 5);
        assert_eq!(log.log_end_offset(), 200);
        assert!(log.segments().len() > 3, "segment.bytes=1000 must roll");
        for pair in log.segments().windows(2) {
            assert_eq!(pair[0].next_offset, pair[1].base_offset);
            assert!(pair[0].size <= 1000);
        }
    }

    #[test]
    fn locate_finds_a_position_at_or_before_the_batch() {
        let mut log = Log::new(LogConfig { index_interval_bytes: 200, ..LogConfig::default() }, vec![], 0);
        let mut file = Vec::new();
        append(&mut log, &mut file, 0, 30, 4);
        for offset in [0, 1, 37, 64, 119] {
            let start = log.locate(offset).expect("in range").expect("not at end");
            let found = batch::scan_headers(&file[start.position as usize..])
                .find(|(_, h)| h.last_offset() >= offset)
                .expect("batch holding offset");
            assert!(found.1.base_offset <= offset && offset <= found.1.last_offset());
        }
        assert_eq!(log.locate(120), Ok(None));
        assert_eq!(log.locate(121), Err(ErrorCode::OffsetOutOfRange));
        assert_eq!(log.locate(-1), Err(ErrorCode::OffsetOutOfRange));
    }

    #[test]
    fn time_lookup_never_skips_past_the_first_match() {
        let mut log = Log::new(small_config(), vec![], 0);
        let mut file = Vec::new();
        for t in 0..20 {
            append(&mut log, &mut file, t * 100, 1, 3);
        }
        // Batch t holds timestamps t*100 .. t*100+2 at offsets 3t .. 3t+2.
        let start = log.locate_timestamp(1_001).expect("exists");
        let segment = log.segments().iter().find(|s| s.base_offset == start.segment_base).unwrap();
        assert!(segment.base_offset <= 30 && segment.next_offset > 30);
        assert!(log.locate_timestamp(1_903).is_none());
        assert_eq!(log.locate_timestamp(-5).unwrap().segment_base, 0);
    }

    #[test]
    fn retention_by_size_and_time_keeps_the_active_segment() {
        let mut log = Log::new(small_config(), vec![], 0);
        let mut file = Vec::new();
        for t in 0..40 {
            append(&mut log, &mut file, t, 1, 5);
        }
        let segments = log.segments().len();
        log.config.retention_ms = 1;
        assert_eq!(log.expired_segments(10_000), segments - 1);
        log.config.retention_ms = -1;
        log.config.retention_bytes = log.active().size as i64;
        assert_eq!(log.expired_segments(10_000), segments - 1);
        log.config.retention_bytes = -1;
        assert_eq!(log.expired_segments(10_000), 0);
        let removed = log.delete_oldest(2);
        assert_eq!(removed.len(), 2);
        assert_eq!(log.log_start_offset(), log.segments()[0].base_offset);
        assert_eq!(log.locate(0), Err(ErrorCode::OffsetOutOfRange));
    }

    #[test]
    fn log_start_advances_within_segments_and_drops_those_wholly_below() {
        let mut log = Log::new(small_config(), vec![], 0);
        let mut file = Vec::new();
        for t in 0..40 {
            append(&mut log, &mut file, t, 1, 5);
        }
        let bases: Vec<i64> = log.segments().iter().map(|s| s.base_offset).collect();
        assert!(bases.len() >= 3, "{bases:?}");
        assert_eq!(log.segments_ending_by(bases[1]), 1);
        assert_eq!(log.segments_ending_by(bases[1] - 1), 0);
        assert_eq!(log.segments_ending_by(i64::MAX), bases.len() - 1, "never the active segment");
        // Inside the second segment: the first goes, the start is exact.
        let removed = log.advance_log_start(bases[1] + 1);
        assert_eq!(removed, vec![bases[0]]);
        assert_eq!(log.log_start_offset(), bases[1] + 1);
        assert_eq!(log.locate(bases[1]), Err(ErrorCode::OffsetOutOfRange));
        assert!(log.locate(bases[1] + 1).is_ok());
        assert!(log.advance_log_start(bases[1]).is_empty(), "never backwards");
        let end = log.log_end_offset();
        log.advance_log_start(i64::MAX);
        assert_eq!(log.log_start_offset(), end);
        assert_eq!(log.segments().len(), 1);
    }

    #[test]
    fn segment_ms_rolls_an_old_segment() {
        let mut log = Log::new(LogConfig { segment_ms: 1000, ..LogConfig::default() }, vec![], 0);
        let mut file = Vec::new();
        append(&mut log, &mut file, 0, 1, 1);
        assert!(!log.needs_roll(999, 10));
        assert!(log.needs_roll(1000, 10));
    }

    #[test]
    fn recovery_truncates_a_torn_or_corrupt_tail() {
        let mut log = Log::new(LogConfig::default(), vec![], 0);
        let mut file = Vec::new();
        append(&mut log, &mut file, 0, 10, 3);
        let full = recover_segment(0, &file, 4096);
        assert_eq!(full.valid_len, file.len() as u64);
        assert_eq!(full.segment.next_offset, 30);
        assert!(full.stop_reason.is_none());

        let batch_len = file.len() / 10;
        let torn = recover_segment(0, &file[..file.len() - 7], 4096);
        assert_eq!(torn.valid_len, (9 * batch_len) as u64);
        assert_eq!(torn.segment.next_offset, 27);

        let mut corrupt = file.clone();
        corrupt[4 * batch_len + 70] ^= 0xff;
        let cut = recover_segment(0, &corrupt, 4096);
        assert_eq!(cut.valid_len, (4 * batch_len) as u64);
        assert!(cut.stop_reason.unwrap().contains("CRC"));

        let mut zeros = file.clone();
        zeros.extend(std::iter::repeat_n(0u8, 100));
        assert_eq!(recover_segment(0, &zeros, 4096).valid_len, file.len() as u64);
    }

    #[test]
    fn chunked_recovery_matches_whole_file_recovery() {
        let mut log = Log::new(LogConfig::default(), vec![], 0);
        let mut file = Vec::new();
        append(&mut log, &mut file, 0, 25, 3);
        file.truncate(file.len() - 5);
        let whole = recover_segment(0, &file, 4096);
        for chunk_len in [61, 100, 333, 4096] {
            let mut segment = Segment::new(0);
            let (mut at, mut len) = (0, chunk_len);
            // The driver's loop: grow the chunk when a batch does not fit in it.
            loop {
                let end = (at + len).min(file.len());
                let at_eof = end == file.len();
                let step = recover_chunk(&mut segment, &file[at..end], 4096, at_eof);
                at += step.consumed;
                if step.stop_reason.is_some() || at_eof {
                    break;
                }
                if step.consumed == 0 {
                    len *= 2;
                }
            }
            assert_eq!(segment, whole.segment, "{chunk_len}-byte chunks");
            assert_eq!(at as u64, whole.valid_len);
        }
    }

    #[test]
    fn sealed_segment_reloads_from_its_index_files() {
        let mut log = Log::new(small_config(), vec![], 0);
        let mut file = Vec::new();
        for t in 0..10 {
            append(&mut log, &mut file, 500 + t, 1, 5);
        }
        log.roll();
        let sealed = &log.segments()[log.segments().len() - 2];
        let reloaded = Segment::from_indexes(
            sealed.base_offset,
            sealed.size,
            sealed.next_offset,
            &sealed.offset_index.encode(sealed.base_offset),
            &sealed.time_index.encode(sealed.base_offset),
        )
        .expect("valid indexes");
        assert_eq!(reloaded.max_timestamp, sealed.max_timestamp);
        assert_eq!(reloaded.offset_index, sealed.offset_index);
        assert!(Segment::from_indexes(0, 10, 5, &[1, 2, 3], &[]).is_none());
    }

    // Found by fuzzing recovery (fuzz/, target recovery): a corrupted base offset, outside
    // the CRC, overflowed the offset arithmetic, and the release profile's overflow checks
    // abort the broker at start-up.
    #[test]
    fn recovery_stops_at_a_batch_whose_offsets_pass_i64_max() {
        let mut log = Log::new(LogConfig::default(), vec![], 0);
        let mut file = Vec::new();
        append(&mut log, &mut file, 0, 2, 3);
        let batch_len = file.len() / 2;
        file[batch_len..batch_len + 8].copy_from_slice(&(i64::MAX - 1).to_be_bytes());
        let cut = recover_segment(0, &file, 4096);
        assert_eq!(cut.valid_len, batch_len as u64);
        assert!(cut.stop_reason.unwrap().contains("passes the largest offset"));
    }

    // Found by fuzzing recovery: the base offset comes from the segment file's name.
    #[test]
    fn index_entries_past_i64_max_make_an_invalid_index_not_a_crash() {
        assert_eq!(OffsetIndex::decode(i64::MAX - 1, &[0, 0, 0, 5, 0, 0, 0, 0]), None);
        assert_eq!(TimeIndex::decode(i64::MAX, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert!(Segment::from_indexes(i64::MAX - 1, 100, i64::MAX, &[0, 0, 0, 5, 0, 0, 0, 0], &[]).is_none());
        assert!(OffsetIndex::decode(i64::MAX - 5, &[0, 0, 0, 5, 0, 0, 0, 0]).is_some());
    }

    #[test]
    fn recovery_accepts_the_offset_gaps_compaction_leaves() {
        let mut log = Log::new(LogConfig::default(), vec![], 0);
        let mut file = Vec::new();
        append(&mut log, &mut file, 0, 6, 3);
        // Drop the second and fifth batch, as a cleaning pass that superseded them would.
        let batch_len = file.len() / 6;
        let kept: Vec<u8> = file
            .chunks(batch_len)
            .enumerate()
            .filter(|(i, _)| *i != 1 && *i != 4)
            .flat_map(|(_, b)| b.to_vec())
            .collect();
        let recovered = recover_segment(0, &kept, 4096);
        assert!(recovered.stop_reason.is_none(), "{:?}", recovered.stop_reason);
        assert_eq!(recovered.valid_len, kept.len() as u64);
        assert_eq!(recovered.segment.next_offset, 18);

        // An offset going backwards is still corruption.
        let mut backwards = file[..2 * batch_len].to_vec();
        backwards.extend_from_slice(&file[..batch_len]);
        let cut = recover_segment(0, &backwards, 4096);
        assert_eq!(cut.valid_len, (2 * batch_len) as u64);
    }

    #[test]
    fn a_cleaned_segment_replaces_its_run_and_keeps_the_offset_range() {
        let mut log = Log::new(small_config(), vec![], 0);
        let mut file = Vec::new();
        for t in 0..40 {
            append(&mut log, &mut file, t, 1, 5);
        }
        let before: Vec<(i64, i64)> = log.segments().iter().map(|s| (s.base_offset, s.next_offset)).collect();
        assert!(before.len() >= 4);
        let mut cleaned = Segment::new(before[0].0);
        cleaned.next_offset = before[0].0 + 2;
        let removed = log.replace_segments(0..3, cleaned);
        assert_eq!(removed, vec![before[1].0, before[2].0]);
        assert_eq!(log.segments()[0].next_offset, before[2].1);
        assert_eq!(log.segments()[1].base_offset, before[3].0);
        assert_eq!(log.log_start_offset(), 0);
        assert_eq!(log.log_end_offset(), before.last().unwrap().1);
    }
}
