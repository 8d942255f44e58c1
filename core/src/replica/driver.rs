//! The order in which a driver performs a [`Replica`]'s actions, once for every driver (the
//! broker's partition task in `io/src/replication.rs` and the simulator's nodes):
//!
//! - **One disk action at a time, in queue order**, with one exception below. An `Append`,
//!   `Truncate`, `ResetLog`, `Sync`, `PersistEpochCache`, `PersistHighWatermark` or
//!   `AdvanceLogStart` is handed out only when the one before it has finished
//!   ([`PartitionDriver::finish`]); every action behind a disk action waits for it too, sends
//!   included, so nothing is sent that the log does not yet reflect.
//! - **Appends overlap a sync.** While a `Sync` is out, the next `Append` may be handed out
//!   (one at a time), so data produced during an fsync is written by the time it ends and
//!   the partition's next sync joins the very next group-commit round, as every other
//!   partition's does; an fsync takes far longer than a buffered write, and without this each
//!   partition's writes landed a round late. A `Sync` goes out only with nothing else out, so
//!   it covers every append finished before it; the one that overlapped stays behind and is
//!   covered by the `Sync` queued after it.
//! - **Group commit.** Appends queued behind a `Sync` are handed out before it and join its
//!   round, so one fsync covers them all. The driver reports `Synced` through what was written
//!   when the fsync started, which may be past the `Sync`'s own `through` (rule 2 of the
//!   replica's runbook allows it); a truncation ends the run, since a sync must never be
//!   reported for data a truncation removed.
//! - **One write for the appends in line.** When an `Append` is handed out, the appends
//!   queued right behind it go with it as one `Append` of several parts (a device's cost is
//!   per write, and under load a partition's appends queue while one is written); their
//!   completions reach the replica one by one, in order, when it finishes.
//! - **Wake-ups.** [`PartitionDriver::poll_visible`] tells when the high watermark or the
//!   written end moved, so long polls waiting on the partition are woken (consumers wait for
//!   the high watermark, followers for data).

use std::collections::VecDeque;

use super::{Action, Completion, Replica};
use crate::ids::Offset;

pub struct PartitionDriver {
    replica: Replica,
    /// Actions taken from the replica and not yet handed out, in the order to hand them out.
    queue: VecDeque<Action>,
    /// A disk action other than a `Sync` is out and not finished.
    busy: bool,
    /// A `Sync` is out and not finished (an `Append` may be out beside it).
    syncing: bool,
    /// `(high watermark, written end)` when last reported by `poll_visible`.
    visible: (Offset, Offset),
    /// The end offsets of the replica's appends in the `Append` that is out.
    merged: Vec<Offset>,
}

fn is_disk(action: &Action) -> bool {
    matches!(
        action,
        Action::Append { .. }
            | Action::Truncate { .. }
            | Action::ResetLog { .. }
            | Action::Sync { .. }
            | Action::PersistEpochCache { .. }
            | Action::PersistHighWatermark { .. }
            | Action::AdvanceLogStart { .. }
    )
}

