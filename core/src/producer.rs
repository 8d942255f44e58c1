//! A partition's idempotent-producer state (Kafka's `ProducerStateManager`, KIP-98 and
//! KIP-360): per producer id, its epoch and the sequence ranges and offsets of its last five
//! batches. The leader checks a client's batch against it, so a retried batch is answered with
//! its first offsets instead of being written twice, and a gap in the sequence is refused.
//! Every replica builds it from the batches it writes, so a new leader dedups a retry of a
//! batch its predecessor acknowledged.
//!
//! Transactions (KIP-98) add, per producer, the first offset of its transaction under way on
//! the partition, which holds the last stable offset below it, and per partition the list of
//! aborted transactions a `read_committed` consumer skips. Both change with the batches and
//! markers written, so every replica has them as the leader does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::batch::{BatchHeader, ControlMarker};
use crate::error::ErrorCode;
use crate::ids::Offset;

/// Batches remembered per producer: a producer keeps at most five requests in flight per
/// partition (`max.in.flight.requests.per.connection` ≤ 5 with idempotence).
pub const BATCHES_KEPT: usize = 5;

/// What a batch header says about its producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub transactional: bool,
}

impl ProducerBatch {
    /// The producer fields of a data batch; none for a batch without a producer id.
    pub fn of(header: &BatchHeader) -> Option<ProducerBatch> {
        (header.producer_id >= 0).then(|| ProducerBatch {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first_seq: header.base_sequence,
            last_seq: last_sequence(header.base_sequence, header.last_offset_delta),
            transactional: header.is_transactional(),
        })
    }
}

/// The last sequence of a batch: sequences wrap from `i32::MAX` to 0 (Kafka's
/// `DefaultRecordBatch.incrementSequence`).
pub fn last_sequence(first_seq: i32, last_offset_delta: i32) -> i32 {
    if first_seq < 0 {
        return first_seq;
    }
    let last = i64::from(first_seq) + i64::from(last_offset_delta);
    if last > i64::from(i32::MAX) {
        (last - i64::from(i32::MAX) - 1) as i32
    } else {
        last as i32
    }
}

/// Where one of a producer's batches landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlace {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most [`BATCHES_KEPT`].
    pub batches: VecDeque<BatchPlace>,
    /// When this replica wrote the newest batch (its own clock, not the batch's timestamp, which
    /// is the client's): the entry expires `producer.id.expiration.ms` after it.
    pub last_written_ms: i64,
    /// The first offset of the producer's transaction under way here, if one is.
    pub current_txn_first_offset: Option<Offset>,
    /// The newest coordinator epoch of the markers written for the producer: a marker from an
    /// older coordinator is refused.
    pub coordinator_epoch: i32,
    /// The producer's last ended transaction here: its first offset and its marker's. A
    /// truncation that removes the marker but not the data opens the transaction again.
    pub last_txn: Option<(Offset, Offset)>,
    /// Where the producer's last marker is, with or without a transaction here: a marker
    /// that fenced the producer (the coordinator's abort with a bumped epoch) keeps the
    /// producer known, so its zombie's late batches are refused for their old epoch rather
    /// than accepted as a new producer's and left open for ever.
    pub last_marker: Option<Offset>,
}

impl ProducerEntry {
    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }
}

/// The leader's verdict on a client's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it.
    Append,
    /// A retry of a batch already written here: answer with its place, write nothing.
    Duplicate(BatchPlace),
}

/// An aborted transaction on the partition: a `read_committed` consumer drops the producer's
/// batches from `first_offset` up to the marker at `last_offset` (Kafka's `AbortedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
    /// `(current_txn_first_offset, producer id)` of every transaction under way: the first is
    /// the first unstable offset.
    ongoing: BTreeSet<(Offset, i64)>,
    /// In marker order.
    aborted: VecDeque<AbortedTxn>,
    /// Ended transactions whose marker the high watermark may not cover yet, `(first offset,
    /// marker offset)` in marker order: they stay unstable until it does (Kafka's
    /// unreplicated transactions), or a consumer could read a commit a leader change undoes.
    unreplicated: VecDeque<(Offset, Offset)>,
    /// KIP-890's verification guards: a producer whose batch would start a transaction here
    /// while the leader asks the coordinator whether the transaction holds this partition.
    /// A marker, or the transaction starting, takes the guard away, so an answer that
    /// arrives after the transaction ended cannot let its late batch in.
    verifying: BTreeMap<i64, u64>,
    next_guard: u64,
}

