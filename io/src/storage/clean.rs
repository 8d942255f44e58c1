//! Log compaction for `cleanup.policy=compact` partitions: the file side of `core::compact`.
//!
//! A pass maps keys over the cleanable sealed segments, then rewrites them run by run. A run
//! becomes one `<base>.log.cleaned` file, fsynced and renamed to `<base>.log.swap`: that rename
//! is the commit point. Then the run's old files are deleted and the swap file renamed to
//! `<base>.log`, replacing the run's first segment. [`finish_interrupted_swaps`] completes a
//! committed swap or discards an uncommitted one at startup, so a crash at any point leaves
//! either the old segments or the cleaned one, never a mix that loses a latest value.

use std::io;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use odradek_core::batch::{self, BatchHeader};
use odradek_core::compact::{self, Cleaned, OffsetMap};
use odradek_core::log::Segment;
use tracing::{info, warn};

use super::{off_reactor, recover_file, remove_segment_files, segment_path, sync_dir, write_file, PartitionStore, SegmentFile, WriteMode};

const CLEAN_CHUNK_BYTES: u64 = 4 << 20;
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// What one cleaning pass did to a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Clears [`PartitionStore::cleaning`] however the pass ends.
struct CleaningGuard<'a>(&'a PartitionStore);

impl Drop for CleaningGuard<'_> {
    fn drop(&mut self) {
        self.0.cleaning.set(false);
    }
}

impl PartitionStore {
    /// One cleaning pass, if the topic is compacted and its dirty ratio reached
    /// `min.cleanable.dirty.ratio`. Appends and reads go on meanwhile; only the final swap of
    /// each run holds the append permit.
    /// `stable` is the partition's transactions as its replica sees them: what lies at or past
    /// the last stable offset may belong to an open transaction and is not cleaned; the
    /// aborted transactions' records are removed.
    pub async fn clean(&self, now_ms: i64, map_limit_bytes: usize, stable: Stable) -> io::Result<Option<CleanStats>> {
        let config = self.config();
        if !config.compact || self.cleaning.get() {
            return Ok(None);
        }
        let segments: Vec<Segment> = self.log.borrow().segments().to_vec();
        // Only committed data is cleaned: on a replicated partition everything above the high
        // watermark may still be truncated away.
        let limit = self.high_watermark().min(stable.last_stable_offset);
        let committed = segments[..segments.len() - 1].iter().take_while(|s| s.next_offset <= limit).count();
        let count = compact::cleanable_segments(&segments, now_ms, config.min_compaction_lag_ms).min(committed);
        let cleanable: u64 = segments[..count].iter().map(|s| s.size).sum();
        let dirty: u64 =
            segments[..count].iter().filter(|s| s.next_offset > self.first_dirty_offset.get()).map(|s| s.size).sum();
        if cleanable == 0 || dirty * 1000 < cleanable * u64::from(config.min_cleanable_dirty_permille) {
            return Ok(None);
        }
        self.cleaning.set(true);
        let _guard = CleaningGuard(self);

        let mut map = OffsetMap::with_aborted(map_limit_bytes, stable.aborted);
        let mut mapped = 0;
        for segment in &segments[..count] {
            let mut chunks = self.batch_chunks(segment)?;
            while let Some(chunk) = chunks.next().await? {
                map.add_batches(&chunk).map_err(|e| self.corrupt(segment, e))?;
            }
            mapped += 1;
            if map.is_full() {
                break;
            }
        }
        let horizon_ms = now_ms.saturating_sub(config.delete_retention_ms);
        let mut stats = CleanStats::default();
        for run in compact::group_by_size(&segments, mapped, config.segment_bytes) {
            let run = &segments[run];
            stats.segments_before += run.len();
            stats.bytes_before += run.iter().map(|s| s.size).sum::<u64>();
            match self.clean_run(run, &map, horizon_ms).await? {
                Some(size) => {
                    stats.segments_after += 1;
                    stats.bytes_after += size;
                }
                None => {
                    stats.segments_after += run.len();
                    stats.bytes_after += run.iter().map(|s| s.size).sum::<u64>();
                }
            }
        }
        self.first_dirty_offset.set(segments[mapped - 1].next_offset);
        info!(
            topic = %self.topic, partition = self.partition, keys = map.len(),
            segments = format_args!("{} -> {}", stats.segments_before, stats.segments_after),
            bytes = format_args!("{} -> {}", stats.bytes_before, stats.bytes_after),
            "cleaned log"
        );
        Ok(Some(stats))
    }

