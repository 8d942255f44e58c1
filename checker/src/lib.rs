//! The end-of-run history checker, in the semantics of Jepsen's Kafka workload
//! (`jepsen.tests.kafka`): one partition's log is a total order of values at offsets, inferred
//! from what producers were told and what consumers read.
//!
//! The history holds only completed operations (no invocations): every value is produced once
//! (a producer that is not idempotent never retries; an idempotent one sends a batch again,
//! same sequence, until it is acknowledged, and the broker must answer a retry of a batch it
//! wrote with its first offset), so a value at two offsets is a real duplicate.
//!
//! | anomaly | Jepsen name | meaning |
//! |---|---|---|
//! | [`Anomaly::InconsistentOffsets`] | `:inconsistent-offsets` | two different values observed at one offset |
//! | [`Anomaly::Duplicate`] | `:duplicate` | one value observed at two offsets |
//! | [`Anomaly::LostWrite`] | `:lost-write` | an acknowledged value missing although reads went past its offset |
//! | [`Anomaly::Unseen`] | `:unseen` | an acknowledged value never read, and the final read after healing did not reach it |
//! | [`Anomaly::NonMonotonicPoll`] | `:nonmonotonic-poll` | a consumer's successive offsets did not increase |
//! | [`Anomaly::NonMonotonicSend`] | `:nonmonotonic-send` | a producer sending one record at a time was acknowledged an offset not above its previous one |
//! | [`Anomaly::PollSkip`] | `:poll-skip` | a consumer jumped over offsets that hold values |
//! | [`Anomaly::ReadAboveHighWatermark`] | (none: Jepsen cannot see HWs) | a poll returned a record at or above the high watermark its answer reported |
//! | [`Anomaly::AbortedRead`] | `:aborted-read` (G1a) | a value whose produce definitely failed was read |
//!
//! A Kafka fetch answer carries the partition's high watermark, read after the records: a
//! consumer (outside read_uncommitted transactions, which this log has none of) is served only
//! records below it, so every polled offset must be below the HW of its own answer.
//!
//! Only definite failures ([`SendOutcome::Fail`]) promise the value is absent. Kafka gives that
//! promise for errors returned before the append (NOT_ENOUGH_REPLICAS, request validation),
//! never for a timeout, NOT_ENOUGH_REPLICAS_AFTER_APPEND or NOT_LEADER_OR_FOLLOWER: those
//! values may be read, and are `:info`.
//!
//! Transactions ([`Op::Txn`], [`Op::CommittedPoll`], [`Op::FinalCommitted`]) add what a
//! `read_committed` reader must see: every value of a transaction whose commit was
//! acknowledged, none of one whose abort was, all or none of one whose outcome is unknown,
//! and never a value the final committed log does not hold:
//!
//! | anomaly | meaning |
//! |---|---|
//! | [`Anomaly::TxnLost`] | a value of an acknowledged commit missing from the final committed read |
//! | [`Anomaly::TxnAbortedVisible`] | a value of an acknowledged abort visible under read_committed |
//! | [`Anomaly::TxnPartial`] | a transaction partly visible in the final committed read (not atomic) |
//! | [`Anomaly::UncommittedRead`] | a read_committed poll returned a value the final committed log does not hold (G1a/G1b) |
//!
//! Consume-transform-produce ([`check_exactly_once`]) adds [`Anomaly::ProcessedTwice`] (an
//! input record with two committed outputs) and [`Anomaly::Unprocessed`] (an input record
//! below the group's committed offset with none).
//!
//! Transactional values are never in [`Op::Send`]: a produce inside a transaction promises
//! nothing by itself. They still count for offsets (inconsistent offsets, duplicates: a
//! transactional producer's retry must be written once).
//!
//! [`check`] and [`check_with`] take one partition's history (the simulator's);
//! [`check_partitions`] takes a history of several partitions (`jepsen/`'s, from real
//! clients) with what the run's settings promise ([`Options`]): whose acknowledged writes may
//! be lost (acks=1 producers, fsync off, unclean election), whose values may be written twice
//! (producers that retry without idempotence), whether sends are sequential.
//!
//! Nothing here knows about the simulator or about real clients: std only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A produced value: unique per run.
pub type Value = u64;

/// How a produce ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Acknowledged (acks=all): value `i` of the request sits at `base_offset + i`.
    Ok { base_offset: i64 },
    /// Definitely not written (Jepsen `:fail`).
    Fail(String),
    /// Unknown: timed out, connection lost, or an error that may follow an append (`:info`).
    Info(String),
}

/// How a transaction ended, as its producer was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// EndTxn(commit) acknowledged.
    Committed,
    /// EndTxn(abort) acknowledged.
    Aborted,
    /// No acknowledged EndTxn (a timeout, the producer fenced, the coordinator's timeout).
    Unknown,
}

