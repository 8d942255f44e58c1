//! odradek-bench: a Kafka-protocol load generator for odradek or any Kafka-compatible broker.
//!
//! ```text
//! odradek-bench run bench/workloads/1-topic-100-partitions-1kb.json --bootstrap 127.0.0.1:9092 \
//!     --with-ceilings /data --with-client-ceiling --out result.json
//! odradek-bench run bench/workloads/smoke.json --client-only --out client.json
//! odradek-bench ceiling --dir /data
//! odradek-bench compare odradek.json other.json --out compare.svg
//! odradek-bench compare --workload bench/workloads/smoke.json --broker odradek=127.0.0.1:9092 \
//!     --broker other=127.0.0.1:9093 --out-dir cmp --out cmp/compare.svg
//! odradek-bench plot result.json
//! odradek-bench run WORKLOAD --bootstrap 127.0.0.1:9093 --security-protocol SSL --ssl-ca ca.pem
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
mod nullsink;
mod stats;
mod tolerant;
mod transport;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::run::{RunOptions, RunResult};
use crate::stats::LatencySummary;
use crate::transport::{Security, SecurityProtocol};

#[derive(Parser)]
#[command(name = "odradek-bench", version, about = "Kafka-protocol benchmark: OMB-style workloads, \
    open-loop producers, HDR latencies, machine ceilings from the same run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What shapes a run, shared by `run` and `compare`.
