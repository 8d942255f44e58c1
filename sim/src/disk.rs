//! A node's simulated disk: what was written (page cache) and what is synced. A crash keeps
//! the synced state; with torn writes on, a prefix of the unsynced writes survives too and the
//! last surviving log write may be cut short, as after a power loss mid-write. Recovery then
//! runs core's own log recovery over the bytes.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use odradek_core::batch;
use odradek_core::fetcher::TopicPartition;
use odradek_core::ids::{LeaderEpoch, Offset, Term};
use odradek_core::log::recover_segment;
use odradek_core::raft::{Entry, HardState, Index};
use odradek_core::producer::ProducerStates;
use odradek_core::replica::{EpochCache, PersistedState};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One batch as stored in the partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub base: i64,
    pub end: i64,
    pub epoch: i32,
    pub bytes: Bytes,
}

/// One partition's log as the disk holds it.
#[derive(Debug, Default)]
pub struct PartitionLog {
    pub log_start: i64,
    pub batches: Vec<StoredBatch>,
    /// Data below this offset is synced.
    pub log_durable: i64,
    /// Syncs in flight: `(id, through)`; a truncation clamps them (a sync must not cover data
    /// that a later truncation removed).
    pub pending_log_syncs: Vec<(u64, i64)>,
    pub epoch_checkpoint: Option<Vec<u8>>,
    pub hw_checkpoint: i64,
    /// Bumped whenever the partition log is cut (truncation, crash), so invariant checkers
    /// know to re-verify it.
    pub log_cuts: u64,
    /// Batches written since the simulator last looked (appends, and batches recovery kept
    /// from a torn tail), for the check that one offset in one leader epoch holds one batch.
    pub fresh: Vec<StoredBatch>,
}

#[derive(Debug, Default)]
pub struct Disk {
    // ---- the metadata log and the vote (Raft) ----
    pub raft_log: Vec<Entry>,
    /// Entries `..raft_durable` are synced.
    pub raft_durable: usize,
    pub hard_written: HardState,
    pub hard_durable: HardState,
    /// The partition logs, each present once its partition exists on this node.
    pub logs: BTreeMap<TopicPartition, PartitionLog>,
}

impl Disk {
    /// The log of `partition`, created empty on first use (a new replica's directory).
    pub fn log_mut(&mut self, partition: &TopicPartition) -> &mut PartitionLog {
        if !self.logs.contains_key(partition) {
            self.logs.insert(partition.clone(), PartitionLog::default());
        }
        self.logs.get_mut(partition).expect("inserted")
    }

    /// The log of `partition`; an empty one if it has none yet.
    pub fn log(&self, partition: &TopicPartition) -> &PartitionLog {
        static EMPTY: PartitionLog = PartitionLog {
            log_start: 0,
            batches: Vec::new(),
            log_durable: 0,
            pending_log_syncs: Vec::new(),
            epoch_checkpoint: None,
            hw_checkpoint: 0,
            log_cuts: 0,
            fresh: Vec::new(),
        };
        self.logs.get(partition).unwrap_or(&EMPTY)
    }

    /// A Raft sync through `through` (with that entry's `term`) finished.
    pub fn complete_raft_sync(&mut self, through: Index, term: Term) -> bool {
        let i = through.0 as usize;
        let matches = i >= 1 && self.raft_log.get(i - 1).is_some_and(|e| e.term == term);
        if matches {
            self.raft_durable = self.raft_durable.max(i);
        }
        matches
    }

    /// Power loss. Synced data stays; with `torn`, a random prefix of the unsynced writes
    /// survives and the last surviving batch of each log may be cut short.
    pub fn crash(&mut self, torn: bool, rng: &mut ChaCha8Rng) {
        // Raft log: unsynced entries are lost, or a prefix of them survives.
        let mut keep = self.raft_durable;
        if torn && self.raft_log.len() > keep {
            keep += rng.gen_range(0..=self.raft_log.len() - keep);
        }
        self.raft_log.truncate(keep);
        self.raft_durable = keep;
        if torn && rng.gen_bool(0.5) {
            self.hard_durable = self.hard_written;
        }
        self.hard_written = self.hard_durable;
        for log in self.logs.values_mut() {
            log.crash(torn, rng);
        }
    }
}

