//! A partition's idempotent-producer state (Kafka's `ProducerStateManager`, KIP-98 and
//! KIP-360): per producer id, its epoch and the sequence ranges and offsets of its last five
//! batches. The leader checks a client's batch against it, so a retried batch is answered with
//! its first offsets instead of being written twice, and a gap in the sequence is refused.
//! Every replica builds it from the batches it writes, so a new leader dedups a retry of a
//! batch its predecessor acknowledged.

use std::collections::{BTreeMap, VecDeque};

use crate::batch::BatchHeader;
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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
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
        let entry = self.producers.entry(batch.producer_id).or_insert_with(|| ProducerEntry {
            epoch: batch.epoch,
            batches: VecDeque::with_capacity(BATCHES_KEPT),
            last_written_ms: now_ms,
        });
        if batch.epoch != entry.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(place);
        entry.last_written_ms = entry.last_written_ms.max(now_ms);
    }

    /// A batch read back from the log (recovery after a restart): data batches of idempotent
    /// producers are recorded as when they were written.
    pub fn replay(&mut self, now_ms: i64, header: &BatchHeader) {
        if let Some(producer) = ProducerBatch::of(header).filter(|_| !header.is_control()) {
            self.record(now_ms, &producer, Offset(header.base_offset), Offset(header.last_offset()));
        }
    }

    /// The log lost everything at or after `to` (a follower's truncation): the batches that
    /// were there are forgotten, and a producer with none left is forgotten too (its next batch
    /// is accepted at any sequence, as for a producer whose records retention removed).
    pub fn truncate(&mut self, to: Offset) {
        self.producers.retain(|_, entry| {
            while entry.batches.back().is_some_and(|b| b.last_offset >= to) {
                entry.batches.pop_back();
            }
            !entry.batches.is_empty()
        });
    }

    /// The log now starts at `start`: producers whose last batch lies below it are forgotten
    /// (Kafka's `onLowWatermarkUpdated`).
    pub fn advance_log_start(&mut self, start: Offset) {
        self.producers.retain(|_, entry| entry.batches.back().is_some_and(|b| b.last_offset >= start));
    }

    /// Forgets producers whose last batch is `expiration_ms` old (`producer.id.expiration.ms`).
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers.retain(|_, entry| now_ms.saturating_sub(entry.last_written_ms) < expiration_ms);
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

const SNAPSHOT_VERSION: u8 = 1;

impl ProducerStates {
    /// The state as of `offset` (what the log below it says), from a state that may already
    /// hold later batches: those are dropped as by [`Self::truncate`].
    pub fn at(&self, offset: Offset) -> ProducerStates {
        let mut state = self.clone();
        state.truncate(offset);
        state
    }

    /// The snapshot file's bytes (Kafka's `<offset>.snapshot` plays this part; the encoding is
    /// odradek's): version, producer count, per producer its id, epoch and batches, then a
    /// CRC32C of everything before it. When each producer last wrote is not kept: a loaded
    /// state counts its expiry from the load.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (producer_id, entry) in &self.producers {
            out.extend_from_slice(&producer_id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.0.to_be_bytes());
                out.extend_from_slice(&b.last_offset.0.to_be_bytes());
            }
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
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(version));
        }
        let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
        let mut producers = BTreeMap::new();
        for _ in 0..count {
            let producer_id = i64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
            let epoch = i16::from_be_bytes(take(2)?.try_into().expect("2 bytes"));
            let n = take(1)?[0];
            let mut batches = VecDeque::with_capacity(usize::from(n));
            for _ in 0..n {
                let first_seq = i32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
                let last_seq = i32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
                let first_offset = Offset(i64::from_be_bytes(take(8)?.try_into().expect("8 bytes")));
                let last_offset = Offset(i64::from_be_bytes(take(8)?.try_into().expect("8 bytes")));
                batches.push_back(BatchPlace { first_seq, last_seq, first_offset, last_offset });
            }
            producers.insert(producer_id, ProducerEntry { epoch, batches, last_written_ms: now_ms });
        }
        Ok(ProducerStates { producers })
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
