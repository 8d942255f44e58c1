//! A broker's life with the active controller (KIP-631): register its incarnation, heartbeat
//! fast until unfenced and then at the heartbeat interval, register again when the controller
//! no longer knows the registration, and serve partition state only once this incarnation is
//! registered and unfenced in the committed image; and, asked to stop, KRaft's controlled
//! shutdown: heartbeats with `want_shutdown` until the controller answers `should_shutdown`
//! (it has moved this broker's leaderships and taken it out of every ISR). The broker's core 0
//! and the simulated nodes both run it; they carry its requests to the active controller and
//! hand back the answers (or `None` when none came).

use crate::controller::{BrokerHeartbeatRequest, BrokerRegistrationRequest, ControllerError, Endpoint, MetadataImage, Response, TopicId};
use crate::controller_rpc::ControllerRequest;
use crate::ids::{BrokerEpoch, NodeId};
use crate::raft::Index;

/// Heartbeats while fenced: unfencing needs the registration applied, which takes a round.
pub const FENCED_HEARTBEAT_MS: i64 = 100;
/// After a refused or unanswered registration.
pub const REGISTER_RETRY_MS: i64 = 200;
/// Between shutdown heartbeats the controller has not yet acknowledged.
pub const SHUTDOWN_RETRY_MS: i64 = 50;

/// What changed with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Registered(BrokerEpoch),
    /// The controller unfenced this registration (the first time for it).
    Unfenced,
    /// The controller no longer knows the registration: registering again.
    Lost,
    /// Controlled shutdown: the controller has moved this broker's leaderships (or, for a
    /// broker it no longer knows, there were none to move). No more requests follow.
    ShutdownAcknowledged,
}

/// Where a controlled shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Running,
    /// Asked to stop; shutdown heartbeats go out (after any request already out is answered:
    /// an ordinary heartbeat answered after the shutdown request would unfence the broker
    /// again).
    Requested,
    Acknowledged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Register,
    Heartbeat,
    /// A heartbeat with `want_shutdown`.
    Shutdown,
}

pub struct BrokerLifecycle {
    broker_id: NodeId,
    incarnation_id: [u8; 16],
    endpoints: Vec<Endpoint>,
    /// `broker.rack`, sent with every registration.
    rack: Option<String>,
    heartbeat_interval_ms: i64,
    epoch: Option<BrokerEpoch>,
    fenced: bool,
    in_flight: Option<(u64, Kind)>,
    next_ms: i64,
    next_id: u64,
    /// Registered and unfenced in an applied image once in this incarnation.
    serving: bool,
    shutdown: Shutdown,
    /// The replicas of failed log directories, reported in every heartbeat.
    offline_replicas: Vec<(TopicId, i32)>,
}

impl BrokerLifecycle {
    pub fn new(broker_id: NodeId, incarnation_id: [u8; 16], endpoints: Vec<Endpoint>, heartbeat_interval_ms: i64, now_ms: i64) -> Self {
        BrokerLifecycle {
            broker_id,
            incarnation_id,
            endpoints,
            rack: None,
            heartbeat_interval_ms,
            epoch: None,
            fenced: true,
            in_flight: None,
            next_ms: now_ms,
            next_id: 0,
            serving: false,
            shutdown: Shutdown::Running,
            offline_replicas: Vec::new(),
        }
    }

    /// The replicas this broker cannot serve (their log directory failed), sorted; heartbeats
    /// report them until the process ends. A change goes out with the next request at once,
    /// not after the heartbeat interval: until the controller hears of it, clients of those
    /// partitions get KAFKA_STORAGE_ERROR here.
    pub fn set_offline_replicas(&mut self, now_ms: i64, replicas: Vec<(TopicId, i32)>) {
        if replicas != self.offline_replicas {
            self.offline_replicas = replicas;
            if self.epoch.is_some() && self.shutdown == Shutdown::Running {
                self.next_ms = self.next_ms.min(now_ms);
            }
        }
    }

    /// The broker registers in `rack` (`broker.rack`).
    pub fn with_rack(mut self, rack: Option<String>) -> Self {
        self.rack = rack;
        self
    }

    pub fn broker_epoch(&self) -> Option<BrokerEpoch> {
        self.epoch
    }