impl ProducerStates {
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Each producer the partition remembers: id, epoch and its last batch's last sequence
    /// (DescribeProducers).
    pub fn active(&self) -> impl Iterator<Item = (i64, i16, i32)> + '_ {
        self.producers.iter().map(|(&id, entry)| (id, entry.epoch, entry.last_seq().unwrap_or(-1)))
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks a client's batch as Kafka's `ProducerAppendInfo` does for a leader's append:
    /// - an epoch older than the producer's is INVALID_PRODUCER_EPOCH;
    /// - the same epoch and sequence range as one of the last five batches is a duplicate;
    /// - a new epoch must start at sequence 0, and within an epoch the sequence must follow
    ///   the last batch's (OUT_OF_ORDER_SEQUENCE_NUMBER otherwise);
    /// - a producer this partition has no state for (new, expired, or its batches removed by
    ///   retention) may start at any sequence (KIP-360).
    pub fn check(&self, batch: &ProducerBatch) -> Result<Verdict, ErrorCode> {
        let Some(entry) = self.producers.get(&batch.producer_id) else { return Ok(Verdict::Append) };
        if batch.epoch < entry.epoch {
            return Err(ErrorCode::InvalidProducerEpoch);
        }
        if !batch.transactional && entry.current_txn_first_offset.is_some() {
            // Kafka's `ProducerAppendInfo`: a producer in a transaction writes only into it.
            return Err(ErrorCode::InvalidTxnState);
        }
        if batch.epoch == entry.epoch {
            let same = entry.batches.iter().find(|b| b.first_seq == batch.first_seq && b.last_seq == batch.last_seq);
            if let Some(place) = same {
                return Ok(Verdict::Duplicate(*place));
            }
            match entry.last_seq() {
                Some(last) if !in_sequence(last, batch.first_seq) => Err(ErrorCode::OutOfOrderSequenceNumber),
                _ => Ok(Verdict::Append),
            }
        } else if batch.first_seq != 0 {
            Err(ErrorCode::OutOfOrderSequenceNumber)
        } else {
            Ok(Verdict::Append)
        }
    }

