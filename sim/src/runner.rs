//! Runs seeds: directly, or inside madsim's deterministic runtime under `--cfg madsim`.
//!
//! `MADSIM_TEST_CHECK_DETERMINISM` set (madsim's own switch): each seed runs twice through
//! madsim's `Runtime::check_determinism`, which logs every draw of madsim's RNG with the
//! virtual time it happened at and panics at the first draw that differs in the second run.
//! The simulation keeps its own RNG streams, so the runner feeds its trace into that log:
//! after the run it sleeps, per trace checkpoint (the trace hash every 1,024 events), a number
//! of milliseconds taken from the checkpoint and draws once. A trace that diverges shifts
//! madsim's time at every later draw and trips the check.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::options::Scenario;
use crate::sim::{replay_command, run_seed, seed_options, Report};

// The seed being run, for the panic hook: under `panic = "abort"` a panic (a core state
// machine's invariant, a checker's assert) never returns to the loop that prints failures.
// Statics, not thread-locals: madsim's determinism check runs each seed on threads of its own.
static RUNNING_SEED: AtomicU64 = AtomicU64::new(0);
/// One plus the scenario's index in `Scenario::ALL`; 0 before the first seed.
static RUNNING_SCENARIO: AtomicUsize = AtomicUsize::new(0);

fn record_running(running: Option<(u64, Scenario)>) {
    let index = running.map_or(0, |(seed, scenario)| {
        RUNNING_SEED.store(seed, Ordering::Relaxed);
        1 + Scenario::ALL.iter().position(|s| *s == scenario).expect("listed")
    });
    RUNNING_SCENARIO.store(index, Ordering::Relaxed);
}

fn running() -> Option<(u64, Scenario)> {
    let index = RUNNING_SCENARIO.load(Ordering::Relaxed).checked_sub(1)?;
    Some((RUNNING_SEED.load(Ordering::Relaxed), *Scenario::ALL.get(index)?))
}

/// Makes a panic during a seed print the failure the way a failed report does: `FAIL seed`,
/// the panic, the options and the replay command. Then the previous hook runs (backtraces).
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some((seed, scenario)) = running() {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            let at = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
            let mut err = std::io::stderr().lock();
            // Best effort: the process aborts next either way.
            let _ = writeln!(err, "FAIL seed {seed} ({})", scenario.name());
            let _ = writeln!(err, "  panicked{at}: {}", message.replace('\n', "\n  "));
            let _ = writeln!(err, "  options: {}", seed_options(seed, scenario).summary());
            let _ = writeln!(err, "  replay: {}", replay_command(seed, scenario));
        }
        previous(info);
    }));
}

/// Whether `MADSIM_TEST_CHECK_DETERMINISM` asks for the determinism check.
pub fn check_determinism_requested() -> bool {
    std::env::var_os("MADSIM_TEST_CHECK_DETERMINISM").is_some()
}

/// Runs one seed to completion; a panic meanwhile names the seed (see [`install_panic_hook`]).
pub fn run(seed: u64, scenario: Scenario) -> Report {
    record_running(Some((seed, scenario)));
    let report = host(seed, scenario);
    record_running(None);
    report
}

/// With the determinism check requested (and no madsim), runs the seed twice and compares
/// the trace checkpoints.
#[cfg(not(madsim))]
fn host(seed: u64, scenario: Scenario) -> Report {
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
fn host(seed: u64, scenario: Scenario) -> Report {
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
