//! The leader epoch cache of one partition (KIP-101): which leader epoch wrote which offsets.
//!
//! Each entry says "leader epoch `epoch` wrote its first batch at `start_offset`"; an epoch ends
//! where the next entry starts, the latest at the log end offset. Entries are strictly
//! increasing in both epoch and start offset. The cache answers OffsetForLeaderEpoch and the
//! `diverging_epoch` check of Fetch v12+, and tells a follower where its log and its leader's
//! log part ways.
//!
//! The on-disk form is Kafka's `leader-epoch-checkpoint` text file: a version line (`0`), a
//! count line, then one `epoch startOffset` line per entry. [`EpochCache::encode`] and
//! [`EpochCache::decode`] give the bytes; the driver writes and fsyncs the file.

use std::fmt::Write as _;

use crate::ids::{LeaderEpoch, Offset};

/// Kafka's `UNDEFINED_EPOCH_OFFSET`: the answer when no end offset is known.
pub const UNDEFINED_OFFSET: Offset = Offset(-1);

/// Upper bound on the entries a checkpoint may hold; a file claiming more is corrupt.
pub const ENTRIES_MAX: usize = 1 << 20;

/// One entry of the cache: `epoch` wrote its first record at `start_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start_offset: Offset,
}

/// The answer to "where does epoch E end?" (OffsetForLeaderEpoch, Fetch's `diverging_epoch`):
/// the largest epoch at or below E that the log knows, and the offset where it ends. Both are
/// `-1` (undefined) when the log knows nothing about E.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

impl EpochEndOffset {
    pub const UNDEFINED: EpochEndOffset = EpochEndOffset {
        epoch: LeaderEpoch::NONE,
        end_offset: UNDEFINED_OFFSET,
    };

    pub fn is_undefined(self) -> bool {
        self.epoch == LeaderEpoch::NONE || self.end_offset == UNDEFINED_OFFSET
    }
}

/// Why a `leader-epoch-checkpoint` file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint is not UTF-8")]
    NotUtf8,
    #[error("checkpoint line {line}: {reason}")]
    Malformed { line: usize, reason: &'static str },
    #[error("unsupported checkpoint version {0}")]
    UnsupportedVersion(i64),
}

