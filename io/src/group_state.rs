//! One core's group coordinator (`core::group::GroupCoordinator`) and the requests waiting on
//! it; `groups` drives it and answers the group APIs.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use odradek_core::group::{self, GroupCoordinator, RequestId, Response};
use odradek_core::ids::LeaderEpoch;

/// One core's coordinator and the requests waiting on its answers.
pub struct Groups {
    pub coordinator: RefCell<GroupCoordinator>,
    pub waiting: RefCell<BTreeMap<RequestId, futures_channel::oneshot::Sender<Response>>>,
    pub next_id: Cell<RequestId>,
    /// Per `__consumer_offsets` partition this core leads, the leader epoch its
    /// groups were loaded for. A load in progress checks it is still wanted.
    pub leading: RefCell<BTreeMap<i32, LeaderEpoch>>,
    /// A request to create `__consumer_offsets` is on its way to the controller.
    pub creating_topic: Cell<bool>,
}

impl Groups {
    pub fn new(coordinator: GroupCoordinator) -> Groups {
        Groups {
            coordinator: RefCell::new(coordinator),
            waiting: RefCell::default(),
            next_id: Cell::new(0),
            leading: RefCell::default(),
            creating_topic: Cell::new(false),
        }
    }
}

/// A group request, as the coordinator takes it.
pub enum Call {
    Join(group::JoinRequest),
    Sync(group::SyncRequest),
    Heartbeat(group::HeartbeatRequest),
    Leave(group::LeaveRequest),
    Commit(group::OffsetCommitRequest),
    Fetch(String, Option<Vec<(String, i32)>>),
    Describe(Vec<String>),
    List,
    Delete(Vec<String>),
    OffsetDelete(String, Vec<(String, i32)>),
}
