//! A partition's segment files on io_uring (direct IO by default, `file::SegmentFile`), driven
//! by `core::log::Log`, and the per-core group commit that makes acknowledged data durable.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::BufferedFile;
use glommio::sync::Semaphore;
use odradek_core::batch::{self, BatchHeader};
use odradek_core::log::{recover_chunk, AppendAt, Log, LogConfig, ReadStart, Segment};
use odradek_core::producer::ProducerStates;
use odradek_core::records;
use tracing::{error, info, warn};

mod clean;
mod file;
mod log_dirs;
pub use clean::Stable;
pub use file::{SegmentFile, WriteMode};
pub use log_dirs::LogDirs;

/// Exit status of a broker that stopped because its data directory failed.
pub const LOG_DIR_FAILED_EXIT: i32 = 3;

/// A write, truncation or fsync failed in the last online log directory (or in the metadata's,
/// the first of `log.dirs`): Kafka halts a broker whose every log directory failed. Going on is not an option: the
/// state machines' view of the log would no longer match the disk, and after a failed fsync
/// the kernel may drop the dirty pages, so a later fsync could succeed without them and count
/// them durable. Nothing the failed operation covered has been acknowledged (acks wait for
/// the completion that now never comes), so clients see their connections close, not an
/// acknowledgement; the next start recovers from what the files hold.
pub fn log_dir_failed(what: &str, path: &Path, e: &io::Error) -> ! {
    error!(
        path = %path.display(),
        error = %e,
        "{what} failed in the data directory; the log directory is offline and the broker stops \
         (exit status {LOG_DIR_FAILED_EXIT}); free the disk or fix it, then start again"
    );
    std::process::exit(LOG_DIR_FAILED_EXIT)
}

const RECOVERY_CHUNK_BYTES: usize = 8 << 20;
const TIMESTAMP_SCAN_CHUNK_BYTES: u64 = 1 << 20;

/// Runs file-system calls that io_uring does not cover (directory listings, small whole-file
/// reads, recursive removal) on glommio's blocking thread pool, so the reactor keeps serving.
pub async fn off_reactor<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

fn segment_path(dir: &Path, base_offset: i64, extension: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{extension}"))
}

/// One partition's log on disk. Appends are serialized by `append_permit`; reads run freely.
pub struct PartitionStore {
    pub topic: String,
    pub partition: i32,
    dir: PathBuf,
    log: RefCell<Log>,
    files: RefCell<BTreeMap<i64, Rc<SegmentFile>>>,
    mode: WriteMode,
    /// Offsets below this are durable (fsynced, or written in no-fsync mode) and visible to
    /// consumers. On a single node this is the high watermark.
    high_watermark: Cell<i64>,
    append_permit: Semaphore,
    /// Offsets from here on have not been through a cleaning pass (compacted topics). Starts at
    /// the log start after a restart, so the first pass looks at everything once.
    first_dirty_offset: Cell<i64>,
    /// A cleaning pass is rewriting sealed segments: retention must not delete them meanwhile.
    cleaning: Cell<bool>,
    /// The base of the segment the last append rolled to, until the driver takes it to write
    /// the producer snapshot as of that offset.
    rolled: Cell<Option<i64>>,
    recent: RefCell<Recent>,
}

/// Bytes of a partition's newest appends kept for reads of the log's tail.
const RECENT_BYTES: usize = 4 << 20;

