//! `odradek-sim run --seed S` and `odradek-sim swarm --seeds N [--from S]`.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use odradek_sim::options::Scenario;
use odradek_sim::runner;
use odradek_sim::sim::{FaultCounts, Report};

#[derive(Parser)]
#[command(name = "odradek-sim", about = "odradek's deterministic simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one seed and prints its report (replay a failure with the printed command).
    Run {
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value = "swarm", value_parser = parse_scenario)]
        scenario: Scenario,
    },
    /// Runs seeds `from..from+seeds`; stops at the first failure unless `--keep-going`.
    Swarm {
        #[arg(long)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value = "swarm", value_parser = parse_scenario)]
        scenario: Scenario,
        /// Every scenario in turn (seed i runs scenario i mod the number of scenarios).
        #[arg(long)]
        all_scenarios: bool,
        #[arg(long)]
        keep_going: bool,
    },
}

fn parse_scenario(name: &str) -> Result<Scenario, String> {
    Scenario::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        format!("unknown scenario {name}; one of {}", names.join(", "))
    })
}

fn print_failure(report: &Report) {
    let failure = report.failure.as_ref().expect("a failed report");
    eprintln!("FAIL seed {} ({})", report.seed, report.options.scenario.name());
    eprintln!("  {failure}");
    eprintln!("  options: {}", report.options.summary());
    eprintln!("  replay: {}", report.replay_command());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    runner::install_panic_hook();
    match cli.command {
        Command::Run { seed, scenario } => {
            let started = Instant::now();
            let report = runner::run(seed, scenario);
            let wall = started.elapsed().as_secs_f64();
            println!(
                "seed {} scenario {} trace {:016x} simulated {:.1}s wall {:.2}s events {} faults {} acked {} expected losses {} hw {}",
                report.seed,
                report.options.scenario.name(),
                report.trace_hash,
                report.simulated_ms as f64 / 1000.0,
                wall,
                report.events,
                report.faults,
                report.acked,
                report.expected_losses,
                report.high_watermark
            );
            println!("options: {}", report.options.summary());
            println!("fired: {}", report.counts);
            if report.failure.is_some() {
                print_failure(&report);
                return ExitCode::FAILURE;
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Command::Swarm { seeds, from, scenario, all_scenarios, keep_going } => {
            let started = Instant::now();
            let (mut simulated_ms, mut failed, mut acked, mut lost) = (0i64, 0u64, 0usize, 0usize);
            let mut counts = FaultCounts::default();
            for seed in from..from.saturating_add(seeds) {
                let scenario = if all_scenarios { Scenario::ALL[(seed % Scenario::ALL.len() as u64) as usize] } else { scenario };
                let report = runner::run(seed, scenario);
                simulated_ms += report.simulated_ms;
                acked += report.acked;
                lost += report.expected_losses;
                counts.add(&report.counts);
                if report.failure.is_some() {
                    failed += 1;
                    print_failure(&report);
                    if !keep_going {
                        break;
                    }
                }
            }
            let wall = started.elapsed().as_secs_f64();
            println!(
                "{seeds} seeds from {from}: {failed} failed, {acked} acknowledged writes, {lost} expected losses, {:.2} seeds/s, {:.0} simulated s per wall s ({:.1}s simulated in {:.1}s)",
                seeds as f64 / wall,
                simulated_ms as f64 / 1000.0 / wall,
                simulated_ms as f64 / 1000.0,
                wall
            );
            println!("fired: {counts}");
            if failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