impl PartitionLog {
    pub fn log_end(&self) -> i64 {
        self.batches.last().map_or(self.log_start, |b| b.end)
    }

    /// Whole batches with `from <= base` and `end <= to`, concatenated.
    pub fn read(&self, from: i64, to: i64) -> Bytes {
        let start = self.batches.partition_point(|b| b.base < from);
        let mut out = BytesMut::new();
        for b in self.batches[start..].iter().take_while(|b| b.end <= to) {
            out.extend_from_slice(&b.bytes);
        }
        out.freeze()
    }

    /// What a consumer fetch at `from` serves, as Kafka does: whole batches from the one
    /// holding `from` (which may start before it) up to `to`.
    pub fn read_for_consumer(&self, from: i64, to: i64) -> Bytes {
        let start = self.batches.partition_point(|b| b.end <= from);
        let from = self.batches.get(start).map_or(from, |b| b.base.min(from));
        self.read(from, to)
    }

    pub fn append(&mut self, base_offset: Offset, end_offset: Offset, parts: &[Bytes]) {
        assert_eq!(base_offset.0, self.log_end(), "append not at the log end");
        let mut next = base_offset.0;
        let batches = parts.iter().flat_map(|records| batch::scan_headers(records).map(move |(p, h)| (records, p, h)));
        for (records, position, header) in batches {
            assert_eq!(header.base_offset, next, "appended batches not contiguous");
            let stored = StoredBatch {
                base: header.base_offset,
                end: header.next_offset(),
                epoch: header.partition_leader_epoch,
                bytes: records.slice(position..position + header.total_len()),
            };
            self.fresh.push(stored.clone());
            self.batches.push(stored);
            next = header.next_offset();
        }
        assert_eq!(next, end_offset.0, "append's end offset does not match its batches");
    }

    pub fn truncate(&mut self, to: i64) {
        assert!(
            self.batches.iter().all(|b| b.end <= to || b.base >= to),
            "truncation to {to} cuts a batch"
        );
        self.batches.retain(|b| b.end <= to);
        self.log_durable = self.log_durable.min(to);
        for (_, through) in &mut self.pending_log_syncs {
            *through = (*through).min(to);
        }
        self.log_cuts += 1;
    }

    pub fn reset_log(&mut self, start_offset: i64) {
        self.batches.clear();
        self.log_start = start_offset;
        self.log_durable = start_offset;
        for (_, through) in &mut self.pending_log_syncs {
            *through = start_offset;
        }
        self.log_cuts += 1;
    }

    /// A log sync finished; returns the offset now durable.
    pub fn complete_log_sync(&mut self, id: u64) -> Option<i64> {
        let position = self.pending_log_syncs.iter().position(|&(i, _)| i == id)?;
        let (_, through) = self.pending_log_syncs.remove(position);
        let through = through.min(self.log_end());
        self.log_durable = self.log_durable.max(through);
        Some(self.log_durable)
    }

