//! odradek-bench: a Kafka-protocol load generator for odradek or any Kafka-compatible broker.
//!
//! ```text
//! odradek-bench run bench/workloads/1-topic-100-partitions-1kb.json --bootstrap 127.0.0.1:9092 \
//!     --with-ceilings /data --out result.json
//! odradek-bench ceiling --dir /data
//! odradek-bench compare odradek.json other.json --out compare.svg
//! odradek-bench plot result.json
//! ```

mod ceiling;
mod client;
mod clock;
mod consumer;
mod cpu;
mod plot;
mod producer;
mod records;
mod run;
mod stats;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::run::{RunOptions, RunResult};
use crate::stats::LatencySummary;

#[derive(Parser)]
#[command(name = "odradek-bench", version, about = "Kafka-protocol benchmark: OMB-style workloads, \
    open-loop producers, HDR latencies, machine ceilings from the same run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload against a broker and write a JSON result (plus SVG plots).
    Run {
        /// Workload file (OMB field names, JSON).
        workload: PathBuf,
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Broker pid for CPU%; by default the process listening on the bootstrap port.
        #[arg(long)]
        broker_pid: Option<u32>,
        /// Measure loopback and append+fdatasync ceilings first, on files in this directory
        /// (use the broker's data directory's file system).
        #[arg(long, value_name = "DIR")]
        with_ceilings: Option<PathBuf>,
        #[arg(long, default_value_t = 3.0)]
        ceiling_seconds: f64,
        /// Result file; plots are written next to it.
        #[arg(long, default_value = "result.json")]
        out: PathBuf,
        #[arg(long)]
        no_plots: bool,
        /// Override the workload's warm-up (seconds).
        #[arg(long)]
        warmup_seconds: Option<f64>,
        /// Override the workload's measured duration (seconds).
        #[arg(long)]
        duration_seconds: Option<f64>,
        /// Override the workload's producer rate (msgs/s; 0 searches the max).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 1.0)]
        interval_seconds: f64,
        /// Length of each step of the max-rate search.
        #[arg(long, default_value_t = 3.0)]
        search_step_seconds: f64,
        /// How long consumers may take to catch up after producers stop.
        #[arg(long, default_value_t = 30.0)]
        drain_timeout_seconds: f64,
        /// Topic name prefix (default: bench-<unix time>, so every run gets fresh topics).
        #[arg(long)]
        topic_prefix: Option<String>,
        #[arg(long)]
        no_progress: bool,
    },
    /// Measure this machine's loopback TCP throughput and append + fdatasync rate/latency.
    Ceiling {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Compare two results side by side, with a latency distribution chart.
    Compare {
        a: PathBuf,
        b: PathBuf,
        #[arg(long, default_value = "compare.svg")]
        out: PathBuf,
    },
    /// Draw the plots of a result file again.
    Plot { result: PathBuf },
}