/// One completed operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A produce of `values` (one batch, in order) by `process`.
    Send { process: u32, values: Vec<Value>, outcome: SendOutcome },
    /// A successful poll by `process`: `(offset, value)` pairs in the order returned, and the
    /// high watermark the same answer reported.
    Poll { process: u32, records: Vec<(i64, Value)>, high_watermark: i64 },
    /// A consumer re-positioned itself (restart, seek): monotonicity restarts after it.
    Seek { process: u32 },
    /// The read of the whole committed log after healing, from the log start.
    FinalRead { records: Vec<(i64, Value)> },
    /// A transaction by `process` that wrote `values` (possibly none).
    Txn { process: u32, values: Vec<Value>, outcome: TxnOutcome },
    /// A `read_committed` poll: what the consumer kept after dropping aborted transactions.
    CommittedPoll { process: u32, records: Vec<(i64, Value)> },
    /// The final read as a `read_committed` consumer sees it (no transaction left open).
    FinalCommitted { records: Vec<(i64, Value)> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    InconsistentOffsets { offset: i64, values: Vec<Value> },
    Duplicate { value: Value, offsets: Vec<i64> },
    LostWrite { value: Value, offset: i64, max_read_offset: i64 },
    Unseen { value: Value, offset: i64, final_read_end: i64 },
    NonMonotonicPoll { process: u32, previous: i64, next: i64 },
    NonMonotonicSend { process: u32, previous: i64, next: i64 },
    PollSkip { process: u32, from: i64, to: i64, skipped: Vec<i64> },
    ReadAboveHighWatermark { process: u32, offset: i64, high_watermark: i64 },
    AbortedRead { value: Value, offset: i64, error: String },
    TxnLost { value: Value },
    TxnAbortedVisible { value: Value, offset: i64 },
    TxnPartial { process: u32, visible: Vec<Value>, missing: Vec<Value> },
    UncommittedRead { process: u32, value: Value, offset: i64 },
    ProcessedTwice { offset: i64, input: Value, outputs: Vec<Value> },
    Unprocessed { offset: i64, input: Value },
}

impl Anomaly {
    /// The class's name, as Jepsen spells it where it has one.
    pub fn name(&self) -> &'static str {
        match self {
            Anomaly::InconsistentOffsets { .. } => "inconsistent-offsets",
            Anomaly::Duplicate { .. } => "duplicate",
            Anomaly::LostWrite { .. } => "lost-write",
            Anomaly::Unseen { .. } => "unseen",
            Anomaly::NonMonotonicPoll { .. } => "nonmonotonic-poll",
            Anomaly::NonMonotonicSend { .. } => "nonmonotonic-send",
            Anomaly::PollSkip { .. } => "poll-skip",
            Anomaly::ReadAboveHighWatermark { .. } => "read-above-high-watermark",
            Anomaly::AbortedRead { .. } => "aborted-read",
            Anomaly::TxnLost { .. } => "txn-lost",
            Anomaly::TxnAbortedVisible { .. } => "txn-aborted-visible",
            Anomaly::TxnPartial { .. } => "txn-partial",
            Anomaly::UncommittedRead { .. } => "uncommitted-read",
            Anomaly::ProcessedTwice { .. } => "processed-twice",
            Anomaly::Unprocessed { .. } => "unprocessed",
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::InconsistentOffsets { offset, values } => {
                write!(f, "inconsistent-offsets: offset {offset} holds values {values:?}")
            }
            Anomaly::Duplicate { value, offsets } => {
                write!(f, "duplicate: value {value} at offsets {offsets:?}")
            }
            Anomaly::LostWrite { value, offset, max_read_offset } => write!(
                f,
                "lost-write: acknowledged value {value} at offset {offset} is missing, though reads reached offset {max_read_offset}"
            ),
            Anomaly::Unseen { value, offset, final_read_end } => write!(
                f,
                "unseen: acknowledged value {value} at offset {offset} not read after healing (final read ended at {final_read_end})"
            ),
            Anomaly::NonMonotonicPoll { process, previous, next } => write!(
                f,
                "nonmonotonic-poll: consumer {process} read offset {next} after offset {previous}"
            ),
            Anomaly::NonMonotonicSend { process, previous, next } => write!(
                f,
                "nonmonotonic-send: producer {process} was acknowledged offset {next} after offset {previous}"
            ),
            Anomaly::PollSkip { process, from, to, skipped } => write!(
                f,
                "poll-skip: consumer {process} went from offset {from} to {to}, skipping {skipped:?}"
            ),
            Anomaly::ReadAboveHighWatermark { process, offset, high_watermark } => write!(
                f,
                "read-above-high-watermark: consumer {process} read offset {offset} from an answer whose high watermark was {high_watermark}"
            ),
            Anomaly::AbortedRead { value, offset, error } => write!(
                f,
                "aborted-read: value {value} read at offset {offset}, though its produce failed with {error} (definitely not written)"
            ),
            Anomaly::TxnLost { value } => {
                write!(f, "txn-lost: value {value} of an acknowledged commit is not in the final read_committed read")
            }
            Anomaly::TxnAbortedVisible { value, offset } => {
                write!(f, "txn-aborted-visible: value {value} of an acknowledged abort read under read_committed at offset {offset}")
            }
            Anomaly::TxnPartial { process, visible, missing } => write!(
                f,
                "txn-partial: a transaction of producer {process} is partly committed: {visible:?} visible, {missing:?} not"
            ),
            Anomaly::ProcessedTwice { offset, input, outputs } => write!(
                f,
                "processed-twice: input value {input} at offset {offset} has the committed outputs {outputs:?}"
            ),
            Anomaly::Unprocessed { offset, input } => write!(
                f,
                "unprocessed: input value {input} at offset {offset}, below the group's committed offset, has no committed output"
            ),
            Anomaly::UncommittedRead { process, value, offset } => write!(
                f,
                "uncommitted-read: read_committed consumer {process} read value {value} at offset {offset}, which the final committed log does not hold"
            ),
        }
    }
}

/// Anomalies found, each class capped at this many reports (the first ones in offset order).
pub const REPORTS_PER_CLASS_MAX: usize = 8;

/// A history's verdict when acknowledged writes may be lost by design.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    pub anomalies: Vec<Anomaly>,
    /// Acknowledged writes lost (lost-write and unseen), and offsets whose lost value was
    /// overwritten by a later one (inconsistent-offsets where the final read holds exactly
    /// one of the values): expected with acks=0/1 or acks without fsync, still counted.
    pub expected_losses: usize,
}