/// The active segment's newest appends, as written. With direct IO there is no page cache:
/// without this, every follower fetch and every consumer keeping up read back from the device
/// what was written a moment before (in a 3-node run, 2 bytes read for every byte produced).
/// Served as slices of the appended buffers, a tail read copies nothing.
#[derive(Default)]
struct Recent {
    segment_base: i64,
    /// `(position in the segment, bytes)`, contiguous.
    parts: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Recent {
    fn clear(&mut self) {
        self.parts.clear();
        self.bytes = 0;
    }

    fn end(&self) -> Option<u64> {
        self.parts.back().map(|(at, b)| at + b.len() as u64)
    }

    fn push(&mut self, segment_base: i64, position: u64, bytes: Bytes) {
        if segment_base != self.segment_base || self.end().is_some_and(|end| end != position) {
            self.clear();
            self.segment_base = segment_base;
        }
        self.bytes += bytes.len();
        self.parts.push_back((position, bytes));
        while self.bytes > RECENT_BYTES && self.parts.len() > 1 {
            let (_, gone) = self.parts.pop_front().expect("more than one");
            self.bytes -= gone.len();
        }
    }

    /// `len` bytes at `position` of segment `segment_base`, if all of them are here.
    fn read(&self, segment_base: i64, position: u64, len: usize) -> Option<Bytes> {
        let start = self.parts.front()?.0;
        let end = position + len as u64;
        if segment_base != self.segment_base || position < start || end > self.end()? {
            return None;
        }
        let first = self.parts.partition_point(|(at, b)| at + b.len() as u64 <= position);
        let (at, bytes) = &self.parts[first];
        if end <= at + bytes.len() as u64 {
            return Some(bytes.slice((position - at) as usize..(end - at) as usize));
        }
        let mut out = bytes::BytesMut::with_capacity(len);
        for (at, bytes) in self.parts.range(first..) {
            let from = position.max(*at) - at;
            let to = (end - at).min(bytes.len() as u64);
            out.extend_from_slice(&bytes[from as usize..to as usize]);
            if at + bytes.len() as u64 >= end {
                break;
            }
        }
        Some(out.freeze())
    }
}

impl PartitionStore {
    /// Opens (or creates) the partition directory and recovers its segments: sealed segments
    /// from their index files when those are sound, the rest by rescanning and truncating at
    /// the first invalid batch.
    pub async fn open(
        data_dir: &Path,
        topic: &str,
        partition: i32,
        config: LogConfig,
        mode: WriteMode,
    ) -> io::Result<PartitionStore> {
        let dir = data_dir.join(format!("{topic}-{partition}"));
        let created = dir.clone();
        off_reactor(move || std::fs::create_dir_all(created)).await?;
        clean::finish_interrupted_swaps(&dir, topic, partition, config.index_interval_bytes, mode).await?;
        let listed = dir.clone();
        let mut bases: Vec<i64> = off_reactor(move || -> io::Result<Vec<i64>> {
            Ok(std::fs::read_dir(listed)?
                .filter_map(|entry| {
                    let name = entry.ok()?.file_name().into_string().ok()?;
                    name.strip_suffix(".log")?.parse().ok()
                })
                .collect())
        })
        .await?;
        bases.sort_unstable();
        let mut segments: Vec<Segment> = Vec::new();
        let mut files = BTreeMap::new();
        for (i, &base) in bases.iter().enumerate() {
            let path = segment_path(&dir, base, "log");
            let expected_base = segments.last().map_or(base, |s| s.next_offset);
            if base < expected_base {
                warn!(%topic, partition, base, expected_base, "segment overlaps the one before; removing it");
                remove_segment_files(&dir, base).await;
                continue;
            }
            if let Some(previous) = segments.last_mut() {
                // A rescanned sealed segment ends at its last batch; compaction may have removed
                // the batches after it, but its offset range runs to the next segment.
                previous.next_offset = base;
            }
            let file = SegmentFile::open(&path, mode).await?;
            let size = file.file_size().await?;
            let next_base = bases.get(i + 1).copied();
            let from_index = match next_base {
                Some(next) => load_sealed(&dir, base, size, next).await,
                None => None,
            };
            let segment = match from_index {
                Some(segment) => segment,
                None => recover_file(&file, base, size, config.index_interval_bytes, topic, partition).await?,
            };
            files.insert(base, Rc::new(file));
            let truncated = segment.size < size;
            segments.push(segment);
            if truncated {
                for &later in &bases[i + 1..] {
                    warn!(%topic, partition, later, "removing segment after a truncated one");
                    remove_segment_files(&dir, later).await;
                }
                break;
            }
        }
        let log = Log::new(config, segments, 0);
        if files.is_empty() {
            let base = log.active().base_offset;
            let file = SegmentFile::open(&segment_path(&dir, base, "log"), mode).await?;
            files.insert(base, Rc::new(file));
        }
        let high_watermark = log.log_end_offset();
        let first_dirty_offset = log.log_start_offset();
        Ok(PartitionStore {
            topic: topic.to_owned(),
            partition,
            dir,
            log: RefCell::new(log),
            files: RefCell::new(files),
            mode,
            high_watermark: Cell::new(high_watermark),
            append_permit: Semaphore::new(1),
            first_dirty_offset: Cell::new(first_dirty_offset),
            cleaning: Cell::new(false),
            rolled: Cell::new(None),
            recent: RefCell::default(),
        })
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.get()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.borrow().log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.borrow().log_end_offset()
    }

    pub fn config(&self) -> LogConfig {
        self.log.borrow().config.clone()
    }

    /// Takes the topic's changed log configs (AlterConfigs): the next roll, index entry and
    /// retention or cleaning pass follow them.
    pub fn set_config(&self, config: LogConfig) {
        self.log.borrow_mut().config = config;
    }

    /// Bytes of every segment, for metrics (Kafka's `Log` `Size`).
    pub fn size_bytes(&self) -> u64 {
        self.log.borrow().size_bytes()
    }

    pub fn segment_count(&self) -> usize {
        self.log.borrow().segments().len()
    }

    /// Writes batches whose offsets and epochs a partition replica already assigned
    /// (`replica::Action::Append`, its parts one after the other), at the log end, which must
    /// be `base_offset`. The parts go in as few writes as segment rolls allow: a part that
    /// would not fit in the active segment rolls it first, as it would alone. The data is
    /// durable once [`GroupCommit::sync`] returns past it; what is visible is the replica's
    /// high watermark.
    pub async fn append_assigned(&self, now_ms: i64, base_offset: i64, parts: &[Bytes]) -> io::Result<()> {
        let _permit = self.append_permit.acquire_permit(1).await.map_err(|e| io::Error::other(e.to_string()))?;
        if self.log_end_offset() != base_offset {
            return Err(io::Error::other(format!("append at {base_offset}, log ends at {}", self.log_end_offset())));
        }
        let mut scanned = Vec::with_capacity(parts.len());
        let mut next = base_offset;
        for part in parts {
            let batches: Vec<_> = batch::scan_headers(part).collect();
            let covered: usize = batches.iter().map(|(_, h)| h.total_len()).sum();
            if covered != part.len() {
                return Err(io::Error::other("replica appended bytes that are not whole batches"));
            }
            for (_, header) in &batches {
                if header.base_offset != next {
                    return Err(io::Error::other(format!("appended batch at {}, expected {next}", header.base_offset)));
                }
                next = header.next_offset();
            }
            scanned.push(batches);
        }
        let mut from = 0;
        while from < parts.len() {
            if self.log.borrow().needs_roll(now_ms, parts[from].len() as u64) {
                self.roll().await?;
            }
            let mut bytes = parts[from].len() as u64;
            let mut to = from + 1;
            while to < parts.len() && !self.log.borrow().needs_roll_after(now_ms, bytes, parts[to].len() as u64) {
                bytes += parts[to].len() as u64;
                to += 1;
            }
            let (at, file) = {
                let log = self.log.borrow();
                let at = log.append_position();
                (at, self.files.borrow()[&at.segment_base].clone())
            };
            let slices: Vec<&[u8]> = parts[from..to].iter().map(|p| &p[..]).collect();
            file.append(at.position, &slices).await?;
            let mut log = self.log.borrow_mut();
            let mut recent = self.recent.borrow_mut();
            let mut position = at.position;
            for (part, batches) in parts[from..to].iter().zip(&scanned[from..to]) {
                log.append(now_ms, AppendAt { segment_base: at.segment_base, position }, batches);
                recent.push(at.segment_base, position, part.clone());
                position += part.len() as u64;
            }
            from = to;
        }
        Ok(())
    }