    /// Rewrites `run` into one segment and swaps it in; returns its size, or `None` when the
    /// run is a single segment that cleaning would not change.
    async fn clean_run(&self, run: &[Segment], map: &OffsetMap, horizon_ms: i64) -> io::Result<Option<u64>> {
        let base = run[0].base_offset;
        let interval = self.config().index_interval_bytes;
        let cleaned_path = self.dir.join(format!("{base:020}.log.cleaned"));
        // A leftover from an interrupted pass was removed at open; this pass starts it empty.
        let file = SegmentFile::open(&cleaned_path, self.mode).await?;
        file.truncate(0).await?;
        let mut cleaned = Segment::new(base);
        let mut out: Vec<u8> = Vec::with_capacity(WRITE_BUFFER_BYTES);
        let mut written = 0u64;
        let mut changed = run.len() > 1;
        for segment in run {
            let mut chunks = self.batch_chunks(segment)?;
            while let Some(chunk) = chunks.next().await? {
                for (position, header) in batch::scan_headers(&chunk) {
                    let original = chunk.slice(position..position + header.total_len());
                    let kept = match compact::clean_batch(&original, map, horizon_ms).map_err(|e| self.corrupt(segment, e))? {
                        Cleaned::Keep => original,
                        Cleaned::Remove => {
                            changed = true;
                            continue;
                        }
                        Cleaned::Rewrite(rewritten) => {
                            changed = true;
                            rewritten
                        }
                    };
                    let kept_header = BatchHeader::parse(&kept).map_err(|e| self.corrupt(segment, e.to_string()))?;
                    cleaned.add_batch(written + out.len() as u64, &kept_header, interval);
                    out.extend_from_slice(&kept);
                    if out.len() >= WRITE_BUFFER_BYTES {
                        written += flush(&file, written, &mut out).await?;
                    }
                }
            }
        }
        written += flush(&file, written, &mut out).await?;
        assert_eq!(written, cleaned.size, "the cleaned segment's layout matches its file");
        file.trim(written).await?;
        if !changed {
            file.close().await?;
            remove_if_present(&cleaned_path).await?;
            return Ok(None);
        }
        file.fdatasync().await?;
        let swap_path = self.dir.join(format!("{base:020}.log.swap"));
        rename(&cleaned_path, &swap_path).await?;
        sync_dir(&self.dir).await?;

        cleaned.next_offset = run.last().expect("a run has segments").next_offset;
        cleaned.seal();
        let size = cleaned.size;
        let (offset_index, time_index) = (cleaned.offset_index.encode(base), cleaned.time_index.encode(base));
        let removed = {
            let _permit = self.append_permit.acquire_permit(1).await.map_err(|e| io::Error::other(e.to_string()))?;
            let mut log = self.log.borrow_mut();
            let start = log.segments().iter().position(|s| s.base_offset == base);
            let matches = start.is_some_and(|start| {
                log.segments()[start..].iter().zip(run).all(|(now, then)| now.base_offset == then.base_offset)
            });
            // Retention is held off and rolls only add segments at the end, so the run is still
            // in place; anything else is a bug that must not delete data.
            assert!(matches, "segments of a run being cleaned changed underneath: run at {base}");
            let start = start.expect("checked");
            let removed = log.replace_segments(start..start + run.len(), cleaned);
            let mut files = self.files.borrow_mut();
            for gone in &removed {
                files.remove(gone);
            }
            files.insert(base, Rc::new(file));
            removed
        };
        for gone in removed {
            remove_segment_files(&self.dir, gone).await;
        }
        for extension in ["index", "timeindex"] {
            remove_if_present(&segment_path(&self.dir, base, extension)).await?;
        }
        rename(&swap_path, &segment_path(&self.dir, base, "log")).await?;
        sync_dir(&self.dir).await?;
        write_file(&segment_path(&self.dir, base, "index"), offset_index).await?;
        write_file(&segment_path(&self.dir, base, "timeindex"), time_index).await?;
        Ok(Some(size))
    }