    /// A batch written at `first_offset..=last_offset` at `now_ms`, by the leader or replicated
    /// from it. A newer epoch starts the producer's batches over.
    pub fn record(&mut self, now_ms: i64, batch: &ProducerBatch, first_offset: Offset, last_offset: Offset) {
        let place = BatchPlace { first_seq: batch.first_seq, last_seq: batch.last_seq, first_offset, last_offset };
        let entry = Self::entry(&mut self.producers, batch.producer_id, batch.epoch, now_ms);
        if batch.epoch != entry.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(place);
        entry.last_written_ms = entry.last_written_ms.max(now_ms);
        if batch.transactional && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(first_offset);
            self.ongoing.insert((first_offset, batch.producer_id));
            self.verifying.remove(&batch.producer_id);
        }
    }

    /// Whether `batch` would start its producer's transaction on this partition: the batch
    /// the leader verifies with the coordinator first (KIP-890).
    pub fn starts_transaction(&self, batch: &ProducerBatch) -> bool {
        batch.transactional && self.current_txn_first_offset(batch.producer_id).is_none()
    }

    /// A guard for a verification of the producer's next transaction here; one already
    /// held is shared (Kafka's `maybeStartTransactionVerification`).
    pub fn begin_verification(&mut self, producer_id: i64) -> u64 {
        let next = &mut self.next_guard;
        *self.verifying.entry(producer_id).or_insert_with(|| {
            *next += 1;
            *next
        })
    }

    /// Whether the guard a verification began with still stands: no marker for the
    /// producer was written since.
    pub fn verified(&self, producer_id: i64, guard: u64) -> bool {
        self.verifying.get(&producer_id) == Some(&guard)
    }

    fn entry(producers: &mut BTreeMap<i64, ProducerEntry>, producer_id: i64, epoch: i16, now_ms: i64) -> &mut ProducerEntry {
        producers.entry(producer_id).or_insert_with(|| ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_KEPT),
            last_written_ms: now_ms,
            current_txn_first_offset: None,
            coordinator_epoch: -1,
            last_txn: None,
            last_marker: None,
        })
    }

    /// Checks a transaction marker the coordinator asks the leader to write (Kafka's
    /// `appendEndTxnMarker` checks): not for an epoch older than the producer's
    /// (INVALID_PRODUCER_EPOCH), not from an older coordinator (TRANSACTION_COORDINATOR_FENCED).
    pub fn check_marker(&self, producer_id: i64, epoch: i16, marker: ControlMarker) -> Result<(), ErrorCode> {
        let Some(entry) = self.producers.get(&producer_id) else { return Ok(()) };
        if epoch < entry.epoch {
            return Err(ErrorCode::InvalidProducerEpoch);
        }
        if marker.coordinator_epoch < entry.coordinator_epoch {
            return Err(ErrorCode::TransactionCoordinatorFenced);
        }
        Ok(())
    }

    /// A marker written at `offset`: the producer's transaction here ends, and an aborted one
    /// is listed for `read_committed` readers. A newer epoch (the coordinator fenced the
    /// producer) starts its batches over.
    pub fn end_transaction(&mut self, now_ms: i64, producer_id: i64, epoch: i16, marker: ControlMarker, offset: Offset) {
        let entry = Self::entry(&mut self.producers, producer_id, epoch, now_ms);
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = entry.coordinator_epoch.max(marker.coordinator_epoch);
        entry.last_written_ms = entry.last_written_ms.max(now_ms);
        entry.last_marker = Some(offset);
        self.verifying.remove(&producer_id);
        if let Some(first_offset) = entry.current_txn_first_offset.take() {
            self.ongoing.remove(&(first_offset, producer_id));
            self.unreplicated.push_back((first_offset, offset));
            entry.last_txn = Some((first_offset, offset));
            if !marker.commit {
                self.aborted.push_back(AbortedTxn { producer_id, first_offset, last_offset: offset });
            }
        }
    }

    /// A batch read back from the log (recovery after a restart) or replicated: data batches
    /// of idempotent producers are recorded as when they were written, markers end their
    /// transactions. `batch` holds the whole batch, for a marker's record.
    pub fn replay(&mut self, now_ms: i64, header: &BatchHeader, batch: &[u8]) {
        let marker = if header.is_control() { crate::batch::control_marker(batch) } else { None };
        self.replay_marked(now_ms, header, marker);
    }

    /// As [`Self::replay`], with the marker of a control batch already read.
    pub fn replay_marked(&mut self, now_ms: i64, header: &BatchHeader, marker: Option<ControlMarker>) {
        if header.producer_id < 0 {
            return;
        }
        if header.is_control() {
            if let Some(marker) = marker {
                self.end_transaction(now_ms, header.producer_id, header.producer_epoch, marker, Offset(header.base_offset));
            }
        } else if let Some(producer) = ProducerBatch::of(header) {
            self.record(now_ms, &producer, Offset(header.base_offset), Offset(header.last_offset()));
        }
    }

    /// The first offset of the oldest transaction under way, or ended by a marker at or past
    /// `high_watermark`: `read_committed` readers stop there (the last stable offset is the
    /// smaller of it and the high watermark).
    pub fn first_unstable_offset(&self, high_watermark: Offset) -> Option<Offset> {
        let unreplicated = self.unreplicated.iter().filter(|(_, marker)| *marker >= high_watermark).map(|(first, _)| *first).min();
        match (self.ongoing.first().map(|(offset, _)| *offset), unreplicated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The high watermark reached `high_watermark`: ended transactions whose marker it covers
    /// are stable.
    pub fn replicated(&mut self, high_watermark: Offset) {
        while self.unreplicated.front().is_some_and(|(_, marker)| *marker < high_watermark) {
            self.unreplicated.pop_front();
        }
    }

    /// The aborted transactions a read of `from..upto` meets (Kafka's `collectAbortedTxns`):
    /// those whose marker is at or after `from` and whose first offset is below `upto`.
    pub fn aborted_between(&self, from: Offset, upto: Offset) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|t| t.last_offset < from);
        self.aborted.iter().skip(start).filter(|t| t.first_offset < upto).copied().collect()
    }

    /// The producer's transaction under way here, if any (DescribeProducers).
    pub fn current_txn_first_offset(&self, producer_id: i64) -> Option<Offset> {
        self.producers.get(&producer_id).and_then(|e| e.current_txn_first_offset)
    }

    /// The log lost everything at or after `to` (a follower's truncation): the batches that
    /// were there are forgotten, and a producer with none left is forgotten too (its next batch
    /// is accepted at any sequence, as for a producer whose records retention removed).
    /// A transaction whose marker went but whose data did not is under way again; one whose
    /// data went is gone.
    pub fn truncate(&mut self, to: Offset) {
        let ongoing = &mut self.ongoing;
        self.producers.retain(|&producer_id, entry| {
            while entry.batches.back().is_some_and(|b| b.last_offset >= to) {
                entry.batches.pop_back();
            }
            if let Some(first) = entry.current_txn_first_offset.filter(|first| *first >= to) {
                ongoing.remove(&(first, producer_id));
                entry.current_txn_first_offset = None;
            }
            if let Some((first, _)) = entry.last_txn.filter(|(_, marker)| *marker >= to) {
                entry.last_txn = None;
                if first < to {
                    entry.current_txn_first_offset = Some(first);
                    ongoing.insert((first, producer_id));
                }
            }
            // The epoch a truncated marker brought stays: the coordinator writes it again.
            entry.last_marker = entry.last_marker.filter(|m| *m < to);
            !entry.batches.is_empty() || entry.current_txn_first_offset.is_some() || entry.last_txn.is_some() || entry.last_marker.is_some()
        });
        while self.aborted.back().is_some_and(|t| t.last_offset >= to) {
            self.aborted.pop_back();
        }
        while self.unreplicated.back().is_some_and(|(_, marker)| *marker >= to) {
            self.unreplicated.pop_back();
        }
    }

    /// The log now starts at `start`: producers whose last batch lies below it are forgotten
    /// (Kafka's `onLowWatermarkUpdated`).
    /// A producer with a transaction under way stays, as do aborted transactions whose
    /// marker is still in the log.
    pub fn advance_log_start(&mut self, start: Offset) {
        self.producers.retain(|_, entry| {
            entry.current_txn_first_offset.is_some()
                || entry.batches.back().is_some_and(|b| b.last_offset >= start)
                || entry.last_marker.is_some_and(|marker| marker >= start)
        });
        while self.aborted.front().is_some_and(|t| t.last_offset < start) {
            self.aborted.pop_front();
        }
    }

    /// Forgets producers whose last batch is `expiration_ms` old (`producer.id.expiration.ms`),
    /// except those with a transaction under way (the coordinator's timeout ends it).
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers.retain(|_, entry| {
            entry.current_txn_first_offset.is_some() || now_ms.saturating_sub(entry.last_written_ms) < expiration_ms
        });
    }
}