    /// Drops every batch at or after `to` (a follower truncating to where its log and the
    /// leader's agree, KIP-101/279). `to` is a batch boundary.
    pub async fn truncate_to(&self, to: i64) -> io::Result<()> {
        let _permit = self.append_permit.acquire_permit(1).await.map_err(|e| io::Error::other(e.to_string()))?;
        if to >= self.log_end_offset() {
            return Ok(());
        }
        self.recent.borrow_mut().clear();
        let segments: Vec<Segment> = self.log.borrow().segments().to_vec();
        let keep = segments.partition_point(|s| s.base_offset <= to).max(1);
        for later in &segments[keep..] {
            self.files.borrow_mut().remove(&later.base_offset);
            remove_segment_files(&self.dir, later.base_offset).await;
        }
        let target = &segments[keep - 1];
        let file = self.files.borrow()[&target.base_offset].clone();
        // Walk batch headers from the index position to the first batch at or after `to`.
        let mut position = target.offset_index.lookup(to).unwrap_or(0);
        while position < target.size {
            let chunk = file.read_at(position, (batch::HEADER_LEN as u64).min(target.size - position) as usize).await?;
            let Ok(header) = batch::BatchHeader::parse(&chunk) else { break };
            if header.base_offset >= to {
                break;
            }
            position += header.total_len() as u64;
        }
        let position = position.min(target.size);
        file.truncate(position).await?;
        file.fdatasync().await?;
        // The kept segment is the active one again: its index files would be stale.
        let stale: Vec<PathBuf> = ["index", "timeindex"].iter().map(|e| segment_path(&self.dir, target.base_offset, e)).collect();
        off_reactor(move || stale.into_iter().for_each(|path| drop(std::fs::remove_file(path)))).await;
        let interval = self.log.borrow().config.index_interval_bytes;
        let rebuilt = recover_file(&file, target.base_offset, position, interval, &self.topic, self.partition).await?;
        let mut kept: Vec<Segment> = segments[..keep - 1].to_vec();
        kept.push(rebuilt);
        let (config, start) = {
            let log = self.log.borrow();
            (log.config.clone(), log.log_start_offset())
        };
        *self.log.borrow_mut() = Log::new(config, kept, start);
        self.high_watermark.set(self.high_watermark.get().min(self.log_end_offset()));
        info!(topic = %self.topic, partition = self.partition, to, "truncated log");
        Ok(())
    }

    /// Drops the whole log; it restarts empty at `start_offset` (a follower behind the
    /// leader's log start).
    pub async fn reset_to(&self, start_offset: i64) -> io::Result<()> {
        let _permit = self.append_permit.acquire_permit(1).await.map_err(|e| io::Error::other(e.to_string()))?;
        let bases: Vec<i64> = self.files.borrow().keys().copied().collect();
        self.files.borrow_mut().clear();
        for base in bases {
            remove_segment_files(&self.dir, base).await;
        }
        let file = SegmentFile::open(&segment_path(&self.dir, start_offset, "log"), self.mode).await?;
        file.truncate(0).await?;
        self.files.borrow_mut().insert(start_offset, Rc::new(file));
        let config = self.log.borrow().config.clone();
        *self.log.borrow_mut() = Log::new(config, vec![Segment::new(start_offset)], start_offset);
        self.high_watermark.set(start_offset);
        self.recent.borrow_mut().clear();
        Ok(())
    }

    /// Sets the offset readers may see up to (replicated partitions: the replica's HW).
    pub fn set_high_watermark(&self, offset: i64) {
        self.high_watermark.set(offset.min(self.log_end_offset()));
    }

    /// The partition's directory (checkpoint files live beside the segments).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Seals the active segment (fsync, index files) and opens the next one.
    async fn roll(&self) -> io::Result<()> {
        let (old_base, old_size, old_file) = {
            let log = self.log.borrow();
            let active = log.active();
            (active.base_offset, active.size, self.files.borrow()[&active.base_offset].clone())
        };
        old_file.trim(old_size).await?;
        old_file.fdatasync().await?;
        // The next segment's file is open before the log makes it the active one: a sync may
        // look up the active segment's file at any await from here on.
        let new_base = self.log.borrow().log_end_offset();
        let file = SegmentFile::open(&segment_path(&self.dir, new_base, "log"), self.mode).await?;
        self.files.borrow_mut().insert(new_base, Rc::new(file));
        let rolled = self.log.borrow_mut().roll();
        debug_assert_eq!(rolled, new_base, "appends wait for the roll (append permit)");
        let (offset_index, time_index) = {
            let log = self.log.borrow();
            let sealed = log.segments().iter().find(|s| s.base_offset == old_base).expect("sealed segment");
            (sealed.offset_index.encode(old_base), sealed.time_index.encode(old_base))
        };
        write_file(&segment_path(&self.dir, old_base, "index"), offset_index).await?;
        write_file(&segment_path(&self.dir, old_base, "timeindex"), time_index).await?;
        info!(topic = %self.topic, partition = self.partition, old_base, new_base, "rolled segment");
        self.rolled.set(Some(new_base));
        self.recent.borrow_mut().clear();
        Ok(())
    }