/// Checks a history for a mode that may lose acknowledged writes (`may_lose`) or not. Loss is
/// then reported in [`Verdict::expected_losses`]; everything else (a value twice in the final
/// log, polls going backwards or skipping, reads above the high watermark) stays an anomaly.
pub fn check_with(history: &[Op], may_lose: bool) -> Verdict {
    let lossy = if may_lose { Lossy::Always } else { Lossy::Never };
    let options = Options { lossy, ..Options::default() };
    let context = Context::new(history, &options);
    let mut verdict = Verdict::default();
    for anomaly in check(history) {
        match context.classify(&anomaly) {
            Class::Anomaly => verdict.anomalies.push(anomaly),
            Class::ExpectedLoss | Class::Duplicate => verdict.expected_losses += 1,
        }
    }
    verdict
}

/// A partition of the topic under test.
pub type Partition = u32;

/// Whose acknowledged writes a run's settings allow to be lost.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Lossy {
    /// Nobody's: acks=all, fsync on, no unclean election.
    #[default]
    Never,
    /// Everybody's, transactions included: fsync off, or unclean leader election.
    Always,
    /// Those of these processes (producers with acks=0 or acks=1).
    Processes(BTreeSet<u32>),
}

/// What a run's settings promise, for [`check_partitions`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub lossy: Lossy,
    /// Producers that are not idempotent but retry, so a value of theirs may be written
    /// twice: such duplicates are counted in [`Report::duplicates`], not reported as anomalies.
    pub may_duplicate: BTreeSet<u32>,
    /// Every process invokes a send only after its previous one completed, so its
    /// acknowledged offsets in one partition must increase (Jepsen's `:nonmonotonic-send`).
    pub sequential_sends: bool,
}

/// The verdict on a history of several partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Unexpected anomalies, with their partition (`None` for transaction anomalies, which
    /// span partitions): the first [`REPORTS_PER_CLASS_MAX`] of each class and partition.
    pub anomalies: Vec<(Option<Partition>, Anomaly)>,
    /// Every unexpected anomaly, counted.
    pub unexpected: usize,
    /// Anomalies the settings allow, by class: lost acknowledged writes of lossy producers
    /// (`lost-write`, `unseen`) and what follows from them (an offset re-used, a retried
    /// value written again after its loss, a consumer reset past a shortened log).
    pub expected: BTreeMap<&'static str, usize>,
    /// Values written twice by producers in [`Options::may_duplicate`].
    pub duplicates: usize,
}

impl Report {
    /// Counts an anomaly the settings do not allow; the first few of each class and
    /// partition are kept to show.
    pub fn add_unexpected(&mut self, partition: Option<Partition>, anomaly: Anomaly) {
        self.unexpected += 1;
        let shown = self.anomalies.iter().filter(|(p, a)| *p == partition && a.name() == anomaly.name()).count();
        if shown < REPORTS_PER_CLASS_MAX {
            self.anomalies.push((partition, anomaly));
        }
    }

    /// Counts an anomaly the settings allow.
    pub fn add_expected(&mut self, anomaly: &Anomaly) {
        *self.expected.entry(anomaly.name()).or_default() += 1;
    }

    /// Acknowledged writes lost where the settings allow it.
    pub fn expected_losses(&self) -> usize {
        ["lost-write", "unseen"].iter().filter_map(|c| self.expected.get(c)).sum()
    }
}

/// Checks a history of several partitions. Offsets, polls and the final read are checked per
/// partition; transactions, whose values span partitions, over the whole history (values are
/// unique per run, so a transaction's values are found wherever they landed).
pub fn check_partitions(history: &[(Partition, Op)], options: &Options) -> Report {
    let mut by_partition: BTreeMap<Partition, Vec<Op>> = BTreeMap::new();
    for (partition, op) in history {
        if !matches!(op, Op::Txn { .. }) {
            by_partition.entry(*partition).or_default().push(op.clone());
        }
    }
    let mut report = Report::default();
    let note = |report: &mut Report, class: Class, partition: Option<Partition>, anomaly: Anomaly| match class {
        Class::Anomaly => report.add_unexpected(partition, anomaly),
        Class::ExpectedLoss => report.add_expected(&anomaly),
        Class::Duplicate => report.duplicates += 1,
    };
    let transactions = history.iter().any(|(_, op)| matches!(op, Op::Txn { .. }));
    for (&partition, ops) in &by_partition {
        let mut context = Context::new(ops, options);
        context.transactions = transactions;
        let mut found = check_offsets(ops, usize::MAX);
        if options.sequential_sends {
            found.extend(nonmonotonic_sends(ops, usize::MAX));
        }
        for anomaly in found {
            note(&mut report, context.classify(&anomaly), Some(partition), anomaly);
        }
    }
    let all: Vec<Op> = history.iter().map(|(_, op)| op.clone()).collect();
    let context = Context::new(&all, options);
    for anomaly in check_transactions(&all, usize::MAX) {
        note(&mut report, context.classify(&anomaly), None, anomaly);
    }
    report
}

/// One record a consume-transform-produce transaction read, and the value it wrote for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    pub partition: Partition,
    pub offset: i64,
    pub input: Value,
    pub output: Value,
}

