//! Runs seeds: directly, or inside madsim's deterministic runtime under `--cfg madsim`.

use crate::options::Scenario;
use crate::sim::{run_seed, Report};

/// Runs one seed to completion.
#[cfg(not(madsim))]
pub fn run(seed: u64, scenario: Scenario) -> Report {
    run_seed(seed, scenario)
}

/// Runs one seed inside a madsim runtime seeded with the same seed. The simulation keeps its
/// own virtual clock and RNG streams (per concern); madsim's clock is advanced to the
/// simulated end so its time and ours agree at the end of the run.
#[cfg(madsim)]
pub fn run(seed: u64, scenario: Scenario) -> Report {
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(async move {
        let report = run_seed(seed, scenario);
        madsim::time::sleep(std::time::Duration::from_millis(report.simulated_ms as u64)).await;
        report
    })
}
