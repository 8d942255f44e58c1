//! What a run does: the fault options (swarm testing: each seed turns faults on and off and
//! picks their rates) and the workload, all drawn from the seed.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Fault and workload options of one run. Probabilities are per check (every
/// `fault_interval_ms` of simulated time) unless said otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub scenario: Scenario,
    /// Simulated time of the safety phase (faults on).
    pub safety_ms: i64,
    /// Bound on the liveness phase (faults healed) to converge.
    pub liveness_ms_max: i64,
    pub fault_interval_ms: i64,
    /// Crash (power loss) of one node.
    pub crash_probability: f64,
    /// Crash of every node at once (correlated power loss).
    pub power_loss_probability: f64,
    /// After a crash, the node restarts after a delay in this range.
    pub restart_delay_ms: (i64, i64),
    /// Some unsynced writes survive a crash, the last one possibly torn.
    pub torn_writes: bool,
    pub pause_probability: f64,
    pub pause_ms_max: i64,
    pub partition_probability: f64,
    pub heal_probability: f64,
    pub clog_probability: f64,
    /// Prefer the partition leader as the target of crashes, pauses and isolation.
    pub target_leader: bool,
    /// One-way message loss.
    pub loss_probability: f64,
    pub delay_ms: (i64, i64),
    /// Disk write-to-durable latency.
    pub disk_latency_ms: (i64, i64),
    pub clock_skew_ms_max: i64,
    pub clock_drift_ppm_max: i64,
    /// Followers truncate through OffsetForLeaderEpoch instead of Fetch's diverging epoch.
    pub truncate_with_offset_for_leader_epoch: bool,
    pub min_insync_replicas: usize,
    /// `acks` of every produce: -1 (all), 1 or 0.
    pub acks: i16,
    /// odradek's durability switch: acknowledge (and count positions) only for fsynced data.
    /// Off, the page cache is written back every `writeback_ms` and a power loss may lose
    /// acknowledged writes.
    pub ack_after_fsync: bool,
    pub writeback_ms: i64,
    /// Probability that a follower's partition log dir stalls (syncs hang) for up to
    /// `stall_ms_max`: it falls out of the ISR while its process, a controller voter, lives.
    pub stall_probability: f64,
    pub stall_ms_max: i64,
    /// Crash the leader as soon as it has an ISR expansion in flight, or right after the ISR
    /// shrank to the leader alone (the scenarios that aim at those windows).
    pub crash_leader_on_expansion: f64,
    pub crash_last_replica: f64,
    /// Crash or isolate the leader while a follower outside the ISR holds a log that ends
    /// between the high watermark another ISR member (its successor) knows and the leader's
    /// own high watermark: the successor's epoch starts above its HW and the lagging follower
    /// asks to join at that HW (KIP-101's epoch-start window).
    pub crash_leader_over_lagging_follower: f64,
    pub producers: u32,
    pub consumers: u32,
    pub produce_interval_ms: (i64, i64),
    pub records_per_batch_max: u32,
    // ---- drawn after the fields above, so that a seed keeps the values those had ----
    /// Share of partitions that cut one direction only (A reaches B, B does not reach A).
    pub one_way_probability: f64,
    /// Per message between nodes (and from a node to a client): it is delivered a second
    /// time, up to `duplicate_delay_ms_max` after the first (a request retried over a new
    /// connection while the first copy is still queued).
    pub duplicate_probability: f64,
    pub duplicate_delay_ms_max: i64,
    /// A message already in flight on a link when a partition cuts it still arrives with this
    /// probability, else it is lost (packets past the cut arrive, the rest die with the
    /// connection).
    pub inflight_delivery_probability: f64,
    /// Per message reaching a crashed node: held until the node is back (a peer's or the
    /// network's queue outliving the crash), so answers to the previous incarnation's
    /// requests reach the new one.
    pub hold_for_restart_probability: f64,
    /// Per fsync (partition log, metadata log, vote): it fails (EIO).
    pub fsync_failure_probability: f64,
    /// Per fault tick: one node is asked to stop (SIGTERM) and goes through the broker's
    /// controlled shutdown (drain produces, `want_shutdown` heartbeats until the controller
    /// moved its leaderships, or a timeout), then exits and later starts again.
    pub graceful_stop_probability: f64,
    /// Cores per broker process: each runs its own `broker::Shard` with the partitions
    /// `shard_for` gives it; requests split over them and notices cross between them.
    pub cores: usize,
    /// The producers are idempotent (InitProducerId, sequences, retries until acknowledged)
    /// where acks=all; otherwise they never retry.
    pub idempotent_producers: bool,
    /// Transactional producers (acks=all runs only), alongside the others; half the consumers
    /// then read committed only.
    pub transactional_producers: u32,
    /// Per transaction: its producer goes silent past the transaction timeout with the
    /// transaction open, then carries on (a zombie the coordinator must have fenced).
    pub transactor_pause_probability: f64,
    /// Crash a transaction coordinator as it sends a decision's markers (after PrepareCommit
    /// or PrepareAbort is written, before the markers land).
    pub crash_coordinator_on_markers: f64,
    /// Per transactional batch sent: the network holds it past the producer's request
    /// timeout, so it reaches the leader after the producer gave up on it.
    pub late_produce_probability: f64,
    /// A transactional producer whose batch timed out aborts its transaction at the same
    /// epoch and starts the next one with a new epoch (librdkafka's way), instead of sending
    /// the batch again.
    pub transactor_abort_on_timeout: bool,
    /// ACL clients (the `acls` scenario): each sends CreateAcls and DeleteAcls over a small
    /// universe of bindings to random nodes, one request at a time, every so often.
    pub acl_clients: u32,
    pub acl_interval_ms: (i64, i64),
}

