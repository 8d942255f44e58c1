//! Faults, drawn from a seed and applied one at a time: each starts, holds, heals, and is
//! logged with its start and end.

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Kill,
    Pause,
    Partition,
    Clock,
    Power,
    Disk,
}

pub const ALL: [Kind; 6] = [Kind::Kill, Kind::Pause, Kind::Partition, Kind::Clock, Kind::Power, Kind::Disk];

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL.into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| format!("unknown fault {s:?}; known: kill, pause, partition, clock, power, disk"))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Partition => "partition",
            Kind::Clock => "clock",
            Kind::Power => "power",
            Kind::Disk => "disk",
        };
        f.write_str(name)
    }
}

/// Whom a partition isolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// A random minority from the majority, both ways.
    MajorityMinority,
    /// The leader of a random partition of the queue topic from everyone.
    IsolatedLeader,
    /// The active controller from everyone.
    IsolatedController,
    /// Two halves that each still reach one node in the middle.
    Bridge,
    /// One node's packets to the others are dropped; theirs to it arrive.
    OneWay,
}

/// One fault as planned: what, on whom, for how long.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// Target nodes (for partitions: filled in when applied).
    pub nodes: Vec<u8>,
    /// Clock offset in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_s: Option<i64>,
    pub hold_ms: u64,
}

pub struct Plan {
    rng: ChaCha8Rng,
    kinds: Vec<Kind>,
    nodes: u8,
    /// The kinds not yet drawn in this round: every kind comes once per round, in a random
    /// order, so a short run still has one of each.
    round: Vec<Kind>,
}

impl Plan {
    pub fn new(rng: ChaCha8Rng, kinds: Vec<Kind>, nodes: u8) -> Plan {
        Plan { rng, kinds, nodes, round: Vec::new() }
    }

    pub fn quiet_ms(&mut self) -> u64 {
        self.rng.gen_range(2_000..5_000)
    }

    pub fn next(&mut self) -> Option<Fault> {
        if self.round.is_empty() {
            self.round = self.kinds.clone();
            self.round.shuffle(&mut self.rng);
        }
        let kind = self.round.pop()?;
        let one = self.rng.gen_range(1..=self.nodes);
        let hold_ms = self.rng.gen_range(4_000..10_000);
        let mut fault = Fault { kind, split: None, nodes: vec![one], clock_offset_s: None, hold_ms };
        match kind {
            Kind::Kill | Kind::Pause => {}
            Kind::Power => {
                // Half the time every node at once: a data centre's power cut, the case that
                // loses what no replica fsynced.
                if self.rng.gen_bool(0.5) {
                    fault.nodes = (1..=self.nodes).collect();
                }
            }
            Kind::Partition => {
                let splits = [
                    Split::MajorityMinority,
                    Split::IsolatedLeader,
                    Split::IsolatedController,
                    Split::Bridge,
                    Split::OneWay,
                ];
                fault.split = Some(*splits.choose(&mut self.rng).expect("non-empty"));
            }
            Kind::Clock => {
                let magnitude = *[2i64, 30, 300, 3_600].choose(&mut self.rng).expect("non-empty");
                let sign = if self.rng.gen_bool(0.5) { 1 } else { -1 };
                fault.clock_offset_s = Some(sign * magnitude);
            }
            Kind::Disk => fault.nodes = vec![crate::cluster::SMALL_DISK_NODE],
        }
        Some(fault)
    }

    /// The directed links a partition cuts, given the current leader and controller.
    pub fn cuts(&mut self, split: Split, leader: Option<u8>, controller: Option<u8>) -> (Vec<u8>, Vec<(u8, u8)>) {
        let all: Vec<u8> = (1..=self.nodes).collect();
        let both_ways = |side: &[u8]| -> Vec<(u8, u8)> {
            let other: Vec<u8> = all.iter().copied().filter(|n| !side.contains(n)).collect();
            side.iter()
                .flat_map(|&a| other.iter().flat_map(move |&b| [(a, b), (b, a)]))
                .collect()
        };
        let random = self.rng.gen_range(1..=self.nodes);
        match split {
            Split::MajorityMinority => {
                let mut shuffled = all.clone();
                shuffled.shuffle(&mut self.rng);
                let minority: Vec<u8> = shuffled[..(self.nodes as usize - 1) / 2].to_vec();
                (minority.clone(), both_ways(&minority))
            }
            Split::IsolatedLeader => {
                let target = leader.unwrap_or(random);
                (vec![target], both_ways(&[target]))
            }
            Split::IsolatedController => {
                let target = controller.unwrap_or(random);
                (vec![target], both_ways(&[target]))
            }
            Split::Bridge => {
                let mut shuffled = all.clone();
                shuffled.shuffle(&mut self.rng);
                let middle = shuffled[0];
                let rest = &shuffled[1..];
                let (left, right) = rest.split_at(rest.len() / 2);
                let cuts = left
                    .iter()
                    .flat_map(|&a| right.iter().flat_map(move |&b| [(a, b), (b, a)]))
                    .collect();
                (vec![middle], cuts)
            }
            Split::OneWay => {
                let target = leader.unwrap_or(random);
                let cuts = all.iter().filter(|&&n| n != target).map(|&n| (target, n)).collect();
                (vec![target], cuts)
            }
        }
    }
}