#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Measure loopback and append+fdatasync ceilings first, on files in this directory
    /// (use the broker's data directory's file system).
    #[arg(long, value_name = "DIR")]
    with_ceilings: Option<PathBuf>,
    /// Length of each ceiling measurement, the client's alone included.
    #[arg(long, default_value_t = 3.0)]
    ceiling_seconds: f64,
    /// Measure the client alone first: the workload's producers, closed loop, against an
    /// in-process null sink; reported next to the broker's figures.
    #[arg(long)]
    with_client_ceiling: bool,
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
    /// Replication factor of the created topics (-1: the broker's default).
    #[arg(long, default_value_t = -1)]
    replication_factor: i16,
    /// A config of the created topics, KEY=VALUE (repeatable), e.g. min.insync.replicas=2.
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    topic_configs: Vec<String>,
    /// How to reach the brokers (Kafka's security.protocol): PLAINTEXT, or SSL (TLS) with
    /// --ssl-ca. The null sink of --client-only and --with-client-ceiling is PLAINTEXT only.
    #[arg(long, value_enum, ignore_case = true, default_value_t = SecurityProtocol::Plaintext)]
    security_protocol: SecurityProtocol,
    /// PEM certificates of the CAs a broker's certificate must chain to; the certificate must
    /// name the host or IP the broker is reached at (bootstrap or Metadata address).
    #[arg(long, value_name = "FILE")]
    ssl_ca: Option<PathBuf>,
    /// PEM client certificate chain, for brokers with ssl.client.auth=required (mTLS).
    #[arg(long, value_name = "FILE", requires = "ssl_key")]
    ssl_cert: Option<PathBuf>,
    /// PEM private key of --ssl-cert (unencrypted; may be the same file).
    #[arg(long, value_name = "FILE", requires = "ssl_cert")]
    ssl_key: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
    #[arg(long)]
    no_plots: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload against a broker and write a JSON result (plus SVG plots).
    Run {
        /// Workload file (OMB field names, JSON).
        workload: PathBuf,
        /// Comma-separated bootstrap list; the rest of a cluster is found from Metadata.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Broker pid for CPU%; by default the process listening on the first bootstrap port.
        #[arg(long)]
        broker_pid: Option<u32>,
        /// Run against an in-process null sink instead of a broker (producers only): what the
        /// client alone can do.
        #[arg(long)]
        client_only: bool,
        /// Result file; plots are written next to it.
        #[arg(long, default_value = "result.json")]
        out: PathBuf,
        #[command(flatten)]
        args: RunArgs,
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
    /// Compare results side by side, with a latency distribution chart: result files given,
    /// or a workload run against each `--broker` in turn.
    Compare {
        /// Result files (two or more); none with --workload.
        results: Vec<PathBuf>,
        /// Run this workload against every --broker, one after the other, then compare.
        #[arg(long, requires = "brokers")]
        workload: Option<PathBuf>,
        /// NAME=BOOTSTRAP (repeatable), e.g. odradek=127.0.0.1:9092.
        #[arg(long = "broker", value_name = "NAME=BOOTSTRAP")]
        brokers: Vec<String>,
        /// Where each broker's result file, NAME.json, and the table, compare.md, go.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        #[arg(long, default_value = "compare.svg")]
        out: PathBuf,
        #[command(flatten)]
        args: RunArgs,
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
        Command::Run { workload, bootstrap, broker_pid, client_only, out, args } => {
            let result = run_once(&workload, bootstrap, broker_pid, client_only, &args, &out)?;
            fail_on_errors(&result)
        }
        Command::Ceiling { dir, seconds, out } => {
            let c = ceiling::measure(&dir, seconds)?;
            ceiling::print(&c);
            if let Some(out) = out {
                write_json(&out, &c)?;
            }
            Ok(())
        }
        Command::Compare { results, workload, brokers, out_dir, out, args } => {
            let mut named = Vec::new();
            match workload {
                Some(workload) => {
                    if !results.is_empty() {
                        return Err("compare takes result files or --workload, not both".into());
                    }
                    if brokers.len() < 2 {
                        return Err("compare --workload needs two or more --broker NAME=BOOTSTRAP".into());
                    }
                    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
                    // The same workload against each broker in turn, each on fresh topics.
                    for spec in &brokers {
                        let (name, bootstrap) =
                            spec.split_once('=').ok_or_else(|| format!("--broker {spec}: expected NAME=BOOTSTRAP"))?;
                        let path = out_dir.join(format!("{name}.json"));
                        let result = run_once(&workload, bootstrap.to_owned(), None, false, &args, &path)?;
                        if result.counts.errors > 0 || !result.counts.drained {
                            println!("note: {name} had {} errors (drained: {})", result.counts.errors, result.counts.drained);
                        }
                        named.push((name.to_owned(), result));
                    }
                }
                None => {
                    if results.len() < 2 {
                        return Err("compare needs two or more result files (or --workload and --broker)".into());
                    }
                    for path in &results {
                        let name = path.file_stem().map_or("?".into(), |s| s.to_string_lossy().into_owned());
                        named.push((name, read_result(path)?));
                    }
                }
            }
            let table = compare_table(&named);
            print!("{table}");
            if !brokers.is_empty() {
                let path = out_dir.join("compare.md");
                std::fs::write(&path, &table).map_err(|e| format!("{}: {e}", path.display()))?;
                println!("table: {}", path.display());
            }
            plot::plot_compare(&named, &out)?;
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

/// Runs a workload once and writes its result (and plots) to `out`.
fn run_once(
    workload: &Path,
    bootstrap: String,
    broker_pid: Option<u32>,
    client_only: bool,
    args: &RunArgs,
    out: &Path,
) -> Result<RunResult, String> {
    let mut w = workload::Workload::load(workload)?;
    if args.warmup_seconds.is_some() {
        w.warmup_duration_seconds = args.warmup_seconds;
    }
    if args.duration_seconds.is_some() {
        w.test_duration_seconds = args.duration_seconds;
    }
    if let Some(r) = args.rate {
        w.producer_rate = r;
        if r != 0.0 {
            w.producer_rate_fraction_of_max = None;
        }
    }
    w.validate()?;
    if args.interval_seconds.is_nan() || args.interval_seconds <= 0.0 {
        return Err("--interval-seconds must be positive".into());
    }
    let topic_configs = args
        .topic_configs
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("--topic-config {kv}: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let security = Security::new(
        args.security_protocol,
        args.ssl_ca.as_deref(),
        args.ssl_cert.as_deref(),
        args.ssl_key.as_deref(),
    )?;
    if client_only && security.protocol() != SecurityProtocol::Plaintext {
        return Err("--client-only runs against a null sink, which speaks PLAINTEXT only".into());
    }
    let options = RunOptions {
        bootstrap,
        security,
        broker_pid,
        with_ceilings: args.with_ceilings.clone(),
        ceiling_seconds: args.ceiling_seconds,
        interval_s: args.interval_seconds,
        search_step_s: args.search_step_seconds,
        drain_timeout_s: args.drain_timeout_seconds,
        progress: !args.no_progress,
        topic_prefix: args.topic_prefix.clone(),
        replication_factor: args.replication_factor,
        topic_configs,
        with_client_ceiling: args.with_client_ceiling,
        client_only,
    };
    let target = if client_only {
        "a null sink (client only)".to_owned()
    } else {
        format!("{} over {}", options.bootstrap, options.security.protocol())
    };
    println!("workload {:?} against {target}", w.name);
    if args.with_client_ceiling && options.security.protocol() != SecurityProtocol::Plaintext {
        println!("note: the client ceiling is measured over PLAINTEXT (the null sink has no TLS)");
    }
    let result = run::run(&w, &options)?;
    print_summary(&result);
    write_json(out, &result)?;
    println!("result: {}", out.display());
    if !args.no_plots {
        for p in plot::plot_result(&result, out)? {
            println!("plot: {p}");
        }
    }
    Ok(result)
}

/// A run with errors measured something other than the workload: say so in the exit code
/// too, not only in the result file.
fn fail_on_errors(result: &RunResult) -> Result<(), String> {
    if result.counts.errors > 0 || !result.counts.drained {
        return Err(format!(
            "the run had {} errors (drained: {}); its figures do not describe the workload",
            result.counts.errors, result.counts.drained
        ));
    }
    Ok(())
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
    for f in &r.rate.failed_confirmations {
        println!(
            "  the measured phase did not hold {:.0} msgs/s (acked {:.0}); stepped down",
            f.target_msgs_per_s, f.acked_msgs_per_s
        );
    }
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
    if let Some(c) = &r.client_ceiling {
        println!(
            "  client alone (null sink, closed loop): {:.0} msgs/s {:.1} MB/s; this run is {:.0}% of it",
            c.publish_msgs_per_s,
            c.publish_mb_per_s,
            100.0 * o.publish_msgs_per_s / c.publish_msgs_per_s.max(1.0)
        );
    }
    if let Some(c) = &r.ceilings {
        println!(
            "  vs ceilings: publish {:.1} MB/s = {:.0}% of loopback {:.0} MB/s{}; p99 over raw fdatasync p99 {} µs: publish {}{}",
            o.publish_mb_per_s,
            100.0 * o.publish_vs_loopback.unwrap_or(0.0),
            c.loopback.mb_per_s,
            c.write_throughput.as_ref().map_or(String::new(), |w| format!(
                ", {:.0}% of the disk's {:.0} MB/s",
                100.0 * o.publish_mb_per_s / w.mb_per_s.max(1.0),
                w.mb_per_s
            )),
            c.direct_append_fdatasync.latency.p99_us,
            o.publish_p99_vs_fdatasync_p99.map_or("n/a".to_string(), |x| format!("{x:.2}x")),
            o.end_to_end_p99_vs_fdatasync_p99.map_or(String::new(), |x| format!(", end to end {x:.2}x"))
        );
    }
    let c = &r.counts;
    println!(
        "  counts: sent {} acked {} errors {} resent to a new leader {}; consumed per subscription {:?}; drained {}",
        c.sent_msgs, c.acked_msgs, c.errors, c.retries, c.consumed_per_subscription, c.drained
    );
    for e in r.errors.iter().take(8) {
        println!("  error: {e}");
    }
}

/// A Markdown table of the results, one column each, with each column's ratio to the first.
fn compare_table(results: &[(String, RunResult)]) -> String {
    type Row = (&'static str, fn(&RunResult) -> Option<f64>);
    let rows: [Row; 12] = [
        ("publish msgs/s", |r| Some(r.overall.publish_msgs_per_s)),
        ("publish MB/s", |r| Some(r.overall.publish_mb_per_s)),
        ("max rate found msgs/s", |r| r.rate.max_found_msgs_per_s),
        ("publish p50 µs", |r| Some(r.overall.publish_latency.p50_us as f64)),
        ("publish p99 µs", |r| Some(r.overall.publish_latency.p99_us as f64)),
        ("publish p99.9 µs", |r| Some(r.overall.publish_latency.p99_9_us as f64)),
        ("e2e p50 µs", |r| Some(r.overall.end_to_end.p50_us as f64)),
        ("e2e p99 µs", |r| Some(r.overall.end_to_end.p99_us as f64)),
        ("e2e p99.9 µs", |r| Some(r.overall.end_to_end.p99_9_us as f64)),
        ("broker CPU %", |r| r.overall.broker_cpu_pct),
        ("client CPU %", |r| r.overall.client_cpu_pct),
        ("client alone msgs/s", |r| r.client_ceiling.as_ref().map(|c| c.publish_msgs_per_s)),
    ];
    let mut out = String::new();
    let header: Vec<String> = results.iter().map(|(n, _)| n.clone()).collect();
    let ratios: Vec<String> = results.iter().skip(1).map(|(n, _)| format!("{n}/{}", results[0].0)).collect();
    out += &format!("| | {} | {} |\n", header.join(" | "), ratios.join(" | "));
    out += &format!("|---|{}\n", "---:|".repeat(header.len() + ratios.len()));
    let cell = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
    for (label, f) in rows {
        let values: Vec<Option<f64>> = results.iter().map(|(_, r)| f(r)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let first = values[0];
        let ratio = |v: Option<f64>| match (v, first) {
            (Some(v), Some(f)) if f != 0.0 => format!("{:.2}", v / f),
            _ => "n/a".into(),
        };
        let cells: Vec<String> = values.iter().map(|&v| cell(v)).collect();
        let ratio_cells: Vec<String> = values.iter().skip(1).map(|&v| ratio(v)).collect();
        out += &format!("| {label} | {} | {} |\n", cells.join(" | "), ratio_cells.join(" | "));
    }
    let workloads: std::collections::BTreeSet<&str> = results.iter().map(|(_, r)| r.workload.name.as_str()).collect();
    if workloads.len() > 1 {
        out += &format!("\nnote: different workloads: {workloads:?}\n");
    }
    if results.iter().any(|(_, r)| r.security_protocol != results[0].1.security_protocol) {
        let protocols: Vec<String> = results.iter().map(|(n, r)| format!("{n} {}", r.security_protocol)).collect();
        out += &format!("\nsecurity protocols: {}\n", protocols.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = ["odradek-bench", "run", "w.json"].iter().chain(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Run { args, .. } => Ok(args),
            _ => unreachable!("parsed a run"),
        }
    }

    #[test]
    fn security_options_take_kafkas_names() {
        assert_eq!(run_args(&[]).unwrap().security_protocol, SecurityProtocol::Plaintext);
        let args = run_args(&["--security-protocol", "ssl", "--ssl-ca", "ca.pem"]).unwrap();
        assert_eq!(args.security_protocol, SecurityProtocol::Ssl);
        assert_eq!(args.ssl_ca, Some(PathBuf::from("ca.pem")));
        assert!(run_args(&["--security-protocol", "SASL_SSL"]).is_err());
        // A certificate without its key (or the reverse) is refused before anything connects.
        assert!(run_args(&["--security-protocol", "SSL", "--ssl-ca", "ca.pem", "--ssl-cert", "c.pem"]).is_err());
        assert!(run_args(&["--security-protocol", "SSL", "--ssl-ca", "ca.pem", "--ssl-key", "k.pem"]).is_err());
    }
}