/// Named fault mixes; `Swarm` draws everything from the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Swarm,
    /// KIP-101: follower restarts with a stale HW, then the leader dies.
    Kip101,
    /// Crashes of two nodes in a row with unsynced tails that diverge.
    DoubleCrash,
    /// Leaders crash, pause and get isolated quickly, so epochs change fast.
    FastLeaderChanges,
    /// The leader is cut off from the controller quorum but still reachable by clients.
    ZombieLeader,
    /// Every broker loses power at once, torn tails included.
    PowerLoss,
    /// Only faults that hit one node at a time, at a high rate (ISR shrinks and expands).
    IsrChurn,
    /// The ISR shrinks to the leader alone (its followers' log dirs stall), which then
    /// crashes losing its unsynced tail: no other replica may lead until it returns.
    LastReplicaStanding,
    /// Followers drop out of the ISR and rejoin while the leader crashes, pauses or gets
    /// isolated with the expansion in flight (KIP-497: HW over the maximal ISR).
    IsrExpansionRace,
    /// acks 0/1/all × min.insync.replicas 1/2/3 (the cell is `seed % 9`) under kills and
    /// network partitions; acks=all loses nothing acknowledged, acks=1 losses are expected.
    AcksMatrix,
    /// Power loss with `ack_after_fsync` off: acknowledged writes may be lost (reported as
    /// expected for this mode), replicas never diverge.
    PowerLossNoFsync,
    /// Messages that outlive their context: duplicated, held across a crash and delivered to
    /// the restarted node, in flight across a new (often one-way) partition, under fast
    /// crashes and restarts.
    StaleMessages,
    /// fsyncs fail often: each failure halts its broker, which loses what the failed sync
    /// covered (or keeps a torn prefix of it).
    FsyncFailure,
    /// Idempotent producers (always) retry through leader crashes, pauses and isolation: the
    /// retry of a batch an old leader wrote, acknowledged or not, must get its first offset
    /// from the new leader, never a second copy.
    IdempotentFailover,
    /// Transactions under coordinator crashes between the decision and its markers, power
    /// loss with transactions open, and partitions that outlast the transaction timeout.
    Transactions,
    /// Transactional producers that go silent past their transaction timeout mid-transaction
    /// and come back (zombies), while leaders and coordinators are paused and isolated.
    ZombieTransactions,
    /// Transactional batches delivered after their producer timed out, aborted and began its
    /// next transaction: the leader must not let such a late batch open a transaction the
    /// producer's next marker would commit (KIP-890's verification).
    LateTransactionalWrites,
    /// ACLs created and deleted through the metadata log while controllers crash, lose power,
    /// get partitioned and run on skewed clocks: after healing every node holds the same
    /// ACLs, in the same order, deciding every probe alike, and the ACLs agree with what was
    /// acknowledged.
    Acls,
}

