//! Seeded runs of every scenario. Each seed runs a safety phase with faults, then a liveness
//! phase, then the history check; a failure names the seed and its replay command.
//! `ODRADEK_SIM_SEEDS` sets the number of seeds per scenario (default 18: two passes over the
//! acks matrix's nine cells).

use odradek_sim::options::Scenario;
use odradek_sim::sim::run_seed;

fn seeds() -> u64 {
    std::env::var("ODRADEK_SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(18)
}

fn run_scenario(scenario: Scenario) {
    for seed in 0..seeds() {
        let report = run_seed(seed, scenario);
        if let Some(failure) = &report.failure {
            panic!(
                "seed {seed} ({}) failed: {failure}\n  options: {}\n  replay: {}",
                scenario.name(),
                report.options.summary(),
                report.replay_command()
            );
        }
        // acks=0 is never answered; every other mode acknowledges writes.
        if report.options.acks != 0 {
            assert!(report.acked > 0, "seed {seed}: no write acknowledged");
        }
        if !report.options.may_lose_acknowledged() {
            assert_eq!(report.expected_losses, 0, "seed {seed}: losses counted in a lossless mode");
        }
    }
}

/// Same seed, same trace hash (and a different seed, a different one).
#[test]
fn same_seed_gives_same_trace_hash() {
    for seed in [1, 7, 42] {
        let a = run_seed(seed, Scenario::Swarm);
        let b = run_seed(seed, Scenario::Swarm);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} is not deterministic");
        assert_eq!((a.events, a.acked, a.simulated_ms), (b.events, b.acked, b.simulated_ms));
    }
    assert_ne!(run_seed(1, Scenario::Swarm).trace_hash, run_seed(2, Scenario::Swarm).trace_hash);
}

/// Swarm testing: every fault option drawn from the seed.
#[test]
fn swarm() {
    run_scenario(Scenario::Swarm);
}

/// KIP-101: followers restart with stale high watermarks and the leader dies next.
#[test]
fn kip101_truncation_does_not_lose_acknowledged_writes() {
    run_scenario(Scenario::Kip101);
}

/// KIP-101: two crashes in a row leave divergent unsynced tails that must converge.
#[test]
fn divergent_tails_after_double_crash_converge() {
    run_scenario(Scenario::DoubleCrash);
}

/// KIP-279: leaders change faster than followers finish truncating.
#[test]
fn fast_leader_changes_keep_committed_prefixes() {
    run_scenario(Scenario::FastLeaderChanges);
}

/// KIP-320: a leader cut off from the quorum keeps serving clients with a stale epoch.
#[test]
fn zombie_leader_cannot_commit() {
    run_scenario(Scenario::ZombieLeader);
}

/// Correlated power loss of every broker, with torn tails.
#[test]
fn all_brokers_losing_power_at_once_keep_acknowledged_writes() {
    run_scenario(Scenario::PowerLoss);
}

/// KIP-497: ISR shrinks and expansions racing with elections.
#[test]
fn isr_churn_with_min_isr() {
    run_scenario(Scenario::IsrChurn);
}

/// The ISR shrinks to the leader alone, which then crashes losing its unsynced tail: with
/// unclean election off no other replica may lead (it would lose what only the last replica
/// acknowledged), and nothing acknowledged is lost once it returns.
#[test]
fn last_replica_standing_keeps_the_partition_offline_until_it_returns() {
    run_scenario(Scenario::LastReplicaStanding);
}

/// KIP-497: a follower joins the ISR while the leader crashes, pauses or is isolated with the
/// expansion in flight; the HW must count the proposed member (the maximal ISR).
#[test]
fn isr_expansion_racing_leader_changes_keeps_hw_over_maximal_isr() {
    run_scenario(Scenario::IsrExpansionRace);
}

/// acks 0/1/all × min.insync.replicas 1/2/3 under kills and partitions: acks=all loses nothing
/// acknowledged; acks=1/0 losses are counted as expected, replicas never diverge.
#[test]
fn acks_by_min_isr_matrix_under_kills_and_partitions() {
    run_scenario(Scenario::AcksMatrix);
}

/// Power loss with acknowledgements before fsync: acknowledged writes may go (counted as
/// expected for the mode), replicas still end identical and no batch is rewritten in its epoch.
#[test]
fn power_loss_without_fsync_loses_but_never_diverges() {
    run_scenario(Scenario::PowerLossNoFsync);
}

/// The acks matrix covers all nine cells within nine consecutive seeds.
#[test]
fn acks_matrix_cells_cover_every_combination() {
    let cells: std::collections::BTreeSet<(i16, usize)> = (0..9)
        .map(|seed| {
            let o = odradek_sim::sim::Sim::new(seed, Scenario::AcksMatrix).options;
            (o.acks, o.min_insync_replicas)
        })
        .collect();
    assert_eq!(cells.len(), 9);
}

/// Duplicated messages, messages held across a crash and answered to the restarted node,
/// messages in flight across new (often one-way) partitions.
#[test]
fn stale_and_duplicated_messages_change_nothing_committed() {
    run_scenario(Scenario::StaleMessages);
}

/// Frequent fsync failures: each halts its broker, which loses what the sync covered.
#[test]
fn failed_fsyncs_lose_no_acknowledged_write() {
    run_scenario(Scenario::FsyncFailure);
}

/// Idempotent producers resend through leader crashes, pauses and isolation: every batch once.
#[test]
fn idempotent_producers_write_every_batch_once_across_failovers() {
    run_scenario(Scenario::IdempotentFailover);
}

/// Transactions under coordinator crashes between the decision and its markers, power loss
/// and partitions: committed ones whole and visible, aborted ones never read committed.
#[test]
fn transactions_stay_atomic_across_coordinator_crashes() {
    run_scenario(Scenario::Transactions);
    let committed: usize = (0..seeds()).map(|seed| run_seed(seed, Scenario::Transactions).counts.txn_commits).sum();
    assert!(committed > 0, "no transaction committed");
}

/// Transactional producers that go silent past their timeout and come back are fenced.
#[test]
fn zombie_transactional_producers_are_fenced() {
    run_scenario(Scenario::ZombieTransactions);
    let zombies: usize = (0..seeds()).map(|seed| run_seed(seed, Scenario::ZombieTransactions).counts.zombie_pauses).sum();
    assert!(zombies > 0, "no zombie pause fired");
}

/// ACLs created and deleted through the metadata log under crashes, power loss, partitions
/// and skew: after healing every node holds the same ACLs and decides alike, and the ACLs
/// agree with every acknowledged creation and deletion.
#[test]
fn acls_agree_on_every_node_and_with_what_was_acknowledged() {
    run_scenario(Scenario::Acls);
    let pinned: usize = (0..seeds())
        .map(|seed| {
            let counts = run_seed(seed, Scenario::Acls).counts;
            counts.acl_pinned_present + counts.acl_pinned_absent
        })
        .sum();
    assert!(pinned > 0, "the history pinned no binding");
}
