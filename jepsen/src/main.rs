//! `odradek-jepsen`: odradek's Jepsen-style suite. Real `odradek` processes in network
//! namespaces, faults from a seed (kill, pause, partitions, clock skew, power loss, disk full),
//! real clients (confluent-kafka, librdkafka) writing a history, and the checker the simulator
//! uses. See docs/jepsen.md.

mod cluster;
mod history;
mod lossyfs;
mod nemesis;
mod net;
mod report;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, sleep};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use odradek_checker::{check_exactly_once, check_partitions, Lossy, Options, Report};
use rand::SeedableRng;
use serde_json::json;

use cluster::{wait_for, Cluster, Settings};
use history::{Event, QUEUE_TOPIC, TRANSFORMED_TOPIC, TXN_TOPIC};
use nemesis::{Kind, Plan};
use net::{Host, Net};

const WORKER: &str = include_str!("../worker.py");

#[derive(Parser)]
#[command(about = "Jepsen-style tests of odradek: real processes, real faults, real clients")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One run: start a cluster, run the workload under faults, heal, read, check, report
    Run(RunArgs),
    /// Check a run's history.jsonl again
    Check {
        dir: PathBuf,
        #[command(flatten)]
        promise: Promise,
    },
    /// Serve the power-loss filesystem (the run starts one per node)
    Lossyfs { backing: PathBuf, mountpoint: PathBuf },
}

