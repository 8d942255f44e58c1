//! Several log directories (`log.dirs`, JBOD) as Kafka keeps them: each partition replica
//! lives in one of them, a new one in the directory holding the fewest partitions, and a
//! directory that fails takes only its own partitions offline. The first directory also holds
//! the node's metadata (`meta.properties`, `__cluster_metadata`): losing it stops the broker,
//! as losing `metadata.log.dir` stops a Kafka broker.
//!
//! Shared by every core (placement counts every core's partitions), behind one mutex that
//! the data path takes only once some directory is offline (`any_offline`).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing::error;

use super::log_dir_failed;

/// The directory of the metadata (`log.dirs`' first).
const METADATA_DIR: usize = 0;

/// A partition by topic name and index, as its directory (`<topic>-<partition>`) names it.
pub type PartitionName = (String, i32);

#[derive(Debug)]
pub struct LogDirs {
    paths: Vec<PathBuf>,
    state: Mutex<State>,
    any_offline: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Per directory, why it is offline.
    offline: Vec<Option<String>>,
    /// Which directory holds each partition this node has a directory for.
    placement: BTreeMap<PartitionName, usize>,
    /// Partitions found in no directory while one was offline at start: they may be in it, so
    /// none is created elsewhere (Kafka's `getOrCreateLog` refuses a log that is not new then).
    unplaced: BTreeSet<PartitionName>,
}

/// What one directory held at start; `Err` when it could not be listed.
pub type Listing = Result<Vec<PartitionName>, String>;

/// A partition's directory exists in two log directories: which copy is current cannot be
/// told, so the broker does not start (Kafka refuses to load a duplicate log too).
#[derive(Debug, PartialEq, Eq)]
pub struct Duplicate {
    pub partition: PartitionName,
    pub first: usize,
    pub second: usize,
}

