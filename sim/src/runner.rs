//! Runs seeds: directly, or inside madsim's deterministic runtime under `--cfg madsim`.
//!
//! `MADSIM_TEST_CHECK_DETERMINISM` set (madsim's own switch): each seed runs twice through
//! madsim's `Runtime::check_determinism`, which logs every draw of madsim's RNG with the
//! virtual time it happened at and panics at the first draw that differs in the second run.
//! The simulation keeps its own RNG streams, so the runner feeds its trace into that log:
//! after the run it sleeps, per trace checkpoint (the trace hash every 1,024 events), a number
//! of milliseconds taken from the checkpoint and draws once. A trace that diverges shifts
//! madsim's time at every later draw and trips the check.

use crate::options::Scenario;
use crate::sim::{run_seed, Report};

/// Whether `MADSIM_TEST_CHECK_DETERMINISM` asks for the determinism check.
pub fn check_determinism_requested() -> bool {
    std::env::var_os("MADSIM_TEST_CHECK_DETERMINISM").is_some()
}

/// Runs one seed to completion. With the determinism check requested (and no madsim), runs
/// it twice and compares the trace checkpoints.
#[cfg(not(madsim))]
pub fn run(seed: u64, scenario: Scenario) -> Report {
    let report = run_seed(seed, scenario);
    if check_determinism_requested() {
        let again = run_seed(seed, scenario);
        assert_eq!(
            (report.trace_hash, &report.checkpoints),
            (again.trace_hash, &again.checkpoints),
            "seed {seed} ({}) is not deterministic",
            scenario.name()
        );
    }
    report
}

/// Runs one seed inside a madsim runtime seeded with the same seed. The simulation keeps its
/// own virtual clock and RNG streams (per concern); madsim's clock is advanced by the
/// simulated time, then by one step per trace checkpoint (see the module comment).
#[cfg(madsim)]
pub fn run(seed: u64, scenario: Scenario) -> Report {
    use std::sync::Mutex;
    // `check_determinism` takes a plain `fn`: the seed travels through a static.
    static CURRENT: Mutex<Option<(u64, Scenario)>> = Mutex::new(None);
    *CURRENT.lock().expect("not poisoned") = Some((seed, scenario));
    async fn hosted() -> Report {
        let (seed, scenario) = CURRENT.lock().expect("not poisoned").expect("set by run");
        let report = run_seed(seed, scenario);
        madsim::time::sleep(std::time::Duration::from_millis(report.simulated_ms as u64)).await;
        // madsim's timers fire at millisecond granularity: whole milliseconds, so that one
        // differing checkpoint moves every later draw.
        for checkpoint in &report.checkpoints {
            madsim::time::sleep(std::time::Duration::from_millis(1 + checkpoint % 997)).await;
            let _: u8 = madsim::rand::random();
        }
        report
    }
    if check_determinism_requested() {
        return madsim::runtime::Runtime::check_determinism(seed, madsim::Config::default(), hosted);
    }
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(hosted())
}