    /// Power loss for this log: synced batches stay; with `torn`, some unsynced ones too and
    /// perhaps a torn write after them, which recovery must find the end of.
    fn crash(&mut self, torn: bool, rng: &mut ChaCha8Rng) {
        self.pending_log_syncs.clear();
        // Partition log: keep synced batches, then maybe some unsynced ones, then maybe what
        // the next write left behind: cut short (with garbage past the cut), or whole in
        // length with a sector in its records that never reached the platter (a torn page).
        // Recovery (core's, over these bytes) must find the valid end on its own.
        let synced = self.batches.partition_point(|b| b.end <= self.log_durable);
        let mut survivors = synced;
        if torn && self.batches.len() > synced {
            survivors += rng.gen_range(0..=self.batches.len() - synced);
        }
        let mut tail = BytesMut::new();
        if torn && survivors < self.batches.len() && rng.gen_bool(0.5) {
            let next = &self.batches[survivors].bytes;
            if rng.gen_bool(0.5) {
                let cut = rng.gen_range(1..next.len());
                tail.extend_from_slice(&next[..cut]);
                if rng.gen_bool(0.3) {
                    // Garbage past the torn write (a reused block).
                    let flip = rng.gen_range(0..tail.len());
                    tail[flip] ^= 0x5a;
                }
            } else {
                // Every byte up to the batch's length is there, but one 8-byte "sector" of
                // its records holds stale data: only the CRC tells.
                tail.extend_from_slice(next);
                let from = rng.gen_range(batch::HEADER_LEN..tail.len());
                for byte in &mut tail[from..(from + 8).min(next.len())] {
                    *byte = !*byte;
                }
            }
        }
        self.batches.truncate(survivors);
        let mut bytes = BytesMut::new();
        for b in &self.batches {
            bytes.extend_from_slice(&b.bytes);
        }
        let valid_before = bytes.len();
        bytes.extend_from_slice(&tail);
        let recovered = recover_segment(self.log_start, &bytes, 4096);
        let valid_len = recovered.valid_len as usize;
        assert!(
            valid_len >= valid_before,
            "recovery dropped whole synced or surviving batches: valid {valid_len} of {valid_before}"
        );
        // Whatever recovery accepted past the surviving batches stays in the log.
        let bytes = bytes.freeze();
        let kept = bytes.slice(valid_before..valid_len);
        for (position, header) in batch::scan_headers(&kept) {
            let stored = StoredBatch {
                base: header.base_offset,
                end: header.next_offset(),
                epoch: header.partition_leader_epoch,
                bytes: kept.slice(position..position + header.total_len()),
            };
            self.fresh.push(stored.clone());
            self.batches.push(stored);
        }
        // Recovery fsyncs what it keeps.
        self.log_durable = self.log_end();
        self.log_cuts += 1;
    }

    /// What the replica is built from after recovery (the io driver's rule 6).
    pub fn persisted_state(&self, now_ms: i64) -> PersistedState {
        let mut cache = match &self.epoch_checkpoint {
            Some(bytes) => EpochCache::decode(bytes).expect("a checkpoint this disk wrote"),
            None => EpochCache::new(),
        };
        cache.truncate_from_end(Offset(self.log_end()));
        let from = cache.latest().map_or(self.log_start, |e| e.start_offset.0);
        for b in self.batches.iter().filter(|b| b.base >= from) {
            cache.assign(LeaderEpoch(b.epoch), Offset(b.base));
        }
        // The broker rebuilds producer state by walking every batch header of the log.
        let mut producers = ProducerStates::default();
        for b in &self.batches {
            let header = batch::BatchHeader::parse(&b.bytes).expect("a stored batch parses");
            producers.replay(now_ms, &header, &b.bytes);
        }
        PersistedState {
            log_start_offset: Offset(self.log_start),
            log_end_offset: Offset(self.log_end()),
            durable_offset: Offset(self.log_durable),
            epoch_cache: cache,
            high_watermark: Offset(self.hw_checkpoint),
            producers,
        }
    }
}

/// A node's wall clock: offset and rate relative to simulated (global) time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub skew_ms: i64,
    pub drift_ppm: i64,
}

impl Clock {
    pub fn local(&self, global_ms: i64) -> i64 {
        self.skew_ms + global_ms + global_ms * self.drift_ppm / 1_000_000
    }

    /// The first global time at which the local clock reads at least `local_ms`.
    pub fn global(&self, local_ms: i64) -> i64 {
        let mut g = ((local_ms - self.skew_ms) as i128 * 1_000_000
            / (1_000_000 + self.drift_ppm) as i128) as i64;
        while self.local(g) < local_ms {
            g += 1;
        }
        while g > 0 && self.local(g - 1) >= local_ms {
            g -= 1;
        }
        g.max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn clock_round_trips() {
        for clock in [
            Clock { skew_ms: 0, drift_ppm: 0 },
            Clock { skew_ms: 1234, drift_ppm: 40_000 },
            Clock { skew_ms: 7, drift_ppm: -30_000 },
        ] {
            for g in [0, 1, 999, 123_456] {
                let l = clock.local(g);
                assert!(clock.global(l) <= g);
                assert!(clock.local(clock.global(l)) >= l);
            }
        }
    }

    #[test]
    fn crash_keeps_synced_raft_entries_only_without_tearing() {
        let mut disk = Disk::default();
        for i in 1..=5 {
            disk.raft_log.push(Entry { index: Index(i), term: Term(1), data: Bytes::new() });
        }
        assert!(disk.complete_raft_sync(Index(3), Term(1)));
        disk.crash(false, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(disk.raft_log.len(), 3);
    }
}