fn main() -> ExitCode {
    match main_result(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("odradek-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main_result(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Run {
            workload,
            bootstrap,
            broker_pid,
            with_ceilings,
            ceiling_seconds,
            out,
            no_plots,
            warmup_seconds,
            duration_seconds,
            rate,
            interval_seconds,
            search_step_seconds,
            drain_timeout_seconds,
            topic_prefix,
            no_progress,
        } => {
            let mut w = workload::Workload::load(&workload)?;
            if warmup_seconds.is_some() {
                w.warmup_duration_seconds = warmup_seconds;
            }
            if duration_seconds.is_some() {
                w.test_duration_seconds = duration_seconds;
            }
            if let Some(r) = rate {
                w.producer_rate = r;
                if r != 0.0 {
                    w.producer_rate_fraction_of_max = None;
                }
            }
            w.validate()?;
            if interval_seconds.is_nan() || interval_seconds <= 0.0 {
                return Err("--interval-seconds must be positive".into());
            }
            let options = RunOptions {
                bootstrap,
                broker_pid,
                with_ceilings,
                ceiling_seconds,
                interval_s: interval_seconds,
                search_step_s: search_step_seconds,
                drain_timeout_s: drain_timeout_seconds,
                progress: !no_progress,
                topic_prefix,
            };
            println!("workload {:?} against {}", w.name, options.bootstrap);
            let result = run::run(&w, &options)?;
            print_summary(&result);
            write_json(&out, &result)?;
            println!("result: {}", out.display());
            if !no_plots {
                for p in plot::plot_result(&result, &out)? {
                    println!("plot: {p}");
                }
            }
            // A run with errors measured something other than the workload: say so in the
            // exit code too, not only in the result file.
            if result.counts.errors > 0 || !result.counts.drained {
                return Err(format!(
                    "the run had {} errors (drained: {}); its figures do not describe the workload",
                    result.counts.errors, result.counts.drained
                ));
            }
            Ok(())
        }
        Command::Ceiling { dir, seconds, out } => {
            let c = ceiling::measure(&dir, seconds)?;
            ceiling::print(&c);
            if let Some(out) = out {
                write_json(&out, &c)?;
            }
            Ok(())
        }
        Command::Compare { a, b, out } => {
            let ra = read_result(&a)?;
            let rb = read_result(&b)?;
            let name = |p: &Path| p.file_stem().map_or("?".into(), |s| s.to_string_lossy().into_owned());
            let (na, nb) = (name(&a), name(&b));
            print_compare(&na, &ra, &nb, &rb);
            plot::plot_compare((&na, &ra), (&nb, &rb), &out)?;
            println!("plot: {}", out.display());
            Ok(())
        }
        Command::Plot { result } => {
            let r = read_result(&result)?;
            for p in plot::plot_result(&r, &result)? {
                println!("plot: {p}");
            }
            Ok(())
        }
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

fn read_result(path: &Path) -> Result<RunResult, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn latency_line(name: &str, s: &LatencySummary) -> String {
    format!(
        "  {name:<22} p50 {:>8} p99 {:>8} p99.9 {:>8} p99.99 {:>8} max {:>8} µs  (n={})",
        s.p50_us, s.p99_us, s.p99_9_us, s.p99_99_us, s.max_us, s.count
    )
}

fn print_summary(r: &RunResult) {
    let o = &r.overall;
    println!();
    println!("== {} ({} s measured, load before {} / after {})", r.workload.name, o.measured_s, r.machine.load_average_before, r.machine.load_average_after);
    if let Some(max) = r.rate.max_found_msgs_per_s {
        println!("  max sustainable rate found: {max:.0} msgs/s; measured at {:.0} msgs/s", r.rate.target_msgs_per_s);
    } else {
        println!("  target rate: {:.0} msgs/s", r.rate.target_msgs_per_s);
    }
    println!("  publish  {:>12.0} msgs/s {:>9.1} MB/s", o.publish_msgs_per_s, o.publish_mb_per_s);
    println!("  consume  {:>12.0} msgs/s {:>9.1} MB/s", o.consume_msgs_per_s, o.consume_mb_per_s);
    println!("{}", latency_line("publish latency", &o.publish_latency));
    println!("{}", latency_line("publish delay", &o.publish_delay));
    println!("{}", latency_line("end-to-end latency", &o.end_to_end));
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0}%"));
    println!("  CPU (100% = one core): broker {}, bench client {}", pct(o.broker_cpu_pct), pct(o.client_cpu_pct));
    if let Some(c) = &r.ceilings {
        println!(
            "  vs ceilings: publish {:.1} MB/s = {:.0}% of loopback {:.0} MB/s; e2e p99 = {:.2}x raw fdatasync p99 {} µs",
            o.publish_mb_per_s,
            100.0 * o.publish_vs_loopback.unwrap_or(0.0),
            c.loopback.mb_per_s,
            o.end_to_end_p99_vs_fdatasync_p99.unwrap_or(f64::NAN),
            c.direct_append_fdatasync.latency.p99_us
        );
    }
    let c = &r.counts;
    println!(
        "  counts: sent {} acked {} errors {}; consumed per subscription {:?}; drained {}",
        c.sent_msgs, c.acked_msgs, c.errors, c.consumed_per_subscription, c.drained
    );
    for e in r.errors.iter().take(8) {
        println!("  error: {e}");
    }
}

fn print_compare(na: &str, a: &RunResult, nb: &str, b: &RunResult) {
    type Row = (&'static str, fn(&RunResult) -> f64);
    let rows: [Row; 9] = [
        ("publish msgs/s", |r| r.overall.publish_msgs_per_s),
        ("publish MB/s", |r| r.overall.publish_mb_per_s),
        ("publish p50 µs", |r| r.overall.publish_latency.p50_us as f64),
        ("publish p99 µs", |r| r.overall.publish_latency.p99_us as f64),
        ("publish p99.9 µs", |r| r.overall.publish_latency.p99_9_us as f64),
        ("e2e p50 µs", |r| r.overall.end_to_end.p50_us as f64),
        ("e2e p99 µs", |r| r.overall.end_to_end.p99_us as f64),
        ("e2e p99.9 µs", |r| r.overall.end_to_end.p99_9_us as f64),
        ("broker CPU %", |r| r.overall.broker_cpu_pct.unwrap_or(f64::NAN)),
    ];
    println!("{:<18} {:>14} {:>14} {:>8}", "", na, nb, "b/a");
    for (label, f) in rows {
        let (x, y) = (f(a), f(b));
        println!("{label:<18} {x:>14.1} {y:>14.1} {:>8.2}", y / x);
    }
    if a.workload.name != b.workload.name {
        println!("note: different workloads ({:?} vs {:?})", a.workload.name, b.workload.name);
    }
}
