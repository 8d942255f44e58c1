//! The run's network: one namespace per node and one for the clients, each with a veth pair to
//! a bridge in a namespace of its own, addressed from 198.51.100.0/24 (RFC 5737, documentation
//! only). Nothing is added to the host's namespace but the namespaces themselves.
//!
//! A slot (0..8) owns 198.51.100.(32·slot)/27 and names `odj<slot>-*`, so runs in different
//! slots can share a machine.

use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct Net {
    slot: u8,
    nodes: u8,
}

pub fn run(args: &[&str]) -> Result<String> {
    let output = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {args:?}"))?;
    if !output.status.success() {
        bail!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Net {
    pub fn namespace(&self, host: Host) -> String {
        match host {
            Host::Node(n) => format!("odj{}-n{n}", self.slot),
            Host::Clients => format!("odj{}-c", self.slot),
        }
    }

    pub fn address(&self, host: Host) -> String {
        let last = match host {
            Host::Node(n) => 10 + n as u32,
            Host::Clients => 2,
        };
        format!("198.51.100.{}", 32 * self.slot as u32 + last)
    }

    fn bridge(&self) -> String {
        format!("odj{}-br", self.slot)
    }

    /// Removes whatever a run in this slot left behind (a crashed harness), then builds the
    /// network.
    pub fn create(slot: u8, nodes: u8) -> Result<Net> {
        if slot >= 8 {
            bail!("--slot must be below 8");
        }
        let net = Net { slot, nodes };
        net.destroy();
        let bridge = net.bridge();
        run(&["ip", "netns", "add", &bridge])?;
        run(&["ip", "-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &bridge, "link", "set", "br0", "up"])?;
        let hosts: Vec<Host> = std::iter::once(Host::Clients).chain((1..=nodes).map(Host::Node)).collect();
        for (i, host) in hosts.into_iter().enumerate() {
            let ns = net.namespace(host);
            let outer = format!("odj{slot}v{i}");
            let inner = format!("odj{slot}p{i}");
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
            run(&["ip", "link", "set", &inner, "netns", &ns])?;
            run(&["ip", "-n", &ns, "link", "set", &inner, "name", "eth0"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/27", net.address(host)), "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&["ip", "link", "set", &outer, "netns", &bridge])?;
            run(&["ip", "-n", &bridge, "link", "set", &outer, "master", "br0"])?;
            run(&["ip", "-n", &bridge, "link", "set", &outer, "up"])?;
        }
        Ok(net)
    }

    /// Deleting a namespace deletes its veth ends, and so their peers.
    pub fn destroy(&self) {
        let mut names: Vec<String> = (1..=self.nodes.max(5)).map(|n| self.namespace(Host::Node(n))).collect();
        names.push(self.namespace(Host::Clients));
        names.push(self.bridge());
        for name in names {
            let _ = Command::new("ip").args(["netns", "del", &name]).stderr(std::process::Stdio::null()).status();
        }
    }

    /// Packets from `from` to `to` are dropped (a route to a black hole in `from`'s namespace):
    /// one direction of a partition.
    pub fn block(&self, from: u8, to: u8) -> Result<()> {
        let ns = self.namespace(Host::Node(from));
        let dest = format!("{}/32", self.address(Host::Node(to)));
        run(&["ip", "-n", &ns, "route", "replace", "blackhole", &dest])?;
        Ok(())
    }

    pub fn heal(&self) -> Result<()> {
        for n in 1..=self.nodes {
            let ns = self.namespace(Host::Node(n));
            let routes = run(&["ip", "-n", &ns, "route", "show", "type", "blackhole"])?;
            for line in routes.lines() {
                if let Some(dest) = line.split_whitespace().nth(1) {
                    run(&["ip", "-n", &ns, "route", "del", "blackhole", dest])?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Node(u8),
    Clients,
}