impl Scenario {
    pub const ALL: [Scenario; 18] = [
        Scenario::Swarm,
        Scenario::Kip101,
        Scenario::DoubleCrash,
        Scenario::FastLeaderChanges,
        Scenario::ZombieLeader,
        Scenario::PowerLoss,
        Scenario::IsrChurn,
        Scenario::LastReplicaStanding,
        Scenario::IsrExpansionRace,
        Scenario::AcksMatrix,
        Scenario::PowerLossNoFsync,
        Scenario::StaleMessages,
        Scenario::FsyncFailure,
        Scenario::IdempotentFailover,
        Scenario::Transactions,
        Scenario::ZombieTransactions,
        Scenario::LateTransactionalWrites,
        Scenario::Acls,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Swarm => "swarm",
            Scenario::Kip101 => "kip101",
            Scenario::DoubleCrash => "double-crash",
            Scenario::FastLeaderChanges => "fast-leader-changes",
            Scenario::ZombieLeader => "zombie-leader",
            Scenario::PowerLoss => "power-loss",
            Scenario::IsrChurn => "isr-churn",
            Scenario::LastReplicaStanding => "last-replica-standing",
            Scenario::IsrExpansionRace => "isr-expansion-race",
            Scenario::AcksMatrix => "acks-matrix",
            Scenario::PowerLossNoFsync => "power-loss-no-fsync",
            Scenario::StaleMessages => "stale-messages",
            Scenario::FsyncFailure => "fsync-failure",
            Scenario::IdempotentFailover => "idempotent-failover",
            Scenario::Transactions => "transactions",
            Scenario::ZombieTransactions => "zombie-transactions",
            Scenario::LateTransactionalWrites => "late-transactional-writes",
            Scenario::Acls => "acls",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

fn chance(rng: &mut ChaCha8Rng, on: f64, low: f64, high: f64) -> f64 {
    if rng.gen_bool(on) {
        rng.gen_range(low..high)
    } else {
        0.0
    }
}

impl Options {
    /// Draws the options of a run from its own stream (swarm testing: every fault is on with
    /// some probability, at a rate of its own).
    pub fn draw(scenario: Scenario, seed: u64, rng: &mut ChaCha8Rng) -> Options {
        let mut o = Options {
            scenario,
            safety_ms: 60_000,
            liveness_ms_max: 60_000,
            fault_interval_ms: rng.gen_range(200..2_000),
            crash_probability: chance(rng, 0.6, 0.02, 0.2),
            power_loss_probability: chance(rng, 0.2, 0.005, 0.05),
            restart_delay_ms: (rng.gen_range(0..500), rng.gen_range(500..8_000)),
            torn_writes: rng.gen_bool(0.5),
            pause_probability: chance(rng, 0.4, 0.02, 0.2),
            pause_ms_max: rng.gen_range(100..6_000),
            partition_probability: chance(rng, 0.5, 0.02, 0.2),
            heal_probability: rng.gen_range(0.1..0.6),
            clog_probability: chance(rng, 0.3, 0.02, 0.2),
            target_leader: rng.gen_bool(0.5),
            loss_probability: chance(rng, 0.4, 0.001, 0.1),
            delay_ms: (rng.gen_range(0..3), rng.gen_range(3..40)),
            disk_latency_ms: (rng.gen_range(0..2), rng.gen_range(2..20)),
            clock_skew_ms_max: rng.gen_range(0..20_000),
            clock_drift_ppm_max: if rng.gen_bool(0.5) { rng.gen_range(0..50_000) } else { 0 },
            truncate_with_offset_for_leader_epoch: rng.gen_bool(0.3),
            min_insync_replicas: 2,
            acks: -1,
            ack_after_fsync: true,
            writeback_ms: 0,
            stall_probability: 0.0,
            stall_ms_max: 0,
            crash_leader_on_expansion: 0.0,
            crash_last_replica: 0.0,
            crash_leader_over_lagging_follower: 0.0,
            producers: rng.gen_range(1..4),
            consumers: rng.gen_range(1..3),
            produce_interval_ms: (rng.gen_range(1..10), rng.gen_range(10..200)),
            records_per_batch_max: rng.gen_range(1..4),
            one_way_probability: 0.0,
            duplicate_probability: 0.0,
            duplicate_delay_ms_max: 0,
            inflight_delivery_probability: 1.0,
            hold_for_restart_probability: 0.0,
            fsync_failure_probability: 0.0,
            graceful_stop_probability: 0.0,
            cores: 1,
            idempotent_producers: false,
            transactional_producers: 0,
            transactor_pause_probability: 0.0,
            crash_coordinator_on_markers: 0.0,
            late_produce_probability: 0.0,
            transactor_abort_on_timeout: false,
            acl_clients: 0,
            acl_interval_ms: (0, 0),
        };
        match scenario {
            Scenario::Swarm => {}
            Scenario::Kip101 | Scenario::DoubleCrash => {
                o.crash_probability = rng.gen_range(0.1..0.3);
                o.power_loss_probability = 0.0;
                o.torn_writes = true;
                o.target_leader = scenario == Scenario::Kip101;
                o.restart_delay_ms = (0, 2_000);
                o.disk_latency_ms = (1, 30);
                o.partition_probability = 0.0;
                o.pause_probability = 0.0;
            }
            Scenario::FastLeaderChanges => {
                o.fault_interval_ms = rng.gen_range(100..600);
                o.target_leader = true;
                o.crash_probability = rng.gen_range(0.1..0.3);
                o.pause_probability = rng.gen_range(0.1..0.3);
                o.partition_probability = rng.gen_range(0.1..0.3);
                o.heal_probability = 0.5;
                o.restart_delay_ms = (0, 500);
            }
            Scenario::ZombieLeader => {
                o.target_leader = true;
                o.crash_probability = 0.0;
                o.power_loss_probability = 0.0;
                o.partition_probability = rng.gen_range(0.2..0.5);
                o.pause_probability = rng.gen_range(0.1..0.3);
                o.heal_probability = rng.gen_range(0.05..0.3);
            }
            Scenario::PowerLoss => {
                o.power_loss_probability = rng.gen_range(0.05..0.2);
                o.crash_probability = rng.gen_range(0.0..0.1);
                o.torn_writes = true;
                o.disk_latency_ms = (1, 40);
            }
            Scenario::IsrChurn => {
                o.target_leader = false;
                o.power_loss_probability = 0.0;
                o.crash_probability = rng.gen_range(0.05..0.2);
                o.pause_probability = rng.gen_range(0.1..0.3);
                o.partition_probability = rng.gen_range(0.1..0.3);
                o.heal_probability = 0.5;
                o.loss_probability = 0.0;
                o.stall_probability = rng.gen_range(0.05..0.2);
                o.stall_ms_max = rng.gen_range(1_000..10_000);
            }
            Scenario::LastReplicaStanding => {
                // min.insync.replicas=1: the last replica goes on acknowledging alone, so its
                // synced log holds writes no other replica has.
                o.min_insync_replicas = 1;
                o.fault_interval_ms = rng.gen_range(300..1_000);
                o.crash_probability = 0.0;
                o.power_loss_probability = 0.0;
                o.partition_probability = 0.0;
                o.pause_probability = 0.0;
                o.torn_writes = true;
                o.disk_latency_ms = (1, 40);
                o.stall_probability = rng.gen_range(0.2..0.5);
                o.stall_ms_max = rng.gen_range(6_000..15_000);
                o.crash_last_replica = rng.gen_range(0.3..1.0);
                o.restart_delay_ms = (1_000, rng.gen_range(2_000..10_000));
            }
            Scenario::IsrExpansionRace => {
                o.target_leader = false;
                o.power_loss_probability = 0.0;
                o.crash_probability = rng.gen_range(0.0..0.1);
                o.pause_probability = rng.gen_range(0.0..0.1);
                o.partition_probability = rng.gen_range(0.0..0.1);
                o.heal_probability = 0.5;
                o.stall_probability = rng.gen_range(0.1..0.4);
                o.stall_ms_max = rng.gen_range(2_000..10_000);
                o.crash_leader_on_expansion = rng.gen_range(0.2..0.8);
                o.restart_delay_ms = (0, 2_000);
                o.produce_interval_ms = (1, rng.gen_range(2..20));
                o.producers = rng.gen_range(2..4);
                o.crash_leader_over_lagging_follower = rng.gen_range(0.3..1.0);
            }
            Scenario::AcksMatrix => {
                let cell = seed % 9;
                o.acks = [0, 1, -1][(cell / 3) as usize];
                o.min_insync_replicas = 1 + (cell % 3) as usize;
                o.power_loss_probability = 0.0;
                o.pause_probability = 0.0;
                o.clog_probability = 0.0;
                o.crash_probability = rng.gen_range(0.05..0.25);
                o.partition_probability = rng.gen_range(0.05..0.25);
                o.heal_probability = rng.gen_range(0.2..0.6);
                o.torn_writes = true;
            }
            Scenario::PowerLossNoFsync => {
                o.ack_after_fsync = false;
                o.writeback_ms = rng.gen_range(200..5_000);
                o.power_loss_probability = rng.gen_range(0.05..0.2);
                o.crash_probability = rng.gen_range(0.0..0.1);
                o.torn_writes = true;
            }
            Scenario::StaleMessages => {
                o.fault_interval_ms = rng.gen_range(200..800);
                o.crash_probability = rng.gen_range(0.1..0.3);
                o.restart_delay_ms = (0, rng.gen_range(200..3_000));
                o.partition_probability = rng.gen_range(0.1..0.3);
                o.heal_probability = rng.gen_range(0.2..0.6);
                o.power_loss_probability = 0.0;
            }
            Scenario::FsyncFailure => {
                o.torn_writes = rng.gen_bool(0.7);
                o.disk_latency_ms = (1, 30);
            }
            Scenario::IdempotentFailover => {
                o.acks = -1;
                o.target_leader = true;
                o.fault_interval_ms = rng.gen_range(200..1_000);
                o.crash_probability = rng.gen_range(0.1..0.3);
                // Pauses outlast the producers' request timeout: they resend batches the
                // paused leader may already have written.
                o.pause_probability = rng.gen_range(0.1..0.3);
                o.pause_ms_max = rng.gen_range(2_000..6_000);
                o.partition_probability = rng.gen_range(0.1..0.3);
                o.heal_probability = 0.5;
                o.power_loss_probability = 0.0;
                o.restart_delay_ms = (0, 1_000);
                o.producers = rng.gen_range(2..4);
                o.produce_interval_ms = (1, rng.gen_range(2..20));
            }
            Scenario::Transactions => {
                o.acks = -1;
                o.fault_interval_ms = rng.gen_range(300..1_500);
                o.crash_probability = rng.gen_range(0.05..0.2);
                o.power_loss_probability = rng.gen_range(0.0..0.03);
                o.partition_probability = rng.gen_range(0.05..0.2);
                o.heal_probability = rng.gen_range(0.1..0.5);
                o.restart_delay_ms = (0, 2_000);
            }
            Scenario::ZombieTransactions => {
                o.acks = -1;
                o.target_leader = true;
                o.fault_interval_ms = rng.gen_range(300..1_500);
                o.crash_probability = rng.gen_range(0.0..0.1);
                o.pause_probability = rng.gen_range(0.05..0.2);
                o.pause_ms_max = rng.gen_range(2_000..12_000);
                o.partition_probability = rng.gen_range(0.05..0.2);
                o.heal_probability = 0.5;
                o.power_loss_probability = 0.0;
            }
            Scenario::LateTransactionalWrites => {
                o.acks = -1;
                o.fault_interval_ms = rng.gen_range(300..1_500);
                o.crash_probability = rng.gen_range(0.0..0.1);
                o.partition_probability = rng.gen_range(0.0..0.1);
            }
            // Every node is a controller voter: crashes, power losses and partitions hit the
            // active controller with its ACL entries proposed and not yet committed.
            Scenario::Acls => {
                o.fault_interval_ms = rng.gen_range(200..1_000);
                o.crash_probability = rng.gen_range(0.05..0.25);
                o.power_loss_probability = chance(rng, 0.5, 0.01, 0.05);
                o.partition_probability = rng.gen_range(0.05..0.25);
                o.heal_probability = rng.gen_range(0.2..0.6);
                o.restart_delay_ms = (0, rng.gen_range(500..3_000));
            }
        }
        // The faults added after the rest: drawn last, so every earlier option keeps its value.
        o.one_way_probability = chance(rng, 0.5, 0.2, 1.0);
        o.duplicate_probability = chance(rng, 0.4, 0.001, 0.05);
        o.duplicate_delay_ms_max = rng.gen_range(0..3_000);
        o.inflight_delivery_probability = rng.gen_range(0.0..=1.0);
        o.hold_for_restart_probability = chance(rng, 0.4, 0.05, 0.5);
        o.fsync_failure_probability = chance(rng, 0.3, 0.0002, 0.003);
        match scenario {
            // The leader is cut off both ways from the quorum, and nothing crashes.
            Scenario::ZombieLeader => {
                o.one_way_probability = 0.0;
                o.fsync_failure_probability = 0.0;
            }
            // Only the follower stalls and the aimed crash of the last replica.
            Scenario::LastReplicaStanding => o.fsync_failure_probability = 0.0,
            Scenario::StaleMessages => {
                o.one_way_probability = rng.gen_range(0.3..1.0);
                o.duplicate_probability = rng.gen_range(0.01..0.1);
                o.hold_for_restart_probability = rng.gen_range(0.3..1.0);
            }
            Scenario::FsyncFailure => o.fsync_failure_probability = rng.gen_range(0.002..0.02),
            _ => {}
        }
        o.graceful_stop_probability = chance(rng, 0.4, 0.02, 0.2);
        o.cores = if rng.gen_bool(0.5) { 2 } else { 1 };
        o.idempotent_producers = rng.gen_bool(0.5) || scenario == Scenario::IdempotentFailover;
        let txn_scenario = matches!(scenario, Scenario::Transactions | Scenario::ZombieTransactions | Scenario::LateTransactionalWrites);
        o.transactional_producers = if o.acks == -1 && (txn_scenario || rng.gen_bool(0.25)) { rng.gen_range(1..=2) } else { 0 };
        o.transactor_pause_probability = if scenario == Scenario::ZombieTransactions { rng.gen_range(0.05..0.3) } else { 0.0 };
        o.crash_coordinator_on_markers = if scenario == Scenario::Transactions { rng.gen_range(0.05..0.3) } else { 0.0 };
        if scenario == Scenario::LateTransactionalWrites {
            o.late_produce_probability = rng.gen_range(0.05..0.3);
            o.transactor_abort_on_timeout = true;
        }
        // Drawn only here, last: every other scenario's seeds keep their draws.
        if scenario == Scenario::Acls {
            o.acl_clients = rng.gen_range(1..=2);
            o.acl_interval_ms = (rng.gen_range(5..50), rng.gen_range(50..400));
        }
        o
    }

    /// Acknowledged writes may be lost by design in this run (acks=0/1, or acks without
    /// fsync); the history checker then reports lost writes as expected, not as anomalies.
    pub fn may_lose_acknowledged(&self) -> bool {
        self.acks != -1 || !self.ack_after_fsync
    }

    /// The options in one line, for failure reports.
    pub fn summary(&self) -> String {
        format!(
            "scenario={} safety_ms={} crash={:.3} power_loss={:.3} torn={} pause={:.3}/{}ms \
             partition={:.3} heal={:.2} clog={:.3} target_leader={} loss={:.3} delay={:?}ms \
             disk={:?}ms skew<={}ms drift<={}ppm ofle={} min_isr={} acks={} fsync={} stall={:.3}/{}ms \
             crash_on_expansion={:.2} crash_last={:.2} crash_over_lagging={:.2} producers={} consumers={} \
             one_way={:.2} duplicate={:.3}/{}ms inflight_delivery={:.2} hold_for_restart={:.2} fsync_failure={:.4} \
             graceful_stop={:.3} cores={} idempotent={} transactional={} zombie={:.2} crash_on_markers={:.2} late_produce={:.2} abort_on_timeout={} acl_clients={} acl_interval={:?}ms",
            self.scenario.name(),
            self.safety_ms,
            self.crash_probability,
            self.power_loss_probability,
            self.torn_writes,
            self.pause_probability,
            self.pause_ms_max,
            self.partition_probability,
            self.heal_probability,
            self.clog_probability,
            self.target_leader,
            self.loss_probability,
            self.delay_ms,
            self.disk_latency_ms,
            self.clock_skew_ms_max,
            self.clock_drift_ppm_max,
            self.truncate_with_offset_for_leader_epoch,
            self.min_insync_replicas,
            self.acks,
            self.ack_after_fsync,
            self.stall_probability,
            self.stall_ms_max,
            self.crash_leader_on_expansion,
            self.crash_last_replica,
            self.crash_leader_over_lagging_follower,
            self.producers,
            self.consumers,
            self.one_way_probability,
            self.duplicate_probability,
            self.duplicate_delay_ms_max,
            self.inflight_delivery_probability,
            self.hold_for_restart_probability,
            self.fsync_failure_probability,
            self.graceful_stop_probability,
            self.cores,
            self.idempotent_producers,
            self.transactional_producers,
            self.transactor_pause_probability,
            self.crash_coordinator_on_markers,
            self.late_produce_probability,
            self.transactor_abort_on_timeout,
            self.acl_clients,
            self.acl_interval_ms,
        )
    }
}