#[derive(clap::Args, Clone)]
struct Promise {
    /// Partitions of each topic
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// The brokers acknowledge without fsync: every acknowledged write may be lost
    #[arg(long)]
    no_fsync: bool,
    /// unclean.leader.election.enable on the topics: every acknowledged write may be lost
    #[arg(long)]
    unclean: bool,
    /// Check as if nothing may be lost, whatever the settings (shows what they lose)
    #[arg(long)]
    no_loss_budget: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Seed of the fault schedule and the clients' choices
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of workload under faults
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Nodes (3 or 5)
    #[arg(long, default_value_t = 3)]
    nodes: u8,
    /// Faults to draw from, comma-separated: kill,pause,partition,clock,power,disk
    #[arg(long, value_delimiter = ',', default_value = "kill,pause,partition,clock,power,disk")]
    faults: Vec<Kind>,
    /// Replication factor of the topics
    #[arg(long, default_value_t = 3)]
    replication_factor: i16,
    /// min.insync.replicas of the topics and brokers
    #[arg(long, default_value_t = 2)]
    min_insync_replicas: usize,
    /// Run the transactional workload too
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    transactions: bool,
    #[command(flatten)]
    promise: Promise,
    /// The broker binary
    #[arg(long, default_value = "target/release/odradek")]
    odradek: PathBuf,
    /// Python with confluent-kafka installed
    #[arg(long, default_value = "target/venv/bin/python")]
    python: PathBuf,
    /// Where the run's directory goes
    #[arg(long, default_value = "target/jepsen")]
    out: PathBuf,
    /// Network slot (0..8): runs in different slots can share the machine
    #[arg(long, default_value_t = 0)]
    slot: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::Check { dir, promise } => check_dir(&dir, &promise),
        Cmd::Lossyfs { backing, mountpoint } => lossyfs::serve(&backing, &mountpoint).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("odradek-jepsen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What the run's settings promise, for the checker.
fn options(events: &[Event], promise: &Promise) -> Options {
    let mut lossy = BTreeSet::new();
    let mut may_duplicate = BTreeSet::new();
    for e in events.iter().filter(|e| e.f == "role") {
        if e.acks.as_deref() == Some("1") {
            lossy.insert(e.process);
        }
        if e.idempotent == Some(false) {
            may_duplicate.insert(e.process);
        }
    }
    let lossy = if promise.no_loss_budget {
        Lossy::Never
    } else if promise.no_fsync || promise.unclean {
        Lossy::Always
    } else {
        Lossy::Processes(lossy)
    };
    Options { lossy, may_duplicate, sequential_sends: true }
}

/// Checks `dir/history.jsonl`, writes `dir/report.md`'s verdict section; true if no
/// unexpected anomaly.
fn check_dir(dir: &Path, promise: &Promise) -> Result<bool> {
    let text = fs::read_to_string(dir.join("history.jsonl")).context("reading history.jsonl")?;
    let events = history::parse(&text)?;
    let (report, summary) = verdict(&events, promise);
    print!("{summary}");
    Ok(report.anomalies.is_empty())
}

fn verdict(events: &[Event], promise: &Promise) -> (Report, String) {
    let closed = history::close_dangling(events);
    let events = &closed[..];
    let ops = history::to_ops(events, promise.partitions);
    let options = options(events, promise);
    let mut report = check_partitions(&ops, &options);
    if let Some((processed, outputs, must)) = history::processing(events) {
        for (partition, anomaly) in check_exactly_once(&processed, &outputs, &must) {
            // Lost input or output records take exactly-once with them.
            if options.lossy == Lossy::Always {
                report.add_expected(&anomaly);
            } else {
                report.add_unexpected(Some(partition), anomaly);
            }
        }
    }
    let count = |f: &str, kind: &str| events.iter().filter(|e| e.f == f && e.kind == kind).count();
    let mut s = String::new();
    let _ = writeln!(s, "| operations | ok | info (unknown) | fail |\n|---|---|---|---|");
    for f in ["send", "txn", "transform"] {
        let _ = writeln!(s, "| {f} | {} | {} | {} |", count(f, "ok"), count(f, "info"), count(f, "fail"));
    }
    let polled: usize = events
        .iter()
        .filter(|e| e.f == "poll" && e.kind == "ok")
        .map(|e| e.records.as_ref().map_or(0, Vec::len))
        .sum();
    let final_read: usize = events
        .iter()
        .filter(|e| e.f == "final")
        .map(|e| e.records.as_ref().map_or(0, Vec::len))
        .sum();
    let _ = writeln!(s, "\nRecords polled: {polled}; records in the final reads: {final_read}.");
    let lossy = match &options.lossy {
        Lossy::Never => "none".to_string(),
        Lossy::Always => "every write (fsync off or unclean election)".to_string(),
        Lossy::Processes(p) => format!("the acks=1 producers {p:?}"),
    };
    let _ = writeln!(s, "Whose acknowledged writes the settings allow to lose: {lossy}.");
    let _ = writeln!(s, "Acknowledged writes lost as the settings allow: {}; duplicates of retrying producers: {}.", report.expected_losses(), report.duplicates);
    if !report.expected.is_empty() {
        let classes: Vec<String> = report.expected.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(s, "Expected anomalies by class: {}.", classes.join(", "));
    }
    if report.anomalies.is_empty() {
        let _ = writeln!(s, "\n**Verdict: valid.** No unexpected anomaly.");
    } else {
        let _ = writeln!(s, "\n**Verdict: INVALID.** {} unexpected anomalies; the first of each kind:\n", report.unexpected);
        for (partition, anomaly) in &report.anomalies {
            let place = match partition {
                Some(p) if *p >= 2000 => format!("{TRANSFORMED_TOPIC}/{}", p - 2000),
                Some(p) if *p >= 1000 => format!("{TXN_TOPIC}/{}", p - 1000),
                Some(p) => format!("{QUEUE_TOPIC}/{p}"),
                None => "transactions".to_string(),
            };
            let _ = writeln!(s, "- {place}: {anomaly}");
        }
    }
    (report, s)
}

/// A client process in the clients' namespace; its history lines go to `lines`, tagged with
/// its topic.
fn spawn_worker(net: &Net, python: &Path, script: &Path, args: serde_json::Value, lines: mpsc::Sender<String>, log: &Path) -> Result<Child> {
    let topic = args["topics"][0].as_str().unwrap_or(QUEUE_TOPIC).to_string();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &net.namespace(Host::Clients)])
        .arg(python)
        .arg(script)
        .arg(args.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::options().create(true).append(true).open(log)?)
        .spawn()
        .context("starting a client")?;
    let stdout = child.stdout.take().expect("piped");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let tagged = match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(mut v) => {
                    v["topic"] = json!(topic);
                    v.to_string()
                }
                Err(_) => continue,
            };
            if lines.send(tagged).is_err() {
                break;
            }
        }
    });
    Ok(child)
}

