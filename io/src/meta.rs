//! The broker's own metadata in the data directory: `meta.properties` (cluster id and node
//! id, as Kafka writes them), and the migration of `topics.json`, the topic table of brokers
//! from before every node ran the metadata quorum.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use odradek_core::topic::{BrokerLayers, TopicConfig, TopicMeta, TopicTable};
use serde::Deserialize;
use tracing::warn;

use crate::config::ServerConfig;
use odradek_core::group::OFFSETS_TOPIC;

const TOPICS_FILE: &str = "topics.json";

#[derive(Deserialize)]
struct StoredTopic {
    name: String,
    id: String,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

/// Reads `meta.properties`, creating it with a fresh cluster id on first start. A data
/// directory written by another node id is refused, as Kafka does.
pub fn load_or_create_cluster_id(data_dir: &Path, node_id: i32, quorum: Option<&str>) -> io::Result<String> {
    let path = data_dir.join("meta.properties");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let props = crate::config::parse_properties(&text)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
            let stored_node = props.get("node.id").and_then(|v| v.parse::<i32>().ok());
            if stored_node != Some(node_id) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} belongs to node {stored_node:?}, not node {node_id}", path.display()),
                ));
            }
            props.get("cluster.id").cloned().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{} has no cluster.id", path.display()))
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Nodes of one cluster must report one cluster id (clients refuse a mix), and
            // odradek has no `kafka-storage format` step: derive it from the quorum they share.
            let cluster_id = match quorum {
                Some(quorum) => base64_url(&quorum_cluster_id(quorum)),
                None => base64_url(uuid::Uuid::new_v4().as_bytes()),
            };
            let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(cluster_id)
        }
        Err(e) => Err(e),
    }
}

/// 16 bytes from the quorum description (FNV-1a 64, twice with different offsets).
fn quorum_cluster_id(quorum: &str) -> [u8; 16] {
    let fnv = |basis: u64| {
        quorum.bytes().fold(basis, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    id[8..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_be_bytes());
    id
}

/// Kafka prints cluster ids as URL-safe base64 of a UUID without padding.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Loads the topic table; a missing file is an empty table.
fn load_topics(data_dir: &Path, defaults: &BrokerLayers) -> io::Result<TopicTable> {
    let path = data_dir.join(TOPICS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TopicTable::new()),
        Err(e) => return Err(e),
    };
    let stored: Vec<StoredTopic> = serde_json::from_slice(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
    let mut table = TopicTable::new();
    for topic in stored {
        let id = uuid::Uuid::parse_str(&topic.id)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("topic {}: {e}", topic.name)))?;
        let config = TopicConfig::new(defaults, topic.configs)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("topic {}: {e}", topic.name)))?;
        table.insert(
            topic.name.clone(),
            TopicMeta { name: topic.name, id: *id.as_bytes(), partitions: topic.partitions, config },
        );
    }
    Ok(table)
}

/// A data directory written before every node ran the metadata quorum keeps its topics in
/// `topics.json`. On a standalone node they are handed to the quorum to re-create in the
/// metadata log with their partition logs kept in place (`cluster::Node`, which renames the
/// file once done, so a crash mid-way migrates the rest on the next start); partition
/// directories of topics it no longer lists are removed first, as that broker did at start.
/// A node of a larger cluster cannot take them over alone: its node-local
/// `__consumer_offsets` is retired (a cluster replicates its own) and other topics are left
/// alone with a warning.
pub fn take_legacy_topics(data_dir: &Path, config: &ServerConfig) -> io::Result<Option<TopicTable>> {
    let defaults = BrokerLayers { static_broker: config.topic_defaults.clone(), ..Default::default() };
    let mut table = load_topics(data_dir, &defaults)?;
    if !data_dir.join(TOPICS_FILE).exists() {
        return Ok(None);
    }
    if config.standalone() {
        remove_orphan_partitions(data_dir, &table)?;
        warn!(topics = table.len(), "migrating {TOPICS_FILE} into the metadata log");
        return Ok(Some(table));
    }
    if let Some(old) = table.remove(OFFSETS_TOPIC) {
        for p in 0..old.partitions {
            let dir = data_dir.join(format!("{OFFSETS_TOPIC}-{p}"));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
        }
        warn!("removed a node-local {OFFSETS_TOPIC}: a cluster replicates its own");
    }
    if !table.is_empty() {
        warn!(
            topics = ?table.keys().collect::<Vec<_>>(),
            "{TOPICS_FILE} names topics of a standalone broker; a cluster node does not adopt them"
        );
    }
    finish_migration(data_dir)?;
    Ok(None)
}

/// The legacy topic table is in the metadata log now: keep the file for reference only.
pub fn finish_migration(data_dir: &Path) -> io::Result<()> {
    std::fs::rename(data_dir.join(TOPICS_FILE), data_dir.join(format!("{TOPICS_FILE}.migrated")))?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Removes partition directories whose topic is gone (a crash between committing a deletion
/// and removing its files), so a topic created later under that name starts empty.
fn remove_orphan_partitions(data_dir: &Path, table: &TopicTable) -> io::Result<()> {
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else { continue };
        let Some((topic, partition)) = name.rsplit_once('-') else { continue };
        let Ok(partition) = partition.parse::<i32>() else { continue };
        let live = table.get(topic).is_some_and(|t| partition < t.partitions);
        if !live {
            warn!(dir = %name, "removing partition directory of a deleted topic");
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        assert_eq!(base64_url(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(base64_url(&[0xff; 3]), "____");
        assert_eq!(base64_url(uuid::Uuid::new_v4().as_bytes()).len(), 22);
    }
}