/// Epoch → start offset, ordered. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub fn new() -> EpochCache {
        EpochCache {
            entries: Vec::new(),
        }
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The latest epoch, or `LeaderEpoch::NONE` for an empty cache (Fetch's
    /// `last_fetched_epoch` convention).
    pub fn latest_epoch(&self) -> LeaderEpoch {
        self.latest().map_or(LeaderEpoch::NONE, |e| e.epoch)
    }

    /// Start offset of `epoch`, if the cache has an entry for exactly that epoch.
    pub fn start_offset_of(&self, epoch: LeaderEpoch) -> Option<Offset> {
        self.entries
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.start_offset)
    }

    /// The epoch that wrote `offset`, if known.
    pub fn epoch_for_offset(&self, offset: Offset) -> Option<LeaderEpoch> {
        let idx = self.entries.partition_point(|e| e.start_offset <= offset);
        idx.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// Records that `epoch` starts at `start_offset`, as Kafka's `LeaderEpochFileCache.assign`:
    /// nothing happens when `epoch` is already the latest and starts at or before
    /// `start_offset`; otherwise entries that would break monotonicity (epoch or start offset
    /// at or above the new one) are removed from the end first. Returns whether it changed.
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        assert!(
            epoch.0 >= 0 && start_offset.0 >= 0,
            "assign({epoch}, {start_offset})"
        );
        if let Some(latest) = self.latest() {
            if latest.epoch == epoch && start_offset >= latest.start_offset {
                return false;
            }
        }
        while let Some(last) = self.entries.last() {
            if last.epoch >= epoch || last.start_offset >= start_offset {
                self.entries.pop();
            } else {
                break;
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Where `requested` ends in a log whose end offset is `log_end_offset`, as Kafka's
    /// `LeaderEpochFileCache.endOffsetFor` (KIP-279): the latest epoch ends at the log end; an
    /// older one ends where the next known epoch starts, reported with the largest known epoch
    /// at or below `requested`; an epoch above every known one is undefined.
    pub fn end_offset_for(&self, requested: LeaderEpoch, log_end_offset: Offset) -> EpochEndOffset {
        if requested == LeaderEpoch::NONE || requested.0 < 0 {
            return EpochEndOffset::UNDEFINED;
        }
        let Some(latest) = self.latest() else {
            return EpochEndOffset::UNDEFINED;
        };
        if latest.epoch == requested {
            return EpochEndOffset {
                epoch: requested,
                end_offset: log_end_offset,
            };
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(higher_entry) = self.entries.get(higher) else {
            return EpochEndOffset::UNDEFINED;
        };
        match higher.checked_sub(1) {
            // Below every known epoch: the data is gone from this log; answer with the first
            // known start so a follower replicates from there (Kafka does the same).
            None => EpochEndOffset {
                epoch: requested,
                end_offset: higher_entry.start_offset,
            },
            Some(floor) => EpochEndOffset {
                epoch: self.entries[floor].epoch,
                end_offset: higher_entry.start_offset,
            },
        }
    }

    /// Brings the cache in line with the batches of a recovered log, as Kafka's log recovery
    /// does (`UnifiedLog` assigns every recovered batch's `partitionLeaderEpoch`): the
    /// checkpoint is missing or lags the log when a crash came between writing batches of a
    /// new epoch and writing the file. `batches` are `(partition_leader_epoch, base_offset)` in
    /// log order, typically from the start of the cache's latest epoch (where the checkpoint
    /// can first be behind) or from the log start when there is no checkpoint. Batches without
    /// an epoch (`-1`, written before epochs existed) are skipped. Returns whether it changed.
    pub fn assign_recovered(&mut self, batches: impl IntoIterator<Item = (i32, i64)>) -> bool {
        let mut changed = false;
        for (epoch, base_offset) in batches {
            if epoch < 0 || base_offset < 0 {
                continue;
            }
            changed |= self.assign(LeaderEpoch(epoch), Offset(base_offset));
        }
        changed
    }

    /// Where a recovery scan must start to catch every epoch the checkpoint may lack: the
    /// start of its latest epoch (the checkpoint is written before any batch of a new epoch,
    /// so everything before that is covered), or `log_start_offset` without a checkpoint.
    pub fn recovery_scan_start(&self, log_start_offset: Offset) -> Offset {
        self.latest().map_or(log_start_offset, |e| e.start_offset.max(log_start_offset))
    }

    /// Drops entries starting at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: Offset) -> bool {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log start moved to `start_offset`: entries wholly before it go, and the entry
    /// covering it now starts there (Kafka's `truncateFromStart`).
    pub fn truncate_from_start(&mut self, start_offset: Offset) -> bool {
        let covering = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(floor) = covering.checked_sub(1) else {
            return false;
        };
        if floor == 0 && self.entries[0].start_offset == start_offset {
            return false;
        }
        self.entries.drain(..floor);
        self.entries[0].start_offset = start_offset;
        true
    }

    /// Kafka's `leader-epoch-checkpoint` text: `0\n<count>\n` then `<epoch> <start>\n` lines.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(8 + self.entries.len() * 16);
        let _ = write!(out, "0\n{}\n", self.entries.len());
        for entry in &self.entries {
            let _ = writeln!(out, "{} {}", entry.epoch, entry.start_offset);
        }
        out.into_bytes()
    }

    /// Parses a checkpoint file. The bytes come from disk, so nothing here panics: a malformed
    /// or non-monotonic file is an error and the driver decides (Kafka refuses to load it).
    pub fn decode(bytes: &[u8]) -> Result<EpochCache, CheckpointError> {
        let text = std::str::from_utf8(bytes).map_err(|_| CheckpointError::NotUtf8)?;
        let mut lines = text.lines().enumerate();
        let mut next_number = |what: &'static str| -> Result<(usize, i64), CheckpointError> {
            let (n, line) = lines.next().ok_or(CheckpointError::Malformed {
                line: 0,
                reason: what,
            })?;
            let value = line
                .trim()
                .parse::<i64>()
                .map_err(|_| CheckpointError::Malformed {
                    line: n + 1,
                    reason: what,
                })?;
            Ok((n + 1, value))
        };
        let (_, version) = next_number("missing version")?;
        if version != 0 {
            return Err(CheckpointError::UnsupportedVersion(version));
        }
        let (count_line, count) = next_number("missing count")?;
        if count < 0 || count as u64 > ENTRIES_MAX as u64 {
            return Err(CheckpointError::Malformed {
                line: count_line,
                reason: "bad count",
            });
        }
        let mut entries: Vec<EpochEntry> = Vec::with_capacity((count as usize).min(1024));
        for (n, line) in lines.by_ref().take(count as usize) {
            let bad = |reason| CheckpointError::Malformed {
                line: n + 1,
                reason,
            };
            let mut fields = line.split_whitespace();
            let epoch = fields
                .next()
                .and_then(|f| f.parse::<i32>().ok())
                .ok_or(bad("bad epoch"))?;
            let start = fields
                .next()
                .and_then(|f| f.parse::<i64>().ok())
                .ok_or(bad("bad offset"))?;
            if fields.next().is_some() {
                return Err(bad("extra field"));
            }
            if epoch < 0 || start < 0 {
                return Err(bad("negative entry"));
            }
            if let Some(last) = entries.last() {
                if last.epoch.0 >= epoch || last.start_offset.0 >= start {
                    return Err(bad("entries not increasing"));
                }
            }
            entries.push(EpochEntry {
                epoch: LeaderEpoch(epoch),
                start_offset: Offset(start),
            });
        }
        if entries.len() != count as usize {
            return Err(CheckpointError::Malformed {
                line: count_line,
                reason: "fewer entries than count",
            });
        }
        if lines.any(|(_, l)| !l.trim().is_empty()) {
            return Err(CheckpointError::Malformed {
                line: 0,
                reason: "more entries than count",
            });
        }
        Ok(EpochCache { entries })
    }

    /// Checks the ordering the type promises; part of [`super::Replica::check_invariants`].
    pub fn check_invariants(&self) {
        for pair in self.entries.windows(2) {
            assert!(
                pair[0].epoch < pair[1].epoch && pair[0].start_offset < pair[1].start_offset,
                "epoch cache out of order: {:?}",
                self.entries
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        let mut c = EpochCache::new();
        for &(e, o) in entries {
            assert!(c.assign(LeaderEpoch(e), Offset(o)));
        }
        c
    }

    fn end(c: &EpochCache, epoch: i32, leo: i64) -> (i32, i64) {
        let r = c.end_offset_for(LeaderEpoch(epoch), Offset(leo));
        (r.epoch.0, r.end_offset.0)
    }

    /// Golden table for KIP-279's answer: (largest known epoch <= requested, start of the next).
    #[test]
    fn end_offset_for_matches_kafka_table() {
        let c = cache(&[(1, 0), (3, 10), (4, 15)]);
        let table = [
            (4, (4, 20)), // latest epoch ends at the log end
            (3, (3, 15)), // ends where epoch 4 starts
            (2, (1, 10)), // unknown epoch: floor is 1, it ends where 3 starts
            (1, (1, 10)),
            (0, (0, 0)),    // below every epoch: the first known start
            (5, (-1, -1)),  // above every epoch
            (-1, (-1, -1)), // undefined
        ];
        for (requested, expected) in table {
            assert_eq!(
                end(&c, requested, 20),
                expected,
                "requested epoch {requested}"
            );
        }
        assert_eq!(end(&EpochCache::new(), 0, 0), (-1, -1));
    }

    #[test]
    fn assign_keeps_entries_monotonic() {
        let mut c = cache(&[(1, 0), (2, 5)]);
        assert!(
            !c.assign(LeaderEpoch(2), Offset(7)),
            "same epoch later start is a no-op"
        );
        assert!(
            c.assign(LeaderEpoch(2), Offset(3)),
            "same epoch earlier start replaces"
        );
        assert_eq!(
            c.entries()[1],
            EpochEntry {
                epoch: LeaderEpoch(2),
                start_offset: Offset(3)
            }
        );
        assert!(
            c.assign(LeaderEpoch(5), Offset(3)),
            "overlapping start drops the older entry"
        );
        assert_eq!(c.entries().len(), 2);
        assert_eq!(c.latest_epoch(), LeaderEpoch(5));
        c.check_invariants();
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 15)]);
        assert!(c.truncate_from_end(Offset(15)));
        assert_eq!(c.latest_epoch(), LeaderEpoch(3));
        assert!(!c.truncate_from_end(Offset(11)));
        assert!(c.truncate_from_start(Offset(12)));
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: LeaderEpoch(3),
                start_offset: Offset(12)
            }]
        );
        assert_eq!(c.epoch_for_offset(Offset(11)), None);
        assert_eq!(c.epoch_for_offset(Offset(40)), Some(LeaderEpoch(3)));
    }

    #[test]
    fn checkpoint_round_trips_in_kafka_format() {
        let c = cache(&[(0, 0), (2, 120), (7, 4000)]);
        let bytes = c.encode();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "0\n3\n0 0\n2 120\n7 4000\n"
        );
        assert_eq!(EpochCache::decode(&bytes).unwrap(), c);
        assert_eq!(EpochCache::decode(b"0\n0\n").unwrap(), EpochCache::new());
    }

    // Guards against a crash between appending batches of a new epoch and writing the
    // checkpoint: without the rebuild the cache would miss the epoch, OffsetForLeaderEpoch and
    // diverging_epoch answers would name the older epoch's end, and a follower could keep a
    // divergent suffix (KIP-101).
    #[test]
    fn recovered_batches_extend_a_missing_or_lagging_checkpoint() {
        let batches = [(-1, 0), (0, 3), (0, 5), (2, 9), (2, 12), (5, 20), (5, 21)];
        let mut missing = EpochCache::new();
        assert_eq!(missing.recovery_scan_start(Offset(0)), Offset(0));
        assert!(missing.assign_recovered(batches));
        assert_eq!(missing, cache(&[(0, 3), (2, 9), (5, 20)]));

        // The checkpoint knew epochs 0 and 2; the scan starts at epoch 2's start.
        let mut lagging = cache(&[(0, 3), (2, 9)]);
        let from = lagging.recovery_scan_start(Offset(0));
        assert_eq!(from, Offset(9));
        assert!(lagging.assign_recovered(batches.iter().copied().filter(|&(_, o)| o >= from.0)));
        assert_eq!(lagging, cache(&[(0, 3), (2, 9), (5, 20)]));

        // Up to date: nothing changes, so nothing needs writing.
        let mut current = cache(&[(0, 3), (2, 9), (5, 20)]);
        assert!(!current.assign_recovered([(5, 20), (5, 21)]));
        // The log start lies inside the latest epoch after retention.
        assert_eq!(current.recovery_scan_start(Offset(25)), Offset(25));
        assert_eq!(end(&current, 2, 30), (2, 20));
    }

    #[test]
    fn corrupt_checkpoints_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"1\n0\n",
            b"0\n2\n1 0\n",
            b"0\n1\n1 0\n2 5\n",
            b"0\n2\n3 10\n2 20\n",
            b"0\n1\n1 x\n",
            b"0\n-4\n",
            b"0\n99999999999\n",
            b"\xff\xfe",
        ] {
            assert!(
                EpochCache::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
