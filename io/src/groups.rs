//! Consumer groups: carries each part of a group request to the core owning its group (or to
//! every core), where `core::broker::Shard` runs the coordinator and answers it, and merges
//! the answers (`core::broker::groups`). FindCoordinator reads the metadata image and asks the
//! controller for `__consumer_offsets` on first use.

use std::rc::Rc;

use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
use odradek_core::broker::groups::{self, GroupRequest, GroupResponse, Routed, Target};
use odradek_core::controller::Response as ControllerResponse;
use odradek_core::controller_rpc::ControllerRequest;
use tracing::warn;

use crate::clock::now_ms;
use crate::shard::Shard;
use crate::storage::join_all;

pub use odradek_core::group::OFFSETS_TOPIC;

impl Shard {
    /// Runs one part of a group request on this core's coordinator and waits for its answer.
    pub async fn group_call(self: Rc<Self>, request: GroupRequest) -> GroupResponse {
        let (id, answer) = self.await_group_reply();
        self.machine().group_request(now_ms(), id, request);
        self.pump();
        answer.await.expect("the coordinator answers every request")
    }

    /// Asks the controller, once at a time, to create an internal topic (`__consumer_offsets`,
    /// `__transaction_state`) with Kafka's settings for it (see `ServerConfig`).
    fn create_internal_topic(self: &Rc<Self>, name: &'static str) {
        let (topic, creating) = if name == OFFSETS_TOPIC {
            (self.shared.config.offsets_topic(), &self.creating_offsets_topic)
        } else {
            (self.shared.config.transaction_state_topic(), &self.creating_txn_topic)
        };
        if creating.replace(true) {
            return;
        }
        let shard = self.clone();
        glommio::spawn_local(async move {
            let request = odradek_core::controller::CreateTopicsRequest { topics: vec![topic], validate_only: false };
            let answer = shard.controller_request(ControllerRequest::CreateTopics(request)).await;
            match answer {
                Some(ControllerResponse::CreateTopics(results)) => {
                    for r in results.into_iter().filter(|r| r.error.is_some()) {
                        warn!(error = ?r.error, "creating {name} failed; retrying on the next FindCoordinator");
                    }
                }
                _ => warn!("no controller answered the creation of {name}"),
            }
            let creating = if name == OFFSETS_TOPIC { &shard.creating_offsets_topic } else { &shard.creating_txn_topic };
            creating.set(false);
        })
        .detach();
    }
}

pub fn find_coordinator(shard: &Rc<Shard>, request: FindCoordinatorRequest, version: i16, listener: &str) -> FindCoordinatorResponse {
    let config = &shard.shared.config;
    let image = shard.image.borrow().clone();
    let (response, create) =
        groups::find_coordinator(&image, &request, version, config.group.offsets_topic_partitions, config.txn.partitions, listener);
    if let Some(topic) = create {
        shard.create_internal_topic(topic);
    }
    response
}

/// Runs every part of `routed` on its core, all at once, and merges their answers.
pub async fn answer(shard: &Rc<Shard>, routed: Routed) -> GroupResponse {
    let Routed { parts, merge } = routed;
    let calls = parts.into_iter().map(|(target, request)| {
        let shard = shard.clone();
        async move {
            match target {
                Target::Group(partition) => {
                    let owner = shard.owner(OFFSETS_TOPIC, partition);
                    vec![shard.on_shard(owner, move |s| s.group_call(request)).await]
                }
                Target::EveryCore => shard.on_every_shard(move |s| s.group_call(request)).await,
            }
        }
    });
    merge.merge(join_all(calls).await.into_iter().flatten().collect())
}