/// Exactly-once processing: every input record below the group's committed offsets has exactly
/// one output in the final `read_committed` read of the output topic (`committed_outputs`), and
/// none has two. `must_process` are the input records (partition, offset, value) of the final
/// read below the committed offsets. Inputs are told apart by offset and value: a retrying
/// producer may write one value twice, and each copy is a record to process.
pub fn check_exactly_once(
    processed: &[Processed],
    committed_outputs: &BTreeSet<Value>,
    must_process: &BTreeSet<(Partition, i64, Value)>,
) -> Vec<(Partition, Anomaly)> {
    let mut outputs: BTreeMap<(Partition, i64, Value), Vec<Value>> = BTreeMap::new();
    for p in processed.iter().filter(|p| committed_outputs.contains(&p.output)) {
        outputs.entry((p.partition, p.offset, p.input)).or_default().push(p.output);
    }
    let mut found = Vec::new();
    for (&(partition, offset, input), outs) in &outputs {
        if outs.len() > 1 {
            found.push((partition, Anomaly::ProcessedTwice { offset, input, outputs: outs.clone() }));
        }
    }
    for &(partition, offset, input) in must_process {
        if !outputs.contains_key(&(partition, offset, input)) {
            found.push((partition, Anomaly::Unprocessed { offset, input }));
        }
    }
    found
}

/// A process's acknowledged offsets going backwards in one partition.
fn nonmonotonic_sends(history: &[Op], cap: usize) -> Vec<Anomaly> {
    let mut last: BTreeMap<u32, i64> = BTreeMap::new();
    let mut found = Vec::new();
    for op in history {
        let Op::Send { process, values, outcome: SendOutcome::Ok { base_offset } } = op else { continue };
        if let Some(&previous) = last.get(process) {
            if *base_offset <= previous && found.len() < cap {
                found.push(Anomaly::NonMonotonicSend { process: *process, previous, next: *base_offset });
            }
        }
        last.insert(*process, base_offset + values.len().max(1) as i64 - 1);
    }
    found
}

enum Class {
    Anomaly,
    ExpectedLoss,
    Duplicate,
}

/// What classifying an anomaly as expected needs to know of one partition's history.
struct Context<'a> {
    options: &'a Options,
    final_read: BTreeMap<i64, Value>,
    copies: BTreeMap<Value, usize>,
    sender: BTreeMap<Value, u32>,
    transactions: bool,
}