    pub(super) fn batch_chunks(&self, segment: &Segment) -> io::Result<BatchChunks> {
        let file = self.files.borrow().get(&segment.base_offset).cloned().ok_or_else(|| {
            io::Error::other(format!("segment {} of {}-{} has no open file", segment.base_offset, self.topic, self.partition))
        })?;
        Ok(BatchChunks { file, size: segment.size, at: 0, chunk_len: CLEAN_CHUNK_BYTES })
    }

    fn corrupt(&self, segment: &Segment, why: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}-{} segment {}: {why}", self.topic, self.partition, segment.base_offset),
        )
    }
}

/// Reads a segment as chunks of whole batches.
pub(super) struct BatchChunks {
    file: Rc<SegmentFile>,
    size: u64,
    at: u64,
    chunk_len: u64,
}

impl BatchChunks {
    pub(super) async fn next(&mut self) -> io::Result<Option<Bytes>> {
        while self.at < self.size {
            let len = self.chunk_len.min(self.size - self.at);
            let chunk = Bytes::copy_from_slice(&self.file.read_at(self.at, len as usize).await?);
            let whole: usize = batch::scan_headers(&chunk).map(|(_, h)| h.total_len()).sum();
            if whole == 0 {
                if len == self.size - self.at {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("no whole batch at byte {} of {} in a sealed segment", self.at, self.size),
                    ));
                }
                // One batch larger than the chunk: read it whole next time.
                let needed = BatchHeader::parse(&chunk).map_or(self.chunk_len * 2, |h| h.total_len() as u64);
                self.chunk_len = needed.max(self.chunk_len);
                continue;
            }
            self.at += whole as u64;
            self.chunk_len = CLEAN_CHUNK_BYTES;
            return Ok(Some(chunk.slice(..whole)));
        }
        Ok(None)
    }
}

async fn flush(file: &SegmentFile, at: u64, out: &mut Vec<u8>) -> io::Result<u64> {
    if out.is_empty() {
        return Ok(0);
    }
    file.append(at, &[out]).await?;
    let len = out.len() as u64;
    out.clear();
    Ok(len)
}

async fn remove_if_present(path: &Path) -> io::Result<()> {
    let path = path.to_owned();
    off_reactor(move || match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    })
    .await
}

async fn rename(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (from.to_owned(), to.to_owned());
    off_reactor(move || std::fs::rename(from, to)).await
}

/// Startup half of the swap protocol, before the segments are listed: a `.cleaned` file was
/// never committed and goes; a `.swap` file was, so the old segments it covers go and it takes
/// the run's first segment's name. Old segments past the swap's last batch are kept: cleaning
/// only ever removed records that a later offset supersedes, so keeping them is just
/// uncompacted data.
/// What a cleaning pass needs of the partition's transactions.
pub struct Stable {
    pub last_stable_offset: i64,
    pub aborted: Vec<odradek_core::producer::AbortedTxn>,
}

impl Stable {
    /// No transactions: everything below the high watermark is stable.
    pub fn none() -> Stable {
        Stable { last_stable_offset: i64::MAX, aborted: Vec::new() }
    }
}

