//! Newtypes for the nouns shared by the replication, controller and storage state machines, so
//! that an offset cannot be passed where a leader epoch is expected.
//!
//! Each wraps the integer type Kafka uses for it on the wire; `-1` keeps Kafka's meaning of
//! "none" where Kafka gives it one (`NodeId::NONE`, `LeaderEpoch::NONE`).

use std::fmt;

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$inner> for $name {
            fn from(value: $inner) -> Self {
                $name(value)
            }
        }
    };
}

newtype!(
    /// A broker or controller node (`node.id`); the replica id in follower fetches.
    NodeId(i32)
);
newtype!(
    /// A partition leader's epoch (KIP-101), bumped by the controller on every leader change.
    LeaderEpoch(i32)
);
newtype!(
    /// A position in one partition's log: the offset of a record, or the next one to write.
    Offset(i64)
);
newtype!(
    /// The epoch of a partition's ISR/leader state as stored by the controller (KIP-497's
    /// `partition_epoch`), bumped on every change so stale AlterPartition requests are refused.
    PartitionEpoch(i32)
);
newtype!(
    /// The epoch a broker got when it registered with the controller; a restart gets a new one.
    BrokerEpoch(i64)
);
newtype!(
    /// A Raft term of the controller quorum (KRaft's `leader_epoch` for the metadata log).
    Term(i32)
);

impl NodeId {
    pub const NONE: NodeId = NodeId(-1);
}

impl LeaderEpoch {
    pub const NONE: LeaderEpoch = LeaderEpoch(-1);

    pub fn next(self) -> LeaderEpoch {
        LeaderEpoch(self.0 + 1)
    }
}

impl Offset {
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }

    pub fn plus(self, n: i64) -> Offset {
        Offset(self.0 + n)
    }
}

impl Term {
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}