impl LogDirs {
    /// Creates the directories that do not exist and finds every partition directory in them.
    /// A directory that cannot be created or listed is offline from the start; `Err` when that
    /// is the metadata's (the first), or when a partition is found twice.
    pub fn open(paths: &[PathBuf]) -> Result<LogDirs, String> {
        let listings: Vec<Listing> = paths.iter().map(|path| list(path).map_err(|e| e.to_string())).collect();
        for (path, listing) in paths.iter().zip(&listings) {
            if let Err(reason) = listing {
                error!(dir = %path.display(), %reason, "log directory offline at start: its partitions are not served by this broker");
            }
        }
        if let Err(reason) = &listings[METADATA_DIR] {
            return Err(format!("{}, the first log directory, holds the metadata and is unusable: {reason}", paths[METADATA_DIR].display()));
        }
        let placement = place_found(&listings).map_err(|d| {
            format!(
                "partition {}-{} has a directory in both {} and {}: remove the stale one",
                d.partition.0,
                d.partition.1,
                paths[d.first].display(),
                paths[d.second].display()
            )
        })?;
        let offline: Vec<Option<String>> = listings.into_iter().map(|l| l.err()).collect();
        let any_offline = offline.iter().any(Option::is_some);
        Ok(LogDirs {
            paths: paths.to_vec(),
            state: Mutex::new(State { offline, placement, unplaced: BTreeSet::new() }),
            any_offline: AtomicBool::new(any_offline),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it leaves plain maps behind, still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The directory of a partition replica this core opens: the one holding it, else (a new
    /// replica) the online directory with the fewest partitions, first in `log.dirs` order on
    /// a tie. `existed` says the replica was this node's before this start: one found nowhere
    /// while a directory is offline may be in that one and is refused rather than created
    /// empty elsewhere. `Err` says why it cannot be served.
    pub fn place(&self, topic: &str, partition: i32, existed: bool) -> Result<PathBuf, String> {
        let mut state = self.state();
        let key = (topic.to_owned(), partition);
        let index = match state.placement.get(&key) {
            Some(&index) => index,
            None => {
                let offline: Vec<&Path> = (0..self.paths.len()).filter(|&i| state.offline[i].is_some()).map(|i| self.paths[i].as_path()).collect();
                if existed && !offline.is_empty() {
                    state.unplaced.insert(key);
                    let offline: Vec<String> = offline.iter().map(|p| p.display().to_string()).collect();
                    return Err(format!("not found in an online log directory while {} is offline", offline.join(", ")));
                }
                let online: Vec<bool> = state.offline.iter().map(Option::is_none).collect();
                let index = choose(&counts(&state.placement, self.paths.len()), &online).ok_or("every log directory is offline")?;
                state.placement.insert(key.clone(), index);
                index
            }
        };
        match &state.offline[index] {
            Some(reason) => Err(format!("its log directory {} is offline: {reason}", self.paths[index].display())),
            None => Ok(self.paths[index].join(format!("{topic}-{partition}"))),
        }
    }

    /// The partition's directory is gone (topic deleted, replica moved away).
    pub fn forget(&self, topic: &str, partition: i32) {
        let mut state = self.state();
        let key = (topic.to_owned(), partition);
        state.placement.remove(&key);
        state.unplaced.remove(&key);
    }

    /// Whether the partition is not served here because its directory is offline (or may be
    /// in one). Cheap until a directory fails.
    pub fn is_offline(&self, topic: &str, partition: i32) -> bool {
        if !self.any_offline.load(Ordering::Acquire) {
            return false;
        }
        let state = self.state();
        let key = (topic.to_owned(), partition);
        state.unplaced.contains(&key) || state.placement.get(&key).is_some_and(|&i| state.offline[i].is_some())
    }

    /// An IO error hit a partition at runtime: its directory goes offline, with every
    /// partition in it. The state machines' view of those logs no longer matches the disk
    /// (and after a failed fsync the kernel may have dropped dirty pages), so they are never
    /// written or served again by this process; the others go on. Kafka halts a broker whose
    /// every log directory failed, or whose metadata log's did, and so does this
    /// (`log_dir_failed`). -> `true` when the
    /// directory was online until now: the caller takes its partitions off every core.
    pub fn fail(&self, topic: &str, partition: i32, what: &str, path: &Path, e: &io::Error) -> bool {
        let mut state = self.state();
        let index = state.placement.get(&(topic.to_owned(), partition)).copied().or_else(|| self.paths.iter().position(|p| path.starts_with(p)));
        let Some(index) = index else { log_dir_failed(what, path, e) };
        if state.offline[index].is_some() {
            return false;
        }
        // Kafka halts when the metadata log's directory fails, whatever the others do.
        if index == METADATA_DIR || state.offline.iter().enumerate().all(|(i, o)| i == index || o.is_some()) {
            log_dir_failed(what, path, e);
        }
        let reason = format!("{what} of {topic}-{partition} failed: {e}");
        error!(
            dir = %self.paths[index].display(), %reason,
            "log directory offline: its partitions are not served by this broker (KAFKA_STORAGE_ERROR) until it is \
             repaired or replaced and the broker restarted; the other log directories go on"
        );
        state.offline[index] = Some(reason);
        self.any_offline.store(true, Ordering::Release);
        true
    }

    /// Every partition not served here because of an offline directory (`is_offline`), for
    /// the heartbeats that tell the controller. Cheap until a directory fails.
    pub fn offline_partitions(&self) -> Vec<PartitionName> {
        if !self.any_offline.load(Ordering::Acquire) {
            return Vec::new();
        }
        let state = self.state();
        let placed = state.placement.iter().filter(|(_, &i)| state.offline[i].is_some()).map(|(tp, _)| tp);
        let offline: BTreeSet<&PartitionName> = placed.chain(&state.unplaced).collect();
        offline.into_iter().cloned().collect()
    }

    /// How many directories are offline.
    pub fn offline_count(&self) -> usize {
        self.state().offline.iter().filter(|o| o.is_some()).count()
    }

    /// Every directory in `log.dirs` order: its path, why it is offline if it is, and the
    /// partitions it holds.
    pub fn describe(&self) -> Vec<(PathBuf, Option<String>, Vec<PartitionName>)> {
        let state = self.state();
        let mut held: Vec<Vec<PartitionName>> = vec![Vec::new(); self.paths.len()];
        for (tp, &index) in &state.placement {
            held[index].push(tp.clone());
        }
        self.paths.iter().zip(held).enumerate().map(|(i, (path, held))| (path.clone(), state.offline[i].clone(), held)).collect()
    }
}

/// The partition directories in `dir`, which is created when missing.
fn list(dir: &Path) -> io::Result<Vec<PartitionName>> {
    std::fs::create_dir_all(dir)?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some(tp) = entry.file_name().to_str().and_then(partition_of) {
            found.push(tp);
        }
    }
    Ok(found)
}

/// The partition a directory name `<topic>-<partition>` names (topic names may hold '-').
pub fn partition_of(name: &str) -> Option<PartitionName> {
    let (topic, partition) = name.rsplit_once('-')?;
    if topic.is_empty() || partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic.to_owned(), partition.parse().ok()?))
}

/// Which directory holds each partition found at start (offline directories hold none known).
pub fn place_found(listings: &[Listing]) -> Result<BTreeMap<PartitionName, usize>, Duplicate> {
    let mut placement = BTreeMap::new();
    for (index, listing) in listings.iter().enumerate() {
        for tp in listing.iter().flatten() {
            if let Some(&first) = placement.get(tp) {
                return Err(Duplicate { partition: tp.clone(), first, second: index });
            }
            placement.insert(tp.clone(), index);
        }
    }
    Ok(placement)
}

/// Partitions per directory.
fn counts(placement: &BTreeMap<PartitionName, usize>, dirs: usize) -> Vec<usize> {
    let mut counts = vec![0; dirs];
    for &index in placement.values() {
        counts[index] += 1;
    }
    counts
}

/// Kafka's `nextLogDirs`: the online directory with the fewest partitions, the first in
/// `log.dirs` order on a tie.
pub fn choose(counts: &[usize], online: &[bool]) -> Option<usize> {
    (0..counts.len()).filter(|&i| online[i]).min_by_key(|&i| (counts[i], i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> PartitionName {
        (topic.to_owned(), partition)
    }

    #[test]
    fn directory_names_parse_as_kafka_names_them() {
        assert_eq!(partition_of("orders-3"), Some(tp("orders", 3)));
        assert_eq!(partition_of("my-topic-12"), Some(tp("my-topic", 12)));
        assert_eq!(partition_of("__consumer_offsets-49"), Some(tp("__consumer_offsets", 49)));
        for other in ["__cluster_metadata", "meta.properties", "-1", "t-", "t-x", "t-+1", "t-1.tmp"] {
            assert_eq!(partition_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_new_partition_goes_to_the_online_directory_with_fewest_partitions_first_on_ties() {
        assert_eq!(choose(&[0, 0, 0], &[true, true, true]), Some(0));
        assert_eq!(choose(&[2, 1, 1], &[true, true, true]), Some(1));
        assert_eq!(choose(&[2, 1, 3], &[true, false, true]), Some(0));
        assert_eq!(choose(&[0, 0], &[false, false]), None);
    }

    #[test]
    fn placement_spreads_partitions_evenly_in_order() {
        let mut placement = BTreeMap::new();
        for p in 0..5 {
            let index = choose(&counts(&placement, 2), &[true, true]).unwrap();
            placement.insert(tp("t", p), index);
        }
        assert_eq!(placement.values().copied().collect::<Vec<_>>(), [0, 1, 0, 1, 0]);
        assert_eq!(counts(&placement, 2), [3, 2]);
    }

    #[test]
    fn partitions_found_at_start_stay_where_they_are_and_a_duplicate_is_refused() {
        let found = place_found(&[Ok(vec![tp("a", 0), tp("b", 1)]), Err("gone".into()), Ok(vec![tp("a", 1)])]).unwrap();
        assert_eq!(found.into_iter().collect::<Vec<_>>(), [(tp("a", 0), 0), (tp("a", 1), 2), (tp("b", 1), 0)]);
        let duplicate = place_found(&[Ok(vec![tp("a", 0)]), Ok(vec![tp("b", 0), tp("a", 0)])]).unwrap_err();
        assert_eq!(duplicate, Duplicate { partition: tp("a", 0), first: 0, second: 1 });
    }

    // Guards against a replica of an offline directory coming back empty in another one (its
    // records would be gone while the controller still counts it in the ISR).
    #[test]
    fn an_offline_directory_keeps_its_partitions_offline_and_new_ones_go_elsewhere() {
        let root = std::env::temp_dir().join(format!("odradek-log-dirs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (a, b) = (root.join("a"), root.join("b"));
        std::fs::create_dir_all(a.join("old-0")).unwrap();
        std::fs::write(&b, b"not a directory").unwrap();
        let dirs = LogDirs::open(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(dirs.place("old", 0, true).unwrap(), a.join("old-0"));
        assert!(dirs.place("old", 1, true).unwrap_err().contains(&b.display().to_string()));
        assert!(dirs.is_offline("old", 1) && !dirs.is_offline("old", 0));
        assert_eq!(dirs.offline_partitions(), [tp("old", 1)], "one that may be in the offline directory too");
        assert_eq!(dirs.place("new", 0, false).unwrap(), a.join("new-0"));
        let described = dirs.describe();
        assert!(described[0].1.is_none() && described[1].1.is_some());
        assert_eq!(described[0].2, [tp("new", 0), tp("old", 0)]);
        std::fs::create_dir_all(root.join("c")).unwrap();
        std::fs::create_dir_all(root.join("c/old-0")).unwrap();
        assert!(LogDirs::open(&[a.clone(), root.join("c")]).unwrap_err().contains("old-0"));
        assert!(LogDirs::open(&[b.clone(), a.clone()]).unwrap_err().contains("holds the metadata"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_failure_takes_its_directory_offline_once() {
        let root = std::env::temp_dir().join(format!("odradek-log-dirs-fail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (a, b) = (root.join("a"), root.join("b"));
        let dirs = LogDirs::open(&[a.clone(), b.clone()]).unwrap();
        let (p0, p1) = (dirs.place("t", 0, false).unwrap(), dirs.place("t", 1, false).unwrap());
        assert_eq!((p0.parent(), p1.parent()), (Some(a.as_path()), Some(b.as_path())));
        let e = io::Error::other("boom");
        assert!(dirs.fail("t", 1, "append", &p1, &e));
        assert!(!dirs.fail("t", 1, "fsync", &p1, &e), "already offline");
        assert!(dirs.is_offline("t", 1) && !dirs.is_offline("t", 0));
        assert_eq!(dirs.offline_count(), 1);
        assert_eq!(dirs.offline_partitions(), [tp("t", 1)]);
        assert!(dirs.place("t", 1, false).is_err());
        assert_eq!(dirs.place("t", 2, false).unwrap(), a.join("t-2"), "new partitions avoid the offline directory");
        std::fs::remove_dir_all(root).unwrap();
    }
}