pub(super) async fn finish_interrupted_swaps(
    dir: &Path,
    topic: &str,
    partition: i32,
    index_interval_bytes: u64,
    mode: WriteMode,
) -> io::Result<()> {
    let mut swaps = Vec::new();
    let mut logs = Vec::new();
    let listed = dir.to_owned();
    let names: Vec<String> = off_reactor(move || -> io::Result<Vec<String>> {
        std::fs::read_dir(listed)?.map(|entry| Ok(entry?.file_name().into_string().unwrap_or_default())).collect()
    })
    .await?;
    for name in names {
        if let Some(base) = name.strip_suffix(".log.swap").and_then(|b| b.parse::<i64>().ok()) {
            swaps.push(base);
        } else if let Some(base) = name.strip_suffix(".log").and_then(|b| b.parse::<i64>().ok()) {
            logs.push(base);
        } else if name.ends_with(".log.cleaned") {
            warn!(%topic, partition, file = %name, "discarding an uncommitted cleaned segment");
            remove_if_present(&dir.join(&name)).await?;
        }
    }
    swaps.sort_unstable();
    for base in swaps {
        let swap_path = dir.join(format!("{base:020}.log.swap"));
        let file = SegmentFile::open(&swap_path, mode).await?;
        let size = file.file_size().await?;
        let scanned = recover_file(&file, base, size, index_interval_bytes, topic, partition).await?;
        file.close().await?;
        for &old in logs.iter().filter(|&&old| old > base && old < scanned.next_offset) {
            remove_segment_files(dir, old).await;
        }
        for extension in ["index", "timeindex"] {
            remove_if_present(&segment_path(dir, base, extension)).await?;
        }
        rename(&swap_path, &segment_path(dir, base, "log")).await?;
        sync_dir(dir).await?;
        warn!(%topic, partition, base, "finished a cleaned-segment swap interrupted by a crash");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use odradek_core::log::LogConfig;
    use odradek_core::records::{decode_key_values, encode_batch};
    use std::collections::BTreeMap;

    fn run<F: std::future::Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default().spawn(move || async move { test().await }).unwrap().join().unwrap();
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("odradek-clean-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn compacted() -> LogConfig {
        LogConfig { segment_bytes: 2048, compact: true, delete: false, index_interval_bytes: 256, ..LogConfig::default() }
    }

    /// Writes `rounds` updates of keys k0..k9, each in its own batch; returns the latest value.
    async fn fill(store: &PartitionStore, rounds: usize) -> BTreeMap<String, String> {
        let mut latest = BTreeMap::new();
        for round in 0..rounds {
            for key in 0..10 {
                let (k, v) = (format!("k{key}"), format!("v{round}-{key}"));
                let records = encode_batch(&[(Bytes::from(k.clone()), Some(Bytes::from(v.clone())))], 1000);
                crate::storage::test_support::append(store, records).await;
                latest.insert(k, v);
            }
        }
        store.high_watermark.set(store.log_end_offset());
        latest
    }

    /// Every record from the log start, by reading as a consumer does.
    async fn consume(store: &PartitionStore) -> Vec<(i64, String, String)> {
        let mut out = Vec::new();
        let mut offset = store.log_start_offset();
        while offset < store.high_watermark() {
            let chunk = store.read_upto(offset, 1 << 16, store.high_watermark()).await.unwrap();
            assert!(!chunk.is_empty(), "a read below the high watermark returns data (offset {offset})");
            // Like a consumer: decode the first batch, then ask again from after it.
            let header = BatchHeader::parse(&chunk).unwrap();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut chunk.clone()).unwrap();
            for record in set.records {
                if record.offset >= offset {
                    let text = |b: Option<Bytes>| String::from_utf8(b.unwrap().to_vec()).unwrap();
                    out.push((record.offset, text(record.key), text(record.value)));
                }
            }
            offset = header.next_offset();
        }
        out
    }

    fn latest_of(records: &[(i64, String, String)]) -> BTreeMap<String, String> {
        records.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect()
    }

    #[test]
    fn cleaning_keeps_every_latest_value_and_survives_reopening() {
        run(|| async {
            let dir = temp_dir("reopen");
            let store = PartitionStore::open(&dir, "t", 0, compacted(), WriteMode::Direct).await.unwrap();
            let latest = fill(&store, 30).await;
            let stats = store.clean(10_000, 1 << 20, Stable::none()).await.unwrap().expect("all dirty");
            assert!(stats.bytes_after < stats.bytes_before / 3, "{stats:?}");
            let records = consume(&store).await;
            assert!(records.windows(2).all(|w| w[0].0 < w[1].0), "offsets increase");
            assert_eq!(latest_of(&records), latest);
            assert!(records.len() < 100, "superseded values are gone: {}", records.len());
            let end = store.log_end_offset();
            drop(store);

            let store = PartitionStore::open(&dir, "t", 0, compacted(), WriteMode::Direct).await.unwrap();
            assert_eq!(store.log_end_offset(), end);
            assert_eq!(latest_of(&consume(&store).await), latest);
            let more = fill(&store, 5).await;
            store.clean(10_000, 1 << 20, Stable::none()).await.unwrap();
            let records = consume(&store).await;
            assert_eq!(latest_of(&records), more);
            std::fs::remove_dir_all(dir).unwrap();
        });
    }

    /// A crash after the swap was committed (the `.swap` rename) but before the old segments
    /// were deleted: startup must finish the swap, not keep both copies or lose either.
    #[test]
    fn a_committed_swap_is_finished_at_startup() {
        run(|| async {
            let dir = temp_dir("swap");
            let store = PartitionStore::open(&dir, "t", 0, compacted(), WriteMode::Direct).await.unwrap();
            let latest = fill(&store, 30).await;
            let end = store.log_end_offset();
            let segments: Vec<Segment> = store.log.borrow().segments().to_vec();
            drop(store);
            let dir = dir.join("t-0");
            // Build the state a crash leaves: a committed swap file holding the first segment's
            // cleaned form (here its last batch, as if the others were superseded), an
            // uncommitted cleaned file, and every old segment still in place.
            let first = &segments[0];
            let old = std::fs::read(segment_path(&dir, first.base_offset, "log")).unwrap();
            let keep = batch::scan_headers(&old).last().map(|(p, h)| old[p..p + h.total_len()].to_vec()).unwrap();
            std::fs::write(dir.join(format!("{:020}.log.swap", first.base_offset)), &keep).unwrap();
            std::fs::write(dir.join(format!("{:020}.log.cleaned", segments[1].base_offset)), b"partial").unwrap();

            let store = PartitionStore::open(dir.parent().unwrap(), "t", 0, compacted(), WriteMode::Direct).await.unwrap();
            assert_eq!(store.log_end_offset(), end);
            let names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            assert!(!names.iter().any(|n| n.ends_with(".swap") || n.ends_with(".cleaned")), "{names:?}");
            let records = consume(&store).await;
            assert!(records.windows(2).all(|w| w[0].0 < w[1].0), "offsets increase");
            assert_eq!(latest_of(&records), latest, "no latest value lost");
            let keys = decode_key_values(&Bytes::from(keep)).unwrap();
            assert_eq!(records[0].0, segments[0].next_offset - keys.len() as i64);
            std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
        });
    }

    #[test]
    fn an_unchanged_log_is_not_rewritten() {
        run(|| async {
            let dir = temp_dir("unchanged");
            let store = PartitionStore::open(&dir, "t", 0, compacted(), WriteMode::Direct).await.unwrap();
            fill(&store, 30).await;
            store.clean(10_000, 1 << 20, Stable::none()).await.unwrap().expect("first pass");
            // Later passes merge the small cleaned segments until runs stop changing.
            let mut segments: Vec<Segment> = store.log.borrow().segments().to_vec();
            for _ in 0..5 {
                store.first_dirty_offset.set(0);
                store.clean(10_000, 1 << 20, Stable::none()).await.unwrap().expect("forced pass");
                let now: Vec<Segment> = store.log.borrow().segments().to_vec();
                if now == segments {
                    break;
                }
                assert!(now.len() < segments.len(), "a changing pass merges segments");
                segments = now;
            }
            let files = |dir: &Path| -> Vec<(String, std::time::SystemTime)> {
                let mut names: Vec<_> = std::fs::read_dir(dir.join("t-0"))
                    .unwrap()
                    .map(|e| e.unwrap())
                    .map(|e| (e.file_name().into_string().unwrap(), e.metadata().unwrap().modified().unwrap()))
                    .collect();
                names.sort();
                names
            };
            let before = files(&dir);
            store.first_dirty_offset.set(0);
            let again = store.clean(10_000, 1 << 20, Stable::none()).await.unwrap().expect("forced pass");
            assert_eq!(again.bytes_before, again.bytes_after);
            assert_eq!(store.log.borrow().segments().to_vec(), segments);
            assert_eq!(files(&dir), before, "no file rewritten");
            assert_eq!(store.clean(10_000, 1 << 20, Stable::none()).await.unwrap(), None, "nothing dirty");
            std::fs::remove_dir_all(dir).unwrap();
        });
    }
}