    /// The base of the segment an append rolled to since the last call.
    pub fn take_rolled(&self) -> Option<i64> {
        self.rolled.take()
    }

    /// Writes `<base>.snapshot`: the idempotent producers' state of the log below `base`
    /// (`ProducerStates::encode_snapshot`). Removed with the segment starting at `base`.
    pub async fn write_producer_snapshot(&self, base: i64, bytes: Vec<u8>) -> io::Result<()> {
        write_file(&segment_path(&self.dir, base, "snapshot"), bytes).await
    }

    /// The newest readable producer snapshot at or below the log end, with its base; snapshot
    /// files past the log end (a crash before their truncation finished) are removed, and an
    /// unreadable one is skipped for the next older.
    pub async fn load_producer_snapshot(&self, now_ms: i64) -> Option<(i64, ProducerStates)> {
        let dir = self.dir.clone();
        let end = self.log_end_offset();
        let bases = off_reactor(move || -> Vec<i64> {
            let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
            let mut bases: Vec<i64> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".snapshot")?.parse().ok())
                .collect();
            bases.sort_unstable_by(|a, b| b.cmp(a));
            for stale in bases.iter().filter(|&&base| base > end) {
                drop(std::fs::remove_file(segment_path(&dir, *stale, "snapshot")));
            }
            bases.retain(|&base| base <= end);
            bases
        })
        .await;
        for base in bases {
            let path = segment_path(&self.dir, base, "snapshot");
            let read = off_reactor(move || std::fs::read(path)).await;
            match read.map_err(|e| e.to_string()).and_then(|b| ProducerStates::decode_snapshot(&b, now_ms).map_err(|e| e.to_string())) {
                Ok(state) => return Some((base, state)),
                Err(e) => warn!(topic = %self.topic, partition = self.partition, base, error = %e, "producer snapshot unreadable; using an older one or the log"),
            }
        }
        None
    }

    fn active_file(&self) -> (Rc<SegmentFile>, i64) {
        let log = self.log.borrow();
        (self.files.borrow()[&log.active().base_offset].clone(), log.log_end_offset())
    }

    /// Whole batches from `offset` up to `limit` (at most the log end), at most `max_bytes`
    /// unless the first batch alone is larger (KIP-74: a consumer must always make progress).
    pub async fn read_upto(&self, offset: i64, max_bytes: usize, limit: i64) -> Result<Bytes, ReadError> {
        let high_watermark = limit.min(self.log_end_offset());
        if offset > high_watermark {
            return Err(ReadError::OutOfRange);
        }
        let mut offset = offset;
        // Compaction can leave a segment with no batch at or after `offset`: go on to the
        // next segment, at most once per segment.
        loop {
            if offset >= high_watermark {
                return Ok(Bytes::new());
            }
            let (start, interval, segment_end) = {
                let log = self.log.borrow();
                let start = log.locate(offset).map_err(|_| ReadError::OutOfRange)?;
                let Some(start) = start else { return Ok(Bytes::new()) };
                let end = log.segments().iter().find(|s| s.base_offset == start.segment_base).map_or(offset + 1, |s| s.next_offset);
                (start, log.config.index_interval_bytes, end)
            };
            if let Some(found) = self.read_from(start, interval, offset, max_bytes, high_watermark).await? {
                return Ok(found);
            }
            offset = segment_end;
        }
    }

    /// [`PartitionStore::read`] within one segment; `None` when the segment holds no batch at
    /// or after `offset`.
    async fn read_from(
        &self,
        start: ReadStart,
        interval: u64,
        offset: i64,
        max_bytes: usize,
        high_watermark: i64,
    ) -> Result<Option<Bytes>, ReadError> {
        // The index entry may sit up to one interval (plus a batch) before the wanted offset.
        let want = (max_bytes as u64).saturating_add(interval).saturating_add(64 << 10);
        let mut chunk = self.read_range(start, start.position, want).await?;
        let (mut from, mut to) = (None, 0);
        for (position, header) in batch::scan_headers(&chunk) {
            if header.last_offset() < offset {
                continue;
            }
            if header.base_offset >= high_watermark {
                break;
            }
            let from_position = *from.get_or_insert(position);
            if position + header.total_len() - from_position > max_bytes && to > from_position {
                break;
            }
            to = position + header.total_len();
        }
        match from {
            Some(from) if to > from => Ok(Some(chunk.split_to(to).split_off(from))),
            // The first wanted batch did not fit in the chunk: read exactly that batch.
            _ => self.read_first_batch(start, &chunk, offset, high_watermark).await,
        }
    }

    async fn read_first_batch(
        &self,
        start: ReadStart,
        chunk: &Bytes,
        offset: i64,
        high_watermark: i64,
    ) -> Result<Option<Bytes>, ReadError> {
        // Walk headers to the batch holding `offset`, then read it whole.
        let mut position = start.position;
        let mut buf = chunk.clone();
        loop {
            if position >= start.segment_size {
                return Ok(None);
            }
            let header = match batch::BatchHeader::parse(&buf) {
                Ok(h) => h,
                Err(_) => {
                    buf = self.read_range(start, position, batch::HEADER_LEN as u64).await?;
                    batch::BatchHeader::parse(&buf).map_err(|e| ReadError::Corrupt(e.to_string()))?
                }
            };
            if header.base_offset >= high_watermark {
                return Ok(Some(Bytes::new()));
            }
            if header.last_offset() >= offset {
                return self.read_range(start, position, header.total_len() as u64).await.map(Some);
            }
            position += header.total_len() as u64;
            let skip = header.total_len().min(buf.len());
            buf = buf.slice(skip..);
        }
    }

    async fn read_range(&self, start: ReadStart, position: u64, len: u64) -> Result<Bytes, ReadError> {
        let file = self.files.borrow().get(&start.segment_base).cloned().ok_or(ReadError::OutOfRange)?;
        let len = len.min(start.segment_size.saturating_sub(position)) as usize;
        if let Some(recent) = self.recent.borrow().read(start.segment_base, position, len) {
            return Ok(recent);
        }
        let read = file.read_at(position, len).await.map_err(|e| ReadError::Io(e.into()))?;
        Ok(Bytes::copy_from_slice(&read))
    }

    /// Offset and timestamp of the first visible record with timestamp >= `timestamp`. Reads
    /// from the time index's position onwards in chunks, never a whole segment at once.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, ReadError> {
        let Some(start) = self.log.borrow().locate_timestamp(timestamp) else { return Ok(None) };
        let high_watermark = self.high_watermark();
        let segments: Vec<ReadStart> = self
            .log
            .borrow()
            .segments()
            .iter()
            .filter(|s| s.base_offset >= start.segment_base)
            .map(|s| ReadStart { segment_base: s.base_offset, position: 0, segment_size: s.size })
            .collect();
        for segment in segments {
            let mut position = if segment.segment_base == start.segment_base { start.position } else { 0 };
            let mut chunk_len = TIMESTAMP_SCAN_CHUNK_BYTES;
            while position < segment.segment_size {
                let chunk = self.read_range(segment, position, chunk_len).await?;
                if let Some((offset, ts)) = records::first_at_or_after(&chunk, timestamp).map_err(ReadError::Corrupt)? {
                    return Ok((offset < high_watermark).then_some((offset, ts)));
                }
                let whole: usize = batch::scan_headers(&chunk).map(|(_, h)| h.total_len()).sum();
                if whole == 0 {
                    if chunk.len() as u64 >= segment.segment_size - position {
                        return Err(ReadError::Corrupt(format!("no whole batch at byte {position}")));
                    }
                    chunk_len *= 2;
                }
                position += whole as u64;
            }
        }
        Ok(None)
    }

    /// Walks the header of every batch from the one holding `from` to the log end.
    pub async fn for_each_header_from(&self, from: i64, mut each: impl FnMut(&BatchHeader, &[u8])) -> io::Result<()> {
        let segments: Vec<Segment> =
            self.log.borrow().segments().iter().filter(|s| s.next_offset > from).cloned().collect();
        for segment in &segments {
            let mut chunks = self.batch_chunks(segment)?;
            while let Some(chunk) = chunks.next().await? {
                for (position, header) in batch::scan_headers(&chunk) {
                    if header.next_offset() > from {
                        each(&header, &chunk[position..position + header.total_len()]);
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies retention: deletes the segments `retention.ms` / `retention.bytes` expire that
    /// end at or below `limit` (a replica's high watermark: retention never removes what is
    /// not yet committed). Returns the new log start when segments went.
    pub async fn apply_retention(&self, now_ms: i64, limit: i64) -> Option<i64> {
        // Not while an append or a roll is under way: a roll seals a segment in memory before
        // writing its index files, and must not find that segment deleted meanwhile. The
        // permit is held until the files are gone.
        if self.cleaning.get() {
            return None;
        }
        let Ok(_permit) = self.append_permit.try_acquire_permit(1) else { return None };
        let removed = {
            let mut log = self.log.borrow_mut();
            let count = log.expired_segments(now_ms).min(log.segments_ending_by(limit));
            if count == 0 {
                return None;
            }
            log.delete_oldest(count)
        };
        for base in removed {
            self.files.borrow_mut().remove(&base);
            remove_segment_files(&self.dir, base).await;
        }
        info!(topic = %self.topic, partition = self.partition, log_start_offset = self.log_start_offset(), "retention deleted segments");
        Some(self.log_start_offset())
    }

    /// Moves the log start up to `offset` and deletes the segments wholly below it (a replica
    /// following its leader's log start, or restoring its recorded start at open).
    pub async fn advance_log_start(&self, offset: i64) -> io::Result<()> {
        let _permit = self.append_permit.acquire_permit(1).await.map_err(|e| io::Error::other(e.to_string()))?;
        if self.cleaning.get() {
            // The cleaner holds copies of these segments; it swaps them back in by base
            // offset, so only move the start now and let a later retention pass delete them.
            let mut log = self.log.borrow_mut();
            let keep: Vec<Segment> = log.segments().to_vec();
            let start = offset.min(log.log_end_offset()).max(log.log_start_offset());
            *log = Log::new(log.config.clone(), keep, start);
            return Ok(());
        }
        let removed = self.log.borrow_mut().advance_log_start(offset);
        for base in &removed {
            self.files.borrow_mut().remove(base);
            remove_segment_files(&self.dir, *base).await;
        }
        if !removed.is_empty() {
            info!(topic = %self.topic, partition = self.partition, log_start_offset = self.log_start_offset(), "deleted segments below the log start");
        }
        Ok(())
    }

    /// Removes the partition's directory (topic deletion).
    pub async fn delete(&self) -> io::Result<()> {
        self.files.borrow_mut().clear();
        let dir = self.dir.clone();
        off_reactor(move || std::fs::remove_dir_all(dir)).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset out of range")]
    OutOfRange,
    #[error("disk read failed: {0}")]
    Io(io::Error),
    #[error("corrupt data in log: {0}")]
    Corrupt(String),
}

async fn load_sealed(dir: &Path, base: i64, size: u64, next_base: i64) -> Option<Segment> {
    let (offset_path, time_path) = (segment_path(dir, base, "index"), segment_path(dir, base, "timeindex"));
    let (offset_index, time_index) =
        off_reactor(move || Some((std::fs::read(offset_path).ok()?, std::fs::read(time_path).ok()?))).await?;
    Segment::from_indexes(base, size, next_base, &offset_index, &time_index)
}

async fn recover_file(
    file: &SegmentFile,
    base: i64,
    size: u64,
    index_interval_bytes: u64,
    topic: &str,
    partition: i32,
) -> io::Result<Segment> {
    let mut segment = Segment::new(base);
    let mut chunk_len = RECOVERY_CHUNK_BYTES;
    loop {
        let at = segment.size;
        let len = chunk_len.min((size - at) as usize);
        let at_eof = at + len as u64 >= size;
        let chunk = file.read_at(at, len).await?;
        let step = recover_chunk(&mut segment, &chunk, index_interval_bytes, at_eof);
        if let Some(reason) = step.stop_reason {
            if is_padding(file, segment.size, size).await? {
                info!(%topic, partition, base, valid_len = segment.size, file_len = size, "trimming the zeros after the last batch");
            } else {
                warn!(%topic, partition, base, valid_len = segment.size, file_len = size, %reason, "truncating log tail after unclean shutdown");
            }
            break;
        }
        if at_eof {
            break;
        }
        if step.consumed == 0 {
            chunk_len *= 2;
        }
    }
    if segment.size < size {
        file.truncate(segment.size).await?;
        file.fdatasync().await?;
    }
    Ok(segment)
}

/// Whether the bytes from `from` to the end are a direct write's padding: zeros, shorter than
/// one write unit.
async fn is_padding(file: &SegmentFile, from: u64, size: u64) -> io::Result<bool> {
    if size - from >= file.alignment() {
        return Ok(false);
    }
    Ok(file.read_at(from, (size - from) as usize).await?.iter().all(|&b| b == 0))
}

async fn remove_segment_files(dir: &Path, base: i64) {
    let paths: Vec<PathBuf> = ["log", "index", "timeindex", "snapshot"].iter().map(|e| segment_path(dir, base, e)).collect();
    off_reactor(move || {
        for path in paths {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(path = %path.display(), error = %e, "could not remove segment file");
                }
            }
        }
    })
    .await;
}

/// Writes a whole small file durably: to a temporary name, fsync, rename over the target.
pub async fn write_file(path: &Path, contents: Vec<u8>) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = BufferedFile::create(&tmp).await?;
    if !contents.is_empty() {
        file.write_at(contents, 0).await?;
    }
    file.fdatasync().await?;
    file.rename(path).await?;
    file.close().await?;
    if let Some(dir) = path.parent() {
        sync_dir(dir).await?;
    }
    Ok(())
}

/// fsyncs a directory through io_uring: a blocking one would stall every partition, request
/// and timer of the core (each partition checkpoints its high watermark every 5 s).
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = glommio::io::Directory::open(dir).await?;
    dir.sync().await?;
    dir.close().await?;
    Ok(())
}

/// Group commit for one core. The partition driver (`core::replica::driver`) does the
/// grouping: every append queued behind a partition's sync is written before it, so one
/// fdatasync covers them all. Each sync then runs at once on the partition's active file,
/// concurrently with the core's other partitions' (the file system joins concurrent
/// fdatasyncs in one journal commit). An earlier version ran core-wide rounds, every
/// partition that asked during a round waiting for the whole round to end before its own
/// began: 10% less acks=all throughput with direct writes (`docs/benchmarks.md`).
/// What becomes visible is the replica's decision (its high watermark), never this one's.
pub struct GroupCommit {
    fsync: bool,
    /// How long each of this core's fdatasyncs took (the ones acks wait for).
    pub fsync_latency: crate::metrics::counters::Histogram,
}

impl GroupCommit {
    pub fn new(fsync: bool) -> Rc<GroupCommit> {
        Rc::new(GroupCommit { fsync, fsync_latency: Default::default() })
    }

    /// Returns once everything appended to `partition` so far is durable: the offset below
    /// which it is. Without fsync, everything appended counts as durable at once. Segments
    /// before the active one were fdatasynced when they were sealed.
    pub async fn sync(self: &Rc<Self>, partition: &Rc<PartitionStore>) -> io::Result<i64> {
        if !self.fsync {
            return Ok(partition.log_end_offset());
        }
        let (file, end) = partition.active_file();
        let started = std::time::Instant::now();
        file.fdatasync().await.map_err(|e| io::Error::other(format!("fdatasync failed: {e}")))?;
        self.fsync_latency.record(started.elapsed());
        Ok(end)
    }
}

/// Runs futures concurrently on this executor and collects their outputs in order.
pub async fn join_all<F: std::future::Future + 'static>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F::Output: 'static,
{
    let tasks: Vec<_> = futures.into_iter().map(glommio::spawn_local).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await);
    }
    out
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Appends a client's batch at the log end in epoch 0, as a leader replica assigns it.
    pub async fn append(store: &PartitionStore, records: Bytes) {
        let base = store.log_end_offset();
        store.append_assigned(1000, base, &[assigned(&records, base, 0)]).await.unwrap();
    }

    /// A client's batch with its offsets from `base` and leader epoch `epoch` assigned.
    pub fn assigned(records: &[u8], base: i64, epoch: i32) -> Bytes {
        let mut buf = records.to_vec();
        let mut validated = batch::validate_records(&buf, 1 << 20).unwrap();
        batch::assign_offsets(&mut buf, &mut validated, base, epoch, None);
        Bytes::from(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odradek_core::records::{decode_key_values, encode_batch};

    fn run<F: std::future::Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default().spawn(move || async move { test().await }).unwrap().join().unwrap();
    }

    /// An empty directory of the test's own.
    fn fresh_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("odradek-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn batch(i: usize) -> Bytes {
        encode_batch(&[(Bytes::from(format!("k{i}")), Some(Bytes::from(format!("value-{i:04}"))))], 1000)
    }

    /// A sync takes the active segment's file whenever it runs; one that ran while an append
    /// rolled the segment found the new segment active before its file was open, and the
    /// broker stopped (found by a bench run that rolled 1 GiB segments).
    #[test]
    fn a_group_commit_during_segment_rolls_finds_every_active_file() {
        run(|| async {
          for mode in [WriteMode::Direct, WriteMode::Buffered] {
            let dir = fresh_dir(&format!("roll-sync-{mode:?}"));
            let config = LogConfig { segment_bytes: 256, index_interval_bytes: 128, ..LogConfig::default() };
            let store = Rc::new(PartitionStore::open(&dir, "t", 0, config, mode).await.unwrap());
            let commit = GroupCommit::new(true);
            let syncing = {
                let (store, commit) = (store.clone(), commit.clone());
                glommio::spawn_local(async move {
                    let mut rounds = 0;
                    while store.log_end_offset() < 40 {
                        commit.sync(&store).await.unwrap();
                        rounds += 1;
                    }
                    rounds
                })
            };
            for i in 0..40 {
                test_support::append(&store, batch(i)).await;
            }
            assert!(syncing.await > 0);
            assert!(store.log.borrow().segments().len() >= 10, "every few appends roll");
            std::fs::remove_dir_all(dir).unwrap();
          }
        });
    }

    /// A follower truncating to where its log and the leader's agree (KIP-101): the cut may
    /// fall in a sealed segment, later segments go, and the log continues from the cut, also
    /// after a restart.
    #[test]
    fn truncation_into_a_sealed_segment_drops_later_segments_and_survives_reopening() {
        run(|| async {
          for mode in [WriteMode::Direct, WriteMode::Buffered] {
            let dir = fresh_dir(&format!("truncate-{mode:?}"));
            let config = LogConfig { segment_bytes: 1024, index_interval_bytes: 128, ..LogConfig::default() };
            let store = PartitionStore::open(&dir, "t", 0, config.clone(), mode).await.unwrap();
            for i in 0..60 {
                test_support::append(&store, batch(i)).await;
            }
            assert!(store.log.borrow().segments().len() >= 3);
            store.set_high_watermark(60);
            store.truncate_to(17).await.unwrap();
            assert_eq!(store.log_end_offset(), 17);
            assert_eq!(store.high_watermark(), 17);
            // Replicated appends continue at the cut.
            store.append_assigned(1000, 17, &[test_support::assigned(&batch(99), 17, 3)]).await.unwrap();
            assert!(store.append_assigned(1000, 17, &[batch(1)]).await.is_err(), "not at the log end");
            drop(store);
            let store = PartitionStore::open(&dir, "t", 0, config.clone(), mode).await.unwrap();
            assert_eq!(store.log_end_offset(), 18);
            // A read stops at a segment's end: read on from there, as a consumer does.
            let mut offsets: Vec<i64> = Vec::new();
            while offsets.last().map_or(0, |o| o + 1) < 18 {
                let from = offsets.last().map_or(0, |o| o + 1);
                let chunk = store.read_upto(from, 1 << 20, 18).await.unwrap();
                assert!(!chunk.is_empty(), "no data at {from}");
                offsets.extend(batch::scan_headers(&chunk).map(|(_, h)| h.base_offset));
            }
            assert_eq!(offsets, (0..18).collect::<Vec<i64>>());
            store.reset_to(40).await.unwrap();
            assert_eq!((store.log_start_offset(), store.log_end_offset()), (40, 40));
            std::fs::remove_dir_all(dir).unwrap();
          }
        });
    }

    /// Appends merged into one write still roll where each would have alone: no segment grows
    /// past `segment.bytes` because its batches arrived together (a multi-part append once
    /// filled a fresh segment with every part after a roll).
    #[test]
    fn a_multi_part_append_rolls_where_single_appends_would() {
        run(|| async {
            let dir = fresh_dir("multi-part");
            let config = LogConfig { segment_bytes: 400, index_interval_bytes: 128, ..LogConfig::default() };
            let store = PartitionStore::open(&dir, "t", 0, config.clone(), WriteMode::Direct).await.unwrap();
            let parts: Vec<Bytes> = (0..30).map(|i| test_support::assigned(&batch(i), i as i64, 0)).collect();
            let one = parts[0].len() as u64;
            store.append_assigned(1000, 0, &parts).await.unwrap();
            assert_eq!(store.log_end_offset(), 30);
            let segments: Vec<Segment> = store.log.borrow().segments().to_vec();
            let per_segment = 400 / one;
            assert!(segments.len() as u64 >= 30 / per_segment, "{} segments of {one}-byte batches", segments.len());
            for s in &segments {
                assert!(s.size <= 400, "segment {} holds {} bytes", s.base_offset, s.size);
            }
            for s in &segments[..segments.len() - 1] {
                assert!(s.size + one > 400, "segment {} rolled at {} bytes with room for another batch", s.base_offset, s.size);
            }
            std::fs::remove_dir_all(dir).unwrap();
        });
    }

    /// The tail cache answers only reads it holds whole, as the appended buffers' own bytes
    /// (a read inside one append is a slice of it, not a copy), and forgets what it evicts.
    #[test]
    fn the_tail_cache_serves_whole_ranges_only_and_slices_without_copying() {
        let mut recent = Recent::default();
        let part = |n: u8, len: usize| Bytes::from(vec![n; len]);
        recent.push(7, 100, part(1, 10));
        recent.push(7, 110, part(2, 10));
        let inside = recent.read(7, 102, 5).unwrap();
        assert_eq!(&inside[..], &[1; 5]);
        assert_eq!(inside.as_ptr(), recent.parts[0].1[2..].as_ptr(), "a slice of the appended buffer");
        let across = recent.read(7, 105, 10).unwrap();
        assert_eq!(&across[..], &[1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
        assert!(recent.read(7, 99, 5).is_none(), "starts before what it holds");
        assert!(recent.read(7, 115, 6).is_none(), "ends after what it holds");
        assert!(recent.read(8, 102, 5).is_none(), "another segment");
        // Not contiguous with what it holds (a truncation or reset happened): start over.
        recent.push(7, 50, part(3, 10));
        assert!(recent.read(7, 100, 1).is_none());
        assert_eq!(&recent.read(7, 50, 10).unwrap()[..], &[3; 10]);
        // Past its budget the oldest appends go, the newest always stays.
        recent.push(7, 60, part(4, RECENT_BYTES));
        assert!(recent.read(7, 50, 1).is_none());
        assert_eq!(recent.read(7, 60, RECENT_BYTES).unwrap().len(), RECENT_BYTES);
    }

    /// Direct writes rewrite the last partial block and pad to the next boundary: whatever
    /// the batch sizes, every appended batch reads back while the log grows, a sealed segment's
    /// file holds exactly its batches, and a reopened log (padding still on the active file,
    /// as after a crash) holds every batch and nothing else.
    #[test]
    fn direct_appends_of_any_size_read_back_seal_exactly_and_recover_whole() {
        run(|| async {
            let dir = fresh_dir("direct");
            let config = LogConfig { segment_bytes: 40_000, index_interval_bytes: 4096, ..LogConfig::default() };
            let store = PartitionStore::open(&dir, "t", 0, config.clone(), WriteMode::Direct).await.unwrap();
            // Sizes around and across block boundaries, deterministic.
            let mut seed = 7u64;
            let mut values = Vec::new();
            for i in 0..120 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let len = [1, 3, 500, 4000, 4096, 9000][(seed >> 33) as usize % 6] + (seed >> 50) as usize % 7;
                let value = format!("{i:05}").repeat(len / 5 + 1);
                test_support::append(&store, encode_batch(&[(Bytes::from(format!("k{i}")), Some(Bytes::from(value.clone())))], 1000)).await;
                values.push(value);
                let end = store.log_end_offset();
                let last = store.read_upto(end - 1, 1 << 20, end).await.unwrap();
                let (_, value) = &decode_key_values(&last).unwrap()[0];
                assert_eq!(value.as_deref(), Some(values[i].as_bytes()), "batch {i} reads back at once");
            }
            let segments: Vec<Segment> = store.log.borrow().segments().to_vec();
            assert!(segments.len() >= 3, "the appends rolled segments");
            for sealed in &segments[..segments.len() - 1] {
                let len = std::fs::metadata(segment_path(&store.dir, sealed.base_offset, "log")).unwrap().len();
                assert_eq!(len, sealed.size, "sealed segment {} carries no padding", sealed.base_offset);
            }
            let active = segments.last().unwrap();
            let on_disk = std::fs::metadata(segment_path(&store.dir, active.base_offset, "log")).unwrap().len();
            assert!(on_disk >= active.size && on_disk - active.size < 4096, "active file {on_disk}, log {}", active.size);
            drop(store);
            let store = PartitionStore::open(&dir, "t", 0, config, WriteMode::Direct).await.unwrap();
            assert_eq!(store.log_end_offset(), 120);
            let mut offset = 0;
            while offset < 120 {
                let chunk = store.read_upto(offset, 1 << 20, 120).await.unwrap();
                for (position, header) in batch::scan_headers(&chunk) {
                    let one = chunk.slice(position..position + header.total_len());
                    let (_, value) = &decode_key_values(&one).unwrap()[0];
                    assert_eq!(value.as_deref(), Some(values[header.base_offset as usize].as_bytes()));
                    assert_eq!(header.base_offset, offset, "every batch, in order");
                    offset = header.next_offset();
                }
            }
            // Appends go on after the recovered end.
            test_support::append(&store, batch(500)).await;
            assert_eq!(store.log_end_offset(), 121);
            std::fs::remove_dir_all(dir).unwrap();
        });
    }
}