    /// The interval between heartbeats once unfenced.
    pub fn heartbeat_interval_ms(&self) -> i64 {
        self.heartbeat_interval_ms
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// Whether partition state from `image` may be acted on: once this incarnation's
    /// registration is in it, unfenced, it stays so for the process's life. Before, the image
    /// may still make this broker the leader of an epoch whose unsynced tail it lost (KRaft
    /// brokers publish metadata only after catching up past their own registration).
    pub fn serves(&mut self, image: &MetadataImage) -> bool {
        if !self.serving {
            self.serving = self.epoch.is_some_and(|epoch| image.serves(self.broker_id, epoch));
        }
        self.serving
    }

    /// Controlled shutdown begins: from the next request on, heartbeats ask for it. A broker
    /// not registered has no leadership to move.
    pub fn begin_shutdown(&mut self, now_ms: i64) -> Shutdown {
        if self.shutdown == Shutdown::Running {
            self.shutdown = if self.epoch.is_some() { Shutdown::Requested } else { Shutdown::Acknowledged };
            self.next_ms = now_ms;
        }
        self.shutdown
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown
    }

    /// When [`BrokerLifecycle::poll_request`] has something to send (none while a request is
    /// out: its answer or failure comes first).
    pub fn poll_timeout(&self) -> Option<i64> {
        (self.in_flight.is_none() && self.shutdown != Shutdown::Acknowledged).then_some(self.next_ms)
    }

    /// The request to send to the active controller now, if any; `applied` is the metadata
    /// index this broker has applied, which the controller unfences against.
    pub fn poll_request(&mut self, now_ms: i64, applied: Index) -> Option<(u64, ControllerRequest)> {
        if self.in_flight.is_some() || now_ms < self.next_ms || self.shutdown == Shutdown::Acknowledged {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let (kind, request) = match self.epoch {
            None => (
                Kind::Register,
                ControllerRequest::RegisterBroker(BrokerRegistrationRequest {
                    broker_id: self.broker_id,
                    incarnation_id: self.incarnation_id,
                    endpoints: self.endpoints.clone(),
                    rack: self.rack.clone(),
                }),
            ),
            Some(broker_epoch) => (
                if self.shutdown == Shutdown::Requested { Kind::Shutdown } else { Kind::Heartbeat },
                ControllerRequest::Heartbeat(BrokerHeartbeatRequest {
                    broker_id: self.broker_id,
                    broker_epoch,
                    current_metadata_offset: applied,
                    want_fence: false,
                    want_shutdown: self.shutdown == Shutdown::Requested,
                    offline_replicas: self.offline_replicas.clone(),
                }),
            ),
        };
        self.in_flight = Some((id, kind));
        Some((id, request))
    }

    /// The answer to request `id`, or `None` when it failed (no controller, a timeout, a lost
    /// connection). An answer to anything but the request out is ignored.
    pub fn handle_response(&mut self, now_ms: i64, id: u64, answer: Option<Response>) -> Option<Event> {
        let Some((out, kind)) = self.in_flight else { return None };
        if out != id {
            return None;
        }
        self.in_flight = None;
        if self.shutdown == Shutdown::Requested {
            return self.on_shutdown_response(now_ms, kind, answer);
        }
        match (kind, answer) {
            (Kind::Register, Some(Response::RegisterBroker(r))) if r.error.is_none() => {
                self.epoch = Some(r.broker_epoch);
                self.fenced = true;
                self.next_ms = now_ms;
                Some(Event::Registered(r.broker_epoch))
            }
            (Kind::Register, _) => {
                self.next_ms = now_ms + REGISTER_RETRY_MS;
                None
            }
            (Kind::Heartbeat, Some(Response::Heartbeat(r))) => match r.error {
                None => {
                    let unfenced = self.fenced && !r.is_fenced;
                    self.fenced = r.is_fenced;
                    self.next_ms = now_ms + self.interval();
                    unfenced.then_some(Event::Unfenced)
                }
                Some(ControllerError::StaleBrokerEpoch | ControllerError::BrokerIdNotRegistered) => {
                    self.epoch = None;
                    self.fenced = true;
                    self.next_ms = now_ms;
                    Some(Event::Lost)
                }
                Some(_) => {
                    self.next_ms = now_ms + self.interval();
                    None
                }
            },
            (Kind::Heartbeat | Kind::Shutdown, _) => {
                self.next_ms = now_ms + self.interval();
                None
            }
        }
    }

    /// An answer while stopping: only a shutdown heartbeat's `should_shutdown` ends it (an
    /// ordinary one still out when the shutdown began does not), or the controller no longer
    /// knowing this broker (it leads nothing then).
    fn on_shutdown_response(&mut self, now_ms: i64, kind: Kind, answer: Option<Response>) -> Option<Event> {
        if kind != Kind::Shutdown {
            // The request out when the shutdown began: the shutdown heartbeat goes at once.
            self.next_ms = now_ms;
            return None;
        }
        self.next_ms = now_ms + SHUTDOWN_RETRY_MS;
        let Some(Response::Heartbeat(r)) = answer else { return None };
        let forgotten = matches!(r.error, Some(ControllerError::StaleBrokerEpoch | ControllerError::BrokerIdNotRegistered));
        if forgotten || (r.error.is_none() && r.should_shutdown) {
            self.shutdown = Shutdown::Acknowledged;
            return Some(Event::ShutdownAcknowledged);
        }
        None
    }

    fn interval(&self) -> i64 {
        if self.fenced {
            FENCED_HEARTBEAT_MS
        } else {
            self.heartbeat_interval_ms
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{BrokerHeartbeatResponse, BrokerRegistrationResponse};

    fn heartbeat(error: Option<ControllerError>, is_fenced: bool) -> Option<Response> {
        Some(Response::Heartbeat(BrokerHeartbeatResponse { error, is_caught_up: true, is_fenced, should_shutdown: false }))
    }

    // Guards the failed-directory report: replicas set offline go out in every heartbeat, and
    // a change goes out at once rather than after the heartbeat interval.
    #[test]
    fn offline_replicas_go_out_at_once_and_in_every_heartbeat() {
        let mut b = BrokerLifecycle::new(NodeId(1), [1; 16], Vec::new(), 2_000, 0);
        let (id, _) = b.poll_request(0, Index(0)).unwrap();
        let registered = Response::RegisterBroker(BrokerRegistrationResponse { error: None, broker_epoch: BrokerEpoch(7) });
        b.handle_response(1, id, Some(registered));
        let (id, _) = b.poll_request(1, Index(3)).unwrap();
        assert_eq!(b.handle_response(2, id, heartbeat(None, false)), Some(Event::Unfenced));
        assert_eq!(b.poll_timeout(), Some(2_002));
        b.set_offline_replicas(500, vec![([4; 16], 2)]);
        assert_eq!(b.poll_timeout(), Some(500), "the report does not wait for the interval");
        for at in [500, 2_600] {
            let (id, request) = b.poll_request(at, Index(3)).unwrap();
            let ControllerRequest::Heartbeat(h) = request else { panic!("{request:?}") };
            assert_eq!(h.offline_replicas, [([4; 16], 2)]);
            b.handle_response(at + 100, id, heartbeat(None, false));
        }
        b.set_offline_replicas(3_000, vec![([4; 16], 2)]);
        assert_eq!(b.poll_timeout(), Some(2_700 + 2_000), "no change, no early heartbeat");
    }

    // Guards the lifecycle both executors share: register, heartbeat fast while fenced, slow
    // once unfenced, one request out at a time, and register again when the registration is
    // lost; a failed registration is retried after a pause.
    #[test]
    fn a_broker_registers_heartbeats_and_registers_again_when_forgotten() {
        let mut b = BrokerLifecycle::new(NodeId(1), [1; 16], Vec::new(), 2_000, 0);
        let (id, request) = b.poll_request(0, Index(0)).expect("a registration");
        assert!(matches!(request, ControllerRequest::RegisterBroker(_)));
        assert!(b.poll_request(0, Index(0)).is_none(), "one request out at a time");
        assert_eq!(b.handle_response(5, id, None), None);
        assert_eq!(b.poll_timeout(), Some(5 + REGISTER_RETRY_MS));
        let (id, _) = b.poll_request(5 + REGISTER_RETRY_MS, Index(0)).unwrap();
        let registered = Response::RegisterBroker(BrokerRegistrationResponse { error: None, broker_epoch: BrokerEpoch(7) });
        assert_eq!(b.handle_response(210, id, Some(registered)), Some(Event::Registered(BrokerEpoch(7))));
        let (id, request) = b.poll_request(210, Index(3)).unwrap();
        assert!(matches!(request, ControllerRequest::Heartbeat(h) if h.broker_epoch == BrokerEpoch(7) && h.current_metadata_offset == Index(3)));
        assert_eq!(b.handle_response(220, id, heartbeat(None, true)), None);
        assert_eq!(b.poll_timeout(), Some(220 + FENCED_HEARTBEAT_MS));
        let (id, _) = b.poll_request(320, Index(4)).unwrap();
        assert_eq!(b.handle_response(330, id, heartbeat(None, false)), Some(Event::Unfenced));
        assert_eq!(b.poll_timeout(), Some(2_330));
        let (id, _) = b.poll_request(2_330, Index(4)).unwrap();
        assert_eq!(b.handle_response(2_340, id, heartbeat(Some(ControllerError::StaleBrokerEpoch), true)), Some(Event::Lost));
        assert_eq!(b.broker_epoch(), None);
        assert!(matches!(b.poll_request(2_340, Index(4)), Some((_, ControllerRequest::RegisterBroker(_)))));
    }

    fn registered_unfenced() -> BrokerLifecycle {
        let mut b = BrokerLifecycle::new(NodeId(1), [1; 16], Vec::new(), 2_000, 0);
        let (id, _) = b.poll_request(0, Index(0)).unwrap();
        let registered = Response::RegisterBroker(BrokerRegistrationResponse { error: None, broker_epoch: BrokerEpoch(7) });
        b.handle_response(1, id, Some(registered));
        let (id, _) = b.poll_request(1, Index(1)).unwrap();
        assert_eq!(b.handle_response(2, id, heartbeat(None, false)), Some(Event::Unfenced));
        b
    }

    fn want_shutdown(request: &ControllerRequest) -> bool {
        matches!(request, ControllerRequest::Heartbeat(h) if h.want_shutdown)
    }

    // KRaft's controlled shutdown: an ordinary heartbeat still out when it begins is answered
    // first and ends nothing (had the shutdown request gone before it, its answer would unfence
    // the broker again); shutdown heartbeats repeat until `should_shutdown`, then nothing more
    // is sent.
    #[test]
    fn controlled_shutdown_heartbeats_until_the_controller_moved_the_leaderships() {
        let mut b = registered_unfenced();
        let (ordinary, request) = b.poll_request(2_002, Index(2)).unwrap();
        assert!(!want_shutdown(&request));
        assert_eq!(b.begin_shutdown(2_010), Shutdown::Requested);
        assert!(b.poll_request(2_010, Index(2)).is_none(), "the ordinary heartbeat is answered first");
        let should = |should_shutdown| {
            Some(Response::Heartbeat(BrokerHeartbeatResponse { error: None, is_caught_up: true, is_fenced: false, should_shutdown }))
        };
        assert_eq!(b.handle_response(2_020, ordinary, should(false)), None);
        let (id, request) = b.poll_request(2_020, Index(2)).unwrap();
        assert!(want_shutdown(&request));
        assert_eq!(b.handle_response(2_030, id, None), None, "unanswered: asked again");
        assert_eq!(b.poll_timeout(), Some(2_030 + SHUTDOWN_RETRY_MS));
        let (id, request) = b.poll_request(2_080, Index(2)).unwrap();
        assert!(want_shutdown(&request));
        assert_eq!(b.handle_response(2_090, id, should(false)), None, "leaderships not moved yet");
        let (id, _) = b.poll_request(2_140, Index(3)).unwrap();
        assert_eq!(b.handle_response(2_150, id, should(true)), Some(Event::ShutdownAcknowledged));
        assert_eq!(b.shutdown(), Shutdown::Acknowledged);
        assert_eq!(b.poll_timeout(), None);
        assert!(b.poll_request(9_999, Index(3)).is_none());
    }

    #[test]
    fn a_broker_never_registered_or_forgotten_has_nothing_to_move() {
        let mut b = BrokerLifecycle::new(NodeId(1), [1; 16], Vec::new(), 2_000, 0);
        assert_eq!(b.begin_shutdown(0), Shutdown::Acknowledged);
        let mut b = registered_unfenced();
        b.begin_shutdown(3);
        let (id, _) = b.poll_request(3, Index(1)).unwrap();
        assert_eq!(b.handle_response(4, id, heartbeat(Some(ControllerError::StaleBrokerEpoch), true)), Some(Event::ShutdownAcknowledged));
    }
}