/// Runs a short-lived client role and returns its stdout.
fn client_call(net: &Net, python: &Path, script: &Path, args: serde_json::Value, timeout: Duration) -> Result<String> {
    let child = Command::new("timeout")
        .arg(timeout.as_secs().to_string())
        .args(["ip", "netns", "exec", &net.namespace(Host::Clients)])
        .arg(python)
        .arg(script)
        .arg(args.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("client {}: {}", args["role"], String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Tears the run down on every exit path, Ctrl-C included (the signal only sets a flag the
/// run polls).
struct Guard {
    net: Net,
    cluster: Option<Cluster>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.teardown();
        }
        self.net.destroy();
    }
}

fn run(args: RunArgs) -> Result<bool> {
    #[allow(unsafe_code)]
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("odradek-jepsen needs root (network namespaces, mounts)");
    }
    if !(3..=5).contains(&args.nodes) {
        bail!("--nodes must be 3, 4 or 5");
    }
    for path in [&args.odradek, &args.python] {
        if !path.exists() {
            bail!("{} not found (scripts/jepsen.sh builds and installs what a run needs)", path.display());
        }
    }
    let faults: BTreeSet<Kind> = args.faults.iter().copied().collect();
    if faults.contains(&Kind::Clock) && !Path::new(cluster::LIBFAKETIME).exists() {
        bail!("clock faults need libfaketime ({}): apt-get install faketime", cluster::LIBFAKETIME);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))?;
    }
    let started = now_ms();
    let dir = args.out.join(format!("{started}-seed{}", args.seed));
    fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    // The run keeps its own copies of both binaries: a rebuild while it runs (another run's
    // scripts/jepsen.sh) must neither change the broker between two restarts nor unlink the
    // harness the filesystem processes are started from. They are removed at the end.
    let bin_dir = dir.join("bin");
    fs::create_dir_all(&bin_dir)?;
    let odradek = bin_dir.join("odradek");
    fs::copy(&args.odradek, &odradek).with_context(|| format!("copying {}", args.odradek.display()))?;
    let harness = bin_dir.join("odradek-jepsen");
    fs::copy(std::env::current_exe()?, &harness)?;
    // Not canonicalized: a venv's python is a symlink whose target does not know the venv.
    let python = std::path::absolute(&args.python)?;
    let script = dir.join("worker.py");
    fs::write(&script, WORKER)?;
    let promise = &args.promise;
    let settings_line = format!(
        "seed {} · {} nodes · {} s · faults {} · RF {} · min.insync.replicas {} · fsync {} · unclean election {} · transactions {}",
        args.seed,
        args.nodes,
        args.duration,
        args.faults.iter().map(Kind::to_string).collect::<Vec<_>>().join(","),
        args.replication_factor,
        args.min_insync_replicas,
        if promise.no_fsync { "off" } else { "on" },
        promise.unclean,
        args.transactions,
    );
    println!("odradek-jepsen: {settings_line}\n  run directory {}", dir.display());

    let net = Net::create(args.slot, args.nodes)?;
    let mut guard = Guard { net, cluster: None };
    let settings = Settings {
        odradek,
        harness,
        nodes: args.nodes,
        replication_factor: args.replication_factor,
        min_insync_replicas: args.min_insync_replicas,
        fsync: !promise.no_fsync,
        lossy_disks: faults.contains(&Kind::Power),
        small_disk: faults.contains(&Kind::Disk),
        fake_clocks: faults.contains(&Kind::Clock),
    };
    guard.cluster = Some(Cluster::new(settings, &guard.net, &dir)?);
    let outcome = run_inside(&args, &dir, &script, &python, &mut guard, &interrupted, &settings_line);
    if let Some(cluster) = guard.cluster.as_mut() {
        cluster.teardown();
    }
    drop(guard);
    let _ = fs::remove_dir_all(&bin_dir);
    outcome
}