impl PartitionDriver {
    pub fn new(replica: Replica) -> Self {
        let visible = (replica.high_watermark(), replica.written_offset());
        PartitionDriver { replica, queue: VecDeque::new(), busy: false, syncing: false, visible, merged: Vec::new() }
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Inputs go to the replica itself; its actions come out through [`Self::poll_action`].
    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    /// Whether a disk action is out.
    pub fn is_busy(&self) -> bool {
        self.busy || self.syncing
    }

    /// The next action to perform, if one may be performed now. After a disk action, call
    /// [`Self::finish`] once it is done; the rest may be performed at once.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.busy {
            return None;
        }
        if self.queue.is_empty() {
            let action = self.replica.poll_action()?;
            if let Action::Sync { .. } = action {
                self.gather_round(action);
            } else {
                self.queue.push_back(action);
            }
        } else if self.queue.len() == 1 && matches!(self.queue.front(), Some(Action::Sync { .. })) && !self.syncing {
            // A sync taken from the replica while an append was out: the appends produced
            // since join its round, as they would have had it been taken now.
            let sync = self.queue.pop_front().expect("one action");
            self.gather_round(sync);
        }
        if self.syncing && !matches!(self.queue.front(), Some(Action::Append { .. })) {
            return None;
        }
        let action = match self.queue.pop_front()? {
            append @ Action::Append { .. } => self.merge_appends(append),
            other => other,
        };
        match action {
            Action::Sync { .. } => self.syncing = true,
            _ => self.busy = is_disk(&action),
        }
        Some(action)
    }

    /// `first` and the appends queued right behind it, as one `Append`. When the queue runs
    /// dry the replica's next actions are taken as `poll_action` would take them.
    fn merge_appends(&mut self, first: Action) -> Action {
        let Action::Append { base_offset, mut end_offset, mut records } = first else { unreachable!("an append") };
        self.merged.clear();
        self.merged.push(end_offset);
        loop {
            if self.queue.is_empty() {
                match self.replica.poll_action() {
                    None => break,
                    Some(sync @ Action::Sync { .. }) => self.gather_round(sync),
                    Some(other) => self.queue.push_back(other),
                }
            }
            if !matches!(self.queue.front(), Some(Action::Append { .. })) {
                break;
            }
            let Some(Action::Append { end_offset: end, records: parts, .. }) = self.queue.pop_front() else { unreachable!() };
            end_offset = end;
            records.extend(parts);
            self.merged.push(end);
        }
        Action::Append { base_offset, end_offset, records }
    }

    /// A `Sync` at the head of the queue: the appends already queued behind it go first and
    /// the sync covers them (later syncs in the run are the same sync).
    fn gather_round(&mut self, sync: Action) {
        let mut sync = sync;
        loop {
            match self.replica.poll_action() {
                Some(append @ Action::Append { .. }) => self.queue.push_back(append),
                Some(Action::Sync { through }) => {
                    if let Action::Sync { through: first } = &mut sync {
                        *first = (*first).max(through);
                    }
                }
                other => {
                    self.queue.push_back(sync);
                    self.queue.extend(other);
                    return;
                }
            }
        }
    }

    /// A disk action handed out is done: `completion` is its completion for the replica
    /// (`None` for the actions that have none: the checkpoints and `AdvanceLogStart`). Only a
    /// `Sync` and an `Append` are ever out together, and their completions tell them apart.
    pub fn finish(&mut self, now_ms: i64, completion: Option<Completion>) {
        if let Some(Completion::Appended { end_offset }) = completion {
            assert!(self.busy, "finish without a disk action out");
            self.busy = false;
            let merged = std::mem::take(&mut self.merged);
            assert_eq!(merged.last(), Some(&end_offset), "the completion of the append that is out");
            for end_offset in merged {
                self.replica.handle_completion(now_ms, Completion::Appended { end_offset });
            }
            return;
        }
        if let Some(Completion::Synced { .. }) = completion {
            assert!(self.syncing, "Synced without a sync out");
            self.syncing = false;
        } else {
            assert!(self.busy, "finish without a disk action out");
            self.busy = false;
        }
        if let Some(completion) = completion {
            self.replica.handle_completion(now_ms, completion);
        }
    }

    /// `(high watermark, written end)` if either moved since the last call.
    pub fn poll_visible(&mut self) -> Option<(Offset, Offset)> {
        let now = (self.replica.high_watermark(), self.replica.written_offset());
        if now == self.visible {
            return None;
        }
        self.visible = now;
        Some(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::encode_batch;
    use crate::ids::{LeaderEpoch, NodeId, PartitionEpoch};
    use crate::replica::{LeaderAndIsr, PersistedState, ReplicaConfig};
    use bytes::Bytes;
    use kafka_protocol::records::Compression;

    fn leader() -> PartitionDriver {
        leader_with(true)
    }

    fn leader_with(ack_after_fsync: bool) -> PartitionDriver {
        let config = ReplicaConfig { ack_after_fsync, ..ReplicaConfig::default() };
        let mut r = Replica::new(NodeId(1), config, PersistedState::default());
        r.become_leader(
            0,
            LeaderAndIsr {
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
                isr: vec![NodeId(1)],
                replicas: vec![NodeId(1)],
            },
        )
        .unwrap();
        let mut d = PartitionDriver::new(r);
        // The epoch checkpoint of the new epoch.
        while let Some(a) = d.poll_action() {
            if is_disk(&a) {
                d.finish(0, None);
            }
        }
        d
    }

    fn batch(id: i64) -> Bytes {
        Bytes::from(encode_batch(1, id, Compression::None))
    }

    #[test]
    fn appends_behind_a_sync_join_its_round_and_nothing_overtakes_a_disk_action() {
        let mut d = leader();
        d.replica_mut().handle_produce(1, 1, batch(1), -1, 30_000).expect("valid records");
        let first = d.poll_action().unwrap();
        let Action::Append { end_offset, .. } = first else { panic!("{first:?}") };
        assert!(d.poll_action().is_none(), "one disk action at a time");
        d.replica_mut().handle_produce(1, 2, batch(2), -1, 30_000).expect("valid records");
        d.replica_mut().handle_produce(1, 3, batch(3), -1, 30_000).expect("valid records");
        d.finish(1, Some(Completion::Appended { end_offset }));
        let mut order = Vec::new();
        let mut written = end_offset;
        while let Some(a) = d.poll_action() {
            match a {
                Action::Append { end_offset, .. } => {
                    order.push("append");
                    written = end_offset;
                    d.finish(1, Some(Completion::Appended { end_offset }));
                }
                Action::Sync { .. } => {
                    order.push("sync");
                    d.finish(1, Some(Completion::Synced { through: written }));
                }
                Action::ReplyProduce { .. } => order.push("reply"),
                a if is_disk(&a) => d.finish(1, None),
                _ => {}
            }
        }
        // The two appends behind the first sync go out as one write, before the sync.
        assert_eq!(order, ["append", "sync", "reply", "reply", "reply"]);
        assert_eq!(d.replica().high_watermark(), Offset(3));
        assert_eq!(d.poll_visible(), Some((Offset(3), Offset(3))));
        assert_eq!(d.poll_visible(), None);
    }

    #[test]
    fn appends_waiting_in_line_go_out_as_one_write_and_complete_one_by_one() {
        // Without fsync only appends are queued, no syncs between them.
        for fsync in [true, false] {
            let mut d = leader_with(fsync);
            d.replica_mut().handle_produce(1, 1, batch(1), -1, 30_000).expect("valid records");
            let Some(Action::Append { end_offset, records, .. }) = d.poll_action() else { panic!() };
            assert_eq!(records.len(), 1);
            for id in 2..=4 {
                d.replica_mut().handle_produce(1, id, batch(id as i64), -1, 30_000).expect("valid records");
            }
            d.finish(1, Some(Completion::Appended { end_offset }));
            let mut writes = Vec::new();
            let mut replies = 0;
            while let Some(a) = d.poll_action() {
                match a {
                    Action::Append { base_offset, end_offset, records } => {
                        let offsets: Vec<i64> =
                            records.iter().flat_map(|r| crate::batch::scan_headers(r).map(|(_, h)| h.base_offset)).collect();
                        writes.push((base_offset, end_offset, offsets));
                        d.finish(1, Some(Completion::Appended { end_offset }));
                    }
                    Action::Sync { through } => d.finish(1, Some(Completion::Synced { through })),
                    Action::ReplyProduce { .. } => replies += 1,
                    a if is_disk(&a) => d.finish(1, None),
                    _ => {}
                }
            }
            assert_eq!(writes, [(Offset(1), Offset(4), vec![1, 2, 3])], "fsync {fsync}: three appends, one write, in order");
            assert_eq!(replies, 4, "fsync {fsync}: every produce answered");
            assert_eq!(d.replica().written_offset(), Offset(4));
            assert_eq!(d.replica().high_watermark(), Offset(4));
        }
    }

    #[test]
    fn an_append_overlaps_a_sync_and_the_next_sync_waits_for_both() {
        let mut d = leader();
        d.replica_mut().handle_produce(1, 1, batch(1), -1, 30_000).expect("valid records");
        let Some(Action::Append { end_offset: first, .. }) = d.poll_action() else { panic!() };
        d.finish(1, Some(Completion::Appended { end_offset: first }));
        let Some(Action::Sync { .. }) = d.poll_action() else { panic!() };

        // Produced during the fsync: written at once, not synced by it.
        d.replica_mut().handle_produce(1, 2, batch(2), -1, 30_000).expect("valid records");
        let Some(Action::Append { end_offset: second, .. }) = d.poll_action() else { panic!() };
        assert!(d.poll_action().is_none(), "one append at a time, and no second sync");
        d.finish(1, Some(Completion::Synced { through: first }));
        assert!(d.poll_action().is_none(), "the next sync waits for the append");
        assert_eq!(d.replica().high_watermark(), first);
        d.finish(1, Some(Completion::Appended { end_offset: second }));
        let mut replies = 0;
        let mut synced = false;
        while let Some(a) = d.poll_action() {
            match a {
                Action::Sync { through } => {
                    assert_eq!(through, second);
                    synced = true;
                    d.finish(1, Some(Completion::Synced { through: second }));
                }
                Action::ReplyProduce { .. } => replies += 1,
                a if is_disk(&a) => d.finish(1, None),
                _ => {}
            }
        }
        assert!(synced);
        assert_eq!(replies, 2);
        assert_eq!(d.replica().high_watermark(), second);
    }

    #[test]
    fn only_an_append_may_overlap_a_sync() {
        let mut d = leader();
        d.replica_mut().handle_produce(1, 1, batch(1), -1, 30_000).expect("valid records");
        let Some(Action::Append { end_offset, .. }) = d.poll_action() else { panic!() };
        d.finish(1, Some(Completion::Appended { end_offset }));
        let Some(Action::Sync { .. }) = d.poll_action() else { panic!() };
        // The produce's reply is behind the sync: nothing but an append passes it.
        assert!(d.poll_action().is_none());
        d.finish(1, Some(Completion::Synced { through: end_offset }));
        assert!(matches!(d.poll_action(), Some(Action::ReplyProduce { .. })));
    }
}