impl<'a> Context<'a> {
    fn new(history: &[Op], options: &'a Options) -> Self {
        let final_read: BTreeMap<i64, Value> = history
            .iter()
            .filter_map(|op| match op {
                Op::FinalRead { records } => Some(records.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        let mut copies: BTreeMap<Value, usize> = BTreeMap::new();
        for value in final_read.values() {
            *copies.entry(*value).or_default() += 1;
        }
        let sender = history
            .iter()
            .filter_map(|op| match op {
                Op::Send { process, values, .. } | Op::Txn { process, values, .. } => {
                    Some(values.iter().map(move |v| (*v, *process)))
                }
                _ => None,
            })
            .flatten()
            .collect();
        // Offsets hold markers too: an offset one log held a marker at may hold a value in
        // another after a loss, and a consumer that read the marker passed over it.
        let transactions = history.iter().any(|op| matches!(op, Op::Txn { .. }));
        Context { options, final_read, copies, sender, transactions }
    }

    fn may_lose(&self, value: &Value) -> bool {
        match &self.options.lossy {
            Lossy::Never => false,
            Lossy::Always => true,
            Lossy::Processes(processes) => self.sender.get(value).is_some_and(|p| processes.contains(p)),
        }
    }

    fn classify(&self, anomaly: &Anomaly) -> Class {
        let loss = |expected: bool| if expected { Class::ExpectedLoss } else { Class::Anomaly };
        let always = self.options.lossy == Lossy::Always;
        // A lost write may come back at a new offset: an idempotent producer retries a batch
        // whose first write (and the producer state that knew it) was lost with every
        // replica's unsynced data. So an offset may have held several values and a value
        // several offsets, as long as the final log holds each value at most once and each
        // offset one of the values seen there.
        match anomaly {
            Anomaly::LostWrite { value, .. } | Anomaly::Unseen { value, .. } => loss(self.may_lose(value)),
            // A lost marker, coordinator record or committed batch breaks every promise a
            // transaction made: what is lost is not known committed, aborted or whole.
            Anomaly::TxnLost { .. }
            | Anomaly::TxnPartial { .. }
            | Anomaly::UncommittedRead { .. }
            | Anomaly::TxnAbortedVisible { .. } => loss(always),
            Anomaly::InconsistentOffsets { offset, values } => loss(match self.final_read.get(offset) {
                None => values.iter().all(|v| self.may_lose(v)),
                Some(kept) => values.contains(kept) && values.iter().all(|v| v == kept || self.may_lose(v)),
            }),
            Anomaly::Duplicate { value, .. } => {
                if self.copies.get(value).is_none_or(|&n| n <= 1) && self.may_lose(value) {
                    Class::ExpectedLoss
                } else if self.sender.get(value).is_some_and(|p| self.options.may_duplicate.contains(p)) {
                    Class::Duplicate
                } else {
                    Class::Anomaly
                }
            }
            Anomaly::PollSkip { .. } => loss(always && self.transactions),
            // A log that lost its tail ends below a consumer's position: Kafka answers
            // OFFSET_OUT_OF_RANGE and the consumer starts again from auto.offset.reset.
            Anomaly::NonMonotonicPoll { .. } => loss(always),
            Anomaly::NonMonotonicSend { process, .. } => loss(match &self.options.lossy {
                Lossy::Never => false,
                Lossy::Always => true,
                Lossy::Processes(processes) => processes.contains(process),
            }),
            _ => Class::Anomaly,
        }
    }
}

/// Checks a history of one partition; an empty result means it is valid.
pub fn check(history: &[Op]) -> Vec<Anomaly> {
    let mut anomalies = check_offsets(history, REPORTS_PER_CLASS_MAX);
    anomalies.extend(check_transactions(history, REPORTS_PER_CLASS_MAX));
    anomalies
}

/// Everything but the transaction anomalies, for one partition.
fn check_offsets(history: &[Op], cap: usize) -> Vec<Anomaly> {
    // offset → values seen there; value → offsets it was seen at (acks and reads alike).
    let mut at_offset: BTreeMap<i64, BTreeSet<Value>> = BTreeMap::new();
    let mut offsets_of: BTreeMap<Value, BTreeSet<i64>> = BTreeMap::new();
    let mut read_values: BTreeSet<Value> = BTreeSet::new();
    let mut acked: BTreeMap<Value, i64> = BTreeMap::new();
    let mut max_read_offset = -1i64;
    let mut final_read_end: Option<i64> = None;
    let mut failed: BTreeMap<Value, &str> = BTreeMap::new();
    let mut above_high_watermark = Vec::new();
    let mut observe = |offset: i64, value: Value| {
        at_offset.entry(offset).or_default().insert(value);
        offsets_of.entry(value).or_default().insert(offset);
    };
    for op in history {
        match op {
            Op::Send { values, outcome: SendOutcome::Ok { base_offset }, .. } => {
                for (i, &value) in values.iter().enumerate() {
                    let offset = base_offset + i as i64;
                    acked.insert(value, offset);
                    observe(offset, value);
                }
            }
            Op::Send { values, outcome: SendOutcome::Fail(error), .. } => {
                for &value in values {
                    failed.insert(value, error);
                }
            }
            Op::Send { .. } | Op::Seek { .. } | Op::Txn { .. } => {}
            Op::CommittedPoll { records, .. } | Op::FinalCommitted { records } => {
                for &(offset, value) in records {
                    observe(offset, value);
                }
            }
            Op::Poll { process, records, high_watermark } => {
                for &(offset, value) in records {
                    observe(offset, value);
                    read_values.insert(value);
                    max_read_offset = max_read_offset.max(offset);
                    if offset >= *high_watermark && above_high_watermark.len() < cap {
                        above_high_watermark.push(Anomaly::ReadAboveHighWatermark {
                            process: *process,
                            offset,
                            high_watermark: *high_watermark,
                        });
                    }
                }
            }
            Op::FinalRead { records } => {
                for &(offset, value) in records {
                    observe(offset, value);
                    read_values.insert(value);
                    max_read_offset = max_read_offset.max(offset);
                }
                let end = records.last().map_or(0, |&(o, _)| o + 1);
                final_read_end = Some(final_read_end.map_or(end, |e: i64| e.max(end)));
            }
        }
    }

    let mut anomalies = above_high_watermark;
    // A failed value read anywhere (polls, the final read; an ack of it cannot happen, a
    // value is sent once).
    anomalies.extend(
        offsets_of
            .iter()
            .filter_map(|(value, offsets)| Some((*value, *offsets.first()?, *failed.get(value)?)))
            .take(cap)
            .map(|(value, offset, error)| Anomaly::AbortedRead { value, offset, error: error.to_string() }),
    );
    anomalies.extend(
        at_offset
            .iter()
            .filter(|(_, values)| values.len() > 1)
            .take(cap)
            .map(|(&offset, values)| Anomaly::InconsistentOffsets {
                offset,
                values: values.iter().copied().collect(),
            }),
    );
    anomalies.extend(
        offsets_of
            .iter()
            .filter(|(_, offsets)| offsets.len() > 1)
            .take(cap)
            .map(|(&value, offsets)| Anomaly::Duplicate {
                value,
                offsets: offsets.iter().copied().collect(),
            }),
    );
    let final_values: Option<BTreeSet<Value>> = final_read_end.map(|_| {
        history
            .iter()
            .filter_map(|op| match op {
                Op::FinalRead { records } => Some(records.iter().map(|&(_, v)| v)),
                _ => None,
            })
            .flatten()
            .collect()
    });
    let mut by_offset: Vec<(i64, Value)> = acked.iter().map(|(&v, &o)| (o, v)).collect();
    by_offset.sort_unstable();
    let mut lost = 0;
    let mut unseen = 0;
    for (offset, value) in by_offset {
        // A value a consumer read is lost all the same if the final read, after healing, no
        // longer holds it.
        let read = read_values.contains(&value);
        if read && final_values.as_ref().is_none_or(|f| f.contains(&value)) {
            continue;
        }
        if offset <= max_read_offset || read {
            if lost < cap {
                anomalies.push(Anomaly::LostWrite { value, offset, max_read_offset });
            }
            lost += 1;
        } else if let Some(final_read_end) = final_read_end {
            if unseen < cap {
                anomalies.push(Anomaly::Unseen { value, offset, final_read_end });
            }
            unseen += 1;
        }
    }

    // Consumers: offsets strictly increase between seeks, and skip no offset known to hold a
    // value (the simulated log has no gaps: no transactions, no compaction).
    let mut last: BTreeMap<u32, i64> = BTreeMap::new();
    let (mut nonmonotonic, mut skips) = (0, 0);
    for op in history {
        match op {
            Op::Seek { process } => {
                last.remove(process);
            }
            Op::Poll { process, records, .. } => {
                for &(offset, _) in records {
                    if let Some(&previous) = last.get(process) {
                        if offset <= previous {
                            if nonmonotonic < cap {
                                anomalies.push(Anomaly::NonMonotonicPoll {
                                    process: *process,
                                    previous,
                                    next: offset,
                                });
                            }
                            nonmonotonic += 1;
                        } else if offset > previous + 1 {
                            let skipped: Vec<i64> =
                                at_offset.range(previous + 1..offset).map(|(&o, _)| o).collect();
                            if !skipped.is_empty() {
                                if skips < cap {
                                    anomalies.push(Anomaly::PollSkip {
                                        process: *process,
                                        from: previous,
                                        to: offset,
                                        skipped,
                                    });
                                }
                                skips += 1;
                            }
                        }
                    }
                    last.insert(*process, offset);
                }
            }
            _ => {}
        }
    }
    anomalies
}

/// The transaction anomalies of a history (see the module's table). Without a final committed
/// read only reads of acknowledged aborts are checked.
fn check_transactions(history: &[Op], cap: usize) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    // One final committed read per partition: values are unique, so their union is the
    // committed log of the run.
    let mut final_committed: Option<BTreeMap<Value, i64>> = None;
    for op in history {
        if let Op::FinalCommitted { records } = op {
            final_committed.get_or_insert_default().extend(records.iter().map(|&(o, v)| (v, o)));
        }
    }
    let mut aborted: BTreeSet<Value> = BTreeSet::new();
    let (mut lost, mut partial) = (0, 0);
    for op in history {
        let Op::Txn { process, values, outcome } = op else { continue };
        match outcome {
            TxnOutcome::Aborted => aborted.extend(values.iter().copied()),
            TxnOutcome::Committed => {
                let Some(visible) = &final_committed else { continue };
                for value in values.iter().filter(|v| !visible.contains_key(v)) {
                    if lost < cap {
                        anomalies.push(Anomaly::TxnLost { value: *value });
                    }
                    lost += 1;
                }
            }
            TxnOutcome::Unknown => {
                let Some(visible) = &final_committed else { continue };
                let (seen, missing): (Vec<Value>, Vec<Value>) = values.iter().partition(|v| visible.contains_key(v));
                if !seen.is_empty() && !missing.is_empty() {
                    if partial < cap {
                        anomalies.push(Anomaly::TxnPartial { process: *process, visible: seen, missing });
                    }
                    partial += 1;
                }
            }
        }
    }
    let mut aborted_reads = 0;
    let mut uncommitted = 0;
    for op in history {
        let (process, records) = match op {
            Op::CommittedPoll { process, records } => (Some(*process), records),
            Op::FinalCommitted { records } => (None, records),
            _ => continue,
        };
        for &(offset, value) in records {
            if aborted.contains(&value) {
                if aborted_reads < cap {
                    anomalies.push(Anomaly::TxnAbortedVisible { value, offset });
                }
                aborted_reads += 1;
            } else if let (Some(process), Some(visible)) = (process, &final_committed) {
                if !visible.contains_key(&value) {
                    if uncommitted < cap {
                        anomalies.push(Anomaly::UncommittedRead { process, value, offset });
                    }
                    uncommitted += 1;
                }
            }
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(process: u32, values: &[Value], base_offset: i64) -> Op {
        Op::Send { process, values: values.to_vec(), outcome: SendOutcome::Ok { base_offset } }
    }

    /// A poll whose answer reported a high watermark past its records.
    fn poll(process: u32, records: &[(i64, Value)]) -> Op {
        let high_watermark = records.iter().map(|&(o, _)| o + 1).max().unwrap_or(0);
        Op::Poll { process, records: records.to_vec(), high_watermark }
    }

    fn fail(process: u32, values: &[Value], error: &str) -> Op {
        Op::Send { process, values: values.to_vec(), outcome: SendOutcome::Fail(error.into()) }
    }

    #[test]
    fn detects_read_above_high_watermark() {
        let history = vec![
            ok(1, &[10, 11], 0),
            Op::Poll { process: 9, records: vec![(0, 10), (1, 11)], high_watermark: 1 },
        ];
        assert_eq!(
            check(&history),
            vec![Anomaly::ReadAboveHighWatermark { process: 9, offset: 1, high_watermark: 1 }]
        );
        // Also where acknowledged writes may be lost: serving uncommitted data is never expected.
        assert_eq!(check_with(&history, true).anomalies.len(), 1);
    }

    #[test]
    fn detects_aborted_read_but_not_read_of_indeterminate_write() {
        let history = vec![
            fail(1, &[10], "NotEnoughReplicas"),
            Op::Send { process: 2, values: vec![20], outcome: SendOutcome::Info("NotEnoughReplicasAfterAppend".into()) },
            poll(9, &[(0, 20), (1, 10)]),
        ];
        assert_eq!(
            check(&history),
            vec![Anomaly::AbortedRead { value: 10, offset: 1, error: "NotEnoughReplicas".into() }]
        );
        let final_read = vec![fail(1, &[10], "NotEnoughReplicas"), Op::FinalRead { records: vec![(0, 10)] }];
        assert_eq!(check_with(&final_read, true).anomalies.len(), 1);
        // A failed value nobody read is what a definite failure promises.
        assert_eq!(check(&[fail(1, &[10], "NotEnoughReplicas"), poll(9, &[(0, 20)])]), vec![]);
    }

    #[test]
    fn valid_history_has_no_anomaly() {
        let history = vec![
            ok(1, &[10, 11], 0),
            Op::Send { process: 2, values: vec![20], outcome: SendOutcome::Info("timeout".into()) },
            ok(1, &[12], 3),
            poll(9, &[(0, 10), (1, 11)]),
            poll(9, &[(2, 20), (3, 12)]),
            Op::FinalRead { records: vec![(0, 10), (1, 11), (2, 20), (3, 12)] },
        ];
        assert_eq!(check(&history), vec![]);
    }

    #[test]
    fn detects_inconsistent_offsets() {
        let history = vec![ok(1, &[10], 0), poll(9, &[(0, 99)])];
        let anomalies = check(&history);
        assert!(anomalies.contains(&Anomaly::InconsistentOffsets { offset: 0, values: vec![10, 99] }));
    }

    #[test]
    fn detects_duplicates() {
        let history = vec![Op::FinalRead { records: vec![(0, 10), (1, 10)] }];
        assert_eq!(check(&history), vec![Anomaly::Duplicate { value: 10, offsets: vec![0, 1] }]);
    }

    #[test]
    fn detects_lost_acknowledged_write() {
        // Acknowledged at offset 1, but the log was read past it without the value: the
        // KIP-101 loss shape (offset 1 was re-used after a truncation) shows as both.
        let history = vec![ok(1, &[10], 0), ok(1, &[11], 1), poll(9, &[(0, 10), (1, 30), (2, 31)])];
        let anomalies = check(&history);
        assert!(anomalies
            .contains(&Anomaly::LostWrite { value: 11, offset: 1, max_read_offset: 2 }));
        assert!(anomalies
            .contains(&Anomaly::InconsistentOffsets { offset: 1, values: vec![11, 30] }));
    }

    #[test]
    fn detects_unseen_acknowledged_write_after_healing() {
        let history = vec![ok(1, &[10], 0), ok(1, &[11], 1), Op::FinalRead { records: vec![(0, 10)] }];
        assert_eq!(
            check(&history),
            vec![Anomaly::Unseen { value: 11, offset: 1, final_read_end: 1 }]
        );
    }

    #[test]
    fn a_value_read_then_missing_from_the_final_read_is_lost() {
        let history = vec![ok(1, &[10], 0), poll(9, &[(0, 10)]), Op::FinalRead { records: vec![(0, 20)] }];
        let found = check(&history);
        assert!(found.contains(&Anomaly::LostWrite { value: 10, offset: 0, max_read_offset: 0 }), "{found:?}");
    }

    #[test]
    fn unread_acknowledged_write_without_final_read_is_not_reported() {
        assert_eq!(check(&[ok(1, &[10], 0)]), vec![]);
    }

    #[test]
    fn detects_nonmonotonic_poll_and_resets_on_seek() {
        let history = vec![
            poll(9, &[(0, 10), (1, 11)]),
            poll(9, &[(1, 11)]),
            Op::Seek { process: 9 },
            poll(9, &[(0, 10)]),
        ];
        assert_eq!(
            check(&history),
            vec![Anomaly::NonMonotonicPoll { process: 9, previous: 1, next: 1 }]
        );
    }

    #[test]
    fn lost_and_overwritten_writes_are_expected_only_where_loss_is_allowed() {
        // acks=1: value 11 acknowledged at offset 1, lost with its leader, offset 1 re-used.
        let history = vec![
            ok(1, &[10], 0),
            ok(1, &[11], 1),
            ok(1, &[12], 1),
            Op::FinalRead { records: vec![(0, 10), (1, 12)] },
        ];
        assert!(!check_with(&history, false).anomalies.is_empty());
        let verdict = check_with(&history, true);
        assert_eq!(verdict.anomalies, vec![]);
        assert!(verdict.expected_losses > 0);
        // A value at two offsets of the final log is never a loss.
        let duplicate = vec![Op::FinalRead { records: vec![(0, 10), (1, 10)] }];
        assert_eq!(check_with(&duplicate, true).anomalies.len(), 1);
        // A retried value whose first write was lost, written again at a new offset.
        let rewritten = vec![
            ok(1, &[10], 0),
            poll(9, &[(0, 10)]),
            ok(2, &[20], 0),
            ok(1, &[10], 1),
            Op::FinalRead { records: vec![(0, 20), (1, 10)] },
        ];
        assert!(!check_with(&rewritten, false).anomalies.is_empty());
        assert_eq!(check_with(&rewritten, true).anomalies, vec![]);
    }

    #[test]
    fn transactions_are_atomic_and_aborted_values_stay_invisible_under_read_committed() {
        let txn = |values: &[Value], outcome| Op::Txn { process: 3, values: values.to_vec(), outcome };
        let valid = vec![
            txn(&[10, 11], TxnOutcome::Committed),
            txn(&[12], TxnOutcome::Aborted),
            txn(&[13, 14], TxnOutcome::Unknown),
            Op::CommittedPoll { process: 9, records: vec![(0, 10), (1, 11)] },
            Op::FinalRead { records: vec![(0, 10), (1, 11), (3, 12), (5, 13), (6, 14)] },
            Op::FinalCommitted { records: vec![(0, 10), (1, 11)] },
        ];
        assert_eq!(check(&valid), vec![]);
        let broken = vec![
            txn(&[10, 11], TxnOutcome::Committed),
            txn(&[12], TxnOutcome::Aborted),
            txn(&[13, 14], TxnOutcome::Unknown),
            Op::CommittedPoll { process: 9, records: vec![(3, 12), (5, 13)] },
            Op::FinalCommitted { records: vec![(0, 10), (5, 13)] },
        ];
        let found = check(&broken);
        assert!(found.contains(&Anomaly::TxnLost { value: 11 }), "{found:?}");
        assert!(found.contains(&Anomaly::TxnAbortedVisible { value: 12, offset: 3 }));
        assert!(found.contains(&Anomaly::TxnPartial { process: 3, visible: vec![13], missing: vec![14] }));
        let uncommitted = vec![Op::CommittedPoll { process: 9, records: vec![(7, 20)] }, Op::FinalCommitted { records: vec![] }];
        assert_eq!(check(&uncommitted), vec![Anomaly::UncommittedRead { process: 9, value: 20, offset: 7 }]);
    }

    #[test]
    fn detects_poll_skip() {
        let history = vec![
            poll(8, &[(0, 10), (1, 11), (2, 12)]),
            poll(9, &[(0, 10)]),
            poll(9, &[(2, 12)]),
        ];
        assert_eq!(
            check(&history),
            vec![Anomaly::PollSkip { process: 9, from: 0, to: 2, skipped: vec![1] }]
        );
    }

    fn part(partition: Partition, op: Op) -> (Partition, Op) {
        (partition, op)
    }

    #[test]
    fn partitions_are_checked_apart_and_transactions_across_them() {
        // The same offsets in two partitions hold different values: no anomaly.
        let history = vec![
            part(0, ok(1, &[10], 0)),
            part(1, ok(2, &[20], 0)),
            part(0, Op::FinalRead { records: vec![(0, 10)] }),
            part(1, Op::FinalRead { records: vec![(0, 20)] }),
        ];
        assert_eq!(check_partitions(&history, &Options::default()), Report::default());
        // A lost write is reported with its partition.
        let lost = vec![part(1, ok(2, &[20], 0)), part(1, Op::FinalRead { records: vec![] })];
        let report = check_partitions(&lost, &Options::default());
        assert_eq!(report.anomalies, vec![(Some(1), Anomaly::Unseen { value: 20, offset: 0, final_read_end: 0 })]);
        // A transaction over two partitions, committed in one only.
        let txn = vec![
            part(0, Op::Txn { process: 3, values: vec![10, 20], outcome: TxnOutcome::Unknown }),
            part(0, Op::FinalCommitted { records: vec![(0, 10)] }),
            part(1, Op::FinalCommitted { records: vec![] }),
        ];
        let report = check_partitions(&txn, &Options::default());
        assert_eq!(
            report.anomalies,
            vec![(None, Anomaly::TxnPartial { process: 3, visible: vec![10], missing: vec![20] })]
        );
    }

    #[test]
    fn only_lossy_producers_may_lose_and_duplicates_count_apart_where_allowed() {
        // Producer 1 (acks=1) lost value 11, producer 2 (acks=all) lost value 21.
        let history = vec![
            part(0, ok(1, &[10], 0)),
            part(0, ok(1, &[11], 1)),
            part(0, ok(2, &[21], 2)),
            part(0, ok(2, &[22], 1)),
            part(0, Op::FinalRead { records: vec![(0, 10), (1, 22)] }),
        ];
        let options = Options { lossy: Lossy::Processes([1].into()), ..Options::default() };
        let report = check_partitions(&history, &options);
        assert_eq!(report.expected_losses(), 1, "{report:?}");
        assert_eq!(report.expected.get("inconsistent-offsets"), Some(&1), "{report:?}");
        assert_eq!(report.anomalies, vec![(Some(0), Anomaly::Unseen { value: 21, offset: 2, final_read_end: 2 })]);
        // Counted past the reports' cap.
        let many: Vec<(Partition, Op)> = (0..20)
            .map(|i| part(0, ok(1, &[100 + i], i as i64)))
            .chain([part(0, Op::FinalRead { records: vec![] })])
            .collect();
        assert_eq!(check_partitions(&many, &options).expected_losses(), 20);
        let strict = check_partitions(&many, &Options::default());
        assert_eq!((strict.unexpected, strict.anomalies.len()), (20, REPORTS_PER_CLASS_MAX));
        // A value written twice: a duplicate of a retrying producer, an anomaly of an idempotent one.
        let twice = vec![part(0, ok(1, &[10], 0)), part(0, Op::FinalRead { records: vec![(0, 10), (1, 10)] })];
        let allowed = Options { may_duplicate: [1].into(), ..Options::default() };
        assert_eq!(check_partitions(&twice, &allowed), Report { duplicates: 1, ..Report::default() });
        assert_eq!(check_partitions(&twice, &Options::default()).anomalies.len(), 1);
    }

    #[test]
    fn exactly_once_processing_has_one_committed_output_per_input() {
        let processed = |offset, input, output| Processed { partition: 0, offset, input, output };
        let history = [processed(0, 10, 100), processed(1, 11, 101), processed(0, 10, 102), processed(1, 11, 103)];
        let must: BTreeSet<(Partition, i64, Value)> = [(0, 0, 10), (0, 1, 11), (0, 2, 12)].into();
        // The first attempt aborted (100, 101 not committed), the retry committed.
        let found = check_exactly_once(&history, &[102, 103].into(), &must);
        assert_eq!(found, vec![(0, Anomaly::Unprocessed { offset: 2, input: 12 })]);
        let found = check_exactly_once(&history, &[100, 102, 103].into(), &[(0, 0, 10)].into());
        assert_eq!(found, vec![(0, Anomaly::ProcessedTwice { offset: 0, input: 10, outputs: vec![100, 102] })]);
    }

    #[test]
    fn detects_nonmonotonic_sends_of_sequential_producers() {
        let history = vec![part(0, ok(1, &[10, 11], 4)), part(0, ok(1, &[12], 3)), part(1, ok(1, &[13], 0))];
        let options = Options { sequential_sends: true, ..Options::default() };
        assert_eq!(
            check_partitions(&history, &options).anomalies,
            vec![(Some(0), Anomaly::NonMonotonicSend { process: 1, previous: 5, next: 3 })]
        );
        assert_eq!(check_partitions(&history, &Options::default()).anomalies, vec![]);
    }
}