fn run_inside(
    args: &RunArgs,
    dir: &Path,
    script: &Path,
    python: &Path,
    guard: &mut Guard,
    interrupted: &AtomicBool,
    settings_line: &str,
) -> Result<bool> {
    let net = &guard.net;
    let cluster = guard.cluster.as_mut().expect("set");
    cluster.start_all(net)?;
    let mut topics = vec![QUEUE_TOPIC];
    if args.transactions {
        topics.push(TXN_TOPIC);
        topics.push(TRANSFORMED_TOPIC);
    }
    let common = json!({
        "bootstrap": cluster.bootstrap(),
        "topics": topics,
        "partitions": args.promise.partitions,
        "rf": args.replication_factor,
        "min_isr": args.min_insync_replicas,
        "unclean": args.promise.unclean,
        "run": now_ms(),
        "seed": args.seed,
    });
    let with = |extra: serde_json::Value| {
        let mut v = common.clone();
        for (k, x) in extra.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    wait_for(Duration::from_secs(90), "creating the topics", || {
        client_call(net, python, script, with(json!({"role": "setup"})), Duration::from_secs(80)).map(|_| true)
    })?;
    println!("  cluster up, topics created; workload for {} s", args.duration);

    let (tx, rx) = mpsc::channel::<String>();
    let history_path = dir.join("history.jsonl");
    let writer = {
        let mut file = File::create(&history_path)?;
        thread::spawn(move || -> Vec<String> {
            let mut all = Vec::new();
            for line in rx {
                let _ = writeln!(file, "{line}");
                all.push(line);
            }
            all
        })
    };
    let clients_log = dir.join("clients.log");
    // Each producer says what it promises first: the checker reads these lines.
    let mut roles = Vec::new();
    let mut workers = Vec::new();
    let mut process = 0u32;
    // Idempotence needs acks=all (librdkafka and the Java client refuse acks=1 with it).
    for (acks, idempotent) in [("all", true), ("all", false), ("1", false), ("all", true)] {
        process += 1;
        let role = json!({"time": now_ms(), "process": process, "type": "ok", "f": "role",
            "acks": acks, "idempotent": idempotent});
        roles.push(role.to_string());
        workers.push(spawn_worker(net, python, script, with(json!({"role": "producer", "process": process,
            "acks": acks, "idempotent": idempotent, "seconds": args.duration})), tx.clone(), &clients_log)?);
    }
    for line in roles {
        tx.send(line)?;
    }
    for assign in [true, false, false] {
        process += 1;
        workers.push(spawn_worker(net, python, script, with(json!({"role": "consumer", "process": process,
            "assign": assign, "committed": false, "seconds": args.duration})), tx.clone(), &clients_log)?);
    }
    if args.transactions {
        for _ in 0..2 {
            process += 1;
            workers.push(spawn_worker(net, python, script, with(json!({"role": "txn", "process": process,
                "topics": [TXN_TOPIC], "seconds": args.duration})), tx.clone(), &clients_log)?);
        }
        process += 1;
        workers.push(spawn_worker(net, python, script, with(json!({"role": "consumer", "process": process,
            "topics": [TXN_TOPIC], "assign": true, "committed": true, "seconds": args.duration})), tx.clone(), &clients_log)?);
        process += 1;
        workers.push(spawn_worker(net, python, script, with(json!({"role": "transform", "process": process,
            "topics": [QUEUE_TOPIC, TRANSFORMED_TOPIC], "seconds": args.duration})), tx.clone(), &clients_log)?);
    }

    // The nemesis.
    let workload_start = now_ms();
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let mut plan = Plan::new(rand_chacha::ChaCha8Rng::seed_from_u64(args.seed), args.faults.clone(), args.nodes);
    let mut nemesis_log = File::create(dir.join("nemesis.jsonl"))?;
    let mut intervals = Vec::new();
    let mut crashes: Vec<(u8, String)> = Vec::new();
    let mut stopped_on_full_disk = 0;
    let mut faults_by_kind: std::collections::BTreeMap<Kind, usize> = Default::default();
    let sleep_until = |until: Instant| {
        while Instant::now() < until && !interrupted.load(Ordering::Relaxed) {
            sleep(Duration::from_millis(100));
        }
    };
    while Instant::now() < deadline && !interrupted.load(Ordering::Relaxed) {
        sleep_until((Instant::now() + Duration::from_millis(plan.quiet_ms())).min(deadline));
        let Some(mut fault) = plan.next() else { break };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining < Duration::from_millis(fault.hold_ms + 1000) || interrupted.load(Ordering::Relaxed) {
            break;
        }
        crashes.extend(cluster.exited().into_iter().map(|(id, status)| (id, status.to_string())));
        let start = now_ms();
        match fault.kind {
            Kind::Kill => cluster.kill(fault.nodes[0]),
            Kind::Pause => cluster.pause(fault.nodes[0]),
            Kind::Power => {
                for &n in &fault.nodes {
                    cluster.power_off(n)?;
                }
            }
            Kind::Clock => cluster.set_clock(fault.nodes[0], fault.clock_offset_s.unwrap_or(0))?,
            Kind::Disk => {
                cluster.fill_disk()?;
            }
            Kind::Partition => {
                let (leader, controller) = leaders(net, python, script, &with(json!({"role": "leaders"})));
                let split = fault.split.expect("partition faults have a split");
                let (nodes, cuts) = plan.cuts(split, leader, controller);
                fault.nodes = nodes;
                for (from, to) in cuts {
                    net.block(from, to)?;
                }
            }
        }
        sleep_until(Instant::now() + Duration::from_millis(fault.hold_ms));
        match fault.kind {
            Kind::Partition => net.heal()?,
            Kind::Disk => {
                cluster.free_disk()?;
                // A broker whose fsync fails takes its log directory offline and stops with
                // status 3, as Kafka does with its only log directory: that is the design,
                // not a crash. It starts again on the freed disk.
                for (id, status) in cluster.exited() {
                    if status.code() == Some(3) {
                        stopped_on_full_disk += 1;
                        cluster.start(net, id)?;
                    } else {
                        crashes.push((id, status.to_string()));
                    }
                }
            }
            Kind::Clock => cluster.set_clock(fault.nodes[0], 0)?,
            Kind::Pause => cluster.resume(fault.nodes[0]),
            Kind::Kill | Kind::Power => {
                for &n in &fault.nodes {
                    cluster.start(net, n)?;
                }
            }
        }
        let end = now_ms();
        *faults_by_kind.entry(fault.kind).or_default() += 1;
        writeln!(nemesis_log, "{}", json!({"start": start, "end": end, "fault": fault}))?;
        let detail = match (fault.split, fault.clock_offset_s) {
            (Some(split), _) => format!(" {split:?}"),
            (_, Some(offset)) => format!(" {offset:+} s"),
            _ => String::new(),
        };
        println!("  {:>5.1} s  {}{detail} on {:?} for {:.1} s", (start - workload_start) as f64 / 1000.0, fault.kind, fault.nodes, (end - start) as f64 / 1000.0);
        intervals.push(report::Interval { kind: fault.kind, start, end });
    }
    crashes.extend(cluster.exited().into_iter().map(|(id, status)| (id, status.to_string())));
    if interrupted.load(Ordering::Relaxed) {
        for mut w in workers {
            let _ = w.kill();
        }
        bail!("interrupted; everything torn down, the history so far is in {}", history_path.display());
    }

    // Heal, let the clients stop, let the cluster settle, read everything.
    net.heal()?;
    cluster.heal(net)?;
    let stop_by = Instant::now() + Duration::from_secs(60);
    let mut client_failures = Vec::new();
    // A client stuck inside librdkafka (waiting on a broker that no longer answers it) is
    // killed: its last operation stays indeterminate (`history::close_dangling`), and the
    // report names it. Its stacks are in clients.log (the worker dumps them first).
    let mut clients_killed = Vec::new();
    for (i, mut w) in workers.into_iter().enumerate() {
        while w.try_wait()?.is_none() && Instant::now() < stop_by {
            sleep(Duration::from_millis(100));
        }
        match w.try_wait()? {
            Some(status) if status.success() => {}
            Some(status) => client_failures.push(format!("client {}: {status}", i + 1)),
            None => {
                let _ = w.kill();
                let _ = w.wait();
                println!("  client {} still running a minute after the workload: killed", i + 1);
                clients_killed.push(i + 1);
            }
        }
    }
    if !client_failures.is_empty() {
        bail!("clients failed, so the history is incomplete ({}): {}", clients_log.display(), client_failures.join("; "));
    }
    println!("  healed; waiting for every partition to have a leader, then the final reads");
    wait_for(Duration::from_secs(120), "every partition led after healing", || {
        Ok(leaders_all(net, python, script, &with(json!({"role": "leaders"}))))
    })?;
    // Transactions left open end by the coordinator's timeout (transaction.timeout.ms 10 s).
    sleep(Duration::from_secs(15));
    let mut finals = vec![json!({"role": "final", "topics": [QUEUE_TOPIC], "committed": false, "timeout": 120})];
    if args.transactions {
        finals.push(json!({"role": "final", "topics": [TXN_TOPIC], "committed": true, "timeout": 120}));
        finals.push(json!({"role": "final", "topics": [TRANSFORMED_TOPIC], "committed": true, "timeout": 120}));
        finals.push(json!({"role": "committed", "topics": [QUEUE_TOPIC]}));
    }
    for last in finals {
        let what = format!("{} of {}", last["role"], last["topics"][0]);
        let child = spawn_worker(net, python, script, with(last), tx.clone(), &clients_log)?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!("the {what} failed (see {})", clients_log.display());
        }
    }
    crashes.extend(cluster.exited().into_iter().map(|(id, status)| (id, status.to_string())));
    drop(tx);
    let mut lines = writer.join().map_err(|_| anyhow::anyhow!("history writer panicked"))?;
    lines.sort_by_key(|l| serde_json::from_str::<Event>(l).map_or(0, |e| e.time));
    let events = history::parse(&lines.join("\n"))?;
    let (report, summary) = verdict(&events, &args.promise);

    for id in 1..=args.nodes {
        let _ = fs::copy(cluster.log_path(id), dir.join(format!("odradek-{id}.log")));
    }
    report::plots(dir, workload_start, &history::send_latencies(&events), &intervals)?;
    let mut md = String::new();
    let _ = writeln!(md, "# odradek-jepsen run\n\n{settings_line}\n");
    let _ = writeln!(md, "Faults injected: {}.\n", faults_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "));
    if stopped_on_full_disk > 0 {
        let _ = writeln!(md, "Brokers that stopped on a full disk (exit status 3, by design) and were started again: {stopped_on_full_disk}.\n");
    }
    if !crashes.is_empty() {
        let _ = writeln!(md, "**Nodes that exited on their own:** {crashes:?} (see odradek-N.log).\n");
    }
    if !clients_killed.is_empty() {
        let _ = writeln!(
            md,
            "Clients killed while still running a minute after the workload (their last operation is indeterminate; stacks in clients.log): {clients_killed:?}.\n"
        );
    }
    md.push_str(&summary);
    let _ = writeln!(md, "\n![throughput](throughput.svg)\n\n![latency](latency.svg)\n\nFiles: history.jsonl (every operation), nemesis.jsonl (every fault, start and end), odradek-N.log, clients.log.");
    fs::write(dir.join("report.md"), &md)?;
    let count = |f: &str, kind: &str| events.iter().filter(|e| e.f == f && e.kind == kind).count();
    let summary_json = json!({
        "seed": args.seed,
        "settings": settings_line,
        "faults": faults_by_kind.iter().map(|(k, n)| (k.to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
        "sends": {"ok": count("send", "ok"), "info": count("send", "info"), "fail": count("send", "fail")},
        "txns": {"ok": count("txn", "ok"), "info": count("txn", "info")},
        "transforms": {"ok": count("transform", "ok"), "info": count("transform", "info")},
        "unexpected": report.unexpected,
        "anomalies": report.anomalies.iter().map(|(_, a)| a.name()).collect::<BTreeSet<_>>(),
        "expected_losses": report.expected_losses(),
        "expected": report.expected,
        "duplicates": report.duplicates,
        "crashes": crashes,
        "clients_killed": clients_killed,
        "stopped_on_full_disk": stopped_on_full_disk,
        "valid": report.anomalies.is_empty() && crashes.is_empty(),
    });
    fs::write(dir.join("summary.json"), format!("{summary_json:#}\n"))?;
    print!("{summary}");
    println!("  report: {}", dir.join("report.md").display());
    Ok(report.anomalies.is_empty() && crashes.is_empty())
}

fn leaders_answer(net: &Net, python: &Path, script: &Path, args: &serde_json::Value) -> Option<serde_json::Value> {
    let out = client_call(net, python, script, args.clone(), Duration::from_secs(10)).ok()?;
    serde_json::from_str(out.trim()).ok()
}

/// The leader of a random queue partition (the first) and the active controller.
fn leaders(net: &Net, python: &Path, script: &Path, args: &serde_json::Value) -> (Option<u8>, Option<u8>) {
    let Some(v) = leaders_answer(net, python, script, args) else { return (None, None) };
    let node = |x: &serde_json::Value| x.as_i64().filter(|&n| n > 0).map(|n| n as u8);
    (node(&v["leaders"][QUEUE_TOPIC]["0"]), node(&v["controller"]))
}

fn leaders_all(net: &Net, python: &Path, script: &Path, args: &serde_json::Value) -> bool {
    let Some(v) = leaders_answer(net, python, script, args) else { return false };
    let Some(topics) = v["leaders"].as_object() else { return false };
    !topics.is_empty()
        && topics.values().all(|parts| parts.as_object().is_some_and(|p| !p.is_empty() && p.values().all(|l| l.as_i64().is_some_and(|n| n >= 0))))
}
