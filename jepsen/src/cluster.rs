//! The cluster under test: `odradek` processes, each in its network namespace, with its data
//! directory on the power-loss filesystem (`lossyfs`) and its wall clock behind libfaketime.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lossyfs;
use crate::net::{Host, Net};

pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
pub const CLIENT_PORT: u16 = 9092;
const CONTROLLER_PORT: u16 = 9093;
/// The node whose data directory sits on a small tmpfs, for disk-full faults.
pub const SMALL_DISK_NODE: u8 = 1;
const SMALL_DISK: &str = "256m";

pub struct Settings {
    pub odradek: PathBuf,
    /// This program, started as `lossyfs` for every node's filesystem.
    pub harness: PathBuf,
    pub nodes: u8,
    pub replication_factor: i16,
    pub min_insync_replicas: usize,
    pub fsync: bool,
    /// Data directories on lossyfs (power-loss faults).
    pub lossy_disks: bool,
    pub small_disk: bool,
    pub fake_clocks: bool,
}

pub struct Node {
    pub id: u8,
    dir: PathBuf,
    process: Option<Child>,
    fs_daemon: Option<Child>,
    paused: bool,
}

pub struct Cluster {
    pub settings: Settings,
    pub nodes: Vec<Node>,
    voters: String,
    bootstrap: String,
}

impl Node {
    fn backing(&self) -> PathBuf {
        self.dir.join("backing")
    }

    /// The broker's data directory: the lossyfs mount, or the backing directory itself.
    fn data(&self, settings: &Settings) -> PathBuf {
        if settings.lossy_disks {
            self.dir.join("data")
        } else {
            self.backing()
        }
    }

    fn clock_file(&self) -> PathBuf {
        self.dir.join("faketime")
    }

    fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(|c| c.id() as i32)
    }
}

fn signal(pid: i32, signal: i32) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on a pid of our own child, which we have not reaped yet.
    unsafe {
        libc::kill(pid, signal);
    }
}