/// Why a producer snapshot file could not be read: the broker then uses an older snapshot or
/// rebuilds from the whole log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("not a producer snapshot (version {0})")]
    Version(u8),
    #[error("checksum mismatch")]
    Checksum,
}

/// Version 1 had no transaction fields; it still reads.
const SNAPSHOT_VERSION: u8 = 2;

impl ProducerStates {
    /// The state as of `offset` (what the log below it says), from a state that may already
    /// hold later batches: those are dropped as by [`Self::truncate`].
    pub fn at(&self, offset: Offset) -> ProducerStates {
        let mut state = self.clone();
        state.truncate(offset);
        state
    }

    /// The snapshot file's bytes (Kafka's `<offset>.snapshot` plays this part; the encoding is
    /// odradek's): version, producer count, per producer its id, epoch, coordinator epoch,
    /// transaction offsets (-1 for none) and batches, then the aborted transactions, then a
    /// CRC32C of everything before it. When each producer last wrote is not kept: a loaded
    /// state counts its expiry from the load.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let none = Offset(-1);
        for (producer_id, entry) in &self.producers {
            out.extend_from_slice(&producer_id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            let (last_first, last_marker) = entry.last_txn.unwrap_or((none, none));
            let marker = entry.last_marker.unwrap_or(none);
            for offset in [entry.current_txn_first_offset.unwrap_or(none), last_first, last_marker, marker] {
                out.extend_from_slice(&offset.0.to_be_bytes());
            }
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.0.to_be_bytes());
                out.extend_from_slice(&b.last_offset.0.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for t in &self.aborted {
            out.extend_from_slice(&t.producer_id.to_be_bytes());
            out.extend_from_slice(&t.first_offset.0.to_be_bytes());
            out.extend_from_slice(&t.last_offset.0.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads [`Self::encode_snapshot`]'s bytes; producers count as written at `now_ms`.
    pub fn decode_snapshot(bytes: &[u8], now_ms: i64) -> Result<ProducerStates, SnapshotError> {
        let (body, crc) = bytes.split_at_checked(bytes.len().saturating_sub(4)).ok_or(SnapshotError::Truncated(0))?;
        if crc.len() != 4 {
            return Err(SnapshotError::Truncated(bytes.len()));
        }
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
            return Err(SnapshotError::Checksum);
        }
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], SnapshotError> {
            let slice = body.get(at..at + n).ok_or(SnapshotError::Truncated(at))?;
            at += n;
            Ok(slice)
        };
        let version = take(1)?[0];
        if version != SNAPSHOT_VERSION && version != 1 {
            return Err(SnapshotError::Version(version));
        }
        let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
        let mut producers = BTreeMap::new();
        let mut ongoing = BTreeSet::new();
        let offset = |bytes: &[u8]| {
            let raw = i64::from_be_bytes(bytes.try_into().expect("8 bytes"));
            (raw >= 0).then_some(Offset(raw))
        };
        for _ in 0..count {
            let producer_id = i64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
            let epoch = i16::from_be_bytes(take(2)?.try_into().expect("2 bytes"));
            let (coordinator_epoch, current_txn_first_offset, last_txn, last_marker) = if version >= 2 {
                let coordinator_epoch = i32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
                let current = offset(take(8)?);
                let last_first = offset(take(8)?);
                let last_txn_marker = offset(take(8)?);
                let last_marker = offset(take(8)?);
                (coordinator_epoch, current, last_first.zip(last_txn_marker), last_marker)
            } else {
                (-1, None, None, None)
            };
            if let Some(first) = current_txn_first_offset {
                ongoing.insert((first, producer_id));
            }
            let n = take(1)?[0];
            let mut batches = VecDeque::with_capacity(usize::from(n));
            for _ in 0..n {
                let first_seq = i32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
                let last_seq = i32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
                let first_offset = Offset(i64::from_be_bytes(take(8)?.try_into().expect("8 bytes")));
                let last_offset = Offset(i64::from_be_bytes(take(8)?.try_into().expect("8 bytes")));
                batches.push_back(BatchPlace { first_seq, last_seq, first_offset, last_offset });
            }
            producers.insert(
                producer_id,
                ProducerEntry { epoch, batches, last_written_ms: now_ms, current_txn_first_offset, coordinator_epoch, last_txn, last_marker },
            );
        }
        let mut aborted = VecDeque::new();
        if version >= 2 {
            let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
            for _ in 0..count {
                let producer_id = i64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
                let first_offset = Offset(i64::from_be_bytes(take(8)?.try_into().expect("8 bytes")));
                let last_offset = Offset(i64::from_be_bytes(take(8)?.try_into().expect("8 bytes")));
                aborted.push_back(AbortedTxn { producer_id, first_offset, last_offset });
            }
        }
        // Markers the high watermark had not covered count as covered: a broker restarts from
        // what it synced, and its replica replays the log after the snapshot anyway.
        Ok(ProducerStates { producers, ongoing, aborted, unreplicated: VecDeque::new(), ..Default::default() })
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: i16, first_seq: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: 7,
            epoch,
            first_seq,
            last_seq: last_sequence(first_seq, count - 1),
            transactional: false,
        }
    }

    fn written(states: &mut ProducerStates, b: ProducerBatch, first: i64) {
        let count = i64::from(b.last_seq) - i64::from(b.first_seq);
        states.record(1_000, &b, Offset(first), Offset(first + count));
    }

    #[test]
    fn a_retried_batch_is_found_with_its_offsets_and_a_gap_is_refused() {
        let mut states = ProducerStates::default();
        assert_eq!(states.check(&batch(0, 0, 3)), Ok(Verdict::Append));
        written(&mut states, batch(0, 0, 3), 10);
        written(&mut states, batch(0, 3, 2), 13);
        let retry = states.check(&batch(0, 0, 3)).unwrap();
        assert_eq!(
            retry,
            Verdict::Duplicate(BatchPlace { first_seq: 0, last_seq: 2, first_offset: Offset(10), last_offset: Offset(12) })
        );
        assert_eq!(states.check(&batch(0, 5, 1)), Ok(Verdict::Append));
        assert_eq!(states.check(&batch(0, 6, 1)), Err(ErrorCode::OutOfOrderSequenceNumber), "5 is missing");
        assert_eq!(states.check(&batch(0, 1, 1)), Err(ErrorCode::OutOfOrderSequenceNumber), "overlaps, not equal");
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut states = ProducerStates::default();
        for i in 0..6 {
            written(&mut states, batch(0, i, 1), i64::from(i));
        }
        assert_eq!(states.get(7).unwrap().batches.len(), BATCHES_KEPT);
        assert_eq!(states.check(&batch(0, 0, 1)), Err(ErrorCode::OutOfOrderSequenceNumber), "too old to be found");
        assert!(matches!(states.check(&batch(0, 1, 1)), Ok(Verdict::Duplicate(_))));
    }

    #[test]
    fn epochs_fence_old_producers_and_a_new_epoch_starts_at_zero() {
        let mut states = ProducerStates::default();
        written(&mut states, batch(3, 0, 2), 0);
        assert_eq!(states.check(&batch(2, 2, 1)), Err(ErrorCode::InvalidProducerEpoch));
        assert_eq!(states.check(&batch(4, 2, 1)), Err(ErrorCode::OutOfOrderSequenceNumber));
        assert_eq!(states.check(&batch(4, 0, 1)), Ok(Verdict::Append));
        written(&mut states, batch(4, 0, 1), 2);
        assert_eq!(states.get(7).unwrap().batches.len(), 1, "a new epoch starts over");
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        let mut states = ProducerStates::default();
        written(&mut states, ProducerBatch { last_seq: i32::MAX, ..batch(0, i32::MAX - 1, 2) }, 0);
        assert_eq!(states.check(&batch(0, 0, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn a_snapshot_reads_back_as_written_and_a_damaged_one_is_refused() {
        let mut states = ProducerStates::default();
        for i in 0..7 {
            written(&mut states, batch(2, i * 2, 2), i64::from(i) * 2);
        }
        written(&mut states, ProducerBatch { producer_id: 9, ..batch(0, 0, 1) }, 20);
        let bytes = states.encode_snapshot();
        assert_eq!(ProducerStates::decode_snapshot(&bytes, 1_000), Ok(states.clone()));
        let mut flipped = bytes.clone();
        flipped[6] ^= 1;
        assert_eq!(ProducerStates::decode_snapshot(&flipped, 1_000), Err(SnapshotError::Checksum));
        assert!(ProducerStates::decode_snapshot(&bytes[..3], 1_000).is_err());
        let at = states.at(Offset(12));
        assert_eq!(at.get(7).unwrap().batches.back().unwrap().last_offset, Offset(11));
        assert!(at.get(9).is_none(), "producer 9 wrote only at 20");
    }

    fn txn(epoch: i16, first_seq: i32, count: i32) -> ProducerBatch {
        ProducerBatch { transactional: true, ..batch(epoch, first_seq, count) }
    }

    fn marker(commit: bool, coordinator_epoch: i32) -> ControlMarker {
        ControlMarker { commit, coordinator_epoch }
    }

    #[test]
    fn a_transaction_holds_the_stable_offset_until_its_marker_and_an_abort_is_listed() {
        let mut states = ProducerStates::default();
        written(&mut states, txn(0, 0, 2), 10);
        written(&mut states, ProducerBatch { producer_id: 9, ..txn(0, 0, 1) }, 12);
        written(&mut states, txn(0, 2, 1), 13);
        assert_eq!(states.first_unstable_offset(Offset(i64::MAX)), Some(Offset(10)));
        assert_eq!(states.check(&batch(0, 3, 1)), Err(ErrorCode::InvalidTxnState), "a plain write inside a transaction");
        states.end_transaction(1_000, 7, 0, marker(false, 1), Offset(14));
        assert_eq!(states.first_unstable_offset(Offset(i64::MAX)), Some(Offset(12)), "producer 9 is still open");
        states.end_transaction(1_000, 9, 0, marker(true, 1), Offset(15));
        assert_eq!(states.first_unstable_offset(Offset(i64::MAX)), None);
        let aborted = AbortedTxn { producer_id: 7, first_offset: Offset(10), last_offset: Offset(14) };
        assert_eq!(states.aborted_between(Offset(0), Offset(20)), vec![aborted]);
        assert_eq!(states.aborted_between(Offset(14), Offset(20)), vec![aborted], "its marker is in range");
        assert!(states.aborted_between(Offset(15), Offset(20)).is_empty());
        assert!(states.aborted_between(Offset(0), Offset(10)).is_empty(), "it starts at the upper bound");
        assert_eq!(states.check(&txn(0, 3, 1)), Ok(Verdict::Append), "the next transaction continues the sequence");
    }

    #[test]
    fn an_ended_transaction_stays_unstable_until_the_high_watermark_covers_its_marker() {
        let mut states = ProducerStates::default();
        written(&mut states, txn(0, 0, 2), 4);
        states.end_transaction(1_000, 7, 0, marker(true, 0), Offset(6));
        assert_eq!(states.first_unstable_offset(Offset(6)), Some(Offset(4)), "the marker is not covered");
        assert_eq!(states.first_unstable_offset(Offset(7)), None);
        states.replicated(Offset(7));
        assert_eq!(states.first_unstable_offset(Offset(0)), None, "forgotten once covered");
    }

    #[test]
    fn markers_from_old_epochs_or_old_coordinators_are_refused() {
        let mut states = ProducerStates::default();
        written(&mut states, txn(2, 0, 1), 0);
        assert_eq!(states.check_marker(7, 1, marker(true, 0)), Err(ErrorCode::InvalidProducerEpoch));
        states.end_transaction(1_000, 7, 3, marker(false, 5), Offset(1));
        assert_eq!(states.get(7).unwrap().epoch, 3, "a fencing abort bumps the epoch");
        assert_eq!(states.check(&txn(2, 1, 1)), Err(ErrorCode::InvalidProducerEpoch), "the zombie is fenced");
        assert_eq!(states.check_marker(7, 3, marker(true, 4)), Err(ErrorCode::TransactionCoordinatorFenced));
        assert_eq!(states.check_marker(7, 3, marker(true, 5)), Ok(()));
    }

    #[test]
    fn truncating_a_marker_reopens_its_transaction_and_truncating_the_data_forgets_it() {
        let mut states = ProducerStates::default();
        written(&mut states, txn(0, 0, 2), 4);
        states.end_transaction(1_000, 7, 0, marker(false, 0), Offset(6));
        let mut reopened = states.clone();
        reopened.truncate(Offset(6));
        assert_eq!(reopened.first_unstable_offset(Offset(i64::MAX)), Some(Offset(4)));
        assert!(reopened.aborted_between(Offset(0), Offset(10)).is_empty());
        reopened.truncate(Offset(4));
        assert_eq!(reopened.first_unstable_offset(Offset(i64::MAX)), None);
        assert!(reopened.is_empty());
        let mut retained = states.clone();
        retained.advance_log_start(Offset(6));
        assert_eq!(retained.aborted_between(Offset(6), Offset(10)).len(), 1, "its marker is still in the log");
        retained.advance_log_start(Offset(7));
        assert!(retained.aborted_between(Offset(0), Offset(10)).is_empty());
    }

    #[test]
    fn a_fencing_marker_keeps_the_producer_known_so_its_zombie_stays_fenced() {
        let mut states = ProducerStates::default();
        states.end_transaction(1_000, 7, 1, marker(false, 2), Offset(5));
        states.truncate(Offset(10));
        states.advance_log_start(Offset(5));
        let decoded = ProducerStates::decode_snapshot(&states.encode_snapshot(), 1_000).unwrap();
        assert_eq!(decoded.check(&txn(0, 0, 1)), Err(ErrorCode::InvalidProducerEpoch), "the zombie's epoch 0");
        let mut gone = states.clone();
        gone.advance_log_start(Offset(6));
        assert!(gone.is_empty(), "its marker left the log");
    }

    #[test]
    fn a_snapshot_keeps_transactions_and_an_old_version_still_reads() {
        let mut states = ProducerStates::default();
        written(&mut states, txn(0, 0, 2), 0);
        states.end_transaction(1_000, 7, 0, marker(false, 3), Offset(2));
        written(&mut states, ProducerBatch { producer_id: 9, ..txn(1, 0, 1) }, 3);
        states.replicated(Offset(i64::MAX));
        let decoded = ProducerStates::decode_snapshot(&states.encode_snapshot(), 1_000).unwrap();
        assert_eq!(decoded, states);
        assert_eq!(decoded.first_unstable_offset(Offset(i64::MAX)), Some(Offset(3)));
        // Version 1: id 7, epoch 0, one batch of sequences 0..=1 at offsets 0..=1.
        let mut v1 = vec![1u8, 0, 0, 0, 1];
        v1.extend_from_slice(&7i64.to_be_bytes());
        v1.extend_from_slice(&0i16.to_be_bytes());
        v1.push(1);
        for field in [0i32.to_be_bytes(), 1i32.to_be_bytes()] {
            v1.extend_from_slice(&field);
        }
        v1.extend_from_slice(&0i64.to_be_bytes());
        v1.extend_from_slice(&1i64.to_be_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        let old = ProducerStates::decode_snapshot(&v1, 1_000).unwrap();
        assert_eq!(old.get(7).unwrap().batches.len(), 1);
        assert_eq!(old.first_unstable_offset(Offset(i64::MAX)), None);
    }

    #[test]
    fn truncation_retention_and_expiry_forget_what_the_log_no_longer_holds() {
        let mut states = ProducerStates::default();
        written(&mut states, batch(0, 0, 2), 0);
        written(&mut states, batch(0, 2, 2), 2);
        states.truncate(Offset(2));
        assert_eq!(states.check(&batch(0, 2, 2)), Ok(Verdict::Append), "the truncated batch is gone");
        states.truncate(Offset(0));
        assert!(states.is_empty());
        written(&mut states, batch(0, 0, 2), 5);
        states.advance_log_start(Offset(6));
        assert_eq!(states.len(), 1, "its last batch ends at 6");
        states.advance_log_start(Offset(7));
        assert!(states.is_empty());
        written(&mut states, batch(0, 0, 1), 8);
        states.expire(1_000 + 99, 100);
        assert_eq!(states.len(), 1);
        states.expire(1_000 + 100, 100);
        assert!(states.is_empty());
    }
}