impl Cluster {
    pub fn new(settings: Settings, net: &Net, root: &Path) -> Result<Cluster> {
        let voters = (1..=settings.nodes)
            .map(|n| format!("{n}@{}:{CONTROLLER_PORT}", net.address(Host::Node(n))))
            .collect::<Vec<_>>()
            .join(",");
        let bootstrap = (1..=settings.nodes)
            .map(|n| format!("{}:{CLIENT_PORT}", net.address(Host::Node(n))))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for id in 1..=settings.nodes {
            let dir = root.join(format!("n{id}"));
            let node = Node { id, dir, process: None, fs_daemon: None, paused: false };
            fs::create_dir_all(node.backing())?;
            fs::create_dir_all(node.data(&settings))?;
            if settings.small_disk && id == SMALL_DISK_NODE {
                crate::net::run(&["mount", "-t", "tmpfs", "-o", &format!("size={SMALL_DISK}"), "odj-disk", &node.backing().to_string_lossy()])?;
            }
            fs::write(node.clock_file(), "+0\n")?;
            nodes.push(node);
        }
        Ok(Cluster { settings, nodes, voters, bootstrap })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn node(&mut self, id: u8) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    fn mount(&mut self, id: u8) -> Result<()> {
        if !self.settings.lossy_disks {
            return Ok(());
        }
        let node = &mut self.nodes[id as usize - 1];
        let log = File::options().create(true).append(true).open(node.dir.join("lossyfs.log"))?;
        let child = Command::new(&self.settings.harness)
            .arg("lossyfs")
            .arg(node.backing())
            .arg(node.dir.join("data"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting lossyfs")?;
        node.fs_daemon = Some(child);
        lossyfs::wait_mounted(&node.dir.join("data"), Duration::from_secs(10))
    }

    pub fn start(&mut self, net: &Net, id: u8) -> Result<()> {
        if self.settings.lossy_disks && self.nodes[id as usize - 1].fs_daemon.is_none() {
            self.mount(id)?;
        }
        let node = &self.nodes[id as usize - 1];
        let address = net.address(Host::Node(id));
        let log = File::options().create(true).append(true).open(node.dir.join("odradek.log"))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &net.namespace(Host::Node(id))])
            .arg(&self.settings.odradek)
            .arg("serve")
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &format!("{address}:{CLIENT_PORT}")])
            .args(["--controller-listen", &format!("{address}:{CONTROLLER_PORT}")])
            .args(["--controller-quorum-voters", &self.voters])
            .arg("--data-dir")
            .arg(node.data(&self.settings))
            .args(["--cores", "1"])
            .args(["--default-replication-factor", &self.settings.replication_factor.to_string()])
            .args(["--offsets-topic-replication-factor", &self.settings.replication_factor.to_string()])
            .args(["--min-insync-replicas", &self.settings.min_insync_replicas.to_string()])
            .args(["--offsets-topic-num-partitions", "4"])
            .args(["--group-initial-rebalance-delay-ms", "0"])
            .args(["--broker-session-timeout-ms", "6000"])
            .args(["--replica-lag-time-max-ms", "10000"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !self.settings.fsync {
            command.arg("--no-fsync");
        }
        if self.settings.fake_clocks {
            // Only the wall clock is skewed: NTP steps CLOCK_REALTIME, never CLOCK_MONOTONIC.
            command
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", node.clock_file())
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        let child = command.spawn().context("starting odradek")?;
        let node = &mut self.nodes[id as usize - 1];
        node.process = Some(child);
        node.paused = false;
        Ok(())
    }

    pub fn start_all(&mut self, net: &Net) -> Result<()> {
        for id in 1..=self.settings.nodes {
            self.start(net, id)?;
        }
        Ok(())
    }

    /// `kill -9`, and reap it.
    pub fn kill(&mut self, id: u8) {
        let node = self.node(id);
        if let Some(mut child) = node.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    pub fn pause(&mut self, id: u8) {
        let node = self.node(id);
        if let Some(pid) = node.pid() {
            signal(pid, libc::SIGSTOP);
            node.paused = true;
        }
    }

    pub fn resume(&mut self, id: u8) {
        let node = self.node(id);
        if let Some(pid) = node.pid() {
            signal(pid, libc::SIGCONT);
        }
        node.paused = false;
    }

    /// Power loss: the broker and its filesystem daemon die at once, so every byte the broker
    /// wrote but did not fsync is gone; the mount comes back over what reached the disk.
    pub fn power_off(&mut self, id: u8) -> Result<()> {
        let lossy = self.settings.lossy_disks;
        let node = self.node(id);
        if let Some(mut daemon) = node.fs_daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        if let Some(mut child) = node.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
        if lossy {
            lossyfs::unmount(&node.dir.join("data"))?;
        }
        Ok(())
    }

    pub fn set_clock(&mut self, id: u8, offset_s: i64) -> Result<()> {
        let file = self.node(id).clock_file();
        fs::write(&file, format!("{offset_s:+}\n")).with_context(|| file.display().to_string())
    }

    /// Fills the small disk up to the last byte.
    pub fn fill_disk(&mut self) -> Result<u64> {
        let filler = self.node(SMALL_DISK_NODE).backing().join("filler");
        let file = File::create(&filler)?;
        let mut filled = 0u64;
        // Halving chunks down to one page: tmpfs counts pages.
        let mut chunk: u64 = 1 << 30;
        while chunk >= 4096 {
            #[allow(unsafe_code)]
            // SAFETY: fallocate(2) on a file we own, by its raw fd while `file` lives.
            let rc = unsafe {
                libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, filled as i64, chunk as i64)
            };
            if rc == 0 {
                filled += chunk;
            } else {
                chunk /= 2;
            }
        }
        Ok(filled)
    }

    pub fn free_disk(&mut self) -> Result<()> {
        let filler = self.node(SMALL_DISK_NODE).backing().join("filler");
        match fs::remove_file(&filler) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Brings every node back: resumed, clock right, restarted if it died or was killed.
    pub fn heal(&mut self, net: &Net) -> Result<()> {
        for id in 1..=self.settings.nodes {
            if self.node(id).paused {
                self.resume(id);
            }
            self.set_clock(id, 0)?;
            let exited = match self.node(id).process.as_mut() {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            if exited {
                self.node(id).process = None;
                self.start(net, id)?;
            }
        }
        if self.settings.small_disk {
            self.free_disk()?;
        }
        Ok(())
    }

    /// Nodes that exited on their own (a crash, not a fault): the run fails on any.
    pub fn exited(&mut self) -> Vec<(u8, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.process.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((node.id, status));
                    node.process = None;
                }
            }
        }
        exited
    }

    pub fn log_path(&self, id: u8) -> PathBuf {
        self.nodes[id as usize - 1].dir.join("odradek.log")
    }

    /// Stops everything and releases mounts; safe to call twice.
    pub fn teardown(&mut self) {
        for id in 1..=self.settings.nodes {
            self.resume(id);
            let _ = self.power_off(id);
        }
        if self.settings.small_disk {
            let backing = self.node(SMALL_DISK_NODE).backing();
            let _ = Command::new("umount").arg("-l").arg(&backing).stderr(Stdio::null()).status();
        }
    }
}

/// Waits until `check` holds, or fails after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    let mut last_error = None;
    while start.elapsed() < timeout {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        sleep(Duration::from_millis(500));
    }
    match last_error {
        Some(e) => Err(e.context(format!("{what}: not after {timeout:?}"))),
        None => bail!("{what}: not after {timeout:?}"),
    }
}
